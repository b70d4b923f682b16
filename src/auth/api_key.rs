//! Gateway API keys for headless agents: `ghk_<id>_<secret>`. The id finds the record; only the
//! SHA-256 of the whole key is stored, and it is compared in constant time.

use super::AuthError;
use super::principal::Principal;
use crate::store::{ApiKeyRecord, Store};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const PREFIX: &str = "ghk_";
const ID_LEN: usize = 12;
/// 32 random bytes, base64url without padding.
const SECRET_LEN: usize = 43;

/// A freshly generated key: shown to the operator once, stored only as `digest`.
pub struct GeneratedKey {
    /// The whole key, to hand to the agent.
    pub key: String,
    /// Its public id.
    pub id: String,
    /// Hex SHA-256 of the whole key.
    pub digest: String,
}

/// Generates a new random key.
pub fn generate_api_key() -> GeneratedKey {
    let mut rng = rand::rng();
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let id: String = (0..ID_LEN)
        .map(|_| ALPHABET[(rng.next_u32() % ALPHABET.len() as u32) as usize] as char)
        .collect();
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut secret);
    let key = format!("{PREFIX}{id}_{}", URL_SAFE_NO_PAD.encode(secret));
    GeneratedKey {
        digest: digest(&key),
        key,
        id,
    }
}

/// Whether a credential claims to be a gateway API key.
pub(super) fn looks_like_api_key(credential: &str) -> bool {
    credential.starts_with(PREFIX)
}

fn digest(key: &str) -> String {
    crate::hex::encode(&Sha256::digest(key.as_bytes()))
}

/// The id part of a well-formed key.
fn key_id(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let well_formed = id.len() == ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && secret.len() == SECRET_LEN
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    well_formed.then_some(id)
}

/// Looks a key up and checks it; the record is returned for the principal and its limits.
pub(super) async fn verify_api_key(
    store: &Store,
    key: &str,
) -> Result<(Principal, ApiKeyRecord), AuthError> {
    let id = key_id(key).ok_or_else(|| AuthError::Invalid("malformed API key".into()))?;
    let record = store
        .find_api_key(id)
        .await
        .map_err(|e| AuthError::Unavailable(format!("cannot look the API key up: {e}")))?
        .ok_or_else(|| AuthError::Invalid("unknown API key".into()))?;
    let presented = digest(key);
    if !bool::from(presented.as_bytes().ct_eq(record.digest.as_bytes())) {
        return Err(AuthError::Invalid("unknown API key".into()));
    }
    if record.revoked_at.is_some() {
        return Err(AuthError::Invalid(format!("API key {id} has been revoked")));
    }
    if record
        .expires_at
        .is_some_and(|e| e <= crate::store::now_secs())
    {
        return Err(AuthError::Invalid(format!("API key {id} has expired")));
    }
    Ok((Principal::for_api_key(&record), record))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_well_formed_and_distinct() {
        let a = generate_api_key();
        let b = generate_api_key();
        assert_ne!(a.key, b.key);
        assert_eq!(key_id(&a.key), Some(a.id.as_str()));
        assert_eq!(a.digest, digest(&a.key));
        assert!(looks_like_api_key(&a.key));
        assert_eq!(key_id("ghk_short_x"), None);
        let mut tampered = a.key.clone();
        tampered.push('x');
        assert_eq!(key_id(&tampered), None);
    }
}
