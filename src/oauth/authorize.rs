//! The browser side of the façade: `/oauth/authorize` (check the client, send the user to the
//! enterprise IdP), `/oauth/callback` (verify the IdP's answer, ask the user's consent for this
//! client) and `/oauth/consent` (issue the code, with RFC 9207 `iss`).

use super::facade::{Facade, LOGIN_LIFETIME};
use super::grants::{Grant, GrantIdentity, LoginRequest, PendingLogin};
use super::idp::IdpError;
use crate::web::AppState;
use crate::web::html::{escape, page};
use axum::extract::{RawQuery, State};
use axum::response::{Html, IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;

/// The cookies binding logins to the browser that started them: one per login (this prefix,
/// then a random part), so that two logins at once do not overwrite each other.
const LOGIN_COOKIE: &str = "gatehouse_login_";
/// Associated data of consent tickets (so no other sealed value passes for one).
const TICKET_AAD: &[u8] = b"gatehouse oauth consent ticket v1";
/// Longest query or form accepted.
const MAX_PARAMS: usize = 16 * 1024;

/// What the consent form carries between the callback and the user's decision.
#[derive(Serialize, Deserialize)]
struct Ticket {
    request: LoginRequest,
    identity: GrantIdentity,
    browser: String,
    expires_at_ms: i64,
}

/// The façade of the current configuration, or 404.
pub(super) fn facade(state: &AppState) -> Result<Arc<Facade>, Box<Response>> {
    state.gateway.runtime().oauth.clone().ok_or_else(|| {
        Box::new(super::endpoints::oauth_error(
            StatusCode::NOT_FOUND,
            "not_found",
            "this gateway is not an authorization server (no oauth_server block)",
        ))
    })
}

/// Parses a query or form, refusing repeated parameters (RFC 6749 §3.1).
pub(super) fn params(raw: &str) -> Result<HashMap<String, String>, String> {
    if raw.len() > MAX_PARAMS {
        return Err(format!("the parameters are longer than {MAX_PARAMS} bytes"));
    }
    let mut out = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(raw.as_bytes()) {
        if out.insert(k.to_string(), v.to_string()).is_some() {
            return Err(format!("parameter {k:?} is repeated"));
        }
    }
    Ok(out)
}

/// A refusal shown to the browser instead of a redirect: the client or its redirect URI cannot
/// be trusted with one (RFC 6749 §4.1.2.1).
fn no_redirect(error: &str, description: &str) -> Response {
    super::endpoints::oauth_error(StatusCode::BAD_REQUEST, error, description)
}

/// Sends the browser back to the client with `params` plus `state` and `iss`.
fn back_to_client(
    redirect_uri: &str,
    state: Option<&str>,
    issuer: &str,
    params: &[(&str, &str)],
) -> Response {
    let Ok(mut url) = url::Url::parse(redirect_uri) else {
        return no_redirect("invalid_request", "the redirect URI is not a URL");
    };
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in params {
            q.append_pair(k, v);
        }
        if let Some(s) = state {
            q.append_pair("state", s);
        }
        q.append_pair("iss", issuer);
    }
    let mut resp = StatusCode::FOUND.into_response();
    if let Ok(v) = HeaderValue::from_str(url.as_str()) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn error_to_client(
    redirect_uri: &str,
    state: Option<&str>,
    issuer: &str,
    error: &str,
    description: &str,
) -> Response {
    back_to_client(
        redirect_uri,
        state,
        issuer,
        &[("error", error), ("error_description", description)],
    )
}

use super::common::digest;

/// The values of the login cookies the browser sent.
fn login_cookies(headers: &HeaderMap) -> Vec<String> {
    super::cookies::values(headers, LOGIN_COOKIE, 32)
}

/// The `Set-Cookie` value for a login cookie (`max_age` 0 removes it).
fn login_cookie(f: &Facade, value: &str, max_age: u64) -> Option<HeaderValue> {
    super::cookies::set(
        LOGIN_COOKIE,
        value,
        max_age,
        f.issuer.starts_with("https://"),
    )
}

/// `GET /oauth/authorize`.
pub async fn authorize(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Response {
    let f = match facade(&state) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let q = match params(raw.as_deref().unwrap_or("")) {
        Ok(q) => q,
        Err(e) => return no_redirect("invalid_request", &e),
    };
    let get = |k: &str| q.get(k).map(String::as_str);
    let Some(client_id) = get("client_id") else {
        return no_redirect("invalid_request", "client_id is required");
    };
    let client = match f.registry.find(client_id).await {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(client_id, error = ?e, "authorization refused: unknown or unusable client");
            return no_redirect(e.error_code(), &e.to_string());
        }
    };
    let Some(redirect_uri) = get("redirect_uri") else {
        return no_redirect("invalid_request", "redirect_uri is required");
    };
    if !client.redirect_uri_allowed(redirect_uri) {
        return no_redirect(
            "invalid_request",
            "redirect_uri is not one of this client's redirect URIs",
        );
    }
    let client_state = get("state");
    let fail = |error: &str, description: &str| {
        error_to_client(redirect_uri, client_state, &f.issuer, error, description)
    };
    if get("response_type") != Some("code") {
        return fail(
            "unsupported_response_type",
            "only response_type=code is supported",
        );
    }
    if let Err(e) =
        super::pkce::check_challenge(get("code_challenge"), get("code_challenge_method"))
    {
        return fail(e.error_code(), &e.to_string());
    }
    let resource = match get("resource") {
        Some(r) => match f.resource(r) {
            Some((uri, _)) => uri.clone(),
            None => {
                return fail(
                    "invalid_target",
                    "resource is not a server of this gateway that accepts its tokens",
                );
            }
        },
        None if f.resources.len() == 1 => f.resources[0].0.clone(),
        None => {
            return fail(
                "invalid_target",
                "resource is required: this gateway has several servers",
            );
        }
    };
    let scope = match f.grant_scopes(get("scope")) {
        Ok(s) => s,
        Err(e) => return fail("invalid_scope", &e),
    };
    let request = LoginRequest {
        client_id: client_id.to_owned(),
        redirect_uri: redirect_uri.to_owned(),
        client_state: client_state.map(str::to_owned),
        code_challenge: get("code_challenge").unwrap_or_default().to_owned(),
        resource,
        scope,
    };
    let (login, browser) = match PendingLogin::start(request, LOGIN_LIFETIME) {
        Ok(x) => x,
        Err(e) => return fail(e.oauth_error(), &e.to_string()),
    };
    let idp = match f.idp().await {
        Ok(idp) => idp,
        Err(e) => {
            tracing::error!(error = %e, "oauth_server: the identity provider cannot be used");
            // Settings that cannot work are not an outage: retrying will not help, and the
            // person who sees this should know to tell an administrator what is wrong.
            return match e {
                IdpError::Config(_)
                | IdpError::MultiTenant(_)
                | IdpError::IssuerMismatch { .. } => fail(
                    "server_error",
                    &format!(
                        "the gateway's identity provider settings are wrong ({e}); an administrator must fix oauth_server.idp"
                    ),
                ),
                _ => fail(
                    "temporarily_unavailable",
                    "the identity provider cannot be reached; try again later",
                ),
            };
        }
    };
    let to = idp.authorization_url(
        &login.seal(&f.sealer),
        &login.nonce,
        &login.idp_challenge(),
        &f.callback_uri(),
    );
    let mut resp = StatusCode::FOUND.into_response();
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&to) {
        h.insert(header::LOCATION, v);
    }
    if let Some(v) = login_cookie(&f, &browser, LOGIN_LIFETIME.as_secs()) {
        h.insert(header::SET_COOKIE, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// `GET /oauth/callback`: the IdP's answer.
pub async fn callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let f = match facade(&state) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let q = match params(raw.as_deref().unwrap_or("")) {
        Ok(q) => q,
        Err(e) => return page(StatusCode::BAD_REQUEST, "Sign-in failed", &e),
    };
    let state_param = q.get("state").map(String::as_str).unwrap_or("");
    let mut opened = Err(None);
    for candidate in login_cookies(&headers) {
        match PendingLogin::open(&f.sealer, state_param, Some(&candidate)) {
            Ok(l) => {
                opened = Ok((l, candidate));
                break;
            }
            Err(e) => opened = Err(Some(e)),
        }
    }
    if opened.is_err() && login_cookies(&headers).is_empty() {
        opened = PendingLogin::open(&f.sealer, state_param, None)
            .map(|l| (l, String::new()))
            .map_err(Some);
    }
    let (login, browser) = match opened {
        Ok(x) => x,
        Err(e) => {
            let e = e.map_or_else(
                || "no sign-in is in progress in this browser".to_owned(),
                |e| e.to_string(),
            );
            return page(
                StatusCode::BAD_REQUEST,
                "Sign-in failed",
                &format!("This sign-in cannot be completed: {e}. Start again from your client."),
            );
        }
    };
    let r = &login.request;
    let fail = |error: &str, description: &str| {
        error_to_client(
            &r.redirect_uri,
            r.client_state.as_deref(),
            &f.issuer,
            error,
            description,
        )
    };
    if let Some(e) = q.get("error") {
        tracing::info!(idp_error = %e, "oauth_server: the identity provider refused the sign-in");
        return fail(
            "access_denied",
            "the identity provider did not sign the user in",
        );
    }
    let Some(code) = q.get("code") else {
        return fail("access_denied", "the identity provider sent no code");
    };
    let identity = match f.idp().await {
        Ok(idp) => {
            idp.redeem(code, &login.idp_verifier, &f.callback_uri(), &login.nonce)
                .await
        }
        Err(e) => Err(e),
    };
    let identity = match identity {
        Ok(i) => GrantIdentity::from(&i),
        Err(e) => {
            tracing::warn!(error = %e, "oauth_server: the sign-in could not be verified");
            return fail(
                "access_denied",
                "the sign-in at the identity provider could not be verified",
            );
        }
    };
    let client = match f.registry.find(&r.client_id).await {
        Ok(c) => c,
        // The client went away (revoked) during the login.
        Err(e) => return fail("access_denied", &e.to_string()),
    };
    let client_name = client.display_name().to_owned();
    let verified = client.kind() == "pre-registered";
    let server = f
        .resource(&r.resource)
        .map(|(_, name)| name.clone())
        .unwrap_or_default();
    let ticket = Ticket {
        request: r.clone(),
        identity,
        browser: digest(&browser),
        expires_at_ms: crate::audit::now_ms() + LOGIN_LIFETIME.as_millis() as i64,
    };
    let sealed = f
        .sealer
        .seal(&serde_json::to_vec(&ticket).unwrap_or_default(), TICKET_AAD);
    consent_page(
        &Shown {
            client_name: &client_name,
            verified,
            client_id: &r.client_id,
            redirect_uri: &r.redirect_uri,
            server: &server,
            resource: &r.resource,
            scope: &r.scope,
        },
        &ticket.identity,
        &sealed,
    )
}

/// What the consent page tells the user.
struct Shown<'a> {
    client_name: &'a str,
    /// Configured by an administrator (not self-declared through registration or CIMD).
    verified: bool,
    client_id: &'a str,
    redirect_uri: &'a str,
    server: &'a str,
    resource: &'a str,
    scope: &'a str,
}

/// Where the form may send the browser: this gateway, and the client's redirect URI (the
/// answer to the form redirects there; a `form-action` without it blocks that redirect).
fn form_targets(redirect_uri: &str) -> String {
    match url::Url::parse(redirect_uri) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => {
            format!("'self' {}", u.origin().ascii_serialization())
        }
        Ok(u) => format!("'self' {}:", u.scheme()),
        Err(_) => "'self'".into(),
    }
}

