//! The call pipeline: one request of a session-based or a stateless client to a virtual
//! server, served in a fixed order —
//!
//! **scope → route → catalog → policy → send → relay**
//!
//! — each step returning `Result<_, Refusal>`, every refusal answered, audited and counted in
//! one place ([`Refusal::answer`]). The request's head ([`CallHead`]) was read once, beside
//! the envelope; the steps read it and forward `params` raw. What the transport decides
//! (POST rules, `initialize`, which session, the 2026-07-28 header rules) happens before, in
//! `post.rs` and `stateless.rs`; what becomes of the upstream's frames, after, in `relay.rs`.
//!
//! Scope runs first and apart ([`scope`]): step-up is decided before any stream opens, so the
//! client sees a plain 403. Route, catalog and policy together are [`admit`], the gate that
//! every request naming a tool, prompt or resource passes, subscriptions of a
//! `subscriptions/listen` stream included: what one may not read one may not subscribe to,
//! and a held-back or hidden name is refused exactly like one no upstream offers.

use super::access::Access;
use super::error::{HttpError, consent_input_required};
use super::input_required::ParkingLot;
use super::relay::Relay;
use super::reply::{Refusal, answered};
use super::session::Session;
use super::stateless::SharedSessions;
use super::tasks;
use crate::audit::Ticket;
use crate::federation::{FederationError, Routed, SessionSource, VirtualServer, Visibility};
use crate::protocol::jsonrpc::to_raw;
use crate::protocol::stateless::{complete_authored, with_result_type};
use crate::protocol::{CallHead, ErrorCode, FunctionKind, Message, Method, RequestId};
use crate::upstream::Delivery;
use axum::response::Response;
use http::StatusCode;
use std::sync::Arc;
use tracing::Instrument;

/// Which generation of client makes the request, with what that generation brings.
pub enum ClientMode {
    /// A session-based client (2025-11-25 and earlier), in its session.
    Session(Arc<Session>),
    /// A 2026-07-28 client: the upstream sessions shared for what it declared, and where its
    /// calls wait while it answers an upstream's question.
    Stateless {
        /// The shared upstream sessions.
        sessions: SharedSessions,
        /// The caller's parked calls.
        parked: ParkingLot,
    },
}

/// One request on its way through the pipeline.
pub struct Call<'a> {
    /// The virtual server addressed.
    pub server: Arc<VirtualServer>,
    /// The request's head.
    pub head: &'a CallHead,
    /// The caller and the server's policy.
    pub access: &'a Access,
    /// The request's audit record.
    pub ticket: Option<Arc<Ticket>>,
}

/// Step 1, before any stream opens: the scopes `method` on `name` needs (the server's, plus
/// those of matching `require` rules), refused with 403 `insufficient_scope`.
pub fn scope(
    server: &VirtualServer,
    access: &Access,
    method: &str,
    name: Option<&str>,
) -> Result<(), Refusal> {
    let Some(c) = &access.caller else {
        return Ok(());
    };
    let Err(error) = c.guard.check_scopes(&c.principal, method, name) else {
        return Ok(());
    };
    tracing::info!(server = %server.name, method, reason = %error, "request refused: scope");
    let reason = error.to_string();
    let challenge = c.guard.challenge(&error);
    Err(Refusal::by_scope(
        HttpError::Auth { error, challenge },
        reason,
    ))
}

/// Serves a request after the scope step, answering every refusal.
pub async fn serve(call: Call<'_>, mode: ClientMode, message: Message) -> Response {
    let id = message.id.clone();
    let stateless = matches!(mode, ClientMode::Stateless { .. });
    let server = call.server.clone();
    let ticket = call.ticket.clone();
    match steps(call, mode, message).await {
        Ok(answer) => answer,
        Err(refusal) => refusal.answer(&server.name, id, stateless, ticket.as_deref()),
    }
}

