//! The one place where failures become HTTP statuses and JSON-RPC error bodies.

use crate::auth::AuthError;
use crate::federation::FederationError;
use crate::protocol::{ErrorCode, Message, RequestId, version};
use crate::upstream::UpstreamError;
use crate::web::json::json;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

/// A request refused at the HTTP level, before any stream opens.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// `Accept` lacks a media type the endpoint must be able to send.
    #[error("Not Acceptable: the Accept header must include {need}")]
    NotAcceptable {
        /// What must be listed.
        need: &'static str,
    },
    /// `Content-Type` is not JSON.
    #[error("Unsupported Media Type: send the body with Content-Type: application/json")]
    UnsupportedMediaType,
    /// `Origin` is not allowed (DNS-rebinding protection).
    #[error("Forbidden: origin {0:?} is not allowed")]
    ForbiddenOrigin(String),
    /// `Host` is not allowed (DNS-rebinding protection).
    #[error("Forbidden: host {0:?} is not allowed")]
    ForbiddenHost(String),
    /// The body exceeds the configured limit.
    #[error("Payload Too Large: the body exceeds {0} bytes")]
    PayloadTooLarge(usize),
    /// The client took too long to send its body.
    #[error("Request Timeout: the body was not received in time")]
    BodyTimeout,
    /// The body is not an acceptable JSON-RPC message.
    #[error("{message}")]
    BadMessage {
        /// -32700 or -32600.
        code: ErrorCode,
        /// What was wrong.
        message: String,
    },
    /// A session-based request without `Mcp-Session-Id`.
    #[error("Bad Request: Mcp-Session-Id header is required (send initialize first to get one)")]
    SessionRequired,
    /// An unknown or foreign session id.
    #[error("Not Found: the session does not exist; send initialize to start a new one")]
    SessionNotFound,
    /// A session that was ended or outlived its lifetime.
    #[error("Not Found: the session has ended; send initialize to start a new one")]
    SessionEnded,
    /// The method is not allowed on this endpoint for this protocol.
    #[error("Method Not Allowed: {0}")]
    MethodNotAllowed(&'static str),
    /// An unknown `MCP-Protocol-Version`.
    #[error("Bad Request: unsupported MCP-Protocol-Version {0:?} (supported: {supported})", supported = version::supported_list())]
    UnsupportedVersion(String),
    /// A 2026-07-28 header disagrees with the body or is missing.
    #[error("Bad Request: {0}")]
    HeaderMismatch(String),
    /// No virtual server at this path.
    #[error("Not Found: no MCP endpoint at this path")]
    NoSuchEndpoint,
    /// 2026-07-28: `params._meta` lacks a required member.
    #[error("Invalid params: {0}")]
    InvalidMeta(String),
    /// 2026-07-28: a method that does not exist in this protocol (or at all).
    #[error("Method not found: {0}")]
    UnknownMethod(String),
    /// Authentication or authorization failed (401, 403 or 503).
    #[error("{error}")]
    Auth {
        /// Why.
        error: crate::auth::AuthError,
        /// The `WWW-Authenticate` value, when the client can do something about it.
        challenge: Option<String>,
    },
    /// A cap on what one principal, session or client address may hold was reached: 429 with
    /// `Retry-After`. `limit` is the configuration field that sets the cap.
    #[error(
        "Too Many Requests: limit {limit} ({max}) reached; retry after {retry_after_secs}s or release one first"
    )]
    LimitExceeded {
        /// The configuration field of the cap, e.g. `limits.sessions_per_principal`.
        limit: &'static str,
        /// Its value.
        max: usize,
        /// Seconds the client should wait before retrying.
        retry_after_secs: u64,
    },
    /// A quota (`quotas.rules`) was reached (429 with `Retry-After`), or its counters could
    /// not be consulted while `on_outage` is `closed` (503).
    #[error("{0}")]
    Quota(#[from] crate::quota::QuotaError),
    /// One request asks for more than a per-request cap allows (e.g. URIs in one
    /// `subscriptions/listen`): 400, since the same request can never succeed, however long
    /// the client waits. `limit` is the configuration field that sets the cap.
    #[error("Bad Request: {what} ({got}) exceeds limit {limit} ({max}); send fewer per request")]
    RequestOverLimit {
        /// The configuration field of the cap, e.g. `limits.subscriptions_per_listen`.
        limit: &'static str,
        /// Its value.
        max: usize,
        /// What was counted.
        what: &'static str,
        /// How many the request had.
        got: usize,
    },
    /// A client's answer names no server→client request pending in its session (never
    /// relayed, already answered, expired, or relayed in another session; a 2026-07-28 client
    /// is never sent one).
    #[error(
        "Conflict: this answer's id names no pending server request of this client (already answered, expired, or never sent)"
    )]
    NoPendingRequest,
    /// A client's answer to a request that only another replica can deliver (its upstream is a
    /// child process of that replica).
    #[error(
        "Misdirected Request: the request this answers was relayed by another gateway replica, which alone runs upstream {upstream:?}; send the answer there (e.g. use session affinity)"
    )]
    AnswerHeldElsewhere {
        /// The upstream that asked.
        upstream: String,
    },
    /// A client's answer could not be passed to the upstream that asked.
    #[error("Bad Gateway: the answer could not be delivered to upstream {upstream:?}: {reason}")]
    AnswerNotDelivered {
        /// The upstream that asked.
        upstream: String,
        /// Why.
        reason: String,
    },
    /// Any of the above, answering a request whose id is known.
    #[error("{inner}")]
    Identified {
        /// The refusal.
        inner: Box<HttpError>,
        /// The request's id, echoed in the error body.
        id: RequestId,
    },
}

