//! Tool arguments mirrored into `Mcp-Param-{Name}` headers (2026-07-28, SEP-2243): which
//! arguments a tool's `inputSchema` marks with `x-mcp-header`, the headers a call must carry,
//! and whether the headers a client sent say what the body says.
//!
//! The gateway stands on both sides of the rule: to a 2026-07-28 client it is the server that
//! processes the body (it must refuse headers that disagree with it, 400/-32020), and to a
//! 2026-07-28 upstream it is the client (it must send them). Both derive from one parse of the
//! tool's definition, [`ToolHeaders::of`].

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

/// The schema keyword that marks a mirrored parameter.
pub const KEYWORD: &str = "x-mcp-header";
/// Every mirrored header's name starts with this (header names compare case-insensitively).
pub const HEADER_PREFIX: &str = super::headers::PARAM_PREFIX;
/// Most mirrored parameters one tool may declare: each becomes a header on every call.
pub const MAX_PER_TOOL: usize = 64;
/// Deepest `properties` chain followed; a schema nested deeper cannot annotate below it.
const MAX_DEPTH: usize = 32;
/// Longest annotation value accepted (it becomes part of a header name).
const MAX_NAME: usize = 128;

const SENTINEL_START: &str = "=?base64?";
const SENTINEL_END: &str = "?=";

/// The JSON types a mirrored parameter may have (`number` is excluded by the rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Primitive {
    String,
    Integer,
    Boolean,
}

/// One mirrored parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mirrored {
    /// The chain of `properties` keys from the schema root to the parameter.
    path: Vec<String>,
    /// `Mcp-Param-{Name}` as the annotation spells it, for messages.
    display: String,
    /// The same, as a header name (lowercase).
    header: HeaderName,
    kind: Primitive,
}

/// The parameters of one tool that travel as headers too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolHeaders {
    mirrored: Vec<Mirrored>,
}

impl ToolHeaders {
    /// Reads `x-mcp-header` annotations from a tool's `inputSchema`: `Ok(None)` when it has
    /// none, an error naming the first rule an annotation breaks (a client must then leave
    /// the tool out of its listing).
    pub fn of(input_schema: Option<&Value>) -> Result<Option<ToolHeaders>, String> {
        let Some(schema) = input_schema else {
            return Ok(None);
        };
        let mut mirrored = Vec::new();
        let mut path = Vec::new();
        collect(schema, &mut path, true, 0, &mut mirrored)?;
        if mirrored.is_empty() {
            return Ok(None);
        }
        for (i, m) in mirrored.iter().enumerate() {
            if mirrored[..i].iter().any(|o| o.header == m.header) {
                return Err(format!(
                    "{KEYWORD} {:?} is used twice (values must be unique, ignoring case)",
                    m.display
                ));
            }
        }
        Ok(Some(ToolHeaders { mirrored }))
    }

    /// [`of`](Self::of) for a schema still in its JSON text: most schemas carry no
    /// annotation and nest shallowly, and those are answered `Ok(None)` without building a
    /// `Value` (the listing path reads every tool of every member). A schema that mentions
    /// the keyword, has an escape (which could spell it) or nests deep enough to matter is
    /// parsed and read by `of`, so the answer is the same either way.
    pub fn of_raw(
        input_schema: Option<&serde_json::value::RawValue>,
    ) -> Result<Option<ToolHeaders>, String> {
        let Some(raw) = input_schema else {
            return Ok(None);
        };
        let text = raw.get().as_bytes();
        let plain = memchr::memmem::find(text, KEYWORD.as_bytes()).is_none()
            && memchr::memchr(b'\\', text).is_none()
            && nesting(text) <= MAX_DEPTH;
        if plain {
            return Ok(None);
        }
        let schema: Value = serde_json::from_str(raw.get()).map_err(|e| e.to_string())?;
        Self::of(Some(&schema))
    }

    /// The headers a call with these `arguments` carries: one per mirrored parameter whose
    /// value is present and not null, encoded as the transport requires.
    pub fn headers_for(&self, arguments: Option<&Value>) -> Vec<(HeaderName, HeaderValue)> {
        self.mirrored
            .iter()
            .filter_map(|m| {
                let text = header_text(lookup(arguments, &m.path)?)?;
                let value = HeaderValue::from_str(&encode(&text)).ok()?;
                Some((m.header.clone(), value))
            })
            .collect()
    }

