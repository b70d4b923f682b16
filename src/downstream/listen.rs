//! Streams of messages outside any request: the session GET stream (2025-11-25) and
//! `subscriptions/listen` (2026-07-28).

use super::error::HttpError;
use super::post::find_session;
use super::relay::{sse_response, translate};
use super::rules;
use super::session::Session;
use super::stateless::SharedSessions;
use crate::federation::{SessionSource, VirtualServer};
use crate::gateway::Gateway;
use crate::protocol::sse::{encode_event, keep_alive};
use crate::protocol::{Message, RequestId};
use crate::upstream::Frame;
use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use http::HeaderMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

const KEEP_ALIVE: Duration = Duration::from_secs(20);

/// GET on a session: the server-initiated message stream.
pub async fn get(
    gw: Arc<Gateway>,
    server: Arc<VirtualServer>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    if rules::version_header(&headers)?.is_some_and(|v| v.is_stateless()) {
        return Err(HttpError::MethodNotAllowed(
            "the 2026-07-28 protocol has no GET stream; use subscriptions/listen",
        ));
    }
    rules::check_get_accept(&headers)?;
    let session = find_session(&gw, &server, &headers)?;
    let stop = session.replace_listener();
    let body = merged(server, Some(session.clone()), &*session, stop, None).await;
    Ok(sse_response(body))
}

/// `subscriptions/listen`: a stream of change notifications for a stateless client.
pub async fn subscriptions(server: Arc<VirtualServer>, message: Message) -> Response {
    let body = merged(
        server,
        None,
        &SharedSessions,
        CancellationToken::new(),
        message.id,
    )
    .await;
    sse_response(body)
}

/// Merges the upstreams' unsolicited messages into one SSE body.
async fn merged(
    server: Arc<VirtualServer>,
    session: Option<Arc<Session>>,
    src: &dyn SessionSource,
    stop: CancellationToken,
    _listen_id: Option<RequestId>,
) -> Body {
    let (tx, rx) = mpsc::channel::<(usize, Frame)>(64);
    for (i, m) in server.members.iter().enumerate() {
        match src.listen(m).await {
            Ok(Some(mut frames)) => {
                let tx = tx.clone();
                let stop = stop.clone();
                tokio::spawn(async move {
                    loop {
                        tokio::select! {
                            f = frames.recv() => match f {
                                Some(f) => if tx.send((i, f)).await.is_err() { return },
                                None => return,
                            },
                            _ = stop.cancelled() => return,
                        }
                    }
                });
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(upstream = %m.upstream, error = %e, "no listen stream from this upstream")
            }
        }
    }
    drop(tx);
    let frames = ReceiverStream::new(rx);
    let translated = frames
        .then(move |(i, frame)| {
            let server = server.clone();
            let session = session.clone();
            async move { translate(&server, i, session.as_ref(), &None, frame, false).await }
        })
        .filter_map(|bytes| async move { bytes.map(|b| encode_event(&b, None)) });
    let ticks = tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(KEEP_ALIVE))
        .map(|_| keep_alive());
    let stop2 = stop.clone();
    let body = futures_util::stream::select(translated, ticks)
        .take_until(async move { stop2.cancelled().await })
        .map(Ok::<Bytes, Infallible>);
    Body::from_stream(body)
}
