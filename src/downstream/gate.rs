//! The one gate in front of every upstream request that names a tool, prompt or resource:
//! step-up scopes, a readable name, routing to a member, the catalog, and policy. Calls
//! (`tools/call`, `prompts/get`, `resources/read`, `completion/complete`),
//! `resources/subscribe|unsubscribe`, and each URI a `subscriptions/listen` subscribes to all
//! pass here, so what one may not read one may not subscribe to either, and a held-back or
//! hidden name is refused exactly like one no upstream offers.

use super::access::{Access, CallTarget, Refusal};
use super::error::{HttpError, consent_input_required, rpc_error};
use super::post::{answered, answered_error, refused};
use crate::audit::{Outcome, Ticket};
use crate::federation::{FederationError, Routed, SessionSource, VirtualServer};
use crate::protocol::{ErrorCode, FunctionKind, Message, Method, RequestId, TargetParam};
use crate::telemetry::metrics::METRICS;
use crate::web::json::json;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use std::sync::Arc;

/// The scopes `method` on `name` needs (the server's, plus those of matching `require` rules);
/// refused with 403 `insufficient_scope` before any stream opens.
pub fn check_scopes(
    server: &VirtualServer,
    access: &Access,
    method: &str,
    name: Option<&str>,
    ticket: &Ticket,
) -> Result<(), HttpError> {
    let Some(c) = &access.caller else {
        return Ok(());
    };
    let Err(error) = c.guard.check_scopes(&c.principal, method, name) else {
        return Ok(());
    };
    tracing::info!(server = %server.name, method, reason = %error, "request refused: scope");
    METRICS.auth_failure(&server.name, "insufficient_scope");
    ticket.decision("insufficient_scope", Some(&error.to_string()));
    ticket.complete(Outcome::Refused(403));
    let challenge = c.guard.challenge(&error);
    Err(HttpError::Auth { error, challenge })
}

/// Routes `message` and lets it through if the catalog and policy allow it; otherwise the
/// answer to send instead (recorded on `ticket`).
pub async fn admit(
    server: &VirtualServer,
    src: &dyn SessionSource,
    access: &Access,
    message: Message,
    ticket: &Option<Arc<Ticket>>,
) -> Result<Routed, Response> {
    let id = message.id.clone();
    let method = message.method().to_owned();
    let target = CallTarget::of(&message);
    let parsed = Method::parse(&method);
    if parsed.names_function() && target.name.is_none() {
        // Policy and catalog decide by name: a request whose name cannot be read (not a
        // string, given twice, …) must not reach an upstream that might read it differently.
        let what = match parsed.target() {
            Some(TargetParam::Uri) => "params.uri",
            Some(TargetParam::Ref) => "params.ref",
            _ => "params.name",
        };
        let err = Message::error_response(
            id,
            ErrorCode::INVALID_PARAMS,
            &format!("{what} is required: a string, given once"),
            None,
        );
        return Err(answered(ticket, err));
    }
    let routed = match server.route(src, message).await {
        Ok(r) => r,
        Err(e) => return Err(refused(ticket, &e, rpc_error(id, &e), src.stateless())),
    };
    let upstream = &server.members[routed.member].upstream;
    if let Some(refused) = catalog_refusal(server, upstream, &routed.message, &id) {
        // Listings never ask for consent, and a connected user's listing is what records a
        // per-user upstream's definitions for review: ask here, before refusing (connecting
        // reveals nothing the catalog holds back).
        if let Err(e) = server.members[routed.member]
            .client
            .check_consent(src.context())
            .await
        {
            let e = FederationError::Upstream(e);
            let stateless = crate::protocol::stateless::declared_version(&routed.message);
            let ask = stateless
                .and_then(|_| consent_input_required(id.clone(), &e))
                .unwrap_or_else(|| rpc_error(id.clone(), &e));
            return Err(answered(ticket, ask));
        }
        if let Some(t) = ticket {
            t.decision("deny", Some("catalog"));
        }
        return Err(answered_error(ticket, refused, None, src.stateless()));
    }
    let policy_span = tracing::debug_span!("gatehouse.policy");
    match policy_span.in_scope(|| access.check_call(server, &method, routed.member, &target, &id)) {
        Ok(decision) => {
            if let (Some(t), Some(d)) = (ticket, decision) {
                t.decision("allow", Some(&d.rule));
            }
            if let Some(mismatch) = mirrored_mismatch(server, src, &routed, &id).await {
                return Err(answered_error(ticket, mismatch, None, true));
            }
            Ok(routed)
        }
        Err(Refusal::Rpc(m, rule)) => {
            // A hidden target answers exactly like an unknown one, in the client's revision.
            let (status, m) = if src.stateless() {
                super::error::for_stateless_client(m, None)
            } else {
                (StatusCode::OK, m)
            };
            METRICS.policy_denial(&server.name, &rule);
            if let Some(t) = ticket {
                t.decision("deny", Some(&rule));
                t.complete(Outcome::Refused(m.error_code().unwrap_or_default()));
            }
            Err(json(status, m.to_bytes()))
        }
        Err(Refusal::Http(e, rule)) => {
            METRICS.auth_failure(&server.name, "insufficient_scope");
            if let Some(t) = ticket {
                t.decision("insufficient_scope", Some(&rule));
                t.complete(Outcome::Refused(403));
            }
            Err(e.into_response())
        }
    }
}

