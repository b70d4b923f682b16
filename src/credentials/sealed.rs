//! Third-party tokens at rest: sealed with AES-256-GCM under a named key, so that the store
//! (and its backups) never hold a usable token, and keys can be rotated.
//!
//! A sealed value is `v1.<key id>.<base64url nonce>.<base64url ciphertext and tag>`. The
//! version and key id are authenticated along with the caller's associated data, which binds
//! the value to its row: a value copied to another user's or another upstream's row does not
//! open.

use crate::config::Secret;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::alphabet;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use rand::RngCore;
use std::fmt;

/// The format version, the first field of every sealed value.
const VERSION: &str = "v1";
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// Key text is accepted in either alphabet, with or without padding.
const LENIENT: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const STANDARD_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);
const URL_SAFE_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);

/// Why a sealed value could not be opened. Never carries key material or plaintext.
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

/// Seals and opens secrets stored at rest; the first key seals, every key opens.
pub struct TokenSealer {
    /// Never empty; the first is current.
    keys: Vec<Key>,
}

impl fmt::Debug for TokenSealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSealer")
            .field(
                "key_ids",
                &self.keys.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// Whether `id` may name a key: non-empty ASCII letters, digits, `-` and `_`.
fn valid_key_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The 32 bytes of a base64 key; the error says what is wrong without showing the text.
fn decode_key(text: &str) -> Result<[u8; 32], String> {
    let text = text.trim();
    let bytes = STANDARD_LENIENT
        .decode(text)
        .or_else(|_| URL_SAFE_LENIENT.decode(text))
        .map_err(|_| "is not valid base64".to_owned())?;
    let len = bytes.len();
    bytes
        .try_into()
        .map_err(|_| format!("decodes to {len} bytes; expected exactly 32"))
}

/// What the cipher authenticates besides the ciphertext: the value's header, then the caller's
/// data. The key id cannot contain `.`, so the split between the two is unambiguous.
fn associated_data(key_id: &str, aad: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(VERSION.len() + key_id.len() + 2 + aad.len());
    out.extend_from_slice(VERSION.as_bytes());
    out.push(b'.');
    out.extend_from_slice(key_id.as_bytes());
    out.push(b'.');
    out.extend_from_slice(aad);
    out
}

impl TokenSealer {
    /// `keys`: (key id, base64 of exactly 32 random bytes — standard or URL-safe alphabet,
    /// padding optional). The first key is current. Errors name the key id and what is wrong,
    /// never the key.
    pub fn new(keys: &[(String, Secret)]) -> Result<Self, String> {
        if keys.is_empty() {
            return Err("at least one token sealing key is needed".into());
        }
        let mut out: Vec<Key> = Vec::with_capacity(keys.len());
        for (i, (id, secret)) in keys.iter().enumerate() {
            if !valid_key_id(id) {
                return Err(format!(
                    "token sealing key #{} has id {id:?}: a key id must be non-empty and use only \
                     ASCII letters, digits, `-` and `_`",
                    i + 1
                ));
            }
            if out.iter().any(|k| k.id == *id) {
                return Err(format!(
                    "token sealing key id {id:?} is used more than once"
                ));
            }
            let bytes = decode_key(secret.expose())
                .map_err(|what| format!("token sealing key {id:?} {what}"))?;
            out.push(Key {
                id: id.clone(),
                cipher: Aes256Gcm::new(&bytes.into()),
            });
        }
        Ok(TokenSealer { keys: out })
    }

    /// "v1.<key id>.<base64url nonce>.<base64url ciphertext+tag>" with a fresh random 96-bit
    /// nonce; `aad` binds the value to its row (e.g. user binding + upstream name).
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> String {
        let key = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = key
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &associated_data(&key.id, aad),
                },
            )
            .expect("AES-GCM encryption fails only beyond 64 GiB");
        format!(
            "{VERSION}.{}.{}.{}",
            key.id,
            URL_SAFE_NO_PAD.encode(nonce),
            URL_SAFE_NO_PAD.encode(sealed)
        )
    }

    /// Opens a sealed value; fails (SealError) on an unknown key id, a malformed value, a wrong
    /// aad or any tampering.
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
            .keys
            .iter()
            .find(|k| k.id == kid)
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
        key.cipher
            .decrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &body,
                    aad: &associated_data(kid, aad),
                },
            )
            .map_err(|_| SealError::Rejected)
    }

    /// The id of the sealing key (stored beside each row so that rows under an old key can be
    /// found and re-sealed).
    pub fn current_key_id(&self) -> &str {
        &self.keys[0].id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_text(byte: u8) -> String {
        base64::engine::general_purpose::STANDARD.encode([byte; 32])
    }

    fn sealer(keys: &[(&str, String)]) -> TokenSealer {
        let keys: Vec<(String, Secret)> = keys
            .iter()
            .map(|(id, k)| ((*id).to_owned(), Secret::new(k.clone())))
            .collect();
        TokenSealer::new(&keys).unwrap()
    }

    fn new_err(keys: &[(&str, &str)]) -> String {
        let keys: Vec<(String, Secret)> = keys
            .iter()
            .map(|(id, k)| ((*id).to_owned(), Secret::new((*k).to_owned())))
            .collect();
        TokenSealer::new(&keys).unwrap_err()
    }

    const AAD: &[u8] = b"binding-0a1b\0github";

    #[test]
    fn round_trip() {
        let s = sealer(&[("a", key_text(1))]);
        let sealed = s.seal(b"gho_secret-token", AAD);
        assert!(sealed.starts_with("v1.a."), "{sealed}");
        assert_eq!(sealed.split('.').count(), 4);
        assert_eq!(s.open(&sealed, AAD).unwrap(), b"gho_secret-token");
        assert_eq!(s.current_key_id(), "a");
        // Fresh nonces: the same plaintext never seals to the same text.
        assert_ne!(s.seal(b"gho_secret-token", AAD), sealed);
        // An empty plaintext is fine too.
        assert_eq!(s.open(&s.seal(b"", b""), b"").unwrap(), b"");
    }

    #[test]
    fn the_sealed_text_does_not_contain_the_plaintext() {
        let s = sealer(&[("a", key_text(1))]);
        let plain = "ya29.very-recognisable-access-token";
        let sealed = s.seal(plain.as_bytes(), AAD);
        assert!(!sealed.contains(plain));
        assert!(!sealed.contains("recognisable"));
        let encoded = URL_SAFE_NO_PAD.encode(plain);
        assert!(!sealed.contains(&encoded[..16]));
        assert!(sealed.bytes().all(|b| (0x21..=0x7e).contains(&b)));
    }

    #[test]
    fn a_wrong_aad_fails() {
        let s = sealer(&[("a", key_text(1))]);
        let sealed = s.seal(b"token", AAD);
        assert!(matches!(
            s.open(&sealed, b"binding-0a1b\0gitlab"),
            Err(SealError::Rejected)
        ));
        assert!(matches!(s.open(&sealed, b""), Err(SealError::Rejected)));
    }

    #[test]
    fn a_flipped_byte_fails() {
        let s = sealer(&[("a", key_text(1))]);
        let sealed = s.seal(b"token", AAD);
        let parts: Vec<&str> = sealed.split('.').collect();
        // Every byte of the nonce, ciphertext and tag is covered.
        for field in [2, 3] {
            let raw = URL_SAFE_NO_PAD.decode(parts[field]).unwrap();
            for i in 0..raw.len() {
                let mut bad = raw.clone();
                bad[i] ^= 0x01;
                let enc = URL_SAFE_NO_PAD.encode(&bad);
                let mut p = parts.clone();
                p[field] = &enc;
                assert!(
                    matches!(s.open(&p.join("."), AAD), Err(SealError::Rejected)),
                    "field {field} byte {i}"
                );
            }
        }
        // A flipped character of the text fails too (as malformed or rejected).
        let mut text = sealed.clone().into_bytes();
        let last = text.len() - 2;
        text[last] = if text[last] == b'A' { b'B' } else { b'A' };
        assert!(s.open(std::str::from_utf8(&text).unwrap(), AAD).is_err());
        // A relabelled key id does not open even when both ids hold the same key.
        let twins = sealer(&[("a", key_text(1)), ("b", key_text(1))]);
        let relabelled = sealed.replacen("v1.a.", "v1.b.", 1);
        assert!(matches!(
            twins.open(&relabelled, AAD),
            Err(SealError::Rejected)
        ));
    }

    #[test]
    fn rotation_opens_old_values_and_seals_with_the_new_key() {
        let old = sealer(&[("a", key_text(1))]);
        let before = old.seal(b"old token", AAD);
        let rotated = sealer(&[("b", key_text(2)), ("a", key_text(1))]);
        assert_eq!(rotated.current_key_id(), "b");
        assert_eq!(rotated.open(&before, AAD).unwrap(), b"old token");
        let after = rotated.seal(b"new token", AAD);
        assert!(after.starts_with("v1.b."), "{after}");
        assert_eq!(rotated.open(&after, AAD).unwrap(), b"new token");
        // The old sealer does not know the new key.
        assert!(matches!(old.open(&after, AAD), Err(SealError::UnknownKey(k)) if k == "b"));
    }

    #[test]
    fn an_unknown_key_id_or_a_different_key_fails() {
        let s = sealer(&[("a", key_text(1))]);
        let sealed = s.seal(b"token", AAD);
        let other = sealer(&[("z", key_text(1))]);
        match other.open(&sealed, AAD) {
            Err(SealError::UnknownKey(id)) => assert_eq!(id, "a"),
            other => panic!("{other:?}"),
        }
        // Same id, different key material.
        let impostor = sealer(&[("a", key_text(9))]);
        assert!(matches!(
            impostor.open(&sealed, AAD),
            Err(SealError::Rejected)
        ));
    }

    #[test]
    fn malformed_values_fail() {
        let s = sealer(&[("a", key_text(1))]);
        let good = s.seal(b"token", AAD);
        let parts: Vec<&str> = good.split('.').collect();
        let short_body = format!("v1.a.{}.AAAA", parts[2]);
        let long_nonce = format!("v1.a.{}AAAA.{}", parts[2], parts[3]);
        for junk in [
            "",
            "v1",
            "v1.a",
            "v1.a.",
            "v1.a..",
            "v2.a.AAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAA",
            &good.replacen("v1.", "v2.", 1),
            &format!("{good}.x"),
            &good.replacen("v1.a.", "v1.a!.", 1),
            &good.replacen("v1.a.", "v1..", 1),
            "v1.a.!!!!.!!!!",
            &short_body,
            &long_nonce,
        ] {
            assert!(
                matches!(s.open(junk, AAD), Err(SealError::Malformed)),
                "{junk:?}: {:?}",
                s.open(junk, AAD)
            );
        }
    }

    #[test]
    fn keys_are_checked_and_never_shown() {
        // Wrong length: the id and the length are named, the key is not.
        let short = base64::engine::general_purpose::STANDARD.encode([7u8; 16]);
        let e = new_err(&[("k1", &short)]);
        assert!(e.contains("\"k1\"") && e.contains("16 bytes"), "{e}");
        assert!(!e.contains(&short), "{e}");
        let long = base64::engine::general_purpose::STANDARD.encode([7u8; 33]);
        assert!(new_err(&[("k1", &long)]).contains("33 bytes"));
        let e = new_err(&[("k1", "not base64 at all!")]);
        assert!(e.contains("\"k1\"") && e.contains("base64"), "{e}");
        assert!(!e.contains("not base64 at all!"), "{e}");
        // Ids: non-empty, a restricted alphabet, unique.
        assert!(new_err(&[("", &key_text(1))]).contains("key id"));
        assert!(new_err(&[("a.b", &key_text(1))]).contains("key id"));
        assert!(new_err(&[("é", &key_text(1))]).contains("key id"));
        let e = new_err(&[("a", &key_text(1)), ("a", &key_text(2))]);
        assert!(e.contains("more than once"), "{e}");
        assert!(new_err(&[]).contains("at least one"));
        // Second key's problems are found as well.
        assert!(new_err(&[("a", &key_text(1)), ("b", "AAAA")]).contains("\"b\""));
    }

    #[test]
    fn keys_are_accepted_in_either_alphabet_with_or_without_padding() {
        // Bytes chosen so that the two alphabets differ (`+`/`/` against `-`/`_`).
        let bytes = [0xfb_u8; 32];
        let encodings = [
            base64::engine::general_purpose::STANDARD.encode(bytes),
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes),
            base64::engine::general_purpose::URL_SAFE.encode(bytes),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes),
            format!(
                "{}\n",
                base64::engine::general_purpose::STANDARD.encode(bytes)
            ),
        ];
        assert!(encodings[0].contains('+') || encodings[0].contains('/'));
        let reference = sealer(&[("k", encodings[0].clone())]);
        let sealed = reference.seal(b"token", AAD);
        for text in encodings {
            let s = sealer(&[("k", text.clone())]);
            assert_eq!(s.open(&sealed, AAD).unwrap(), b"token", "{text:?}");
        }
    }

    #[test]
    fn debug_shows_key_ids_only() {
        let text = key_text(3);
        let s = sealer(&[("current", text.clone()), ("old-1", key_text(4))]);
        let d = format!("{s:?}");
        assert!(d.contains("current") && d.contains("old-1"), "{d}");
        assert!(!d.contains(&text[..8]), "{d}");
        assert!(!d.contains("cipher"), "{d}");
    }
}
