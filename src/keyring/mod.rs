//! The gateway's one AES-256-GCM keyring and the two sealed formats built on the same keys
//! (how a key is configured, the key-id rule and the key-text decoder are `config::keys`,
//! re-exported here). Session ids (and the other values handed to clients), third-party tokens at rest
//! and the façade's signing keys in the store are all sealed here.
//!
//! The first key seals, every key opens (rotation: put the new key first, keep the old one
//! until what it sealed has expired). Two envelopes, both kept exactly as they were written
//! before this module existed, so that values sealed by older versions still open:
//!
//! - **handed to clients** ([`Keyring::seal_value`]): `<key id>.<base64url(nonce ‖ ciphertext ‖
//!   tag)>`, a JSON value authenticated with `key id ‖ context`, short enough for a header;
//! - **kept at rest** ([`Keyring::seal`]): `v1.<key id>.<base64url nonce>.<base64url ciphertext
//!   ‖ tag>`, bytes authenticated with `v1.<key id>.` followed by the caller's associated data
//!   (which binds the value to its row).

use crate::config::Secret;
pub use crate::config::keys::{
    KEYS_AT_REST, KeyConfig, KeyRules, KeyTextError, MAX_KEY_ID_LEN, SESSION_KEYS, check_keys,
    decode_key, valid_key_id,
};
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;

#[cfg(test)]
mod tests;

/// The version field of the at-rest format.
const VERSION: &str = "v1";
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Longest value handed back by a client that is tried at all.
const MAX_CLIENT_VALUE_LEN: usize = 8192;

/// Why a keyring could not be built. Names key ids, never key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    /// No key at all.
    #[error("at least one sealing key is needed")]
    NoKey,
    /// A key id breaks [`valid_key_id`].
    #[error(
        "sealing key #{index} has id {id:?}: a key id must be 1-{MAX_KEY_ID_LEN} ASCII letters, \
         digits, `-` or `_`"
    )]
    BadId {
        /// 1-based position of the key.
        index: usize,
        /// The id as configured.
        id: String,
    },
    /// Two keys with one id.
    #[error("sealing key id {0:?} is used more than once")]
    DuplicateId(String),
    /// The key's text could not be read.
    #[error("sealing key {id:?}: {reason}")]
    Unavailable {
        /// The key's id.
        id: String,
        /// The resolver's message (names the variable or file, not the value).
        reason: String,
    },
    /// The key's text is not a key.
    #[error("sealing key {id:?} {what}")]
    BadKey {
        /// The key's id.
        id: String,
        /// What is wrong with it.
        what: KeyTextError,
    },
}

/// A client-held value that could not be opened (for clients, one answer whatever the cause).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the value is not one this gateway sealed")]
pub struct NotOurs;

/// Why a value kept at rest could not be opened. Never carries key material or plaintext.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The value was sealed under a key id that is not configured (any more).
    #[error("the value was sealed with key id {0:?}, which is not configured")]
    UnknownKey(String),
    /// The value is not a sealed value of a known format.
    #[error("the sealed value is malformed")]
    Malformed,
    /// Authentication failed: a different key with the same id, a value bound to another row,
    /// or tampering.
    #[error("the sealed value was rejected (wrong key, wrong binding or tampered)")]
    Rejected,
}

struct Key {
    id: String,
    cipher: Aes256Gcm,
}

