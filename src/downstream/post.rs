//! POST: one JSON-RPC message from the client, dispatched by protocol generation and kind.

use super::Caller;
use super::access::{Access, CallTarget};
use super::error::{HttpError, consent_input_required, rpc_error};
use super::gate;
use super::input_required::ParkingLot;
use super::limits::{Holder, hold};
use super::relay::Relay;
use super::rules::{self, SESSION_HEADER};
use super::seal::SessionClaims;
use super::session::{Session, SessionLookup};
use super::stateless;
use crate::audit::{Outcome, Ticket, Who};
use crate::federation::{FederationError, SessionSource, VirtualServer, Visibility};
use crate::gateway::{Gateway, Runtime};
use crate::protocol::jsonrpc::to_raw;
use crate::protocol::{ErrorCode, Message, MessageKind, Method, ProtocolVersion, RequestId};
use crate::upstream::{ClientIdentity, Delivery};
use crate::web::json::json;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;
use tracing::Instrument;

/// Handles a POST to a virtual server's endpoint.
pub async fn handle(
    gw: Arc<Gateway>,
    rt: Arc<Runtime>,
    server: Arc<VirtualServer>,
    headers: HeaderMap,
    body: Body,
    access: Access,
    holder: Holder,
) -> Result<Response, HttpError> {
    if let Err(e) =
        rules::check_post_accept(&headers).and_then(|_| rules::check_content_type(&headers))
    {
        return Ok(super::refuse(e, body).await);
    }
    let bytes = read_body(&rt, &headers, body).await?;
    let message = Message::parse(&bytes).map_err(|e| HttpError::BadMessage {
        code: e.code(),
        message: e.to_string(),
    })?;
    let id = message.id.clone();
    let is_request = message.kind == MessageKind::Request;
    let target = if is_request {
        CallTarget::of(&message)
    } else {
        CallTarget::default()
    };
    let ticket = is_request.then(|| {
        let t = Ticket::new(
            gw.auditor.clone(),
            &server.name,
            message.method(),
            Who {
                principal: access.principal(),
            },
            bytes.len(),
        );
        t.target(
            target.name.as_deref(),
            target.arguments.as_ref(),
            Method::of(&message) == Method::ToolsCall,
        );
        Arc::new(t)
    });
    if let Some(t) = &ticket {
        // Step-up is decided here, before any stream opens, so the client sees a plain 403.
        gate::check_scopes(
            &server,
            &access,
            message.method(),
            target.name.as_deref(),
            t,
        )
        .map_err(|e| e.with_id(id.clone()))?;
    }
    let result = dispatch(gw, server, headers, message, access, holder, ticket.clone()).await;
    if let Some(t) = ticket {
        match &result {
            Err(e) => t.complete(Outcome::Refused(i64::from(e.status().as_u16()))),
            // Nobody else holds the ticket, so no stream will complete it: the answer (e.g.
            // server/discover, a listen stream's opening) is what happened.
            Ok(_) if Arc::strong_count(&t) == 1 => t.complete(Outcome::Ok),
            Ok(_) => {}
        }
    }
    result.map_err(|e| e.with_id(id))
}

async fn dispatch(
    gw: Arc<Gateway>,
    server: Arc<VirtualServer>,
    headers: HeaderMap,
    message: Message,
    access: Access,
    holder: Holder,
    ticket: Option<Arc<Ticket>>,
) -> Result<Response, HttpError> {
    let header_version = rules::version_header(&headers)?;
    let stateless = header_version.is_some_and(ProtocolVersion::is_stateless);
    let limits = gw.runtime().config.limits.clone();
    let is_request = message.kind == MessageKind::Request;
    if Method::of(&message) == Method::Initialize && is_request && !stateless {
        let r = initialize(&gw, &server, message, &access, &holder).await;
        if let (Ok(_), Some(t)) = (&r, &ticket) {
            t.complete(Outcome::Ok);
        }
        return r;
    }
    if stateless {
        // Every request may become a stream (a listen stream, an SSE answer); answers and
        // notifications take no slot.
        let permit = if is_request {
            Some(gw.streams.acquire(None, &holder, &limits)?)
        } else {
            None
        };
        let lot = ParkingLot {
            calls: gw.parked.clone(),
            owner: Caller::binding(access.caller.as_ref()),
            holder,
            max: limits.parked_calls_per_principal,
        };
        let resp = stateless::handle(
            server,
            &headers,
            message,
            lot,
            &access,
            ticket,
            limits.subscriptions_per_listen,
        )
        .await?;
        return Ok(match permit {
            Some(p) => hold(resp, p),
            None => resp,
        });
    }
    if header_version.is_none()
        && crate::protocol::stateless::declared_version(&message)
            .is_some_and(|v| v == ProtocolVersion::V2026_07_28.as_str())
    {
        return Err(HttpError::HeaderMismatch(
            "the body declares protocol 2026-07-28 but the MCP-Protocol-Version header is missing"
                .into(),
        ));
    }
    let session = find_session(&gw, &server, &headers, access.caller.as_ref())?;
    // Answers to the server's questions never wait for a slot: the calls holding the slots
    // may be the ones waiting for them.
    let permit = if is_request {
        Some(gw.streams.acquire(Some(&session.id), &holder, &limits)?)
    } else {
        None
    };
    // A supported version other than the negotiated one is accepted: clients such as the
    // TypeScript SDK send their own default on some requests, and the spec only requires
    // rejecting unsupported versions.
    if Method::of(&message) == Method::NotificationsInitialized
        && message.kind == MessageKind::Notification
    {
        let limits = super::standalone::HoldLimits::of(&limits);
        session
            .start_standalone(&access.context, &server, limits)
            .await;
    }
    let resp = in_session(server, session, message, &access, ticket).await;
    Ok(match permit {
        Some(p) => hold(resp, p),
        None => resp,
    })
}

