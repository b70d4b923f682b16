//! A trusted issuer at run time: its metadata (RFC 8414 / OpenID Connect discovery) and its
//! signing keys, fetched lazily, cached, and re-fetched on an unknown `kid` at most once per
//! `jwks_refetch_interval` so that forged `kid`s cannot make the gateway hammer the IdP.

use super::AuthError;
use crate::config::{Auth, Issuer};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest metadata, JWKS or introspection document read from an issuer.
pub(super) const MAX_DOCUMENT_BYTES: usize = 1 << 20;

/// The parts of authorization server metadata the gateway uses.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct Metadata {
    pub issuer: String,
    #[serde(default)]
    pub jwks_uri: Option<String>,
    #[serde(default)]
    pub introspection_endpoint: Option<String>,
}

/// A key set as published, before each key is parsed.
#[derive(Deserialize)]
struct RawKeySet {
    keys: Vec<serde_json::Value>,
}

/// A key from the issuer's set, ready to verify with.
struct VerifyingKey {
    kid: Option<String>,
    jwk: Jwk,
    key: DecodingKey,
}

#[derive(Default)]
struct Fetched {
    metadata: Option<Arc<Metadata>>,
    keys: Arc<Vec<VerifyingKey>>,
    keys_fetched: Option<Instant>,
    last_refetch: Option<Instant>,
}

/// What [`LocalKeys::key_for`] returns: the key, `None` when unknown, or why it cannot be read.
pub type LocalKeyLookup<'a> =
    std::pin::Pin<Box<dyn Future<Output = Result<Option<(Jwk, DecodingKey)>, String>> + Send + 'a>>;

/// Keys held in memory rather than behind a JWKS URL: the gateway's own authorization server
/// (`crate::oauth`), whose keys are in the store.
pub trait LocalKeys: Send + Sync {
    /// The key for `kid` and `alg`; `Ok(None)` when there is none.
    fn key_for<'a>(&'a self, kid: Option<&'a str>, alg: Algorithm) -> LocalKeyLookup<'a>;
}

/// One configured issuer and what has been learnt about it.
pub struct IssuerState {
    /// The name under `auth.issuers`.
    pub name: String,
    /// Its configuration.
    pub config: Issuer,
    algorithms: Vec<Algorithm>,
    refetch_interval: Duration,
    max_age: Duration,
    http: reqwest::Client,
    fetched: tokio::sync::Mutex<Fetched>,
    /// Set for the gateway's own issuer: keys come from memory, never from a URL.
    local: Option<Arc<dyn LocalKeys>>,
}

