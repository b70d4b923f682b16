//! Requests refused by authentication, on any router: counted and audited the same way
//! whether the MCP endpoint or the admin API refused them.

use crate::audit::{Outcome, Ticket, Who};
use crate::auth::AuthError;
use crate::gateway::Gateway;
use crate::telemetry::metrics::METRICS;

/// Counts and audits a request refused by authentication.
pub fn record_auth_refusal(
    gw: &Gateway,
    server: &str,
    tenant: Option<&str>,
    method: &str,
    target: Option<&str>,
    error: &AuthError,
    trace_id: Option<&str>,
) {
    let (reason, decision, status) = match error {
        AuthError::Missing => ("missing", "unauthenticated", 401),
        AuthError::Invalid(_) => ("invalid", "unauthenticated", 401),
        AuthError::InsufficientScope { .. } => ("insufficient_scope", "insufficient_scope", 403),
        AuthError::Unavailable(_) => ("unavailable", "unavailable", 503),
    };
    METRICS.auth_failure(server, reason);
    let ticket = Ticket::new(
        gw.auditor.clone(),
        server,
        method,
        Who {
            principal: None,
            tenant,
        },
        0,
        trace_id,
    );
    ticket.target(target, None, false);
    // The reason is the gateway's own words (never the credential).
    ticket.decision(decision, Some(&error.to_string()));
    ticket.complete(Outcome::Refused(status));
}
