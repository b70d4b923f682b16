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
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
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
    holder: Option<Holder>,
}

impl Session {
    fn from_claims(
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

    fn idle_for(&self) -> Duration {
        self.last_used.lock().expect("lock").elapsed()
    }

    /// Whether the client is using the session now: a request in progress or an open GET
    /// stream. (An unanswered server→client request does not count: a client that left will
    /// never answer it.)
    fn busy(&self) -> bool {
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
    fn end(&self) {
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

/// Why a session id was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionLookup {
    /// Not an id this gateway (or a replica with the same keys) issued, or for another server.
    Unknown,
    /// Ended by DELETE or past its lifetime.
    Ended,
}

/// The sessions of this process, and how many each holder has (live or reserved).
#[derive(Default)]
struct Live {
    sessions: HashMap<String, Arc<Session>>,
    per_holder: HashMap<Holder, usize>,
}

impl Live {
    fn count(&mut self, holder: &Option<Holder>) {
        if let Some(h) = holder {
            *self.per_holder.entry(h.clone()).or_default() += 1;
        }
    }

    fn uncount(&mut self, holder: &Option<Holder>) {
        if let Some(h) = holder
            && let Some(n) = self.per_holder.get_mut(h)
        {
            *n -= 1;
            if *n == 0 {
                self.per_holder.remove(h);
            }
        }
    }

    fn remove(&mut self, id: &str) -> Option<Arc<Session>> {
        let s = self.sessions.remove(id)?;
        self.uncount(&s.holder);
        Some(s)
    }
}

/// A slot for a session being initialized; freed if the session is never created.
pub struct Reservation<'a> {
    registry: &'a SessionRegistry,
    holder: Option<Holder>,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let holder = self.holder.take();
        self.registry.live.lock().expect("lock").uncount(&holder);
    }
}

/// The process-local sessions plus the record of ended ones.
pub struct SessionRegistry {
    live: Mutex<Live>,
    ended: Mutex<HashMap<[u8; 32], u64>>,
    max_lifetime: Duration,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn digest(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

/// How often idle sessions are looked for: often enough that a session ends within a quarter
/// of `idle` after its time (at most a minute late, at least a second between sweeps).
pub fn sweep_period(idle: Duration) -> Duration {
    (idle / 4).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// Ends the upstream sessions of sessions the sweep ended, a few at a time.
pub async fn close_ended(gw: &crate::gateway::Gateway, ended: Vec<Arc<Session>>) {
    use futures_util::StreamExt;
    if ended.is_empty() {
        return;
    }
    tracing::info!(count = ended.len(), "idle or expired sessions ended");
    let rt = gw.runtime();
    futures_util::stream::iter(ended)
        .for_each_concurrent(16, |s| {
            let server = rt
                .routes
                .get(&s.claims.server_path)
                .map(|r| r.server.clone());
            async move {
                if let Some(server) = server {
                    // Nobody's request: the sweep closes as the gateway.
                    s.close_upstreams(&CallContext::gateway(), &server).await;
                }
            }
        })
        .await;
}

impl SessionRegistry {
    /// An empty registry.
    pub fn new(max_lifetime: Duration) -> Self {
        SessionRegistry {
            live: Mutex::new(Live::default()),
            ended: Mutex::new(HashMap::new()),
            max_lifetime,
        }
    }

    /// Takes a slot for a new session of `holder` before anything is opened upstream, or says
    /// how long until one may free up when `holder` already has `max` sessions.
    pub fn reserve(
        &self,
        holder: &Holder,
        max: usize,
        idle: Duration,
    ) -> Result<Reservation<'_>, Duration> {
        let mut live = self.live.lock().expect("lock");
        if live.per_holder.get(holder).copied().unwrap_or(0) >= max {
            // The soonest an idle session of this holder is ended by the sweep.
            let soonest = live
                .sessions
                .values()
                .filter(|s| s.holder.as_ref() == Some(holder) && !s.busy())
                .map(|s| idle.saturating_sub(s.idle_for()))
                .min()
                .unwrap_or(idle);
            return Err(soonest + sweep_period(idle));
        }
        let holder = Some(holder.clone());
        live.count(&holder);
        Ok(Reservation {
            registry: self,
            holder,
        })
    }

    /// Creates a session and its sealed id in a reserved slot.
    pub fn create(
        &self,
        sealer: &Arc<Keyring>,
        mut claims: SessionClaims,
        mut slot: Reservation<'_>,
    ) -> Arc<Session> {
        claims.issued_at = now_secs();
        let id = super::seal::seal(sealer, &claims);
        // The slot's count passes to the session.
        let holder = slot.holder.take();
        let session = Arc::new(
            Session::from_claims(id.clone(), claims, sealer.clone(), holder)
                .expect("claims we built are valid"),
        );
        self.live
            .lock()
            .expect("lock")
            .sessions
            .insert(id, session.clone());
        session
    }

    /// Finds a session by id, rebuilding it from the id if this process has not seen it.
    pub fn find(
        &self,
        sealer: &Arc<Keyring>,
        id: &str,
        path: &str,
    ) -> Result<Arc<Session>, SessionLookup> {
        let cached = self.live.lock().expect("lock").sessions.get(id).cloned();
        if let Some(s) = cached {
            if s.claims.server_path != path {
                return Err(SessionLookup::Unknown);
            }
            if self.expired(s.claims.issued_at) {
                // Left for the sweep, which ends it and closes its upstream sessions too.
                return Err(SessionLookup::Ended);
            }
            s.touch();
            return Ok(s);
        }
        let claims = super::seal::open(sealer, id).map_err(|_| SessionLookup::Unknown)?;
        if claims.server_path != path {
            return Err(SessionLookup::Unknown);
        }
        if self.ended.lock().expect("lock").contains_key(&digest(id))
            || self.expired(claims.issued_at)
        {
            return Err(SessionLookup::Ended);
        }
        // Admitted where it was issued: it counts against its principal here, but is not
        // refused (an anonymous one cannot be counted: its address then is not known).
        let holder = claims.principal.clone().map(Holder::Principal);
        let session = Arc::new(
            Session::from_claims(id.to_owned(), claims, sealer.clone(), holder)
                .ok_or(SessionLookup::Unknown)?,
        );
        tracing::debug!("continuing a session issued elsewhere");
        let mut live = self.live.lock().expect("lock");
        if let Some(s) = live.sessions.get(id) {
            return Ok(s.clone());
        }
        live.count(&session.holder);
        live.sessions.insert(id.to_owned(), session.clone());
        Ok(session)
    }

    fn expired(&self, issued_at: u64) -> bool {
        now_secs() > issued_at.saturating_add(self.max_lifetime.as_secs())
    }

    /// Ends a session: later requests with its id get 404.
    pub fn end(&self, id: &str) -> Option<Arc<Session>> {
        let s = self.live.lock().expect("lock").remove(id);
        // The id must stay refused until it would have expired anyway, and no longer.
        let issued_at = s.as_ref().map_or_else(now_secs, |s| s.claims.issued_at);
        let expires = issued_at.saturating_add(self.max_lifetime.as_secs());
        self.ended.lock().expect("lock").insert(digest(id), expires);
        if let Some(s) = &s {
            s.end();
        }
        s
    }

    /// Ends sessions unused (no request in progress, no open stream) for `idle`, and sessions
    /// past their lifetime even if in use (their streams are closed); forgets ended ids past
    /// their lifetime. Returns the sessions ended, whose upstream sessions the caller closes.
    pub fn sweep(&self, idle: Duration) -> Vec<Arc<Session>> {
        let due: Vec<String> = self
            .live
            .lock()
            .expect("lock")
            .sessions
            .iter()
            .filter(|(_, s)| {
                self.expired(s.claims.issued_at) || (!s.busy() && s.idle_for() >= idle)
            })
            .map(|(id, _)| id.clone())
            .collect();
        let ended = due.iter().filter_map(|id| self.end(id)).collect();
        let now = now_secs();
        self.ended
            .lock()
            .expect("lock")
            .retain(|_, until| *until > now);
        ended
    }

    /// How many sessions are cached in this process.
    pub fn len(&self) -> usize {
        self.live.lock().expect("lock").sessions.len()
    }

    /// Whether no session is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(principal: Option<&str>) -> SessionClaims {
        SessionClaims {
            server_path: "/mcp".into(),
            version: "2025-11-25".into(),
            client_info: serde_json::json!({}),
            capabilities: serde_json::json!({}),
            upstreams: vec![],
            issued_at: 0,
            principal: principal.map(str::to_owned),
        }
    }

    const IDLE: Duration = Duration::from_secs(60);

    #[test]
    fn the_cap_counts_live_and_reserved_sessions_per_holder() {
        let reg = SessionRegistry::new(Duration::from_secs(3600));
        let sealer = Arc::new(Keyring::random());
        let alice = Holder::Principal("alice".into());
        let s1 = reg.create(
            &sealer,
            claims(Some("alice")),
            reg.reserve(&alice, 2, IDLE).unwrap(),
        );
        let pending = reg.reserve(&alice, 2, IDLE).unwrap();
        let wait = reg.reserve(&alice, 2, IDLE).err().expect("at the cap");
        // The soonest slot: the idle session's remaining time, plus one sweep.
        assert!(wait > IDLE && wait <= IDLE + sweep_period(IDLE), "{wait:?}");
        // Another holder has its own count.
        let other = Holder::Address(None);
        assert!(reg.reserve(&other, 2, IDLE).is_ok());
        // An initialize that fails frees its slot; an ended session frees its own.
        drop(pending);
        let _s2 = reg.create(
            &sealer,
            claims(Some("alice")),
            reg.reserve(&alice, 2, IDLE).unwrap(),
        );
        assert!(reg.reserve(&alice, 2, IDLE).is_err());
        reg.end(&s1.id);
        assert!(reg.reserve(&alice, 2, IDLE).is_ok());
    }

    #[test]
    fn the_sweep_ends_idle_sessions_but_not_sessions_in_use() {
        let reg = SessionRegistry::new(Duration::from_secs(3600));
        let sealer = Arc::new(Keyring::random());
        let h = Holder::Address(None);
        let idle = reg.create(&sealer, claims(None), reg.reserve(&h, 9, IDLE).unwrap());
        let listening = reg.create(&sealer, claims(None), reg.reserve(&h, 9, IDLE).unwrap());
        let stream = listening.replace_listener();
        let calling = reg.create(&sealer, claims(None), reg.reserve(&h, 9, IDLE).unwrap());
        calling.track(&RequestId::Number(1));
        let ended = reg.sweep(Duration::ZERO);
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].id, idle.id);
        assert_eq!(
            reg.find(&sealer, &idle.id, "/mcp").err(),
            Some(SessionLookup::Ended)
        );
        // The client dropping its stream or finishing its call makes the session idle.
        stream.cancel();
        calling.untrack(&RequestId::Number(1));
        assert_eq!(reg.sweep(Duration::ZERO).len(), 2);
        assert!(reg.is_empty());
        assert!(reg.live.lock().unwrap().per_holder.is_empty());
    }

    #[test]
    fn a_session_past_its_lifetime_ends_even_with_a_stream_open() {
        let reg = SessionRegistry::new(Duration::ZERO);
        let sealer = Arc::new(Keyring::random());
        let h = Holder::Address(None);
        let s = reg.create(&sealer, claims(None), reg.reserve(&h, 9, IDLE).unwrap());
        let stream = s.replace_listener();
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(
            reg.find(&sealer, &s.id, "/mcp").err(),
            Some(SessionLookup::Ended)
        );
        // The sweep ends it (so that its upstream sessions are closed) and its stream.
        let ended = reg.sweep(IDLE);
        assert_eq!(ended.len(), 1);
        assert!(stream.is_cancelled());
    }

    #[test]
    fn a_session_continued_from_its_id_counts_against_its_principal() {
        let reg = SessionRegistry::new(Duration::from_secs(3600));
        let sealer = Arc::new(Keyring::random());
        let mut c = claims(Some("bob"));
        c.issued_at = now_secs();
        let id = super::super::seal::seal(&sealer, &c);
        reg.find(&sealer, &id, "/mcp").unwrap();
        let bob = Holder::Principal("bob".into());
        assert!(reg.reserve(&bob, 1, IDLE).is_err());
    }
}
