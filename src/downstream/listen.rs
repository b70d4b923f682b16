//! Streams of messages outside any request: the session GET stream (2025-11-25) and
//! `subscriptions/listen` (2026-07-28).
//!
//! What a stream opens upstream lives exactly as long as the client's stream: when the client
//! goes away its body is dropped, which cancels the stream's token and ends the tasks that
//! read the upstream streams, which closes those. (The one exception comes before: a session's
//! upstream streams open when it starts, held for its first GET; see [`super::standalone`].)

use super::access::Access;
use super::call;
use super::error::{HttpError, rpc_error, upstream_error};
use super::limits::{Holder, hold};
use super::named_session;
use super::relay::{sse_response, translate};
use super::replay::ReplayLimits;
use super::reply::{Refusal, answered, opened};
use super::rules;
use super::session::Session;
use super::standalone::Released;
use super::stateless::SharedSessions;
use crate::audit::Ticket;
use crate::federation::{SessionSource, VirtualServer};
use crate::gateway::Gateway;
use crate::protocol::jsonrpc::to_raw;
use crate::protocol::sse::{encode_event, keep_alive};
use crate::protocol::stateless::SUBSCRIPTION_META_KEY;
use crate::protocol::{CallHead, Message, Method, RequestId};
use crate::upstream::Frame;
use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use http::HeaderMap;
use serde_json::Value;
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
    caller: Option<super::Caller>,
    ctx: crate::context::CallContext,
    holder: Holder,
) -> Result<Response, HttpError> {
    if rules::version_header(&headers)?.is_some_and(|v| v.is_stateless()) {
        return Err(HttpError::MethodNotAllowed(
            "the 2026-07-28 protocol has no GET stream; use subscriptions/listen",
        ));
    }
    rules::check_get_accept(&headers)?;
    let session = named_session::find(&gw, &server, &headers, caller.as_ref())?;
    let permit = gw
        .streams
        .acquire(Some(&session.id), &holder, &gw.runtime().config.limits)?;
    let stop = session.replace_listener();
    // What the upstreams sent since the session started, and their streams, held for this GET.
    let held = match session.take_hold() {
        Some(hold) => Some(hold.release().await),
        None => None,
    };
    let last_event_id = headers
        .get(crate::protocol::headers::LAST_EVENT_ID)
        .and_then(|v| v.to_str().ok());
    let start = session.stream_start(last_event_id);
    let replay = ReplayLimits::of(&gw.runtime().config.limits);
    let body = merged(
        server,
        Some((session.clone(), replay)),
        &session.for_request(&ctx),
        stop,
        Start::Session(start),
        held,
    )
    .await;
    Ok(hold(sse_response(body), permit))
}

/// What a `subscriptions/listen` client opted in to (2026-07-28 notifications are opt-in).
#[derive(Debug, Default, Clone, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Filter {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    tools_list_changed: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    prompts_list_changed: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    resources_list_changed: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    resource_subscriptions: Vec<String>,
}

impl Filter {
    fn admits(&self, message: &Message) -> bool {
        match Method::of(message) {
            Method::NotificationsToolsListChanged => self.tools_list_changed,
            Method::NotificationsPromptsListChanged => self.prompts_list_changed,
            Method::NotificationsResourcesListChanged => self.resources_list_changed,
            Method::NotificationsResourcesUpdated => {
                #[derive(serde::Deserialize)]
                struct P {
                    uri: String,
                }
                message
                    .params_as::<P>()
                    .is_ok_and(|p| self.resource_subscriptions.contains(&p.uri))
            }
            _ => false,
        }
    }
}

/// A listen stream's identity and filter.
struct Subscription {
    id: Value,
    filter: Filter,
}

impl Subscription {
    /// Tags a notification with the subscription id, or drops it if not opted in to.
    fn tag(&self, message: Message) -> Option<Message> {
        if !self.filter.admits(&message) {
            return None;
        }
        let mut params: serde_json::Map<String, Value> = message.params_as().unwrap_or_default();
        let meta = params
            .entry("_meta")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Value::Object(m) = meta {
            m.insert(SUBSCRIPTION_META_KEY.into(), self.id.clone());
        }
        let mut message = message;
        message.params = Some(to_raw(&params));
        Some(message)
    }

