//! `/admin/catalog/…`: registering upstreams and deciding about them and their definitions.

use super::{authorize, problem};
use crate::catalog::review::{self, Decision, ReviewError, Reviewed};
use crate::web::AppState;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::json;

/// Largest decision body read.
const MAX_BODY: usize = 16 * 1024;

/// The body of a decision; every member is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    /// Only this definition (a name or URI at the upstream).
    name: Option<String>,
    /// Approve despite high or critical findings.
    #[serde(default)]
    accept_findings: bool,
    /// Why (recorded with the decision).
    reason: Option<String>,
    /// The pin of the definition as the reviewer read it (with `name`): refused if it changed.
    pin: Option<String>,
}

fn review_error(e: ReviewError) -> Response {
    let (status, code) = match &e {
        ReviewError::UnknownUpstream { .. }
        | ReviewError::NotRecorded(_)
        | ReviewError::NoSuchDefinition { .. } => (StatusCode::NOT_FOUND, "not_found"),
        ReviewError::RiskyFindings(_) => (StatusCode::CONFLICT, "findings_not_accepted"),
        ReviewError::Transition { .. } => (StatusCode::CONFLICT, "invalid_transition"),
        ReviewError::Changed { .. } => (StatusCode::CONFLICT, "changed"),
        ReviewError::Anonymous | ReviewError::PinWithoutName => {
            (StatusCode::BAD_REQUEST, "invalid_request")
        }
        ReviewError::Upstream { .. } => (StatusCode::BAD_GATEWAY, "upstream_unavailable"),
        ReviewError::Store(err) => {
            tracing::error!(error = %err, "admin API: the store failed");
            return problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "store_unavailable",
                "the store failed; see the gateway's log",
            );
        }
    };
    problem(status, code, &e.to_string())
}

/// The administrator calling, and the store to work on; with `upstream`, one they may
/// manage (another tenant's upstream answers as if it did not exist).
async fn ready(
    state: &AppState,
    headers: &HeaderMap,
    upstream: Option<&str>,
) -> Result<(super::Admin, crate::store::Store), Box<Response>> {
    let admin = authorize(state, headers).await?;
    if let Some(u) = upstream
        && !admin.may_manage(&state.gateway.runtime(), u)
    {
        return Err(Box::new(problem(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("no upstream {u:?} among this tenant's servers"),
        )));
    }
    let store = state.gateway.store.clone().ok_or_else(|| {
        Box::new(problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "this gateway runs without a store",
        ))
    })?;
    Ok((admin, store))
}

/// Audits what an operation did, makes this gateway enforce it at once, and answers with it.
async fn done(state: &AppState, mut reviewed: Reviewed) -> Response {
    enforce(state, std::mem::take(&mut reviewed.audit)).await;
    Json(json!({
        "upstream": reviewed.upstream.as_ref().map(review::upstream_json),
        "definitions": reviewed.definitions.iter().map(review::definition_json).collect::<Vec<_>>(),
        "left_alone": reviewed.skipped,
    }))
    .into_response()
}

/// Audits what a catalog operation did and makes this gateway enforce it at once (the JSON
/// API's and the console's shared ending).
pub(crate) async fn enforce(state: &AppState, audit: Vec<crate::store::AuditRecord>) {
    if let Some(auditor) = &state.gateway.auditor {
        for record in audit {
            auditor.submit(record);
        }
    }
    if let Some(catalog) = &state.gateway.runtime().catalog
        && let Err(e) = catalog.reload_decisions().await
    {
        tracing::warn!(error = %e, "catalog: cannot re-read decisions");
    }
}

