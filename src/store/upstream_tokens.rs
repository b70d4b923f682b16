//! Users' connections to upstreams that need per-user OAuth. The store holds each token set only
//! sealed (see `crate::credentials::sealed`); it never sees a usable token.

use super::{Store, StoreError, on_pool};
use sqlx::Row;
use std::fmt;

/// A user's stored connection to an upstream (its tokens sealed).
#[derive(Clone, PartialEq, Eq)]
pub struct StoredConnection {
    /// A digest identifying the user (issuer and subject).
    pub binding: String,
    /// The upstream's name.
    pub upstream: String,
    /// The user's subject, for display.
    pub subject: String,
    /// The user's issuer, for display.
    pub issuer: String,
    /// The id of the key `sealed` was sealed with.
    pub key_id: String,
    /// The sealed token set.
    pub sealed: String,
    /// Granted scopes, space-separated.
    pub scopes: String,
    /// When the access token expires, milliseconds since the epoch; `None` when unknown.
    pub expires_at_ms: Option<i64>,
    /// When the user first connected, milliseconds since the epoch.
    pub created_at_ms: i64,
    /// When the row was last written, milliseconds since the epoch.
    pub updated_at_ms: i64,
}

impl fmt::Debug for StoredConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `sealed` is left out: sealed or not, token material does not go to logs.
        f.debug_struct("StoredConnection")
            .field("binding", &self.binding)
            .field("upstream", &self.upstream)
            .field("subject", &self.subject)
            .field("issuer", &self.issuer)
            .field("key_id", &self.key_id)
            .field("scopes", &self.scopes)
            .field("expires_at_ms", &self.expires_at_ms)
            .field("created_at_ms", &self.created_at_ms)
            .field("updated_at_ms", &self.updated_at_ms)
            .finish_non_exhaustive()
    }
}

macro_rules! connection_columns {
    () => {
        "binding, upstream, subject, issuer, key_id, sealed, scopes, expires_at_ms, created_at_ms, updated_at_ms"
    };
}

macro_rules! connection_from_row {
    ($row:expr) => {{
        let row = $row;
        StoredConnection {
            binding: row.try_get("binding")?,
            upstream: row.try_get("upstream")?,
            subject: row.try_get("subject")?,
            issuer: row.try_get("issuer")?,
            key_id: row.try_get("key_id")?,
            sealed: row.try_get("sealed")?,
            scopes: row.try_get("scopes")?,
            expires_at_ms: row.try_get("expires_at_ms")?,
            created_at_ms: row.try_get("created_at_ms")?,
            updated_at_ms: row.try_get("updated_at_ms")?,
        }
    }};
}

impl Store {
    /// Inserts or replaces (keeping the original created_at_ms on replace).
    pub async fn put_connection(&self, c: &StoredConnection) -> Result<(), StoreError> {
        let sql = concat!(
            "INSERT INTO upstream_connections (",
            connection_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            " ON CONFLICT (binding, upstream) DO UPDATE SET",
            " subject = excluded.subject, issuer = excluded.issuer, key_id = excluded.key_id,",
            " sealed = excluded.sealed, scopes = excluded.scopes,",
            " expires_at_ms = excluded.expires_at_ms, updated_at_ms = excluded.updated_at_ms"
        );
        on_pool!(self, pool => {
            sqlx::query(sql)
                .bind(&c.binding)
                .bind(&c.upstream)
                .bind(&c.subject)
                .bind(&c.issuer)
                .bind(&c.key_id)
                .bind(&c.sealed)
                .bind(&c.scopes)
                .bind(c.expires_at_ms)
                .bind(c.created_at_ms)
                .bind(c.updated_at_ms)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// The user's connection to this upstream, if any.
    pub async fn connection(
        &self,
        binding: &str,
        upstream: &str,
    ) -> Result<Option<StoredConnection>, StoreError> {
        let sql = concat!(
            "SELECT ",
            connection_columns!(),
            " FROM upstream_connections WHERE binding = $1 AND upstream = $2"
        );
        on_pool!(self, pool => {
            match sqlx::query(sql).bind(binding).bind(upstream).fetch_optional(pool).await? {
                Some(row) => Ok(Some(connection_from_row!(row))),
                None => Ok(None),
            }
        })
    }

    /// Everyone's connections, the most recently updated first, at most `limit`.
    pub async fn all_connections(&self, limit: i64) -> Result<Vec<StoredConnection>, StoreError> {
        let sql = concat!(
            "SELECT ",
            connection_columns!(),
            " FROM upstream_connections ORDER BY updated_at_ms DESC LIMIT $1"
        );
        on_pool!(self, pool => {
            let rows = sqlx::query(sql).bind(limit).fetch_all(pool).await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                out.push(connection_from_row!(row));
            }
            Ok(out)
        })
    }

    /// A user's connections, ordered by upstream.
    pub async fn connections(&self, binding: &str) -> Result<Vec<StoredConnection>, StoreError> {
        let sql = concat!(
            "SELECT ",
            connection_columns!(),
            " FROM upstream_connections WHERE binding = $1 ORDER BY upstream"
        );
        on_pool!(self, pool => {
            let rows = sqlx::query(sql).bind(binding).fetch_all(pool).await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                out.push(connection_from_row!(row));
            }
            Ok(out)
        })
    }

    /// True when a row was deleted.
    pub async fn delete_connection(
        &self,
        binding: &str,
        upstream: &str,
    ) -> Result<bool, StoreError> {
        let sql = "DELETE FROM upstream_connections WHERE binding = $1 AND upstream = $2";
        let affected = on_pool!(self, pool => {
            sqlx::query(sql).bind(binding).bind(upstream).execute(pool).await?.rows_affected()
        });
        Ok(affected == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_leaves_out_the_sealed_tokens() {
        let c = StoredConnection {
            binding: "0a1b".into(),
            upstream: "github".into(),
            subject: "alice".into(),
            issuer: "https://idp".into(),
            key_id: "k1".into(),
            sealed: "v1.k1.NONCE.CIPHERTEXT".into(),
            scopes: "repo".into(),
            expires_at_ms: None,
            created_at_ms: 1,
            updated_at_ms: 2,
        };
        let d = format!("{c:?}");
        assert!(d.contains("github") && d.contains("k1"), "{d}");
        assert!(!d.contains("CIPHERTEXT") && !d.contains("sealed"), "{d}");
    }
}
