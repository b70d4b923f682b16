//! A trusted issuer at run time: its metadata (RFC 8414 / OpenID Connect discovery) and its
//! signing keys, fetched lazily and cached. Aged keys keep serving for a bounded stale window
//! while one fetch runs in the background; an unknown `kid` or a signature that fails under
//! a known one (a key replaced under the same `kid`) causes a fetch at most once per
//! `jwks_refetch_interval`, so that forged tokens cannot make the gateway hammer the IdP.

use super::AuthError;
use crate::config::{Auth, Issuer};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// One fetched key set.
struct KeySet {
    keys: Vec<VerifyingKey>,
    fetched: Instant,
    /// Counts fetches, so that a caller can tell whether the set changed since it looked.
    generation: u64,
}

/// What only the (single) fetch in progress touches.
#[derive(Default)]
struct Refresh {
    metadata: Option<(Arc<Metadata>, Instant)>,
    /// The last fetch a token caused (unknown `kid`, bad signature), for the rate limit.
    last_on_demand: Option<Instant>,
    /// The last fetch failed: when, and why (repeated to callers until a retry is due).
    failed: Option<(Instant, AuthError)>,
}

/// The key that verifies one token, and which fetch it came from.
pub(super) struct FoundKey {
    /// The key.
    pub key: DecodingKey,
    generation: u64,
}

/// Longest an issuer whose fetch failed is left alone before the next attempt (shorter when
/// `jwks_refetch_interval` is).
const RETRY_FAILED_FETCH: Duration = Duration::from_secs(5);

/// What [`LocalKeys::key_for`] returns: the key, `None` when unknown, or why it cannot be read.
pub type LocalKeyLookup<'a> =
    std::pin::Pin<Box<dyn Future<Output = Result<Option<(Jwk, DecodingKey)>, String>> + Send + 'a>>;

/// Keys held in memory rather than behind a JWKS URL: the gateway's own authorization server
/// (`crate::oauth`), whose keys are in the store.
pub trait LocalKeys: Send + Sync {
    /// The key for `kid` and `alg`; `Ok(None)` when there is none.
    fn key_for<'a>(&'a self, kid: Option<&'a str>, alg: Algorithm) -> LocalKeyLookup<'a>;
}

/// One configured issuer and what has been learnt about it. Verifications read the current
/// key set without waiting; at most one fetch per issuer runs at a time.
pub struct IssuerState {
    /// The name under `auth.issuers`.
    pub name: String,
    /// Its configuration.
    pub config: Issuer,
    algorithms: Vec<Algorithm>,
    refetch_interval: Duration,
    max_age: Duration,
    stale_window: Duration,
    http: reqwest::Client,
    keys: std::sync::RwLock<Option<Arc<KeySet>>>,
    refresh: tokio::sync::Mutex<Refresh>,
    /// A background refresh is under way (so that stale-window requests start only one).
    refreshing: AtomicBool,
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
            stale_window: settings.jwks_stale_window.0,
            http,
            keys: Default::default(),
            refresh: Default::default(),
            refreshing: AtomicBool::new(false),
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