impl IssuerState {
    /// State for a configured issuer; nothing is fetched until a token needs it.
    pub(super) fn new(name: &str, config: &Issuer, settings: &Auth, http: reqwest::Client) -> Self {
        IssuerState {
            name: name.to_owned(),
            algorithms: config
                .algorithms
                .iter()
                .filter_map(|a| Algorithm::from_str(a).ok())
                .filter(|a| !matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512))
                .collect(),
            config: config.clone(),
            refetch_interval: settings.jwks_refetch_interval.0,
            max_age: settings.jwks_max_age.0,
            http,
            fetched: Default::default(),
            local: None,
        }
    }

    /// The gateway's own issuer, verified with keys held in memory.
    pub(super) fn local(
        name: &str,
        config: &Issuer,
        settings: &Auth,
        http: reqwest::Client,
        keys: Arc<dyn LocalKeys>,
    ) -> Self {
        IssuerState {
            local: Some(keys),
            ..IssuerState::new(name, config, settings, http)
        }
    }

    /// Whether tokens from this issuer may be signed with `alg`.
    pub(super) fn allows(&self, alg: Algorithm) -> bool {
        self.algorithms.contains(&alg)
    }

    /// The key that verifies a token signed with `alg` under `kid`, fetching or re-fetching
    /// the key set when needed.
    pub(super) async fn key_for(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<(Jwk, DecodingKey), AuthError> {
        if let Some(local) = &self.local {
            return match local.key_for(kid, alg).await {
                Ok(Some(found)) => Ok(found),
                Ok(None) => Err(AuthError::Invalid(format!(
                    "the signing key {kid:?} is not a key of issuer {:?}",
                    self.config.issuer
                ))),
                Err(e) => Err(AuthError::Unavailable(e)),
            };
        }
        let mut state = self.fetched.lock().await;
        let stale = state
            .keys_fetched
            .is_none_or(|t| t.elapsed() >= self.max_age);
        if stale {
            self.refresh_keys(&mut state).await?;
        }
        if let Some(found) = pick(&state.keys, kid, alg)? {
            return Ok(found);
        }
        // An unknown kid may mean the issuer rotated its keys; look again, but not too often.
        let may_refetch = state
            .last_refetch
            .is_none_or(|t| t.elapsed() >= self.refetch_interval);
        if !stale && may_refetch {
            state.last_refetch = Some(Instant::now());
            self.refresh_keys(&mut state).await?;
            if let Some(found) = pick(&state.keys, kid, alg)? {
                return Ok(found);
            }
        }
        Err(AuthError::Invalid(match kid {
            Some(k) => format!(
                "the signing key {k:?} is not in the key set of issuer {:?}",
                self.config.issuer
            ),
            None => format!(
                "the token names no key (kid) and issuer {:?} has no single {alg:?} key",
                self.config.issuer
            ),
        }))
    }

    /// The introspection endpoint: configured, or from the metadata.
    pub(super) async fn introspection_endpoint(&self) -> Result<String, AuthError> {
        if let Some(e) = self
            .config
            .introspection
            .as_ref()
            .and_then(|i| i.endpoint.clone())
        {
            return Ok(e);
        }
        let mut state = self.fetched.lock().await;
        let metadata = self.metadata(&mut state).await?;
        metadata.introspection_endpoint.clone().ok_or_else(|| {
            AuthError::Unavailable(format!(
                "issuer {:?} publishes no introspection_endpoint; set auth.issuers.{}.introspection.endpoint",
                self.config.issuer, self.name
            ))
        })
    }

    async fn refresh_keys(&self, state: &mut Fetched) -> Result<(), AuthError> {
        let uri = match &self.config.jwks_uri {
            Some(u) => u.clone(),
            None => self
                .metadata(state)
                .await?
                .jwks_uri
                .clone()
                .ok_or_else(|| {
                    AuthError::Unavailable(format!(
                        "issuer {:?} publishes no jwks_uri",
                        self.config.issuer
                    ))
                })?,
        };
        let set: RawKeySet = fetch_json(&self.http, &uri, None).await.map_err(|e| {
            AuthError::Unavailable(format!(
                "cannot read the key set of issuer {:?}: {e}",
                self.config.issuer
            ))
        })?;
        // Keys this gateway cannot use (encryption keys, unknown types) are skipped one by one
        // rather than failing the whole set.
        let keys: Vec<VerifyingKey> = set
            .keys
            .into_iter()
            .filter_map(|k| serde_json::from_value::<Jwk>(k).ok())
            .filter(|k| !matches!(k.algorithm, AlgorithmParameters::OctetKey(_)))
            .filter(
                |k| !matches!(&k.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature),
            )
            .filter_map(|jwk| {
                let key = DecodingKey::from_jwk(&jwk).ok()?;
                Some(VerifyingKey {
                    kid: jwk.common.key_id.clone(),
                    jwk,
                    key,
                })
            })
            .collect();
        tracing::info!(issuer = %self.name, keys = keys.len(), "fetched the issuer's signing keys");
        state.keys = Arc::new(keys);
        state.keys_fetched = Some(Instant::now());
        Ok(())
    }

    async fn metadata(&self, state: &mut Fetched) -> Result<Arc<Metadata>, AuthError> {
        if let Some(m) = &state.metadata
            && state
                .keys_fetched
                .is_none_or(|t| t.elapsed() < self.max_age)
        {
            return Ok(m.clone());
        }
        let candidates = match &self.config.metadata_url {
            Some(u) => vec![u.clone()],
            None => metadata_candidates(&self.config.issuer),
        };
        let mut errors = Vec::new();
        for url in &candidates {
            match fetch_json::<Metadata>(&self.http, url, None).await {
                Ok(m) if m.issuer == self.config.issuer => {
                    let m = Arc::new(m);
                    state.metadata = Some(m.clone());
                    return Ok(m);
                }
                // RFC 8414 §3.3: metadata naming another issuer must not be used.
                Ok(m) => errors.push(format!("{url}: names issuer {:?}", m.issuer)),
                Err(e) => errors.push(format!("{url}: {e}")),
            }
        }
        Err(AuthError::Unavailable(format!(
            "no usable metadata for issuer {:?} ({})",
            self.config.issuer,
            errors.join("; ")
        )))
    }
}

