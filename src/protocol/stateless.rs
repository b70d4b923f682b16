//! Rules of the stateless 2026-07-28 revision: routing headers and per-request `_meta`.

use super::jsonrpc::to_raw;
use super::{Message, ProtocolVersion};
use serde_json::Value;

/// The `_meta` key that carries the protocol version on every 2026-07-28 request.
pub const VERSION_META_KEY: &str = "io.modelcontextprotocol/protocolVersion";
/// The `_meta` key with the client's capabilities for this request.
pub const CAPABILITIES_META_KEY: &str = "io.modelcontextprotocol/clientCapabilities";
/// The `_meta` key with the client's `clientInfo`.
pub const CLIENT_INFO_META_KEY: &str = "io.modelcontextprotocol/clientInfo";
/// The `_meta` key with the log level a request opts in to.
pub const LOG_LEVEL_META_KEY: &str = "io.modelcontextprotocol/logLevel";
/// The `_meta` key naming the listen stream a notification belongs to.
pub const SUBSCRIPTION_META_KEY: &str = "io.modelcontextprotocol/subscriptionId";

/// The value the `Mcp-Name` header must carry for this message, if any.
pub fn name_header_value(msg: &Message) -> Option<String> {
    super::CallHead::of(msg).name_header
}

/// What the gateway declares on the stateless wire for a session-based client it bridges.
#[derive(Debug, Clone, PartialEq)]
pub struct DeclaredClient {
    /// The capabilities the client declared at `initialize`.
    pub capabilities: Value,
    /// Its `clientInfo`.
    pub client_info: Value,
    /// The level it asked for with `logging/setLevel`, if it did.
    pub log_level: Option<String>,
}

/// A copy of `msg` whose params carry the 2026-07-28 `_meta`: the version always; the client's
/// capabilities and clientInfo from `client` when the gateway speaks for a session-based
/// client, otherwise those the request carries (a 2026-07-28 client's own), or none at all
/// for the gateway's own requests (so that the upstream never asks it for input).
pub fn with_stateless_meta(msg: &Message, client: Option<&DeclaredClient>) -> Message {
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
        match client {
            Some(c) => {
                m.insert(CAPABILITIES_META_KEY.into(), c.capabilities.clone());
                m.insert(CLIENT_INFO_META_KEY.into(), c.client_info.clone());
                match &c.log_level {
                    Some(level) => {
                        m.insert(LOG_LEVEL_META_KEY.into(), Value::String(level.clone()))
                    }
                    None => m.remove(LOG_LEVEL_META_KEY),
                };
            }
            None => {
                m.entry(CAPABILITIES_META_KEY)
                    .or_insert_with(|| Value::Object(Default::default()));
                m.entry(CLIENT_INFO_META_KEY).or_insert_with(|| {
                    serde_json::json!({ "name": "gatehouse", "version": env!("CARGO_PKG_VERSION") })
                });
            }
        }
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
        assert_eq!(crate::protocol::CallHead::of(&m).meta.version(), None);
        let with = with_stateless_meta(&m, None);
        assert_eq!(
            crate::protocol::CallHead::of(&with).meta.version(),
            Some("2026-07-28")
        );
        assert_eq!(name_header_value(&with).as_deref(), Some("echo"));
        assert_eq!(
            crate::protocol::CallHead::of(&with).meta.capabilities(),
            serde_json::json!({})
        );
    }

    #[test]
    fn a_bridged_client_declares_its_own_capabilities_and_info() {
        let m = Message::parse(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","_meta":{"io.modelcontextprotocol/logLevel":"debug"}}}"#,
        )
        .unwrap();
        let client = DeclaredClient {
            capabilities: serde_json::json!({"sampling": {}}),
            client_info: serde_json::json!({"name": "ide", "version": "2"}),
            log_level: None,
        };
        let with = with_stateless_meta(&m, Some(&client));
        assert_eq!(
            crate::protocol::CallHead::of(&with).meta.capabilities(),
            serde_json::json!({"sampling": {}})
        );
        let p: Value = with.params_as().unwrap();
        assert_eq!(p["_meta"][CLIENT_INFO_META_KEY]["name"], "ide");
        assert!(p["_meta"].get(LOG_LEVEL_META_KEY).is_none());
        // A 2026-07-28 client's own declaration passes unchanged.
        let own = Message::parse(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/clientCapabilities":{"elicitation":{}}}}}"#,
        )
        .unwrap();
        assert_eq!(
            crate::protocol::CallHead::of(&with_stateless_meta(&own, None))
                .meta
                .capabilities(),
            serde_json::json!({"elicitation": {}})
        );
    }
}

