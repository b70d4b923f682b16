//! One request in flight at an upstream, seen as a stream of frames.

use super::{UpstreamClient, UpstreamError, UpstreamSession};
use crate::context::CallContext;
use crate::protocol::{Message, RequestId};
use bytes::Bytes;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Something the upstream sent while serving a call.
#[derive(Debug)]
pub enum Frame {
    /// A notification (progress, log message, list change…).
    Notification(Message),
    /// A server→client request (sampling, elicitation, roots); answer through `route`.
    Request {
        /// The request as the upstream sent it.
        message: Message,
        /// Where the client's answer must go.
        route: ReplyRoute,
    },
    /// The final answer, already carrying the downstream id.
    Response(Message),
    /// The final answer as it arrives, already carrying the downstream id (a result relayed
    /// without being held whole; see [`Delivery::Streamed`]).
    Streamed(StreamedResponse),
    /// The call failed before an answer arrived.
    Failed(UpstreamError),
}

impl Frame {
    /// Whether this frame ends the call.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Frame::Response(_) | Frame::Streamed(_) | Frame::Failed(_)
        )
    }
}

/// How the final response of a call is wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// As one parsed message (the gateway reads or rewrites the result).
    Whole,
    /// As bytes while they arrive, when the upstream can (results the gateway only relays).
    Streamed {
        /// The client speaks 2026-07-28, so a result from an older upstream gains `resultType`.
        stateless_client: bool,
    },
}

/// The id the final response must carry downstream. It is shared with the task reading the
/// upstream because a resumed 2026-07-28 call is answered under the retry's id, known only
/// after the call started.
#[derive(Debug, Clone, Default)]
pub struct AnswerId(Arc<Mutex<Option<RequestId>>>);

impl AnswerId {
    /// Starts with the id of the request that opened the call.
    pub fn new(id: Option<RequestId>) -> Self {
        AnswerId(Arc::new(Mutex::new(id)))
    }

    /// The id to answer with now.
    pub fn get(&self) -> Option<RequestId> {
        self.0.lock().expect("answer id lock").clone()
    }

    fn set(&self, id: Option<RequestId>) {
        *self.0.lock().expect("answer id lock") = id;
    }
}

/// A final response relayed in pieces. Its bytes form one JSON-RPC message on one line.
#[derive(Debug)]
pub struct StreamedResponse {
    rx: mpsc::Receiver<Result<Bytes, UpstreamError>>,
    deadline: Option<(Instant, Duration)>,
    upstream: String,
}

impl StreamedResponse {
    /// A response whose pieces arrive on `rx`.
    pub fn new(rx: mpsc::Receiver<Result<Bytes, UpstreamError>>, upstream: &str) -> Self {
        StreamedResponse {
            rx,
            deadline: None,
            upstream: upstream.to_owned(),
        }
    }

    /// The next piece; `None` once the message is complete.
    pub async fn next(&mut self) -> Option<Result<Bytes, UpstreamError>> {
        let Some((deadline, after)) = self.deadline else {
            return self.rx.recv().await;
        };
        match tokio::time::timeout_at(deadline, self.rx.recv()).await {
            Ok(piece) => piece,
            Err(_) => {
                self.rx.close();
                Some(Err(UpstreamError::Timeout {
                    upstream: self.upstream.clone(),
                    after,
                }))
            }
        }
    }
}

/// How to deliver a client's answer to a server→client request.
#[derive(Debug, Clone)]
pub struct ReplyRoute {
    /// The upstream that asked.
    pub upstream: String,
    /// The upstream session it asked in.
    pub session: UpstreamSession,
    /// The id the upstream used.
    pub id: RequestId,
}

/// Frames of one call, with the upstream's deadline applied. Dropping it before the final
/// frame cancels the call upstream (the client went away).
pub struct CallStream {
    rx: mpsc::Receiver<Frame>,
    deadline: Instant,
    timeout: Duration,
    done: bool,
    /// What a cancellation needs: the client, for whom the call is made (so that it carries
    /// the same upstream credential), the session and the upstream's id of the call.
    cancel: Option<(Arc<UpstreamClient>, CallContext, UpstreamSession, RequestId)>,
    /// Kept apart from `cancel`, which is taken when the call is cancelled: a timeout names
    /// the upstream after cancelling it.
    upstream: String,
    answer_id: Option<AnswerId>,
}

impl CallStream {
    /// Wraps a frame receiver; `upstream_id` is the id the gateway used upstream.
    pub fn new(
        rx: mpsc::Receiver<Frame>,
        timeout: Duration,
        client: Arc<UpstreamClient>,
        ctx: CallContext,
        session: UpstreamSession,
        upstream_id: RequestId,
    ) -> Self {
        CallStream {
            rx,
            deadline: Instant::now() + timeout,
            timeout,
            done: false,
            upstream: client.name().to_owned(),
            cancel: Some((client, ctx, session, upstream_id)),
            answer_id: None,
        }
    }

    /// Frames made by the gateway itself (a bridged call, an answer it gives on its own):
    /// nothing to cancel upstream when it is dropped, the senders of `rx` see to that.
    pub fn local(rx: mpsc::Receiver<Frame>, timeout: Duration, upstream: &str) -> Self {
        CallStream {
            rx,
            deadline: Instant::now() + timeout,
            timeout,
            done: false,
            upstream: upstream.to_owned(),
            cancel: None,
            answer_id: None,
        }
    }

    /// Lets the final response be re-addressed after the call started (see [`AnswerId`]).
    pub fn with_answer_id(mut self, id: AnswerId) -> Self {
        self.answer_id = Some(id);
        self
    }

    /// Makes the final response answer request `id` (a resumed call's retry).
    pub fn answer_as(&self, id: Option<RequestId>) {
        if let Some(a) = &self.answer_id {
            a.set(id);
        }
    }

    /// The next frame; after the final one, `None`.
    pub async fn next(&mut self) -> Option<Frame> {
        if self.done {
            return None;
        }
        let frame = match tokio::time::timeout_at(self.deadline, self.rx.recv()).await {
            Ok(Some(frame)) => frame,
            Ok(None) => Frame::Failed(UpstreamError::Crashed {
                upstream: self.upstream_name(),
                reason: "the connection closed before the response".into(),
            }),
            Err(_) => {
                self.send_cancel("the gateway's request timeout expired");
                Frame::Failed(UpstreamError::Timeout {
                    upstream: self.upstream_name(),
                    after: self.timeout,
                })
            }
        };
        let mut frame = frame;
        if let Frame::Streamed(s) = &mut frame {
            s.deadline = Some((self.deadline, self.timeout));
        }
        if frame.is_final() {
            self.done = true;
        }
        Some(frame)
    }

    fn upstream_name(&self) -> String {
        self.upstream.clone()
    }

    fn send_cancel(&mut self, reason: &'static str) {
        if let Some((client, ctx, session, id)) = self.cancel.take()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            handle.spawn(async move {
                client.cancel(&ctx, &session, &id, reason).await;
            });
        }
    }
}

impl Drop for CallStream {
    fn drop(&mut self) {
        if !self.done {
            tracing::debug!("call abandoned before its response; cancelling upstream");
            self.send_cancel("the client disconnected");
        }
    }
}
