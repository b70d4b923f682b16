//! What a login grants, and the two states a login passes through: the pending login between
//! `/authorize` and the IdP's callback, and the authorization code the client redeems.
//!
//! Codes live in the store (several replicas; single use is enforced by one atomic UPDATE).
//! Pending logins are sealed into the `state` sent to the IdP instead: `/authorize` is
//! unauthenticated, so a table would let anyone make the store write a row per request, and the
//! sealed value needs no cleanup and works across replicas without a round trip. The IdP's code
//! is single use, so a replayed callback cannot complete twice; the value is bound to the
//! browser that started the login by a cookie (its digest is sealed in), which stops an attacker
//! from sending a victim a login that lands in the attacker's client.

use super::common::{digest, now_ms, random_secret, s256, same};
use super::pkce::verify_s256;
use crate::keyring::Keyring;
use crate::store::{Store, StoreError, on_pool};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use std::fmt;
use std::time::Duration;

/// How long an authorization code can be redeemed.
pub const CODE_LIFETIME: Duration = Duration::from_secs(60);
/// Longest `state` a client may send (it travels inside ours, to the IdP and back).
const MAX_CLIENT_STATE: usize = 512;
/// Longest client id, redirect URI, resource or scope accepted into a login.
const MAX_FIELD: usize = 2048;
/// Longest sealed `state` accepted back from the IdP.
const MAX_SEALED_STATE: usize = 8192;
/// What pending logins are sealed with, so no other sealed value opens as one.
const PENDING_AAD: &[u8] = b"gatehouse-oauth-pending-login";

/// Why a code could not be issued or redeemed, or a callback not accepted. Never contains a
/// code, verifier or token.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    /// The grant is not valid (OAuth `invalid_grant`); the text says why, for logs.
    #[error("invalid_grant: {0}")]
    InvalidGrant(&'static str),
    /// A parameter is malformed (OAuth `invalid_request`).
    #[error("invalid_request: {0}")]
    InvalidRequest(String),
    /// The IdP callback does not belong to a login this browser started, or came too late.
    #[error("the login cannot be completed: {0}; start again from the client")]
    Login(&'static str),
    /// A stored row does not parse.
    #[error("a stored authorization code is unreadable: {0}")]
    Corrupt(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl GrantError {
    /// The OAuth error code for a token or authorization error response.
    pub fn oauth_error(&self) -> &'static str {
        match self {
            GrantError::InvalidGrant(_) => "invalid_grant",
            GrantError::InvalidRequest(_) | GrantError::Login(_) => "invalid_request",
            GrantError::Corrupt(_) | GrantError::Store(_) => "server_error",
        }
    }
}

impl From<sqlx::Error> for GrantError {
    fn from(e: sqlx::Error) -> Self {
        GrantError::Store(e.into())
    }
}

/// Who a grant is for, as the enterprise IdP (or an ID-JAG) asserted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantIdentity {
    /// The IdP's issuer.
    pub idp_issuer: String,
    /// The subject at that IdP.
    pub subject: String,
    /// Email address, when the IdP vouches for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Group memberships.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Roles.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Tenant or organisation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

impl From<&super::idp::IdpIdentity> for GrantIdentity {
    fn from(i: &super::idp::IdpIdentity) -> Self {
        GrantIdentity {
            idp_issuer: i.issuer.clone(),
            subject: i.subject.clone(),
            email: i.email.clone(),
            name: i.name.clone(),
            groups: i.groups.clone(),
            roles: i.roles.clone(),
            tenant: i.tenant.clone(),
        }
    }
}

/// What a client was granted: the access tokens and refresh tokens issued from one login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The client it was granted to.
    pub client_id: String,
    /// The virtual server's resource URI (the access token's `aud`).
    pub resource: String,
    /// Granted scopes, space-separated.
    pub scope: String,
    /// The user.
    pub identity: GrantIdentity,
    /// The refresh-token family of this login (revoked as a whole on replay).
    #[serde(skip)]
    pub family_id: String,
}

impl Grant {
    /// A grant starting a new refresh-token family (e.g. from an ID-JAG).
    pub fn new(client_id: &str, resource: &str, scope: &str, identity: GrantIdentity) -> Grant {
        Grant {
            client_id: client_id.to_owned(),
            resource: resource.to_owned(),
            scope: scope.to_owned(),
            identity,
            family_id: random_secret(),
        }
    }
}

/// What `/authorize` received, checked by the endpoint (registered client, redirect URI).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginRequest {
    /// The client.
    pub client_id: String,
    /// Where the code goes, exactly as the client sent it.
    pub redirect_uri: String,
    /// The client's `state`, returned to it unchanged.
    pub client_state: Option<String>,
    /// The client's PKCE S256 challenge.
    pub code_challenge: String,
    /// The virtual server's resource URI.
    pub resource: String,
    /// Requested scopes, space-separated.
    pub scope: String,
}

