//! The façade's machine-facing endpoints: metadata, `/oauth/token` (authorization code,
//! refresh with rotation, ID-JAG jwt-bearer), `/oauth/revoke`, `/oauth/register` and
//! `/oauth/jwks`, and the routes of the whole façade.

use super::authorize::{facade, params};
use super::client_auth::authenticate_client;
use super::clients::RegisteredClient;
use super::facade::Facade;
use super::grants::Grant;
use super::tokens::{AccessTokenClaims, issue_access_token, issue_refresh_token};
use crate::serve::TraceId;
use crate::web::AppState;
use axum::Extension;
use axum::Json;
use axum::Router;
use axum::extract::rejection::{BytesRejection, StringRejection};
use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;

/// The grant type of RFC 7523 assertions (here: ID-JAGs).
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Largest registration request read.
const MAX_REGISTRATION_BYTES: usize = 16 * 1024;
/// Largest body any façade endpoint reads.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// The façade's routes (answering 404 while no `oauth_server` is configured).
pub fn router(state: AppState) -> Router {
    use super::cors::{preflight_get, preflight_post, readable};
    // What browser-based clients call with fetch(): CORS (preflights and readable answers).
    let machine = Router::new()
        .route(
            "/.well-known/oauth-authorization-server",
            get(metadata).options(preflight_get),
        )
        .route(
            "/.well-known/openid-configuration",
            get(metadata).options(preflight_get),
        )
        .route("/oauth/token", post(token).options(preflight_post))
        .route("/oauth/revoke", post(revoke).options(preflight_post))
        .route("/oauth/register", post(register).options(preflight_post))
        .route("/oauth/jwks", get(jwks).options(preflight_get))
        .layer(axum::middleware::map_response(readable));
    Router::new()
        .route("/oauth/authorize", get(super::authorize::authorize))
        .route("/oauth/callback", get(super::authorize::callback))
        .route("/oauth/consent", post(super::authorize::consent))
        .merge(machine)
        // Every request here is small; refuse large ones before buffering them.
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// The body of a form request, or the OAuth error answering it: a body over the limit gets a
/// JSON 413 (RFC 6749 §5.2 shape), not the framework's plain text.
fn form_body(body: Result<String, StringRejection>) -> Result<String, Box<Response>> {
    body.map_err(|e| {
        Box::new(if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            oauth_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request",
                &format!("the request is larger than {MAX_BODY_BYTES} bytes"),
            )
        } else {
            oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the body is not a UTF-8 form",
            )
        })
    })
}

