//! The upstream as a trait: what the gateway asks of any MCP server it relays to, whatever the
//! transport. [`HttpUpstream`] and [`StdioUpstream`] implement it here by delegating to their
//! inherent methods (so that their own files stay about their transport), and unit tests add
//! an in-memory scripted one (`super::scripted`).
//!
//! [`UpstreamClient`] stays an enum over the implementations rather than becoming an
//! `Arc<dyn Upstream>`: a few places must know the concrete transport and read it from the
//! variant without downcasting (an answer relayed by another replica can be delivered only to
//! an HTTP upstream; the stateless bridge needs the HTTP client it belongs to). Everything
//! else goes through [`UpstreamClient::upstream`], one match that yields the trait object, so
//! a new implementation is one variant and one arm. The test-only variant costs release
//! builds nothing. Async methods return a boxed future: one allocation per operation, small
//! next to a network round trip or a pipe write.
//!
//! Methods that start something outliving the call (a call stream, a listen stream) receive
//! `me`, the [`UpstreamClient`] that owns the implementation: a call stream keeps it to cancel
//! the call upstream when the client goes away.

use super::{
    CallStream, ClientIdentity, Delivery, Frame, HttpUpstream, InitInfo, MirroredParams,
    ReplyRoute, StdioUpstream, UpstreamClient, UpstreamError, UpstreamSession,
};
use crate::context::CallContext;
use crate::protocol::{Message, RequestId};
use futures_util::future::BoxFuture;
use std::sync::Arc;
use tokio::sync::mpsc;

/// A result of opening an upstream session.
pub type Opened = Result<(UpstreamSession, Arc<InitInfo>), UpstreamError>;
/// A listen stream, or `None` when the upstream sends nothing outside requests.
pub type Listened = Result<Option<mpsc::Receiver<Frame>>, UpstreamError>;

/// One configured upstream MCP server, as the gateway uses it.
pub trait Upstream: Send + Sync {
    /// The upstream's configured name.
    fn name(&self) -> &str;

    /// What its tools mirror into `Mcp-Param-*` headers, as its listings said.
    fn mirrored(&self) -> &MirroredParams;

    /// `ConsentRequired` when the request's user must connect this upstream first.
    fn check_consent<'a>(
        &'a self,
        ctx: &'a CallContext,
    ) -> BoxFuture<'a, Result<(), UpstreamError>>;

    /// Opens a session for one downstream client (or makes sure a shared one is ready).
    fn open<'a>(&'a self, ctx: &'a CallContext, who: &'a ClientIdentity) -> BoxFuture<'a, Opened>;

    /// The session shared by stateless downstream clients that declared `declared` (`None`:
    /// the gateway's own).
    fn shared_session<'a>(
        &'a self,
        ctx: &'a CallContext,
        declared: Option<&'a serde_json::Value>,
    ) -> BoxFuture<'a, Opened>;

    /// Forgets a shared session the upstream no longer knows.
    fn drop_shared_session(&self, session: &UpstreamSession);

    /// Sends a request (`request.id` is the downstream id, restored on the final response).
    fn call<'a>(
        &'a self,
        me: &'a Arc<UpstreamClient>,
        ctx: &'a CallContext,
        session: &'a UpstreamSession,
        request: Message,
        delivery: Delivery,
    ) -> BoxFuture<'a, Result<CallStream, UpstreamError>>;

    /// Sends a notification.
    fn notify<'a>(
        &'a self,
        ctx: &'a CallContext,
        session: &'a UpstreamSession,
        message: Message,
    ) -> BoxFuture<'a, Result<(), UpstreamError>>;

    /// Delivers the client's answer (already carrying the upstream's id) to a server→client
    /// request.
    fn respond<'a>(
        &'a self,
        ctx: &'a CallContext,
        route: &'a ReplyRoute,
        answer: Message,
    ) -> BoxFuture<'a, Result<(), UpstreamError>>;

    /// Messages the upstream sends outside any request in `session`.
    fn listen<'a>(
        &'a self,
        me: &'a Arc<UpstreamClient>,
        ctx: &'a CallContext,
        session: &'a UpstreamSession,
    ) -> BoxFuture<'a, Listened>;

    /// Like [`listen`](Self::listen), on the session shared by stateless clients.
    fn listen_shared<'a>(
        &'a self,
        me: &'a Arc<UpstreamClient>,
        ctx: &'a CallContext,
    ) -> BoxFuture<'a, Listened>;

    /// Ends a per-client session.
    fn close<'a>(&'a self, ctx: &'a CallContext, session: &'a UpstreamSession)
    -> BoxFuture<'a, ()>;

    /// Stops whatever the upstream runs (graceful shutdown).
    fn shutdown(&self) -> BoxFuture<'_, ()>;

    /// Tells the upstream to stop working on a request (`notifications/cancelled`); a
    /// failure is only logged, the call is over for the gateway either way.
    fn cancel<'a>(
        &'a self,
        ctx: &'a CallContext,
        session: &'a UpstreamSession,
        upstream_id: &'a RequestId,
        reason: &'a str,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let params = serde_json::json!({ "requestId": upstream_id, "reason": reason });
            let msg = Message::notification(
                crate::protocol::Method::NotificationsCancelled.as_str(),
                Some(crate::protocol::jsonrpc::to_raw(&params)),
            );
            if let Err(e) = self.notify(ctx, session, msg).await {
                tracing::debug!(upstream = self.name(), error = %e, "could not deliver cancellation");
            }
        })
    }
}

