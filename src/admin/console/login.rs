//! Signing in to the console through the enterprise IdP (OIDC authorization code with PKCE
//! S256 and a nonce, by the façade's IdP client), deciding the role from the identity's
//! subject, groups and roles, and signing out.

use super::page;
use super::session::{ENDED_KIND, LOGIN_COOKIE, Role, SESSION_COOKIE, Viewer, cookie, set_cookie};
use crate::oauth::common::{random_secret, s256};
use crate::oauth::idp::{Idp, IdpError, IdpIdentity};
use crate::web::AppState;
use axum::Form;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use http::{HeaderMap, StatusCode, header};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// What seals the sign-in cookie.
const LOGIN_PURPOSE: &str = "admin-console-login";
/// How long a sign-in at the IdP may take.
const LOGIN_TTL: Duration = Duration::from_secs(600);
/// Longest `login_hint` passed on to the IdP.
const MAX_HINT: usize = 256;

/// The console's IdP client, discovered on first use (and again after a failure).
pub struct ConsoleIdp {
    settings: crate::oauth::idp::IdpSettings,
    idp: tokio::sync::OnceCell<Idp>,
    http: reqwest::Client,
}

impl ConsoleIdp {
    /// The client for `config`'s console, if it has one.
    pub fn from_config(config: &crate::config::Config) -> Result<Option<Arc<ConsoleIdp>>, String> {
        let Some(console) = config.admin.as_ref().and_then(|a| a.console.as_ref()) else {
            return Ok(None);
        };
        let Some(idp) = console.idp(config) else {
            return Err("admin.console.idp: required".into());
        };
        let settings = crate::oauth::facade::idp_settings(idp, config.auth.clock_skew.0)
            .map_err(|e| format!("admin.console.idp: {e}"))?;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("admin.console: HTTP client: {e}"))?;
        Ok(Some(Arc::new(ConsoleIdp {
            settings,
            idp: tokio::sync::OnceCell::new(),
            http,
        })))
    }

    async fn idp(&self) -> Result<&Idp, IdpError> {
        self.idp
            .get_or_try_init(|| Idp::discover(self.settings.clone(), self.http.clone()))
            .await
    }
}

/// What the sign-in cookie carries between `/admin/login` and `/admin/callback`.
#[derive(Serialize, Deserialize)]
struct Pending {
    state: String,
    nonce: String,
    verifier: String,
    exp_ms: i64,
}

/// `GET /admin/login?login_hint=…`.
#[derive(Deserialize)]
pub struct LoginQuery {
    #[serde(default)]
    login_hint: Option<String>,
}

fn redirect_uri(state: &AppState) -> String {
    format!("{}/admin/callback", super::base(state))
}

fn unavailable(what: &str) -> Response {
    page::message(StatusCode::NOT_FOUND, "Console off", what)
}