impl HttpError {
    /// The same refusal, echoing the request's id in the body (when it has one).
    pub fn with_id(self, id: Option<RequestId>) -> HttpError {
        match (self, id) {
            (e @ HttpError::Identified { .. }, _) | (e, None) => e,
            (e, Some(id)) => HttpError::Identified {
                inner: Box::new(e),
                id,
            },
        }
    }

    /// The HTTP status this refusal is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            HttpError::Identified { inner, .. } => inner.status(),
            HttpError::Auth { error, .. } => match error {
                AuthError::Missing | AuthError::Invalid(_) => StatusCode::UNAUTHORIZED,
                AuthError::InsufficientScope { .. } => StatusCode::FORBIDDEN,
                AuthError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            },
            HttpError::UnknownMethod(_) => StatusCode::NOT_FOUND,
            HttpError::InvalidMeta(_) => StatusCode::BAD_REQUEST,
            HttpError::NotAcceptable { .. } => StatusCode::NOT_ACCEPTABLE,
            HttpError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            HttpError::ForbiddenOrigin(_) | HttpError::ForbiddenHost(_) => StatusCode::FORBIDDEN,
            HttpError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            HttpError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            HttpError::SessionNotFound | HttpError::SessionEnded | HttpError::NoSuchEndpoint => {
                StatusCode::NOT_FOUND
            }
            HttpError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            HttpError::LimitExceeded { .. } => StatusCode::TOO_MANY_REQUESTS,
            HttpError::Quota(crate::quota::QuotaError::Exceeded { .. }) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            HttpError::Quota(crate::quota::QuotaError::Unavailable(_)) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            HttpError::NoPendingRequest => StatusCode::CONFLICT,
            HttpError::AnswerHeldElsewhere { .. } => StatusCode::MISDIRECTED_REQUEST,
            HttpError::AnswerNotDelivered { .. } => StatusCode::BAD_GATEWAY,
            HttpError::RequestOverLimit { .. }
            | HttpError::BadMessage { .. }
            | HttpError::SessionRequired
            | HttpError::UnsupportedVersion(_)
            | HttpError::HeaderMismatch(_) => StatusCode::BAD_REQUEST,
        }
    }

    fn code(&self) -> ErrorCode {
        match self {
            HttpError::Identified { inner, .. } => inner.code(),
            HttpError::Auth { error, .. } => match error {
                AuthError::Missing | AuthError::Invalid(_) => ErrorCode::UNAUTHENTICATED,
                AuthError::InsufficientScope { .. } => ErrorCode::INSUFFICIENT_SCOPE,
                AuthError::Unavailable(_) => ErrorCode::UPSTREAM_UNAVAILABLE,
            },
            HttpError::UnknownMethod(_) => ErrorCode::METHOD_NOT_FOUND,
            HttpError::InvalidMeta(_) => ErrorCode::INVALID_PARAMS,
            HttpError::UnsupportedVersion(_) => ErrorCode::UNSUPPORTED_VERSION,
            HttpError::BadMessage { code, .. } => *code,
            HttpError::HeaderMismatch(_) => ErrorCode::HEADER_MISMATCH,
            HttpError::LimitExceeded { .. } | HttpError::RequestOverLimit { .. } => {
                ErrorCode::LIMIT_EXCEEDED
            }
            HttpError::Quota(crate::quota::QuotaError::Exceeded { .. }) => {
                ErrorCode::LIMIT_EXCEEDED
            }
            HttpError::Quota(crate::quota::QuotaError::Unavailable(_)) => {
                ErrorCode::UPSTREAM_UNAVAILABLE
            }
            HttpError::NoPendingRequest | HttpError::AnswerHeldElsewhere { .. } => {
                ErrorCode::INVALID_REQUEST
            }
            HttpError::AnswerNotDelivered { .. } => ErrorCode::UPSTREAM_UNAVAILABLE,
            HttpError::PayloadTooLarge(_)
            | HttpError::UnsupportedMediaType
            | HttpError::BodyTimeout => ErrorCode::INVALID_REQUEST,
            _ => ErrorCode::BAD_SESSION,
        }
    }
}