async fn steps(call: Call<'_>, mode: ClientMode, message: Message) -> Result<Response, Refusal> {
    let Call {
        server,
        head,
        access,
        ticket,
    } = call;
    let (session, parked, shared) = match mode {
        ClientMode::Session(s) => (Some(s), None, None),
        ClientMode::Stateless { sessions, parked } => (None, Some(parked), Some(sessions)),
    };
    let in_session = session.as_ref().map(|s| s.for_request(&access.context));
    let src: &dyn SessionSource = match (&in_session, &shared) {
        (Some(s), _) => s,
        (None, Some(s)) => s,
        (None, None) => unreachable!("a client is in one mode or the other"),
    };
    let stateless = session.is_none();
    let id = message.id.clone();
    // Before anything is asked of an upstream: a runaway client is held back here, listings
    // and refused calls included. What it holds is given back with the response.
    let permit = access.admit_quota(&server, head).await?;
    if let Some(kind) = head.method.list() {
        let visible = |member: usize, name: &str| access.visible(&server, kind, member, name);
        let filter: Option<&Visibility<'_>> = access.filters().then_some(&visible);
        let mut listing = server
            .list(src, kind, message.params.as_deref(), filter)
            .await
            .map_err(|e| Refusal::federation(id.clone(), &e))?;
        if stateless {
            complete_authored(&mut listing.result, Some(listing.hints), &server.name);
        }
        return Ok(result(
            id,
            to_raw(&listing.result),
            stateless,
            true,
            &ticket,
        ));
    }
    match head.method {
        // Answered with an empty result, once every member has been told the log level.
        Method::Ping | Method::LoggingSetLevel => {
            if head.method == Method::LoggingSetLevel {
                server
                    .request_all(src, &message)
                    .await
                    .map_err(|e| Refusal::federation(id.clone(), &e))?;
            }
            let empty = to_raw(&serde_json::json!({}));
            return Ok(result(id, empty, stateless, false, &ticket));
        }
        Method::Initialize => {
            return Err(Refusal::rpc(Message::error_response(
                id,
                ErrorCode::INVALID_REQUEST,
                "the session is already initialized",
                None,
            )));
        }
        _ => {}
    }
    // Steps 2–4 (for `tasks/*`: by the task the id names, under its tool's rules).
    let (routed, tasks) = if head.method.names_task() {
        let (routed, rewrite) = tasks::admit(
            &server,
            session.as_deref(),
            access,
            head,
            message,
            ticket.as_deref(),
        )?;
        (routed, Some(rewrite))
    } else {
        let declares_tasks = tasks::declared(head.meta.get_capabilities(), session.as_deref());
        let routed = admit(&server, src, access, head, message, ticket.as_deref()).await?;
        let rewrite = match (&head.name, head.method == Method::ToolsCall) {
            (Some(tool), true) if declares_tasks => upstream_name(&server, head, &routed)
                .map(|inner| tasks::Rewrite::for_call(&server, access, tool, inner, routed.member)),
            _ => None,
        };
        (routed, rewrite)
    };
    // The interceptors asked before the request goes upstream (after policy: a hook never
    // hears of a call policy refused).
    let routed = super::vet::before_sending(&server, access, head, routed, &id).await?;
    let vet =
        super::vet::Vet::of(&server, access, head, routed.member, &routed.message).map(Arc::new);
    // Step 5: send.
    let upstream = &server.members[routed.member].upstream;
    if let Some(t) = &ticket {
        t.routed();
        t.upstream(upstream);
    }
    let cancel = match (&session, &id) {
        (Some(s), Some(id)) => s.track(id),
        _ => Default::default(),
    };
    let relay = Relay {
        server: server.clone(),
        member: routed.member,
        session: session.clone(),
        request_id: id.clone(),
        cancel,
        cacheable: head.method.cacheable(),
        log_floor: head.meta.log_rank(),
        client_capabilities: head.meta.capabilities(),
        parked,
        ticket,
        tasks,
        context: access.context.clone(),
        permit: permit.shared(),
        vet,
        read_as: read_as(&server, head, &routed),
    };
    let upstream_span = tracing::debug_span!("gatehouse.upstream", upstream = %upstream);
    // Results the gateway only relays may stream through; cacheable ones gain fields.
    // A task id in the answer is rewritten, so the answer is read whole.
    let delivery = if relay.cacheable
        || relay.tasks.is_some()
        || relay.vet.as_ref().is_some_and(|v| v.wants_whole())
    {
        Delivery::Whole
    } else {
        Delivery::Streamed {
            stateless_client: stateless,
        }
    };
    let sent = server
        .call_with(src, routed.member, routed.message, delivery)
        .instrument(upstream_span)
        .await;
    match sent {
        // Step 6: relay.
        Ok(stream) => Ok(relay.respond(stream).await),
        Err(e) => {
            if let (Some(s), Some(id)) = (&session, &id) {
                s.untrack(id);
            }
            match consent_input_required(id.clone(), &e) {
                // 2026-07-28 clients are asked through an InputRequiredResult instead.
                Some(ask) if stateless => Err(Refusal::exact(StatusCode::OK, ask)),
                _ => Err(Refusal::federation(id, &e)),
            }
        }
    }
}