/// `GET /admin/catalog`: every upstream's state and every recorded definition (without
/// their full text).
pub async fn overview(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let (admin, store) = match ready(&state, &headers, None).await {
        Ok(r) => r,
        Err(r) => return *r,
    };
    let rt = state.gateway.runtime();
    let result = async {
        let mut upstreams = store.catalog_upstreams().await?;
        let mut definitions = store.definitions(None).await?;
        upstreams.retain(|u| admin.may_manage(&rt, &u.upstream));
        definitions.retain(|d| admin.may_manage(&rt, &d.upstream));
        Ok::<_, crate::store::StoreError>((upstreams, definitions))
    };
    match result.await {
        Ok((upstreams, definitions)) => Json(json!({
            "upstreams": upstreams.iter().map(review::upstream_json).collect::<Vec<_>>(),
            "definitions": definitions.iter().map(|d| json!({
                "upstream": d.upstream, "kind": d.kind, "name": d.name,
                "state": d.state.as_str(), "worst": d.worst, "pin": d.pin,
            })).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(e) => review_error(e.into()),
    }
}

/// `GET /admin/catalog/{upstream}`: its state and its definitions with findings.
pub async fn show(
    State(state): State<AppState>,
    Path(upstream): Path<String>,
    headers: HeaderMap,
) -> Response {
    let (_, store) = match ready(&state, &headers, Some(&upstream)).await {
        Ok(r) => r,
        Err(r) => return *r,
    };
    let rows = match review::recorded(&store, &upstream).await {
        Ok(rows) => rows,
        Err(e) => return review_error(e),
    };
    let row = store
        .catalog_upstreams()
        .await
        .ok()
        .and_then(|all| all.into_iter().find(|u| u.upstream == upstream));
    Json(json!({
        "upstream": row.as_ref().map(review::upstream_json),
        "definitions": rows.iter().map(review::definition_json).collect::<Vec<_>>(),
    }))
    .into_response()
}

/// `GET /admin/catalog/{upstream}/diff`: quarantined definitions beside what was approved.
pub async fn diff(
    State(state): State<AppState>,
    Path(upstream): Path<String>,
    headers: HeaderMap,
) -> Response {
    let (_, store) = match ready(&state, &headers, Some(&upstream)).await {
        Ok(r) => r,
        Err(r) => return *r,
    };
    match review::drift(&store, &upstream).await {
        Ok(d) => Json(json!({ "changes": d })).into_response(),
        Err(e) => review_error(e),
    }
}

/// `POST /admin/catalog/{upstream}/register`: connect, list, scan and record.
pub async fn register(
    State(state): State<AppState>,
    Path(upstream): Path<String>,
    headers: HeaderMap,
) -> Response {
    let (admin, store) = match ready(&state, &headers, Some(&upstream)).await {
        Ok(r) => r,
        Err(r) => return *r,
    };
    let config = state.gateway.runtime().config.clone();
    match review::register(&config, &store, &upstream, Some(admin.name())).await {
        Ok(r) => done(&state, r).await,
        Err(e) => review_error(e),
    }
}

/// `POST /admin/catalog/{upstream}/{approve|reject|quarantine|retire}` with an optional JSON
/// body `{name, accept_findings, reason}`.
pub async fn decide(
    State(state): State<AppState>,
    Path((upstream, decision)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (admin, store) = match ready(&state, &headers, Some(&upstream)).await {
        Ok(r) => r,
        Err(r) => return *r,
    };
    if body.len() > MAX_BODY {
        return problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
            &format!("the body is larger than {MAX_BODY} bytes"),
        );
    }
    let parsed: DecisionBody = if body.iter().all(u8::is_ascii_whitespace) {
        DecisionBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => {
                return problem(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    &format!(
                        "the body must be a JSON object with name, accept_findings, reason: {e}"
                    ),
                );
            }
        }
    };
    let Some(decision) = Decision::named(&decision, parsed.accept_findings) else {
        return problem(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("no decision {decision:?}; use approve, reject, quarantine or retire"),
        );
    };
    let result = review::decide(
        &store,
        &upstream,
        parsed.name.as_deref(),
        admin.name(),
        parsed.reason.as_deref(),
        decision,
        parsed.pin.as_deref(),
    )
    .await;
    match result {
        Ok(r) => done(&state, r).await,
        Err(e) => review_error(e),
    }
}
