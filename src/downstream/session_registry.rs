//! The sessions of this process: live ones by sealed id (a session issued by a replica with the
//! same keys is opened from its id and joins them), the record of ended ones, the per-holder
//! cap with reservations for sessions being initialized, and the idle sweep.

use super::limits::Holder;
use super::seal::SessionClaims;
use super::session::Session;
use crate::context::CallContext;
use crate::keyring::Keyring;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

/// One live session, as the admin console lists it.
#[derive(Debug, Clone)]
pub struct SessionSummary {
    /// A digest of its id, naming it in [`SessionRegistry::end_by_handle`].
    pub handle: String,
    /// Its virtual server.
    pub server_path: String,
    /// Whom it counts against: a principal's binding (digest of issuer and subject) or an address.
    pub holder: String,
    /// The client's `clientInfo.name` (cut to 64 characters).
    pub client: String,
    /// The negotiated protocol version.
    pub version: String,
    /// When it began, seconds since the epoch.
    pub issued_at: u64,
    /// Since its last request.
    pub idle: Duration,
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

    /// What an operator sees of the live sessions of this process: at most `max`, the most
    /// recently used first. The handle is a digest of the id (the id itself is a credential).
    pub fn snapshot(&self, max: usize) -> Vec<SessionSummary> {
        let live = self.live.lock().expect("lock");
        let mut all: Vec<SessionSummary> = live
            .sessions
            .iter()
            .map(|(id, s)| SessionSummary {
                handle: crate::hex::encode(&digest(id)[..12]),
                server_path: s.claims.server_path.clone(),
                holder: match &s.holder {
                    Some(Holder::Principal(b)) => format!("principal {b}"),
                    Some(Holder::Address(Some(ip))) => format!("anonymous from {ip}"),
                    _ => "anonymous".into(),
                },
                client: s.claims.client_info["name"]
                    .as_str()
                    .unwrap_or("")
                    .chars()
                    .take(64)
                    .collect(),
                version: s.claims.version.clone(),
                issued_at: s.claims.issued_at,
                idle: s.idle_for(),
            })
            .collect();
        drop(live);
        all.sort_by_key(|s| s.idle);
        all.truncate(max);
        all
    }

    /// Ends the live session whose [`SessionSummary::handle`] is `handle` (as DELETE would);
    /// returns it so that the caller closes its upstream sessions.
    pub fn end_by_handle(&self, handle: &str) -> Option<Arc<Session>> {
        let id = self
            .live
            .lock()
            .expect("lock")
            .sessions
            .keys()
            .find(|id| crate::hex::encode(&digest(id)[..12]) == handle)
            .cloned()?;
        self.end(&id)
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
    use crate::protocol::RequestId;

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
    fn a_snapshot_is_capped_and_a_session_ends_by_its_handle() {
        let reg = SessionRegistry::new(Duration::from_secs(3600));
        let sealer = Arc::new(Keyring::random());
        let alice = Holder::Principal("b1nd".into());
        let mut ids = Vec::new();
        for _ in 0..3 {
            let s = reg.create(
                &sealer,
                claims(Some("b1nd")),
                reg.reserve(&alice, 9, IDLE).unwrap(),
            );
            ids.push(s.id.clone());
        }
        assert_eq!(reg.snapshot(2).len(), 2, "capped");
        let all = reg.snapshot(10);
        assert_eq!(all.len(), 3);
        assert!(
            all.iter()
                .all(|s| s.holder == "principal b1nd" && !ids.contains(&s.handle))
        );
        let ended = reg.end_by_handle(&all[0].handle).expect("found by handle");
        assert!(ids.contains(&ended.id));
        assert!(matches!(
            reg.find(&sealer, &ended.id, "/mcp"),
            Err(SessionLookup::Ended)
        ));
        assert_eq!(reg.snapshot(10).len(), 2);
        assert!(reg.end_by_handle("no-such-handle").is_none());
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
