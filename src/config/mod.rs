//! Configuration: the YAML model, loading, and validation with precise messages.

mod audit;
mod auth;
mod credentials;
mod duration;
pub mod keys;
mod listener;
mod model;
pub mod oauth_server;
mod policy;
pub mod schema;
mod secret;
mod validate;

pub use audit::{Audit, OnFull, Redact};
pub use auth::*;
pub use credentials::{ConsentConfig, OAuthClient, TokenClientAuth, UpstreamAuth};
pub use duration::HumanDuration;
pub use keys::KeyConfig;
pub use listener::{Connections, Ops};
pub use model::*;
pub use policy::{Effect, Globs, Policy, PolicyRule};
pub use secret::{Secret, SourceSpec, ValueSource};

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// Dotted path of the field, e.g. `servers[0].upstreams[1]`.
    pub field: String,
    /// What was wrong and what was expected.
    pub message: String,
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
        out.push_str(&format!(
            "\n  {}: {}: {}",
            file.display(),
            i.field,
            i.message
        ));
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
            Err(ConfigError::Invalid {
                file: path.to_owned(),
                issues,
            })
        }
    }
}
