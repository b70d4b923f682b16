//! The façade's signing keys: ES256 (P-256) keys Gatehouse generates itself and keeps in the
//! store, so that every replica signs and verifies with the same keys.
//!
//! The private key is stored only sealed (AES-256-GCM, [`Keyring`]) and bound to its `kid`
//! (the RFC 7638 thumbprint of the public key). The public key is always re-derived from the
//! opened private key and its thumbprint compared with the `kid`, so a row written by someone
//! holding only the database (not the sealing key) is neither trusted nor published.

use super::common::now_ms;
use crate::keyring::{Keyring, SealError};
use crate::store::{Store, StoreError, on_pool};
use arc_swap::ArcSwap;
use jsonwebtoken::jwk::{Jwk, KeyAlgorithm, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use serde_json::{Value, json};
use sqlx::Row;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The only algorithm the façade signs with.
pub const SIGNING_ALGORITHM: Algorithm = Algorithm::ES256;

/// Least time between two store reads caused by tokens naming an unknown `kid`, so forged
/// kids cannot turn into a flood of queries.
const UNKNOWN_KID_RELOAD_INTERVAL: Duration = Duration::from_secs(30);

/// Why the signing keys could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing the key table failed.
    #[error("oauth signing keys: {0}")]
    Store(#[from] StoreError),
    /// A stored key was sealed under a sealing key id that is not configured; refusing rather
    /// than silently replacing keys other replicas still sign with.
    #[error(
        "oauth signing key {kid:?} is sealed with a sealing key that is not configured ({source}); \
         keep the old sealing key configured after a rotation"
    )]
    SealingKeyMissing {
        /// The signing key's id.
        kid: String,
        /// What the sealer said.
        source: SealError,
    },
    /// Generating or encoding a new key failed.
    #[error("oauth signing keys: cannot generate a key: {0}")]
    Generate(String),
    /// After rotation no key could be used to sign (should not happen).
    #[error("oauth signing keys: no usable signing key in the store")]
    NoUsableKey,
}

/// A key that verifies tokens and appears in the JWKS.
struct PublishedKey {
    kid: String,
    jwk: Jwk,
    key: DecodingKey,
}

/// The key that signs now.
struct SigningKey {
    kid: String,
    encoding: EncodingKey,
    created_at_ms: i64,
}

/// One consistent view of the key table.
struct KeyRing {
    signing: SigningKey,
    /// The signing key first, then other active keys, then recently retired ones.
    published: Vec<PublishedKey>,
    jwks: Value,
}

/// The façade's signing keys, shared by every request; cheap to read, refreshed from the store.
pub struct SigningKeys {
    store: Store,
    sealer: Arc<Keyring>,
    rotate_after: Duration,
    keep_retired: Duration,
    ring: ArcSwap<KeyRing>,
    last_unknown_kid_reload: Mutex<Option<Instant>>,
}

impl fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ring = self.ring.load();
        f.debug_struct("SigningKeys")
            .field("signing_kid", &ring.signing.kid)
            .field(
                "published",
                &ring.published.iter().map(|k| &k.kid).collect::<Vec<_>>(),
            )
            .field("rotate_after", &self.rotate_after)
            .field("keep_retired", &self.keep_retired)
            .finish_non_exhaustive()
    }
}

/// The associated data a private key is sealed with: it binds the sealed value to its row.
fn aad(kid: &str) -> Vec<u8> {
    format!("gatehouse-oauth-signing-key\0{kid}").into_bytes()
}

/// The public JWK (with kid, alg and use) and thumbprint of a PKCS#8 private key.
fn public_of(pkcs8: &[u8]) -> Result<(EncodingKey, Jwk, String), String> {
    let encoding = EncodingKey::from_ec_der(pkcs8);
    let mut jwk =
        Jwk::from_encoding_key(&encoding, SIGNING_ALGORITHM).map_err(|e| e.to_string())?;
    jwk.common = Default::default();
    let kid = jwk
        .thumbprint(ThumbprintHash::SHA256)
        .map_err(|e| e.to_string())?;
    jwk.common.key_id = Some(kid.clone());
    jwk.common.key_algorithm = Some(KeyAlgorithm::ES256);
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    Ok((encoding, jwk, kid))
}

impl SigningKeys {
    /// Loads the keys from the store, creating the first key (or a successor to a key older
    /// than `rotate_after`). `keep_retired` is how long a replaced key stays published and
    /// trusted: at least the access tokens' lifetime plus clock skew.
    pub async fn load_or_create(
        store: Store,
        sealer: Arc<Keyring>,
        rotate_after: Duration,
        keep_retired: Duration,
    ) -> Result<SigningKeys, KeyError> {
        let ring = sync(&store, &sealer, rotate_after, keep_retired, true).await?;
        Ok(SigningKeys {
            store,
            sealer,
            rotate_after,
            keep_retired,
            ring: ArcSwap::from_pointee(ring),
            last_unknown_kid_reload: Mutex::new(None),
        })
    }

