//! Durable state: a SQLite file by default, PostgreSQL when several replicas share it. The
//! schema is created and upgraded by embedded migrations when the store opens.

mod api_keys;
mod audit;
mod catalog;
mod oauth_clients;
mod upstream_tokens;
mod used_once;

pub use api_keys::{ApiKeyRecord, NewApiKey};
pub use audit::{AuditFilter, AuditRecord};
pub use catalog::{CatalogDefinition, CatalogUpstream, DefinitionState, UpstreamState};
pub use oauth_clients::OAuthClientRecord;
pub use upstream_tokens::StoredConnection;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

/// Why the store could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL is not one the store understands.
    #[error("store.url: {0}")]
    BadUrl(String),
    /// Connecting or migrating failed.
    #[error("store: cannot open {target}: {source}")]
    Open {
        /// The database, without credentials.
        target: String,
        /// The driver's error.
        source: sqlx::Error,
    },
    /// A migration failed.
    #[error("store: migrating {target} failed: {source}")]
    Migrate {
        /// The database, without credentials.
        target: String,
        /// The migrator's error.
        source: sqlx::migrate::MigrateError,
    },
    /// A query failed.
    #[error("store: {0}")]
    Query(#[from] sqlx::Error),
}

/// The gateway's durable state.
#[derive(Clone, Debug)]
pub enum Store {
    /// A SQLite database file (or memory, for tests).
    Sqlite(SqlitePool),
    /// A PostgreSQL database.
    Postgres(PgPool),
}

/// Runs the same query text on whichever pool the store has; `$1`-style placeholders work
/// with both drivers.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            $crate::store::Store::Sqlite($pool) => $body,
            $crate::store::Store::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

impl Store {
    /// Opens (creating if needed) and migrates the store at `url`; a relative SQLite path is
    /// taken relative to `base_dir` (the configuration file's folder).
    pub async fn open(
        url: &str,
        base_dir: &Path,
        max_connections: u32,
    ) -> Result<Store, StoreError> {
        if let Some(rest) = url.strip_prefix("sqlite:") {
            let rest = rest.trim_start_matches("//");
            let options = if rest == ":memory:" {
                SqliteConnectOptions::from_str("sqlite::memory:")
                    .map_err(|e| StoreError::BadUrl(e.to_string()))?
            } else {
                let path = base_dir.join(rest);
                SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
            };
            let options = options.busy_timeout(Duration::from_secs(5));
            // An in-memory database exists per connection, so it gets exactly one.
            let max = if rest == ":memory:" {
                1
            } else {
                max_connections
            };
            let pool = SqlitePoolOptions::new()
                .max_connections(max)
                .connect_with(options)
                .await
                .map_err(|source| StoreError::Open {
                    target: redact(url),
                    source,
                })?;
            sqlx::migrate!("./migrations/sqlite")
                .run(&pool)
                .await
                .map_err(|source| StoreError::Migrate {
                    target: redact(url),
                    source,
                })?;
            Ok(Store::Sqlite(pool))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options =
                PgConnectOptions::from_str(url).map_err(|e| StoreError::BadUrl(e.to_string()))?;
            Self::open_postgres(options, max_connections, &redact(url)).await
        } else {
            Err(StoreError::BadUrl(format!(
                "{:?}: expected sqlite://PATH or postgres://…",
                redact(url)
            )))
        }
    }

    /// Opens and migrates a PostgreSQL store with explicit options (tests use a schema each).
    pub async fn open_postgres(
        options: PgConnectOptions,
        max_connections: u32,
        target: &str,
    ) -> Result<Store, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Open {
                target: target.into(),
                source,
            })?;
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate {
                target: target.into(),
                source,
            })?;
        Ok(Store::Postgres(pool))
    }

    /// Which database this is, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    /// Whether the database answers a trivial query (readiness).
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_pool!(self, p => sqlx::query("SELECT 1").execute(p).await.map(|_| ()))
            .map_err(StoreError::from)
    }

    /// Closes every connection.
    pub async fn close(&self) {
        on_pool!(self, p => p.close().await)
    }
}

/// A database URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

/// Seconds since the epoch, the store's time unit.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
