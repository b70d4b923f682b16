//! JSON-RPC 2.0 envelopes. Only the envelope is parsed; `params`, `result` and `error` stay raw
//! JSON so that payloads pass through the gateway without being rebuilt.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::fmt;

/// JSON-RPC and MCP error codes used by the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode(pub i64);

impl ErrorCode {
    /// The body is not JSON.
    pub const PARSE_ERROR: ErrorCode = ErrorCode(-32700);
    /// The JSON is not a valid JSON-RPC message (or a batch, which MCP no longer allows).
    pub const INVALID_REQUEST: ErrorCode = ErrorCode(-32600);
    /// The method does not exist or is not available.
    pub const METHOD_NOT_FOUND: ErrorCode = ErrorCode(-32601);
    /// The params are invalid (e.g. unknown tool).
    pub const INVALID_PARAMS: ErrorCode = ErrorCode(-32602);
    /// The gateway failed internally.
    pub const INTERNAL_ERROR: ErrorCode = ErrorCode(-32603);
    /// The upstream is unreachable, crashed or closed the connection.
    pub const UPSTREAM_UNAVAILABLE: ErrorCode = ErrorCode(-32000);
    /// The upstream did not answer in time.
    pub const REQUEST_TIMEOUT: ErrorCode = ErrorCode(-32001);
    /// MCP: the resource does not exist.
    pub const RESOURCE_NOT_FOUND: ErrorCode = ErrorCode(-32002);
    /// Session-level transport errors (missing, unknown or ended session; bad headers).
    pub const BAD_SESSION: ErrorCode = ErrorCode(-32003);
    /// MCP 2026-07-28: an HTTP header disagrees with the body.
    pub const HEADER_MISMATCH: ErrorCode = ErrorCode(-32020);
    /// MCP 2026-07-28: the requested protocol version is not supported.
    pub const UNSUPPORTED_VERSION: ErrorCode = ErrorCode(-32022);
    /// 2026-07-28 `MissingRequiredClientCapabilityError`.
    pub const MISSING_CLIENT_CAPABILITY: ErrorCode = ErrorCode(-32021);
    /// The request carries no acceptable credential (HTTP 401).
    pub const UNAUTHENTICATED: ErrorCode = ErrorCode(-32004);
    /// The credential lacks a scope the request needs (HTTP 403).
    pub const INSUFFICIENT_SCOPE: ErrorCode = ErrorCode(-32005);
    /// A policy rule refused this call (of a function the caller may see).
    pub const POLICY_DENIED: ErrorCode = ErrorCode(-32006);
    /// The gateway could not obtain the upstream's own credential (token exchange refused…).
    pub const UPSTREAM_CREDENTIALS: ErrorCode = ErrorCode(-32007);
    /// MCP 2025-11-25: the user must complete a flow at a URL first.
    pub const URL_ELICITATION_REQUIRED: ErrorCode = ErrorCode(-32042);
    /// A per-principal, per-session or per-address limit of the gateway was reached (HTTP 429).
    pub const LIMIT_EXCEEDED: ErrorCode = ErrorCode(-32008);
}

/// A JSON-RPC request id: a string or an integer (MCP forbids null).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RequestId {
    /// A numeric id.
    Number(i64),
    /// A string id.
    String(String),
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestId::Number(n) => write!(f, "{n}"),
            RequestId::String(s) => write!(f, "{s:?}"),
        }
    }
}

/// What a message is, decided by which envelope members it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// Has `method` and `id`.
    Request,
    /// Has `method`, no `id`.
    Notification,
    /// Has `id` and `result`.
    Response,
    /// Has `id` (possibly null) and `error`.
    Error,
}

/// Why a body is not an acceptable JSON-RPC message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// Not JSON at all.
    #[error("the body is not valid JSON: {0}")]
    Parse(String),
    /// A JSON array: batching was removed from MCP in 2025-06-18.
    #[error("JSON-RPC batches are not supported; send one message per request")]
    Batch,
    /// JSON, but not a JSON-RPC 2.0 message.
    #[error("invalid JSON-RPC message: {0}")]
    Invalid(&'static str),
}