fn consent_page(shown: &Shown<'_>, who: &GrantIdentity, ticket: &str) -> Response {
    let user = who.email.as_deref().unwrap_or(&who.subject);
    let scopes = if shown.scope.is_empty() {
        "none".to_owned()
    } else {
        escape(shown.scope)
    };
    let destination = url::Url::parse(shown.redirect_uri)
        .ok()
        .and_then(|u| {
            u.host_str()
                .map(str::to_owned)
                .or(Some(format!("{}:", u.scheme())))
        })
        .unwrap_or_default();
    let unverified = if shown.verified {
        ""
    } else {
        " <em>(name given by the application itself, not verified)</em>"
    };
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Allow access — Gatehouse</title></head>\
         <body><h1>Allow {name} to use {server}?</h1>\
         <p>Signed in as <strong>{user}</strong>.</p>\
         <p><strong>{name}</strong>{unverified} (client <code>{client_id}</code>) asks to call <strong>{server}</strong> \
         (<code>{resource}</code>) on your behalf, with scopes: {scopes}.</p>\
         <p>If you allow it, access is handed to <strong>{destination}</strong> \
         (<code>{redirect_uri}</code>). Allow only if you started this from that application.</p>\
         <form method=\"post\" action=\"/oauth/consent\">\
         <input type=\"hidden\" name=\"ticket\" value=\"{ticket}\">\
         <button type=\"submit\" name=\"decision\" value=\"allow\">Allow</button> \
         <button type=\"submit\" name=\"decision\" value=\"deny\">Deny</button>\
         </form></body></html>",
        name = escape(shown.client_name),
        server = escape(shown.server),
        user = escape(user),
        client_id = escape(shown.client_id),
        resource = escape(shown.resource),
        destination = escape(&destination),
        redirect_uri = escape(shown.redirect_uri),
        ticket = escape(ticket),
    );
    let mut resp = (StatusCode::OK, Html(body)).into_response();
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let csp = format!(
        "default-src 'none'; form-action {}; frame-ancestors 'none'",
        form_targets(shown.redirect_uri)
    );
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert("content-security-policy", v);
    }
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    resp
}

