//! RFC 9728 protected resource metadata: where each protected virtual server tells clients
//! which authorization servers issue its tokens and which scopes it knows.

use super::error::HttpError;
use crate::web::AppState;
use crate::web::json::document;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};

/// `/.well-known/oauth-protected-resource`: the metadata of the only protected server.
pub async fn root(State(state): State<AppState>) -> Response {
    let rt = state.gateway.runtime();
    let mut guards = rt.guards();
    match (guards.next(), guards.next()) {
        (Some(g), None) => document(g.metadata_document()),
        _ => HttpError::NoSuchEndpoint.into_response(),
    }
}

/// `/.well-known/oauth-protected-resource/<path>`: the metadata of the server at `/<path>`
/// (or of the admin API at `/admin`).
pub async fn for_path(
    State(state): State<AppState>,
    Path(path): Path<String>,
    headers: http::HeaderMap,
    uri: http::Uri,
) -> Response {
    let rt = state.gateway.runtime();
    let path = format!("/{path}");
    let host = super::authority(&headers, &uri);
    let guard = match rt.route(host, &path).and_then(|r| r.guard.as_ref()) {
        Some(g) => Some(g),
        None if path == "/admin" => rt.admin_guard.as_ref(),
        None => None,
    };
    match guard {
        Some(g) => document(g.metadata_document()),
        None => HttpError::NoSuchEndpoint.into_response(),
    }
}
