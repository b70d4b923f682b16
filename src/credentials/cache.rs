//! Tokens obtained for an upstream, kept until shortly before they expire. One fetch runs per
//! key at a time, so a burst of calls by one user costs one exchange, while other users'
//! exchanges go on in parallel.

use super::CredentialError;
use http::HeaderValue;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Lifetime assumed when a token response has no `expires_in`.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(60);
/// Most time a token is renewed before it expires.
const RENEW_BEFORE: Duration = Duration::from_secs(30);
/// Keys kept before expired entries are swept.
const MAX_KEYS: usize = 10_000;

/// A token just obtained, as the header to send and when to renew it.
#[derive(Clone)]
pub struct Fresh {
    header: HeaderValue,
    renew_at: Instant,
}

impl Fresh {
    /// `Authorization: Bearer <token>`, renewed before `expires_in` seconds pass (at most
    /// 30 s before, at least half the lifetime after now).
    pub fn bearer(token: &str, expires_in: Option<u64>) -> Result<Fresh, CredentialError> {
        let mut header = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            CredentialError::Invalid {
                grant: "token response",
                reason: "the token has characters not allowed in a header".into(),
            }
        })?;
        header.set_sensitive(true);
        let life = expires_in
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_LIFETIME);
        let early = RENEW_BEFORE.min(life / 2);
        Ok(Fresh {
            header,
            renew_at: Instant::now() + (life - early),
        })
    }
}

/// One key's token, read without waiting; `fetching` makes one caller fetch at a time.
#[derive(Default)]
struct Slot {
    current: Mutex<Option<Fresh>>,
    fetching: tokio::sync::Mutex<()>,
}

impl Slot {
    fn valid(&self) -> Option<HeaderValue> {
        let current = self.current.lock().expect("token slot lock");
        current
            .as_ref()
            .filter(|f| f.renew_at > Instant::now())
            .map(|f| f.header.clone())
    }
}

/// Tokens by key (the user's binding; empty for the gateway's own identity).
#[derive(Default)]
pub struct TokenCache {
    slots: Mutex<HashMap<String, Arc<Slot>>>,
}

impl TokenCache {
    /// Drops what is cached for `key` (a revoked or replaced connection).
    pub fn forget(&self, key: &str) {
        self.slots.lock().expect("token cache lock").remove(key);
    }

    /// The cached header for `key`, or the result of `fetch` (kept when it succeeds).
    pub async fn get_or_fetch(
        &self,
        key: &str,
        fetch: impl Future<Output = Result<Fresh, CredentialError>>,
    ) -> Result<HeaderValue, CredentialError> {
        let slot = {
            let mut slots = self.slots.lock().expect("token cache lock");
            if slots.len() >= MAX_KEYS && !slots.contains_key(key) {
                slots.retain(|_, s| s.valid().is_some());
            }
            slots.entry(key.to_owned()).or_default().clone()
        };
        if let Some(h) = slot.valid() {
            return Ok(h);
        }
        let _one_fetch = slot.fetching.lock().await;
        // Whoever held the lock before may have fetched already.
        if let Some(h) = slot.valid() {
            return Ok(h);
        }
        let fresh = fetch.await?;
        let header = fresh.header.clone();
        *slot.current.lock().expect("token slot lock") = Some(fresh);
        Ok(header)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn one_fetch_per_key_until_renewal() {
        let cache = TokenCache::default();
        let fetches = AtomicUsize::new(0);
        let fetches = &fetches;
        let fetch = |life| async move {
            fetches.fetch_add(1, Ordering::SeqCst);
            tokio::task::yield_now().await;
            Fresh::bearer("t", Some(life))
        };
        let calls = (0..20).map(|_| cache.get_or_fetch("alice", fetch(300)));
        for r in futures_util::future::join_all(calls).await {
            assert_eq!(r.unwrap(), "Bearer t");
        }
        assert_eq!(
            fetches.load(Ordering::SeqCst),
            1,
            "20 concurrent calls, one fetch"
        );
        cache.get_or_fetch("bob", fetch(300)).await.unwrap();
        assert_eq!(
            fetches.load(Ordering::SeqCst),
            2,
            "another user, another fetch"
        );
        // A token that lives 0 s is renewed on the next call.
        cache.get_or_fetch("carol", fetch(0)).await.unwrap();
        cache.get_or_fetch("carol", fetch(0)).await.unwrap();
        assert_eq!(fetches.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn a_failed_fetch_is_not_kept() {
        let cache = TokenCache::default();
        let refused = async {
            Err(CredentialError::Refused {
                grant: "token exchange",
                error: "invalid_grant".into(),
                description: None,
            })
        };
        assert!(cache.get_or_fetch("a", refused).await.is_err());
        let ok = cache
            .get_or_fetch("a", async { Fresh::bearer("t2", Some(60)) })
            .await;
        assert_eq!(ok.unwrap(), "Bearer t2");
    }

    #[test]
    fn renewal_comes_before_expiry() {
        let f = Fresh::bearer("t", Some(300)).unwrap();
        let left = f.renew_at - Instant::now();
        assert!(left <= Duration::from_secs(270) && left > Duration::from_secs(260));
        let short = Fresh::bearer("t", Some(10)).unwrap();
        assert!(short.renew_at - Instant::now() <= Duration::from_secs(5));
        assert!(Fresh::bearer("bad\ntoken", None).is_err());
    }
}
