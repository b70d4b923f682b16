//! Sealed session ids: the session's state, encrypted and authenticated with AES-256-GCM, so
//! that any replica holding the key can continue a session and a client learns nothing from it.
//! The same keys seal other values a client hands back to any replica (the routes of
//! server→client requests), each bound to its own context.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What a session id carries (short field names keep the header small).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SessionClaims {
    /// Path of the virtual server.
    #[serde(rename = "s")]
    pub server_path: String,
    /// Negotiated protocol version.
    #[serde(rename = "v")]
    pub version: String,
    /// The client's `clientInfo`.
    #[serde(rename = "c")]
    pub client_info: Value,
    /// The client's capabilities.
    #[serde(rename = "k")]
    pub capabilities: Value,
    /// Upstream sessions opened at initialize: (upstream, session id, version).
    #[serde(rename = "u")]
    pub upstreams: Vec<(String, Option<String>, String)>,
    /// Issued at, seconds since the epoch.
    #[serde(rename = "t")]
    pub issued_at: u64,
    /// The authenticated principal's binding ([`crate::auth::Principal::binding`]): only the
    /// same principal may continue the session.
    #[serde(rename = "p", default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
}

/// A key that seals and opens session ids.
pub struct SealingKey {
    id: String,
    cipher: Aes256Gcm,
}

impl SealingKey {
    /// A key from 32 bytes.
    pub fn new(id: &str, bytes: &[u8; 32]) -> Self {
        SealingKey {
            id: id.to_owned(),
            cipher: Aes256Gcm::new(bytes.into()),
        }
    }

    /// A random key for a single process.
    pub fn random() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        SealingKey::new("local", &bytes)
    }
}

/// Seals with the first key and opens with any (key rotation: add the new key first, keep the
/// old one until its sessions have ended).
pub struct Sealer {
    keys: Vec<SealingKey>,
}

/// A session id that could not be opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the session id is not one this gateway issued")]
pub struct NotOurs;

impl Sealer {
    /// A sealer over these keys (at least one).
    pub fn new(keys: Vec<SealingKey>) -> Self {
        assert!(!keys.is_empty(), "a sealer needs a key");
        Sealer { keys }
    }

    /// Seals claims into a session id of visible ASCII.
    pub fn seal(&self, claims: &SessionClaims) -> String {
        self.seal_value(claims, "")
    }

    /// Opens a session id sealed by any of the keys.
    pub fn open(&self, id: &str) -> Result<SessionClaims, NotOurs> {
        self.open_value(id, "")
    }

    /// Seals any value into visible ASCII, bound to `context`: it opens only with the same
    /// context, so that a value sealed for one purpose (or one session) serves no other.
    pub fn seal_value<T: Serialize>(&self, value: &T, context: &str) -> String {
        let key = &self.keys[0];
        let plain = serde_json::to_vec(value).expect("sealed values serialize");
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let aad = [key.id.as_bytes(), context.as_bytes()].concat();
        let sealed = key
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &plain,
                    aad: &aad,
                },
            )
            .expect("AES-GCM encryption cannot fail for small inputs");
        let mut out = Vec::with_capacity(12 + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        format!("{}.{}", key.id, URL_SAFE_NO_PAD.encode(out))
    }

    /// Opens a value sealed by any of the keys for `context`.
    pub fn open_value<T: DeserializeOwned>(&self, id: &str, context: &str) -> Result<T, NotOurs> {
        if id.len() > 8192 {
            return Err(NotOurs);
        }
        let (kid, body) = id.split_once('.').ok_or(NotOurs)?;
        let key = self.keys.iter().find(|k| k.id == kid).ok_or(NotOurs)?;
        let raw = URL_SAFE_NO_PAD.decode(body).map_err(|_| NotOurs)?;
        if raw.len() < 12 + 16 {
            return Err(NotOurs);
        }
        let (nonce, sealed) = raw.split_at(12);
        let aad = [kid.as_bytes(), context.as_bytes()].concat();
        let plain = key
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: &aad,
                },
            )
            .map_err(|_| NotOurs)?;
        serde_json::from_slice(&plain).map_err(|_| NotOurs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> SessionClaims {
        SessionClaims {
            server_path: "/mcp".into(),
            version: "2025-11-25".into(),
            client_info: serde_json::json!({"name": "c"}),
            principal: Some("0a1b2c".into()),
            capabilities: serde_json::json!({}),
            upstreams: vec![(
                "a".into(),
                Some("upstream-secret-session".into()),
                "2025-11-25".into(),
            )],
            issued_at: 1,
        }
    }

    #[test]
    fn seals_opaquely_and_opens_with_any_key() {
        let old = Sealer::new(vec![SealingKey::new("k1", &[1; 32])]);
        let id = old.seal(&claims());
        assert!(id.starts_with("k1."));
        assert!(!id.contains("upstream-secret-session"));
        assert!(id.bytes().all(|b| (0x21..=0x7e).contains(&b)));
        let rotated = Sealer::new(vec![
            SealingKey::new("k2", &[2; 32]),
            SealingKey::new("k1", &[1; 32]),
        ]);
        assert_eq!(rotated.open(&id).unwrap(), claims());
        assert!(rotated.seal(&claims()).starts_with("k2."));
    }

    #[test]
    fn rejects_tampering_foreign_keys_and_garbage() {
        let s = Sealer::new(vec![SealingKey::new("k1", &[1; 32])]);
        let id = s.seal(&claims());
        let mut tampered = id.clone().into_bytes();
        let last = tampered.len() - 3;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            s.open(std::str::from_utf8(&tampered).unwrap()),
            Err(NotOurs)
        );
        let other = Sealer::new(vec![SealingKey::new("k1", &[9; 32])]);
        assert_eq!(other.open(&id), Err(NotOurs));
        for junk in ["", "k1", "k1.", "k1.!!!", "zz.AAAA", &"x".repeat(10_000)] {
            assert_eq!(s.open(junk), Err(NotOurs));
        }
    }

    #[test]
    fn a_value_opens_only_in_the_context_it_was_sealed_for() {
        let s = Sealer::new(vec![SealingKey::new("k1", &[1; 32])]);
        let sealed = s.seal_value(&42u32, "answer:session-a");
        assert_eq!(s.open_value::<u32>(&sealed, "answer:session-a"), Ok(42));
        assert_eq!(
            s.open_value::<u32>(&sealed, "answer:session-b"),
            Err(NotOurs)
        );
        // A session id is no sealed answer route, nor the reverse.
        assert_eq!(
            s.open_value::<u32>(&s.seal(&claims()), "answer:x"),
            Err(NotOurs)
        );
        assert_eq!(s.open(&s.seal_value(&claims(), "answer:x")), Err(NotOurs));
    }
}