impl fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginRequest")
            .field("client_id", &self.client_id)
            .field("redirect_uri", &self.redirect_uri)
            .field("resource", &self.resource)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// A login in progress at the IdP.
#[derive(Clone, Serialize, Deserialize)]
pub struct PendingLogin {
    /// What the client asked for.
    pub request: LoginRequest,
    /// The OpenID Connect nonce sent to the IdP.
    pub nonce: String,
    /// Gatehouse's own PKCE verifier towards the IdP.
    pub idp_verifier: String,
    /// Milliseconds since the epoch.
    pub expires_at_ms: i64,
    /// Digest of the cookie that binds the login to the browser.
    browser: String,
}

impl fmt::Debug for PendingLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingLogin")
            .field("request", &self.request)
            .field("expires_at_ms", &self.expires_at_ms)
            .finish_non_exhaustive()
    }
}

impl PendingLogin {
    /// Starts a login living `lifetime`; returns it and the value of the cookie the endpoint
    /// must set (HttpOnly, Secure, SameSite=Lax, path of the callback) and read back at the
    /// callback.
    pub fn start(
        request: LoginRequest,
        lifetime: Duration,
    ) -> Result<(PendingLogin, String), GrantError> {
        let too_long = |v: &str| v.len() > MAX_FIELD;
        if [
            &request.client_id,
            &request.redirect_uri,
            &request.resource,
            &request.scope,
        ]
        .into_iter()
        .any(|v| too_long(v))
            || request
                .client_state
                .as_ref()
                .is_some_and(|s| s.len() > MAX_CLIENT_STATE)
        {
            return Err(GrantError::InvalidRequest("a parameter is too long".into()));
        }
        if !valid_challenge(&request.code_challenge) {
            return Err(GrantError::InvalidRequest(
                "code_challenge must be an S256 challenge (43 base64url characters)".into(),
            ));
        }
        let cookie = random_secret();
        let login = PendingLogin {
            request,
            nonce: random_secret(),
            idp_verifier: random_secret(),
            expires_at_ms: now_ms().saturating_add(lifetime.as_millis() as i64),
            browser: digest(&cookie),
        };
        Ok((login, cookie))
    }

    /// The S256 challenge of [`PendingLogin::idp_verifier`], for the IdP's authorize URL.
    pub fn idp_challenge(&self) -> String {
        s256(&self.idp_verifier)
    }

    /// The `state` to send to the IdP.
    pub fn seal(&self, sealer: &Keyring) -> String {
        // Serialising plain strings and numbers cannot fail.
        let json = serde_json::to_vec(self).unwrap_or_default();
        sealer.seal(&json, PENDING_AAD)
    }

    /// The login a callback's `state` belongs to, when it was sealed by us, has not expired and
    /// `cookie` is the value set on the browser that started it.
    pub fn open(
        sealer: &Keyring,
        state: &str,
        cookie: Option<&str>,
    ) -> Result<PendingLogin, GrantError> {
        if state.len() > MAX_SEALED_STATE {
            return Err(GrantError::Login(
                "the state parameter is not one Gatehouse issued",
            ));
        }
        let json = sealer
            .open(state, PENDING_AAD)
            .map_err(|_| GrantError::Login("the state parameter is not one Gatehouse issued"))?;
        let login: PendingLogin = serde_json::from_slice(&json)
            .map_err(|_| GrantError::Login("the state parameter is not one Gatehouse issued"))?;
        if login.expires_at_ms <= now_ms() {
            return Err(GrantError::Login("the login took too long"));
        }
        match cookie {
            Some(c) if same(&digest(c), &login.browser) => Ok(login),
            _ => Err(GrantError::Login("it was started in another browser")),
        }
    }
}

