//! Downstream sessions: the state behind a sealed id, cached per process and rebuilt from the id
//! itself when a request lands on a replica that has not seen the session.

use super::seal::{Sealer, SessionClaims};
use crate::federation::{Member, SessionSource};
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
    sealer: Arc<Sealer>,
    links: tokio::sync::Mutex<HashMap<String, UpstreamSession>>,
    replies: Mutex<HashMap<u64, PendingReply>>,
    inflight: Mutex<HashMap<RequestId, CancellationToken>>,
    next_reply_id: AtomicU64,
    listener: Mutex<Option<CancellationToken>>,
    last_used: Mutex<Instant>,
}

impl Session {
    fn from_claims(id: String, claims: SessionClaims, sealer: Arc<Sealer>) -> Option<Session> {
        let version: ProtocolVersion = claims.version.parse().ok()?;
        let links = claims
            .upstreams
            .iter()
            .filter_map(|(name, sid, v)| {
                Some((
                    name.clone(),
                    UpstreamSession {
                        id: sid.clone(),
                        version: v.parse().ok()?,
                    },
                ))
            })
            .collect();
        Some(Session {
            identity: ClientIdentity {
                version,
                client_info: claims.client_info.clone(),
                capabilities: claims.capabilities.clone(),
            },
            id,
            version,
            claims,
            sealer,
            links: tokio::sync::Mutex::new(links),
            replies: Mutex::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
            next_reply_id: AtomicU64::new(1),
            listener: Mutex::new(None),
            last_used: Mutex::new(Instant::now()),
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
    pub fn sealer(&self) -> &Sealer {
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

    /// Stops tracking a request.
    pub fn untrack(&self, id: &RequestId) {
        self.inflight.lock().expect("lock").remove(id);
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

    fn touch(&self) {
        *self.last_used.lock().expect("lock") = Instant::now();
    }

    fn idle_for(&self) -> Duration {
        self.last_used.lock().expect("lock").elapsed()
    }

    fn busy(&self) -> bool {
        !self.inflight.lock().expect("lock").is_empty()
            || {
                let mut replies = self.replies.lock().expect("lock");
                replies.retain(|_, p| p.relayed_at.elapsed() < super::answers::ANSWER_WINDOW);
                !replies.is_empty()
            }
            || self
                .listener
                .lock()
                .expect("lock")
                .as_ref()
                .is_some_and(|t| !t.is_cancelled())
    }

    /// Ends streams and requests of this session.
    fn end(&self) {
        if let Some(t) = self.listener.lock().expect("lock").take() {
            t.cancel();
        }
        for (_, t) in self.inflight.lock().expect("lock").drain() {
            t.cancel();
        }
    }
}

impl SessionSource for Session {
    fn session<'a>(
        &'a self,
        member: &'a Member,
    ) -> BoxFuture<'a, Result<UpstreamSession, UpstreamError>> {
        Box::pin(async move {
            let mut links = self.links.lock().await;
            if let Some(s) = links.get(&member.upstream) {
                return Ok(s.clone());
            }
            let (s, _) = member.client.open(&self.identity).await?;
            links.insert(member.upstream.clone(), s.clone());
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
            member.client.listen(&session).await
        })
    }

    fn expired(&self, member: &Member, session: &UpstreamSession) {
        if let Ok(mut links) = self.links.try_lock()
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

/// The process-local cache of sessions plus the record of ended ones.
pub struct SessionRegistry {
    live: Mutex<HashMap<String, Arc<Session>>>,
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

impl SessionRegistry {
    /// An empty registry.
    pub fn new(max_lifetime: Duration) -> Self {
        SessionRegistry {
            live: Mutex::new(HashMap::new()),
            ended: Mutex::new(HashMap::new()),
            max_lifetime,
        }
    }

    /// Creates a session and its sealed id.
    pub fn create(&self, sealer: &Arc<Sealer>, mut claims: SessionClaims) -> Arc<Session> {
        claims.issued_at = now_secs();
        let id = sealer.seal(&claims);
        let session = Arc::new(
            Session::from_claims(id.clone(), claims, sealer.clone())
                .expect("claims we built are valid"),
        );
        self.live.lock().expect("lock").insert(id, session.clone());
        session
    }

    /// Finds a session by id, rebuilding it from the id if this process has not seen it.
    pub fn find(
        &self,
        sealer: &Arc<Sealer>,
        id: &str,
        path: &str,
    ) -> Result<Arc<Session>, SessionLookup> {
        if let Some(s) = self.live.lock().expect("lock").get(id).cloned() {
            if s.claims.server_path != path {
                return Err(SessionLookup::Unknown);
            }
            if self.expired(s.claims.issued_at) {
                self.end(id);
                return Err(SessionLookup::Ended);
            }
            s.touch();
            return Ok(s);
        }
        let claims = sealer.open(id).map_err(|_| SessionLookup::Unknown)?;
        if claims.server_path != path {
            return Err(SessionLookup::Unknown);
        }
        if self.ended.lock().expect("lock").contains_key(&digest(id))
            || self.expired(claims.issued_at)
        {
            return Err(SessionLookup::Ended);
        }
        let session = Arc::new(
            Session::from_claims(id.to_owned(), claims, sealer.clone())
                .ok_or(SessionLookup::Unknown)?,
        );
        tracing::debug!("continuing a session issued elsewhere");
        let mut live = self.live.lock().expect("lock");
        Ok(live.entry(id.to_owned()).or_insert(session).clone())
    }

    fn expired(&self, issued_at: u64) -> bool {
        now_secs() > issued_at.saturating_add(self.max_lifetime.as_secs())
    }

    /// Ends a session: later requests with its id get 404.
    pub fn end(&self, id: &str) -> Option<Arc<Session>> {
        let expires = now_secs() + self.max_lifetime.as_secs();
        self.ended.lock().expect("lock").insert(digest(id), expires);
        let s = self.live.lock().expect("lock").remove(id);
        if let Some(s) = &s {
            s.end();
        }
        s
    }

    /// Drops cached sessions idle longer than `idle` (they can be rebuilt from their ids) and
    /// forgets ended ids past their lifetime.
    pub fn sweep(&self, idle: Duration) {
        self.live
            .lock()
            .expect("lock")
            .retain(|_, s| s.busy() || s.idle_for() < idle);
        let now = now_secs();
        self.ended
            .lock()
            .expect("lock")
            .retain(|_, until| *until > now);
    }

    /// How many sessions are cached in this process.
    pub fn len(&self) -> usize {
        self.live.lock().expect("lock").len()
    }

    /// Whether no session is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
