//! The stateless 2026-07-28 protocol: header/body agreement, `server/discover`, and upstream
//! sessions shared on the clients' behalf.

use super::access::Access;
use super::error::{HttpError, json};
use super::input_required::{ParkingLot, Retry};
use super::listen;
use super::post;
use super::relay::Relay;
use super::rules::header_str;
use crate::audit::Ticket;
use crate::federation::{Member, SessionSource, VirtualServer};
use crate::protocol::jsonrpc::to_raw;
use crate::protocol::stateless::{
    CAPABILITIES_META_KEY, VERSION_META_KEY, declared_version, name_header_value, name_param,
};
use crate::protocol::{Message, MessageKind, ProtocolVersion, RequestId};
use crate::upstream::{UpstreamError, UpstreamSession};
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use http::{HeaderMap, StatusCode};
use serde_json::Value;
use std::sync::Arc;

/// Upstream sessions for stateless clients: one per upstream, held by the gateway (bridging to
/// session-based upstreams), or none at all for stateless upstreams.
pub struct SharedSessions;

impl SessionSource for SharedSessions {
    fn session<'a>(
        &'a self,
        member: &'a Member,
    ) -> BoxFuture<'a, Result<UpstreamSession, UpstreamError>> {
        Box::pin(async move { member.client.shared_session().await.map(|(s, _)| s) })
    }

    fn listen<'a>(
        &'a self,
        member: &'a Member,
    ) -> BoxFuture<
        'a,
        Result<Option<tokio::sync::mpsc::Receiver<crate::upstream::Frame>>, UpstreamError>,
    > {
        Box::pin(async move { member.client.listen_shared().await })
    }

    fn expired(&self, member: &Member, session: &UpstreamSession) {
        member.client.drop_shared_session(session);
    }
}

/// The requests a 2026-07-28 client may send; removed ones (`initialize`, `ping`,
/// `logging/setLevel`, `resources/subscribe`…) answer 404 with -32601.
const METHODS: [&str; 13] = [
    "tasks/get",
    "tasks/update",
    "tasks/cancel",
    "server/discover",
    "subscriptions/listen",
    "tools/list",
    "tools/call",
    "prompts/list",
    "prompts/get",
    "resources/list",
    "resources/read",
    "resources/templates/list",
    "completion/complete",
];

/// Every 2026-07-28 request declares its version and the client's capabilities in `_meta`.
fn check_meta(message: &Message) -> Result<(), HttpError> {
    #[derive(serde::Deserialize)]
    struct Params {
        #[serde(rename = "_meta")]
        meta: Option<serde_json::Map<String, Value>>,
    }
    let params: Params = message
        .params_as()
        .map_err(|_| HttpError::InvalidMeta("params must be an object".into()))?;
    let meta = params.meta.ok_or_else(|| {
        HttpError::InvalidMeta("params._meta is required in protocol 2026-07-28".into())
    })?;
    for key in [VERSION_META_KEY, CAPABILITIES_META_KEY] {
        if !meta.contains_key(key) {
            return Err(HttpError::InvalidMeta(format!(
                "params._meta[{key:?}] is required"
            )));
        }
    }
    if !meta[CAPABILITIES_META_KEY].is_object() {
        return Err(HttpError::InvalidMeta(format!(
            "params._meta[{CAPABILITIES_META_KEY:?}] must be an object"
        )));
    }
    Ok(())
}