impl Upstream for HttpUpstream {
    fn name(&self) -> &str {
        HttpUpstream::name(self)
    }

    fn mirrored(&self) -> &MirroredParams {
        &self.mirrored
    }

    fn check_consent<'a>(
        &'a self,
        ctx: &'a CallContext,
    ) -> BoxFuture<'a, Result<(), UpstreamError>> {
        Box::pin(HttpUpstream::check_consent(self, ctx))
    }

    fn open<'a>(&'a self, ctx: &'a CallContext, who: &'a ClientIdentity) -> BoxFuture<'a, Opened> {
        Box::pin(HttpUpstream::open(self, ctx, who))
    }

    fn shared_session<'a>(
        &'a self,
        ctx: &'a CallContext,
        declared: Option<&'a serde_json::Value>,
    ) -> BoxFuture<'a, Opened> {
        Box::pin(HttpUpstream::shared_session(self, ctx, declared))
    }

    fn drop_shared_session(&self, session: &UpstreamSession) {
        HttpUpstream::drop_shared_session(self, session)
    }

    fn call<'a>(
        &'a self,
        me: &'a Arc<UpstreamClient>,
        ctx: &'a CallContext,
        session: &'a UpstreamSession,
        request: Message,
        delivery: Delivery,
    ) -> BoxFuture<'a, Result<CallStream, UpstreamError>> {
        Box::pin(HttpUpstream::call(
            self, me, ctx, session, request, delivery,
        ))
    }

    fn notify<'a>(
        &'a self,
        ctx: &'a CallContext,
        session: &'a UpstreamSession,
        message: Message,
    ) -> BoxFuture<'a, Result<(), UpstreamError>> {
        Box::pin(HttpUpstream::notify(self, ctx, session, message))
    }

    fn respond<'a>(
        &'a self,
        ctx: &'a CallContext,
        route: &'a ReplyRoute,
        answer: Message,
    ) -> BoxFuture<'a, Result<(), UpstreamError>> {
        Box::pin(HttpUpstream::respond(self, ctx, route, answer))
    }

    fn listen<'a>(
        &'a self,
        me: &'a Arc<UpstreamClient>,
        ctx: &'a CallContext,
        session: &'a UpstreamSession,
    ) -> BoxFuture<'a, Listened> {
        // A session client bridged onto the stateless wire listens through
        // `subscriptions/listen`, re-opened as its subscriptions change.
        if let Some(bridge) = session.bridge.clone() {
            let rx = HttpUpstream::listen_bridged(me.clone(), ctx.clone(), session.clone(), bridge);
            return Box::pin(std::future::ready(Ok(Some(rx))));
        }
        Box::pin(HttpUpstream::listen(self, ctx, session))
    }

    fn listen_shared<'a>(
        &'a self,
        _me: &'a Arc<UpstreamClient>,
        ctx: &'a CallContext,
    ) -> BoxFuture<'a, Listened> {
        Box::pin(HttpUpstream::listen_shared(self, ctx))
    }

    fn close<'a>(
        &'a self,
        ctx: &'a CallContext,
        session: &'a UpstreamSession,
    ) -> BoxFuture<'a, ()> {
        Box::pin(HttpUpstream::close(self, ctx, session))
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(std::future::ready(()))
    }
}

