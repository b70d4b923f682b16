//! The operations listener's endpoints: `/metrics`, `/healthz` (the process answers) and
//! `/readyz` (it should get traffic: not draining, the store answers, required upstreams open
//! a session). Kept off the MCP listener so that probes answer under a flood of clients and
//! metrics are not public by default.

use crate::gateway::Gateway;
use crate::telemetry::metrics::METRICS;
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::StatusCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Longest wait for one readiness check (the store, one upstream).
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a readiness verdict is reused: probes from several sources cost one check.
const VERDICT_TTL: Duration = Duration::from_secs(1);

/// What the operations endpoints read.
#[derive(Clone)]
pub struct OpsState {
    /// The gateway.
    pub gateway: Arc<Gateway>,
    /// Cleared when shutdown begins (the drain).
    pub ready: Arc<AtomicBool>,
    verdict: Arc<tokio::sync::Mutex<Option<(Instant, Verdict)>>>,
}

#[derive(Clone)]
struct Verdict {
    ready: bool,
    checks: serde_json::Map<String, serde_json::Value>,
}

impl OpsState {
    /// State for a gateway whose readiness flag is `ready`.
    pub fn new(gateway: Arc<Gateway>, ready: Arc<AtomicBool>) -> OpsState {
        OpsState {
            gateway,
            ready,
            verdict: Default::default(),
        }
    }
}

/// The operations application.
pub fn router(state: OpsState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn metrics() -> Response {
    let mut resp = METRICS.render().into_response();
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
    );
    resp
}

async fn readyz(State(state): State<OpsState>) -> Response {
    if !state.ready.load(Ordering::Acquire) {
        return answer(&Verdict {
            ready: false,
            checks: [("draining".to_owned(), "shutting down".into())]
                .into_iter()
                .collect(),
        });
    }
    // One check at a time; whoever waited reuses its verdict.
    let mut cached = state.verdict.lock().await;
    if let Some((at, v)) = &*cached
        && at.elapsed() < VERDICT_TTL
    {
        return answer(v);
    }
    let v = check(&state.gateway).await;
    *cached = Some((Instant::now(), v.clone()));
    answer(&v)
}

async fn check(gw: &Gateway) -> Verdict {
    let mut checks = serde_json::Map::new();
    let mut ready = true;
    if let Some(store) = &gw.store {
        let v = match tokio::time::timeout(CHECK_TIMEOUT, store.ping()).await {
            Ok(Ok(())) => "ok".to_owned(),
            Ok(Err(e)) => {
                ready = false;
                format!("unreachable: {e}")
            }
            Err(_) => {
                ready = false;
                format!("no answer within {}s", CHECK_TIMEOUT.as_secs())
            }
        };
        checks.insert("store".into(), v.into());
    }
    let rt = gw.runtime();
    if let Some(q) = &rt.quotas
        && let Some((ok, said)) = q.readiness().await
    {
        ready &= ok;
        checks.insert("quota store".into(), said.into());
    }
    for name in &rt.config.ops.ready_requires {
        let Some(client) = rt.upstreams.get(name) else {
            continue;
        };
        let opened = tokio::time::timeout(
            CHECK_TIMEOUT,
            client.open(
                &crate::context::CallContext::gateway(),
                &crate::upstream::ClientIdentity::gateway(),
            ),
        )
        .await;
        let v = match opened {
            Ok(Ok((session, _))) => {
                client
                    .close(&crate::context::CallContext::gateway(), &session)
                    .await;
                "ok".to_owned()
            }
            Ok(Err(e)) => {
                ready = false;
                e.to_string()
            }
            Err(_) => {
                ready = false;
                format!("no session within {}s", CHECK_TIMEOUT.as_secs())
            }
        };
        checks.insert(format!("upstream {name}"), v.into());
    }
    Verdict { ready, checks }
}

fn answer(v: &Verdict) -> Response {
    let status = if v.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({ "ready": v.ready, "checks": v.checks });
    crate::web::json::json(status, serde_json::to_vec(&body).unwrap_or_default())
}
