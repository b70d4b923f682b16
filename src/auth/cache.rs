//! Verified credentials, remembered by the SHA-256 of the credential (never the credential
//! itself) until they expire, so a token seen before costs one hash and one lookup.

use super::Verified;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

const SHARDS: usize = 16;

/// The digest a credential is remembered by.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CredentialDigest([u8; 32]);

impl CredentialDigest {
    /// Digests a presented credential.
    pub fn of(credential: &str) -> Self {
        CredentialDigest(Sha256::digest(credential.as_bytes()).into())
    }

    /// Digests a credential together with a scope (e.g. the issuers it was shown to), for
    /// answers that hold only within that scope.
    pub fn scoped(credential: &str, scope: &str) -> Self {
        let mut h = Sha256::new();
        h.update((scope.len() as u64).to_be_bytes());
        h.update(scope.as_bytes());
        h.update(credential.as_bytes());
        CredentialDigest(h.finalize().into())
    }
}

struct Entry {
    verified: Verified,
    until: Instant,
}

/// A bounded map from credential digests to what was verified about them.
pub struct VerifiedCache {
    shards: Vec<Mutex<HashMap<CredentialDigest, Entry>>>,
    per_shard: usize,
}

impl VerifiedCache {
    /// A cache holding at most about `max_entries` principals.
    pub fn new(max_entries: usize) -> Self {
        VerifiedCache {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: max_entries.div_ceil(SHARDS).max(1),
        }
    }

    fn shard(&self, d: &CredentialDigest) -> &Mutex<HashMap<CredentialDigest, Entry>> {
        &self.shards[d.0[0] as usize % SHARDS]
    }

    /// The principal for a credential verified before and not yet expired.
    pub(crate) fn get(&self, d: &CredentialDigest) -> Option<Verified> {
        let mut shard = self.shard(d).lock().unwrap_or_else(|e| e.into_inner());
        match shard.get(d) {
            Some(e) if e.until > Instant::now() => Some(e.verified.clone()),
            Some(_) => {
                shard.remove(d);
                None
            }
            None => None,
        }
    }

    /// Remembers a verified credential until `until`.
    pub(crate) fn insert(&self, d: CredentialDigest, verified: Verified, until: Instant) {
        let now = Instant::now();
        if until <= now {
            return;
        }
        let mut shard = self.shard(&d).lock().unwrap_or_else(|e| e.into_inner());
        if shard.len() >= self.per_shard {
            shard.retain(|_, e| e.until > now);
        }
        if shard.len() >= self.per_shard {
            // Still full of live entries: drop an arbitrary eighth rather than grow.
            let drop: Vec<_> = shard.keys().take(self.per_shard / 8 + 1).copied().collect();
            for k in drop {
                shard.remove(&k);
            }
        }
        shard.insert(d, Entry { verified, until });
    }

    /// Forgets every entry `f` picks; returns how many.
    pub(crate) fn forget_where(&self, f: impl Fn(&Verified) -> bool) -> usize {
        let mut gone = 0;
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            let before = shard.len();
            shard.retain(|_, e| !f(&e.verified));
            gone += before - shard.len();
        }
        gone
    }

    /// How many entries are held (for tests and metrics).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::principal::{CredentialKind, Principal};
    use std::time::Duration;

    fn principal(sub: &str) -> Verified {
        let p = Principal::from_claims(
            serde_json::json!({"sub": sub}),
            &Default::default(),
            CredentialKind::Jwt,
        );
        Verified {
            principal: std::sync::Arc::new(p.unwrap()),
            servers: Vec::new().into(),
        }
    }

    #[test]
    fn entries_expire_and_memory_stays_bounded() {
        let cache = VerifiedCache::new(64);
        let later = Instant::now() + Duration::from_secs(60);
        for i in 0..1000 {
            cache.insert(
                CredentialDigest::of(&format!("t{i}")),
                principal("a"),
                later,
            );
        }
        assert!(cache.len() <= 64 + SHARDS, "{} entries", cache.len());
        let d = CredentialDigest::of("fresh");
        cache.insert(d, principal("b"), later);
        assert_eq!(cache.get(&d).unwrap().principal.subject(), "b");
        let gone = CredentialDigest::of("expired");
        cache.insert(
            gone,
            principal("c"),
            Instant::now() + Duration::from_millis(1),
        );
        std::thread::sleep(Duration::from_millis(5));
        assert!(cache.get(&gone).is_none());
    }
}
