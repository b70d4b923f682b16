//! Downstream sessions: the state behind a sealed id, cached per process and rebuilt from the id
//! itself when a request lands on a replica that has not seen the session.

use super::limits::Holder;
use super::replay::{Replay, ReplayLimits};
use super::seal::SessionClaims;
use super::standalone::{Hold, HoldLimits};
use crate::context::CallContext;
use crate::federation::{Member, SessionSource, VirtualServer};
use crate::keyring::Keyring;
use crate::protocol::{ProtocolVersion, RequestId};
use crate::upstream::{ClientIdentity, ReplyRoute, UpstreamError, UpstreamSession};
use futures_util::future::BoxFuture;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// A server→client request waiting for the client's answer.
pub struct PendingReply {
    /// Where the answer goes.
    pub route: ReplyRoute,
    /// When it was relayed; past [`super::answers::ANSWER_WINDOW`] it is forgotten.
    relayed_at: Instant,
}

/// One downstream session.
pub struct Session {
    /// The sealed id the client sends back.
    pub id: String,
    /// What the id carries.
    pub claims: SessionClaims,
    /// Negotiated version.
    pub version: ProtocolVersion,
    identity: ClientIdentity,
    /// Seals the ids of relayed server→client requests (bound to this session).
    sealer: Arc<Keyring>,
    links: tokio::sync::Mutex<HashMap<String, UpstreamSession>>,
    replies: Mutex<HashMap<u64, PendingReply>>,
    inflight: Mutex<HashMap<RequestId, CancellationToken>>,
    next_reply_id: AtomicU64,
    listener: Mutex<Option<CancellationToken>>,
    /// The upstream standalone streams opened at session start, until the client's GET takes
    /// them over (see [`super::standalone`]).
    hold: Mutex<Option<Arc<Hold>>>,
    /// The recent events of its GET stream, for `Last-Event-ID`.
    replay: Mutex<Replay>,
    last_used: Mutex<Instant>,
    /// Whom the session counts against (`limits.sessions_per_*`); `None` for an anonymous
    /// session continued from an id issued elsewhere (its address is not known).
    pub(super) holder: Option<Holder>,
}

impl Session {
    pub(super) fn from_claims(
        id: String,
        claims: SessionClaims,
        sealer: Arc<Keyring>,
        holder: Option<Holder>,
    ) -> Option<Session> {
        let version: ProtocolVersion = claims.version.parse().ok()?;
        let identity = ClientIdentity {
            version,
            client_info: claims.client_info.clone(),
            capabilities: claims.capabilities.clone(),
        };
        // A link on the stateless wire is bridged; its bridge (what the client declared, its
        // subscriptions) is this process's: rebuilt here from the claims, empty of subscriptions.
        let links = claims
            .upstreams
            .iter()
            .filter_map(|(name, sid, v)| {
                let mut link = UpstreamSession::new(sid.clone(), v.parse().ok()?);
                if link.version.is_stateless() {
                    link.bridge = Some(Arc::new(crate::upstream::Bridge::new(&identity)));
                }
                Some((name.clone(), link))
            })
            .collect();
        Some(Session {
            identity,
            id,
            version,
            claims,
            sealer,
            links: tokio::sync::Mutex::new(links),
            replies: Mutex::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
            next_reply_id: AtomicU64::new(1),
            listener: Mutex::new(None),
            hold: Mutex::new(None),
            replay: Mutex::new(Replay::default()),
            last_used: Mutex::new(Instant::now()),
            holder,
        })
    }

