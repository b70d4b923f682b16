//! Accepting Identity Assertion JWT Authorization Grants (draft-ietf-oauth-identity-assertion-
//! authz-grant): a client that got an ID-JAG from the enterprise IdP (RFC 8693 exchange) presents
//! it to Gatehouse's token endpoint as an RFC 7523 jwt-bearer grant, and gets an access token
//! for the resource without a browser.
//!
//! Checks: `typ` is `oauth-id-jag+jwt`; an asymmetric algorithm allowed for the issuer; the
//! signature against that trusted IdP's keys; `aud` is exactly Gatehouse's issuer; `client_id`
//! is the client that authenticated at the token endpoint; `exp` and `iat` present, a lifetime of
//! at most 10 minutes; `jti` present and not seen before.
//!
//! Replay detection is in memory: a second replica does not see the first one's `jti`s, so with
//! several replicas an assertion can be redeemed once per replica within its (short) lifetime.

use super::common::{string_at, strings_at};
use super::grants::GrantIdentity;
use super::idp_jwt::{asymmetric, header_of, idp_keys, issued_at, validation, verify_claims};
use crate::auth::jwks::{JwksCache, JwksSource};
use jsonwebtoken::Algorithm;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// The JWT `typ` of an ID-JAG.
pub const ID_JAG_TYPE: &str = "oauth-id-jag+jwt";
/// Longest lifetime (`exp - iat`) accepted.
pub const MAX_LIFETIME: Duration = Duration::from_secs(600);
/// Most `jti`s remembered at once; beyond, assertions are refused rather than forgotten.
const MAX_REPLAY_ENTRIES: usize = 100_000;
/// Longest `jti` accepted.
const MAX_JTI: usize = 256;
/// Every asymmetric algorithm, to parse a header before its issuer is known.
const ASYMMETRIC: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// An enterprise IdP whose ID-JAGs are accepted.
#[derive(Debug, Clone)]
pub struct TrustedIdp {
    /// Its issuer identifier, exactly as in `iss`.
    pub issuer: String,
    /// Its key set; by default read from its metadata.
    pub jwks_uri: Option<String>,
    /// Its metadata; by default the RFC 8414 and OpenID Connect well-known locations.
    pub discovery_url: Option<String>,
    /// Algorithms accepted from it (asymmetric only).
    pub algorithms: Vec<Algorithm>,
}

impl TrustedIdp {
    /// An IdP found by discovery, signing with RS256, PS256 or ES256.
    pub fn new(issuer: &str) -> TrustedIdp {
        TrustedIdp {
            issuer: issuer.to_owned(),
            jwks_uri: None,
            discovery_url: None,
            algorithms: vec![Algorithm::RS256, Algorithm::PS256, Algorithm::ES256],
        }
    }
}

/// Why an ID-JAG was refused; never contains the assertion.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum IdJagError {
    /// The verifier's settings are unusable.
    #[error("ID-JAG settings: {0}")]
    Config(String),
    /// The header type is not `oauth-id-jag+jwt`.
    #[error("the assertion's type is {0:?}, not oauth-id-jag+jwt")]
    WrongType(Option<String>),
    /// The issuer is not a trusted IdP.
    #[error("the assertion's issuer {0:?} is not trusted")]
    UntrustedIssuer(String),
    /// Malformed, badly signed, expired, or missing a standard claim.
    #[error("the assertion was refused: {0}")]
    Rejected(String),
    /// `aud` is not exactly Gatehouse's issuer.
    #[error("the assertion is not addressed to this authorization server (aud)")]
    WrongAudience,
    /// `client_id` is not the authenticated client.
    #[error("the assertion was issued to another client (client_id)")]
    WrongClient,
    /// `exp - iat` is too long.
    #[error("the assertion lives {0} s; at most 600 s is accepted")]
    TooLong(i64),
    /// No usable `jti`.
    #[error("the assertion has no usable jti")]
    MissingJti,
    /// The `jti` was seen before.
    #[error("the assertion was already used (jti)")]
    Replayed,
    /// The replay cache is full of live entries.
    #[error("too many assertions in flight; try again shortly")]
    Busy,
    /// The IdP's keys could not be read.
    #[error("the issuer's signing keys are unavailable: {0}")]
    KeysUnavailable(String),
}

impl IdJagError {
    /// The OAuth error code for the token endpoint's answer.
    pub fn oauth_error(&self) -> &'static str {
        match self {
            IdJagError::Config(_) | IdJagError::Busy | IdJagError::KeysUnavailable(_) => {
                "server_error"
            }
            _ => "invalid_grant",
        }
    }
}

