//! The session a session-based request names: its `Mcp-Session-Id` opened, found in the
//! registry and bound to the caller, with the status codes the transport prescribes. Shared by
//! POST, GET and DELETE, so that each refuses an unknown, ended or foreign session alike.

use super::Caller;
use super::error::HttpError;
use super::rules::{self, SESSION_HEADER};
use super::session::Session;
use super::session_registry::SessionLookup;
use crate::federation::VirtualServer;
use crate::gateway::Gateway;
use http::HeaderMap;
use std::sync::Arc;

/// Finds the session a request names.
pub fn find(
    gw: &Gateway,
    server: &VirtualServer,
    headers: &HeaderMap,
    caller: Option<&Caller>,
) -> Result<Arc<Session>, HttpError> {
    let id = rules::header_str(headers, SESSION_HEADER).ok_or(HttpError::SessionRequired)?;
    let session = gw
        .sessions
        .find(&gw.sealer(), id, &server.path)
        .map_err(|e| match e {
            SessionLookup::Unknown => HttpError::SessionNotFound,
            SessionLookup::Ended => HttpError::SessionEnded,
        })?;
    // A session belongs to the principal that started it; to anyone else it does not exist.
    if session.claims.principal.as_deref() != caller.map(|c| c.principal.binding()) {
        tracing::warn!(server = %server.name, "a session id was presented by another principal");
        return Err(HttpError::SessionNotFound);
    }
    Ok(session)
}