impl EnvelopeError {
    /// The JSON-RPC code this failure maps to.
    pub fn code(&self) -> ErrorCode {
        match self {
            EnvelopeError::Parse(_) => ErrorCode::PARSE_ERROR,
            _ => ErrorCode::INVALID_REQUEST,
        }
    }
}

#[derive(Deserialize)]
struct Wire {
    jsonrpc: Option<Box<RawValue>>,
    #[serde(default, deserialize_with = "present")]
    id: Option<Box<RawValue>>,
    method: Option<Box<RawValue>>,
    params: Option<Box<RawValue>>,
    result: Option<Box<RawValue>>,
    error: Option<Box<RawValue>>,
}

/// Distinguishes `"id": null` (present) from a missing id.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

/// One JSON-RPC message with its payload kept as raw JSON.
#[derive(Debug, Clone)]
pub struct Message {
    /// Request, notification, response or error.
    pub kind: MessageKind,
    /// The id (absent for notifications; `None` for an error answering an unparseable request).
    pub id: Option<RequestId>,
    /// The method of a request or notification.
    pub method: Option<String>,
    /// Raw `params`.
    pub params: Option<Box<RawValue>>,
    /// Raw `result` of a response.
    pub result: Option<Box<RawValue>>,
    /// Raw `error` object of an error response.
    pub error: Option<Box<RawValue>>,
}

