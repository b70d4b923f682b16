//! Tokens the façade issues: JWT access tokens (RFC 9068) signed with [`SigningKeys`], and
//! opaque refresh tokens kept in the store only as SHA-256 digests, rotated on every use with
//! replay detection (OAuth 2.1 §4.3.1, OAuth security BCP §4.14).
//!
//! # Verifying these access tokens in `auth/` without an HTTP round trip
//!
//! The inbound verifier (`auth::jwt::verify_jwt`) finds an `IssuerState` by `iss` and asks its
//! `key_for(kid, alg)`, which fetches a JWKS URL. [`SigningKeys::key_for`] has the same shape
//! but reads keys from memory (and the store on an unknown kid), so the hook is a key source an
//! `IssuerState` consults instead of its URL: `src/oauth/auth_hook.patch` adds a `LocalKeys`
//! trait and `Authenticator::with_local_issuer` to `auth/`, and the trait's impl for
//! [`SigningKeys`] here. Everything else (alg allow-list `["ES256"]`, `iss`, `exp`, `nbf`,
//! per-server `aud`, claim mapping with the default `ClaimPaths`) works unchanged, because
//! [`AccessTokenClaims`] uses the claim names the defaults read (`client_id`, `scope`,
//! `groups`, `roles`, `tenant`).

use super::common::{digest, now_ms, random_secret};
use super::grants::Grant;
use super::idp_jwt::asymmetric;
use super::keys::{KeyError, SIGNING_ALGORITHM, SigningKeys};
use crate::store::{Store, StoreError, on_pool};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use std::fmt;
use std::time::Duration;

/// The JWT `typ` of access tokens (RFC 9068 §2.1).
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";

/// Why a token could not be issued, refreshed or verified. Never contains a token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The refresh token is not valid (OAuth `invalid_grant`); the text says why, for logs.
    #[error("invalid_grant: {0}")]
    InvalidGrant(&'static str),
    /// An access token did not verify.
    #[error("invalid token: {0}")]
    InvalidToken(String),
    /// Signing failed.
    #[error("cannot sign the access token: {0}")]
    Signing(String),
    /// A stored grant does not parse.
    #[error("a stored refresh token grant is unreadable: {0}")]
    Corrupt(String),
    /// The signing keys could not be read.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl TokenError {
    /// The OAuth error code for a token error response.
    pub fn oauth_error(&self) -> &'static str {
        match self {
            TokenError::InvalidGrant(_) => "invalid_grant",
            TokenError::InvalidToken(_) => "invalid_token",
            _ => "server_error",
        }
    }
}

impl From<sqlx::Error> for TokenError {
    fn from(e: sqlx::Error) -> Self {
        TokenError::Store(e.into())
    }
}

/// The claims of an access token (RFC 9068 §2.2, plus the identity policy needs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessTokenClaims {
    /// Gatehouse's issuer identifier.
    pub iss: String,
    /// The user's subject at the IdP.
    pub sub: String,
    /// The virtual server's resource URI (RFC 8707).
    pub aud: String,
    /// The client the token was issued to.
    pub client_id: String,
    /// Granted scopes, space-separated.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scope: String,
    /// Group memberships.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Roles.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// Email address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Tenant or organisation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The enterprise IdP that authenticated the user (`sub` is unique only per IdP).
    pub idp_iss: String,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Issue time, seconds since the epoch.
    pub iat: i64,
    /// Unique token id.
    pub jti: String,
}

impl AccessTokenClaims {
    /// Claims for `grant`, issued by `issuer` now and valid for `lifetime`.
    pub fn for_grant(issuer: &str, grant: &Grant, lifetime: Duration) -> AccessTokenClaims {
        let now = crate::store::now_secs();
        let id = &grant.identity;
        AccessTokenClaims {
            iss: issuer.to_owned(),
            sub: id.subject.clone(),
            aud: grant.resource.clone(),
            client_id: grant.client_id.clone(),
            scope: grant.scope.clone(),
            groups: id.groups.clone(),
            roles: id.roles.clone(),
            email: id.email.clone(),
            name: id.name.clone(),
            tenant: id.tenant.clone(),
            idp_iss: id.idp_issuer.clone(),
            iat: now,
            exp: now.saturating_add(lifetime.as_secs() as i64),
            jti: random_secret(),
        }
    }
}

/// Signs an access token with the current key (header `typ: at+jwt`, `kid`).
pub fn issue_access_token(
    keys: &SigningKeys,
    claims: &AccessTokenClaims,
) -> Result<String, TokenError> {
    keys.sign(ACCESS_TOKEN_TYPE, claims)
        .map_err(|e| TokenError::Signing(e.to_string()))
}

