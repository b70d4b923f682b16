//! Sealed session ids: the session's state, sealed with the session keys
//! ([`crate::keyring`], `sessions.keys`), so that any replica holding the key can continue a
//! session and a client learns nothing from it. The same keys seal other values a client hands
//! back to any replica (the routes of server→client requests, task ids), each bound to its own
//! context.

use crate::keyring::{Keyring, NotOurs};
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

/// Seals claims into a session id of visible ASCII (`<key id>.<base64url>`).
pub fn seal(keys: &Keyring, claims: &SessionClaims) -> String {
    keys.seal_value(claims, "")
}

/// Opens a session id sealed by any of the keys.
pub fn open(keys: &Keyring, id: &str) -> Result<SessionClaims, NotOurs> {
    keys.open_value(id, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(keys: &[(&str, u8)]) -> Keyring {
        let keys: Vec<(&str, [u8; 32])> = keys.iter().map(|(id, b)| (*id, [*b; 32])).collect();
        Keyring::from_bytes(&keys).unwrap()
    }

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
        let old = ring(&[("k1", 1)]);
        let id = seal(&old, &claims());
        assert!(id.starts_with("k1."));
        assert!(!id.contains("upstream-secret-session"));
        assert!(id.bytes().all(|b| (0x21..=0x7e).contains(&b)));
        let rotated = ring(&[("k2", 2), ("k1", 1)]);
        assert_eq!(open(&rotated, &id).unwrap(), claims());
        assert!(seal(&rotated, &claims()).starts_with("k2."));
    }

    #[test]
    fn rejects_tampering_foreign_keys_and_garbage() {
        let s = ring(&[("k1", 1)]);
        let id = seal(&s, &claims());
        let mut tampered = id.clone().into_bytes();
        let last = tampered.len() - 3;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            open(&s, std::str::from_utf8(&tampered).unwrap()),
            Err(NotOurs)
        );
        let other = ring(&[("k1", 9)]);
        assert_eq!(open(&other, &id), Err(NotOurs));
        for junk in ["", "k1", "k1.", "k1.!!!", "zz.AAAA", &"x".repeat(10_000)] {
            assert_eq!(open(&s, junk), Err(NotOurs));
        }
    }

    #[test]
    fn a_value_opens_only_in_the_context_it_was_sealed_for() {
        let s = ring(&[("k1", 1)]);
        let sealed = s.seal_value(&42u32, "answer:session-a");
        assert_eq!(s.open_value::<u32>(&sealed, "answer:session-a"), Ok(42));
        assert_eq!(
            s.open_value::<u32>(&sealed, "answer:session-b"),
            Err(NotOurs)
        );
        // A session id is no sealed answer route, nor the reverse.
        assert_eq!(
            s.open_value::<u32>(&seal(&s, &claims()), "answer:x"),
            Err(NotOurs)
        );
        assert_eq!(open(&s, &s.seal_value(&claims(), "answer:x")), Err(NotOurs));
    }
}
