//! Configuration: the YAML model, loading, and validation with precise messages.

mod access_log;
mod audit;
mod auth;
pub mod console;
mod credentials;
mod duration;
pub mod guardrails;
pub mod interceptors;
pub mod keys;
mod listener;
mod locate;
mod model;
pub mod oauth_server;
mod policy;
pub mod quotas;
pub mod schema;
mod secret;
pub mod tenants;
mod tls;
mod validate;
pub mod virtual_tools;
mod warnings;

pub use access_log::{AccessLog, Cidr};
pub use audit::{Audit, OnFull, Redact};
pub use auth::*;
pub use credentials::{ConsentConfig, OAuthClient, TokenClientAuth, UpstreamAuth};
pub use duration::HumanDuration;
pub use keys::KeyConfig;
pub use listener::{Connections, Ops};
pub use model::*;
pub use policy::{Effect, Globs, Policy, PolicyRule};
pub use secret::{Secret, SourceSpec, ValueSource};
pub use tls::{ClientCert, Loaded, Tls, TlsFileError};

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// Dotted path of the field, e.g. `servers[0].upstreams[1]`.
    pub field: String,
    /// What was wrong and what was expected.
    pub message: String,
    /// The line of the field (or of the nearest enclosing one) in the file, once located.
    pub line: Option<usize>,
}

impl Issue {
    /// A problem with `field`, not located in the text yet.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Issue {
        Issue {
            field: field.into(),
            message: message.into(),
            line: None,
        }
    }

    /// `FILE:LINE: FIELD: MESSAGE` (the line left out when unknown), the form editors and CI
    /// logs turn into links.
    pub fn render(&self, file: &Path) -> String {
        match self.line {
            Some(line) => format!(
                "{}:{line}: {}: {}",
                file.display(),
                self.field,
                self.message
            ),
            None => format!("{}: {}: {}", file.display(), self.field, self.message),
        }
    }
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The file.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The YAML did not fit the model (syntax, unknown field, wrong type).
    #[error("{file}: {message}")]
    Parse {
        /// The file.
        file: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// The YAML parsed but its values are inconsistent.
    #[error("{}", render_issues(file, issues))]
    Invalid {
        /// The file.
        file: PathBuf,
        /// Every problem found.
        issues: Vec<Issue>,
    },
}

fn render_issues(file: &Path, issues: &[Issue]) -> String {
    let mut out = format!(
        "{}: {} problem{} found",
        file.display(),
        issues.len(),
        if issues.len() == 1 { "" } else { "s" }
    );
    for i in issues {
        out.push_str("\n  ");
        out.push_str(&i.render(file));
    }
    out
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl Config {
    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::from_yaml(&Self::read(path)?, path)
    }

    fn read(path: &Path) -> Result<String, ConfigError> {
        std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_owned(),
            source,
        })
    }

    /// The YAML model, not validated yet.
    fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        serde_saphyr::from_str(text).map_err(|e| ConfigError::Parse {
            file: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// Like [`load`](Self::load), but secrets that cannot be read now (a variable not set, a
    /// file not there) are not problems: for administrative commands that use the store and
    /// not the upstreams or the IdP. Whatever needs such a secret later fails then, precisely.
    pub fn load_for_admin(path: &Path) -> Result<Config, ConfigError> {
        let (result, deferred) = secret::with_secrets_deferred(|| Self::load(path));
        match result {
            Err(ConfigError::Invalid { file, issues }) => {
                let issues: Vec<Issue> = issues
                    .into_iter()
                    .filter(|i| !deferred.contains(&i.message))
                    .collect();
                if issues.is_empty() {
                    // Parse again, without validation, now that only deferred secrets failed.
                    let mut config = Self::parse(&Self::read(path)?, path)?;
                    config.add_facade_issuer();
                    Ok(config)
                } else {
                    Err(ConfigError::Invalid { file, issues })
                }
            }
            other => other,
        }
    }

    /// Parses and validates YAML text; `path` is only used in messages.
    pub fn from_yaml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut config = Self::parse(text, path)?;
        let mut issues = validate::validate(&config);
        if issues.is_empty() {
            issues.extend(config.add_facade_issuer());
        }
        if issues.is_empty() {
            Ok(config)
        } else {
            locate(&mut issues, text);
            Err(ConfigError::Invalid {
                file: path.to_owned(),
                issues,
            })
        }
    }

    /// Like [`load`](Self::load), and also the risky settings that work but that a reviewer
    /// should see (`gatehouse check` prints them; `serve` logs them).
    pub fn load_with_warnings(path: &Path) -> Result<(Config, Vec<Issue>), ConfigError> {
        let text = Self::read(path)?;
        let config = Self::from_yaml(&text, path)?;
        let mut warnings = warnings::warnings(&config);
        locate(&mut warnings, &text);
        Ok((config, warnings))
    }
}

fn locate(issues: &mut [Issue], text: &str) {
    // The walk is only worth it when there is something to place.
    if issues.is_empty() {
        return;
    }
    let lines = locate::Lines::of(text);
    for issue in issues {
        issue.line = lines.find(&issue.field);
    }
}