    fn current(&self) -> Option<Arc<KeySet>> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The key that verifies a token signed with `alg` under `kid`. Keys older than
    /// `jwks_max_age` are still used for `jwks_stale_window` while a fetch runs in the
    /// background (so an unreachable IdP does not stop the gateway); an unknown `kid` causes
    /// a fetch at most once per `jwks_refetch_interval`.
    pub(super) async fn key_for(
        self: &Arc<Self>,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<FoundKey, AuthError> {
        if let Some(local) = &self.local {
            return match local.key_for(kid, alg).await {
                Ok(Some((_, key))) => Ok(FoundKey { key, generation: 0 }),
                Ok(None) => Err(AuthError::Invalid(format!(
                    "the signing key {kid:?} is not a key of issuer {:?}",
                    self.config.issuer
                ))),
                Err(e) => Err(AuthError::Unavailable(e)),
            };
        }
        let (set, just_fetched) = match self.current() {
            Some(set) if set.fetched.elapsed() < self.max_age => (set, false),
            Some(set) if set.fetched.elapsed() < self.max_age.saturating_add(self.stale_window) => {
                self.refresh_in_background();
                (set, false)
            }
            old => (self.fetch_now(old.map(|s| s.generation)).await?, true),
        };
        if let Some(found) = pick(&set, kid, alg)? {
            return Ok(found);
        }
        // An unknown kid may mean the issuer rotated its keys; look again, but not too often.
        if !just_fetched
            && let Some(newer) = self.refetch_on_demand(set.generation).await?
            && let Some(found) = pick(&newer, kid, alg)?
        {
            return Ok(found);
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

    /// After `found` failed to verify a signature: the key now published under the same
    /// `kid`, when a fetch (rate-limited like an unknown `kid`) shows the issuer replaced it.
    pub(super) async fn replaced_key(
        self: &Arc<Self>,
        kid: Option<&str>,
        alg: Algorithm,
        found: &FoundKey,
    ) -> Result<Option<FoundKey>, AuthError> {
        if self.local.is_some() {
            return Ok(None);
        }
        match self.refetch_on_demand(found.generation).await? {
            Some(newer) => pick(&newer, kid, alg),
            None => Ok(None),
        }
    }

    /// A fetch the caller waits for (no usable keys); one at a time, whose result every
    /// waiting caller shares.
    async fn fetch_now(&self, seen: Option<u64>) -> Result<Arc<KeySet>, AuthError> {
        let mut r = self.refresh.lock().await;
        if let Some(set) = self.current()
            && Some(set.generation) != seen
        {
            return Ok(set);
        }
        if let Some((at, e)) = &r.failed
            && at.elapsed() < self.retry_failed()
        {
            return Err(e.clone());
        }
        self.fetch(&mut r).await
    }

    /// A fetch caused by a token, unless one happened since `seen` (then that set) or the
    /// last one was less than `jwks_refetch_interval` ago (then `None`).
    async fn refetch_on_demand(&self, seen: u64) -> Result<Option<Arc<KeySet>>, AuthError> {
        let mut r = self.refresh.lock().await;
        if let Some(set) = self.current()
            && set.generation != seen
        {
            return Ok(Some(set));
        }
        if r.last_on_demand
            .is_some_and(|t| t.elapsed() < self.refetch_interval)
        {
            return Ok(None);
        }
        r.last_on_demand = Some(Instant::now());
        self.fetch(&mut r).await.map(Some)
    }

    /// Starts a fetch that no verification waits for, unless one is under way or the last
    /// attempt failed too recently.
    fn refresh_in_background(self: &Arc<Self>) {
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            let seen = me.current().map(|s| s.generation);
            let mut r = me.refresh.lock().await;
            let fresh = me
                .current()
                .is_some_and(|s| Some(s.generation) != seen || s.fetched.elapsed() < me.max_age);
            let resting = r
                .failed
                .as_ref()
                .is_some_and(|(at, _)| at.elapsed() < me.retry_failed());
            if !fresh && !resting {
                let _ = me.fetch(&mut r).await;
            }
            drop(r);
            me.refreshing.store(false, Ordering::Release);
        });
    }

    fn retry_failed(&self) -> Duration {
        self.refetch_interval.min(RETRY_FAILED_FETCH)
    }

    /// Fetches the key set now (the caller holds the refresh lock) and makes it current.
    async fn fetch(&self, r: &mut Refresh) -> Result<Arc<KeySet>, AuthError> {
        match self.fetch_keys(r).await {
            Ok(keys) => {
                tracing::info!(issuer = %self.name, keys = keys.len(), "fetched the issuer's signing keys");
                let mut slot = self.keys.write().unwrap_or_else(|e| e.into_inner());
                let set = Arc::new(KeySet {
                    keys,
                    fetched: Instant::now(),
                    generation: slot.as_ref().map_or(1, |s| s.generation + 1),
                });
                *slot = Some(set.clone());
                r.failed = None;
                Ok(set)
            }
            Err(e) => {
                let serving = self.current().map(|s| s.fetched.elapsed());
                tracing::warn!(issuer = %self.name, error = %e, serving_keys_fetched_secs_ago = serving.map(|d| d.as_secs()), "cannot fetch the issuer's signing keys");
                r.failed = Some((Instant::now(), e.clone()));
                Err(e)
            }
        }
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
        let mut state = self.refresh.lock().await;
        let metadata = self.metadata(&mut state).await?;
        metadata.introspection_endpoint.clone().ok_or_else(|| {
            AuthError::Unavailable(format!(
                "issuer {:?} publishes no introspection_endpoint; set auth.issuers.{}.introspection.endpoint",
                self.config.issuer, self.name
            ))
        })
    }

    async fn fetch_keys(&self, state: &mut Refresh) -> Result<Vec<VerifyingKey>, AuthError> {
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
        Ok(keys)
    }

    async fn metadata(&self, state: &mut Refresh) -> Result<Arc<Metadata>, AuthError> {
        if let Some((m, at)) = &state.metadata
            && at.elapsed() < self.max_age
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
                    state.metadata = Some((m.clone(), Instant::now()));
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
fn pick(set: &KeySet, kid: Option<&str>, alg: Algorithm) -> Result<Option<FoundKey>, AuthError> {
    let keys = &set.keys;
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
    Ok(Some(FoundKey {
        key: found.key.clone(),
        generation: set.generation,
    }))
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