/// An RFC 6749 §5.2 error body, never cached.
pub fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    // RFC 6749 §5.2: the description holds no `"` or `\`.
    let description: String = description
        .chars()
        .map(|c| match c {
            '"' => '\'',
            '\\' => '/',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect();
    let mut resp = (
        status,
        Json(json!({ "error": error, "error_description": description })),
    )
        .into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Writes an audit record for a façade event (`oauth/…`) and counts it in `gatehouse_oauth_events`.
pub fn audit(
    state: &AppState,
    trace: Option<&Extension<TraceId>>,
    method: &str,
    client_id: &str,
    subject: Option<&str>,
    decision: &str,
) {
    crate::telemetry::metrics::METRICS.oauth_event(method.trim_start_matches("oauth/"), decision);
    let Some(auditor) = &state.gateway.auditor else {
        return;
    };
    auditor.submit(crate::store::AuditRecord {
        at_ms: crate::audit::now_ms(),
        request_id: String::new(),
        server: String::new(),
        upstream: None,
        method: method.to_owned(),
        target: Some(format!("client:{client_id}")),
        subject: subject.map(str::to_owned),
        issuer: None,
        client_id: Some(client_id.to_owned()),
        decision: decision.to_owned(),
        rule: None,
        outcome: if decision == "allow" || decision == "issued" || decision == "registered" {
            "ok".into()
        } else {
            "refused".into()
        },
        error_code: None,
        latency_us: 0,
        bytes_in: 0,
        bytes_out: 0,
        arguments: None,
        trace_id: trace.map(|t| t.0.0.to_string()),
        tenant: None,
        guardrails: None,
    });
}

async fn metadata(State(state): State<AppState>) -> Response {
    match facade(&state) {
        Ok(f) => public_json(f.metadata()),
        Err(r) => *r,
    }
}

async fn jwks(State(state): State<AppState>) -> Response {
    match facade(&state) {
        Ok(f) => public_json(f.keys.jwks()),
        Err(r) => *r,
    }
}

fn public_json(v: Value) -> Response {
    crate::web::json::document(bytes::Bytes::from(v.to_string()))
}

/// `POST /oauth/token`.
async fn token(
    State(state): State<AppState>,
    trace: Option<Extension<TraceId>>,
    headers: HeaderMap,
    body: Result<String, StringRejection>,
) -> Response {
    let f = match facade(&state) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let body = match form_body(body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let bad =
        |error: &str, description: &str| oauth_error(StatusCode::BAD_REQUEST, error, description);
    let form = match params(&body) {
        Ok(p) => p,
        Err(e) => return bad("invalid_request", &e),
    };
    let client = match authenticate_client(&f, &headers, &form).await {
        Ok(c) => c,
        Err(r) => {
            let who = form.get("client_id").map_or("-", String::as_str);
            // 400 is the one refusal that is not about who the client is (it authenticated twice).
            let error = if r.status() == StatusCode::BAD_REQUEST {
                "invalid_request"
            } else {
                "invalid_client"
            };
            audit(&state, trace.as_ref(), "oauth/token", who, None, error);
            return *r;
        }
    };
    let client_id = client.client_id().to_owned();
    let redeemed = match redeem(&f, &form, &client).await {
        Ok(g) => g,
        Err(refusal) => {
            tracing::info!(%client_id, error = %refusal.error, reason = %refusal.description, "token refused");
            audit(
                &state,
                trace.as_ref(),
                "oauth/token",
                &client_id,
                None,
                refusal.error,
            );
            return refusal.into_response();
        }
    };
    let (grant, with_refresh, refresh) = redeemed;
    // RFC 7591 §2: a client that did not register the refresh_token grant gets none.
    let with_refresh = with_refresh && client.allows_refresh();
    let claims = AccessTokenClaims::for_grant(&f.issuer, &grant, f.access_ttl);
    let access = match issue_access_token(&f.keys, &claims) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "oauth_server: cannot sign an access token");
            return oauth_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "cannot sign the token",
            );
        }
    };
    let refresh = match (refresh, with_refresh) {
        (Some(r), _) => Some(r),
        (None, true) => match issue_refresh_token(&f.store, &grant, f.refresh_ttl).await {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::error!(error = %e, "oauth_server: cannot store a refresh token");
                return oauth_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "cannot store the refresh token",
                );
            }
        },
        (None, false) => None,
    };
    if let Err(e) = f.registry.mark_used(&client).await {
        tracing::warn!(error = %e, "oauth_server: cannot record client use");
    }
    audit(
        &state,
        trace.as_ref(),
        "oauth/token",
        &client_id,
        Some(&grant.identity.subject),
        "issued",
    );
    let mut body = json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": f.access_ttl.as_secs(),
        "scope": grant.scope,
    });
    if let Some(r) = refresh {
        body["refresh_token"] = json!(r.expose());
    }
    let mut resp = Json(body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

/// A token request refused: the OAuth error and its description.
#[derive(Debug)]
struct Refusal {
    error: &'static str,
    description: String,
}

impl Refusal {
    fn new(error: &'static str, description: impl Into<String>) -> Refusal {
        let description: String = description.into();
        // Some errors' texts start with their code; the response carries it already.
        let description = match description.strip_prefix(error) {
            Some(rest) => rest.trim_start_matches(':').trim_start().to_owned(),
            None => description,
        };
        Refusal { error, description }
    }

    /// 400, except when the store failed (503).
    fn into_response(self) -> Response {
        let status = if self.error == "server_error" || self.error == "temporarily_unavailable" {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::BAD_REQUEST
        };
        oauth_error(status, self.error, &self.description)
    }
}

/// What a grant yields: the grant, whether to start a refresh-token family, and the rotated
/// refresh token when one was presented.
type Redeemed = (Grant, bool, Option<super::tokens::RefreshToken>);

/// Redeems the grant of a token request for `client` (already authenticated). A `resource`
/// sent along must be the one the grant is for (RFC 8707).
async fn redeem(
    f: &Facade,
    form: &HashMap<String, String>,
    client: &RegisteredClient,
) -> Result<Redeemed, Refusal> {
    let redeemed = redeem_grant(f, form, client).await?;
    check_resource(f, form, &redeemed.0)?;
    Ok(redeemed)
}

/// A `resource` sent along must be the server `grant` is for (RFC 8707).
fn check_resource(
    f: &Facade,
    form: &HashMap<String, String>,
    grant: &Grant,
) -> Result<(), Refusal> {
    match form.get("resource") {
        Some(asked)
            if f.resource(asked).map(|(r, _)| r.as_str()) != Some(grant.resource.as_str()) =>
        {
            Err(Refusal::new(
                "invalid_target",
                "resource is not the server this grant is for",
            ))
        }
        _ => Ok(()),
    }
}

/// The scope of a refreshed access token (RFC 6749 §6): the grant's, or the narrower one asked
/// for; a scope the grant does not hold is refused, never added.
fn narrowed(asked: Option<&str>, granted: &str) -> Result<String, Refusal> {
    let Some(asked) = asked.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(granted.to_owned());
    };
    let held: Vec<&str> = granted.split_whitespace().collect();
    let mut kept: Vec<&str> = Vec::new();
    let mut wider: Vec<String> = Vec::new();
    for s in asked.split_whitespace() {
        if !held.contains(&s) {
            wider.push(s.chars().take(64).collect());
        } else if !kept.contains(&s) {
            kept.push(s);
        }
    }
    if !wider.is_empty() {
        wider.truncate(4);
        return Err(Refusal::new(
            "invalid_scope",
            format!(
                "scope {} was not granted; a refresh may only narrow the scope",
                wider.join(" ")
            ),
        ));
    }
    Ok(kept.join(" "))
}

