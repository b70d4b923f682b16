//! What the gateway tells an upstream about the client, and what it learns back.

use crate::protocol::ProtocolVersion;
use serde_json::Value;
use serde_json::value::RawValue;

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
    /// The identity the gateway uses for itself (shared sessions, stdio children).
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

/// One upstream session as a downstream session holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSession {
    /// The upstream's `Mcp-Session-Id`, if it issued one.
    pub id: Option<String>,
    /// The version negotiated with the upstream.
    pub version: ProtocolVersion,
}

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