    /// Re-reads the store (other replicas may have rotated) and rotates when the signing key is
    /// older than `rotate_after`; call it periodically (e.g. every minute). On error the
    /// previous keys stay in use.
    pub async fn refresh(&self) -> Result<(), KeyError> {
        let ring = sync(
            &self.store,
            &self.sealer,
            self.rotate_after,
            self.keep_retired,
            true,
        )
        .await?;
        self.ring.store(Arc::new(ring));
        Ok(())
    }

    /// The public keys as a JWK Set (RFC 7517): the signing key, other active keys and keys
    /// retired less than `keep_retired` ago.
    pub fn jwks(&self) -> Value {
        self.ring.load().jwks.clone()
    }

    /// The id of the key that signs now.
    pub fn signing_kid(&self) -> String {
        self.ring.load().signing.kid.clone()
    }

    /// Signs `claims` with the current key; the header gets `alg`, `kid` and `typ`.
    pub(crate) fn sign<T: serde::Serialize>(
        &self,
        typ: &str,
        claims: &T,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let ring = self.ring.load();
        let mut header = jsonwebtoken::Header::new(SIGNING_ALGORITHM);
        header.typ = Some(typ.to_owned());
        header.kid = Some(ring.signing.kid.clone());
        jsonwebtoken::encode(&header, claims, &ring.signing.encoding)
    }

