//! Redaction of call arguments before they are recorded: secret-looking keys are masked at any
//! depth, and configured tools keep only a digest of their arguments.

use crate::config::Redact;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The mask written in place of a redacted value.
pub const MASK: &str = "[redacted]";

/// Applies the configured redaction.
pub struct Redactor {
    keys: Vec<String>,
    digest_tools: Vec<String>,
}

impl Redactor {
    /// A redactor for the configured rules.
    pub fn new(r: &Redact) -> Redactor {
        Redactor {
            keys: r.keys.iter().map(|k| k.to_ascii_lowercase()).collect(),
            digest_tools: r.digest_tools.clone(),
        }
    }

    /// The recorded form of `args`: a digest for configured tools, else JSON with secret
    /// values masked.
    pub fn apply(&self, tool: Option<&str>, args: &Value) -> String {
        if let Some(d) = self.digest(tool, args) {
            return d;
        }
        serde_json::to_string(&self.masked(args)).unwrap_or_default()
    }

    /// For a tool whose arguments are kept only as a digest, that digest.
    pub fn digest(&self, tool: Option<&str>, args: &Value) -> Option<String> {
        let t = tool?;
        if !self
            .digest_tools
            .iter()
            .any(|p| crate::auth::glob_match(p, t))
        {
            return None;
        }
        let canonical = serde_json::to_string(args).unwrap_or_default();
        let d = Sha256::digest(canonical.as_bytes());
        Some(format!("sha256:{}", crate::hex::encode(&d)))
    }

    /// `args` with secret values masked.
    pub fn masked(&self, args: &Value) -> Value {
        let mut copy = args.clone();
        self.mask(&mut copy);
        copy
    }

    /// Whether `value` under `key` is what masking would have put there.
    pub fn is_mask(&self, key: &str, value: &Value) -> bool {
        value.as_str() == Some(MASK) && self.secret_key(key)
    }

    fn secret_key(&self, key: &str) -> bool {
        let key = key.to_ascii_lowercase();
        self.keys.iter().any(|s| key.contains(s.as_str()))
    }

    fn mask(&self, v: &mut Value) {
        match v {
            Value::Object(map) => {
                for (k, inner) in map.iter_mut() {
                    if self.secret_key(k) {
                        *inner = Value::String(MASK.into());
                    } else {
                        self.mask(inner);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|i| self.mask(i)),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_are_masked_at_any_depth_and_digests_hide_everything() {
        let r = Redactor::new(&Redact {
            digest_tools: vec!["vault__*".into()],
            ..Redact::default()
        });
        let args = json!({"user": "bob", "Password": "hunter2", "nested": [{"api_key": "k-1", "n": 1}], "headers": {"X-Auth-Token": "t"}});
        let out = r.apply(Some("crm__login"), &args);
        assert!(
            !out.contains("hunter2") && !out.contains("k-1") && !out.contains("\"t\""),
            "{out}"
        );
        assert!(out.contains("bob") && out.contains("\"n\":1"), "{out}");
        let digest = r.apply(Some("vault__put"), &args);
        assert!(
            digest.starts_with("sha256:") && digest.len() == 7 + 64,
            "{digest}"
        );
        assert!(!digest.contains("bob"));
    }
}
