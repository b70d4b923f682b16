//! Who is looking at the console: the signed-in staff member, carried in a sealed `__Host-`
//! cookie (so that any replica with the same `sessions.keys` opens it), their role, and the
//! CSRF token every form must echo. Sign-out is recorded in the store so that a copied cookie
//! dies with it.

use crate::web::AppState;
use axum::response::{IntoResponse, Redirect, Response};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};

/// The session cookie: `__Host-` forbids another host or path to set it.
pub const SESSION_COOKIE: &str = "__Host-gatehouse-console";
/// The cookie binding a sign-in to the browser that started it.
pub const LOGIN_COOKIE: &str = "__Host-gatehouse-console-login";
/// What seals the session cookie (a sealed value opens only with its own purpose).
const SESSION_PURPOSE: &str = "admin-console-session";
/// The `used_once` kind recording ended sessions.
pub const ENDED_KIND: &str = "console-session-ended";

/// What a staff member may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Look and act.
    Admin,
    /// Look only.
    Reader,
}

/// A signed-in staff member, as sealed into the cookie.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Viewer {
    /// Session id (random; recorded on sign-out).
    pub sid: String,
    /// The IdP's subject.
    pub subject: String,
    /// A name to show (email or name claim, else the subject).
    pub display: String,
    /// What they may do.
    pub role: Role,
    /// The token forms echo.
    pub csrf: String,
    /// Expiry, ms since the epoch.
    pub exp_ms: i64,
}

impl Viewer {
    /// Whether they may act.
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// The `Set-Cookie` value carrying this session.
    pub fn cookie(&self, state: &AppState) -> Option<HeaderValue> {
        let sealed = state.gateway.sealer().seal_value(self, SESSION_PURPOSE);
        let max_age = ((self.exp_ms - crate::audit::now_ms()) / 1000).max(0);
        set_cookie(SESSION_COOKIE, &sealed, max_age, "Lax")
    }
}

/// A `Set-Cookie` value: Secure, HttpOnly, Path=/ (as `__Host-` requires).
pub fn set_cookie(name: &str, value: &str, max_age: i64, same_site: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; Secure; HttpOnly; SameSite={same_site}; Max-Age={max_age}"
    ))
    .ok()
}

/// The value of cookie `name`, if the request has exactly one.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    let mut found = headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .filter(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned());
    let first = found.next()?;
    // Two cookies of one name mean someone planted one: trust neither.
    found.next().is_none().then_some(first)
}

/// Why a page cannot be shown to this request.
pub enum Refused {
    /// Not signed in (or the session ended): go sign in.
    SignIn,
    /// Signed in, but a reader asked to act.
    ReadOnly,
    /// A form without the right CSRF token or from another origin.
    Forged(&'static str),
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Refused::SignIn => Redirect::to("/admin/login").into_response(),
            Refused::ReadOnly => super::page::message(
                StatusCode::FORBIDDEN,
                "Not allowed",
                "Your account may look at the console but not change anything (admin.console.readers).",
            ),
            Refused::Forged(why) => {
                tracing::warn!(why, "admin console: form refused");
                super::page::message(
                    StatusCode::FORBIDDEN,
                    "Form refused",
                    &format!("The form was refused ({why}). Reload the page and try again."),
                )
            }
        }
    }
}

/// The signed-in staff member, or why not.
pub async fn viewer(state: &AppState, headers: &HeaderMap) -> Result<Viewer, Refused> {
    let sealed = cookie(headers, SESSION_COOKIE).ok_or(Refused::SignIn)?;
    let v: Viewer = state
        .gateway
        .sealer()
        .open_value(&sealed, SESSION_PURPOSE)
        .map_err(|_| Refused::SignIn)?;
    if v.exp_ms <= crate::audit::now_ms() {
        return Err(Refused::SignIn);
    }
    if let Some(store) = &state.gateway.store {
        match store.was_used(ENDED_KIND, &ended_digest(&v.sid)).await {
            Ok(false) => {}
            Ok(true) => return Err(Refused::SignIn),
            Err(e) => {
                // Fail closed: a session that may have ended is not trusted.
                tracing::error!(error = %e, "admin console: cannot check the session");
                return Err(Refused::SignIn);
            }
        }
    }
    Ok(v)
}

/// The digest under which an ended session is recorded.
pub fn ended_digest(sid: &str) -> String {
    crate::oauth::common::digest(sid)
}

/// The staff member, who must be an administrator, submitting a form that carries their CSRF
/// token and comes from this origin.
pub async fn actor(state: &AppState, headers: &HeaderMap, csrf: &str) -> Result<Viewer, Refused> {
    let v = viewer(state, headers).await?;
    same_origin(state, headers)?;
    if !crate::oauth::common::same(csrf, &v.csrf) {
        return Err(Refused::Forged("missing or wrong CSRF token"));
    }
    if !v.is_admin() {
        return Err(Refused::ReadOnly);
    }
    Ok(v)
}

/// Refuses a form posted from another site (`Sec-Fetch-Site`, else `Origin`).
fn same_origin(state: &AppState, headers: &HeaderMap) -> Result<(), Refused> {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return Err(Refused::Forged("posted from another site"));
    }
    if let Some(origin) = headers
        .get(http::header::ORIGIN)
        .and_then(|v| v.to_str().ok())
    {
        let ours = super::base(state);
        let host = headers
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok());
        let matches_host = host.is_some_and(|h| {
            origin
                .split_once("://")
                .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(h))
        });
        if !(origin.eq_ignore_ascii_case(&ours) || matches_host) {
            return Err(Refused::Forged("posted from another origin"));
        }
    }
    Ok(())
}
