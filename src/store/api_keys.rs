//! Stored API keys. The store sees only a key's id and the digest of its secret part.

use super::{Store, StoreError, now_secs, on_pool};
use sqlx::Row;

/// A key as stored (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ApiKeyRecord {
    /// Public identifier, also the key's prefix.
    pub id: String,
    /// Hex SHA-256 of the secret part.
    #[serde(skip)]
    pub digest: String,
    /// The principal's subject.
    pub subject: String,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// Groups the principal is in.
    pub groups: Vec<String>,
    /// Virtual server paths it may be used on; empty means any that accepts keys.
    pub servers: Vec<String>,
    /// Free text.
    pub description: String,
    /// Seconds since the epoch.
    pub created_at: i64,
    /// Seconds since the epoch; `None` never expires.
    pub expires_at: Option<i64>,
    /// Seconds since the epoch; `None` while valid.
    pub revoked_at: Option<i64>,
}

/// What `keys create` stores.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    /// Public identifier.
    pub id: String,
    /// Hex SHA-256 of the secret part.
    pub digest: String,
    /// The principal's subject.
    pub subject: String,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// Groups.
    pub groups: Vec<String>,
    /// Server paths; empty means any.
    pub servers: Vec<String>,
    /// Free text.
    pub description: String,
    /// Seconds since the epoch.
    pub expires_at: Option<i64>,
}

macro_rules! columns {
    () => {
        "id, digest, subject, scopes, groups_, servers, description, created_at, expires_at, revoked_at"
    };
}

fn split(s: String) -> Vec<String> {
    s.split(' ')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

macro_rules! record_from_row {
    ($row:expr) => {{
        let row = $row;
        ApiKeyRecord {
            id: row.try_get("id")?,
            digest: row.try_get("digest")?,
            subject: row.try_get("subject")?,
            scopes: split(row.try_get("scopes")?),
            groups: split(row.try_get("groups_")?),
            servers: split(row.try_get("servers")?),
            description: row.try_get("description")?,
            created_at: row.try_get("created_at")?,
            expires_at: row.try_get("expires_at")?,
            revoked_at: row.try_get("revoked_at")?,
        }
    }};
}

impl Store {
    /// Stores a new key.
    pub async fn insert_api_key(&self, key: &NewApiKey) -> Result<(), StoreError> {
        let sql = "INSERT INTO api_keys (id, digest, subject, scopes, groups_, servers, description, created_at, expires_at) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
        on_pool!(self, pool => {
            sqlx::query(sql)
                .bind(&key.id)
                .bind(&key.digest)
                .bind(&key.subject)
                .bind(key.scopes.join(" "))
                .bind(key.groups.join(" "))
                .bind(key.servers.join(" "))
                .bind(&key.description)
                .bind(now_secs())
                .bind(key.expires_at)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// The key with this id, revoked or not.
    pub async fn find_api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let sql = concat!("SELECT ", columns!(), " FROM api_keys WHERE id = $1");
        on_pool!(self, pool => {
            match sqlx::query(sql).bind(id).fetch_optional(pool).await? {
                Some(row) => Ok(Some(record_from_row!(row))),
                None => Ok(None),
            }
        })
    }

    /// Every key, newest first.
    pub async fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let sql = concat!(
            "SELECT ",
            columns!(),
            " FROM api_keys ORDER BY created_at DESC, id"
        );
        on_pool!(self, pool => {
            let rows = sqlx::query(sql).fetch_all(pool).await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                out.push(record_from_row!(row));
            }
            Ok(out)
        })
    }

    /// Revokes a key; false when no unrevoked key has this id.
    pub async fn revoke_api_key(&self, id: &str) -> Result<bool, StoreError> {
        let sql = "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL";
        let affected = on_pool!(self, pool => {
            sqlx::query(sql).bind(now_secs()).bind(id).execute(pool).await?.rows_affected()
        });
        Ok(affected == 1)
    }
}
