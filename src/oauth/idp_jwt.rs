//! Verifying JWTs signed by an enterprise IdP (ID tokens, ID-JAGs): the header and claim checks
//! both share, with the IdP's keys from the shared key-set cache ([`JwksCache`]).

use crate::auth::jwks::{JwksCache, JwksError, JwksSource, JwksTiming};
use jsonwebtoken::{Algorithm, Header, Validation};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// Largest JWT accepted from a client or an IdP (Entra ID tokens with groups run to ~10 KB).
pub(crate) const MAX_JWT_BYTES: usize = 64 * 1024;

/// The façade's IdP key sets: re-read hourly, and on an unknown `kid` at most every 30 seconds
/// so that forged kids cannot make Gatehouse hammer the IdP; aged keys are not kept serving.
const TIMING: JwksTiming = JwksTiming {
    refetch_interval: Duration::from_secs(30),
    max_age: Duration::from_secs(3600),
    stale_window: Duration::ZERO,
};

/// The key-set cache of the IdP `issuer` found at `source`.
pub(crate) fn idp_keys(issuer: &str, source: JwksSource, http: &reqwest::Client) -> Arc<JwksCache> {
    Arc::new(JwksCache::new(issuer, issuer, source, TIMING, http.clone()))
}

/// Why a JWT was not accepted; texts never contain the token.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub(crate) enum VerifyError {
    /// Longer than [`MAX_JWT_BYTES`].
    #[error("the token is larger than {MAX_JWT_BYTES} bytes")]
    TooLarge,
    /// Not a JWS, or its header does not parse.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// `alg: none`.
    #[error("unsigned tokens (alg none) are not accepted")]
    Unsigned,
    /// A symmetric algorithm, or one not configured for the issuer.
    #[error("algorithm {0:?} is not accepted")]
    Algorithm(Algorithm),
    /// The key set could not be read.
    #[error("the signing keys are unavailable: {0}")]
    KeysUnavailable(String),
    /// No key fits the token's kid and algorithm.
    #[error("{0}")]
    UnknownKey(String),
    /// Signature or standard claim checks failed.
    #[error("{0}")]
    Invalid(String),
}

/// Whether `alg` is asymmetric (HMAC would let anyone holding the shared secret forge).
pub(crate) fn asymmetric(alg: Algorithm) -> bool {
    !matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

/// The header of a JWT whose algorithm is one of `allowed` (never `none`, never HMAC).
pub(crate) fn header_of(token: &str, allowed: &[Algorithm]) -> Result<Header, VerifyError> {
    if token.len() > MAX_JWT_BYTES {
        return Err(VerifyError::TooLarge);
    }
    if token.split('.').count() != 3 {
        return Err(VerifyError::Malformed("not a signed JWT".into()));
    }
    let header =
        jsonwebtoken::decode_header(token).map_err(|e| match crate::auth::raw_alg(token) {
            Some(a) if a.eq_ignore_ascii_case("none") => VerifyError::Unsigned,
            _ => VerifyError::Malformed(format!("the header does not parse: {e}")),
        })?;
    if !asymmetric(header.alg) || !allowed.contains(&header.alg) {
        return Err(VerifyError::Algorithm(header.alg));
    }
    Ok(header)
}

/// Verifies signature and standard claims, returning the claims.
pub(crate) async fn verify_claims(
    token: &str,
    header: &Header,
    keys: &Arc<JwksCache>,
    validation: &Validation,
) -> Result<Value, VerifyError> {
    let kid = header.kid.as_deref();
    let key = keys
        .key_for(kid, header.alg)
        .await
        .map_err(|e| match e {
            JwksError::Unavailable(m) => VerifyError::KeysUnavailable(m),
            JwksError::Unknown => VerifyError::UnknownKey(match kid {
                Some(k) => format!("the signing key {k:?} is not in the issuer's key set"),
                None => format!(
                    "the token names no key (kid) and the issuer has no single {:?} key",
                    header.alg
                ),
            }),
            JwksError::WrongType { .. } => VerifyError::Invalid(format!(
                "the token's algorithm {:?} does not match the type of its key",
                header.alg
            )),
        })?
        .key;
    jsonwebtoken::decode::<Value>(token, &key, validation)
        .map(|d| d.claims)
        .map_err(|e| VerifyError::Invalid(crate::auth::explain_jwt_error(&e)))
}

/// The common validation: this algorithm only, `iss` one of `issuers`, `exp` required, `nbf`
/// checked, `skew` of leeway; audience checks are left to the caller.
pub(crate) fn validation(alg: Algorithm, issuers: &[String], skew: Duration) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = skew.as_secs();
    v.validate_nbf = true;
    v.validate_aud = false;
    v.set_issuer(issuers);
    v.set_required_spec_claims(&["exp", "iss", "sub"]);
    v
}

/// Checks `iat`: present, numeric, not in the future beyond `skew`; returns it.
pub(crate) fn issued_at(claims: &Value, skew: Duration) -> Result<i64, VerifyError> {
    let iat = claims
        .get("iat")
        .and_then(Value::as_i64)
        .ok_or_else(|| VerifyError::Invalid("the token has no numeric iat claim".into()))?;
    if iat > crate::store::now_secs() + skew.as_secs() as i64 {
        return Err(VerifyError::Invalid(
            "the token was issued in the future (iat); check the clocks".into(),
        ));
    }
    Ok(iat)
}
