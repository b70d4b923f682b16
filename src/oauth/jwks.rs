//! Verifying JWTs signed by an enterprise IdP (ID tokens, ID-JAGs): the IdP's key set, fetched
//! lazily and cached, re-fetched on an unknown `kid` at most every 30 seconds so that forged
//! kids cannot make Gatehouse hammer the IdP; and the header and claim checks both share.

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use serde::Deserialize;
use serde_json::Value;
use std::time::{Duration, Instant};

/// Largest JWT accepted from a client or an IdP (Entra ID tokens with groups run to ~10 KB).
pub(crate) const MAX_JWT_BYTES: usize = 64 * 1024;
/// Least time between two key-set fetches caused by unknown kids.
const UNKNOWN_KID_REFETCH: Duration = Duration::from_secs(30);
/// Key sets are re-read after this long even when every kid is known.
const MAX_AGE: Duration = Duration::from_secs(3600);

/// Where a key set is found.
#[derive(Debug, Clone)]
pub(crate) enum JwksSource {
    /// A known `jwks_uri`.
    Uri(String),
    /// Read `jwks_uri` from the first of these metadata documents that names `issuer`.
    Discover {
        /// The issuer the metadata must name.
        issuer: String,
        /// Candidate metadata URLs, tried in order.
        metadata_urls: Vec<String>,
    },
}

/// Why a JWT was not accepted; texts never contain the token.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub(crate) enum VerifyError {
    /// Longer than [`MAX_JWT_BYTES`].
    #[error("the token is larger than {MAX_JWT_BYTES} bytes")]
    TooLarge,
    /// Not a JWS, or its header does not parse.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// `alg: none`.
    #[error("unsigned tokens (alg none) are not accepted")]
    Unsigned,
    /// A symmetric algorithm, or one not configured for the issuer.
    #[error("algorithm {0:?} is not accepted")]
    Algorithm(Algorithm),
    /// The key set could not be read.
    #[error("the signing keys are unavailable: {0}")]
    KeysUnavailable(String),
    /// No key fits the token's kid and algorithm.
    #[error("{0}")]
    UnknownKey(String),
    /// Signature or standard claim checks failed.
    #[error("{0}")]
    Invalid(String),
}

#[derive(Deserialize)]
struct RawKeySet {
    keys: Vec<Value>,
}

#[derive(Deserialize)]
struct Metadata {
    issuer: String,
    #[serde(default)]
    jwks_uri: Option<String>,
}

#[derive(Default)]
struct State {
    jwks_uri: Option<String>,
    keys: Vec<(Option<String>, Jwk, DecodingKey)>,
    fetched: Option<Instant>,
    last_refetch: Option<Instant>,
}

/// One issuer's key set, cached.
pub(crate) struct JwksCache {
    source: JwksSource,
    http: reqwest::Client,
    state: tokio::sync::Mutex<State>,
}

impl JwksCache {
    /// A cache that fetches nothing until a key is needed.
    pub(crate) fn new(source: JwksSource, http: reqwest::Client) -> Self {
        JwksCache {
            source,
            http,
            state: Default::default(),
        }
    }

