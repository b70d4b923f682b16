//! One issuer's JSON Web Key Set, fetched lazily and cached: the keys of the servers' trusted
//! issuers (`auth`) and of the façade's enterprise IdP (ID tokens and ID-JAGs, `oauth`).
//!
//! Verifications read the current set without waiting. Aged keys keep serving for a bounded
//! stale window while one fetch runs in the background; an unknown `kid`, or a signature that
//! fails under a known one (a key replaced under the same `kid`), causes a fetch at most once
//! per refetch interval, so that forged tokens cannot make the gateway hammer the IdP. A failed
//! fetch is repeated to callers for a few seconds rather than retried by each of them. At most
//! [`MAX_KEYS`] keys of a set are kept.

use super::fetch_json;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

#[cfg(test)]
mod tests;

/// Most keys kept from one key set (IdPs publish a handful; the rest of a huge set is noise or
/// an attack on memory and lookup time).
pub const MAX_KEYS: usize = 64;

/// Longest an issuer whose fetch failed is left alone before the next attempt (shorter when
/// the refetch interval is).
const RETRY_FAILED_FETCH: Duration = Duration::from_secs(5);

/// How the cache ages its keys.
#[derive(Debug, Clone, Copy)]
pub struct JwksTiming {
    /// Least time between two fetches caused by tokens (unknown `kid`, failed signature).
    pub refetch_interval: Duration,
    /// A set older than this is fetched again.
    pub max_age: Duration,
    /// How long past `max_age` a set keeps verifying while a background fetch runs (zero: the
    /// caller waits for the fetch).
    pub stale_window: Duration,
}

/// Where a key set is found.
#[derive(Debug, Clone)]
pub enum JwksSource {
    /// A known `jwks_uri`.
    Uri(String),
    /// Read `jwks_uri` from the first of these metadata documents that names `issuer`.
    Discover {
        /// The issuer the metadata must name.
        issuer: String,
        /// Candidate metadata URLs, tried in order.
        metadata_urls: Vec<String>,
        /// A check a discovered `jwks_uri` must pass (the façade's: https or loopback).
        accept_uri: Option<fn(&str) -> bool>,
    },
}

/// Why no key was found; each caller words it for its own errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    /// The key set could not be read.
    #[error("{0}")]
    Unavailable(String),
    /// No key fits the token's `kid` (or, without one, no single key fits its algorithm).
    #[error("no key fits")]
    Unknown,
    /// The key under the token's `kid` is of another type than its algorithm: an attack or a
    /// misconfiguration, not a reason to try other keys.
    #[error("the token's algorithm does not match the type of key {kid:?}")]
    WrongType {
        /// That key's id.
        kid: String,
    },
}

/// The parts of authorization server metadata the gateway uses.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Metadata {
    pub issuer: String,
    #[serde(default)]
    pub jwks_uri: Option<String>,
    #[serde(default)]
    pub introspection_endpoint: Option<String>,
}

/// The first of `urls` whose metadata names `issuer` (RFC 8414 §3.3, OpenID Connect Discovery
/// §4.3: a document naming another issuer must not be used).
pub(crate) async fn discover(
    http: &reqwest::Client,
    issuer: &str,
    urls: &[String],
) -> Result<Metadata, String> {
    let mut errors = Vec::new();
    for url in urls {
        match fetch_json::<Metadata>(http, url, None).await {
            Ok(m) if m.issuer == issuer => return Ok(m),
            Ok(m) => errors.push(format!("{url}: names issuer {:?}", m.issuer)),
            Err(e) => errors.push(format!("{url}: {e}")),
        }
    }
    Err(format!(
        "no usable metadata for issuer {issuer:?} ({})",
        errors.join("; ")
    ))
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
    /// The discovered `jwks_uri` and when it was read.
    jwks_uri: Option<(String, Instant)>,
    /// The last fetch a token caused, for the rate limit.
    last_on_demand: Option<Instant>,
    /// The last fetch failed: when, and why (repeated to callers until a retry is due).
    failed: Option<(Instant, String)>,
}

/// The key that verifies one token, and which fetch it came from.
pub struct FoundKey {
    /// The key.
    pub key: DecodingKey,
    generation: u64,
}

impl FoundKey {
    /// A key that came from no fetch (the gateway's own, held in memory).
    pub fn local(key: DecodingKey) -> FoundKey {
        FoundKey { key, generation: 0 }
    }
}

/// One issuer's key set. At most one fetch runs at a time.
pub struct JwksCache {
    /// For logs: the issuer's configured name.
    name: String,
    /// For messages: the issuer identifier.
    issuer: String,
    source: JwksSource,
    timing: JwksTiming,
    http: reqwest::Client,
    keys: RwLock<Option<Arc<KeySet>>>,
    refresh: tokio::sync::Mutex<Refresh>,
    /// A background refresh is under way (so that stale-window requests start only one).
    refreshing: AtomicBool,
}

impl JwksCache {
    /// A cache that fetches nothing until a key is needed.
    pub fn new(
        name: &str,
        issuer: &str,
        source: JwksSource,
        timing: JwksTiming,
        http: reqwest::Client,
    ) -> Self {
        JwksCache {
            name: name.to_owned(),
            issuer: issuer.to_owned(),
            source,
            timing,
            http,
            keys: Default::default(),
            refresh: Default::default(),
            refreshing: AtomicBool::new(false),
        }
    }

