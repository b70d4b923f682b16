//! One request in flight at an upstream, seen as a stream of frames.

use super::{UpstreamClient, UpstreamError, UpstreamSession};
use crate::protocol::{Message, RequestId};
use std::sync::Arc;
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
    /// The call failed before an answer arrived.
    Failed(UpstreamError),
}

impl Frame {
    /// Whether this frame ends the call.
    pub fn is_final(&self) -> bool {
        matches!(self, Frame::Response(_) | Frame::Failed(_))
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
    cancel: Option<(Arc<UpstreamClient>, UpstreamSession, RequestId)>,
}

impl CallStream {
    /// Wraps a frame receiver; `upstream_id` is the id the gateway used upstream.
    pub fn new(
        rx: mpsc::Receiver<Frame>,
        timeout: Duration,
        client: Arc<UpstreamClient>,
        session: UpstreamSession,
        upstream_id: RequestId,
    ) -> Self {
        CallStream {
            rx,
            deadline: Instant::now() + timeout,
            timeout,
            done: false,
            cancel: Some((client, session, upstream_id)),
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
        if frame.is_final() {
            self.done = true;
        }
        Some(frame)
    }

    fn upstream_name(&self) -> String {
        self.cancel
            .as_ref()
            .map(|(c, _, _)| c.name().to_owned())
            .unwrap_or_default()
    }

    fn send_cancel(&mut self, reason: &'static str) {
        if let Some((client, session, id)) = self.cancel.take()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            handle.spawn(async move {
                client.cancel(&session, &id, reason).await;
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