/// The `_meta` key with which a 2026-07-28 result names the server that produced it.
pub const SERVER_INFO_META_KEY: &str = "io.modelcontextprotocol/serverInfo";

/// The caching hints of a 2026-07-28 cacheable result (`ttlMs`, `cacheScope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheHints {
    /// How long the result may be considered fresh, in milliseconds.
    pub ttl_ms: u64,
    /// Whether it may be shared across authorization contexts (`cacheScope: "public"`).
    pub public: bool,
}

impl CacheHints {
    /// What a result without hints allows (a session-based upstream sends none): immediately
    /// stale, and for this caller only, since what a caller sees may depend on who it is.
    pub const NONE: CacheHints = CacheHints {
        ttl_ms: 0,
        public: false,
    };

    /// The hints a result object carries; a missing or negative `ttlMs` counts as 0 (as the
    /// spec tells clients to read it) and anything but `"public"` as private.
    pub fn of(result: &serde_json::Map<String, Value>) -> CacheHints {
        CacheHints {
            ttl_ms: result.get("ttlMs").and_then(Value::as_u64).unwrap_or(0),
            public: result.get("cacheScope").and_then(Value::as_str) == Some("public"),
        }
    }

    /// The hints of a result merged from two: the shorter freshness, and private if either
    /// part is (a shared cache must not keep what one part says is the caller's own).
    pub fn merge(self, other: CacheHints) -> CacheHints {
        CacheHints {
            ttl_ms: self.ttl_ms.min(other.ttl_ms),
            public: self.public && other.public,
        }
    }

    /// The same freshness, for this caller only.
    pub fn private(self) -> CacheHints {
        CacheHints {
            public: false,
            ..self
        }
    }

    /// Writes `ttlMs` and `cacheScope` into a result object.
    pub fn write(self, result: &mut serde_json::Map<String, Value>) {
        result.insert("ttlMs".into(), self.ttl_ms.into());
        let scope = if self.public { "public" } else { "private" };
        result.insert("cacheScope".into(), scope.into());
    }
}

/// A result whose top-level members the gateway completes: a `Map`, or a merged listing that
/// keeps its items as JSON text (`federation::ListResult`).
pub trait ResultFields {
    /// The members other than a listing's items.
    fn fields(&mut self) -> &mut serde_json::Map<String, Value>;
}

impl ResultFields for serde_json::Map<String, Value> {
    fn fields(&mut self) -> &mut serde_json::Map<String, Value> {
        self
    }
}

/// Makes a result the gateway authored (or merged) a complete 2026-07-28 result: the
/// `resultType`, the caching hints when it is cacheable, and `_meta` naming the gateway's
/// virtual server `server` as the server that produced it.
pub fn complete_authored<R: ResultFields + ?Sized>(
    result: &mut R,
    hints: Option<CacheHints>,
    server: &str,
) {
    let result = result.fields();
    result.insert("resultType".into(), "complete".into());
    if let Some(h) = hints {
        h.write(result);
    }
    let meta = result
        .entry("_meta")
        .or_insert_with(|| Value::Object(Default::default()));
    if let Value::Object(m) = meta {
        m.insert(
            SERVER_INFO_META_KEY.into(),
            serde_json::json!({ "name": server, "version": env!("CARGO_PKG_VERSION") }),
        );
    }
}