    fn current(&self) -> Option<Arc<KeySet>> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The key for `kid` (or the single fitting key when the token names none) whose type fits
    /// `alg`; an unknown `kid` causes a fetch at most once per refetch interval.
    pub async fn key_for(
        self: &Arc<Self>,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<FoundKey, JwksError> {
        let t = self.timing;
        let (set, just_fetched) = match self.current() {
            Some(set) if set.fetched.elapsed() < t.max_age => (set, false),
            Some(set) if set.fetched.elapsed() < t.max_age.saturating_add(t.stale_window) => {
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
        Err(JwksError::Unknown)
    }

    /// After `found` failed to verify a signature: the key now published under the same
    /// `kid`, when a fetch (rate-limited like an unknown `kid`) shows the issuer replaced it.
    pub async fn replaced_key(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
        found: &FoundKey,
    ) -> Result<Option<FoundKey>, JwksError> {
        match self.refetch_on_demand(found.generation).await? {
            Some(newer) => pick(&newer, kid, alg),
            None => Ok(None),
        }
    }

    /// A fetch the caller waits for (no usable keys); one at a time, whose result every
    /// waiting caller shares.
    async fn fetch_now(&self, seen: Option<u64>) -> Result<Arc<KeySet>, JwksError> {
        let mut r = self.refresh.lock().await;
        if let Some(set) = self.current()
            && Some(set.generation) != seen
        {
            return Ok(set);
        }
        if let Some((at, e)) = &r.failed
            && at.elapsed() < self.retry_failed()
        {
            return Err(JwksError::Unavailable(e.clone()));
        }
        self.fetch(&mut r).await
    }

    /// A fetch caused by a token, unless one happened since `seen` (then that set) or the
    /// last one was less than the refetch interval ago (then `None`).
    async fn refetch_on_demand(&self, seen: u64) -> Result<Option<Arc<KeySet>>, JwksError> {
        let mut r = self.refresh.lock().await;
        if let Some(set) = self.current()
            && set.generation != seen
        {
            return Ok(Some(set));
        }
        if r.last_on_demand
            .is_some_and(|t| t.elapsed() < self.timing.refetch_interval)
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
            let fresh = me.current().is_some_and(|s| {
                Some(s.generation) != seen || s.fetched.elapsed() < me.timing.max_age
            });
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
        self.timing.refetch_interval.min(RETRY_FAILED_FETCH)
    }

    /// Fetches the key set now (the caller holds the refresh lock) and makes it current.
    async fn fetch(&self, r: &mut Refresh) -> Result<Arc<KeySet>, JwksError> {
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
                Err(JwksError::Unavailable(e))
            }
        }
    }

    /// Where the set is: configured, or discovered (and re-discovered when as old as a set).
    async fn jwks_uri(&self, r: &mut Refresh) -> Result<String, String> {
        let (issuer, urls, accept_uri) = match &self.source {
            JwksSource::Uri(u) => return Ok(u.clone()),
            JwksSource::Discover {
                issuer,
                metadata_urls,
                accept_uri,
            } => (issuer, metadata_urls, *accept_uri),
        };
        if let Some((u, at)) = &r.jwks_uri
            && at.elapsed() < self.timing.max_age
        {
            return Ok(u.clone());
        }
        let uri = discover(&self.http, issuer, urls)
            .await?
            .jwks_uri
            .ok_or_else(|| format!("issuer {issuer:?} publishes no jwks_uri"))?;
        if accept_uri.is_some_and(|ok| !ok(&uri)) {
            return Err(format!(
                "issuer {issuer:?} publishes jwks_uri {uri:?}, which is not https"
            ));
        }
        r.jwks_uri = Some((uri.clone(), Instant::now()));
        Ok(uri)
    }

    async fn fetch_keys(&self, r: &mut Refresh) -> Result<Vec<VerifyingKey>, String> {
        let uri = self.jwks_uri(r).await?;
        let set: RawKeySet = fetch_json(&self.http, &uri, None)
            .await
            .map_err(|e| format!("cannot read the key set of issuer {:?}: {e}", self.issuer))?;
        let published = set.keys.len();
        // Keys this gateway cannot use (encryption keys, symmetric keys, unknown types) are
        // skipped one by one rather than failing the whole set.
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
            .take(MAX_KEYS)
            .collect();
        if keys.len() == MAX_KEYS && published > MAX_KEYS {
            tracing::warn!(issuer = %self.name, published, kept = MAX_KEYS, "the issuer publishes more signing keys than are kept");
        }
        Ok(keys)
    }
}

/// The key for `kid` (or the only suitable one when the token names none) whose type fits
/// `alg`; a key of another type under that kid is an error, not a fallback.
fn pick(set: &KeySet, kid: Option<&str>, alg: Algorithm) -> Result<Option<FoundKey>, JwksError> {
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
        return Err(JwksError::WrongType {
            kid: found.kid.clone().unwrap_or_default(),
        });
    }
    Ok(Some(FoundKey {
        key: found.key.clone(),
        generation: set.generation,
    }))
}

/// Whether a key may verify `alg`: the key type and curve match, and a key that declares its
/// own algorithm declares this one.
fn fits(jwk: &Jwk, alg: Algorithm) -> bool {
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