/// Verifies an access token this façade issued for `audience` (for introspection, and as the
/// reference for the checks `auth/` applies).
pub async fn verify_access_token(
    keys: &SigningKeys,
    token: &str,
    issuer: &str,
    audience: &str,
    skew: Duration,
) -> Result<AccessTokenClaims, TokenError> {
    let bad = |m: &str| TokenError::InvalidToken(m.to_owned());
    let header = jsonwebtoken::decode_header(token).map_err(|_| bad("malformed token"))?;
    if !asymmetric(header.alg) || header.alg != SIGNING_ALGORITHM {
        return Err(bad("unexpected algorithm"));
    }
    // RFC 9068 §4: the type keeps other JWTs signed by these keys from passing as access tokens.
    if !header.typ.as_deref().is_some_and(|t| {
        t.eq_ignore_ascii_case(ACCESS_TOKEN_TYPE) || t.eq_ignore_ascii_case("application/at+jwt")
    }) {
        return Err(bad("not an access token (typ)"));
    }
    let (_, key) = keys
        .key_for(header.kid.as_deref(), header.alg)
        .await?
        .ok_or_else(|| bad("unknown signing key"))?;
    let mut v = jsonwebtoken::Validation::new(SIGNING_ALGORITHM);
    v.leeway = skew.as_secs();
    v.set_issuer(&[issuer]);
    v.set_audience(&[audience]);
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    jsonwebtoken::decode::<AccessTokenClaims>(token, &key, &v)
        .map(|d| d.claims)
        .map_err(|e| TokenError::InvalidToken(crate::auth::explain_jwt_error(&e)))
}

/// A refresh token as handed to the client; shown only by [`RefreshToken::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct RefreshToken(String);

impl RefreshToken {
    /// The token, for the token response.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RefreshToken(<redacted>)")
    }
}

/// Issues the first refresh token of `grant.family_id`. The family ends `lifetime` from now
/// whatever the rotations: Gatehouse does not ask the IdP again on refresh, so this bounds how
/// long a user disabled at the IdP keeps access.
pub async fn issue_refresh_token(
    store: &Store,
    grant: &Grant,
    lifetime: Duration,
) -> Result<RefreshToken, TokenError> {
    let expires = now_ms().saturating_add(lifetime.as_millis() as i64);
    insert_refresh(store, grant, expires).await
}

async fn insert_refresh(
    store: &Store,
    grant: &Grant,
    expires_at_ms: i64,
) -> Result<RefreshToken, TokenError> {
    let json = serde_json::to_string(grant).map_err(|e| TokenError::Corrupt(e.to_string()))?;
    let token = random_secret();
    let sql = "INSERT INTO oauth_refresh_tokens (token_hash, family_id, client_id, subject, grant_json, created_at_ms, expires_at_ms) \
               VALUES ($1, $2, $3, $4, $5, $6, $7)";
    on_pool!(store, pool => {
        sqlx::query(sql)
            .bind(digest(&token)).bind(&grant.family_id).bind(&grant.client_id)
            .bind(&grant.identity.subject).bind(&json).bind(now_ms()).bind(expires_at_ms)
            .execute(pool).await?;
    });
    Ok(RefreshToken(token))
}

/// The grant of a refresh token presented by `client_id`, without using it up: the token
/// endpoint checks the rest of the request (resource, scope) against it before [`rotate`], so
/// that a refused request leaves the client's token working. A token already used (a replay:
/// one of the two parties holds a stolen copy) revokes its whole family here already.
pub async fn peek(store: &Store, presented: &str, client_id: &str) -> Result<Grant, TokenError> {
    read_refresh(store, presented, client_id)
        .await
        .map(|(_, grant)| grant)
}