    fn acknowledgement(&self) -> Bytes {
        let params = serde_json::json!({
            "notifications": self.filter,
            "_meta": { SUBSCRIPTION_META_KEY: self.id },
        });
        let ack = Message::notification(
            Method::NotificationsSubscriptionsAcknowledged.as_str(),
            Some(to_raw(&params)),
        );
        encode_event(&ack.to_bytes(), None)
    }
}

/// `subscriptions/listen`: a stream of the change notifications a stateless client opted in to.
/// Each URI to subscribe to passes the same gate as a `resources/read` of it (scopes, catalog,
/// policy); the first refused refuses the whole request, with the error a read would get.
pub async fn subscriptions(
    server: Arc<VirtualServer>,
    message: Message,
    access: &Access,
    ticket: &Option<Arc<Ticket>>,
    max_uris: usize,
) -> Result<Response, HttpError> {
    #[derive(serde::Deserialize)]
    struct Params {
        #[serde(default)]
        notifications: Filter,
    }
    let mut filter = message
        .params_as::<Params>()
        .map(|p| p.notifications)
        .unwrap_or_default();
    let mut seen = std::collections::HashSet::new();
    filter
        .resource_subscriptions
        .retain(|uri| seen.insert(uri.clone()));
    if filter.resource_subscriptions.len() > max_uris {
        return Err(HttpError::RequestOverLimit {
            limit: "limits.subscriptions_per_listen",
            max: max_uris,
            what: "params.notifications.resourceSubscriptions",
            got: filter.resource_subscriptions.len(),
        });
    }
    if let Err(refused) = subscribe_upstream(&server, &message, &filter, access, ticket).await {
        return Ok(refused);
    }
    // The answer is the stream; the request is done once it opens.
    opened(ticket.as_deref());
    let id = message
        .id
        .as_ref()
        .map(|id| serde_json::to_value(id).unwrap_or(Value::Null))
        .unwrap_or(Value::Null);
    let subscription = Subscription { id, filter };
    let body = merged(
        server,
        None,
        &SharedSessions::gateway(access.context.clone()),
        CancellationToken::new(),
        Start::Subscription(subscription),
        None,
    )
    .await;
    Ok(sse_response(body))
}

/// resources/updated only flows for subscribed URIs: each URI, once admitted, is subscribed
/// upstream on the shared sessions. The first refusal or upstream error is the answer.
async fn subscribe_upstream(
    server: &VirtualServer,
    listen: &Message,
    filter: &Filter,
    access: &Access,
    ticket: &Option<Arc<Ticket>>,
) -> Result<(), Response> {
    let id = listen.id.clone().unwrap_or(RequestId::Number(0));
    let refused = |r: Refusal| r.answer(&server.name, Some(id.clone()), true, ticket.as_deref());
    for uri in &filter.resource_subscriptions {
        call::scope(
            server,
            access,
            Method::ResourcesSubscribe.as_str(),
            Some(uri),
        )
        .map_err(refused)?;
        let sub = Message::request(
            id.clone(),
            Method::ResourcesSubscribe.as_str(),
            Some(to_raw(&serde_json::json!({ "uri": uri }))),
        );
        let head = CallHead::of(&sub);
        // On the gateway's own session: the one whose stream `merged` listens to.
        let sessions = SharedSessions::gateway(access.context.clone());
        let routed = call::admit(server, &sessions, access, &head, sub, ticket.as_deref())
            .await
            .map_err(refused)?;
        let failed = match server.call(&sessions, routed.member, routed.message).await {
            Err(e) => Some(rpc_error(Some(id.clone()), &e)),
            Ok(mut stream) => loop {
                match stream.next().await {
                    Some(Frame::Response(m)) if m.error.is_some() => {
                        let mut m = m;
                        m.id = Some(id.clone());
                        break Some(m);
                    }
                    Some(Frame::Failed(e)) => break Some(upstream_error(Some(id.clone()), &e)),
                    Some(f) if f.is_final() => break None,
                    Some(_) => {}
                    None => break None,
                }
            },
        };
        if let Some(m) = failed {
            tracing::info!(server = %server.name, %uri, "subscriptions/listen refused: the upstream refused a subscription");
            return Err(answered(ticket.as_deref(), m));
        }
    }
    Ok(())
}