/// Checks that the routing headers agree with the body (2026-07-28 transport rules).
pub fn check_headers(headers: &HeaderMap, message: &Message) -> Result<(), HttpError> {
    if let Some(v) = declared_version(message)
        && v != ProtocolVersion::V2026_07_28.as_str()
    {
        return Err(HttpError::HeaderMismatch(format!(
            "MCP-Protocol-Version header is 2026-07-28 but _meta declares {v:?}"
        )));
    }
    if matches!(
        message.kind,
        MessageKind::Request | MessageKind::Notification
    ) {
        let method = message.method();
        match header_str(headers, "mcp-method") {
            None => {
                return Err(HttpError::HeaderMismatch(format!(
                    "Mcp-Method header is required (expected {method:?})"
                )));
            }
            Some(h) if h != method => {
                return Err(HttpError::HeaderMismatch(format!(
                    "Mcp-Method header {h:?} does not match the body's method {method:?}"
                )));
            }
            Some(_) => {}
        }
        if let Some(key) = name_param(method) {
            let body = name_header_value(message);
            match (header_str(headers, "mcp-name"), body) {
                (None, _) => {
                    return Err(HttpError::HeaderMismatch(format!(
                        "Mcp-Name header is required for {method}"
                    )));
                }
                (Some(h), Some(b)) if h == b => {}
                (Some(h), b) => {
                    return Err(HttpError::HeaderMismatch(format!(
                        "Mcp-Name header {h:?} does not match params.{key} {:?}",
                        b.unwrap_or_default()
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Serves one stateless request; `max_subscriptions` is `limits.subscriptions_per_listen`.
pub async fn handle(
    server: Arc<VirtualServer>,
    headers: &HeaderMap,
    message: Message,
    parked: ParkingLot,
    access: &Access,
    ticket: Option<Arc<Ticket>>,
    max_subscriptions: usize,
) -> Result<Response, HttpError> {
    check_headers(headers, &message)?;
    match message.kind {
        MessageKind::Request => {}
        MessageKind::Notification => return Ok(StatusCode::ACCEPTED.into_response()),
        // Server→client requests reach these clients as InputRequiredResults, answered by a
        // retry: a response answers nothing, and accepting it would drop it unseen.
        MessageKind::Response | MessageKind::Error => return Err(HttpError::NoPendingRequest),
    }
    check_meta(&message)?;
    if !METHODS.contains(&message.method()) {
        return Err(HttpError::UnknownMethod(format!(
            "{} (not a method of protocol 2026-07-28)",
            message.method()
        )));
    }
    match message.method() {
        "server/discover" => Ok(discover(&server, message.id).await),
        "subscriptions/listen" => {
            listen::subscriptions(server, message, access, &ticket, max_subscriptions).await
        }
        _ => {
            let message = without_consent_state(message);
            if let Some(retry) = Retry::from_request(&message) {
                return resume(server, message, retry, parked, ticket).await;
            }
            Ok(post::request(
                server,
                None,
                &SharedSessions,
                message,
                Some(parked),
                access,
                ticket,
            )
            .await)
        }
    }
}

async fn discover(server: &VirtualServer, id: Option<RequestId>) -> Response {
    let infos = futures_util::future::join_all(server.members.iter().map(|m| async {
        match m.client.shared_session().await {
            Ok((_, info)) => Some(info),
            Err(e) => {
                tracing::warn!(upstream = %m.upstream, error = %e, "upstream unavailable for server/discover");
                None
            }
        }
    }))
    .await;
    let mut result = server.server_description(&infos);
    result["supportedVersions"] = Value::Array(
        ProtocolVersion::ALL
            .iter()
            .map(|v| Value::String(v.as_str().into()))
            .collect(),
    );
    result["resultType"] = Value::String("complete".into());
    let msg = Message::response(id.unwrap_or(RequestId::Number(0)), to_raw(&result));
    json(StatusCode::OK, msg.to_bytes())
}

/// Continues a parked call with the client's answers.
async fn resume(
    server: Arc<VirtualServer>,
    message: Message,
    retry: Retry,
    parked: ParkingLot,
    ticket: Option<Arc<Ticket>>,
) -> Result<Response, HttpError> {
    let Some(call) = parked.calls.resume(&retry.state, parked.owner.as_deref()) else {
        return Err(HttpError::InvalidMeta(
            "requestState is unknown or expired; send the request again without it".into(),
        ));
    };
    // The answer goes to the retry; say so before the upstream can answer.
    call.stream.answer_as(message.id.clone());
    for (key, route) in &call.routes {
        let answer = retry.answer(key, &route.id);
        if let Err(e) = server.members[call.member]
            .client
            .respond(route, answer)
            .await
        {
            tracing::warn!(upstream = %route.upstream, error = %e, "could not deliver an input response");
        }
    }
    let method = message.method().to_owned();
    let relay = Relay {
        server: server.clone(),
        member: call.member,
        session: None,
        request_id: message.id.clone(),
        cancel: Default::default(),
        cacheable: crate::protocol::stateless::is_cacheable(&method),
        log_floor: crate::protocol::stateless::requested_log_rank(&message),
        client_capabilities: crate::protocol::stateless::declared_capabilities(&message),
        parked: Some(parked),
        ticket,
        tasks: None,
    };
    Ok(relay.respond(call.stream).await)
}

/// A retry after a consent (its `requestState` is the consent's) is the original call again:
/// the user has connected, or will be asked again. The consent's state and answers are the
/// gateway's, not the upstream's, so they are taken out.
fn without_consent_state(mut message: Message) -> Message {
    let Some(params) = message.params.as_ref() else {
        return message;
    };
    if !params.get().contains(super::error::CONSENT_STATE_PREFIX) {
        return message;
    }
    let Ok(mut map) = serde_json::from_str::<serde_json::Map<String, Value>>(params.get()) else {
        return message;
    };
    let is_consent = map
        .get("requestState")
        .and_then(Value::as_str)
        .is_some_and(|s| s.starts_with(super::error::CONSENT_STATE_PREFIX));
    if is_consent {
        map.remove("requestState");
        map.remove("inputResponses");
        message.params = Some(crate::protocol::jsonrpc::to_raw(&Value::Object(map)));
    }
    message
}