/// Reads and checks a refresh token: known, not revoked, not used (else its family is
/// revoked), issued to `client_id`, not expired.
async fn read_refresh(
    store: &Store,
    presented: &str,
    client_id: &str,
) -> Result<(RefreshRow, Grant), TokenError> {
    let hash = digest(presented);
    let now = now_ms();
    let select = "SELECT family_id, client_id, grant_json, expires_at_ms, used_at_ms, revoked_at_ms \
                  FROM oauth_refresh_tokens WHERE token_hash = $1";
    let row = on_pool!(store, pool => {
        match sqlx::query(select).bind(&hash).fetch_optional(pool).await? {
            None => return Err(TokenError::InvalidGrant("unknown refresh token")),
            Some(r) => RefreshRow {
                family_id: r.try_get("family_id")?,
                client_id: r.try_get("client_id")?,
                grant_json: r.try_get("grant_json")?,
                expires_at_ms: r.try_get("expires_at_ms")?,
                used_at_ms: r.try_get("used_at_ms")?,
                revoked_at_ms: r.try_get("revoked_at_ms")?,
            },
        }
    });
    if row.revoked_at_ms.is_some() {
        return Err(TokenError::InvalidGrant("the refresh token was revoked"));
    }
    if row.used_at_ms.is_some() {
        revoke_family(store, &row.family_id).await?;
        return Err(TokenError::InvalidGrant(
            "the refresh token was already used; its family is revoked",
        ));
    }
    // A client naming itself wrongly does not consume or revoke another client's token.
    if row.client_id != client_id {
        return Err(TokenError::InvalidGrant(
            "the refresh token was issued to another client",
        ));
    }
    if row.expires_at_ms <= now {
        return Err(TokenError::InvalidGrant("the refresh token has expired"));
    }
    let mut grant: Grant =
        serde_json::from_str(&row.grant_json).map_err(|e| TokenError::Corrupt(e.to_string()))?;
    grant.family_id = row.family_id.clone();
    Ok((row, grant))
}

/// Redeems a refresh token presented by `client_id`: marks it used and returns its successor
/// (with the same grant: RFC 6749 §6, the new token's scope is the old one's) and the grant.
/// A token already used revokes its whole family, so the successor stops working too.
pub async fn rotate(
    store: &Store,
    presented: &str,
    client_id: &str,
) -> Result<(RefreshToken, Grant), TokenError> {
    let hash = digest(presented);
    let now = now_ms();
    let (row, grant) = read_refresh(store, presented, client_id).await?;
    // The claim and the successor commit together; the WHERE clause makes the claim atomic, so
    // of two replicas racing with one token exactly one sees a row change.
    let claim = "UPDATE oauth_refresh_tokens SET used_at_ms = $1 \
                 WHERE token_hash = $2 AND used_at_ms IS NULL AND revoked_at_ms IS NULL AND expires_at_ms > $1";
    let insert = "INSERT INTO oauth_refresh_tokens (token_hash, family_id, client_id, subject, grant_json, created_at_ms, expires_at_ms) \
                  VALUES ($1, $2, $3, $4, $5, $6, $7)";
    let next = random_secret();
    let claimed = on_pool!(store, pool => {
        let mut tx = pool.begin().await?;
        let n = sqlx::query(claim).bind(now).bind(&hash).execute(&mut *tx).await?.rows_affected();
        if n == 1 {
            sqlx::query(insert)
                .bind(digest(&next)).bind(&row.family_id).bind(&row.client_id)
                .bind(&grant.identity.subject).bind(&row.grant_json).bind(now).bind(row.expires_at_ms)
                .execute(&mut *tx).await?;
            tx.commit().await?;
        } else {
            tx.rollback().await?;
        }
        n == 1
    });
    if !claimed {
        // Used or revoked between our read and our claim: the same token twice at once.
        revoke_family(store, &row.family_id).await?;
        return Err(TokenError::InvalidGrant(
            "the refresh token was already used; its family is revoked",
        ));
    }
    Ok((RefreshToken(next), grant))
}

struct RefreshRow {
    family_id: String,
    client_id: String,
    grant_json: String,
    expires_at_ms: i64,
    used_at_ms: Option<i64>,
    revoked_at_ms: Option<i64>,
}

/// RFC 7009 revocation of a refresh token: revokes its family. Unknown tokens, and tokens of
/// another client than `client_id` (when the caller authenticated one), are ignored: the
/// caller answers 200 whatever happens here, except a store failure (503).
pub async fn revoke(store: &Store, token: &str, client_id: Option<&str>) -> Result<(), TokenError> {
    let sql = "SELECT family_id, client_id FROM oauth_refresh_tokens WHERE token_hash = $1";
    let found: Option<(String, String)> = on_pool!(store, pool => {
        sqlx::query_as(sql).bind(digest(token)).fetch_optional(pool).await?
    });
    if let Some((family, owner)) = found
        && client_id.is_none_or(|c| c == owner)
    {
        revoke_family(store, &family).await?;
    }
    Ok(())
}

/// Revokes every refresh token of a family; returns how many were still live.
pub async fn revoke_family(store: &Store, family_id: &str) -> Result<u64, StoreError> {
    let sql = "UPDATE oauth_refresh_tokens SET revoked_at_ms = $1 WHERE family_id = $2 AND revoked_at_ms IS NULL";
    let n = on_pool!(store, pool => {
        sqlx::query(sql).bind(now_ms()).bind(family_id).execute(pool).await?.rows_affected()
    });
    if n > 0 {
        tracing::warn!(revoked = n, "revoked an oauth refresh token family");
    }
    Ok(n)
}