/// Merges the upstreams' unsolicited messages into one SSE body.
/// How a merged stream begins.
enum Start {
    /// A session's GET stream: replayed events or the priming event.
    Session(Vec<Bytes>),
    /// A `subscriptions/listen` stream: its acknowledgement.
    Subscription(Subscription),
}

async fn merged(
    server: Arc<VirtualServer>,
    session: Option<(Arc<Session>, ReplayLimits)>,
    src: &dyn SessionSource,
    stop: CancellationToken,
    start: Start,
    held: Option<Released>,
) -> Body {
    let (session, replay) = match session {
        Some((s, limits)) => (Some(s), Some(limits)),
        None => (None, None),
    };
    let session_for_drop = session.clone();
    let ctx = src.context().clone();
    let stamp_session = session.clone();
    let (tx, rx) = mpsc::channel::<(usize, Frame)>(64);
    let (earlier, mut open) = match held {
        Some(r) => (r.held, Some(r.streams)),
        None => (Vec::new(), None),
    };
    for (i, m) in server.members.iter().enumerate() {
        // A stream opened at session start is taken over; other members' are opened now.
        let listened = match open.as_mut().and_then(|o| o.remove(&i)) {
            Some(frames) => Ok(Some(frames)),
            None => src.listen(m).await,
        };
        match listened {
            Ok(Some(mut frames)) => {
                let tx = tx.clone();
                let stop = stop.clone();
                // Ends when the client's stream does (`tx` closed, `stop` cancelled) even if the
                // upstream is silent; dropping `frames` then closes the upstream stream.
                tokio::spawn(async move {
                    loop {
                        tokio::select! {
                            f = frames.recv() => match f {
                                Some(f) => if tx.send((i, f)).await.is_err() { return },
                                None => return,
                            },
                            _ = tx.closed() => return,
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
    let frames = futures_util::stream::iter(earlier).chain(ReceiverStream::new(rx));
    let (first, subscription) = match start {
        Start::Session(events) => (events, None),
        Start::Subscription(s) => (vec![s.acknowledgement()], Some(Arc::new(s))),
    };
    let translated = frames
        .then(move |(i, frame)| {
            let server = server.clone();
            let session = session.clone();
            let subscription = subscription.clone();
            let ctx = ctx.clone();
            async move {
                match (subscription, frame) {
                    (None, frame) => {
                        translate(&server, &ctx, i, session.as_ref(), &None, frame, false).await
                    }
                    // Outward names first: the client subscribed to the URIs it sees.
                    (Some(sub), Frame::Notification(m)) => {
                        sub.tag(server.outward(i, m)).map(|m| m.to_bytes())
                    }
                    // A stateless listener cannot answer server requests.
                    (Some(_), _) => None,
                }
            }
        })
        .filter_map(move |bytes| {
            let stamp = stamp_session.clone().zip(replay);
            async move {
                bytes.map(|b| match stamp {
                    Some((s, limits)) => s.stamp(&b, limits),
                    None => encode_event(&b, None),
                })
            }
        });
    let translated = futures_util::stream::iter(first).chain(translated);
    let ticks = tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(KEEP_ALIVE))
        .map(|_| keep_alive());
    let stop2 = stop.clone();
    let on_drop = EndOnDrop {
        stop: stop.clone(),
        session: session_for_drop,
    };
    let body = futures_util::stream::select(translated, ticks)
        .take_until(async move { stop2.cancelled().await })
        .map(move |b| {
            let _ = &on_drop;
            Ok::<Bytes, Infallible>(b)
        });
    Body::from_stream(body)
}

/// Held by a stream's body: dropping the body (the client went away) cancels `stop`, so the
/// session's listener is over and the tasks reading upstream streams end; the session's idle
/// time starts then (a client reconnecting its stream finds its session still there).
struct EndOnDrop {
    stop: CancellationToken,
    session: Option<Arc<Session>>,
}

impl Drop for EndOnDrop {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(s) = &self.session {
            s.touch();
        }
    }
}
