//! Dynamically registered OAuth clients of the authorization-server façade. A confidential
//! client's secret is stored only as its SHA-256; the metadata is the validated JSON.

use super::{Store, StoreError, on_pool};
use sqlx::Row;

/// A registered client as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthClientRecord {
    /// The issued identifier (`gh_…`).
    pub client_id: String,
    /// The validated client metadata, as JSON.
    pub metadata: String,
    /// Hex SHA-256 of the client secret; `None` for a public client.
    pub secret_hash: Option<String>,
    /// The address the registration came from, for investigations.
    pub registered_ip: Option<String>,
    /// Milliseconds since the epoch.
    pub created_at_ms: i64,
    /// When a token was last issued to it, milliseconds since the epoch.
    pub last_used_ms: Option<i64>,
    /// When it was revoked, milliseconds since the epoch; `None` while usable.
    pub revoked_at_ms: Option<i64>,
}

macro_rules! client_columns {
    () => {
        "client_id, metadata, secret_hash, registered_ip, created_at_ms, last_used_ms, revoked_at_ms"
    };
}

macro_rules! client_from_row {
    ($row:expr) => {{
        let row = $row;
        OAuthClientRecord {
            client_id: row.try_get("client_id")?,
            metadata: row.try_get("metadata")?,
            secret_hash: row.try_get("secret_hash")?,
            registered_ip: row.try_get("registered_ip")?,
            created_at_ms: row.try_get("created_at_ms")?,
            last_used_ms: row.try_get("last_used_ms")?,
            revoked_at_ms: row.try_get("revoked_at_ms")?,
        }
    }};
}

