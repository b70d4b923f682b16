//! POST: one JSON-RPC message from the client, dispatched by protocol generation and kind.

use super::Caller;
use super::access::Access;
use super::call::{self, Call, ClientMode};
use super::error::HttpError;
use super::input_required::ParkingLot;
use super::limits::{Holder, hold};
use super::named_session;
use super::reply::{Refusal, opened};
use super::rules::{self, SESSION_HEADER};
use super::seal::SessionClaims;
use super::session::Session;
use super::stateless;
use crate::audit::{Ticket, Who};
use crate::federation::VirtualServer;
use crate::gateway::{Gateway, Runtime};
use crate::protocol::jsonrpc::to_raw;
use crate::protocol::{
    CallHead, ErrorCode, Message, MessageKind, Method, ProtocolVersion, RequestId,
};
use crate::upstream::ClientIdentity;
use crate::web::json::json;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;

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
    let head = CallHead::of(&message);
    let ticket = (message.kind == MessageKind::Request).then(|| {
        let t = Ticket::new(
            gw.auditor.clone(),
            &server.name,
            message.method(),
            Who {
                principal: access.principal(),
                tenant: server.tenant.as_deref(),
            },
            bytes.len(),
            access.trace_id.as_deref(),
        );
        let records = gw.auditor.as_ref().is_some_and(|a| a.records_arguments());
        t.target(
            head.name.as_deref(),
            head.arguments().filter(|_| records),
            head.method == Method::ToolsCall,
        );
        Arc::new(t)
    });
    if let Some(t) = &ticket {
        // Step-up is decided here, before any stream opens, so the client sees a plain 403.
        if let Err(refusal) = call::scope(&server, &access, message.method(), head.name.as_deref())
        {
            return Ok(refusal.answer(&server.name, id, false, Some(t)));
        }
    }
    let request = Call {
        server: server.clone(),
        head: &head,
        access: &access,
        ticket: ticket.clone(),
    };
    match (
        dispatch(gw, &rt, request, headers, message, holder).await,
        ticket,
    ) {
        (Ok(answer), _) => Ok(answer),
        // A request refused by a transport rule is audited like any other refusal.
        (Err(e), Some(t)) => Ok(Refusal::from(e).answer(&server.name, id, false, Some(&t))),
        (Err(e), None) => Err(e.with_id(id)),
    }
}

async fn dispatch(
    gw: Arc<Gateway>,
    rt: &Runtime,
    request: Call<'_>,
    headers: HeaderMap,
    message: Message,
    holder: Holder,
) -> Result<Response, HttpError> {
    let header_version = rules::version_header(&headers)?;
    let stateless = header_version.is_some_and(ProtocolVersion::is_stateless);
    let limits = &rt.config.limits;
    let is_request = message.kind == MessageKind::Request;
    let access = request.access;
    if request.head.method == Method::Initialize && is_request && !stateless {
        let r = initialize(&gw, &request.server, message, access, &holder).await;
        if r.is_ok() {
            opened(request.ticket.as_deref());
        }
        return r;
    }
    if stateless {
        // Every request may become a stream (a listen stream, an SSE answer); answers and
        // notifications take no slot.
        let permit = if is_request {
            Some(gw.streams.acquire(None, &holder, limits)?)
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
            request,
            &headers,
            message,
            lot,
            limits.subscriptions_per_listen,
        )
        .await?;
        return Ok(match permit {
            Some(p) => hold(resp, p),
            None => resp,
        });
    }
    if header_version.is_none()
        && request.head.meta.version() == Some(ProtocolVersion::V2026_07_28.as_str())
    {
        return Err(HttpError::HeaderMismatch(
            "the body declares protocol 2026-07-28 but the MCP-Protocol-Version header is missing"
                .into(),
        ));
    }
    let session = named_session::find(&gw, &request.server, &headers, access.caller.as_ref())?;
    // Answers to the server's questions never wait for a slot: the calls holding the slots
    // may be the ones waiting for them.
    let permit = if is_request {
        Some(gw.streams.acquire(Some(&session.id), &holder, limits)?)
    } else {
        None
    };
    // A supported version other than the negotiated one is accepted: clients such as the
    // TypeScript SDK send their own default on some requests, and the spec only requires
    // rejecting unsupported versions.
    if request.head.method == Method::NotificationsInitialized
        && message.kind == MessageKind::Notification
    {
        let limits = super::standalone::HoldLimits::of(limits);
        session
            .start_standalone(&access.context, &request.server, limits)
            .await;
    }
    let resp = in_session(request, session, message).await;
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

async fn in_session(request: Call<'_>, session: Arc<Session>, message: Message) -> Response {
    let id = message.id.clone();
    let (server, access) = (&request.server, request.access);
    match message.kind {
        MessageKind::Notification => {
            notification(server, &session, &access.context, message).await;
            accepted()
        }
        // An answer is delivered or refused, never accepted and dropped.
        MessageKind::Response | MessageKind::Error => {
            match super::answers::deliver(server, &access.context, &session, message).await {
                Ok(()) => accepted(),
                Err(e) => e.with_id(id).into_response(),
            }
        }
        MessageKind::Request => call::serve(request, ClientMode::Session(session), message).await,
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
