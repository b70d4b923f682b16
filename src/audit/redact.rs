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
        let canonical = serde_json::to_string(args).unwrap_or_default();
        if let Some(t) = tool
            && self
                .digest_tools
                .iter()
                .any(|p| crate::auth::glob_match(p, t))
        {
            let d = Sha256::digest(canonical.as_bytes());
            return format!("sha256:{}", crate::hex::encode(&d));
        }
        let mut copy = args.clone();
        self.mask(&mut copy);
        serde_json::to_string(&copy).unwrap_or_default()
    }

    fn mask(&self, v: &mut Value) {
        match v {
            Value::Object(map) => {
                for (k, inner) in map.iter_mut() {
                    let key = k.to_ascii_lowercase();
                    if self.keys.iter().any(|s| key.contains(s.as_str())) {
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
