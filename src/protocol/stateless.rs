//! Rules of the stateless 2026-07-28 revision: routing headers and per-request `_meta`.

use super::jsonrpc::to_raw;
use super::{Message, ProtocolVersion};
use serde::Deserialize;
use serde_json::Value;

/// The `_meta` key that carries the protocol version on every 2026-07-28 request.
pub const VERSION_META_KEY: &str = "io.modelcontextprotocol/protocolVersion";

/// Methods whose target must be echoed in the `Mcp-Name` header.
pub fn name_param(method: &str) -> Option<&'static str> {
    match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        _ => None,
    }
}

/// The value the `Mcp-Name` header must carry for this message, if any.
pub fn name_header_value(msg: &Message) -> Option<String> {
    let key = name_param(msg.method())?;
    #[derive(Deserialize)]
    struct Target {
        name: Option<String>,
        uri: Option<String>,
    }
    let t: Target = msg.params_as().ok()?;
    if key == "name" { t.name } else { t.uri }
}

/// The protocol version a message declares in `params._meta`, if any.
pub fn declared_version(msg: &Message) -> Option<String> {
    #[derive(Deserialize)]
    struct Params {
        #[serde(rename = "_meta")]
        meta: Option<Meta>,
    }
    #[derive(Deserialize)]
    struct Meta {
        #[serde(rename = "io.modelcontextprotocol/protocolVersion")]
        version: Option<String>,
    }
    let p: Params = msg.params_as().ok()?;
    p.meta?.version
}

/// A copy of `msg` whose params carry the 2026-07-28 version in `_meta`.
pub fn with_stateless_meta(msg: &Message) -> Message {
    if msg.kind != super::MessageKind::Request && msg.kind != super::MessageKind::Notification {
        return msg.clone();
    }
    let mut params: serde_json::Map<String, Value> = msg
        .params
        .as_ref()
        .and_then(|p| serde_json::from_str(p.get()).ok())
        .unwrap_or_default();
    let meta = params
        .entry("_meta")
        .or_insert_with(|| Value::Object(Default::default()));
    if let Value::Object(m) = meta {
        m.insert(
            VERSION_META_KEY.into(),
            Value::String(ProtocolVersion::V2026_07_28.as_str().into()),
        );
    }
    let mut out = msg.clone();
    out.params = Some(to_raw(&params));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_the_version_meta_and_name() {
        let m = Message::parse(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}"#,
        )
        .unwrap();
        assert_eq!(name_header_value(&m).as_deref(), Some("echo"));
        assert_eq!(declared_version(&m), None);
        let with = with_stateless_meta(&m);
        assert_eq!(declared_version(&with).as_deref(), Some("2026-07-28"));
        assert_eq!(name_header_value(&with).as_deref(), Some("echo"));
    }
}
