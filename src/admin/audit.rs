//! `GET /admin/audit/records`: the audit trail as JSON (the console's page is `/admin/audit`),
//! filtered like `gatehouse audit` (`since`, `subject`, `tool`, `outcome`, `server`, `tenant`,
//! `limit`). A tenant's administrator sees that tenant's records only.

use super::{authorize, problem};
use crate::commands::audit::{AuditQuery, filter};
use crate::web::AppState;
use axum::Json;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use serde::Deserialize;

/// Most records one query answers.
const MAX_LIMIT: i64 = 1000;

/// The query parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    since: Option<String>,
    subject: Option<String>,
    tool: Option<String>,
    outcome: Option<String>,
    server: Option<String>,
    tenant: Option<String>,
    limit: Option<i64>,
}

/// `GET /admin/audit/records`.
pub async fn search(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Result<Query<Params>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let admin = match authorize(&state, &headers).await {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let Query(p) = match params {
        Ok(p) => p,
        Err(e) => {
            return problem(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &format!(
                    "{}; parameters: since, subject, tool, outcome, server, tenant, limit",
                    e.body_text()
                ),
            );
        }
    };
    let tenant = match (admin.tenant(), p.tenant) {
        (None, asked) => asked,
        (Some(own), Some(asked)) if asked != own => {
            return problem(
                StatusCode::FORBIDDEN,
                "forbidden",
                &format!("a tenant administrator sees only tenant {own:?}'s records"),
            );
        }
        (Some(own), _) => Some(own.to_owned()),
    };
    let limit = p.limit.unwrap_or(100);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return problem(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!("limit: between 1 and {MAX_LIMIT}"),
        );
    }
    let q = AuditQuery {
        since: p.since.unwrap_or_else(|| "24h".into()),
        subject: p.subject,
        tool: p.tool,
        outcome: p.outcome,
        server: p.server,
        tenant,
        limit,
    };
    let f = match filter(&q) {
        Ok(f) => f,
        Err(e) => return problem(StatusCode::BAD_REQUEST, "invalid_request", &e),
    };
    let Some(store) = &state.gateway.store else {
        return problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "this gateway runs without a store",
        );
    };
    match store.query_audit(&f).await {
        Ok(records) => Json(serde_json::json!({ "records": records })).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "admin API: the store failed");
            problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "store_unavailable",
                "the store failed; see the gateway's log",
            )
        }
    }
}
