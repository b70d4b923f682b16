//! The admin console at `/admin/`: server-rendered pages for the people who approve MCP
//! servers and answer "who called what", behind the enterprise IdP. No script; every action
//! is a CSRF-protected form that runs the same code as the CLI and the JSON admin API and is
//! audited under the staff member's subject.

mod access;
mod audit;
mod catalog;
mod login;
mod overview;
mod page;
mod policy;
mod session;

pub use login::ConsoleIdp;

use crate::web::AppState;
use axum::Router;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

/// The console's routes (beside the JSON admin API under `/admin/catalog`).
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/admin",
            get(|| async { axum::response::Redirect::to("/admin/") }),
        )
        .route("/admin/", get(overview::page))
        .route("/admin/login", get(login::login))
        .route("/admin/callback", get(login::callback))
        .route("/admin/logout", post(login::logout))
        .route(page::STYLESHEET, get(stylesheet))
        .route("/admin/upstreams", get(catalog::list))
        .route("/admin/upstreams/{upstream}", get(catalog::upstream))
        .route("/admin/upstreams/{upstream}/review", get(catalog::review))
        .route("/admin/upstreams/{upstream}/decide", post(catalog::decide))
        .route(
            "/admin/upstreams/{upstream}/register",
            post(catalog::register),
        )
        .route("/admin/audit", get(audit::search))
        .route("/admin/audit/export", get(audit::export))
        .route("/admin/access", get(access::page))
        .route("/admin/access/keys", post(access::create_key))
        .route("/admin/access/sessions/end", post(access::end_session))
        .route(
            "/admin/access/connections/disconnect",
            post(access::disconnect),
        )
        .route("/admin/access/keys/revoke", post(access::revoke_key))
        .route("/admin/access/clients/revoke", post(access::revoke_client))
        .route("/admin/policy", get(policy::form).post(policy::explain))
}

/// The console's external base URL (see [`crate::config::console::ConsoleConfig::base`]).
fn base(state: &AppState) -> String {
    let rt = state.gateway.runtime();
    match rt.config.admin.as_ref().and_then(|a| a.console.as_ref()) {
        Some(c) => c.base(&rt.config),
        None => rt.config.public_base(),
    }
}

/// Which listener serves the console, as configured at start.
pub fn on_ops(config: &crate::config::Config) -> bool {
    config
        .admin
        .as_ref()
        .and_then(|a| a.console.as_ref())
        .is_some_and(|c| c.listener == crate::config::console::ConsoleListener::Ops)
}

async fn stylesheet() -> Response {
    (
        [
            (http::header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (
                http::header::CACHE_CONTROL,
                "public, max-age=31536000, immutable",
            ),
        ],
        page::CSS,
    )
        .into_response()
}

/// Records a console action (`console/…`) under the staff member's subject.
pub(crate) fn audit_action(
    state: &AppState,
    subject: &str,
    method: &str,
    target: &str,
    decision: &str,
) {
    let Some(auditor) = &state.gateway.auditor else {
        return;
    };
    let outcome = if decision == "deny" { "refused" } else { "ok" };
    auditor.submit(crate::store::AuditRecord::event(
        method,
        target,
        Some(subject),
        decision,
        outcome,
    ));
}
