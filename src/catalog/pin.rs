//! Pins: what was approved, as a hash over a definition's canonical form. Only the members
//! that change what a model is told or may send count (name, title, description, schemas,
//! annotations, arguments), so that an upstream restarting or reordering its JSON keys keeps
//! its pins, while any change of wording does not.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// What kind of definition a pin is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DefinitionKind {
    /// A tool.
    Tool,
    /// A prompt.
    Prompt,
    /// A resource.
    Resource,
    /// A resource template.
    ResourceTemplate,
}

impl DefinitionKind {
    /// The name used in the store and in findings.
    pub fn as_str(self) -> &'static str {
        match self {
            DefinitionKind::Tool => "tool",
            DefinitionKind::Prompt => "prompt",
            DefinitionKind::Resource => "resource",
            DefinitionKind::ResourceTemplate => "resourceTemplate",
        }
    }

    /// Parses [`as_str`](Self::as_str).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "tool" => DefinitionKind::Tool,
            "prompt" => DefinitionKind::Prompt,
            "resource" => DefinitionKind::Resource,
            "resourceTemplate" => DefinitionKind::ResourceTemplate,
            _ => return None,
        })
    }

    /// The members of a definition that a pin covers.
    fn members(self) -> &'static [&'static str] {
        match self {
            DefinitionKind::Tool => &[
                "name",
                "title",
                "description",
                "inputSchema",
                "outputSchema",
                "annotations",
            ],
            DefinitionKind::Prompt => &["name", "title", "description", "arguments"],
            DefinitionKind::Resource => &["uri", "name", "title", "description", "mimeType"],
            DefinitionKind::ResourceTemplate => {
                &["uriTemplate", "name", "title", "description", "mimeType"]
            }
        }
    }

    /// The member that identifies a definition within its upstream.
    pub fn id_member(self) -> &'static str {
        match self {
            DefinitionKind::Tool | DefinitionKind::Prompt => "name",
            DefinitionKind::Resource => "uri",
            DefinitionKind::ResourceTemplate => "uriTemplate",
        }
    }
}

/// The canonical form of the pinned members: keys sorted at every depth, no whitespace.
pub fn canonical(kind: DefinitionKind, definition: &Value) -> String {
    let mut pinned = Map::new();
    for m in kind.members() {
        if let Some(v) = definition.get(*m) {
            pinned.insert((*m).to_owned(), sorted(v));
        }
    }
    // serde_json's Map keeps insertion order only with `preserve_order`; build sorted anyway.
    serde_json::to_string(&sorted(&Value::Object(pinned))).expect("JSON values serialize")
}

fn sorted(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let mut out = Map::new();
            for k in keys {
                out.insert(k.clone(), sorted(&m[k]));
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// The pin: SHA-256 of the canonical form, hex.
pub fn pin(kind: DefinitionKind, definition: &Value) -> String {
    crate::hex::encode(&Sha256::digest(canonical(kind, definition).as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_order_and_unpinned_members_do_not_change_a_pin() {
        let a = json!({"name": "echo", "description": "Echoes", "inputSchema": {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "number"}}}, "_meta": {"x": 1}});
        let b: Value = serde_json::from_str(
            r#"{"inputSchema":{"properties":{"b":{"type":"number"},"a":{"type":"string"}},"type":"object"},"_meta":{"x":2},"description":"Echoes","name":"echo"}"#,
        )
        .unwrap();
        assert_eq!(pin(DefinitionKind::Tool, &a), pin(DefinitionKind::Tool, &b));
    }

    #[test]
    fn any_change_of_wording_or_schema_changes_a_pin() {
        let base =
            json!({"name": "echo", "description": "Echoes", "inputSchema": {"type": "object"}});
        let p = pin(DefinitionKind::Tool, &base);
        for changed in [
            json!({"name": "echo", "description": "Echoes.", "inputSchema": {"type": "object"}}),
            json!({"name": "echo", "description": "Echoes", "inputSchema": {"type": "object", "required": ["a"]}}),
            json!({"name": "echo", "description": "Echoes", "inputSchema": {"type": "object"}, "annotations": {"destructiveHint": true}}),
            json!({"name": "echo2", "description": "Echoes", "inputSchema": {"type": "object"}}),
        ] {
            assert_ne!(pin(DefinitionKind::Tool, &changed), p, "{changed}");
        }
    }

    #[test]
    fn canonical_form_is_sorted_and_compact() {
        let c = canonical(
            DefinitionKind::Prompt,
            &json!({"name": "p", "arguments": [{"required": true, "name": "x"}]}),
        );
        assert_eq!(
            c,
            r#"{"arguments":[{"name":"x","required":true}],"name":"p"}"#
        );
    }
}
