//! The HTTP admin API (`/admin/…`): the same operations as `gatehouse catalog`, for callers
//! authenticated like a protected virtual server and named in `admin` (subjects, groups,
//! roles). Off unless configured; every decision is audited under the caller's subject. The
//! browser console (`console/`) serves beside it.

mod audit;
pub(crate) mod catalog;
pub mod console;

use crate::auth::{AuthError, Principal};
use crate::web::AppState;
use axum::Json;
use axum::Router;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderMap, StatusCode};
use std::sync::Arc;

/// The admin routes (mounted beside the MCP endpoints).
pub fn router(state: AppState) -> Router {
    let console = if console::on_ops(&state.gateway.runtime().config) {
        Router::new()
    } else {
        console::router()
    };
    Router::new()
        .route("/admin/audit/records", get(audit::search))
        .route("/admin/catalog", get(catalog::overview))
        .route("/admin/catalog/{upstream}", get(catalog::show))
        .route("/admin/catalog/{upstream}/diff", get(catalog::diff))
        .route(
            "/admin/catalog/{upstream}/register",
            post(catalog::register),
        )
        .route(
            "/admin/catalog/{upstream}/{decision}",
            post(catalog::decide),
        )
        .merge(console)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_client_cert,
        ))
        .with_state(state)
}

/// With `admin.require_client_cert`, refuses admin requests whose connection presented no
/// client certificate the CA verified (the main listener asks for one without insisting, so
/// that MCP clients need none).
async fn require_client_cert(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let required = state
        .gateway
        .runtime()
        .config
        .admin
        .as_ref()
        .is_some_and(|a| a.require_client_cert);
    if required
        && req
            .extensions()
            .get::<crate::serve::tls::ClientCertificate>()
            .is_none()
    {
        tracing::debug!("admin API refused: no verified client certificate");
        return problem(
            StatusCode::FORBIDDEN,
            "client_certificate_required",
            "the admin API needs a client certificate signed by the CA in `tls.client_ca` (admin.require_client_cert)",
        );
    }
    next.run(req).await
}

/// An administrator, as established by [`authorize`].
pub struct Admin {
    principal: Arc<Principal>,
    /// `None`: the operator (everything); `Some`: an administrator of this tenant only.
    tenant: Option<String>,
}

impl Admin {
    /// Who decides, as recorded in the catalog and the audit trail.
    pub fn name(&self) -> &str {
        self.principal.subject()
    }

    /// The tenant this administrator is limited to (`None`: the operator).
    pub fn tenant(&self) -> Option<&str> {
        self.tenant.as_deref()
    }

    /// Whether this administrator may see and decide about `upstream`: the operator any, a
    /// tenant's administrator those of the tenant's servers.
    pub fn may_manage(&self, rt: &crate::gateway::Runtime, upstream: &str) -> bool {
        match &self.tenant {
            None => true,
            Some(t) => rt.owners.of_upstream(upstream) == Some(t.as_str()),
        }
    }
}

/// A JSON error answer: `{"error": code, "error_description": text}`.
pub fn problem(status: StatusCode, code: &str, description: &str) -> Response {
    (
        status,
        Json(serde_json::json!({ "error": code, "error_description": description })),
    )
        .into_response()
}

/// Authenticates the caller and checks they are an administrator.
pub async fn authorize(state: &AppState, headers: &HeaderMap) -> Result<Admin, Box<Response>> {
    let rt = state.gateway.runtime();
    let (Some(cfg), Some(guard)) = (&rt.config.admin, &rt.admin_guard) else {
        return Err(Box::new(problem(
            StatusCode::NOT_FOUND,
            "not_found",
            "the JSON admin API is not enabled (no `admin.auth` in the configuration)",
        )));
    };
    let principal = match guard.authenticate(headers).await {
        Ok(p) => p,
        Err(error) => {
            crate::web::refusal::record_auth_refusal(
                &state.gateway,
                "admin",
                None,
                "admin",
                None,
                &error,
                None,
            );
            let status = match error {
                AuthError::Missing | AuthError::Invalid(_) => StatusCode::UNAUTHORIZED,
                AuthError::InsufficientScope { .. } => StatusCode::FORBIDDEN,
                AuthError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            };
            let mut resp = problem(status, "unauthorized", &error.to_string());
            if let Some(challenge) = guard.challenge(&error)
                && let Ok(v) = http::HeaderValue::from_str(&challenge)
            {
                resp.headers_mut().insert(http::header::WWW_AUTHENTICATE, v);
            }
            return Err(Box::new(resp));
        }
    };
    if is_admin(cfg, &principal) {
        return Ok(Admin {
            principal,
            tenant: None,
        });
    }
    if let Some(tenant) = tenant_admin_of(&rt, &principal) {
        return Ok(Admin {
            principal,
            tenant: Some(tenant),
        });
    }
    tracing::warn!(
        subject = principal.subject(),
        "admin API refused: not an administrator"
    );
    Err(Box::new(problem(
        StatusCode::FORBIDDEN,
        "forbidden",
        "this identity is not an administrator (admin.subjects, groups or roles, or a tenant's admins)",
    )))
}

/// The tenant `principal` administers: one whose `admins` name it, whose issuers issued its
/// token, and whose tenant claim it carries (when the tenant lists claim values).
fn tenant_admin_of(rt: &crate::gateway::Runtime, principal: &Principal) -> Option<String> {
    let tenancy = rt.config.tenancy.as_ref()?;
    tenancy.tenants.iter().find_map(|(name, t)| {
        let trusted = t.issuers.iter().any(|i| {
            rt.config
                .auth
                .issuers
                .get(i)
                .is_some_and(|c| c.issuer == principal.issuer())
        });
        let claim = t.claim_values.is_empty()
            || principal
                .tenant()
                .is_some_and(|v| t.claim_values.iter().any(|c| c == v));
        let named = Named {
            subjects: &t.admins.subjects,
            groups: &t.admins.groups,
            roles: &t.admins.roles,
        }
        .includes(principal.subject(), principal.groups(), principal.roles());
        (trusted && claim && named).then(|| name.clone())
    })
}

/// Whether `principal` is one of the administrators the `admin` block names (here, not in
/// `config`, so that the configuration types need not know what a principal is).
fn is_admin(cfg: &crate::config::AdminConfig, principal: &Principal) -> bool {
    Named {
        subjects: &cfg.subjects,
        groups: &cfg.groups,
        roles: &cfg.roles,
    }
    .includes(principal.subject(), principal.groups(), principal.roles())
}

/// A list of people by subject, group or role (the administrators, the console's readers).
pub(crate) struct Named<'a> {
    pub subjects: &'a [String],
    pub groups: &'a [String],
    pub roles: &'a [String],
}

impl Named<'_> {
    /// Whether someone with this subject, these groups and roles is on the list.
    pub fn includes(&self, subject: &str, groups: &[String], roles: &[String]) -> bool {
        self.subjects.iter().any(|s| s == subject)
            || groups.iter().any(|g| self.groups.contains(g))
            || roles.iter().any(|r| self.roles.contains(r))
    }
}