    /// The key for `kid` (or the single fitting key when the token names none) whose type fits
    /// `alg`.
    pub(crate) async fn key(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<DecodingKey, VerifyError> {
        let mut state = self.state.lock().await;
        let stale = state.fetched.is_none_or(|t| t.elapsed() >= MAX_AGE);
        if stale {
            self.fetch(&mut state).await?;
        }
        if let Some(k) = pick(&state.keys, kid, alg)? {
            return Ok(k);
        }
        // An unknown kid may mean the IdP rotated; look again, but not too often.
        let may_refetch = state
            .last_refetch
            .is_none_or(|t| t.elapsed() >= UNKNOWN_KID_REFETCH);
        if !stale && may_refetch {
            state.last_refetch = Some(Instant::now());
            self.fetch(&mut state).await?;
            if let Some(k) = pick(&state.keys, kid, alg)? {
                return Ok(k);
            }
        }
        Err(VerifyError::UnknownKey(match kid {
            Some(k) => format!("the signing key {k:?} is not in the issuer's key set"),
            None => {
                format!("the token names no key (kid) and the issuer has no single {alg:?} key")
            }
        }))
    }

    async fn fetch(&self, state: &mut State) -> Result<(), VerifyError> {
        let uri = match (&self.source, &state.jwks_uri) {
            (JwksSource::Uri(u), _) | (_, Some(u)) => u.clone(),
            (
                JwksSource::Discover {
                    issuer,
                    metadata_urls,
                },
                None,
            ) => {
                let u = discover_jwks_uri(&self.http, issuer, metadata_urls).await?;
                state.jwks_uri = Some(u.clone());
                u
            }
        };
        let set: RawKeySet = crate::auth::fetch_json(&self.http, &uri, None)
            .await
            .map_err(|e| VerifyError::KeysUnavailable(format!("{uri}: {e}")))?;
        // Unusable keys (encryption keys, symmetric keys, unknown types) are skipped one by one.
        state.keys = set
            .keys
            .into_iter()
            .filter_map(|k| serde_json::from_value::<Jwk>(k).ok())
            .filter(|k| !matches!(k.algorithm, AlgorithmParameters::OctetKey(_)))
            .filter(
                |k| !matches!(&k.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature),
            )
            .filter_map(|jwk| {
                let key = DecodingKey::from_jwk(&jwk).ok()?;
                Some((jwk.common.key_id.clone(), jwk, key))
            })
            .collect();
        state.fetched = Some(Instant::now());
        Ok(())
    }
}

/// `jwks_uri` from the first metadata document that names `issuer` (RFC 8414 §3.3, OpenID
/// Connect Discovery §4.3: a document naming another issuer must not be used).
async fn discover_jwks_uri(
    http: &reqwest::Client,
    issuer: &str,
    urls: &[String],
) -> Result<String, VerifyError> {
    let mut errors = Vec::new();
    for url in urls {
        match crate::auth::fetch_json::<Metadata>(http, url, None).await {
            Ok(m) if m.issuer != issuer => {
                errors.push(format!("{url}: names issuer {:?}", m.issuer))
            }
            Ok(m) => match m.jwks_uri {
                Some(u) if super::common::acceptable_endpoint(&u) => return Ok(u),
                Some(u) => errors.push(format!("{url}: jwks_uri {u:?} is not https")),
                None => errors.push(format!("{url}: no jwks_uri")),
            },
            Err(e) => errors.push(format!("{url}: {e}")),
        }
    }
    Err(VerifyError::KeysUnavailable(format!(
        "no usable metadata for issuer {issuer:?} ({})",
        errors.join("; ")
    )))
}

fn pick(
    keys: &[(Option<String>, Jwk, DecodingKey)],
    kid: Option<&str>,
    alg: Algorithm,
) -> Result<Option<DecodingKey>, VerifyError> {
    let found = match kid {
        Some(kid) => match keys.iter().find(|k| k.0.as_deref() == Some(kid)) {
            Some(k) => k,
            None => return Ok(None),
        },
        None => {
            let mut fitting = keys
                .iter()
                .filter(|k| crate::auth::key_fits_algorithm(&k.1, alg));
            match (fitting.next(), fitting.next()) {
                (Some(k), None) => k,
                _ => return Ok(None),
            }
        }
    };
    // A key of another type under the right kid is an attack or a misconfiguration, not a
    // reason to try other keys.
    if !crate::auth::key_fits_algorithm(&found.1, alg) {
        return Err(VerifyError::Invalid(format!(
            "the token's algorithm {alg:?} does not match the type of its key"
        )));
    }
    Ok(Some(found.2.clone()))
}

/// Whether `alg` is asymmetric (HMAC would let anyone holding the shared secret forge).
pub(crate) fn asymmetric(alg: Algorithm) -> bool {
    !matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

/// The header of a JWT whose algorithm is one of `allowed` (never `none`, never HMAC).
pub(crate) fn header_of(token: &str, allowed: &[Algorithm]) -> Result<Header, VerifyError> {
    if token.len() > MAX_JWT_BYTES {
        return Err(VerifyError::TooLarge);
    }
    if token.split('.').count() != 3 {
        return Err(VerifyError::Malformed("not a signed JWT".into()));
    }
    let header =
        jsonwebtoken::decode_header(token).map_err(|e| match crate::auth::raw_alg(token) {
            Some(a) if a.eq_ignore_ascii_case("none") => VerifyError::Unsigned,
            _ => VerifyError::Malformed(format!("the header does not parse: {e}")),
        })?;
    if !asymmetric(header.alg) || !allowed.contains(&header.alg) {
        return Err(VerifyError::Algorithm(header.alg));
    }
    Ok(header)
}

/// Verifies signature and standard claims, returning the claims.
pub(crate) async fn verify_claims(
    token: &str,
    header: &Header,
    keys: &JwksCache,
    validation: &Validation,
) -> Result<Value, VerifyError> {
    let key = keys.key(header.kid.as_deref(), header.alg).await?;
    jsonwebtoken::decode::<Value>(token, &key, validation)
        .map(|d| d.claims)
        .map_err(|e| VerifyError::Invalid(crate::auth::explain_jwt_error(&e)))
}

/// The common validation: this algorithm only, `iss` one of `issuers`, `exp` required, `nbf`
/// checked, `skew` of leeway; audience checks are left to the caller.
pub(crate) fn validation(alg: Algorithm, issuers: &[String], skew: Duration) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = skew.as_secs();
    v.validate_nbf = true;
    v.validate_aud = false;
    v.set_issuer(issuers);
    v.set_required_spec_claims(&["exp", "iss", "sub"]);
    v
}

/// Checks `iat`: present, numeric, not in the future beyond `skew`; returns it.
pub(crate) fn issued_at(claims: &Value, skew: Duration) -> Result<i64, VerifyError> {
    let iat = claims
        .get("iat")
        .and_then(Value::as_i64)
        .ok_or_else(|| VerifyError::Invalid("the token has no numeric iat claim".into()))?;
    if iat > crate::store::now_secs() + skew.as_secs() as i64 {
        return Err(VerifyError::Invalid(
            "the token was issued in the future (iat); check the clocks".into(),
        ));
    }
    Ok(iat)
}
