//! Caps on what one caller may hold at once in this process: concurrent streams per session
//! and per principal (the session and parked-call caps live with their registries). A caller
//! is its principal on a protected server and its client address on an open one; a refusal is
//! [`HttpError::LimitExceeded`] (429, `Retry-After`, JSON-RPC -32008 naming the field).

use super::Caller;
use super::error::HttpError;
use crate::config::Limits;
use crate::web::body::holding;
use axum::response::Response;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Who a cap counts against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Holder {
    /// An authenticated principal, by its binding (a digest of issuer and subject).
    Principal(String),
    /// An anonymous caller of an open server, by the TCP peer address (`None` when unknown,
    /// e.g. in tests that serve without connection info: then every such caller shares one).
    Address(Option<IpAddr>),
}

impl Holder {
    /// Who quotas count this holder as.
    pub fn quota_key(&self) -> String {
        match self {
            Holder::Principal(binding) => binding.clone(),
            Holder::Address(Some(ip)) => format!("address:{ip}"),
            Holder::Address(None) => "address:unknown".into(),
        }
    }

    /// The holder for a request's caller and peer address.
    pub fn of(caller: Option<&Caller>, peer: Option<IpAddr>) -> Holder {
        match caller {
            Some(c) => Holder::Principal(c.principal.binding().to_owned()),
            None => Holder::Address(peer),
        }
    }
}

/// Seconds a client refused for too many streams is told to wait: streams end whenever their
/// calls do, so a short wait is the honest answer.
const STREAM_RETRY_AFTER_SECS: u64 = 2;

#[derive(Default)]
struct Counts {
    by_session: HashMap<String, usize>,
    by_holder: HashMap<Holder, usize>,
}

/// The streams open in this process, by session and by holder. Entries are removed when their
/// count returns to zero, so the maps hold no more than the streams that are open.
#[derive(Default)]
pub struct Streams {
    counts: Mutex<Counts>,
}

/// One open stream; dropping it frees the slot.
pub struct StreamPermit {
    streams: Arc<Streams>,
    session: Option<String>,
    holder: Holder,
}

impl Streams {
    /// Takes a slot for a stream of `holder` (and of `session`, for session-based clients), or
    /// refuses when either cap is reached.
    pub fn acquire(
        self: &Arc<Self>,
        session: Option<&str>,
        holder: &Holder,
        limits: &Limits,
    ) -> Result<StreamPermit, HttpError> {
        let mut c = self.counts.lock().expect("lock");
        if let Some(s) = session
            && c.by_session.get(s).copied().unwrap_or(0) >= limits.streams_per_session
        {
            return Err(HttpError::LimitExceeded {
                limit: "limits.streams_per_session",
                max: limits.streams_per_session,
                retry_after_secs: STREAM_RETRY_AFTER_SECS,
            });
        }
        if c.by_holder.get(holder).copied().unwrap_or(0) >= limits.streams_per_principal {
            return Err(HttpError::LimitExceeded {
                limit: "limits.streams_per_principal",
                max: limits.streams_per_principal,
                retry_after_secs: STREAM_RETRY_AFTER_SECS,
            });
        }
        if let Some(s) = session {
            *c.by_session.entry(s.to_owned()).or_default() += 1;
        }
        *c.by_holder.entry(holder.clone()).or_default() += 1;
        Ok(StreamPermit {
            streams: self.clone(),
            session: session.map(str::to_owned),
            holder: holder.clone(),
        })
    }

    /// Streams open for a holder (for tests and diagnostics).
    pub fn open_for(&self, holder: &Holder) -> usize {
        let c = self.counts.lock().expect("lock");
        c.by_holder.get(holder).copied().unwrap_or(0)
    }
}

fn release<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            map.remove(key);
        }
    }
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut c = self.streams.counts.lock().expect("lock");
        if let Some(s) = &self.session {
            release(&mut c.by_session, s);
        }
        release(&mut c.by_holder, &self.holder);
    }
}

/// A response whose slot is held until its body is finished or dropped (the client went away):
/// an SSE stream counts for as long as it is open, a JSON answer until it is written.
pub fn hold(resp: Response, permit: StreamPermit) -> Response {
    resp.map(|inner| holding(inner, permit))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_session: usize, per_principal: usize) -> Limits {
        Limits {
            streams_per_session: per_session,
            streams_per_principal: per_principal,
            ..Limits::default()
        }
    }

    #[test]
    fn each_cap_refuses_with_its_field_and_slots_come_back() {
        let streams = Arc::new(Streams::default());
        let alice = Holder::Principal("a".into());
        let l = limits(2, 3);
        let a = streams.acquire(Some("s1"), &alice, &l).unwrap();
        let _b = streams.acquire(Some("s1"), &alice, &l).unwrap();
        let refused = streams.acquire(Some("s1"), &alice, &l).err().unwrap();
        assert!(matches!(
            refused,
            HttpError::LimitExceeded {
                limit: "limits.streams_per_session",
                max: 2,
                ..
            }
        ));
        let _c = streams.acquire(Some("s2"), &alice, &l).unwrap();
        let refused = streams.acquire(None, &alice, &l).err().unwrap();
        assert!(matches!(
            refused,
            HttpError::LimitExceeded {
                limit: "limits.streams_per_principal",
                ..
            }
        ));
        // Another holder is not affected.
        let bob = Holder::Address(None);
        let _d = streams.acquire(None, &bob, &l).unwrap();
        drop(a);
        assert_eq!(streams.open_for(&alice), 2);
        streams.acquire(Some("s1"), &alice, &l).unwrap();
    }

    #[test]
    fn maps_forget_holders_without_streams() {
        let streams = Arc::new(Streams::default());
        let l = limits(4, 4);
        for i in 0..100 {
            let h = Holder::Principal(i.to_string());
            drop(streams.acquire(Some(&i.to_string()), &h, &l).unwrap());
        }
        let c = streams.counts.lock().unwrap();
        assert!(c.by_session.is_empty() && c.by_holder.is_empty());
    }
}