/// What a verified ID-JAG grants.
#[derive(Debug, Clone, PartialEq)]
pub struct IdJagGrant {
    /// The IdP that issued it.
    pub issuer: String,
    /// The user at that IdP.
    pub subject: String,
    /// The client it was issued to (the authenticated client).
    pub client_id: String,
    /// Resource URIs (`resource`, a string or an array); may be empty.
    pub resource: Vec<String>,
    /// Scopes (`scope`), space-separated.
    pub scope: Option<String>,
    /// Expiry, seconds since the epoch.
    pub expires_at: i64,
    /// Every verified claim.
    pub claims: Value,
}

impl IdJagGrant {
    /// The identity for a [`super::grants::Grant`], read with the usual claim names.
    pub fn identity(&self) -> GrantIdentity {
        let p = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        GrantIdentity {
            idp_issuer: self.issuer.clone(),
            subject: self.subject.clone(),
            email: string_at(&self.claims, &p(&["email"])),
            name: string_at(&self.claims, &p(&["name"])),
            groups: strings_at(&self.claims, &p(&["groups"])),
            roles: strings_at(&self.claims, &p(&["roles", "realm_access.roles"])),
            tenant: string_at(&self.claims, &p(&["tid", "tenant", "org_id"])),
        }
    }
}

struct Trusted {
    idp: TrustedIdp,
    keys: std::sync::Arc<JwksCache>,
}

/// Verifies ID-JAGs from the trusted IdPs.
pub struct IdJagVerifier {
    trusted: HashMap<String, Trusted>,
    our_issuer: String,
    skew: Duration,
    /// (issuer, jti) → expiry in seconds since the epoch.
    seen: Mutex<HashMap<(String, String), i64>>,
}

impl IdJagVerifier {
    /// A verifier for assertions addressed to `our_issuer` (Gatehouse's issuer identifier).
    pub fn new(
        trusted: Vec<TrustedIdp>,
        our_issuer: &str,
        skew: Duration,
        http: reqwest::Client,
    ) -> Result<IdJagVerifier, IdJagError> {
        let mut map = HashMap::new();
        for idp in trusted {
            if idp.algorithms.is_empty() || idp.algorithms.iter().any(|a| !asymmetric(*a)) {
                return Err(IdJagError::Config(format!(
                    "issuer {:?}: algorithms must be asymmetric",
                    idp.issuer
                )));
            }
            let source = match (&idp.jwks_uri, &idp.discovery_url) {
                (Some(u), _) => JwksSource::Uri(u.clone()),
                (None, Some(d)) => JwksSource::Discover {
                    issuer: idp.issuer.clone(),
                    metadata_urls: vec![d.clone()],
                    accept_uri: Some(super::common::acceptable_endpoint),
                },
                (None, None) => JwksSource::Discover {
                    issuer: idp.issuer.clone(),
                    metadata_urls: crate::auth::metadata_candidates(&idp.issuer),
                    accept_uri: Some(super::common::acceptable_endpoint),
                },
            };
            let keys = idp_keys(&idp.issuer, source, &http);
            map.insert(idp.issuer.clone(), Trusted { idp, keys });
        }
        Ok(IdJagVerifier {
            trusted: map,
            our_issuer: our_issuer.to_owned(),
            skew,
            seen: Mutex::new(HashMap::new()),
        })
    }