async fn redeem_grant(
    f: &Facade,
    form: &HashMap<String, String>,
    client: &RegisteredClient,
) -> Result<Redeemed, Refusal> {
    let client_id = client.client_id();
    let get = |k: &str| form.get(k).map(String::as_str);
    let need =
        |k: &str| get(k).ok_or_else(|| Refusal::new("invalid_request", format!("{k} is required")));
    match get("grant_type") {
        Some("authorization_code") => {
            let (code, redirect_uri, verifier) =
                (need("code")?, need("redirect_uri")?, need("code_verifier")?);
            let grant =
                super::grants::redeem_code(&f.store, code, client_id, redirect_uri, verifier)
                    .await
                    .map_err(|e| Refusal::new(e.oauth_error(), e.to_string()))?;
            Ok((grant, true, None))
        }
        Some("refresh_token") => {
            if !client.allows_refresh() {
                return Err(Refusal::new(
                    "unauthorized_client",
                    "this client did not register the refresh_token grant",
                ));
            }
            let presented = need("refresh_token")?;
            // Everything is checked before the token is used up: a refused request must leave
            // the client's token working, or its next correct refresh would count as a replay
            // and revoke the whole family.
            let stored = super::tokens::peek(&f.store, presented, client_id)
                .await
                .map_err(|e| Refusal::new(e.oauth_error(), e.to_string()))?;
            check_resource(f, form, &stored)?;
            let scope = narrowed(get("scope"), &stored.scope)?;
            let (next, mut grant) = super::tokens::rotate(&f.store, presented, client_id)
                .await
                .map_err(|e| Refusal::new(e.oauth_error(), e.to_string()))?;
            grant.scope = scope;
            Ok((grant, false, Some(next)))
        }
        Some(JWT_BEARER) => {
            // An ID-JAG is a bearer credential: only a client that proves who it is may
            // redeem one, so that a leaked assertion is worth nothing.
            if client.is_public() {
                return Err(Refusal::new(
                    "unauthorized_client",
                    "assertions are redeemed only by confidential clients",
                ));
            }
            let verifier = f.id_jag.as_ref().ok_or_else(|| {
                Refusal::new(
                    "unsupported_grant_type",
                    "this server accepts no assertions (oauth_server.id_jag)",
                )
            })?;
            let jag = verifier
                .verify(need("assertion")?, client_id)
                .await
                .map_err(|e| Refusal::new(e.oauth_error(), e.to_string()))?;
            // The verifier remembers jtis in this process; the store makes every replica agree.
            let jti = jag
                .claims
                .get("jti")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let once = super::common::digest(&format!("{}\u{0}{jti}", jag.issuer));
            let until = jag.expires_at.saturating_mul(1000) + 600_000;
            if !f.first_use("id-jag", &once, until).await {
                return Err(Refusal::new(
                    "invalid_grant",
                    "this assertion was already used",
                ));
            }
            let wanted = get("resource")
                .map(str::to_owned)
                .or_else(|| jag.resource.first().cloned());
            let resource = wanted
                .as_deref()
                .and_then(|r| f.resource(r))
                .map(|(r, _)| r.clone())
                .ok_or_else(|| {
                    Refusal::new(
                        "invalid_target",
                        "the assertion names no server of this gateway that accepts its tokens",
                    )
                })?;
            let same = |r: &String| r.trim_end_matches('/') == resource.trim_end_matches('/');
            if !jag.resource.is_empty() && !jag.resource.iter().any(same) {
                return Err(Refusal::new(
                    "invalid_target",
                    "resource is not one the assertion was issued for",
                ));
            }
            // The assertion bounds the scopes; a request may only narrow them.
            let allowed: Vec<&str> = jag
                .scope
                .as_deref()
                .unwrap_or("")
                .split_whitespace()
                .filter(|s| f.scopes.iter().any(|o| o == s))
                .collect();
            let scope = match get("scope") {
                Some(asked) => asked
                    .split_whitespace()
                    .filter(|s| allowed.contains(s))
                    .collect::<Vec<_>>()
                    .join(" "),
                None => allowed.join(" "),
            };
            Ok((
                Grant::new(client_id, &resource, &scope, jag.identity()),
                false,
                None,
            ))
        }
        Some(other) => Err(Refusal::new(
            "unsupported_grant_type",
            format!("grant_type {other:?} is not supported"),
        )),
        None => Err(Refusal::new("invalid_request", "grant_type is required")),
    }
}

