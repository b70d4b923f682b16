//! Opaque access tokens, confirmed by the issuer's RFC 7662 introspection endpoint.

use super::AuthError;
use super::issuer::{IssuerState, fetch_json};
use super::principal::{CredentialKind, Principal};
use crate::config::ClientAuthMethod;
use serde_json::Value;
use std::sync::Arc;

/// Asks each issuer that introspects (in turn) about an opaque token; the first that calls it
/// active vouches for it.
pub(super) async fn introspect(
    http: &reqwest::Client,
    issuers: &[Arc<IssuerState>],
    token: &str,
    skew: u64,
) -> Result<(Principal, Arc<IssuerState>), AuthError> {
    let mut asked = 0;
    let mut unavailable = None;
    for issuer in issuers.iter().filter(|i| i.config.introspection.is_some()) {
        asked += 1;
        match ask(http, issuer, token).await {
            Ok(Some(claims)) => return accept(issuer, claims, skew).map(|p| (p, issuer.clone())),
            Ok(None) => {}
            Err(e) => unavailable = Some(e),
        }
    }
    match (asked, unavailable) {
        (0, _) => Err(AuthError::Invalid(
            "the token is not a JWT and no issuer this server accepts introspects opaque tokens"
                .into(),
        )),
        // One issuer could not answer: the token may be good, so this is not a 401.
        (_, Some(e)) => Err(e),
        _ => Err(AuthError::Invalid(
            "the token is not active (introspection)".into(),
        )),
    }
}

/// The introspection response when the token is active.
async fn ask(
    http: &reqwest::Client,
    issuer: &IssuerState,
    token: &str,
) -> Result<Option<Value>, AuthError> {
    let Some(cfg) = &issuer.config.introspection else {
        return Ok(None);
    };
    let endpoint = issuer.introspection_endpoint().await?;
    let secret = cfg.client_secret.resolve().map_err(|e| {
        AuthError::Unavailable(format!(
            "introspection secret of issuer {:?}: {e}",
            issuer.name
        ))
    })?;
    let mut form = vec![("token", token), ("token_type_hint", "access_token")];
    let request = match cfg.auth_method {
        ClientAuthMethod::ClientSecretBasic => http
            .post(&endpoint)
            // RFC 6749 §2.3.1: both parts are form-urlencoded before Basic encoding.
            .basic_auth(
                form_encode(&cfg.client_id),
                Some(form_encode(secret.expose())),
            ),
        ClientAuthMethod::ClientSecretPost => {
            form.push(("client_id", &cfg.client_id));
            form.push(("client_secret", secret.expose()));
            http.post(&endpoint)
        }
    };
    let response: Value = fetch_json(http, &endpoint, Some(request.form(&form)))
        .await
        .map_err(|e| {
            AuthError::Unavailable(format!(
                "introspection at issuer {:?} failed: {e}",
                issuer.config.issuer
            ))
        })?;
    Ok(match response.get("active") {
        Some(Value::Bool(true)) => Some(response),
        _ => None,
    })
}

/// Checks what the issuer said before believing it.
fn accept(issuer: &IssuerState, mut claims: Value, skew: u64) -> Result<Principal, AuthError> {
    let now = crate::store::now_secs() as u64;
    match claims.get("iss").and_then(Value::as_str) {
        Some(iss) if iss != issuer.config.issuer => {
            return Err(AuthError::Invalid(format!(
                "introspection names issuer {iss:?}, not {:?}",
                issuer.config.issuer
            )));
        }
        Some(_) => {}
        None => {
            if let Some(obj) = claims.as_object_mut() {
                obj.insert("iss".into(), Value::String(issuer.config.issuer.clone()));
            }
        }
    }
    if let Some(exp) = claims.get("exp").and_then(Value::as_u64)
        && exp + skew <= now
    {
        return Err(AuthError::Invalid("the token has expired (exp)".into()));
    }
    if let Some(nbf) = claims.get("nbf").and_then(Value::as_u64)
        && nbf > now + skew
    {
        return Err(AuthError::Invalid(
            "the token is not valid yet (nbf)".into(),
        ));
    }
    Principal::from_claims(claims, &issuer.config.claims, CredentialKind::Introspected)
        .map_err(AuthError::Invalid)
}

fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                (b as char).to_string()
            }
            b' ' => "+".into(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