impl Store {
    /// Stores a newly registered client; fails if the id exists.
    pub async fn insert_oauth_client(&self, c: &OAuthClientRecord) -> Result<(), StoreError> {
        let sql = concat!(
            "INSERT INTO oauth_clients (",
            client_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7)"
        );
        on_pool!(self, pool => {
            sqlx::query(sql)
                .bind(&c.client_id)
                .bind(&c.metadata)
                .bind(&c.secret_hash)
                .bind(&c.registered_ip)
                .bind(c.created_at_ms)
                .bind(c.last_used_ms)
                .bind(c.revoked_at_ms)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// The client with this id, revoked or not.
    pub async fn oauth_client(
        &self,
        client_id: &str,
    ) -> Result<Option<OAuthClientRecord>, StoreError> {
        let sql = concat!(
            "SELECT ",
            client_columns!(),
            " FROM oauth_clients WHERE client_id = $1"
        );
        on_pool!(self, pool => {
            match sqlx::query(sql).bind(client_id).fetch_optional(pool).await? {
                Some(row) => Ok(Some(client_from_row!(row))),
                None => Ok(None),
            }
        })
    }

    /// Records that the client was used at `now_ms`.
    pub async fn touch_oauth_client(&self, client_id: &str, now_ms: i64) -> Result<(), StoreError> {
        let sql = "UPDATE oauth_clients SET last_used_ms = $1 WHERE client_id = $2";
        on_pool!(self, pool => {
            sqlx::query(sql).bind(now_ms).bind(client_id).execute(pool).await?;
        });
        Ok(())
    }

    /// Revokes a client; false when no unrevoked client has this id.
    pub async fn revoke_oauth_client(
        &self,
        client_id: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let sql = "UPDATE oauth_clients SET revoked_at_ms = $1 WHERE client_id = $2 AND revoked_at_ms IS NULL";
        let affected = on_pool!(self, pool => {
            sqlx::query(sql).bind(now_ms).bind(client_id).execute(pool).await?.rows_affected()
        });
        Ok(affected == 1)
    }

    /// Every registered client, newest first.
    pub async fn oauth_clients(&self) -> Result<Vec<OAuthClientRecord>, StoreError> {
        let sql = concat!(
            "SELECT ",
            client_columns!(),
            " FROM oauth_clients ORDER BY created_at_ms DESC, client_id"
        );
        on_pool!(self, pool => {
            let rows = sqlx::query(sql).fetch_all(pool).await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                out.push(client_from_row!(row));
            }
            Ok(out)
        })
    }

    /// How many clients are stored, revoked ones included (they still take space).
    pub async fn count_oauth_clients(&self) -> Result<u64, StoreError> {
        let sql = "SELECT COUNT(*) AS n FROM oauth_clients";
        let n: i64 = on_pool!(self, pool => {
            sqlx::query(sql).fetch_one(pool).await?.try_get("n")?
        });
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Deletes clients not used since `older_than_ms`: never used and registered before it, or
    /// last used before it. Returns how many were deleted.
    pub async fn delete_unused_oauth_clients(&self, older_than_ms: i64) -> Result<u64, StoreError> {
        let sql = "DELETE FROM oauth_clients WHERE \
                   (last_used_ms IS NULL AND created_at_ms < $1) OR last_used_ms < $1";
        let affected = on_pool!(self, pool => {
            sqlx::query(sql).bind(older_than_ms).execute(pool).await?.rows_affected()
        });
        Ok(affected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(id: &str, created_at_ms: i64) -> OAuthClientRecord {
        OAuthClientRecord {
            client_id: id.into(),
            metadata: format!(r#"{{"client_id":"{id}"}}"#),
            secret_hash: Some(format!("hash-of-{id}")),
            registered_ip: Some("192.0.2.7".into()),
            created_at_ms,
            last_used_ms: None,
            revoked_at_ms: None,
        }
    }

    /// Everything the table must do, whatever the database.
    async fn exercise(store: &Store) {
        assert_eq!(store.count_oauth_clients().await.unwrap(), 0);
        assert!(store.oauth_clients().await.unwrap().is_empty());
        store
            .insert_oauth_client(&client("gh_old", 1_000))
            .await
            .unwrap();
        let mut public = client("gh_public", 2_000);
        public.secret_hash = None;
        public.registered_ip = None;
        store.insert_oauth_client(&public).await.unwrap();
        store
            .insert_oauth_client(&client("gh_used", 500))
            .await
            .unwrap();
        assert!(
            store
                .insert_oauth_client(&client("gh_old", 9))
                .await
                .is_err(),
            "ids are unique"
        );

        assert_eq!(
            store.oauth_client("gh_old").await.unwrap(),
            Some(client("gh_old", 1_000))
        );
        assert_eq!(store.oauth_client("gh_public").await.unwrap(), Some(public));
        assert_eq!(store.oauth_client("gh_none").await.unwrap(), None);
        let ids: Vec<_> = store
            .oauth_clients()
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.client_id)
            .collect();
        assert_eq!(ids, ["gh_public", "gh_old", "gh_used"], "newest first");
        assert_eq!(store.count_oauth_clients().await.unwrap(), 3);

        store.touch_oauth_client("gh_used", 5_000).await.unwrap();
        assert_eq!(
            store
                .oauth_client("gh_used")
                .await
                .unwrap()
                .unwrap()
                .last_used_ms,
            Some(5_000)
        );

        assert!(store.revoke_oauth_client("gh_old", 3_000).await.unwrap());
        assert!(
            !store.revoke_oauth_client("gh_old", 4_000).await.unwrap(),
            "already revoked"
        );
        assert!(!store.revoke_oauth_client("gh_none", 4_000).await.unwrap());
        assert_eq!(
            store
                .oauth_client("gh_old")
                .await
                .unwrap()
                .unwrap()
                .revoked_at_ms,
            Some(3_000)
        );

        // Cutoff 1_500: gh_old (never used, created 1_000) goes; gh_used (created 500 but used
        // at 5_000) and gh_public (created 2_000) stay.
        assert_eq!(store.delete_unused_oauth_clients(1_500).await.unwrap(), 1);
        assert!(store.oauth_client("gh_old").await.unwrap().is_none());
        // Cutoff 6_000: both remaining are unused since before it.
        assert_eq!(store.delete_unused_oauth_clients(6_000).await.unwrap(), 2);
        assert_eq!(store.count_oauth_clients().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn oauth_clients_in_sqlite() {
        let store = Store::open("sqlite::memory:", std::path::Path::new("."), 1)
            .await
            .unwrap();
        exercise(&store).await;
    }

    #[tokio::test]
    async fn oauth_clients_in_postgres() {
        use sqlx::postgres::PgConnectOptions;
        use std::str::FromStr;
        const URL: &str = "postgres://postgres@127.0.0.1:5432/test";
        // Digits only after the prefix: the name goes into DDL as is.
        let schema = format!("gh_oauth_{}_{}", std::process::id(), crate::audit::now_ms());
        let admin = sqlx::PgPool::connect(URL).await.unwrap_or_else(|e| {
            panic!("PostgreSQL must run on 127.0.0.1:5432 with a database `test` ({e})")
        });
        let ddl = |sql: String| sqlx::query(sqlx::AssertSqlSafe(sql));
        ddl(format!("CREATE SCHEMA {schema}"))
            .execute(&admin)
            .await
            .unwrap();
        let options = PgConnectOptions::from_str(URL)
            .unwrap()
            .options([("search_path", schema.as_str())]);
        let store = Store::open_postgres(options, 2, "test").await.unwrap();
        exercise(&store).await;
        store.close().await;
        ddl(format!("DROP SCHEMA {schema} CASCADE"))
            .execute(&admin)
            .await
            .unwrap();
    }
}