/// Deletes expired refresh tokens, and codes a day after they expired (kept that long so a
/// late second redemption still revokes what the first one led to). Returns rows deleted.
pub async fn purge_expired(store: &Store) -> Result<u64, TokenError> {
    let now = now_ms();
    let day = 86_400_000;
    let n = on_pool!(store, pool => {
        let a = sqlx::query("DELETE FROM oauth_refresh_tokens WHERE expires_at_ms <= $1")
            .bind(now).execute(pool).await?.rows_affected();
        let b = sqlx::query("DELETE FROM oauth_codes WHERE expires_at_ms <= $1")
            .bind(now - day).execute(pool).await?.rows_affected();
        a + b
    });
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::grants::tests::grant;
    use crate::oauth::keys::tests::{memory_store, test_keys};

    const HOUR: Duration = Duration::from_secs(3600);

    #[tokio::test]
    async fn access_tokens_are_rfc9068_jwts_signed_with_the_current_key() {
        let store = memory_store().await;
        let keys = test_keys(&store).await;
        let g = grant();
        let claims =
            AccessTokenClaims::for_grant("https://gw.example", &g, Duration::from_secs(300));
        let token = issue_access_token(&keys, &claims).unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        assert_eq!(header.kid, Some(keys.signing_kid()));
        assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
        let back = verify_access_token(
            &keys,
            &token,
            "https://gw.example",
            &g.resource,
            Duration::ZERO,
        )
        .await
        .unwrap();
        assert_eq!(back, claims);
        assert_eq!(back.exp - back.iat, 300);
        // Another audience, another issuer, or a JWT of another type do not pass.
        assert!(
            verify_access_token(
                &keys,
                &token,
                "https://gw.example",
                "https://gw.example/other",
                Duration::ZERO
            )
            .await
            .is_err()
        );
        assert!(
            verify_access_token(
                &keys,
                &token,
                "https://other.example",
                &g.resource,
                Duration::ZERO
            )
            .await
            .is_err()
        );
        let not_at = keys.sign("JWT", &claims).unwrap();
        let e = verify_access_token(
            &keys,
            &not_at,
            "https://gw.example",
            &g.resource,
            Duration::ZERO,
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("typ"), "{e}");
        // The claims map onto the inbound verifier's default claim paths.
        let json = serde_json::to_value(&claims).unwrap();
        let p = crate::auth::Principal::hypothetical(json, &Default::default()).unwrap();
        assert_eq!(
            (p.client_id(), p.scopes(), p.groups()),
            (
                Some(g.client_id.as_str()),
                &["mcp:tools".to_string()][..],
                &["sales".to_string()][..]
            )
        );
        assert_eq!(p.tenant(), Some("t-1"));
    }

    #[tokio::test]
    async fn a_refresh_token_rotates_and_a_replay_revokes_the_family() {
        let store = memory_store().await;
        let g = grant();
        let first = issue_refresh_token(&store, &g, HOUR).await.unwrap();
        let (second, got) = rotate(&store, first.expose(), &g.client_id).await.unwrap();
        assert_eq!(got, g);
        assert_ne!(first, second);
        // The first token again: a replay. It fails and takes the family down with it.
        let e = rotate(&store, first.expose(), &g.client_id)
            .await
            .unwrap_err();
        assert!(
            matches!(e, TokenError::InvalidGrant(m) if m.contains("already used")),
            "{e}"
        );
        assert_eq!(e.oauth_error(), "invalid_grant");
        let e = rotate(&store, second.expose(), &g.client_id)
            .await
            .unwrap_err();
        assert!(
            matches!(e, TokenError::InvalidGrant(m) if m.contains("revoked")),
            "{e}"
        );
        assert!(!format!("{second:?}").contains(second.expose()));
    }

    #[tokio::test]
    async fn peeking_leaves_the_token_usable_and_still_detects_a_replay() {
        let store = memory_store().await;
        let g = grant();
        let first = issue_refresh_token(&store, &g, HOUR).await.unwrap();
        // A request refused after the peek (wrong resource, wider scope) costs the client nothing.
        for _ in 0..3 {
            assert_eq!(peek(&store, first.expose(), &g.client_id).await.unwrap(), g);
        }
        let (second, _) = rotate(&store, first.expose(), &g.client_id).await.unwrap();
        // Peeking at a used token is a replay like any other: the family goes.
        let e = peek(&store, first.expose(), &g.client_id)
            .await
            .unwrap_err();
        assert!(
            matches!(e, TokenError::InvalidGrant(m) if m.contains("already used")),
            "{e}"
        );
        let e = peek(&store, second.expose(), &g.client_id)
            .await
            .unwrap_err();
        assert!(
            matches!(e, TokenError::InvalidGrant(m) if m.contains("revoked")),
            "{e}"
        );
    }

    #[tokio::test]
    async fn wrong_client_expired_unknown_and_revoked_tokens_fail() {
        let store = memory_store().await;
        let g = grant();
        let t = issue_refresh_token(&store, &g, HOUR).await.unwrap();
        let e = rotate(&store, t.expose(), "other-client")
            .await
            .unwrap_err();
        assert!(matches!(e, TokenError::InvalidGrant(m) if m.contains("another client")));
        // The rightful client can still use it.
        let (t, _) = rotate(&store, t.expose(), &g.client_id).await.unwrap();
        assert!(matches!(
            rotate(&store, "made-up", &g.client_id).await,
            Err(TokenError::InvalidGrant(_))
        ));
        // RFC 7009: another client's revocation is ignored, the owner's revokes the family.
        revoke(&store, t.expose(), Some("other-client"))
            .await
            .unwrap();
        revoke(&store, "made-up", None).await.unwrap();
        let (t, _) = rotate(&store, t.expose(), &g.client_id).await.unwrap();
        revoke(&store, t.expose(), Some(&g.client_id))
            .await
            .unwrap();
        let e = rotate(&store, t.expose(), &g.client_id).await.unwrap_err();
        assert!(matches!(e, TokenError::InvalidGrant(m) if m.contains("revoked")));
        // Expiry is fixed at the first issue and checked at redemption.
        let short = issue_refresh_token(&store, &g, Duration::from_millis(1))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let e = rotate(&store, short.expose(), &g.client_id)
            .await
            .unwrap_err();
        assert!(matches!(e, TokenError::InvalidGrant(m) if m.contains("expired")));
        assert!(purge_expired(&store).await.unwrap() >= 1);
    }

    #[tokio::test]
    async fn a_second_code_redemption_revokes_the_tokens_of_the_first() {
        use crate::oauth::grants::{issue_code, redeem_code};
        let store = memory_store().await;
        let g = grant();
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        let code = issue_code(&store, &g, "https://c.example/cb", challenge)
            .await
            .unwrap();
        let got = redeem_code(
            &store,
            &code,
            &g.client_id,
            "https://c.example/cb",
            verifier,
        )
        .await
        .unwrap();
        let refresh = issue_refresh_token(&store, &got, HOUR).await.unwrap();
        assert!(
            redeem_code(
                &store,
                &code,
                &g.client_id,
                "https://c.example/cb",
                verifier
            )
            .await
            .is_err()
        );
        let e = rotate(&store, refresh.expose(), &g.client_id)
            .await
            .unwrap_err();
        assert!(
            matches!(e, TokenError::InvalidGrant(m) if m.contains("revoked")),
            "{e}"
        );
    }
}

