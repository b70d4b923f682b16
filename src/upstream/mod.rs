//! Clients of upstream MCP servers: Streamable HTTP (pooled) and stdio child processes, both
//! behind the [`Upstream`] trait (in unit tests also an in-memory scripted one, [`scripted`]).
//!
//! Every call returns a [`CallStream`] of [`Frame`]s: notifications and server→client requests
//! related to the call, then exactly one final response (or a failure). Request ids sent upstream
//! are the gateway's own; the final response carries the downstream id again.

mod call;
mod client;
mod error;
mod http;
mod identity;
mod mirrored;
mod reader;
mod restart;
#[cfg(test)]
pub mod scripted;
mod stdio;
mod stdio_child;

pub use call::{AnswerId, CallStream, Delivery, Frame, ReplyRoute, StreamedResponse};
pub use client::Upstream;
pub use error::UpstreamError;
pub use http::HttpUpstream;
pub use http::bridge::Bridge;
pub use identity::{ClientIdentity, InitInfo, UpstreamSession, askable_capabilities};
pub use mirrored::{Known, MirroredParams};
pub use stdio::StdioUpstream;

use crate::config::{self, UpstreamKind};
use crate::context::CallContext;
use crate::protocol::{Message, RequestId};
use std::sync::Arc;
use tokio::sync::mpsc;

/// One configured upstream server: which implementation of [`Upstream`] serves it (see
/// [`client`] for why this is an enum).
// One value per configured upstream, built once: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub enum UpstreamClient {
    /// Streamable HTTP.
    Http(HttpUpstream),
    /// A child process on stdio.
    Stdio(StdioUpstream),
    /// An in-memory upstream a unit test scripts.
    #[cfg(test)]
    Scripted(scripted::ScriptedUpstream),
}

impl UpstreamClient {
    /// Builds the client for a validated configuration entry; `consent` serves `user_oauth`.
    pub fn new(
        name: &str,
        cfg: &config::Upstream,
        limits: &config::Limits,
        consent: Option<&Arc<crate::credentials::consent::ConsentService>>,
    ) -> Result<Self, String> {
        Ok(match cfg.kind {
            UpstreamKind::Http => {
                UpstreamClient::Http(HttpUpstream::new(name, cfg, limits, consent)?)
            }
            UpstreamKind::Stdio => UpstreamClient::Stdio(StdioUpstream::new(name, cfg, limits)?),
        })
    }

    /// The implementation behind this client.
    pub fn upstream(&self) -> &dyn Upstream {
        match self {
            UpstreamClient::Http(h) => h,
            UpstreamClient::Stdio(s) => s,
            #[cfg(test)]
            UpstreamClient::Scripted(s) => s,
        }
    }

    /// `ConsentRequired` when the request's user must connect this upstream first.
    pub async fn check_consent(&self, ctx: &CallContext) -> Result<(), UpstreamError> {
        self.upstream().check_consent(ctx).await
    }

    /// The upstream's configured name.
    pub fn name(&self) -> &str {
        self.upstream().name()
    }

    /// What its tools mirror into `Mcp-Param-*` headers, as its listings said.
    pub fn mirrored(&self) -> &MirroredParams {
        self.upstream().mirrored()
    }

    /// Opens a session for one downstream client (HTTP), or makes sure the shared child runs (stdio).
    pub async fn open(
        &self,
        ctx: &CallContext,
        who: &ClientIdentity,
    ) -> Result<(UpstreamSession, Arc<InitInfo>), UpstreamError> {
        self.upstream().open(ctx, who).await
    }

    /// A session shared by stateless downstream clients: those that declared `declared`
    /// (see [`HttpUpstream::shared_session`]), or, with `None`, the gateway's own.
    pub async fn shared_session(
        &self,
        ctx: &CallContext,
        declared: Option<&serde_json::Value>,
    ) -> Result<(UpstreamSession, Arc<InitInfo>), UpstreamError> {
        self.upstream().shared_session(ctx, declared).await
    }

    /// Forgets a shared session the upstream no longer knows.
    pub fn drop_shared_session(&self, session: &UpstreamSession) {
        self.upstream().drop_shared_session(session)
    }

    /// Sends a request; `request.id` is the downstream id, restored on the final response.
    /// `delivery` says whether the final response may arrive in pieces (HTTP upstreams only).
    pub async fn call(
        self: &Arc<Self>,
        ctx: &CallContext,
        session: &UpstreamSession,
        request: Message,
        delivery: Delivery,
    ) -> Result<CallStream, UpstreamError> {
        self.upstream()
            .call(self, ctx, session, request, delivery)
            .await
    }

    /// Sends a notification.
    pub async fn notify(
        &self,
        ctx: &CallContext,
        session: &UpstreamSession,
        message: Message,
    ) -> Result<(), UpstreamError> {
        self.upstream().notify(ctx, session, message).await
    }

    /// Delivers the client's answer to a server→client request.
    pub async fn respond(
        &self,
        ctx: &CallContext,
        route: &ReplyRoute,
        mut answer: Message,
    ) -> Result<(), UpstreamError> {
        answer.id = Some(route.id.clone());
        self.upstream().respond(ctx, route, answer).await
    }

    /// Messages the upstream sends outside any request (list changes, resource updates, logs).
    pub async fn listen(
        self: &Arc<Self>,
        ctx: &CallContext,
        session: &UpstreamSession,
    ) -> Result<Option<mpsc::Receiver<Frame>>, UpstreamError> {
        self.upstream().listen(self, ctx, session).await
    }

    /// Like [`listen`](Self::listen), on the session shared by stateless clients.
    pub async fn listen_shared(
        self: &Arc<Self>,
        ctx: &CallContext,
    ) -> Result<Option<mpsc::Receiver<Frame>>, UpstreamError> {
        self.upstream().listen_shared(self, ctx).await
    }

    /// Ends a per-client session (HTTP DELETE); a no-op for stdio.
    pub async fn close(&self, ctx: &CallContext, session: &UpstreamSession) {
        self.upstream().close(ctx, session).await
    }

    /// Tells the upstream to stop working on a request.
    pub async fn cancel(
        &self,
        ctx: &CallContext,
        session: &UpstreamSession,
        upstream_id: &RequestId,
        reason: &str,
    ) {
        self.upstream()
            .cancel(ctx, session, upstream_id, reason)
            .await
    }

    /// Stops child processes (graceful shutdown).
    pub async fn shutdown(&self) {
        self.upstream().shutdown().await
    }
}

/// Forwards broadcast notifications into a frame channel until either side goes away.
fn frames_from(
    mut sub: tokio::sync::broadcast::Receiver<Message>,
    upstream: String,
) -> mpsc::Receiver<Frame> {
    use tokio::sync::broadcast::error::RecvError;
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                m = sub.recv() => match m {
                    Ok(m) => if tx.send(Frame::Notification(m)).await.is_err() { return },
                    Err(RecvError::Lagged(n)) => tracing::warn!(%upstream, dropped = n, "a listener fell behind"),
                    Err(RecvError::Closed) => return,
                },
                _ = tx.closed() => return,
            }
        }
    });
    rx
}