    /// The key that verifies a token signed by this façade with `alg` under `kid`; an unknown
    /// kid re-reads the store (another replica may have rotated), at most every 30 seconds.
    /// `Ok(None)`: no such key (the token is not ours, or its key is long retired).
    pub async fn key_for(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Option<(Jwk, DecodingKey)>, KeyError> {
        // Our tokens always name their key and are always ES256.
        let Some(kid) = kid else { return Ok(None) };
        if alg != SIGNING_ALGORITHM {
            return Ok(None);
        }
        if let Some(found) = self.find(kid) {
            return Ok(Some(found));
        }
        let may_reload = {
            let mut last = self
                .last_unknown_kid_reload
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let due = last.is_none_or(|t| t.elapsed() >= UNKNOWN_KID_RELOAD_INTERVAL);
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        if !may_reload {
            return Ok(None);
        }
        let ring = sync(
            &self.store,
            &self.sealer,
            self.rotate_after,
            self.keep_retired,
            false,
        )
        .await?;
        self.ring.store(Arc::new(ring));
        Ok(self.find(kid))
    }

    fn find(&self, kid: &str) -> Option<(Jwk, DecodingKey)> {
        let ring = self.ring.load();
        ring.published
            .iter()
            .find(|k| k.kid == kid)
            .map(|k| (k.jwk.clone(), k.key.clone()))
    }
}

/// Reads the usable keys; with `rotate`, creates a key when none signs or the signing one is
/// due, then reads again so that a key another replica created at the same time is seen.
async fn sync(
    store: &Store,
    sealer: &Keyring,
    rotate_after: Duration,
    keep_retired: Duration,
    rotate: bool,
) -> Result<KeyRing, KeyError> {
    let now = now_ms();
    let ring = read(store, sealer, keep_retired, now).await?;
    let due = match &ring {
        Some(r) => now.saturating_sub(r.signing.created_at_ms) >= rotate_after.as_millis() as i64,
        None => true,
    };
    if !(rotate && due) {
        return ring.ok_or(KeyError::NoUsableKey);
    }
    create(store, sealer, keep_retired, now).await?;
    read(store, sealer, keep_retired, now_ms())
        .await?
        .ok_or(KeyError::NoUsableKey)
}

/// The key ring as stored, or `None` when no active key can sign.
async fn read(
    store: &Store,
    sealer: &Keyring,
    keep_retired: Duration,
    now: i64,
) -> Result<Option<KeyRing>, KeyError> {
    let retired_after = now.saturating_sub(keep_retired.as_millis() as i64);
    let sql = "SELECT kid, alg, sealed_private, created_at_ms, retired_at_ms FROM oauth_signing_keys \
               WHERE retired_at_ms IS NULL OR retired_at_ms > $1 \
               ORDER BY (retired_at_ms IS NULL) DESC, created_at_ms DESC, kid DESC";
    let rows: Vec<(String, String, String, i64, Option<i64>)> = on_pool!(store, pool => {
        let rows = sqlx::query(sql).bind(retired_after).fetch_all(pool).await.map_err(StoreError::from)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            out.push((
                row.try_get("kid").map_err(StoreError::from)?,
                row.try_get("alg").map_err(StoreError::from)?,
                row.try_get("sealed_private").map_err(StoreError::from)?,
                row.try_get("created_at_ms").map_err(StoreError::from)?,
                row.try_get("retired_at_ms").map_err(StoreError::from)?,
            ));
        }
        out
    });
    let mut signing = None;
    let mut published = Vec::with_capacity(rows.len());
    for (kid, alg, sealed, created_at_ms, retired_at_ms) in rows {
        if alg != "ES256" {
            tracing::warn!(%kid, %alg, "skipping an oauth signing key with an unsupported algorithm");
            continue;
        }
        let pkcs8 = match sealer.open(&sealed, &aad(&kid)) {
            Ok(p) => p,
            Err(source @ SealError::UnknownKey(_)) => {
                return Err(KeyError::SealingKeyMissing { kid, source });
            }
            Err(e) => {
                // Tampered with, or bound to another row: never trusted.
                tracing::warn!(%kid, error = %e, "skipping an oauth signing key that does not open");
                continue;
            }
        };
        let (encoding, jwk, thumbprint) = match public_of(&pkcs8) {
            Ok(parts) => parts,
            Err(e) => {
                tracing::warn!(%kid, error = %e, "skipping an oauth signing key that does not parse");
                continue;
            }
        };
        if thumbprint != kid {
            tracing::warn!(%kid, "skipping an oauth signing key whose kid is not its thumbprint");
            continue;
        }
        let Ok(key) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        if retired_at_ms.is_none() && signing.is_none() {
            signing = Some(SigningKey {
                kid: kid.clone(),
                encoding,
                created_at_ms,
            });
        }
        published.push(PublishedKey { kid, jwk, key });
    }
    let Some(signing) = signing else {
        return Ok(None);
    };
    let jwks = json!({
        "keys": published
            .iter()
            .filter_map(|k| serde_json::to_value(&k.jwk).ok())
            .collect::<Vec<_>>()
    });
    Ok(Some(KeyRing {
        signing,
        published,
        jwks,
    }))
}

/// Generates, seals and stores a new key; retires the keys created before it and deletes keys
/// retired longer than `keep_retired` ago.
async fn create(
    store: &Store,
    sealer: &Keyring,
    keep_retired: Duration,
    now: i64,
) -> Result<(), KeyError> {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
    let document = EcdsaKeyPair::generate_pkcs8(
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        &aws_lc_rs::rand::SystemRandom::new(),
    )
    .map_err(|_| KeyError::Generate("the P-256 key generator failed".into()))?;
    let pkcs8 = document.as_ref();
    let (_, jwk, kid) = public_of(pkcs8).map_err(KeyError::Generate)?;
    let public = serde_json::to_string(&jwk).map_err(|e| KeyError::Generate(e.to_string()))?;
    let sealed = sealer.seal(pkcs8, &aad(&kid));
    let insert = "INSERT INTO oauth_signing_keys (kid, alg, public_jwk, sealed_private, created_at_ms, retired_at_ms) \
                  VALUES ($1, 'ES256', $2, $3, $4, NULL)";
    // Only keys created before this one: when two replicas rotate at once, the later key
    // survives and the earlier one is retired (still published), never both.
    let retire = "UPDATE oauth_signing_keys SET retired_at_ms = $1 \
                  WHERE retired_at_ms IS NULL AND created_at_ms < $2";
    let prune =
        "DELETE FROM oauth_signing_keys WHERE retired_at_ms IS NOT NULL AND retired_at_ms <= $1";
    let prune_before = now.saturating_sub(keep_retired.as_millis() as i64);
    on_pool!(store, pool => {
        sqlx::query(insert).bind(&kid).bind(&public).bind(&sealed).bind(now)
            .execute(pool).await.map_err(StoreError::from)?;
        sqlx::query(retire).bind(now).bind(now).execute(pool).await.map_err(StoreError::from)?;
        sqlx::query(prune).bind(prune_before).execute(pool).await.map_err(StoreError::from)?;
    });
    tracing::info!(%kid, "created a new oauth signing key");
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::Secret;

    pub(crate) async fn memory_store() -> Store {
        Store::open("sqlite::memory:", std::path::Path::new("."), 1)
            .await
            .unwrap()
    }

    pub(crate) fn sealer(id: &str, byte: u8) -> Arc<Keyring> {
        use base64::Engine;
        let key = base64::engine::general_purpose::STANDARD.encode([byte; 32]);
        Arc::new(Keyring::new(&[(id.to_owned(), Secret::new(key))]).unwrap())
    }

    pub(crate) async fn test_keys(store: &Store) -> SigningKeys {
        let day = Duration::from_secs(86_400);
        SigningKeys::load_or_create(store.clone(), sealer("k1", 1), day, day)
            .await
            .unwrap()
    }

    fn kids(jwks: &Value) -> Vec<String> {
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect()
    }

    #[tokio::test]
    async fn a_key_is_created_once_and_published_with_its_thumbprint() {
        let store = memory_store().await;
        let keys = test_keys(&store).await;
        let jwks = keys.jwks();
        assert_eq!(kids(&jwks), [keys.signing_kid()]);
        let k = &jwks["keys"][0];
        assert_eq!(
            (k["kty"].as_str(), k["crv"].as_str()),
            (Some("EC"), Some("P-256"))
        );
        assert_eq!(
            (k["alg"].as_str(), k["use"].as_str()),
            (Some("ES256"), Some("sig"))
        );
        assert!(k.get("d").is_none(), "private part published: {k}");
        let jwk: Jwk = serde_json::from_value(k.clone()).unwrap();
        assert_eq!(
            jwk.thumbprint(ThumbprintHash::SHA256).unwrap(),
            keys.signing_kid()
        );
        // A second replica loads the same key instead of creating one.
        let again = test_keys(&store).await;
        assert_eq!(again.signing_kid(), keys.signing_kid());
        // The store holds no usable private key.
        let (sealed,): (String,) = on_pool!(&store, p => sqlx::query_as("SELECT sealed_private FROM oauth_signing_keys").fetch_one(p).await.unwrap());
        assert!(sealed.starts_with("v1.k1."), "{sealed}");
        assert!(!format!("{keys:?}").contains(&sealed));
    }

    #[tokio::test]
    async fn rotation_publishes_the_new_key_and_keeps_the_retired_one() {
        let store = memory_store().await;
        let keys = SigningKeys::load_or_create(
            store.clone(),
            sealer("k1", 1),
            Duration::from_millis(1),
            Duration::from_secs(3600),
        )
        .await
        .unwrap();
        let first = keys.signing_kid();
        tokio::time::sleep(Duration::from_millis(5)).await;
        keys.refresh().await.unwrap();
        let second = keys.signing_kid();
        assert_ne!(first, second);
        assert_eq!(kids(&keys.jwks()), [second.clone(), first.clone()]);
        // Both verify; tokens of the retired key stay valid until it is dropped.
        for kid in [&first, &second] {
            assert!(
                keys.key_for(Some(kid), Algorithm::ES256)
                    .await
                    .unwrap()
                    .is_some()
            );
        }
        assert!(
            keys.key_for(Some(&second), Algorithm::RS256)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            keys.key_for(None, Algorithm::ES256)
                .await
                .unwrap()
                .is_none()
        );
        // Retired keys disappear after keep_retired.
        let short = SigningKeys::load_or_create(
            store.clone(),
            sealer("k1", 1),
            Duration::from_secs(3600),
            Duration::from_millis(1),
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        short.refresh().await.unwrap();
        assert_eq!(kids(&short.jwks()), [second]);
    }

    #[tokio::test]
    async fn rows_written_without_the_sealing_key_are_not_trusted() {
        let store = memory_store().await;
        let keys = test_keys(&store).await;
        let genuine = keys.signing_kid();
        // A forger with database access and a sealing key of the same id but other bytes.
        let forger = SigningKeys::load_or_create(
            memory_store().await,
            sealer("k1", 9),
            Duration::from_secs(60),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
        let forged_kid = forger.signing_kid();
        let (public, sealed): (String, String) = on_pool!(&forger.store, p => sqlx::query_as("SELECT public_jwk, sealed_private FROM oauth_signing_keys").fetch_one(p).await.unwrap());
        on_pool!(&store, p => { sqlx::query("INSERT INTO oauth_signing_keys VALUES ($1, 'ES256', $2, $3, $4, NULL)")
            .bind(&forged_kid).bind(&public).bind(&sealed).bind(now_ms() + 1000).execute(p).await.unwrap(); });
        keys.refresh().await.unwrap();
        assert_eq!(keys.signing_kid(), genuine);
        assert_eq!(kids(&keys.jwks()), [genuine]);
        assert!(
            keys.key_for(Some(&forged_kid), Algorithm::ES256)
                .await
                .unwrap()
                .is_none()
        );
        // A missing sealing key is a configuration error, not a reason to replace keys.
        let err = SigningKeys::load_or_create(
            store,
            sealer("other", 1),
            Duration::from_secs(60),
            Duration::from_secs(60),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, KeyError::SealingKeyMissing { .. }), "{err}");
    }
}
