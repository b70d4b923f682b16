//! The Streamable HTTP endpoint for MCP clients: POST/GET/DELETE on each virtual server's path,
//! both protocol generations, sealed session ids, and the operational endpoints.

pub mod access;
mod answers;
mod call;
pub(crate) mod consent_pages;
mod discovery;
pub mod error;
pub mod input_required;
pub mod limits;
mod listen;
pub mod metadata;
mod named_session;
mod post;
mod relay;
mod replay;
mod reply;
pub mod rules;
pub mod seal;
pub mod session;
pub mod session_registry;
mod standalone;
pub(crate) mod stateless;
mod tasks;
mod vet;

#[cfg(test)]
mod mirrored_tests;
#[cfg(test)]
mod pipeline_tests;
#[cfg(test)]
mod virtual_tests;

use crate::auth::{METADATA_PREFIX, Principal, ServerGuard};
use crate::gateway::Gateway;
use crate::web::AppState;
use crate::web::refusal::record_auth_refusal;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use error::HttpError;
use http::{Method, StatusCode};
use std::sync::Arc;
use tracing::Instrument;

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
        caller.map(|c| c.principal.binding().to_owned())
    }

    /// The caller as upstream credentials see it: who, and the token an IdP could exchange
    /// (an API key is the gateway's own and cannot be).
    pub(super) fn on_behalf_of(&self, headers: &http::HeaderMap) -> crate::credentials::OnBehalfOf {
        let exchangeable = self.principal.kind() != crate::auth::CredentialKind::ApiKey;
        let subject_token = crate::auth::bearer_token(headers)
            .filter(|_| exchangeable)
            .map(|t| crate::config::Secret::new(t.to_owned()));
        crate::credentials::OnBehalfOf {
            binding: self.principal.binding().to_owned(),
            subject: self.principal.subject().to_owned(),
            issuer: self.principal.issuer().to_owned(),
            subject_token,
        }
    }
}

/// The HTTP application.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/connect/signed-in", get(consent_pages::signed_in))
        .route("/connect/callback", get(consent_pages::callback))
        .route("/connect/{id}", get(consent_pages::open_link))
        .route("/v0/servers", get(discovery::servers))
        .route("/connections", get(consent_pages::list))
        .route(
            "/connections/{upstream}",
            axum::routing::delete(consent_pages::revoke),
        )
        .route(METADATA_PREFIX, get(metadata::root))
        .route(
            &format!("{METADATA_PREFIX}/{{*path}}"),
            get(metadata::for_path),
        )
        .fallback(mcp_endpoint)
        .with_state(state)
}

async fn mcp_endpoint(State(state): State<AppState>, req: Request) -> Response {
    let span = tracing::debug_span!("gatehouse.request", path = %req.uri().path(), http.method = %req.method());
    crate::telemetry::set_remote_parent(&span, req.headers());
    serve_mcp(state, req).instrument(span).await
}

async fn serve_mcp(state: AppState, req: Request) -> Response {
    let gw = state.gateway;
    let rt = gw.runtime();
    let (parts, body): (_, Body) = req.into_parts();
    let Some(route) = rt.route(authority(&parts.headers, &parts.uri), parts.uri.path()) else {
        return refuse(HttpError::NoSuchEndpoint, body).await;
    };
    let server = route.server.clone();
    if let Err(e) = rt.origins.check(&parts.headers) {
        tracing::warn!(error = %e, "refused by DNS-rebinding protection");
        return refuse(e, body).await;
    }
    let caller = match &route.guard {
        None => None,
        Some(guard) => match guard
            .authenticate(&parts.headers)
            .instrument(tracing::debug_span!("gatehouse.auth"))
            .await
        {
            Ok(principal) => {
                crate::serve::record_subject(&parts.extensions, principal.subject());
                Some(Caller {
                    guard: guard.clone(),
                    principal,
                })
            }
            Err(error) => {
                tracing::info!(server = %server.name, reason = %error, "request refused: not authenticated");
                record_auth_refusal(
                    &gw,
                    &server.name,
                    server.tenant.as_deref(),
                    "http",
                    None,
                    &error,
                    crate::serve::TraceId::of(&parts.extensions).as_deref(),
                );
                let challenge = guard.challenge(&error);
                return refuse(HttpError::Auth { error, challenge }, body).await;
            }
        },
    };
    let mut access = access::Access::new(
        route,
        caller,
        &parts.headers,
        gw.sealer(),
        crate::serve::TraceId::of(&parts.extensions),
    );
    // Caps count against the principal, or against the client address on an open server.
    let peer = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let holder = limits::Holder::of(access.caller.as_ref(), peer);
    access.quota = rt.quotas.clone().map(|q| (q, holder.quota_key()));
    let handled = async {
        match parts.method {
            Method::POST => {
                post::handle(
                    gw.clone(),
                    rt.clone(),
                    server,
                    parts.headers,
                    body,
                    access,
                    holder,
                )
                .await
            }
            Method::GET => {
                let access = access;
                listen::get(
                    gw.clone(),
                    server,
                    parts.headers,
                    access.caller,
                    access.context,
                    holder,
                )
                .await
            }
            Method::DELETE => delete(&gw, &server, &parts.headers, &access).await,
            _ => Err(HttpError::MethodNotAllowed(
                "use POST (or GET/DELETE with a session)",
            )),
        }
    };
    handled.await.unwrap_or_else(IntoResponse::into_response)
}

/// The authority a request was sent to: its `Host` header, or the HTTP/2 `:authority`.
pub fn authority<'a>(headers: &'a http::HeaderMap, uri: &'a http::Uri) -> Option<&'a str> {
    headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
}

/// Most body bytes read from a refused request so that its connection can be reused.
const DISCARD_LIMIT: usize = 64 * 1024;
/// Longest wait for a refused request's body.
const DISCARD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Answers a request refused before its body was read. The body is read and discarded (up to
/// a small bound) first: answering while the client is still sending would leave the
/// connection in a state the client cannot reuse. A larger or slower body gets
/// `Connection: close` instead.
pub async fn refuse(error: HttpError, body: Body) -> Response {
    let mut resp = error.into_response();
    let limited = http_body_util::Limited::new(body, DISCARD_LIMIT);
    let drained = matches!(
        tokio::time::timeout(DISCARD_TIMEOUT, http_body_util::BodyExt::collect(limited)).await,
        Ok(Ok(_))
    );
    if !drained {
        resp.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    resp
}

async fn delete(
    gw: &Gateway,
    server: &crate::federation::VirtualServer,
    headers: &http::HeaderMap,
    access: &access::Access,
) -> Result<Response, HttpError> {
    if rules::version_header(headers)?.is_some_and(|v| v.is_stateless()) {
        return Err(HttpError::MethodNotAllowed(
            "the 2026-07-28 protocol has no sessions to delete",
        ));
    }
    let session = named_session::find(gw, server, headers, access.caller.as_ref())?;
    gw.sessions.end(&session.id);
    session.close_upstreams(&access.context, server).await;
    tracing::info!(server = %server.name, "session ended by the client");
    Ok(StatusCode::OK.into_response())
}
