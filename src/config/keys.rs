//! How a sealing key is configured (`{ id, key }` in `sessions.keys`, `consent.keys` and
//! `oauth_server.keys`): the one rule for key ids, the one decoder of key text and the one
//! validator of a block's keys. Here rather than in `keyring` so that validating the
//! configuration needs nothing outside it; `keyring` re-exports all of it and seals with it.

use super::ValueSource;
use base64::Engine;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde::Deserialize;

/// Longest key id: it is written in front of every session id, so it stays short.
pub const MAX_KEY_ID_LEN: usize = 64;

/// Key text is accepted in either alphabet, with or without padding.
const LENIENT: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const STANDARD_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);
const URL_SAFE_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);

/// One configured sealing key, wherever it is used (`sessions.keys`, `consent.keys`,
/// `oauth_server.keys`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Its id, written in front of every value it seals ([`valid_key_id`]).
    pub id: String,
    /// Base64 of 32 random bytes (`gatehouse session-key` prints one), from `{ env }` or
    /// `{ file }`. `sessions.keys` have always called it `secret`, which is still accepted.
    #[serde(alias = "secret")]
    pub key: ValueSource,
}

/// Whether `id` may name a key: 1 to [`MAX_KEY_ID_LEN`] ASCII letters, digits, `-` and `_`
/// (never `.`, which separates the fields of both sealed formats).
pub fn valid_key_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_KEY_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// What is wrong with a key's text; never shows the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyTextError {
    /// Not base64 in either alphabet.
    #[error("is not valid base64")]
    NotBase64,
    /// Base64 of the wrong number of bytes.
    #[error("decodes to {0} bytes, not 32")]
    Length(usize),
}

/// The 32 bytes of a key written as base64: standard or URL-safe alphabet, padding optional,
/// surrounding whitespace ignored.
pub fn decode_key(text: &str) -> Result<[u8; 32], KeyTextError> {
    let text = text.trim();
    let bytes = STANDARD_LENIENT
        .decode(text)
        .or_else(|_| URL_SAFE_LENIENT.decode(text))
        .map_err(|_| KeyTextError::NotBase64)?;
    let len = bytes.len();
    bytes.try_into().map_err(|_| KeyTextError::Length(len))
}

/// What the configuration of a block's keys must satisfy besides the common rules.
#[derive(Debug, Clone, Copy)]
pub struct KeyRules {
    /// The block cannot work without a key.
    pub required: bool,
    /// Whether the key may be written in the YAML itself: only `sessions.keys`, which always
    /// allowed it (kept for existing configurations).
    pub literal_allowed: bool,
}

/// `consent.keys` and `oauth_server.keys`: what they seal lives in the store, so the block
/// needs a key, and a key in the YAML would sit beside the data it protects.
pub const KEYS_AT_REST: KeyRules = KeyRules {
    required: true,
    literal_allowed: false,
};

/// `sessions.keys`: none means a random key per process.
pub const SESSION_KEYS: KeyRules = KeyRules {
    required: false,
    literal_allowed: true,
};

/// Checks a block's keys (`field` is e.g. `consent.keys`), reporting each problem with its
/// field; the messages never show a key.
pub fn check_keys(
    keys: &[KeyConfig],
    field: &str,
    rules: KeyRules,
    add: &mut dyn FnMut(String, String),
) {
    if rules.required && keys.is_empty() {
        add(
            field.to_owned(),
            "at least one sealing key (id + 32 random bytes, base64) is required".into(),
        );
    }
    for (i, k) in keys.iter().enumerate() {
        let at = format!("{field}[{i}]");
        if !valid_key_id(&k.id) {
            add(
                format!("{at}.id"),
                format!("expected 1-{MAX_KEY_ID_LEN} letters, digits, '-' or '_'"),
            );
        } else if keys[..i].iter().any(|other| other.id == k.id) {
            add(format!("{at}.id"), format!("duplicate key id {:?}", k.id));
        }
        if !rules.literal_allowed && k.key.is_written_in_yaml() {
            add(
                format!("{at}.key"),
                "a key must not be written in the YAML; use { env: VAR } or { file: PATH }".into(),
            );
            continue;
        }
        match k.key.resolve() {
            // The resolver's own text: `Config::load_for_admin` recognises it as deferred.
            Err(e) => add(format!("{at}.key"), e),
            Ok(text) => {
                if let Err(what) = decode_key(text.expose()) {
                    add(
                        format!("{at}.key"),
                        format!(
                            "expected base64 of exactly 32 bytes (`gatehouse session-key` prints \
                             one); this {what}"
                        ),
                    );
                }
            }
        }
    }
}