/// The key for `kid` (or the only suitable one when the token names none) whose type fits
/// `alg`; a key of another type under that kid is an error, not a fallback.
fn pick(
    keys: &[VerifyingKey],
    kid: Option<&str>,
    alg: Algorithm,
) -> Result<Option<(Jwk, DecodingKey)>, AuthError> {
    let found = match kid {
        Some(kid) => match keys.iter().find(|k| k.kid.as_deref() == Some(kid)) {
            Some(k) => k,
            None => return Ok(None),
        },
        None => {
            let mut fitting = keys.iter().filter(|k| fits(&k.jwk, alg));
            match (fitting.next(), fitting.next()) {
                (Some(k), None) => k,
                _ => return Ok(None),
            }
        }
    };
    if !fits(&found.jwk, alg) {
        return Err(AuthError::Invalid(format!(
            "the token's algorithm {alg:?} does not match the type of key {:?}",
            found.kid.as_deref().unwrap_or("")
        )));
    }
    Ok(Some((found.jwk.clone(), found.key.clone())))
}

/// Whether a key may verify `alg`: the key type and curve match, and a key that declares its
/// own algorithm declares this one.
pub(crate) fn fits(jwk: &Jwk, alg: Algorithm) -> bool {
    if let Some(declared) = jwk.common.key_algorithm
        && declared != KeyAlgorithm::from(alg)
    {
        return false;
    }
    match (&jwk.algorithm, alg) {
        (
            AlgorithmParameters::RSA(_),
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512,
        ) => true,
        (AlgorithmParameters::EllipticCurve(p), Algorithm::ES256) => p.curve == EllipticCurve::P256,
        (AlgorithmParameters::EllipticCurve(p), Algorithm::ES384) => p.curve == EllipticCurve::P384,
        (AlgorithmParameters::OctetKeyPair(p), Algorithm::EdDSA) => {
            p.curve == EllipticCurve::Ed25519
        }
        _ => false,
    }
}

/// Where an issuer's metadata may be, in the order the MCP specification gives: RFC 8414 and
/// OpenID Connect with the issuer's path inserted after the well-known prefix, then OpenID
/// Connect with it appended.
pub(crate) fn metadata_candidates(issuer: &str) -> Vec<String> {
    let Ok(url) = reqwest::Url::parse(issuer) else {
        return Vec::new();
    };
    let origin = url.origin().ascii_serialization();
    let path = url.path().trim_end_matches('/');
    if path.is_empty() {
        vec![
            format!("{origin}/.well-known/oauth-authorization-server"),
            format!("{origin}/.well-known/openid-configuration"),
        ]
    } else {
        vec![
            format!("{origin}/.well-known/oauth-authorization-server{path}"),
            format!("{origin}/.well-known/openid-configuration{path}"),
            format!("{origin}{path}/.well-known/openid-configuration"),
        ]
    }
}

/// Fetches a JSON document of at most [`MAX_DOCUMENT_BYTES`]; `form` makes it a POST.
pub(crate) async fn fetch_json<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
    form: Option<reqwest::RequestBuilder>,
) -> Result<T, String> {
    let request = form.unwrap_or_else(|| http.get(url));
    let mut resp = request
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(describe)?;
    let status = resp.status();
    if !status.is_success() {
        return Err(format!("HTTP {status}"));
    }
    if resp
        .content_length()
        .is_some_and(|l| l > MAX_DOCUMENT_BYTES as u64)
    {
        return Err(format!("larger than {MAX_DOCUMENT_BYTES} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(describe)? {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(format!("larger than {MAX_DOCUMENT_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|e| format!("not the expected JSON: {e}"))
}

/// A transport error without the URL's query (which could carry a secret).
fn describe(e: reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else {
        e.without_url().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_locations_follow_the_specification_order() {
        assert_eq!(
            metadata_candidates("https://idp.example/tenant1/"),
            [
                "https://idp.example/.well-known/oauth-authorization-server/tenant1",
                "https://idp.example/.well-known/openid-configuration/tenant1",
                "https://idp.example/tenant1/.well-known/openid-configuration",
            ]
        );
        assert_eq!(
            metadata_candidates("https://idp.example"),
            [
                "https://idp.example/.well-known/oauth-authorization-server",
                "https://idp.example/.well-known/openid-configuration",
            ]
        );
    }
}