impl HttpError {
    /// The JSON-RPC error body of this refusal, answering `id` (for a refusal that can only
    /// be sent as an event of a stream already open).
    pub fn rpc_message(&self, id: Option<RequestId>) -> Message {
        let (id, bare) = match self {
            HttpError::Identified { inner, id } => (Some(id.clone()), &**inner),
            other => (id, other),
        };
        let data = match bare {
            HttpError::UnsupportedVersion(requested) => Some(serde_json::json!({
                "requested": requested,
                "supported": crate::protocol::ProtocolVersion::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>(),
            })),
            HttpError::Auth {
                error: AuthError::InsufficientScope { required },
                ..
            } => Some(serde_json::json!({ "requiredScopes": required })),
            HttpError::LimitExceeded { limit, max, .. }
            | HttpError::RequestOverLimit { limit, max, .. } => {
                Some(serde_json::json!({ "limit": limit, "max": max }))
            }
            HttpError::Quota(crate::quota::QuotaError::Exceeded {
                rule,
                kind,
                limit,
                retry_after_secs,
                resets_at_ms,
            }) => Some(serde_json::json!({
                "quota": &**rule,
                "kind": kind.as_str(),
                "limit": limit,
                "retryAfterSeconds": retry_after_secs,
                "resetsAt": format!(
                    "{}Z",
                    crate::commands::keys::format_time_ms(*resets_at_ms).replace(' ', "T")
                ),
            })),
            _ => None,
        };
        Message::error_response(id, self.code(), &self.to_string(), data)
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let bare = match &self {
            HttpError::Identified { inner, .. } => &**inner,
            other => other,
        };
        let body = self.rpc_message(None).to_bytes();
        let mut resp = json(self.status(), body);
        let retry_after = match bare {
            HttpError::LimitExceeded {
                retry_after_secs, ..
            }
            | HttpError::Quota(crate::quota::QuotaError::Exceeded {
                retry_after_secs, ..
            }) => Some(*retry_after_secs),
            HttpError::Quota(crate::quota::QuotaError::Unavailable(_)) => Some(1),
            _ => None,
        };
        if let Some(secs) = retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let HttpError::MethodNotAllowed(_) = bare {
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
        }
        if let HttpError::Auth {
            challenge: Some(c), ..
        } = bare
            && let Ok(v) = HeaderValue::from_str(c)
        {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        resp
    }
}

/// The JSON-RPC error answering request `id` after an upstream or routing failure.
pub fn rpc_error(id: Option<RequestId>, e: &FederationError) -> Message {
    Message::error_response(id, e.code(), &e.to_string(), e.data())
}

/// How a JSON-RPC error answering a 2026-07-28 client travels: with that revision's codes
/// (`-32602` for a resource not found, never the retired `-32002`) and the HTTP status the
/// spec gives it. `relayed` is the status an upstream answered its own error with: a 4xx is
/// kept, so the client sees what it would see talking to that upstream directly. Errors about
/// the call itself (an unknown tool, a denied call) stay 200: the spec gives them no status.
pub fn for_stateless_client(mut msg: Message, relayed: Option<u16>) -> (StatusCode, Message) {
    crate::protocol::stateless::with_current_error_code(&mut msg);
    let code = msg.error_code();
    let status = match (relayed, code) {
        (Some(s), _) if (400..500).contains(&s) => {
            StatusCode::from_u16(s).unwrap_or(StatusCode::BAD_REQUEST)
        }
        (Some(_), _) => StatusCode::OK,
        (None, Some(c)) if c == ErrorCode::METHOD_NOT_FOUND.0 => StatusCode::NOT_FOUND,
        (None, Some(c))
            if c == ErrorCode::HEADER_MISMATCH.0
                || c == ErrorCode::MISSING_CLIENT_CAPABILITY.0
                || c == ErrorCode::UNSUPPORTED_VERSION.0 =>
        {
            StatusCode::BAD_REQUEST
        }
        _ => StatusCode::OK,
    };
    (status, msg)
}

/// The JSON-RPC error for an upstream failure mid-call.
pub fn upstream_error(id: Option<RequestId>, e: &UpstreamError) -> Message {
    Message::error_response(id, e.code(), &e.to_string(), e.data())
}

/// Prefix of the `requestState` of a consent request; a retry carrying it is a fresh call.
pub const CONSENT_STATE_PREFIX: &str = "consent.";

/// For a 2026-07-28 client, the consent an upstream needs as an `InputRequiredResult` holding
/// a URL-mode `elicitation/create`; `None` when `e` is not about consent.
pub fn consent_input_required(id: Option<RequestId>, e: &FederationError) -> Option<Message> {
    let FederationError::Upstream(crate::upstream::UpstreamError::ConsentRequired {
        upstream,
        url,
        elicitation_id,
    }) = e
    else {
        return None;
    };
    let result = serde_json::json!({
        "resultType": "input_required",
        "inputRequests": { format!("connect-{upstream}"): {
            "method": crate::protocol::Method::ElicitationCreate.as_str(),
            "params": {
                "mode": "url",
                "url": url,
                "message": format!("Connect your account for {upstream} to continue."),
            }
        }},
        "requestState": format!("{CONSENT_STATE_PREFIX}{elicitation_id}"),
    });
    Some(Message::response(
        id.unwrap_or(RequestId::Number(0)),
        crate::protocol::jsonrpc::to_raw(&result),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(code: ErrorCode) -> Message {
        Message::error_response(Some(RequestId::Number(1)), code, "no", None)
    }

    #[test]
    fn stateless_refusals_travel_with_the_status_the_spec_gives_them() {
        let status = |code, relayed| for_stateless_client(error(code), relayed).0.as_u16();
        assert_eq!(status(ErrorCode::METHOD_NOT_FOUND, None), 404);
        assert_eq!(status(ErrorCode::HEADER_MISMATCH, None), 400);
        assert_eq!(status(ErrorCode::MISSING_CLIENT_CAPABILITY, None), 400);
        assert_eq!(status(ErrorCode::UNSUPPORTED_VERSION, None), 400);
        // About the call itself (an unknown tool, a denial): no status in the spec.
        assert_eq!(status(ErrorCode::INVALID_PARAMS, None), 200);
        assert_eq!(status(ErrorCode::POLICY_DENIED, None), 200);
        // An upstream's own error keeps its 4xx; a 5xx is the gateway's business.
        assert_eq!(status(ErrorCode::INVALID_PARAMS, Some(400)), 400);
        assert_eq!(status(ErrorCode::METHOD_NOT_FOUND, Some(404)), 404);
        assert_eq!(status(ErrorCode::INTERNAL_ERROR, Some(500)), 200);
    }

    #[test]
    fn the_retired_resource_code_becomes_invalid_params() {
        let e = FederationError::Unknown {
            kind: "resource",
            name: "test://gone".into(),
        };
        let (_, m) = for_stateless_client(rpc_error(Some(RequestId::Number(2)), &e), None);
        let v: serde_json::Value = serde_json::from_slice(&m.to_bytes()).unwrap();
        assert_eq!(v["error"]["code"], -32602);
        assert_eq!(v["error"]["data"]["uri"], "test://gone");
        assert_eq!(v["id"], 2);
        // Session clients keep the code of their revision.
        assert_eq!(rpc_error(None, &e).error_code(), Some(-32002));
    }
}
