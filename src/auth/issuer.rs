//! A trusted issuer at run time: its signing keys ([`JwksCache`], shared with the façade) or,
//! for the gateway's own authorization server, keys held in memory; and its metadata (RFC 8414 /
//! OpenID Connect discovery) for the introspection endpoint.

use super::AuthError;
use super::jwks::{FoundKey, JwksCache, JwksError, JwksSource, JwksTiming, Metadata, discover};
use crate::config::{Auth, Issuer};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

/// Largest metadata, JWKS or introspection document read from an issuer.
pub(super) const MAX_DOCUMENT_BYTES: usize = 1 << 20;

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
    http: reqwest::Client,
    jwks: Arc<JwksCache>,
    /// The metadata, for the introspection endpoint, and when it was read.
    metadata: tokio::sync::Mutex<Option<(Arc<Metadata>, Instant)>>,
    metadata_max_age: std::time::Duration,
    /// Set for the gateway's own issuer: keys come from memory, never from a URL.
    local: Option<Arc<dyn LocalKeys>>,
}

impl IssuerState {
    /// State for a configured issuer; nothing is fetched until a token needs it.
    pub(super) fn new(name: &str, config: &Issuer, settings: &Auth, http: reqwest::Client) -> Self {
        let source = match &config.jwks_uri {
            Some(u) => JwksSource::Uri(u.clone()),
            None => JwksSource::Discover {
                issuer: config.issuer.clone(),
                metadata_urls: metadata_urls(config),
                accept_uri: None,
            },
        };
        let timing = JwksTiming {
            refetch_interval: settings.jwks_refetch_interval.0,
            max_age: settings.jwks_max_age.0,
            stale_window: settings.jwks_stale_window.0,
        };
        IssuerState {
            name: name.to_owned(),
            algorithms: config
                .algorithms
                .iter()
                .filter_map(|a| Algorithm::from_str(a).ok())
                .filter(|a| !matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512))
                .collect(),
            config: config.clone(),
            jwks: Arc::new(JwksCache::new(
                name,
                &config.issuer,
                source,
                timing,
                http.clone(),
            )),
            http,
            metadata: Default::default(),
            metadata_max_age: settings.jwks_max_age.0,
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

    /// The key that verifies a token signed with `alg` under `kid` (see [`JwksCache`]).
    pub(super) async fn key_for(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<FoundKey, AuthError> {
        if let Some(local) = &self.local {
            return match local.key_for(kid, alg).await {
                Ok(Some((_, key))) => Ok(FoundKey::local(key)),
                Ok(None) => Err(AuthError::Invalid(format!(
                    "the signing key {kid:?} is not a key of issuer {:?}",
                    self.config.issuer
                ))),
                Err(e) => Err(AuthError::Unavailable(e)),
            };
        }
        self.jwks
            .key_for(kid, alg)
            .await
            .map_err(|e| self.explain(e, kid, alg))
    }

    /// After `found` failed to verify a signature: the key now published under the same
    /// `kid`, when a fetch (rate-limited like an unknown `kid`) shows the issuer replaced it.
    pub(super) async fn replaced_key(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
        found: &FoundKey,
    ) -> Result<Option<FoundKey>, AuthError> {
        if self.local.is_some() {
            return Ok(None);
        }
        self.jwks
            .replaced_key(kid, alg, found)
            .await
            .map_err(|e| self.explain(e, kid, alg))
    }

    fn explain(&self, e: JwksError, kid: Option<&str>, alg: Algorithm) -> AuthError {
        let issuer = &self.config.issuer;
        match e {
            JwksError::Unavailable(m) => AuthError::Unavailable(m),
            JwksError::Unknown => AuthError::Invalid(match kid {
                Some(k) => {
                    format!("the signing key {k:?} is not in the key set of issuer {issuer:?}")
                }
                None => format!(
                    "the token names no key (kid) and issuer {issuer:?} has no single {alg:?} key"
                ),
            }),
            JwksError::WrongType { kid } => AuthError::Invalid(format!(
                "the token's algorithm {alg:?} does not match the type of key {kid:?}"
            )),
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
        let metadata = self.metadata().await?;
        metadata.introspection_endpoint.clone().ok_or_else(|| {
            AuthError::Unavailable(format!(
                "issuer {:?} publishes no introspection_endpoint; set auth.issuers.{}.introspection.endpoint",
                self.config.issuer, self.name
            ))
        })
    }

    async fn metadata(&self) -> Result<Arc<Metadata>, AuthError> {
        let mut slot = self.metadata.lock().await;
        if let Some((m, at)) = &*slot
            && at.elapsed() < self.metadata_max_age
        {
            return Ok(m.clone());
        }
        let m = Arc::new(
            discover(
                &self.http,
                &self.config.issuer,
                &metadata_urls(&self.config),
            )
            .await
            .map_err(AuthError::Unavailable)?,
        );
        *slot = Some((m.clone(), Instant::now()));
        Ok(m)
    }
}

/// Where the issuer's metadata may be: configured, or the specification's candidates.
fn metadata_urls(config: &Issuer) -> Vec<String> {
    match &config.metadata_url {
        Some(u) => vec![u.clone()],
        None => metadata_candidates(&config.issuer),
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