async fn read_body(
    rt: &Runtime,
    headers: &HeaderMap,
    body: Body,
) -> Result<bytes::Bytes, HttpError> {
    let limit = rt.config.limits.max_body_bytes;
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(HttpError::PayloadTooLarge(limit));
    }
    let limited = http_body_util::Limited::new(body, limit);
    match tokio::time::timeout(rt.config.limits.body_read_timeout.0, limited.collect()).await {
        Err(_) => Err(HttpError::BodyTimeout),
        Ok(Err(e))
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(HttpError::PayloadTooLarge(limit))
        }
        Ok(Err(_)) => Err(HttpError::BadMessage {
            code: ErrorCode::PARSE_ERROR,
            message: "the body could not be read completely".into(),
        }),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

/// Finds the session a request names, with the status codes the transport prescribes.
pub fn find_session(
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

#[derive(Deserialize)]
struct InitializeParams {
    #[serde(rename = "protocolVersion")]
    protocol_version: String,
    #[serde(default)]
    capabilities: Value,
    #[serde(rename = "clientInfo", default)]
    client_info: Value,
}

async fn initialize(
    gw: &Gateway,
    server: &Arc<VirtualServer>,
    message: Message,
    access: &Access,
    holder: &Holder,
) -> Result<Response, HttpError> {
    let caller = access.caller.as_ref();
    let id = message.id.clone();
    let params: InitializeParams = match message.params_as() {
        Ok(p) => p,
        Err(e) => {
            let err = Message::error_response(
                id,
                ErrorCode::INVALID_PARAMS,
                &format!("invalid initialize params: {e}"),
                None,
            );
            return Ok(json(StatusCode::OK, err.to_bytes()));
        }
    };
    let version = params
        .protocol_version
        .parse::<ProtocolVersion>()
        .ok()
        .filter(|v| !v.is_stateless())
        .unwrap_or(ProtocolVersion::LATEST_SESSION);
    let identity = ClientIdentity {
        version,
        client_info: params.client_info,
        capabilities: params.capabilities,
    };
    // The slot is taken before any upstream session is opened for it.
    let rt = gw.runtime();
    let (limit, max) = match holder {
        Holder::Principal(_) => (
            "limits.sessions_per_principal",
            rt.config.limits.sessions_per_principal,
        ),
        Holder::Address(_) => (
            "limits.sessions_per_address",
            rt.config.limits.sessions_per_address,
        ),
    };
    let slot = gw
        .sessions
        .reserve(holder, max, rt.config.sessions.idle_timeout.0)
        .map_err(|wait| {
            tracing::info!(server = %server.name, limit, "initialize refused: too many sessions");
            HttpError::LimitExceeded {
                limit,
                max,
                retry_after_secs: wait.as_secs().max(1),
            }
        })?;
    let opens = server
        .members
        .iter()
        .map(|m| m.client.open(&access.context, &identity));
    let opened = futures_util::future::join_all(opens).await;
    let mut links = Vec::new();
    let mut infos = Vec::new();
    for (m, r) in server.members.iter().zip(opened) {
        match r {
            Ok((s, info)) => {
                links.push((
                    m.upstream.clone(),
                    s.id.clone(),
                    s.version.as_str().to_owned(),
                ));
                infos.push(Some(info));
            }
            Err(e) => {
                tracing::warn!(server = %server.name, upstream = %m.upstream, error = %e, "upstream unavailable at initialize; will retry on use");
                infos.push(None);
            }
        }
    }
    let claims = SessionClaims {
        server_path: server.path.clone(),
        version: version.as_str().into(),
        client_info: identity.client_info.clone(),
        capabilities: identity.capabilities.clone(),
        upstreams: links,
        issued_at: 0,
        principal: Caller::binding(caller),
    };
    let session = gw.sessions.create(&gw.sealer(), claims, slot);
    let mut result = server.server_description(&infos);
    result["protocolVersion"] = Value::String(version.as_str().into());
    let answer = Message::response(id.unwrap_or(RequestId::Number(0)), to_raw(&result));
    let mut resp = json(StatusCode::OK, answer.to_bytes());
    resp.headers_mut().insert(
        SESSION_HEADER,
        HeaderValue::from_str(&session.id).expect("sealed ids are visible ASCII"),
    );
    tracing::info!(server = %server.name, version = %version, "session started");
    Ok(resp)
}

fn accepted() -> Response {
    StatusCode::ACCEPTED.into_response()
}

async fn in_session(
    server: Arc<VirtualServer>,
    session: Arc<Session>,
    message: Message,
    access: &Access,
    ticket: Option<Arc<Ticket>>,
) -> Response {
    let id = message.id.clone();
    match message.kind {
        MessageKind::Notification => {
            notification(&server, &session, &access.context, message).await;
            accepted()
        }
        // An answer is delivered or refused, never accepted and dropped.
        MessageKind::Response | MessageKind::Error => {
            match super::answers::deliver(&server, &access.context, &session, message).await {
                Ok(()) => accepted(),
                Err(e) => e.with_id(id).into_response(),
            }
        }
        MessageKind::Request => {
            request(
                server,
                Some(session.clone()),
                &session.for_request(&access.context),
                message,
                None,
                access,
                ticket,
            )
            .await
        }
    }
}

async fn notification(
    server: &VirtualServer,
    session: &Session,
    ctx: &crate::context::CallContext,
    message: Message,
) {
    match Method::of(&message) {
        Method::NotificationsInitialized => {}
        Method::NotificationsCancelled => {
            #[derive(Deserialize)]
            struct P {
                #[serde(rename = "requestId")]
                request_id: RequestId,
            }
            if let Ok(p) = message.params_as::<P>()
                && !session.cancel(&p.request_id)
            {
                tracing::debug!(request = %p.request_id, "cancellation for a request not in flight");
            }
        }
        Method::NotificationsRootsListChanged => {
            server.notify_all(&session.for_request(ctx), message).await
        }
        other => tracing::debug!(method = other.as_str(), "ignoring a client notification"),
    }
}

/// Serves a request for a session-based or a stateless client.
pub async fn request(
    server: Arc<VirtualServer>,
    session: Option<Arc<Session>>,
    src: &dyn SessionSource,
    message: Message,
    parked: Option<ParkingLot>,
    access: &Access,
    ticket: Option<Arc<Ticket>>,
) -> Response {
    let id = message.id.clone();
    let method = Method::of(&message);
    let stateless = session.is_none();
    if let Some(kind) = method.list() {
        let visible = |member: usize, name: &str| access.visible(&server, kind, member, name);
        let filter: Option<&Visibility<'_>> = if access.filters() {
            Some(&visible)
        } else {
            None
        };
        let result = server
            .list(src, kind, message.params.as_deref(), filter)
            .await
            .map(|mut listing| {
                if stateless {
                    crate::protocol::stateless::complete_authored(
                        &mut listing.result,
                        Some(listing.hints),
                        &server.name,
                    );
                }
                to_raw(&listing.result)
            });
        return answer_cacheable(id, result, stateless, true, &ticket);
    }
    match method {
        Method::Ping => return answer(id, Ok(to_raw(&serde_json::json!({}))), stateless, &ticket),
        Method::LoggingSetLevel => {
            let r = server
                .request_all(src, &message)
                .await
                .map(|_| to_raw(&serde_json::json!({})));
            return answer(id, r, stateless, &ticket);
        }
        Method::Initialize => {
            let err = Message::error_response(
                id,
                ErrorCode::INVALID_REQUEST,
                "the session is already initialized",
                None,
            );
            return answered(&ticket, err);
        }
        _ => {}
    }
    let declares_tasks = super::tasks::declared(&message, session.as_deref());
    let (routed, tasks) = if method.names_task() {
        match super::tasks::admit(&server, session.as_deref(), access, message, &ticket) {
            Ok((r, rewrite)) => (r, Some(rewrite)),
            Err(refused) => return *refused,
        }
    } else {
        let tool = (method == Method::ToolsCall).then(|| CallTarget::of(&message).name);
        match gate::admit(&server, src, access, message, &ticket).await {
            Ok(r) => {
                let rewrite = super::tasks::Rewrite::for_call(
                    &server,
                    access,
                    tool.flatten().as_deref(),
                    &r,
                    declares_tasks,
                );
                (r, rewrite)
            }
            Err(refused) => return refused,
        }
    };
    if let Some(t) = &ticket {
        t.routed();
    }
    let upstream = &server.members[routed.member].upstream;
    if let Some(t) = &ticket {
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
        cacheable: method.cacheable(),
        log_floor: crate::protocol::stateless::requested_log_rank(&routed.message),
        client_capabilities: crate::protocol::stateless::declared_capabilities(&routed.message),
        parked,
        ticket: ticket.clone(),
        tasks,
        context: access.context.clone(),
    };
    let upstream_span = tracing::debug_span!("gatehouse.upstream", upstream = %upstream);
    // Results the gateway only relays may stream through; cacheable ones gain fields.
    // A task id in the answer is rewritten, so the answer is read whole.
    let delivery = if relay.cacheable || relay.tasks.is_some() {
        Delivery::Whole
    } else {
        Delivery::Streamed {
            stateless_client: session.is_none(),
        }
    };
    match server
        .call_with(src, routed.member, routed.message, delivery)
        .instrument(upstream_span)
        .await
    {
        Ok(stream) => relay.respond(stream).await,
        Err(e) => {
            if let (Some(s), Some(id)) = (&session, &id) {
                s.untrack(id);
            }
            match (&session, consent_input_required(id.clone(), &e)) {
                // 2026-07-28 clients are asked through an InputRequiredResult instead.
                (None, Some(ask)) => answered(&ticket, ask),
                _ => refused(&ticket, &e, rpc_error(id, &e), stateless),
            }
        }
    }
}

