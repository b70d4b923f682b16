//! The stateless 2026-07-28 protocol: header/body agreement, `server/discover`, and upstream
//! sessions shared on the clients' behalf.

use super::call::{self, Call, ClientMode};
use super::error::HttpError;
use super::input_required::{ParkingLot, Retry};
use super::listen;
use super::relay::Relay;
use super::reply::answered;
use super::rules::header_str;
use super::vet::Vet;
use crate::context::CallContext;
use crate::federation::{Member, SessionSource, VirtualServer};
use crate::protocol::head::Meta;
use crate::protocol::headers::{MCP_METHOD, MCP_NAME};
use crate::protocol::jsonrpc::to_raw;
use crate::protocol::param_headers;
use crate::protocol::stateless::{
    CAPABILITIES_META_KEY, CacheHints, VERSION_META_KEY, complete_authored,
};
use crate::protocol::{CallHead, Message, MessageKind, Method, ProtocolVersion, RequestId};
use crate::upstream::{UpstreamError, UpstreamSession};
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use http::{HeaderMap, StatusCode};
use serde_json::Value;
use std::sync::Arc;

/// Upstream sessions for stateless clients: held by the gateway (bridging to session-based
/// upstreams; one per set of capabilities the clients declare, so that none is claimed for a
/// client that did not declare it), or none at all for stateless upstreams.
pub struct SharedSessions {
    context: CallContext,
    declared: Option<Value>,
    /// The request's `Mcp-Param-*` headers.
    mirrored: HeaderMap,
}

impl SharedSessions {
    /// The sessions for a request made in `context` that declared these client capabilities.
    pub fn declaring(context: CallContext, capabilities: Value) -> Self {
        SharedSessions {
            context,
            declared: Some(capabilities),
            mirrored: HeaderMap::new(),
        }
    }

    /// The same, for a request that came with these headers (its `Mcp-Param-*` ones are
    /// kept, to be checked against the call's arguments once it is routed).
    pub fn with_headers(mut self, headers: &HeaderMap) -> Self {
        for (name, value) in headers {
            if name.as_str().starts_with(param_headers::HEADER_PREFIX) {
                self.mirrored.append(name.clone(), value.clone());
            }
        }
        self
    }

    /// The gateway's own sessions (listen streams and the subscriptions they need), for a
    /// request made in `context`.
    pub fn gateway(context: CallContext) -> Self {
        SharedSessions {
            context,
            declared: None,
            mirrored: HeaderMap::new(),
        }
    }
}

impl SessionSource for SharedSessions {
    fn context(&self) -> &CallContext {
        &self.context
    }

    fn session<'a>(
        &'a self,
        member: &'a Member,
    ) -> BoxFuture<'a, Result<UpstreamSession, UpstreamError>> {
        Box::pin(async move {
            member
                .client
                .shared_session(&self.context, self.declared.as_ref())
                .await
                .map(|(s, _)| s)
        })
    }

    fn listen<'a>(
        &'a self,
        member: &'a Member,
    ) -> BoxFuture<
        'a,
        Result<Option<tokio::sync::mpsc::Receiver<crate::upstream::Frame>>, UpstreamError>,
    > {
        Box::pin(async move { member.client.listen_shared(&self.context).await })
    }

    fn expired(&self, member: &Member, session: &UpstreamSession) {
        member.client.drop_shared_session(session);
    }

    fn stateless(&self) -> bool {
        true
    }

    fn mirrored_headers(&self) -> Option<&HeaderMap> {
        self.declared.is_some().then_some(&self.mirrored)
    }
}