impl Message {
    /// Parses and validates one message. Payload members are not parsed beyond their extent.
    pub fn parse(body: &[u8]) -> Result<Message, EnvelopeError> {
        let first = body.iter().find(|b| !b.is_ascii_whitespace());
        match first {
            None => return Err(EnvelopeError::Parse("the body is empty".into())),
            Some(b'[') => {
                // Tell a batch apart from garbage so the error says the right thing.
                return match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                    Ok(_) => Err(EnvelopeError::Batch),
                    Err(e) => Err(EnvelopeError::Parse(e.to_string())),
                };
            }
            Some(b'{') => {}
            Some(_) => {
                return match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                    Ok(_) => Err(EnvelopeError::Invalid("a message must be a JSON object")),
                    Err(e) => Err(EnvelopeError::Parse(e.to_string())),
                };
            }
        }
        let wire: Wire = serde_json::from_slice(body).map_err(|e| {
            if e.is_syntax() || e.is_eof() {
                EnvelopeError::Parse(e.to_string())
            } else {
                EnvelopeError::Invalid("a member has the wrong type")
            }
        })?;
        Self::from_wire(wire)
    }

    fn from_wire(w: Wire) -> Result<Message, EnvelopeError> {
        match w.jsonrpc.as_deref().map(RawValue::get) {
            Some("\"2.0\"") => {}
            Some(_) => return Err(EnvelopeError::Invalid("\"jsonrpc\" must be \"2.0\"")),
            None => return Err(EnvelopeError::Invalid("\"jsonrpc\": \"2.0\" is missing")),
        }
        let id = match &w.id {
            None => None,
            Some(raw) if raw.get() == "null" => None,
            Some(raw) => Some(parse_id(raw)?),
        };
        let id_is_null = matches!(&w.id, Some(raw) if raw.get() == "null");
        if let Some(params) = &w.params {
            let p = params.get().as_bytes();
            if !matches!(p.first(), Some(b'{') | Some(b'[')) {
                return Err(EnvelopeError::Invalid("\"params\" must be an object"));
            }
        }
        if let Some(method) = w.method {
            let method: String = serde_json::from_str(method.get())
                .map_err(|_| EnvelopeError::Invalid("\"method\" must be a string"))?;
            if method.is_empty() {
                return Err(EnvelopeError::Invalid("\"method\" must not be empty"));
            }
            if w.result.is_some() || w.error.is_some() {
                return Err(EnvelopeError::Invalid(
                    "a message cannot have both \"method\" and \"result\"/\"error\"",
                ));
            }
            if id_is_null {
                return Err(EnvelopeError::Invalid("a request id must not be null"));
            }
            let kind = if id.is_some() {
                MessageKind::Request
            } else {
                MessageKind::Notification
            };
            return Ok(Message {
                kind,
                id,
                method: Some(method),
                params: w.params,
                result: None,
                error: None,
            });
        }
        match (w.result, w.error) {
            (Some(result), None) => {
                if id.is_none() {
                    return Err(EnvelopeError::Invalid("a response needs a non-null \"id\""));
                }
                Ok(Message {
                    kind: MessageKind::Response,
                    id,
                    method: None,
                    params: None,
                    result: Some(result),
                    error: None,
                })
            }
            (None, Some(error)) => {
                if w.id.is_none() {
                    return Err(EnvelopeError::Invalid("an error response needs an \"id\""));
                }
                if !error.get().starts_with('{') {
                    return Err(EnvelopeError::Invalid("\"error\" must be an object"));
                }
                Ok(Message {
                    kind: MessageKind::Error,
                    id,
                    method: None,
                    params: None,
                    result: None,
                    error: Some(error),
                })
            }
            (Some(_), Some(_)) => Err(EnvelopeError::Invalid(
                "a response cannot have both \"result\" and \"error\"",
            )),
            (None, None) => Err(EnvelopeError::Invalid(
                "a message needs \"method\" (request/notification) or \"result\"/\"error\" (response)",
            )),
        }
    }

    /// The method, or "" for responses.
    pub fn method(&self) -> &str {
        self.method.as_deref().unwrap_or("")
    }

    /// Deserializes `params` into a typed view (missing params read as `{}`).
    pub fn params_as<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        match &self.params {
            Some(p) => serde_json::from_str(p.get()),
            None => serde_json::from_str("{}"),
        }
    }

    /// Serializes the message back to bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Out<'a> {
            jsonrpc: &'static str,
            #[serde(skip_serializing_if = "Option::is_none")]
            id: Option<&'a RequestId>,
            #[serde(skip_serializing_if = "Option::is_none")]
            method: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            params: Option<&'a RawValue>,
            #[serde(skip_serializing_if = "Option::is_none")]
            result: Option<&'a RawValue>,
            #[serde(skip_serializing_if = "Option::is_none")]
            error: Option<&'a RawValue>,
        }
        let null_id_error = self.kind == MessageKind::Error && self.id.is_none();
        let out = Out {
            jsonrpc: "2.0",
            id: self.id.as_ref(),
            method: self.method.as_deref(),
            params: self.params.as_deref(),
            result: self.result.as_deref(),
            error: self.error.as_deref(),
        };
        let mut bytes = serde_json::to_vec(&out).expect("serializing raw JSON cannot fail");
        if null_id_error {
            // JSON-RPC requires `"id": null` on errors about unidentifiable requests.
            bytes.splice(1..1, br#""id":null,"#.iter().copied());
        }
        bytes
    }

    /// Builds a request.
    pub fn request(id: RequestId, method: &str, params: Option<Box<RawValue>>) -> Message {
        Message {
            kind: MessageKind::Request,
            id: Some(id),
            method: Some(method.to_owned()),
            params,
            result: None,
            error: None,
        }
    }

    /// Builds a notification.
    pub fn notification(method: &str, params: Option<Box<RawValue>>) -> Message {
        Message {
            kind: MessageKind::Notification,
            id: None,
            method: Some(method.to_owned()),
            params,
            result: None,
            error: None,
        }
    }

    /// Builds a success response.
    pub fn response(id: RequestId, result: Box<RawValue>) -> Message {
        Message {
            kind: MessageKind::Response,
            id: Some(id),
            method: None,
            params: None,
            result: Some(result),
            error: None,
        }
    }

    /// Builds an error response; `id` is `None` when the request could not be identified.
    pub fn error_response(
        id: Option<RequestId>,
        code: ErrorCode,
        message: &str,
        data: Option<serde_json::Value>,
    ) -> Message {
        let mut error = serde_json::json!({ "code": code.0, "message": message });
        if let Some(data) = data {
            error["data"] = data;
        }
        Message {
            kind: MessageKind::Error,
            id,
            method: None,
            params: None,
            result: None,
            error: Some(to_raw(&error)),
        }
    }

    /// The `code` of an error response.
    pub fn error_code(&self) -> Option<i64> {
        #[derive(Deserialize)]
        struct E {
            code: i64,
        }
        let e: E = serde_json::from_str(self.error.as_ref()?.get()).ok()?;
        Some(e.code)
    }
}