    /// The upstream session links this session holds now.
    pub async fn links(&self) -> Vec<(String, UpstreamSession)> {
        self.links
            .lock()
            .await
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Registers a server→client request and returns the id the client will see: sealed, so
    /// that whichever replica the answer reaches can deliver it (see [`super::answers`]).
    pub fn register_reply(&self, member: usize, route: ReplyRoute) -> RequestId {
        let n = self.next_reply_id.fetch_add(1, Ordering::Relaxed);
        let id = super::answers::seal(&self.sealer, &self.id, n, member, &route);
        let mut replies = self.replies.lock().expect("lock");
        // Answers delivered by another replica never take their entry here.
        replies.retain(|_, p| p.relayed_at.elapsed() < super::answers::ANSWER_WINDOW);
        replies.insert(
            n,
            PendingReply {
                route,
                relayed_at: Instant::now(),
            },
        );
        id
    }

    /// Takes the pending server→client request `entry` (from its sealed id), once.
    pub fn take_reply(&self, entry: u64) -> Option<PendingReply> {
        self.replies.lock().expect("lock").remove(&entry)
    }

    /// The sealer of this session's relayed request ids.
    pub fn sealer(&self) -> &Keyring {
        &self.sealer
    }

    /// Tracks a request in flight so that `notifications/cancelled` can stop it.
    pub fn track(&self, id: &RequestId) -> CancellationToken {
        let token = CancellationToken::new();
        self.inflight
            .lock()
            .expect("lock")
            .insert(id.clone(), token.clone());
        token
    }

    /// Stops tracking a request. The session's idle time starts now, not when the request
    /// began.
    pub fn untrack(&self, id: &RequestId) {
        self.inflight.lock().expect("lock").remove(id);
        self.touch();
    }

    /// Cancels a tracked request; false if it was not in flight.
    pub fn cancel(&self, id: &RequestId) -> bool {
        match self.inflight.lock().expect("lock").remove(id) {
            Some(t) => {
                t.cancel();
                true
            }
            None => false,
        }
    }

    /// Installs a new GET listener, ending the previous one (a client that reconnects its
    /// stream replaces it; each message goes to exactly one stream).
    pub fn replace_listener(&self) -> CancellationToken {
        let token = CancellationToken::new();
        if let Some(old) = self.listener.lock().expect("lock").replace(token.clone()) {
            old.cancel();
        }
        token
    }

    /// The session has started (`notifications/initialized`): opens the upstream standalone
    /// streams of the members linked so far and holds what they send until the client's GET
    /// arrives. Returns once those streams are open, so that the client's next call cannot
    /// outrun them. Nothing to do if the client's GET is already there.
    pub async fn start_standalone(
        self: &Arc<Self>,
        ctx: &CallContext,
        server: &Arc<VirtualServer>,
        limits: HoldLimits,
    ) {
        let hold = {
            let listening = self
                .listener
                .lock()
                .expect("lock")
                .as_ref()
                .is_some_and(|t| !t.is_cancelled());
            let mut slot = self.hold.lock().expect("lock");
            if listening || slot.is_some() {
                return;
            }
            let hold = Hold::new(server.clone(), limits, self, ctx.clone());
            *slot = Some(hold.clone());
            hold
        };
        let mut opened = Vec::new();
        for (name, upstream) in self.links().await {
            if let Some(i) = server.members.iter().position(|m| m.upstream == name) {
                opened.push(hold.start(i, upstream));
            }
        }
        futures_util::future::join_all(opened).await;
    }

    /// Encodes a message as the GET stream's next event (with its id), kept for replay.
    pub fn stamp(&self, data: &[u8], limits: ReplayLimits) -> bytes::Bytes {
        self.replay.lock().expect("lock").stamp(data, limits)
    }

    /// What a new GET stream starts with: the kept events after `last_event_id` when it names
    /// one of this session's, else the priming event (for clients that know it).
    pub fn stream_start(&self, last_event_id: Option<&str>) -> Vec<bytes::Bytes> {
        let replay = self.replay.lock().expect("lock");
        if let Some(events) = last_event_id.and_then(|id| replay.after(id)) {
            return events;
        }
        if self.version >= ProtocolVersion::V2025_11_25 {
            vec![replay.priming()]
        } else {
            Vec::new()
        }
    }

    /// Takes the held upstream streams for the client's GET (`None` if there is no hold).
    pub fn take_hold(&self) -> Option<Arc<Hold>> {
        self.hold.lock().expect("lock").take()
    }

    /// Forgets `hold` (it expired) unless another replaced it.
    pub(super) fn end_hold(&self, hold: &Arc<Hold>) {
        let mut slot = self.hold.lock().expect("lock");
        if slot.as_ref().is_some_and(|h| Arc::ptr_eq(h, hold)) {
            slot.take();
        }
    }

    /// Marks the session as used now (its idle time restarts).
    pub(super) fn touch(&self) {
        *self.last_used.lock().expect("lock") = Instant::now();
    }

    pub(super) fn idle_for(&self) -> Duration {
        self.last_used.lock().expect("lock").elapsed()
    }

    /// Whether the client is using the session now: a request in progress or an open GET
    /// stream. (An unanswered server→client request does not count: a client that left will
    /// never answer it.)
    pub(super) fn busy(&self) -> bool {
        !self.inflight.lock().expect("lock").is_empty()
            || self
                .listener
                .lock()
                .expect("lock")
                .as_ref()
                .is_some_and(|t| !t.is_cancelled())
    }

    /// Ends the upstream sessions this session holds (HTTP DELETE; nothing for stdio).
    pub async fn close_upstreams(&self, ctx: &CallContext, server: &VirtualServer) {
        for (name, upstream_session) in self.links().await {
            if let Some(m) = server.members.iter().find(|m| m.upstream == name) {
                m.client.close(ctx, &upstream_session).await;
            }
        }
    }

    /// Ends streams and requests of this session.
    pub(super) fn end(&self) {
        if let Some(t) = self.listener.lock().expect("lock").take() {
            t.cancel();
        }
        if let Some(h) = self.take_hold() {
            h.end("the session ended");
        }
        for (_, t) in self.inflight.lock().expect("lock").drain() {
            t.cancel();
        }
    }
}

impl Session {
    /// This session as the source of upstream sessions for one request made in `ctx`.
    pub fn for_request<'a>(&'a self, ctx: &'a CallContext) -> ForRequest<'a> {
        ForRequest { session: self, ctx }
    }
}

/// A session serving one request: its upstream links, and the request's context.
pub struct ForRequest<'a> {
    session: &'a Session,
    ctx: &'a CallContext,
}