/// Answers with `msg` as JSON and records the outcome.
pub(super) fn answered(ticket: &Option<Arc<Ticket>>, msg: Message) -> Response {
    answered_with(ticket, StatusCode::OK, msg)
}

fn answered_with(ticket: &Option<Arc<Ticket>>, status: StatusCode, msg: Message) -> Response {
    let bytes = msg.to_bytes();
    if let Some(t) = ticket {
        t.sent(bytes.len());
        t.complete(Outcome::of_message(&msg));
    }
    json(status, bytes)
}

/// Answers with the JSON-RPC error `msg` reporting `e` (see [`answered_error`]).
pub(super) fn refused(
    ticket: &Option<Arc<Ticket>>,
    e: &FederationError,
    msg: Message,
    stateless: bool,
) -> Response {
    let relayed = match e {
        FederationError::Upstream(u) => u.relayed_status(),
        _ => None,
    };
    answered_error(ticket, msg, relayed, stateless)
}

/// Answers with the JSON-RPC error `msg`: as it is to a session-based client, with the codes
/// and HTTP status of 2026-07-28 to a stateless one (`relayed`: the status an upstream sent
/// its own error with).
pub(super) fn answered_error(
    ticket: &Option<Arc<Ticket>>,
    msg: Message,
    relayed: Option<u16>,
    stateless: bool,
) -> Response {
    if !stateless {
        return answered(ticket, msg);
    }
    let (status, msg) = super::error::for_stateless_client(msg, relayed);
    answered_with(ticket, status, msg)
}

fn answer(
    id: Option<RequestId>,
    result: Result<Box<serde_json::value::RawValue>, FederationError>,
    stateless: bool,
    ticket: &Option<Arc<Ticket>>,
) -> Response {
    answer_cacheable(id, result, stateless, false, ticket)
}

fn answer_cacheable(
    id: Option<RequestId>,
    result: Result<Box<serde_json::value::RawValue>, FederationError>,
    stateless: bool,
    cacheable: bool,
    ticket: &Option<Arc<Ticket>>,
) -> Response {
    let msg = match result {
        Ok(r) if stateless => Message::response(
            id.unwrap_or(RequestId::Number(0)),
            crate::protocol::stateless::with_result_type(r, cacheable),
        ),
        Ok(r) => Message::response(id.unwrap_or(RequestId::Number(0)), r),
        Err(e) => return refused(ticket, &e, rpc_error(id, &e), stateless),
    };
    answered(ticket, msg)
}