/// Whether `c` has the shape of an S256 challenge.
fn valid_challenge(c: &str) -> bool {
    c.len() == 43
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Stores a code for `grant` (its `family_id` names the refresh tokens it will lead to) and
/// returns it; it can be redeemed once, within [`CODE_LIFETIME`], by the same client with the
/// same redirect URI and the verifier of `code_challenge`.
pub async fn issue_code(
    store: &Store,
    grant: &Grant,
    redirect_uri: &str,
    code_challenge: &str,
) -> Result<String, GrantError> {
    if !valid_challenge(code_challenge) {
        return Err(GrantError::InvalidRequest(
            "code_challenge must be an S256 challenge".into(),
        ));
    }
    let identity =
        serde_json::to_string(&grant.identity).map_err(|e| GrantError::Corrupt(e.to_string()))?;
    let code = random_secret();
    let sql = "INSERT INTO oauth_codes (code_hash, client_id, redirect_uri, code_challenge, resource, scope, identity, family_id, expires_at_ms) \
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
    let expires = now_ms().saturating_add(CODE_LIFETIME.as_millis() as i64);
    on_pool!(store, pool => {
        sqlx::query(sql)
            .bind(digest(&code)).bind(&grant.client_id).bind(redirect_uri).bind(code_challenge)
            .bind(&grant.resource).bind(&grant.scope).bind(&identity).bind(&grant.family_id).bind(expires)
            .execute(pool).await?;
    });
    Ok(code)
}

/// Redeems a code: once only (two replicas cannot both succeed), before it expires, by the
/// client it was issued to, with the exact redirect URI and the PKCE verifier. A second
/// presentation revokes the refresh tokens issued from the first (OAuth 2.1 §4.1.3).
pub async fn redeem_code(
    store: &Store,
    code: &str,
    client_id: &str,
    redirect_uri: &str,
    verifier: &str,
) -> Result<Grant, GrantError> {
    let hash = digest(code);
    let now = now_ms();
    let select = "SELECT client_id, redirect_uri, code_challenge, resource, scope, identity, family_id, expires_at_ms \
                  FROM oauth_codes WHERE code_hash = $1";
    // Consumed before any other check: a failed attempt (wrong verifier, wrong client) burns
    // the code, so it cannot be tried again.
    let consume = "UPDATE oauth_codes SET consumed_at_ms = $1 WHERE code_hash = $2 AND consumed_at_ms IS NULL";
    let (row, consumed) = on_pool!(store, pool => {
        let row = match sqlx::query(select).bind(&hash).fetch_optional(pool).await? {
            None => return Err(GrantError::InvalidGrant("unknown authorization code")),
            Some(r) => CodeRow {
                client_id: r.try_get("client_id")?,
                redirect_uri: r.try_get("redirect_uri")?,
                code_challenge: r.try_get("code_challenge")?,
                resource: r.try_get("resource")?,
                scope: r.try_get("scope")?,
                identity: r.try_get("identity")?,
                family_id: r.try_get("family_id")?,
                expires_at_ms: r.try_get("expires_at_ms")?,
            },
        };
        let consumed = sqlx::query(consume).bind(now).bind(&hash).execute(pool).await?.rows_affected();
        (row, consumed)
    });
    if consumed != 1 {
        super::tokens::revoke_family(store, &row.family_id).await?;
        return Err(GrantError::InvalidGrant(
            "the authorization code was already used; tokens issued from it are revoked",
        ));
    }
    if row.expires_at_ms <= now {
        return Err(GrantError::InvalidGrant(
            "the authorization code has expired",
        ));
    }
    if row.client_id != client_id {
        return Err(GrantError::InvalidGrant(
            "the authorization code was issued to another client",
        ));
    }
    if row.redirect_uri != redirect_uri {
        return Err(GrantError::InvalidGrant(
            "redirect_uri differs from the authorization request",
        ));
    }
    if !verify_s256(verifier, &row.code_challenge) {
        return Err(GrantError::InvalidGrant(
            "code_verifier does not match the code_challenge",
        ));
    }
    let identity =
        serde_json::from_str(&row.identity).map_err(|e| GrantError::Corrupt(e.to_string()))?;
    Ok(Grant {
        client_id: row.client_id,
        resource: row.resource,
        scope: row.scope,
        identity,
        family_id: row.family_id,
    })
}

struct CodeRow {
    client_id: String,
    redirect_uri: String,
    code_challenge: String,
    resource: String,
    scope: String,
    identity: String,
    family_id: String,
    expires_at_ms: i64,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::oauth::keys::tests::{memory_store, sealer};

    pub(crate) fn grant() -> Grant {
        Grant::new(
            "https://client.example/cimd.json",
            "https://gw.example/mcp/crm",
            "mcp:tools",
            GrantIdentity {
                idp_issuer: "https://idp.example".into(),
                subject: "u-1".into(),
                email: Some("u1@example.com".into()),
                name: None,
                groups: vec!["sales".into()],
                roles: vec![],
                tenant: Some("t-1".into()),
            },
        )
    }

    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    const REDIRECT: &str = "http://127.0.0.1:33418/callback";

    #[tokio::test]
    async fn a_code_is_redeemed_once_with_its_client_redirect_and_verifier() {
        let store = memory_store().await;
        let g = grant();
        let code = issue_code(&store, &g, REDIRECT, CHALLENGE).await.unwrap();
        let got = redeem_code(&store, &code, &g.client_id, REDIRECT, VERIFIER)
            .await
            .unwrap();
        assert_eq!(got, g);
        let again = redeem_code(&store, &code, &g.client_id, REDIRECT, VERIFIER)
            .await
            .unwrap_err();
        assert!(
            matches!(again, GrantError::InvalidGrant(m) if m.contains("already used")),
            "{again}"
        );
        assert_eq!(again.oauth_error(), "invalid_grant");
        assert!(!again.to_string().contains(&code));
        let unknown = redeem_code(&store, "nope", &g.client_id, REDIRECT, VERIFIER)
            .await
            .unwrap_err();
        assert!(matches!(unknown, GrantError::InvalidGrant(_)));
    }

    #[tokio::test]
    async fn wrong_redirect_client_or_verifier_fail_and_burn_the_code() {
        let store = memory_store().await;
        let g = grant();
        let cases: [(&str, &str, &str, &str); 3] = [
            (
                "https://evil.example/cb",
                &g.client_id,
                VERIFIER,
                "redirect_uri",
            ),
            (REDIRECT, "other-client", VERIFIER, "another client"),
            (
                REDIRECT,
                &g.client_id,
                "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXj",
                "code_verifier",
            ),
        ];
        for (redirect, client, verifier, why) in cases {
            let code = issue_code(&store, &g, REDIRECT, CHALLENGE).await.unwrap();
            let e = redeem_code(&store, &code, client, redirect, verifier)
                .await
                .unwrap_err();
            assert!(
                matches!(&e, GrantError::InvalidGrant(m) if m.contains(why)),
                "{e}"
            );
            // The right values no longer help: the attempt consumed the code.
            let e = redeem_code(&store, &code, &g.client_id, REDIRECT, VERIFIER)
                .await
                .unwrap_err();
            assert!(matches!(e, GrantError::InvalidGrant(_)));
        }
        assert!(
            issue_code(&store, &g, REDIRECT, "plain-challenge")
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn an_expired_code_fails() {
        let store = memory_store().await;
        let g = grant();
        let code = issue_code(&store, &g, REDIRECT, CHALLENGE).await.unwrap();
        on_pool!(&store, p => { sqlx::query("UPDATE oauth_codes SET expires_at_ms = 1").execute(p).await.unwrap(); });
        let e = redeem_code(&store, &code, &g.client_id, REDIRECT, VERIFIER)
            .await
            .unwrap_err();
        assert!(matches!(e, GrantError::InvalidGrant(m) if m.contains("expired")));
    }

    fn request() -> LoginRequest {
        LoginRequest {
            client_id: "c".into(),
            redirect_uri: REDIRECT.into(),
            client_state: Some("xyz".into()),
            code_challenge: CHALLENGE.into(),
            resource: "https://gw.example/mcp".into(),
            scope: "mcp:tools".into(),
        }
    }

    #[test]
    fn a_pending_login_opens_only_in_its_browser_and_in_time() {
        let s = sealer("k1", 1);
        let (login, cookie) = PendingLogin::start(request(), Duration::from_secs(600)).unwrap();
        let state = login.seal(&s);
        assert!(!state.contains(&login.nonce) && !state.contains(&login.idp_verifier));
        let back = PendingLogin::open(&s, &state, Some(&cookie)).unwrap();
        assert_eq!((&back.request, &back.nonce), (&request(), &login.nonce));
        assert_eq!(back.idp_challenge(), s256(&login.idp_verifier));
        for (state, cookie) in [
            (state.as_str(), None),
            (state.as_str(), Some("other")),
            ("v1.k1.AAAA.BBBB", Some(cookie.as_str())),
        ] {
            assert!(matches!(
                PendingLogin::open(&s, state, cookie),
                Err(GrantError::Login(_))
            ));
        }
        let debug = format!("{login:?}");
        assert!(
            !debug.contains(&login.nonce)
                && !debug.contains(&login.idp_verifier)
                && !debug.contains("xyz"),
            "{debug}"
        );
        let (late, cookie) = PendingLogin::start(request(), Duration::ZERO).unwrap();
        let e = PendingLogin::open(&s, &late.seal(&s), Some(&cookie)).unwrap_err();
        assert!(e.to_string().contains("too long"), "{e}");
        let mut bad = request();
        bad.client_state = Some("x".repeat(600));
        assert!(PendingLogin::start(bad, Duration::from_secs(1)).is_err());
        let mut bad = request();
        bad.code_challenge = "short".into();
        assert!(PendingLogin::start(bad, Duration::from_secs(1)).is_err());
    }
}
