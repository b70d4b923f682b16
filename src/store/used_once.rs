//! Values that may be used once (consent forms, ID-JAG `jti`s), shared by every replica.

use super::{Store, StoreError, on_pool};

impl Store {
    /// Records the first use of `digest` (a `kind` of value, kept until `expires_at_ms`);
    /// `false` when it was used before. Atomic: of two replicas racing, one wins.
    pub async fn use_once(
        &self,
        kind: &str,
        digest: &str,
        expires_at_ms: i64,
    ) -> Result<bool, StoreError> {
        let sql = "INSERT INTO oauth_used_once (digest, kind, expires_at_ms) VALUES ($1, $2, $3) \
                   ON CONFLICT (digest) DO NOTHING";
        let inserted = on_pool!(self, pool => {
            sqlx::query(sql)
                .bind(digest)
                .bind(kind)
                .bind(expires_at_ms)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(inserted == 1)
    }

    /// Whether `digest` was recorded (and has not yet expired).
    pub async fn was_used(&self, kind: &str, digest: &str) -> Result<bool, StoreError> {
        let sql = "SELECT COUNT(*) FROM oauth_used_once WHERE digest = $1 AND kind = $2 \
                   AND expires_at_ms >= $3";
        let now = crate::audit::now_ms();
        let n: i64 = on_pool!(self, pool => {
            sqlx::query_scalar(sql).bind(digest).bind(kind).bind(now).fetch_one(pool).await?
        });
        Ok(n > 0)
    }

    /// Forgets single-use values that expired before `now_ms` (they are refused as expired
    /// anyway); returns how many.
    pub async fn forget_used_once(&self, now_ms: i64) -> Result<u64, StoreError> {
        let sql = "DELETE FROM oauth_used_once WHERE expires_at_ms < $1";
        Ok(on_pool!(self, pool => {
            sqlx::query(sql).bind(now_ms).execute(pool).await?.rows_affected()
        }))
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn a_value_is_used_once_and_forgotten_after_it_expires() {
        let store = crate::store::Store::open("sqlite::memory:", std::path::Path::new("."), 1)
            .await
            .unwrap();
        assert!(store.use_once("consent", "d1", 2_000).await.unwrap());
        assert!(!store.use_once("consent", "d1", 2_000).await.unwrap());
        let later = crate::audit::now_ms() + 60_000;
        assert!(store.use_once("ended", "d3", later).await.unwrap());
        assert!(store.was_used("ended", "d3").await.unwrap());
        assert!(!store.was_used("consent", "d3").await.unwrap());
        assert!(!store.was_used("consent", "d1").await.unwrap(), "expired");
        assert!(store.use_once("id-jag", "d2", 5_000).await.unwrap());
        assert_eq!(store.forget_used_once(3_000).await.unwrap(), 1);
        assert!(!store.use_once("id-jag", "d2", 5_000).await.unwrap());
    }
}