    /// Checks the `Mcp-Param-*` headers a client sent against the call's `arguments`: each
    /// present value must come as its header, equal after decoding; an error says which one
    /// differs (sent back as -32020 HeaderMismatch).
    pub fn check(&self, headers: &HeaderMap, arguments: Option<&Value>) -> Result<(), String> {
        for m in &self.mirrored {
            let sent = headers.get(&m.header);
            let body = lookup(arguments, &m.path);
            let Some(body) = body else {
                // Nothing to mirror: a header with no value behind it is ignored, as an
                // unrecognised one would be.
                continue;
            };
            let Some(sent) = sent else {
                return Err(format!(
                    "{} header is required: the body has {}",
                    m.display,
                    m.path.join(".")
                ));
            };
            let sent = sent
                .to_str()
                .map_err(|_| format!("{} has characters a header cannot carry", m.display))?;
            let decoded = decode(sent).map_err(|e| format!("{}: {e}", m.display))?;
            if !same_value(&decoded, body, m.kind) {
                return Err(format!(
                    "{} header does not match the body's {}",
                    m.display,
                    m.path.join(".")
                ));
            }
        }
        Ok(())
    }
}

/// The deepest bracket nesting of JSON text, brackets inside strings included (an
/// overestimate is safe: it only sends the schema to the full reader).
fn nesting(text: &[u8]) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    for &b in text {
        match b {
            b'{' | b'[' => {
                depth += 1;
                max = max.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

fn collect(
    schema: &Value,
    path: &mut Vec<String>,
    reachable: bool,
    depth: usize,
    out: &mut Vec<Mirrored>,
) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("inputSchema nests deeper than {MAX_DEPTH} levels"));
    }
    match schema {
        Value::Object(map) => {
            if let Some(name) = map.get(KEYWORD) {
                if !reachable || path.is_empty() {
                    return Err(format!(
                        "{KEYWORD} must sit on a property reached through `properties` keys only"
                    ));
                }
                out.push(mirrored(name, path, map)?);
                if out.len() > MAX_PER_TOOL {
                    return Err(format!("more than {MAX_PER_TOOL} {KEYWORD} annotations"));
                }
            }
            for (key, value) in map {
                if key == "properties"
                    && let Value::Object(props) = value
                {
                    for (prop, sub) in props {
                        path.push(prop.clone());
                        collect(sub, path, reachable, depth + 1, out)?;
                        path.pop();
                    }
                } else if key != KEYWORD && (value.is_object() || value.is_array()) {
                    // Anything under another keyword (`items`, `oneOf`, `$defs`, …) is not
                    // statically reachable: an annotation there makes the tool invalid.
                    collect(value, path, false, depth + 1, out)?;
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                collect(item, path, false, depth + 1, out)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn mirrored(
    name: &Value,
    path: &[String],
    schema: &serde_json::Map<String, Value>,
) -> Result<Mirrored, String> {
    let Some(name) = name.as_str() else {
        return Err(format!("{KEYWORD} must be a string"));
    };
    if name.is_empty() || name.len() > MAX_NAME || !name.bytes().all(is_tchar) {
        return Err(format!(
            "{KEYWORD} {name:?} must be 1 to {MAX_NAME} characters of an HTTP field name"
        ));
    }
    let kind = match schema.get("type").and_then(Value::as_str) {
        Some("string") => Primitive::String,
        Some("integer") => Primitive::Integer,
        Some("boolean") => Primitive::Boolean,
        other => {
            return Err(format!(
                "{KEYWORD} {name:?} is on a parameter of type {}: only string, integer and boolean may be mirrored",
                other.map_or("(none)".to_owned(), |t| format!("{t:?}"))
            ));
        }
    };
    let header = HeaderName::from_bytes(format!("{HEADER_PREFIX}{name}").as_bytes())
        .map_err(|_| format!("{KEYWORD} {name:?} does not make a header name"))?;
    Ok(Mirrored {
        path: path.to_vec(),
        display: format!("Mcp-Param-{name}"),
        header,
        kind,
    })
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The value at `path` in the arguments; absent and null are the same (no header).
fn lookup<'a>(arguments: Option<&'a Value>, path: &[String]) -> Option<&'a Value> {
    let mut at = arguments?;
    for key in path {
        at = at.as_object()?.get(key)?;
    }
    (!at.is_null()).then_some(at)
}

/// The header's text for a body value, before encoding: strings as they are, integers in
/// decimal, booleans in lowercase. Other JSON (which the schema does not allow there) has no
/// header form and is left to the upstream's own validation.
fn header_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        Value::Number(n) => n
            .as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0)
            .map(|f| format!("{}", f as i64)),
        _ => None,
    }
}

fn same_value(header: &str, body: &Value, kind: Primitive) -> bool {
    let Some(text) = header_text(body) else {
        // Nothing a header could say matches a body value with no header form.
        return false;
    };
    if header == text {
        return true;
    }
    // Integers compare as numbers (`42.0` and `42` are the same argument).
    kind == Primitive::Integer
        && matches!((header.parse::<f64>(), text.parse::<f64>()), (Ok(a), Ok(b)) if a == b)
}

/// Encodes a value for a header: as it is when it is plain visible ASCII without surrounding
/// spaces, otherwise (and when it looks like the sentinel itself) as `=?base64?…?=`.
pub fn encode(value: &str) -> String {
    let sentinel = value.starts_with(SENTINEL_START) && value.ends_with(SENTINEL_END);
    let plain = value
        .bytes()
        .all(|b| b == b' ' || b == b'\t' || (0x21..=0x7e).contains(&b))
        && !value.starts_with([' ', '\t'])
        && !value.ends_with([' ', '\t'])
        && !sentinel;
    if plain {
        value.to_owned()
    } else {
        format!("{SENTINEL_START}{}{SENTINEL_END}", STANDARD.encode(value))
    }
}

/// Decodes a header value: the Base64 sentinel strictly (canonical padding, the standard
/// alphabet, UTF-8 inside), anything else literally.
pub fn decode(header: &str) -> Result<String, &'static str> {
    let Some(inner) = header
        .strip_prefix(SENTINEL_START)
        .and_then(|rest| rest.strip_suffix(SENTINEL_END))
    else {
        return Ok(header.to_owned());
    };
    let bytes = STANDARD
        .decode(inner)
        .map_err(|_| "the value is not valid Base64")?;
    String::from_utf8(bytes).map_err(|_| "the Base64 value is not UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn region_tool() -> ToolHeaders {
        ToolHeaders::of(Some(&json!({
            "type": "object",
            "properties": {
                "region": {"type": "string", "x-mcp-header": "Region"},
                "limit": {"type": "integer", "x-mcp-header": "Limit"},
                "opts": {"type": "object", "properties": {
                    "dry": {"type": "boolean", "x-mcp-header": "Dry"}
                }},
                "query": {"type": "string"}
            }
        })))
        .unwrap()
        .unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn encodes_as_the_transport_table_shows() {
        assert_eq!(encode("us-west1"), "us-west1");
        assert_eq!(encode("Hello, 世界"), "=?base64?SGVsbG8sIOS4lueVjA==?=");
        assert_eq!(encode(" padded "), "=?base64?IHBhZGRlZCA=?=");
        assert_eq!(encode("line1\nline2"), "=?base64?bGluZTEKbGluZTI=?=");
        assert_eq!(
            encode("=?base64?literal?="),
            "=?base64?PT9iYXNlNjQ/bGl0ZXJhbD89?="
        );
        for v in ["us-west1", "Hello, 世界", " padded ", "=?base64?literal?="] {
            assert_eq!(decode(&encode(v)).unwrap(), v);
        }
    }

    #[test]
    fn decoding_is_strict_inside_the_sentinel_and_literal_outside() {
        assert_eq!(decode("=?base64?SGVsbG8=?=").unwrap(), "Hello");
        assert!(decode("=?base64?SGVsbG8?=").is_err(), "padding is required");
        assert!(decode("=?base64?SGVs!!!bG8=?=").is_err());
        assert!(decode("=?base64?/w==?=").is_err(), "not UTF-8");
        assert_eq!(decode("SGVsbG8=").unwrap(), "SGVsbG8=");
        assert_eq!(decode("=?base64?SGVsbG8=").unwrap(), "=?base64?SGVsbG8=");
    }

    #[test]
    fn annotations_are_read_along_properties_only() {
        let t = region_tool();
        let paths: Vec<_> = t.mirrored.iter().map(|m| m.path.join(".")).collect();
        assert_eq!(paths.len(), 3);
        assert!(paths.contains(&"opts.dry".to_owned()));
        assert_eq!(ToolHeaders::of(Some(&json!({"type": "object"}))), Ok(None));
        assert_eq!(ToolHeaders::of(None), Ok(None));
    }

    #[test]
    fn invalid_annotations_make_the_tool_invalid() {
        let bad = [
            json!({"properties": {"a": {"type": "number", "x-mcp-header": "A"}}}),
            json!({"properties": {"a": {"type": "array", "x-mcp-header": "A"}}}),
            json!({"properties": {"a": {"type": "string", "x-mcp-header": ""}}}),
            json!({"properties": {"a": {"type": "string", "x-mcp-header": "A B"}}}),
            json!({"properties": {"a": {"type": "string", "x-mcp-header": "A\r\nX: y"}}}),
            json!({"properties": {"a": {"type": "string", "x-mcp-header": 7}}}),
            json!({"properties": {
                "a": {"type": "string", "x-mcp-header": "Dup"},
                "b": {"type": "string", "x-mcp-header": "dup"}
            }}),
            json!({"properties": {"a": {"type": "array", "items": {"type": "string", "x-mcp-header": "A"}}}}),
            json!({"oneOf": [{"properties": {"a": {"type": "string", "x-mcp-header": "A"}}}]}),
            json!({"$defs": {"x": {"properties": {"a": {"type": "string", "x-mcp-header": "A"}}}}}),
            json!({"type": "string", "x-mcp-header": "Root"}),
        ];
        for schema in bad {
            assert!(ToolHeaders::of(Some(&schema)).is_err(), "{schema}");
        }
        let many: serde_json::Map<String, Value> = (0..=MAX_PER_TOOL)
            .map(|i| {
                (
                    format!("p{i}"),
                    json!({"type": "string", "x-mcp-header": format!("P{i}")}),
                )
            })
            .collect();
        let err = ToolHeaders::of(Some(&json!({"properties": many}))).unwrap_err();
        assert!(err.contains("more than"), "{err}");
        let mut deep = json!({"type": "string", "x-mcp-header": "Deep"});
        for _ in 0..=MAX_DEPTH {
            deep = json!({"type": "object", "properties": {"x": deep}});
        }
        assert!(ToolHeaders::of(Some(&deep)).is_err());
    }

    #[test]
    fn headers_follow_the_arguments() {
        let t = region_tool();
        let args =
            json!({"region": "Hello, 世界", "limit": 42, "opts": {"dry": true}, "query": "q"});
        let mut got: Vec<_> = t
            .headers_for(Some(&args))
            .into_iter()
            .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap()))
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                "mcp-param-dry: true",
                "mcp-param-limit: 42",
                "mcp-param-region: =?base64?SGVsbG8sIOS4lueVjA==?="
            ]
        );
        let none = t.headers_for(Some(&json!({"region": null})));
        assert!(none.is_empty(), "null and absent send nothing");
    }

    #[test]
    fn client_headers_must_say_what_the_body_says() {
        let t = region_tool();
        let args = json!({"region": "Hello", "limit": 42});
        let ok = headers(&[
            ("mcp-param-region", "=?base64?SGVsbG8=?="),
            ("mcp-param-limit", "42.0"),
        ]);
        assert_eq!(t.check(&ok, Some(&args)), Ok(()));
        let missing = headers(&[("mcp-param-limit", "42")]);
        assert!(
            t.check(&missing, Some(&args))
                .unwrap_err()
                .contains("required")
        );
        let differs = headers(&[("mcp-param-region", "Bye"), ("mcp-param-limit", "42")]);
        assert!(
            t.check(&differs, Some(&args))
                .unwrap_err()
                .contains("does not match")
        );
        let bad_b64 = headers(&[
            ("mcp-param-region", "=?base64?SGVsbG8?="),
            ("mcp-param-limit", "42"),
        ]);
        assert!(
            t.check(&bad_b64, Some(&args))
                .unwrap_err()
                .contains("Base64")
        );
        // A header without a value behind it, or one no annotation names, is not checked.
        let extra = headers(&[("mcp-param-dry", "true"), ("mcp-param-other", "x")]);
        assert_eq!(t.check(&extra, Some(&json!({}))), Ok(()));
    }
}