fn parse_id(raw: &RawValue) -> Result<RequestId, EnvelopeError> {
    let s = raw.get();
    if s.starts_with('"') {
        serde_json::from_str::<String>(s)
            .map(RequestId::String)
            .map_err(|_| EnvelopeError::Invalid("\"id\" must be a string or an integer"))
    } else {
        s.parse::<i64>()
            .map(RequestId::Number)
            .map_err(|_| EnvelopeError::Invalid("\"id\" must be a string or an integer"))
    }
}

/// Serializes a value into a raw JSON box.
pub fn to_raw<T: Serialize + ?Sized>(value: &T) -> Box<RawValue> {
    serde_json::value::to_raw_value(value).expect("serializing to JSON cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(body: &str) -> Result<MessageKind, EnvelopeError> {
        Message::parse(body.as_bytes()).map(|m| m.kind)
    }

    #[test]
    fn classifies_the_four_shapes() {
        assert_eq!(
            kind(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#),
            Ok(MessageKind::Request)
        );
        assert_eq!(
            kind(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
            Ok(MessageKind::Notification)
        );
        assert_eq!(
            kind(r#"{"jsonrpc":"2.0","id":"a","result":{}}"#),
            Ok(MessageKind::Response)
        );
        assert_eq!(
            kind(r#"{"jsonrpc":"2.0","id":null,"error":{"code":1,"message":"x"}}"#),
            Ok(MessageKind::Error)
        );
    }

    #[test]
    fn rejects_bad_shapes_with_the_right_code() {
        let cases = [
            ("", ErrorCode::PARSE_ERROR),
            ("{", ErrorCode::PARSE_ERROR),
            ("[1,", ErrorCode::PARSE_ERROR),
            ("[]", ErrorCode::INVALID_REQUEST),
            ("42", ErrorCode::INVALID_REQUEST),
            (r#"{"id":1,"method":"ping"}"#, ErrorCode::INVALID_REQUEST),
            (
                r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#,
                ErrorCode::INVALID_REQUEST,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#,
                ErrorCode::INVALID_REQUEST,
            ),
            (
                r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#,
                ErrorCode::INVALID_REQUEST,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":7}"#,
                ErrorCode::INVALID_REQUEST,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"x","params":3}"#,
                ErrorCode::INVALID_REQUEST,
            ),
            (r#"{"jsonrpc":"2.0","id":1}"#, ErrorCode::INVALID_REQUEST),
            (
                r#"{"jsonrpc":"2.0","id":1,"result":{},"error":{}}"#,
                ErrorCode::INVALID_REQUEST,
            ),
            (
                r#"{"jsonrpc":"2.0","result":{}}"#,
                ErrorCode::INVALID_REQUEST,
            ),
        ];
        for (body, code) in cases {
            let err = Message::parse(body.as_bytes()).expect_err(body);
            assert_eq!(err.code(), code, "{body}: {err}");
        }
    }

    #[test]
    fn keeps_payloads_raw_and_round_trips() {
        let body = r#"{"jsonrpc":"2.0","id":"x","method":"tools/call","params":{"name":"a","arguments":{"k":[1, 2]}}}"#;
        let m = Message::parse(body.as_bytes()).unwrap();
        assert_eq!(
            m.params.as_ref().unwrap().get(),
            r#"{"name":"a","arguments":{"k":[1, 2]}}"#
        );
        let again = Message::parse(&m.to_bytes()).unwrap();
        assert_eq!(again.id, Some(RequestId::String("x".into())));
    }

    #[test]
    fn null_id_errors_keep_the_null() {
        let m = Message::error_response(None, ErrorCode::PARSE_ERROR, "bad", None);
        let v: serde_json::Value = serde_json::from_slice(&m.to_bytes()).unwrap();
        assert!(v.get("id").unwrap().is_null());
        assert_eq!(v["error"]["code"], -32700);
    }
}