/// Steps 2–4, the gate: routes `message` to a member, then lets it through if the catalog and
/// policy allow it (and, for a 2026-07-28 `tools/call`, if its mirrored headers agree).
pub async fn admit(
    server: &VirtualServer,
    src: &dyn SessionSource,
    access: &Access,
    head: &CallHead,
    message: Message,
    ticket: Option<&Ticket>,
) -> Result<Routed, Refusal> {
    let id = message.id.clone();
    if let Some(what) = head.unreadable_target() {
        // Policy and catalog decide by name: a request whose name cannot be read (not a
        // string, given twice, …) must not reach an upstream that might read it differently.
        return Err(Refusal::exact(
            StatusCode::OK,
            Message::error_response(
                id,
                ErrorCode::INVALID_PARAMS,
                &format!("{what} is required: a string, given once"),
                None,
            ),
        ));
    }
    // Step 2: route.
    let routed = server
        .route(src, message)
        .await
        .map_err(|e| Refusal::federation(id.clone(), &e))?;
    // Step 3: the catalog.
    catalog(server, src, head, &routed, &id).await?;
    // Step 4: policy.
    let policy_span = tracing::debug_span!("gatehouse.policy");
    let decision = policy_span.in_scope(|| access.check_call(server, head, routed.member, &id))?;
    if let (Some(t), Some(d)) = (ticket, decision) {
        t.decision("allow", Some(&d.rule));
    }
    // Checked only after policy, so that a hidden tool's annotations are never revealed.
    mirrored(server, src, head, routed.member, &id).await?;
    Ok(routed)
}

/// For a `resources/read` of a URI the upstream knows by another: (its, the client's).
fn read_as(server: &VirtualServer, head: &CallHead, routed: &Routed) -> Option<(String, String)> {
    if head.method != Method::ResourcesRead || server.passes_through() {
        return None;
    }
    let asked = head.name.clone()?;
    let inner = CallHead::of(&routed.message).name?;
    (asked != inner).then_some((inner, asked))
}

/// The target's name as the member's upstream knows it (the catalog decides on it).
fn upstream_name(server: &VirtualServer, head: &CallHead, routed: &Routed) -> Option<String> {
    if server.passes_through() {
        head.name.clone()
    } else {
        CallHead::of(&routed.message).name
    }
}