/// `POST /oauth/revoke` (RFC 7009): always 200 for an authenticated client.
async fn revoke(
    State(state): State<AppState>,
    trace: Option<Extension<TraceId>>,
    headers: HeaderMap,
    body: Result<String, StringRejection>,
) -> Response {
    let f = match facade(&state) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let body = match form_body(body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let form = match params(&body) {
        Ok(p) => p,
        Err(e) => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &e),
    };
    let client = match authenticate_client(&f, &headers, &form).await {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let Some(token) = form.get("token") else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "token is required",
        );
    };
    // Access tokens are short-lived JWTs and cannot be recalled; refresh tokens are.
    if let Err(e) = super::tokens::revoke(&f.store, token, Some(client.client_id())).await {
        tracing::error!(error = %e, "oauth_server: cannot revoke");
        return oauth_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "try again",
        );
    }
    audit(
        &state,
        trace.as_ref(),
        "oauth/revoke",
        client.client_id(),
        None,
        "revoked",
    );
    StatusCode::OK.into_response()
}

/// `POST /oauth/register` (RFC 7591, hardened: off by default, rate-limited, audited).
async fn register(
    State(state): State<AppState>,
    trace: Option<Extension<TraceId>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> Response {
    let f = match facade(&state) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let too_large = || {
        oauth_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_client_metadata",
            &format!("the request is larger than {MAX_REGISTRATION_BYTES} bytes"),
        )
    };
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => return too_large(),
        Err(_) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_client_metadata",
                "the body could not be read",
            );
        }
    };
    if body.len() > MAX_REGISTRATION_BYTES {
        return too_large();
    }
    let parsed: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_client_metadata",
                &format!("the body is not JSON: {e}"),
            );
        }
    };
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match super::registration::register(
        &f.registration,
        &f.limiter,
        &f.store,
        peer.ip(),
        authorization,
        &parsed,
    )
    .await
    {
        Ok(issued) => {
            tracing::info!(client_id = %issued.record.client_id, ip = %peer.ip(), "oauth_server: client registered");
            audit(
                &state,
                trace.as_ref(),
                "oauth/register",
                &issued.record.client_id,
                None,
                "registered",
            );
            let mut resp = (StatusCode::CREATED, Json(issued.response)).into_response();
            resp.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp
        }
        Err(e) => {
            tracing::info!(ip = %peer.ip(), error = %e, "oauth_server: registration refused");
            audit(
                &state,
                trace.as_ref(),
                "oauth/register",
                "-",
                None,
                e.error_code(),
            );
            let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
            let mut resp = oauth_error(status, e.error_code(), &e.to_string());
            if let super::registration::RegistrationError::RateLimited(after) = &e
                && let Ok(v) = HeaderValue::from_str(&after.secs().to_string())
            {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
            resp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::narrowed;

    #[test]
    fn a_refresh_scope_narrows_and_never_widens() {
        assert_eq!(narrowed(None, "a b").unwrap(), "a b");
        assert_eq!(narrowed(Some("  "), "a b").unwrap(), "a b");
        assert_eq!(narrowed(Some("b b"), "a b").unwrap(), "b");
        let e = narrowed(Some("a c"), "a b").unwrap_err();
        assert_eq!(e.error, "invalid_scope");
        assert!(
            e.description.contains("scope c was not granted"),
            "{}",
            e.description
        );
        let long = narrowed(Some(&"x".repeat(5000)), "a").unwrap_err();
        assert!(long.description.len() < 200, "{}", long.description);
    }
}