/// Every 2026-07-28 request declares its version and the client's capabilities in `_meta`.
fn check_meta(head: &CallHead) -> Result<(), HttpError> {
    let meta = match &head.meta {
        Meta::Present(m) => m,
        Meta::Invalid => return Err(HttpError::InvalidMeta("params must be an object".into())),
        Meta::Absent => {
            return Err(HttpError::InvalidMeta(
                "params._meta is required in protocol 2026-07-28".into(),
            ));
        }
    };
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
pub fn check_headers(
    headers: &HeaderMap,
    message: &Message,
    head: &CallHead,
) -> Result<(), HttpError> {
    if let Some(v) = head.meta.version()
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
        match header_str(headers, MCP_METHOD) {
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
        if let Some(key) = head.method.name_header_param() {
            let body = head.name_header.as_deref();
            let sent = header_str(headers, MCP_NAME)
                .map(|h| {
                    param_headers::decode(h)
                        .map_err(|e| HttpError::HeaderMismatch(format!("Mcp-Name: {e}")))
                })
                .transpose()?;
            match (sent, body) {
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
    call: Call<'_>,
    headers: &HeaderMap,
    message: Message,
    parked: ParkingLot,
    max_subscriptions: usize,
) -> Result<Response, HttpError> {
    let head = call.head;
    check_headers(headers, &message, head)?;
    match message.kind {
        MessageKind::Request => {}
        MessageKind::Notification => return Ok(StatusCode::ACCEPTED.into_response()),
        // Server→client requests reach these clients as InputRequiredResults, answered by a
        // retry: a response answers nothing, and accepting it would drop it unseen.
        MessageKind::Response | MessageKind::Error => return Err(HttpError::NoPendingRequest),
    }
    check_meta(head)?;
    // Removed requests (`initialize`, `ping`, `logging/setLevel`, `resources/subscribe`…) and
    // unknown ones answer 404 with -32601.
    if !head.method.allowed_stateless() {
        return Err(HttpError::UnknownMethod(format!(
            "{} (not a method of protocol 2026-07-28)",
            message.method()
        )));
    }
    let access = call.access;
    match head.method {
        Method::ServerDiscover => {
            if let Err(refusal) = access.admit_quota(&call.server, head).await {
                return Ok(refusal.answer(
                    &call.server.name,
                    message.id,
                    true,
                    call.ticket.as_deref(),
                ));
            }
            let answer = discover(&call.server, &access.context, message.id).await;
            Ok(answered(call.ticket.as_deref(), answer))
        }
        Method::SubscriptionsListen => {
            listen::subscriptions(
                call.server,
                message,
                access,
                &call.ticket,
                max_subscriptions,
            )
            .await
        }
        _ => {
            let message = without_consent_state(message);
            if let Some(retry) = Retry::from_request(&message) {
                return resume(call, headers, message, retry, parked).await;
            }
            let sessions =
                SharedSessions::declaring(access.context.clone(), head.meta.capabilities())
                    .with_headers(headers);
            Ok(call::serve(call, ClientMode::Stateless { sessions, parked }, message).await)
        }
    }
}

async fn discover(server: &VirtualServer, ctx: &CallContext, id: Option<RequestId>) -> Message {
    let infos = futures_util::future::join_all(server.members.iter().map(|m| async {
        match m.client.shared_session(ctx, None).await {
            Ok((_, info)) => Some(info),
            Err(e) => {
                tracing::warn!(upstream = %m.upstream, error = %e, "upstream unavailable for server/discover");
                None
            }
        }
    }))
    .await;
    let result = discover_result(server.server_description(&infos), &infos, &server.name);
    Message::response(id.unwrap_or(RequestId::Number(0)), to_raw(&result))
}

/// The `DiscoverResult` for a virtual server described by `description` (the body of its
/// InitializeResult): `serverInfo` moves to `_meta`, and the caching hints are the members'
/// merged. A member that answered `initialize` (or did not answer) gave none, so it makes the
/// result immediately stale and private.
fn discover_result(
    description: Value,
    infos: &[Option<Arc<crate::upstream::InitInfo>>],
    server: &str,
) -> Value {
    let Value::Object(mut result) = description else {
        unreachable!("server_description builds an object")
    };
    result.remove("serverInfo");
    result.insert(
        "supportedVersions".into(),
        ProtocolVersion::ALL
            .iter()
            .map(|v| Value::String(v.as_str().into()))
            .collect(),
    );
    let hints = infos
        .iter()
        .map(|info| match info {
            Some(i) if i.version.is_stateless() => serde_json::from_str(i.raw.get())
                .map(|r| CacheHints::of(&r))
                .unwrap_or(CacheHints::NONE),
            _ => CacheHints::NONE,
        })
        .reduce(CacheHints::merge)
        .unwrap_or(CacheHints::NONE);
    complete_authored(&mut result, Some(hints), server);
    Value::Object(result)
}

/// Continues a parked call with the client's answers.
async fn resume(
    call: Call<'_>,
    headers: &HeaderMap,
    message: Message,
    retry: Retry,
    parked: ParkingLot,
) -> Result<Response, HttpError> {
    let Some(parked_call) = parked.calls.resume(&retry.state, parked.owner.as_deref()) else {
        return Err(HttpError::InvalidMeta(
            "requestState is unknown or expired; send the request again without it".into(),
        ));
    };
    let server = call.server;
    let ctx = &call.access.context;
    // A retry is a request like any other: counted by the quotas.
    let permit = match call.access.admit_quota(&server, call.head).await {
        Ok(p) => p,
        Err(refusal) => {
            return Ok(refusal.answer(&server.name, message.id, true, call.ticket.as_deref()));
        }
    };
    // The retry is a `tools/call` like the first request: its mirrored headers must agree with
    // its arguments too. A retry that fails ends the call it would have resumed.
    let sessions =
        SharedSessions::declaring(ctx.clone(), call.head.meta.capabilities()).with_headers(headers);
    if let Err(refusal) = call::mirrored(
        &server,
        &sessions,
        call.head,
        parked_call.member,
        &message.id,
    )
    .await
    {
        return Ok(refusal.answer(&server.name, message.id, true, call.ticket.as_deref()));
    }
    // The answer goes to the retry; say so before the upstream can answer.
    parked_call.stream.answer_as(message.id.clone());
    for (key, route) in &parked_call.routes {
        let answer = retry.answer(key, &route.id);
        if let Err(e) = server.members[parked_call.member]
            .client
            .respond(ctx, route, answer)
            .await
        {
            tracing::warn!(upstream = %route.upstream, error = %e, "could not deliver an input response");
        }
    }
    // The vet of the first request: its arguments are what the upstream is answering.
    let vet = Vet::of(
        &server,
        call.access,
        call.head,
        parked_call.member,
        &message,
    )
    .map(Arc::new);
    let relay = Relay {
        server: server.clone(),
        member: parked_call.member,
        session: None,
        request_id: message.id.clone(),
        cancel: Default::default(),
        cacheable: call.head.method.cacheable(),
        log_floor: call.head.meta.log_rank(),
        client_capabilities: call.head.meta.capabilities(),
        parked: Some(parked),
        ticket: call.ticket,
        tasks: None,
        context: ctx.clone(),
        permit: permit.shared(),
        vet,
        read_as: None,
    };
    Ok(relay.respond(parked_call.stream).await)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Script, discover as discovered, result, schema_errors, virtual_server};
    use serde_json::json;

    /// A session-based upstream: `server/discover` is unknown to it, `initialize` works.
    fn session_based() -> Script {
        Arc::new(|method, _| match method {
            "initialize" => result(json!({
                "protocolVersion": "2025-11-25",
                "capabilities": { "tools": {}, "resources": { "subscribe": true } },
                "serverInfo": { "name": "old", "version": "1" },
                "instructions": "old-style"
            })),
            _ => (
                400,
                json!({ "jsonrpc": "2.0", "id": null, "error": { "code": -32600, "message": "no session" } }),
            ),
        })
    }

    async fn discover_of(members: Vec<(&str, Script)>) -> Value {
        let server = virtual_server(members).await;
        let answer =
            super::discover(&server, &CallContext::gateway(), Some(RequestId::Number(5))).await;
        let v: Value = serde_json::from_slice(&answer.to_bytes()).unwrap();
        assert_eq!(v["id"], 5);
        v["result"].clone()
    }

    #[tokio::test]
    async fn discover_validates_and_names_the_gateway_in_meta() {
        let r = discover_of(vec![("a", Arc::new(|_: &str, _: &Value| discovered()))]).await;
        assert_eq!(
            schema_errors("DiscoverResult", &r),
            Vec::<String>::new(),
            "{r}"
        );
        assert!(r.get("serverInfo").is_none(), "{r}");
        assert_eq!(
            r["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
            "main"
        );
        // The one member said public for a minute.
        assert_eq!(r["ttlMs"], 60_000);
        assert_eq!(r["cacheScope"], "public");
        assert!(
            r["supportedVersions"]
                .as_array()
                .unwrap()
                .contains(&json!("2026-07-28"))
        );
    }

    #[tokio::test]
    async fn a_session_based_member_makes_discover_stale_and_private() {
        let r = discover_of(vec![
            ("a", Arc::new(|_: &str, _: &Value| discovered())),
            ("b", session_based()),
        ])
        .await;
        assert_eq!(
            schema_errors("DiscoverResult", &r),
            Vec::<String>::new(),
            "{r}"
        );
        assert_eq!(r["ttlMs"], 0);
        assert_eq!(r["cacheScope"], "private");
        assert_eq!(r["capabilities"]["resources"]["subscribe"], true);
    }

    #[test]
    fn the_gateways_own_refusals_validate() {
        let refusals = [
            HttpError::HeaderMismatch("Mcp-Name header is required for tools/call".into()),
            HttpError::InvalidMeta("params._meta is required in protocol 2026-07-28".into()),
            HttpError::UnknownMethod("ping (not a method of protocol 2026-07-28)".into()),
            HttpError::UnsupportedVersion("1999-01-01".into()),
        ];
        for e in refusals {
            let status = e.status();
            let v: Value =
                serde_json::from_slice(&e.rpc_message(Some(RequestId::Number(3))).to_bytes())
                    .unwrap();
            let def = match v["error"]["code"].as_i64() {
                Some(-32020) => "HeaderMismatchError",
                Some(-32022) => "UnsupportedProtocolVersionError",
                _ => "JSONRPCErrorResponse",
            };
            assert_eq!(schema_errors(def, &v), Vec::<String>::new(), "{v}");
            let expected = if v["error"]["code"] == -32601 {
                404
            } else {
                400
            };
            assert_eq!(status.as_u16(), expected, "{v}");
        }
    }
}
