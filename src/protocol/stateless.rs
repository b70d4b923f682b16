//! Rules of the stateless 2026-07-28 revision: routing headers and per-request `_meta`.

use super::jsonrpc::to_raw;
use super::{Message, ProtocolVersion};
use serde::Deserialize;
use serde_json::Value;

/// The `_meta` key that carries the protocol version on every 2026-07-28 request.
pub const VERSION_META_KEY: &str = "io.modelcontextprotocol/protocolVersion";
/// The `_meta` key with the client's capabilities for this request.
pub const CAPABILITIES_META_KEY: &str = "io.modelcontextprotocol/clientCapabilities";
/// The `_meta` key with the log level a request opts in to.
pub const LOG_LEVEL_META_KEY: &str = "io.modelcontextprotocol/logLevel";
/// The `_meta` key naming the listen stream a notification belongs to.
pub const SUBSCRIPTION_META_KEY: &str = "io.modelcontextprotocol/subscriptionId";

/// Methods whose target must be echoed in the `Mcp-Name` header.
pub fn name_param(method: &str) -> Option<&'static str> {
    match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        // The tasks extension routes by task (SEP-2663).
        "tasks/get" | "tasks/update" | "tasks/cancel" => Some("taskId"),
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
        #[serde(rename = "taskId")]
        task_id: Option<String>,
    }
    let t: Target = msg.params_as().ok()?;
    match key {
        "name" => t.name,
        "uri" => t.uri,
        _ => t.task_id,
    }
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
        // The gateway declares no client capabilities upstream: a stateless upstream then has
        // no reason to ask for input mid-request, which a session-based client could not be
        // asked for in that form.
        m.entry(CAPABILITIES_META_KEY)
            .or_insert_with(|| Value::Object(Default::default()));
        m.entry("io.modelcontextprotocol/clientInfo")
            .or_insert_with(
                || serde_json::json!({ "name": "gatehouse", "version": env!("CARGO_PKG_VERSION") }),
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

/// Methods whose 2026-07-28 results are cacheable and must carry `ttlMs` and `cacheScope`.
pub fn is_cacheable(method: &str) -> bool {
    matches!(
        method,
        "tools/list"
            | "prompts/list"
            | "resources/list"
            | "resources/templates/list"
            | "resources/read"
    )
}

/// Completes a result for a 2026-07-28 client: the `resultType` discriminator every result
/// needs and, for cacheable results, the caching hints. Session-based upstreams send neither.
/// The hints say "private, do not reuse": what a caller sees depends on who the caller is.
pub fn with_result_type(
    result: Box<serde_json::value::RawValue>,
    cacheable: bool,
) -> Box<serde_json::value::RawValue> {
    let text = result.get();
    if !text.starts_with('{') {
        return result;
    }
    let keys: std::collections::BTreeMap<String, serde::de::IgnoredAny> =
        match serde_json::from_str(text) {
            Ok(k) => k,
            Err(_) => return result,
        };
    let mut added = String::new();
    if !keys.contains_key("resultType") {
        added.push_str(r#""resultType":"complete","#);
    }
    if cacheable && !keys.contains_key("ttlMs") {
        added.push_str(r#""ttlMs":0,"#);
    }
    if cacheable && !keys.contains_key("cacheScope") {
        added.push_str(r#""cacheScope":"private","#);
    }
    if added.is_empty() {
        return result;
    }
    let rest = text[1..].trim_start();
    let joined = if rest.starts_with('}') {
        format!("{{{}}}", added.trim_end_matches(','))
    } else {
        format!("{{{added}{rest}")
    };
    serde_json::value::RawValue::from_string(joined).unwrap_or(result)
}

#[cfg(test)]
mod result_type_tests {
    use super::*;
    use serde_json::value::RawValue;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    #[test]
    fn adds_the_discriminator_once() {
        assert_eq!(
            with_result_type(raw("{}"), false).get(),
            r#"{"resultType":"complete"}"#
        );
        assert_eq!(
            with_result_type(raw(r#"{ "a":1}"#), false).get(),
            r#"{"resultType":"complete","a":1}"#
        );
        let kept = r#"{"resultType":"input_required","x":{}}"#;
        assert_eq!(with_result_type(raw(kept), false).get(), kept);
        let nested = r#"{"content":[{"resultType":"x"}]}"#;
        assert!(
            with_result_type(raw(nested), false)
                .get()
                .starts_with(r#"{"resultType":"complete","#)
        );
    }

    #[test]
    fn cacheable_results_get_caching_hints_unless_present() {
        let v: serde_json::Value =
            serde_json::from_str(with_result_type(raw(r#"{"tools":[]}"#), true).get()).unwrap();
        assert_eq!(v["ttlMs"], 0);
        assert_eq!(v["cacheScope"], "private");
        let own = r#"{"resultType":"complete","ttlMs":5,"cacheScope":"public","tools":[]}"#;
        assert_eq!(with_result_type(raw(own), true).get(), own);
    }
}

/// Severity rank of an MCP log level (debug = 0 … emergency = 7).
pub fn log_rank(level: &str) -> Option<u8> {
    const LEVELS: [&str; 8] = [
        "debug",
        "info",
        "notice",
        "warning",
        "error",
        "critical",
        "alert",
        "emergency",
    ];
    LEVELS.iter().position(|l| *l == level).map(|p| p as u8)
}

/// The lowest log rank a 2026-07-28 request opted in to; `None` means it wants no log messages.
pub fn requested_log_rank(msg: &Message) -> Option<u8> {
    let params: Value = msg.params_as().ok()?;
    log_rank(params.get("_meta")?.get(LOG_LEVEL_META_KEY)?.as_str()?)
}

/// Whether a `notifications/message` may go to a client whose floor is `floor`.
pub fn log_allowed(notification: &Message, floor: Option<u8>) -> bool {
    let Some(floor) = floor else { return false };
    let level = notification
        .params_as::<Value>()
        .ok()
        .and_then(|p| p.get("level").and_then(Value::as_str).and_then(log_rank));
    level.is_none_or(|l| l >= floor)
}

/// The client capabilities a 2026-07-28 request declares in `_meta` (`Null` when absent).
pub fn declared_capabilities(msg: &Message) -> Value {
    msg.params_as::<Value>()
        .ok()
        .and_then(|p| p.get("_meta")?.get(CAPABILITIES_META_KEY).cloned())
        .unwrap_or(Value::Null)
}