/// `POST /oauth/consent`: the user's decision.
pub async fn consent(
    State(state): State<AppState>,
    trace: Option<axum::Extension<crate::serve::TraceId>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let f = match facade(&state) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let form = match params(&body) {
        Ok(q) => q,
        Err(e) => return page(StatusCode::BAD_REQUEST, "Not allowed", &e),
    };
    let refused = |why: &str| page(StatusCode::BAD_REQUEST, "Not allowed", why);
    let Some(sealed) = form.get("ticket") else {
        return refused("The consent form is incomplete.");
    };
    let ticket: Ticket = match f
        .sealer
        .open(sealed, TICKET_AAD)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
    {
        Some(t) => t,
        None => return refused("This consent form was not issued by this gateway."),
    };
    if ticket.expires_at_ms <= crate::audit::now_ms() {
        return refused("This consent form has expired. Start again from your client.");
    }
    let Some(browser) = login_cookies(&headers)
        .into_iter()
        .find(|c| digest(c) == ticket.browser)
    else {
        return refused("This consent form belongs to another browser.");
    };
    if !f
        .first_use("consent", &digest(sealed), ticket.expires_at_ms)
        .await
    {
        return refused("This consent form was already used. Start again from your client.");
    }
    let r = &ticket.request;
    let state_param = r.client_state.as_deref();
    match form.get("decision").map(String::as_str) {
        Some("allow") => {}
        Some("deny") => {
            super::endpoints::audit(
                &state,
                trace.as_ref(),
                "oauth/consent",
                &r.client_id,
                Some(&ticket.identity.subject),
                "deny",
            );
            return error_to_client(
                &r.redirect_uri,
                state_param,
                &f.issuer,
                "access_denied",
                "the user denied access",
            );
        }
        _ => return refused("Choose Allow or Deny."),
    }
    let grant = Grant::new(&r.client_id, &r.resource, &r.scope, ticket.identity.clone());
    let code = match super::grants::issue_code(&f.store, &grant, &r.redirect_uri, &r.code_challenge)
        .await
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "oauth_server: cannot issue a code");
            return error_to_client(
                &r.redirect_uri,
                state_param,
                &f.issuer,
                "server_error",
                "the authorization could not be recorded",
            );
        }
    };
    super::endpoints::audit(
        &state,
        trace.as_ref(),
        "oauth/consent",
        &r.client_id,
        Some(&ticket.identity.subject),
        "allow",
    );
    let mut resp = back_to_client(&r.redirect_uri, state_param, &f.issuer, &[("code", &code)]);
    if let Some(v) = login_cookie(&f, &browser, 0) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}
