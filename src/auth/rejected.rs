//! Credentials recently refused by an issuer, so that a client repeating a dead token (or an
//! attacker replaying one) does not turn every request into a call to the IdP.

use super::CredentialDigest;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a refusal is remembered.
const REMEMBER: Duration = Duration::from_secs(10);
/// Most refusals remembered; beyond, the oldest are forgotten first (by clearing).
const MAX_ENTRIES: usize = 10_000;

/// Digests of refused credentials with the reason and when it expires.
#[derive(Default)]
pub struct RejectedCache {
    entries: Mutex<HashMap<CredentialDigest, (Instant, String)>>,
}

impl RejectedCache {
    /// The reason a credential was refused within the last few seconds.
    pub fn get(&self, d: &CredentialDigest) -> Option<String> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(d)
            .filter(|(until, _)| *until > Instant::now())
            .map(|(_, why)| why.clone())
    }

    /// Remembers a refusal.
    pub fn insert(&self, d: CredentialDigest, why: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_ENTRIES {
            let now = Instant::now();
            entries.retain(|_, (until, _)| *until > now);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(d, (Instant::now() + REMEMBER, why.to_owned()));
    }
}