/// Lets `auth/` verify these tokens with the keys in memory (no HTTP call to ourselves).
impl crate::auth::LocalKeys for SigningKeys {
    fn key_for<'a>(
        &'a self,
        kid: Option<&'a str>,
        alg: jsonwebtoken::Algorithm,
    ) -> crate::auth::LocalKeyLookup<'a> {
        Box::pin(async move {
            SigningKeys::key_for(self, kid, alg)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

#[cfg(test)]
mod hook_tests {
    use super::*;
    #[tokio::test]
    async fn oauth_hook_verifies_through_the_authenticator() {
        let store = crate::oauth::keys::tests::memory_store().await;
        let keys = std::sync::Arc::new(crate::oauth::keys::tests::test_keys(&store).await);
        let settings: crate::config::Auth = serde_saphyr::from_str(
            "issuers: { gatehouse: { issuer: \"https://gw.example\", algorithms: [ES256] } }",
        )
        .unwrap();
        let mut auth = crate::auth::Authenticator::new(&settings, None, None);
        assert!(auth.use_local_keys("gatehouse", keys.clone()));
        let g = crate::oauth::grants::tests::grant();
        let token = issue_access_token(
            &keys,
            &AccessTokenClaims::for_grant("https://gw.example", &g, Duration::from_secs(60)),
        )
        .unwrap();
        assert!(auth.verify(&token).await.is_ok());
        let other = keys
            .sign(
                "at+jwt",
                &serde_json::json!({"iss": "https://gw.example", "sub": "x", "exp": 1}),
            )
            .unwrap();
        assert!(auth.verify(&other).await.is_err());
    }
}
