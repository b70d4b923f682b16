//! Client authentication at the token and revocation endpoints (RFC 6749 §2.3): HTTP Basic
//! or a form secret for confidential clients, `client_id` alone for public ones, and never two
//! methods in one request.

use super::clients::RegisteredClient;
use super::endpoints::oauth_error;
use super::facade::Facade;
use axum::response::Response;
use base64::Engine;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use std::collections::HashMap;

/// The client a token or revocation request comes from, authenticated as it registered:
/// HTTP Basic or form secret for confidential clients, `client_id` alone for public ones.
pub(super) async fn authenticate_client(
    f: &Facade,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Result<RegisteredClient, Box<Response>> {
    let unauthorized = |description: &str| {
        let mut r = oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", description);
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"gatehouse\""),
        );
        Box::new(r)
    };
    let basic = match headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("basic").then_some(rest)
        }) {
        Some(b) => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
                .and_then(|d| String::from_utf8(d).ok())
                .ok_or_else(|| unauthorized("the Basic credentials are not valid base64"))?;
            let (id, secret) = decoded
                .split_once(':')
                .ok_or_else(|| unauthorized("the Basic credentials have no ':'"))?;
            let unescape = |s: &str| {
                url::form_urlencoded::parse(format!("x={s}").as_bytes())
                    .next()
                    .map(|(_, v)| v.to_string())
                    .unwrap_or_default()
            };
            Some((unescape(id), unescape(secret)))
        }
        None => None,
    };
    // RFC 6749 §2.3: one authentication method per request.
    if basic.is_some()
        && ["client_secret", "client_assertion"]
            .iter()
            .any(|k| form.contains_key(*k))
    {
        return Err(Box::new(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the client authenticated twice (HTTP Basic and credentials in the body); use one method",
        )));
    }
    let form_id = form.get("client_id");
    let (client_id, secret) = match (&basic, form_id) {
        (Some((id, _)), Some(fid)) if id != fid => {
            return Err(unauthorized(
                "client_id differs from the authenticated client",
            ));
        }
        (Some((id, s)), _) => (id.clone(), Some(s.clone())),
        (None, Some(id)) => (id.clone(), form.get("client_secret").cloned()),
        (None, None) => return Err(unauthorized("client authentication is required")),
    };
    let client = f
        .registry
        .find(&client_id)
        .await
        .map_err(|e| unauthorized(&e.to_string()))?;
    match (&secret, client.is_public()) {
        (None, true) => {}
        (Some(_), true) => return Err(unauthorized("this client is public and has no secret")),
        (None, false) => {
            return Err(unauthorized(
                "this client must authenticate with its secret",
            ));
        }
        (Some(s), false) if client.verify_secret(s) => {}
        (Some(_), false) => return Err(unauthorized("the client secret is wrong")),
    }
    Ok(client)
}