/// Sends the browser to the IdP.
pub async fn login(State(state): State<AppState>, Query(q): Query<LoginQuery>) -> Response {
    let rt = state.gateway.runtime();
    let Some(client) = rt.console.clone() else {
        return unavailable("The admin console is not configured (admin.console).");
    };
    let idp = match client.idp().await {
        Ok(idp) => idp,
        Err(e) => {
            tracing::error!(error = %e, "admin console: the IdP cannot be used");
            return page::message(
                StatusCode::BAD_GATEWAY,
                "Sign-in unavailable",
                &format!("The IdP in admin.console.idp cannot be used: {e}"),
            );
        }
    };
    let pending = Pending {
        state: random_secret(),
        nonce: random_secret(),
        verifier: random_secret(),
        exp_ms: crate::audit::now_ms() + LOGIN_TTL.as_millis() as i64,
    };
    let mut url = idp.authorization_url(
        &pending.state,
        &pending.nonce,
        &s256(&pending.verifier),
        &redirect_uri(&state),
    );
    if let Some(hint) = q
        .login_hint
        .filter(|h| !h.is_empty() && h.len() <= MAX_HINT)
    {
        url.push_str("&login_hint=");
        url.push_str(&page::url_part(&hint));
    }
    let sealed = state.gateway.sealer().seal_value(&pending, LOGIN_PURPOSE);
    let mut resp = Redirect::to(&url).into_response();
    // Lax: the IdP sends the browser back with a top-level navigation from its own site.
    if let Some(c) = set_cookie(LOGIN_COOKIE, &sealed, LOGIN_TTL.as_secs() as i64, "Lax") {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    page::secure_headers(&mut resp);
    resp
}

/// `GET /admin/callback?code=…&state=…` (or `error=…`).
#[derive(Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// Redeems the IdP's code, decides the role and starts the session.
pub async fn callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Response {
    let rt = state.gateway.runtime();
    let Some(client) = rt.console.clone() else {
        return unavailable("The admin console is not configured (admin.console).");
    };
    if let Some(error) = q.error {
        return page::message(
            StatusCode::UNAUTHORIZED,
            "Sign-in failed",
            &format!(
                "The IdP answered {error}: {}",
                q.error_description.unwrap_or_default()
            ),
        );
    }
    let pending: Option<Pending> = cookie(&headers, LOGIN_COOKIE)
        .and_then(|c| state.gateway.sealer().open_value(&c, LOGIN_PURPOSE).ok());
    let Some(pending) = pending.filter(|p| p.exp_ms > crate::audit::now_ms()) else {
        return page::message(
            StatusCode::BAD_REQUEST,
            "Sign-in expired",
            "This browser did not start a sign-in, or it took too long. Sign in again.",
        );
    };
    let (Some(code), Some(got_state)) = (q.code, q.state) else {
        return page::message(
            StatusCode::BAD_REQUEST,
            "Sign-in failed",
            "The IdP sent the browser back without a code and state.",
        );
    };
    if !crate::oauth::common::same(&got_state, &pending.state) {
        return page::message(
            StatusCode::BAD_REQUEST,
            "Sign-in failed",
            "The state does not match the sign-in this browser started.",
        );
    }
    let identity = match client.idp().await {
        Ok(idp) => {
            idp.redeem(
                &code,
                &pending.verifier,
                &redirect_uri(&state),
                &pending.nonce,
            )
            .await
        }
        Err(e) => Err(e),
    };
    let identity = match identity {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(error = %e, "admin console: sign-in failed at the IdP");
            return page::message(
                StatusCode::UNAUTHORIZED,
                "Sign-in failed",
                &format!("The IdP's answer was not accepted: {e}"),
            );
        }
    };
    let Some(console) = rt.config.admin.as_ref() else {
        return unavailable("The admin console is not configured (admin.console).");
    };
    let role = role_of(console, &identity);
    super::audit_action(
        &state,
        &identity.subject,
        "console/sign_in",
        "console",
        if role.is_some() { "allow" } else { "deny" },
    );
    let Some(role) = role else {
        tracing::warn!(
            subject = identity.subject,
            "admin console: sign-in refused, not an administrator or reader"
        );
        return page::message(
            StatusCode::FORBIDDEN,
            "Not an administrator",
            "Your account is neither an administrator (admin.subjects, groups, roles) nor a reader (admin.console.readers) of this gateway.",
        );
    };
    let ttl = console
        .console
        .as_ref()
        .map(|c| c.session_ttl.0)
        .unwrap_or(Duration::from_secs(3600));
    let viewer = Viewer {
        sid: random_secret(),
        display: identity
            .email
            .clone()
            .or(identity.name.clone())
            .unwrap_or_else(|| identity.subject.clone()),
        subject: identity.subject,
        role,
        csrf: random_secret(),
        exp_ms: crate::audit::now_ms() + ttl.as_millis() as i64,
    };
    let mut resp = Redirect::to("/admin/").into_response();
    let h = resp.headers_mut();
    if let Some(c) = viewer.cookie(&state) {
        h.append(header::SET_COOKIE, c);
    }
    if let Some(c) = set_cookie(LOGIN_COOKIE, "", 0, "Lax") {
        h.append(header::SET_COOKIE, c);
    }
    page::secure_headers(&mut resp);
    resp
}

/// The role `identity` has in the console, if any (administrators first).
fn role_of(admin: &crate::config::AdminConfig, identity: &IdpIdentity) -> Option<Role> {
    let on = |list: crate::admin::Named| {
        list.includes(&identity.subject, &identity.groups, &identity.roles)
    };
    if on(crate::admin::Named {
        subjects: &admin.subjects,
        groups: &admin.groups,
        roles: &admin.roles,
    }) {
        return Some(Role::Admin);
    }
    let readers = &admin.console.as_ref()?.readers;
    on(crate::admin::Named {
        subjects: &readers.subjects,
        groups: &readers.groups,
        roles: &readers.roles,
    })
    .then_some(Role::Reader)
}

/// The sign-out form.
#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /admin/logout`: ends the session everywhere (recorded in the store) and clears it.
pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    // A reader may sign out too: check the token, not the role.
    let viewer = match super::session::viewer(&state, &headers).await {
        Ok(v) if crate::oauth::common::same(&form.csrf, &v.csrf) => v,
        Ok(_) => {
            return super::session::Refused::Forged("missing or wrong CSRF token").into_response();
        }
        Err(r) => return r.into_response(),
    };
    if let Some(store) = &state.gateway.store {
        let now = crate::audit::now_ms();
        if let Err(e) = store
            .use_once(
                ENDED_KIND,
                &super::session::ended_digest(&viewer.sid),
                viewer.exp_ms,
            )
            .await
        {
            tracing::error!(error = %e, "admin console: cannot record the sign-out");
        }
        // Keeps the table to the sessions that could still be used.
        let _ = store.forget_used_once(now).await;
    }
    super::audit_action(
        &state,
        &viewer.subject,
        "console/sign_out",
        "console",
        "allow",
    );
    let mut resp = page::message(
        StatusCode::OK,
        "Signed out",
        "You are signed out of the Gatehouse console.",
    );
    if let Some(c) = set_cookie(SESSION_COOKIE, "", 0, "Lax") {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    resp
}