    /// Verifies an assertion presented by the client that authenticated as
    /// `authenticated_client_id`; a verified assertion cannot be presented again.
    pub async fn verify(
        &self,
        assertion: &str,
        authenticated_client_id: &str,
    ) -> Result<IdJagGrant, IdJagError> {
        let rejected = |e: super::idp_jwt::VerifyError| match e {
            super::idp_jwt::VerifyError::KeysUnavailable(m) => IdJagError::KeysUnavailable(m),
            other => IdJagError::Rejected(other.to_string()),
        };
        let header = header_of(assertion, &ASYMMETRIC).map_err(rejected)?;
        // Media type names compare case-insensitively; "application/" may be omitted (RFC 7515).
        let typ_ok = header.typ.as_deref().is_some_and(|t| {
            t.eq_ignore_ascii_case(ID_JAG_TYPE)
                || t.eq_ignore_ascii_case(&format!("application/{ID_JAG_TYPE}"))
        });
        if !typ_ok {
            return Err(IdJagError::WrongType(header.typ.clone()));
        }
        let unverified: Value = jsonwebtoken::dangerous::insecure_decode_claims(assertion)
            .map_err(|_| IdJagError::Rejected("the claims do not parse".into()))?;
        let iss = unverified
            .get("iss")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let trusted = self
            .trusted
            .get(iss)
            .ok_or_else(|| IdJagError::UntrustedIssuer(iss.chars().take(200).collect()))?;
        if !trusted.idp.algorithms.contains(&header.alg) {
            return Err(IdJagError::Rejected(format!(
                "algorithm {:?} is not accepted from this issuer",
                header.alg
            )));
        }
        let v = validation(
            header.alg,
            std::slice::from_ref(&trusted.idp.issuer),
            self.skew,
        );
        let claims = verify_claims(assertion, &header, &trusted.keys, &v)
            .await
            .map_err(rejected)?;
        // Exactly one audience, ours: an assertion usable at several servers is not accepted.
        let aud_ok = match claims.get("aud") {
            Some(Value::String(a)) => *a == self.our_issuer,
            Some(Value::Array(a)) => {
                a.len() == 1 && a[0].as_str() == Some(self.our_issuer.as_str())
            }
            _ => false,
        };
        if !aud_ok {
            return Err(IdJagError::WrongAudience);
        }
        if claims.get("client_id").and_then(Value::as_str) != Some(authenticated_client_id) {
            return Err(IdJagError::WrongClient);
        }
        let iat = issued_at(&claims, self.skew).map_err(rejected)?;
        let exp = claims
            .get("exp")
            .and_then(Value::as_i64)
            .ok_or_else(|| IdJagError::Rejected("exp is not an integer".into()))?;
        if exp.saturating_sub(iat) > MAX_LIFETIME.as_secs() as i64 {
            return Err(IdJagError::TooLong(exp.saturating_sub(iat)));
        }
        let jti = match claims.get("jti").and_then(Value::as_str) {
            Some(j) if !j.is_empty() && j.len() <= MAX_JTI => j.to_owned(),
            _ => return Err(IdJagError::MissingJti),
        };
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| IdJagError::Rejected("the assertion has no subject".into()))?
            .to_owned();
        let resource = match claims.get("resource") {
            Some(Value::String(r)) => vec![r.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        };
        // Remembered only once everything else holds, so unverified garbage cannot fill the cache.
        self.remember(
            &trusted.idp.issuer,
            jti,
            exp.saturating_add(self.skew.as_secs() as i64),
        )?;
        Ok(IdJagGrant {
            issuer: trusted.idp.issuer.clone(),
            subject,
            client_id: authenticated_client_id.to_owned(),
            resource,
            scope: claims
                .get("scope")
                .and_then(Value::as_str)
                .map(str::to_owned),
            expires_at: exp,
            claims,
        })
    }