impl Upstream for StdioUpstream {
    fn name(&self) -> &str {
        StdioUpstream::name(self)
    }

    fn mirrored(&self) -> &MirroredParams {
        &self.mirrored
    }

    fn check_consent<'a>(
        &'a self,
        _ctx: &'a CallContext,
    ) -> BoxFuture<'a, Result<(), UpstreamError>> {
        // A child process has no per-user credential to consent to.
        Box::pin(std::future::ready(Ok(())))
    }

    fn open<'a>(
        &'a self,
        _ctx: &'a CallContext,
        _who: &'a ClientIdentity,
    ) -> BoxFuture<'a, Opened> {
        // One child serves every client: opening makes sure it runs.
        Box::pin(StdioUpstream::open(self))
    }

    fn shared_session<'a>(
        &'a self,
        _ctx: &'a CallContext,
        _declared: Option<&'a serde_json::Value>,
    ) -> BoxFuture<'a, Opened> {
        Box::pin(StdioUpstream::open(self))
    }

    fn drop_shared_session(&self, _session: &UpstreamSession) {}

    fn call<'a>(
        &'a self,
        me: &'a Arc<UpstreamClient>,
        ctx: &'a CallContext,
        _session: &'a UpstreamSession,
        request: Message,
        _delivery: Delivery,
    ) -> BoxFuture<'a, Result<CallStream, UpstreamError>> {
        Box::pin(StdioUpstream::call(self, me, ctx, request))
    }

    fn notify<'a>(
        &'a self,
        _ctx: &'a CallContext,
        _session: &'a UpstreamSession,
        message: Message,
    ) -> BoxFuture<'a, Result<(), UpstreamError>> {
        Box::pin(StdioUpstream::send(self, message))
    }

    fn respond<'a>(
        &'a self,
        _ctx: &'a CallContext,
        _route: &'a ReplyRoute,
        answer: Message,
    ) -> BoxFuture<'a, Result<(), UpstreamError>> {
        Box::pin(StdioUpstream::send(self, answer))
    }

    fn listen<'a>(
        &'a self,
        _me: &'a Arc<UpstreamClient>,
        _ctx: &'a CallContext,
        _session: &'a UpstreamSession,
    ) -> BoxFuture<'a, Listened> {
        Box::pin(std::future::ready(Ok(Some(StdioUpstream::listen(self)))))
    }

    fn listen_shared<'a>(
        &'a self,
        _me: &'a Arc<UpstreamClient>,
        _ctx: &'a CallContext,
    ) -> BoxFuture<'a, Listened> {
        Box::pin(std::future::ready(Ok(Some(StdioUpstream::listen(self)))))
    }

    fn close<'a>(
        &'a self,
        _ctx: &'a CallContext,
        _session: &'a UpstreamSession,
    ) -> BoxFuture<'a, ()> {
        // The child is shared: one client leaving does not end it.
        Box::pin(std::future::ready(()))
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(StdioUpstream::shutdown(self))
    }
}