/// Seals with the first key and opens with any.
pub struct Keyring {
    /// Never empty; the first is current.
    keys: Vec<Key>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field(
                "key_ids",
                &self.keys.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Keyring {
    /// The keys of a configuration block, read from their sources now.
    pub fn from_config(keys: &[KeyConfig]) -> Result<Keyring, KeyringError> {
        let texts = keys
            .iter()
            .map(|k| {
                k.key
                    .resolve()
                    .map(|text| (k.id.clone(), text))
                    .map_err(|reason| KeyringError::Unavailable {
                        id: k.id.clone(),
                        reason,
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Keyring::new(&texts)
    }

    /// `keys`: (key id, base64 text of the key), the first current.
    pub fn new(keys: &[(String, Secret)]) -> Result<Keyring, KeyringError> {
        let bytes = keys
            .iter()
            .map(|(id, text)| {
                decode_key(text.expose())
                    .map(|b| (id.as_str(), b))
                    .map_err(|what| KeyringError::BadKey {
                        id: id.clone(),
                        what,
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Keyring::from_bytes(&bytes)
    }

    /// `keys`: (key id, key), the first current.
    pub fn from_bytes(keys: &[(&str, [u8; 32])]) -> Result<Keyring, KeyringError> {
        if keys.is_empty() {
            return Err(KeyringError::NoKey);
        }
        let mut out: Vec<Key> = Vec::with_capacity(keys.len());
        for (i, (id, bytes)) in keys.iter().enumerate() {
            if !valid_key_id(id) {
                return Err(KeyringError::BadId {
                    index: i + 1,
                    id: (*id).to_owned(),
                });
            }
            if out.iter().any(|k| k.id == *id) {
                return Err(KeyringError::DuplicateId((*id).to_owned()));
            }
            out.push(Key {
                id: (*id).to_owned(),
                cipher: Aes256Gcm::new(bytes.into()),
            });
        }
        Ok(Keyring { keys: out })
    }

    /// A random key for a single process (sessions without configured keys).
    pub fn random() -> Keyring {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        Keyring::from_bytes(&[("local", bytes)]).expect("a valid key id")
    }

    /// The id of the sealing key (stored beside each row so that rows under an old key can be
    /// found and re-sealed).
    pub fn current_key_id(&self) -> &str {
        &self.keys[0].id
    }

    fn key(&self, id: &str) -> Option<&Key> {
        self.keys.iter().find(|k| k.id == id)
    }

    /// Seals a value handed to a client (a session id, a relayed request id, a task id) into
    /// visible ASCII, bound to `context`: it opens only with the same context, so that a value
    /// sealed for one purpose (or one session) serves no other.
    pub fn seal_value<T: Serialize>(&self, value: &T, context: &str) -> String {
        let key = &self.keys[0];
        let plain = serde_json::to_vec(value).expect("sealed values serialize");
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let aad = [key.id.as_bytes(), context.as_bytes()].concat();
        let sealed = encrypt(key, &nonce, &plain, &aad);
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        format!("{}.{}", key.id, URL_SAFE_NO_PAD.encode(out))
    }

    /// Opens a value from [`seal_value`](Self::seal_value) sealed for `context`.
    pub fn open_value<T: DeserializeOwned>(&self, text: &str, context: &str) -> Result<T, NotOurs> {
        if text.len() > MAX_CLIENT_VALUE_LEN {
            return Err(NotOurs);
        }
        let (kid, body) = text.split_once('.').ok_or(NotOurs)?;
        let key = self.key(kid).ok_or(NotOurs)?;
        let raw = URL_SAFE_NO_PAD.decode(body).map_err(|_| NotOurs)?;
        if raw.len() < NONCE_LEN + TAG_LEN {
            return Err(NotOurs);
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let aad = [kid.as_bytes(), context.as_bytes()].concat();
        let plain = decrypt(key, nonce, sealed, &aad).map_err(|_| NotOurs)?;
        serde_json::from_slice(&plain).map_err(|_| NotOurs)
    }

    /// Seals bytes kept at rest: "v1.<key id>.<base64url nonce>.<base64url ciphertext+tag>"
    /// with a fresh random 96-bit nonce; `aad` binds the value to its row (e.g. user binding +
    /// upstream name).
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> String {
        let key = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = encrypt(key, &nonce, plaintext, &at_rest_aad(&key.id, aad));
        format!(
            "{VERSION}.{}.{}.{}",
            key.id,
            URL_SAFE_NO_PAD.encode(nonce),
            URL_SAFE_NO_PAD.encode(sealed)
        )
    }

    /// Opens a value from [`seal`](Self::seal); fails on an unknown key id, a malformed value,
    /// a wrong `aad` or any tampering.
    pub fn open(&self, sealed: &str, aad: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut parts = sealed.split('.');
        let (Some(version), Some(kid), Some(nonce), Some(body), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(SealError::Malformed);
        };
        if version != VERSION || !valid_key_id(kid) {
            return Err(SealError::Malformed);
        }
        let key = self
            .key(kid)
            .ok_or_else(|| SealError::UnknownKey(kid.to_owned()))?;
        let nonce = URL_SAFE_NO_PAD
            .decode(nonce)
            .map_err(|_| SealError::Malformed)?;
        let body = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| SealError::Malformed)?;
        if nonce.len() != NONCE_LEN || body.len() < TAG_LEN {
            return Err(SealError::Malformed);
        }
        decrypt(key, &nonce, &body, &at_rest_aad(kid, aad)).map_err(|_| SealError::Rejected)
    }
}

fn encrypt(key: &Key, nonce: &[u8; NONCE_LEN], msg: &[u8], aad: &[u8]) -> Vec<u8> {
    key.cipher
        .encrypt(Nonce::from_slice(nonce), Payload { msg, aad })
        .expect("AES-GCM encryption fails only beyond 64 GiB")
}

fn decrypt(key: &Key, nonce: &[u8], msg: &[u8], aad: &[u8]) -> Result<Vec<u8>, aes_gcm::Error> {
    key.cipher
        .decrypt(Nonce::from_slice(nonce), Payload { msg, aad })
}

/// What the at-rest format authenticates besides the ciphertext: the value's header, then the
/// caller's data. The key id cannot contain `.`, so the split between the two is unambiguous.
fn at_rest_aad(key_id: &str, aad: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(VERSION.len() + key_id.len() + 2 + aad.len());
    out.extend_from_slice(VERSION.as_bytes());
    out.push(b'.');
    out.extend_from_slice(key_id.as_bytes());
    out.push(b'.');
    out.extend_from_slice(aad);
    out
}