impl SessionSource for ForRequest<'_> {
    fn context(&self) -> &CallContext {
        self.ctx
    }

    fn session<'a>(
        &'a self,
        member: &'a Member,
    ) -> BoxFuture<'a, Result<UpstreamSession, UpstreamError>> {
        Box::pin(async move {
            let this = self.session;
            let mut links = this.links.lock().await;
            if let Some(s) = links.get(&member.upstream) {
                return Ok(s.clone());
            }
            let (s, _) = member.client.open(self.ctx, &this.identity).await?;
            links.insert(member.upstream.clone(), s.clone());
            drop(links);
            // A member linked while the session still waits for its GET gets its standalone
            // stream now, before the call that needed the link is sent.
            let hold = this.hold.lock().expect("lock").clone();
            if let Some(hold) = hold.filter(|h| !h.is_over())
                && let Some(i) = hold.member_index(&member.upstream)
            {
                let _ = hold.start(i, s.clone()).await;
            }
            Ok(s)
        })
    }

    fn listen<'a>(
        &'a self,
        member: &'a Member,
    ) -> BoxFuture<
        'a,
        Result<Option<tokio::sync::mpsc::Receiver<crate::upstream::Frame>>, UpstreamError>,
    > {
        Box::pin(async move {
            let session = self.session(member).await?;
            match member.client.listen(self.ctx, &session).await {
                // Ended meanwhile (e.g. for being idle on another replica): open a new one.
                Err(UpstreamError::SessionExpired { .. }) => {
                    self.expired(member, &session);
                    let session = self.session(member).await?;
                    member.client.listen(self.ctx, &session).await
                }
                other => other,
            }
        })
    }

    fn expired(&self, member: &Member, session: &UpstreamSession) {
        if let Ok(mut links) = self.session.links.try_lock()
            && links.get(&member.upstream) == Some(session)
        {
            links.remove(&member.upstream);
        }
    }
}
