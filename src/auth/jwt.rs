//! JWT access tokens: the issuer is picked from the unverified `iss`, then everything else is
//! checked against that issuer's configuration before any claim is believed.

use super::issuer::IssuerState;
use super::principal::{CredentialKind, Principal};
use super::{AuthError, Authenticator};
use jsonwebtoken::{Algorithm, Header, Validation, decode, decode_header};
use serde_json::Value;
use std::sync::Arc;

/// Whether a credential has the shape of a JWS (three base64url parts).
pub(crate) fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3
}

/// The header and the claims of a token, read without believing either: enough to pick the
/// issuer and its key. `alg: none` and HMAC algorithms are refused here, in their own words.
pub(crate) fn read_unverified(token: &str) -> Result<(Header, Value), AuthError> {
    let header = decode_header(token).map_err(|e| {
        // `alg: none` and HMAC names fail here or below; say so rather than "malformed".
        AuthError::Invalid(match raw_alg(token) {
            Some(alg) if alg.eq_ignore_ascii_case("none") => {
                "unsigned tokens (alg none) are not accepted".into()
            }
            _ => format!("malformed token header: {e}"),
        })
    })?;
    let alg = header.alg;
    if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
        return Err(AuthError::Invalid(format!(
            "symmetric algorithm {alg:?} is not accepted (tokens must be signed with the issuer's private key)"
        )));
    }
    let unverified: Value = jsonwebtoken::dangerous::insecure_decode_claims(token)
        .map_err(|e| AuthError::Invalid(format!("malformed token claims: {e}")))?;
    Ok((header, unverified))
}

/// Verifies a JWT access token; the audience is checked later, per virtual server.
pub(super) async fn verify_jwt(
    auth: &Authenticator,
    token: &str,
) -> Result<(Principal, Arc<IssuerState>), AuthError> {
    let (header, unverified) = read_unverified(token)?;
    let alg = header.alg;
    let iss = unverified
        .get("iss")
        .and_then(Value::as_str)
        .ok_or_else(|| AuthError::Invalid("the token has no issuer (iss)".into()))?;
    let issuer = auth
        .issuer_by_iss(iss)
        .ok_or_else(|| AuthError::Invalid(format!("issuer {iss:?} is not trusted")))?;
    if !issuer.allows(alg) {
        return Err(AuthError::Invalid(format!(
            "algorithm {alg:?} is not accepted for issuer {iss:?} (allowed: {})",
            issuer.config.algorithms.join(", ")
        )));
    }
    let kid = header.kid.as_deref();
    let found = issuer.key_for(kid, alg).await?;
    let skew = auth.settings.clock_skew.0.as_secs();
    let mut validation = Validation::new(alg);
    validation.leeway = skew;
    validation.validate_nbf = true;
    validation.validate_aud = false;
    validation.set_issuer(&[&issuer.config.issuer]);
    validation.set_required_spec_claims(&["exp", "iss"]);
    let data = match decode::<Value>(token, &found.key, &validation) {
        // The issuer may have replaced the key under the same kid: look again (rate-limited).
        Err(e) if matches!(e.kind(), jsonwebtoken::errors::ErrorKind::InvalidSignature) => {
            match issuer.replaced_key(kid, alg, &found).await? {
                Some(newer) => decode::<Value>(token, &newer.key, &validation),
                None => Err(e),
            }
        }
        other => other,
    }
    .map_err(|e| AuthError::Invalid(explain(&e)))?;
    let claims = data.claims;
    check_times(&claims, skew)?;
    let principal = Principal::from_claims(claims, &issuer.config.claims, CredentialKind::Jwt)
        .map_err(AuthError::Invalid)?;
    Ok((principal, issuer))
}

/// The time claims, with `skew` seconds of tolerance: `exp` required and not past, `nbf` not
/// ahead, `iat` not in the future. The library checks `exp` and `nbf` of a signed token the
/// same way; this is the one place for `iat`, and the whole check for unverified claims.
pub(crate) fn check_times(claims: &Value, skew: u64) -> Result<(), AuthError> {
    let now = crate::store::now_secs() as f64;
    let skew = skew as f64;
    let at = |name: &str| claims.get(name).and_then(Value::as_f64);
    match at("exp") {
        None => return Err(AuthError::Invalid("the token has no expiry (exp)".into())),
        Some(exp) if exp < now - skew => {
            return Err(AuthError::Invalid("the token has expired (exp)".into()));
        }
        Some(_) => {}
    }
    if at("nbf").is_some_and(|nbf| nbf > now + skew) {
        return Err(AuthError::Invalid(
            "the token is not valid yet (nbf)".into(),
        ));
    }
    if at("iat").is_some_and(|iat| iat > now + skew) {
        return Err(AuthError::Invalid(
            "the token was issued in the future (iat); check the clocks".into(),
        ));
    }
    Ok(())
}

/// The `alg` member of a header that the library refused to parse.
pub(crate) fn raw_alg(token: &str) -> Option<String> {
    use base64::Engine;
    let first = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(first.trim_end_matches('='))
        .ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    v.get("alg")?.as_str().map(str::to_owned)
}

/// A validation failure in words a client developer can act on.
pub(crate) fn explain(e: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::ExpiredSignature => "the token has expired (exp)".into(),
        K::ImmatureSignature => "the token is not valid yet (nbf)".into(),
        K::InvalidIssuer => "the token's issuer (iss) does not match".into(),
        K::InvalidSignature => "the token's signature does not verify".into(),
        K::MissingRequiredClaim(c) => format!("the token has no {c} claim"),
        K::InvalidAlgorithm => "the token's algorithm does not match its key".into(),
        K::InvalidClaimFormat(c) => format!("the token's {c} claim has the wrong type"),
        _ => format!("the token is not valid: {e}"),
    }
}