/// For a 2026-07-28 client's `tools/call`: the -32020 HeaderMismatch to answer when its
/// `Mcp-Param-*` headers do not say what its arguments say (SEP-2243: the gateway processes
/// the body, so it must check). Checked only after policy, so that a hidden tool's
/// annotations are never revealed.
async fn mirrored_mismatch(
    server: &VirtualServer,
    src: &dyn SessionSource,
    routed: &Routed,
    id: &Option<RequestId>,
) -> Option<Message> {
    let sent = src.mirrored_headers()?;
    if Method::of(&routed.message) != Method::ToolsCall {
        return None;
    }
    let name = crate::protocol::stateless::name_header_value(&routed.message)?;
    let tool = server.mirrored_params(src, routed.member, &name).await?;
    let arguments = crate::protocol::stateless::call_arguments(&routed.message);
    let reason = tool.check(sent, arguments.as_ref()).err()?;
    tracing::info!(server = %server.name, %reason, "call refused: mirrored header mismatch");
    Some(Message::error_response(
        id.clone(),
        ErrorCode::HEADER_MISMATCH,
        &format!("Header mismatch: {reason}"),
        None,
    ))
}

/// A tool, prompt or resource the catalog holds back answers like one no upstream offers.
fn catalog_refusal(
    server: &VirtualServer,
    upstream: &str,
    routed: &Message,
    id: &Option<RequestId>,
) -> Option<Message> {
    use crate::catalog::pin::DefinitionKind;
    let catalog = server.catalog.as_ref()?;
    let target = CallTarget::of(routed);
    let method = Method::of(routed);
    let completion = method == Method::CompletionComplete;
    let (kind, label) = match (method.function_kind(), target.kind) {
        (Some(FunctionKind::Tool), _) => (DefinitionKind::Tool, "tool"),
        (Some(FunctionKind::Prompt), _) => (DefinitionKind::Prompt, "prompt"),
        (Some(FunctionKind::Resource), _) => (DefinitionKind::Resource, "resource"),
        (None, Some(FunctionKind::Prompt)) if completion => (DefinitionKind::Prompt, "prompt"),
        // A completion names a template by its URI template, exactly.
        (None, Some(_)) if completion => (DefinitionKind::ResourceTemplate, "resource"),
        _ => {
            // Anything else routed to one upstream needs at least the upstream approved.
            if catalog.upstream_served(upstream) || method == Method::Ping {
                return None;
            }
            return Some(rpc_error(
                id.clone(),
                &FederationError::MethodNotFound(routed.method().to_owned()),
            ));
        }
    };
    let name = target.name?;
    if catalog.callable(upstream, kind, &name) {
        return None;
    }
    tracing::info!(%upstream, %name, "call refused: the catalog holds this definition back");
    Some(rpc_error(
        id.clone(),
        &FederationError::Unknown { kind: label, name },
    ))
}