/// Step 3: a tool, prompt or resource the catalog holds back answers like one no upstream
/// offers; anything else routed to one upstream needs at least that upstream approved.
async fn catalog(
    server: &VirtualServer,
    src: &dyn SessionSource,
    head: &CallHead,
    routed: &Routed,
    id: &Option<RequestId>,
) -> Result<(), Refusal> {
    use crate::catalog::pin::DefinitionKind;
    let Some(catalog) = server.catalog.as_ref() else {
        return Ok(());
    };
    let upstream = &server.members[routed.member].upstream;
    let method = &head.method;
    let completion = *method == Method::CompletionComplete;
    let kind = match (method.function_kind(), head.kind) {
        (Some(FunctionKind::Tool), _) => Some((DefinitionKind::Tool, "tool")),
        (Some(FunctionKind::Prompt), _) => Some((DefinitionKind::Prompt, "prompt")),
        (Some(FunctionKind::Resource), _) => Some((DefinitionKind::Resource, "resource")),
        (None, Some(FunctionKind::Prompt)) if completion => {
            Some((DefinitionKind::Prompt, "prompt"))
        }
        // A completion names a template by its URI template, exactly.
        (None, Some(_)) if completion => Some((DefinitionKind::ResourceTemplate, "resource")),
        _ => None,
    };
    let refusal = match kind {
        None if catalog.upstream_served(upstream) || *method == Method::Ping => return Ok(()),
        None => FederationError::MethodNotFound(method.as_str().to_owned()),
        Some((kind, label)) => {
            let Some(name) = upstream_name(server, head, routed) else {
                return Ok(());
            };
            if catalog.callable(upstream, kind, &name) {
                return Ok(());
            }
            tracing::info!(%upstream, %name, "call refused: the catalog holds this definition back");
            // Named as the client named it: the upstream's own name may be one it is not
            // shown (a prefixed or virtual one's).
            FederationError::Unknown {
                kind: label,
                name: head.name.clone().unwrap_or(name),
            }
        }
    };
    // Listings never ask for consent, and a connected user's listing is what records a
    // per-user upstream's definitions for review: ask here, before refusing (connecting
    // reveals nothing the catalog holds back).
    if let Err(e) = server.members[routed.member]
        .client
        .check_consent(src.context())
        .await
    {
        let e = FederationError::Upstream(e);
        let ask = head
            .meta
            .version()
            .and_then(|_| consent_input_required(id.clone(), &e))
            .unwrap_or_else(|| super::error::rpc_error(id.clone(), &e));
        return Err(Refusal::exact(StatusCode::OK, ask));
    }
    Err(Refusal::federation(id.clone(), &refusal).denied_by("catalog"))
}

/// For a 2026-07-28 client's `tools/call` served by `member` (a first request or the retry
/// that resumes one): refused with -32020 HeaderMismatch when its `Mcp-Param-*` headers do
/// not say what its arguments say (SEP-2243: the gateway processes the body, so it must check).
pub async fn mirrored(
    server: &VirtualServer,
    src: &dyn SessionSource,
    head: &CallHead,
    member: usize,
    id: &Option<RequestId>,
) -> Result<(), Refusal> {
    let Some(sent) = src.mirrored_headers() else {
        return Ok(());
    };
    if head.method != Method::ToolsCall {
        return Ok(());
    }
    let Some(name) = head.name_header.as_deref() else {
        return Ok(());
    };
    let Some(tool) = server.mirrored_params(src, member, name).await else {
        return Ok(());
    };
    let Err(reason) = tool.check(sent, head.arguments()) else {
        return Ok(());
    };
    tracing::info!(server = %server.name, %reason, "call refused: mirrored header mismatch");
    Err(Refusal::rpc(Message::error_response(
        id.clone(),
        ErrorCode::HEADER_MISMATCH,
        &format!("Header mismatch: {reason}"),
        None,
    )))
}

/// Answers with a result the gateway made (a listing, `ping`): to a stateless client with its
/// `resultType` (and, for `cacheable` ones, caching hints).
fn result(
    id: Option<RequestId>,
    result: Box<serde_json::value::RawValue>,
    stateless: bool,
    cacheable: bool,
    ticket: &Option<Arc<Ticket>>,
) -> Response {
    let result = if stateless {
        with_result_type(result, cacheable)
    } else {
        result
    };
    answered(
        ticket.as_deref(),
        Message::response(id.unwrap_or(RequestId::Number(0)), result),
    )
}
