//! The Streamable HTTP endpoint for MCP clients: POST/GET/DELETE on each virtual server's path,
//! both protocol generations, sealed session ids, and the operational endpoints.

pub mod access;
pub mod error;
pub mod input_required;
mod listen;
mod metadata;
mod post;
mod relay;
pub mod rules;
pub mod seal;
pub mod session;
mod stateless;

use crate::auth::{METADATA_PREFIX, Principal, ServerGuard};
use crate::gateway::Gateway;
use crate::policy::CompiledPolicy;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use error::HttpError;
use http::{Method, StatusCode};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// An authenticated caller of a protected virtual server.
#[derive(Clone)]
pub struct Caller {
    /// The server's requirements.
    pub guard: Arc<ServerGuard>,
    /// Who is calling.
    pub principal: Arc<Principal>,
}

impl Caller {
    /// What a session is bound to, for an optional caller.
    pub fn binding(caller: Option<&Caller>) -> Option<String> {
        caller.map(|c| c.principal.binding())
    }
}

/// Shared state of the HTTP server.
#[derive(Clone)]
pub struct AppState {
    /// The gateway.
    pub gateway: Arc<Gateway>,
    /// Set once the listener is up; cleared when shutdown begins.
    pub ready: Arc<AtomicBool>,
}

/// The HTTP application.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route(METADATA_PREFIX, get(metadata::root))
        .route(
            &format!("{METADATA_PREFIX}/{{*path}}"),
            get(metadata::for_path),
        )
        .fallback(mcp_endpoint)
        .with_state(state)
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}

async fn mcp_endpoint(State(state): State<AppState>, req: Request) -> Response {
    let gw = state.gateway;
    let rt = gw.runtime();
    let (parts, body): (_, Body) = req.into_parts();
    let Some(server) = rt.servers.get(parts.uri.path()).cloned() else {
        return HttpError::NoSuchEndpoint.into_response();
    };
    if let Err(e) = rt.origins.check(&parts.headers) {
        tracing::warn!(error = %e, "refused by DNS-rebinding protection");
        return e.into_response();
    }
    let caller = match rt.guards.get(&server.path) {
        None => None,
        Some(guard) => match guard.authenticate(&parts.headers).await {
            Ok(principal) => Some(Caller {
                guard: guard.clone(),
                principal,
            }),
            Err(error) => {
                tracing::info!(server = %server.name, reason = %error, "request refused: not authenticated");
                let challenge = guard.challenge(&error);
                return HttpError::Auth { error, challenge }.into_response();
            }
        },
    };
    let access = access::Access {
        caller,
        policy: rt
            .policies
            .get(&server.path)
            .cloned()
            .unwrap_or_else(|| Arc::new(CompiledPolicy::open())),
    };
    let result = match parts.method {
        Method::POST => {
            post::handle(gw.clone(), rt.clone(), server, parts.headers, body, access).await
        }
        Method::GET => listen::get(gw.clone(), server, parts.headers, access.caller).await,
        Method::DELETE => delete(&gw, &server, &parts.headers, access.caller.as_ref()).await,
        _ => Err(HttpError::MethodNotAllowed(
            "use POST (or GET/DELETE with a session)",
        )),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn delete(
    gw: &Gateway,
    server: &crate::federation::VirtualServer,
    headers: &http::HeaderMap,
    caller: Option<&Caller>,
) -> Result<Response, HttpError> {
    if rules::version_header(headers)?.is_some_and(|v| v.is_stateless()) {
        return Err(HttpError::MethodNotAllowed(
            "the 2026-07-28 protocol has no sessions to delete",
        ));
    }
    let session = post::find_session(gw, server, headers, caller)?;
    let links = session.links().await;
    gw.sessions.end(&session.id);
    for (name, upstream_session) in links {
        if let Some(m) = server.members.iter().find(|m| m.upstream == name) {
            m.client.close(&upstream_session).await;
        }
    }
    tracing::info!(server = %server.name, "session ended by the client");
    Ok(StatusCode::OK.into_response())
}
