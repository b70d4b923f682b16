//! Values that may come from the environment or a file instead of the YAML text, so that
//! secrets need not be written into the configuration.

use serde::Deserialize;
use std::fmt;
use std::path::PathBuf;

/// Where a configured value comes from.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(untagged)]
pub enum ValueSource {
    /// A literal string in the YAML.
    Literal(String),
    /// `{ env: NAME }`, `{ file: PATH }` or `{ value: "..." }`.
    From(SourceSpec),
}

/// The long form of a [`ValueSource`].
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// Read from this environment variable.
    pub env: Option<String>,
    /// Read from this file (trailing newline trimmed).
    pub file: Option<PathBuf>,
    /// A literal value.
    pub value: Option<String>,
}

/// A resolved value that must not be printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value obtained at run time (e.g. the token a client presented).
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl ValueSource {
    /// Whether the value itself is in the YAML (a literal or `{ value: … }`), which is not
    /// acceptable for secrets.
    pub fn is_written_in_yaml(&self) -> bool {
        match self {
            ValueSource::Literal(_) => true,
            ValueSource::From(spec) => spec.value.is_some(),
        }
    }

    /// Resolves the value now; the error says what was missing without revealing any value.
    pub fn resolve(&self) -> Result<Secret, String> {
        self.resolve_now()
            .inspect_err(|e| note_unavailable(self, e))
    }

    fn resolve_now(&self) -> Result<Secret, String> {
        match self {
            ValueSource::Literal(s) => Ok(Secret(s.clone())),
            ValueSource::From(spec) => {
                let set = [
                    spec.env.is_some(),
                    spec.file.is_some(),
                    spec.value.is_some(),
                ];
                if set.iter().filter(|b| **b).count() != 1 {
                    return Err("expected exactly one of `env`, `file` or `value`".into());
                }
                if let Some(var) = &spec.env {
                    return std::env::var(var)
                        .map(Secret)
                        .map_err(|_| format!("environment variable {var} is not set"));
                }
                if let Some(path) = &spec.file {
                    return std::fs::read_to_string(path)
                        .map(|s| Secret(s.trim_end_matches(['\r', '\n']).to_owned()))
                        .map_err(|e| format!("cannot read {}: {e}", path.display()));
                }
                Ok(Secret(spec.value.clone().unwrap_or_default()))
            }
        }
    }
}

thread_local! {
    /// While [`with_secrets_deferred`] runs: the errors of secrets that were not available.
    static DEFERRED: std::cell::RefCell<Option<Vec<String>>> = const { std::cell::RefCell::new(None) };
}

fn note_unavailable(source: &ValueSource, error: &str) {
    // Only a missing variable or file is deferred; a malformed source stays an error.
    if let ValueSource::From(spec) = source
        && (spec.env.is_some() || spec.file.is_some())
    {
        DEFERRED.with(|d| {
            if let Some(list) = d.borrow_mut().as_mut() {
                list.push(error.to_owned());
            }
        });
    }
}

/// Runs `f` (loading a configuration) and returns, with its result, the errors of secrets that
/// could not be read meanwhile: administrative commands that only use the store do not need
/// the upstreams' or the IdP's secrets in their environment.
pub fn with_secrets_deferred<T>(f: impl FnOnce() -> T) -> (T, Vec<String>) {
    DEFERRED.with(|d| *d.borrow_mut() = Some(Vec::new()));
    let out = f();
    let deferred = DEFERRED.with(|d| d.borrow_mut().take()).unwrap_or_default();
    (out, deferred)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_each_source_and_never_debug_prints_the_value() {
        let lit = ValueSource::Literal("abc".into()).resolve().unwrap();
        assert_eq!(lit.expose(), "abc");
        assert!(!format!("{lit:?}").contains("abc"));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(&path, "from-file\n").unwrap();
        let spec = SourceSpec {
            env: None,
            file: Some(path),
            value: None,
        };
        assert_eq!(
            ValueSource::From(spec).resolve().unwrap().expose(),
            "from-file"
        );

        let missing = SourceSpec {
            env: Some("GATEHOUSE_TEST_SURELY_UNSET".into()),
            file: None,
            value: None,
        };
        let err = ValueSource::From(missing).resolve().unwrap_err();
        assert!(err.contains("GATEHOUSE_TEST_SURELY_UNSET"));

        let both = SourceSpec {
            env: Some("A".into()),
            file: None,
            value: Some("b".into()),
        };
        assert!(ValueSource::From(both).resolve().is_err());
    }
}
