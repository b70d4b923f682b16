//! The HTTP edge shared by every router (MCP transport, OAuth façade, admin API, operations):
//! the application state and the response shapes they all answer with, so that none of them
//! has to import another's handlers to send a page, a JSON document or an audited refusal.

pub mod body;
pub mod html;
pub mod json;
pub mod refusal;

use crate::gateway::Gateway;
use std::sync::Arc;

/// Shared state of the HTTP server.
#[derive(Clone)]
pub struct AppState {
    /// The gateway.
    pub gateway: Arc<Gateway>,
}