/// Gives an error answering a 2026-07-28 client that revision's code: a resource not found is
/// `-32602`; the `-32002` earlier revisions used must not be emitted.
pub fn with_current_error_code(msg: &mut Message) {
    if msg.error_code() != Some(super::ErrorCode::RESOURCE_NOT_FOUND.0) {
        return;
    }
    let Some(mut error) = msg
        .error
        .as_ref()
        .and_then(|e| serde_json::from_str::<serde_json::Map<String, Value>>(e.get()).ok())
    else {
        return;
    };
    error.insert("code".into(), super::ErrorCode::INVALID_PARAMS.0.into());
    msg.error = Some(to_raw(&error));
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

    fn hints(v: serde_json::Value) -> CacheHints {
        CacheHints::of(v.as_object().unwrap())
    }

    #[test]
    fn hints_are_read_as_the_spec_tells_clients_to() {
        let h = hints(serde_json::json!({"ttlMs": 60000, "cacheScope": "public"}));
        assert_eq!(
            h,
            CacheHints {
                ttl_ms: 60000,
                public: true
            }
        );
        // Absent, negative or malformed: immediately stale; any other scope: private.
        assert_eq!(hints(serde_json::json!({})), CacheHints::NONE);
        assert_eq!(
            hints(serde_json::json!({"ttlMs": -5, "cacheScope": "public"})).ttl_ms,
            0
        );
        assert_eq!(
            hints(serde_json::json!({"ttlMs": "9", "cacheScope": "PUBLIC"})),
            CacheHints::NONE
        );
    }

    #[test]
    fn merged_hints_take_the_shortest_ttl_and_private_if_any_is() {
        let a = CacheHints {
            ttl_ms: 300_000,
            public: true,
        };
        let b = CacheHints {
            ttl_ms: 60_000,
            public: true,
        };
        let c = CacheHints {
            ttl_ms: 900_000,
            public: false,
        };
        assert_eq!(
            a.merge(b),
            CacheHints {
                ttl_ms: 60_000,
                public: true
            }
        );
        assert_eq!(
            a.merge(c),
            CacheHints {
                ttl_ms: 300_000,
                public: false
            }
        );
        assert_eq!(
            b.merge(a).merge(c),
            CacheHints {
                ttl_ms: 60_000,
                public: false
            }
        );
        assert_eq!(a.merge(CacheHints::NONE), CacheHints::NONE);
        assert_eq!(
            a.private(),
            CacheHints {
                ttl_ms: 300_000,
                public: false
            }
        );
        let mut out = serde_json::Map::new();
        a.merge(b).write(&mut out);
        assert_eq!(
            serde_json::Value::Object(out),
            serde_json::json!({"ttlMs": 60000, "cacheScope": "public"})
        );
    }

    #[test]
    fn authored_results_name_the_gateway_in_meta() {
        let mut r = serde_json::Map::new();
        r.insert("_meta".into(), serde_json::json!({"k": 1}));
        complete_authored(&mut r, Some(CacheHints::NONE), "main");
        let v = serde_json::Value::Object(r);
        assert_eq!(v["resultType"], "complete");
        assert_eq!(v["ttlMs"], 0);
        assert_eq!(v["cacheScope"], "private");
        assert_eq!(v["_meta"]["k"], 1);
        assert_eq!(v["_meta"][SERVER_INFO_META_KEY]["name"], "main");
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

/// Whether a `notifications/message` may go to a client whose floor is `floor`.
pub fn log_allowed(notification: &Message, floor: Option<u8>) -> bool {
    let Some(floor) = floor else { return false };
    let level = notification
        .params_as::<Value>()
        .ok()
        .and_then(|p| p.get("level").and_then(Value::as_str).and_then(log_rank));
    level.is_none_or(|l| l >= floor)
}
