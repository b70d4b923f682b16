//! What the gateway tells an upstream about the client, and what it learns back.

use super::http::bridge::Bridge;
use crate::protocol::ProtocolVersion;
use serde_json::Value;
use serde_json::value::RawValue;
use std::sync::Arc;

/// The client on whose behalf an upstream session is opened.
#[derive(Debug, Clone)]
pub struct ClientIdentity {
    /// The protocol version the downstream client negotiated.
    pub version: ProtocolVersion,
    /// The client's `clientInfo`.
    pub client_info: Value,
    /// The client's capabilities (sampling, elicitation, roots…), so the upstream may use them.
    pub capabilities: Value,
}

impl ClientIdentity {
    /// The identity the gateway uses for itself on the session wire (catalog listing, stdio
    /// children).
    pub fn gateway() -> Self {
        ClientIdentity {
            version: ProtocolVersion::LATEST_SESSION,
            client_info: serde_json::json!({ "name": "gatehouse", "version": env!("CARGO_PKG_VERSION") }),
            // No roots: the gateway has no workspace of its own, and declaring them makes some
            // servers ask for roots as soon as the session starts.
            capabilities: serde_json::json!({
                "sampling": {},
                "elicitation": { "form": {}, "url": {} }
            }),
        }
    }
}

impl ClientIdentity {
    /// The identity behind the upstream sessions shared by 2026-07-28 clients: it prefers the
    /// stateless wire, and each request there carries its own client's `_meta`. On a
    /// session-only upstream it is [`gateway`](Self::gateway)'s session.
    pub fn gateway_stateless() -> Self {
        ClientIdentity {
            version: ProtocolVersion::V2026_07_28,
            ..ClientIdentity::gateway()
        }
    }
}

/// The part of a client's capabilities an upstream may act on (it may ask for these), in one
/// canonical form: what tells apart the sessions the gateway opens for 2026-07-28 clients.
pub fn askable_capabilities(declared: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for key in ["elicitation", "roots", "sampling"] {
        if let Some(v) = declared.get(key) {
            out.insert(key.to_owned(), v.clone());
        }
    }
    Value::Object(out)
}

/// One upstream session as a downstream session holds it.
#[derive(Debug, Clone)]
pub struct UpstreamSession {
    /// The upstream's `Mcp-Session-Id`, if it issued one.
    pub id: Option<String>,
    /// The version negotiated with the upstream.
    pub version: ProtocolVersion,
    /// Set when a session-based client talks to a stateless-only upstream: what the gateway
    /// declares for it on each request and the state of the bridge (see [`super::bridge`]).
    pub bridge: Option<Arc<Bridge>>,
}

impl UpstreamSession {
    /// A session without a bridge.
    pub fn new(id: Option<String>, version: ProtocolVersion) -> Self {
        UpstreamSession {
            id,
            version,
            bridge: None,
        }
    }
}

// Two handles are the same session when they name the same upstream session and, for a
// bridged one, the same bridge (two clients' bridges never stand for each other).
impl PartialEq for UpstreamSession {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
            && self.version == other.version
            && match (&self.bridge, &other.bridge) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            }
    }
}

impl Eq for UpstreamSession {}

/// What the upstream said about itself when the session was opened.
#[derive(Debug)]
pub struct InitInfo {
    /// Negotiated version.
    pub version: ProtocolVersion,
    /// The upstream's capabilities object.
    pub capabilities: Value,
    /// The upstream's `instructions`, if any.
    pub instructions: Option<String>,
    /// The raw result, kept for diagnostics.
    pub raw: Box<RawValue>,
}

impl InitInfo {
    /// Reads an InitializeResult (or a `server/discover` result).
    pub fn from_result(raw: Box<RawValue>, fallback: ProtocolVersion) -> Result<InitInfo, String> {
        let v: Value = serde_json::from_str(raw.get()).map_err(|e| e.to_string())?;
        let version = match v.get("protocolVersion").and_then(Value::as_str) {
            Some(s) => s
                .parse()
                .map_err(|e: crate::protocol::version::UnknownVersion| e.to_string())?,
            None => fallback,
        };
        Ok(InitInfo {
            version,
            capabilities: v
                .get("capabilities")
                .cloned()
                .unwrap_or(Value::Object(Default::default())),
            instructions: v
                .get("instructions")
                .and_then(Value::as_str)
                .map(str::to_owned),
            raw,
        })
    }
}