    fn remember(&self, issuer: &str, jti: String, until: i64) -> Result<(), IdJagError> {
        let now = crate::store::now_secs();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let key = (issuer.to_owned(), jti);
        if seen.get(&key).is_some_and(|&u| u > now) {
            return Err(IdJagError::Replayed);
        }
        if seen.len() >= MAX_REPLAY_ENTRIES {
            seen.retain(|_, &mut u| u > now);
            if seen.len() >= MAX_REPLAY_ENTRIES {
                return Err(IdJagError::Busy);
            }
        }
        seen.insert(key, until);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::testing::{MockIdp, TestKey, hmac, now, unsigned};
    use serde_json::json;

    const US: &str = "https://gatehouse.example";
    const CLIENT: &str = "https://agent.example/client.json";

    async fn setup() -> (MockIdp, TestKey, IdJagVerifier) {
        let key = TestKey::ec("jag-1", false);
        let mock = MockIdp::start(&[&key]).await;
        let http = reqwest::Client::new();
        let v = IdJagVerifier::new(
            vec![TrustedIdp::new(&mock.issuer)],
            US,
            Duration::from_secs(30),
            http,
        )
        .unwrap();
        (mock, key, v)
    }

    fn claims(iss: &str) -> Value {
        json!({
            "iss": iss, "sub": "user-7", "aud": US, "client_id": CLIENT,
            "jti": crate::oauth::common::random_secret(), "iat": now(), "exp": now() + 300,
            "resource": "https://gw.example/mcp/crm", "scope": "mcp:tools", "email": "u7@example.com", "tid": "t"
        })
    }

    #[tokio::test]
    async fn a_valid_assertion_is_accepted_once() {
        let (mock, key, v) = setup().await;
        let jag = key.sign(Some("oauth-id-jag+jwt"), &claims(&mock.issuer));
        let g = v.verify(&jag, CLIENT).await.unwrap();
        assert_eq!(
            (g.subject.as_str(), g.client_id.as_str()),
            ("user-7", CLIENT)
        );
        assert_eq!(
            (g.resource.clone(), g.scope.as_deref()),
            (
                vec!["https://gw.example/mcp/crm".to_string()],
                Some("mcp:tools")
            )
        );
        let id = g.identity();
        assert_eq!(
            (id.idp_issuer, id.email.as_deref(), id.tenant.as_deref()),
            (mock.issuer.clone(), Some("u7@example.com"), Some("t"))
        );
        let again = v.verify(&jag, CLIENT).await.unwrap_err();
        assert_eq!(again, IdJagError::Replayed);
        assert_eq!(again.oauth_error(), "invalid_grant");
        // The full media type, in any case, is the same type.
        let jag = key.sign(Some("Application/OAuth-ID-JAG+JWT"), &claims(&mock.issuer));
        assert!(v.verify(&jag, CLIENT).await.is_ok());
    }

    #[tokio::test]
    async fn bad_assertions_are_refused() {
        let (mock, key, v) = setup().await;
        let iss = mock.issuer.clone();
        let with = |k: &str, val: Value| {
            let mut c = claims(&iss);
            if val.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = val;
            }
            c
        };
        let typ = Some(ID_JAG_TYPE);
        type Check = fn(&IdJagError) -> bool;
        let cases: Vec<(String, &str, Check)> = vec![
            (key.sign(Some("JWT"), &claims(&iss)), "typ JWT", |e| {
                matches!(e, IdJagError::WrongType(_))
            }),
            (key.sign(None, &claims(&iss)), "no typ", |e| {
                matches!(e, IdJagError::WrongType(None))
            }),
            (
                key.sign(typ, &with("aud", json!("https://other-as.example"))),
                "aud",
                |e| *e == IdJagError::WrongAudience,
            ),
            (
                key.sign(typ, &with("aud", json!([US, "https://other-as.example"]))),
                "aud list",
                |e| *e == IdJagError::WrongAudience,
            ),
            (
                key.sign(typ, &with("client_id", json!("someone-else"))),
                "client_id",
                |e| *e == IdJagError::WrongClient,
            ),
            (
                key.sign(typ, &with("client_id", Value::Null)),
                "no client_id",
                |e| *e == IdJagError::WrongClient,
            ),
            (
                key.sign(typ, &with("exp", json!(now() + 3600))),
                "lifetime",
                |e| matches!(e, IdJagError::TooLong(_)),
            ),
            (
                key.sign(typ, &with("exp", Value::Null)),
                "no exp",
                |e| matches!(e, IdJagError::Rejected(m) if m.contains("exp")),
            ),
            (
                key.sign(typ, &with("iat", Value::Null)),
                "no iat",
                |e| matches!(e, IdJagError::Rejected(m) if m.contains("iat")),
            ),
            (key.sign(typ, &with("jti", Value::Null)), "no jti", |e| {
                *e == IdJagError::MissingJti
            }),
            (
                key.sign(typ, &with("exp", json!(now() - 600))),
                "expired",
                |e| matches!(e, IdJagError::Rejected(m) if m.contains("expired")),
            ),
            (
                key.sign(typ, &with("iss", json!("https://rogue.example"))),
                "issuer",
                |e| matches!(e, IdJagError::UntrustedIssuer(_)),
            ),
            (
                TestKey::ec("jag-1", true).sign(typ, &claims(&iss)),
                "signature",
                |e| matches!(e, IdJagError::Rejected(m) if m.contains("signature")),
            ),
            (
                unsigned(&claims(&iss)),
                "alg none",
                |e| matches!(e, IdJagError::Rejected(m) if m.contains("alg none")),
            ),
            (
                hmac(&claims(&iss), "jag-1", b"k"),
                "HS256",
                |e| matches!(e, IdJagError::Rejected(m) if m.contains("HS256")),
            ),
        ];
        for (jag, what, expected) in cases {
            let e = v.verify(&jag, CLIENT).await.unwrap_err();
            assert!(expected(&e), "{what}: {e:?}");
        }
        // A refused assertion's jti is not burnt: the good one with the same jti still passes.
        let good = claims(&iss);
        let mut wrong = good.clone();
        wrong["aud"] = json!("https://other-as.example");
        assert!(v.verify(&key.sign(typ, &wrong), CLIENT).await.is_err());
        assert!(v.verify(&key.sign(typ, &good), CLIENT).await.is_ok());
        assert!(
            IdJagVerifier::new(
                vec![TrustedIdp {
                    algorithms: vec![Algorithm::HS256],
                    ..TrustedIdp::new("https://x")
                }],
                US,
                Duration::ZERO,
                reqwest::Client::new()
            )
            .is_err()
        );
    }
}
