//! Inbound authentication: the gateway as the OAuth 2.1 resource server of each virtual server.
//! A bearer credential (JWT, opaque token or gateway API key) becomes a [`Principal`], or the
//! request is refused with a challenge that tells the client where to log in.

mod api_key;
mod cache;
mod guard;
mod introspect;
mod issuer;
pub(crate) mod jwks;
mod jwt;
mod principal;
mod rejected;

pub use api_key::{GeneratedKey, generate_api_key};
pub use cache::{CredentialDigest, VerifiedCache};
pub(crate) use guard::glob_match;
pub use guard::{METADATA_PREFIX, ServerGuard, add_scopes, bearer_token, required_scopes};
pub use issuer::{IssuerState, LocalKeyLookup, LocalKeys};
pub(crate) use issuer::{fetch_json, metadata_candidates};
pub(crate) use jwt::{
    explain as explain_jwt_error, looks_like_jwt, raw_alg, read_unverified as read_jwt_unverified,
};
pub use principal::{CredentialKind, Principal};
pub(crate) use principal::{string_at as claim_string, strings_at as claim_strings};

use crate::config::Auth;
use crate::store::Store;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The issuer of principals that gateway API keys prove.
pub const API_KEY_ISSUER: &str = "gatehouse:api-key";

/// Most introspection calls in flight at once (all issuers together).
const MAX_CONCURRENT_INTROSPECTIONS: usize = 32;
/// Longest a request waits for an introspection slot before it is answered 503.
const INTROSPECTION_QUEUE_WAIT: Duration = Duration::from_secs(2);

/// How long the gateway waits for an issuer (metadata, keys, introspection).
const ISSUER_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a request was not authenticated.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// No credential was sent.
    #[error("authentication required: send Authorization: Bearer <access token>")]
    Missing,
    /// A credential was sent and is not acceptable.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The credential is good but lacks scopes this request needs.
    #[error("insufficient scope: this request needs the scopes {}", .required.join(" "))]
    InsufficientScope {
        /// Every scope the request needs (not only the missing ones), for step-up.
        required: Vec<String>,
    },
    /// The credential could not be checked now (issuer or store unreachable).
    #[error("the credential cannot be verified right now: {0}")]
    Unavailable(String),
}

/// What was verified about a credential, before the per-server checks.
#[derive(Clone)]
pub(crate) struct Verified {
    principal: Arc<Principal>,
    /// Virtual server paths an API key is limited to (empty: any).
    servers: Arc<[String]>,
}

/// Verifies credentials for every virtual server of one configuration.
pub struct Authenticator {
    settings: Auth,
    issuers: BTreeMap<String, Arc<IssuerState>>,
    by_iss: HashMap<String, Arc<IssuerState>>,
    cache: Arc<VerifiedCache>,
    rejected: Arc<rejected::RejectedCache>,
    /// Bounds concurrent introspection calls, so a flood of unknown tokens cannot become a
    /// flood of requests to the IdP.
    introspections: Arc<tokio::sync::Semaphore>,
    store: Option<Store>,
    http: reqwest::Client,
}

impl Authenticator {
    /// Builds the verifier for `settings`, reusing from `previous` the issuers whose
    /// configuration is unchanged (their fetched keys) and the cache when nothing changed.
    pub fn new(
        settings: &Auth,
        store: Option<Store>,
        previous: Option<&Authenticator>,
    ) -> Authenticator {
        let http = previous
            .map(|p| p.http.clone())
            .unwrap_or_else(issuer_client);
        let issuers: BTreeMap<String, Arc<IssuerState>> = settings
            .issuers
            .iter()
            .map(|(name, cfg)| {
                let reused = previous
                    .filter(|p| p.settings.jwks_refetch_interval == settings.jwks_refetch_interval)
                    .filter(|p| p.settings.jwks_max_age == settings.jwks_max_age)
                    .filter(|p| p.settings.jwks_stale_window == settings.jwks_stale_window)
                    .and_then(|p| p.issuers.get(name))
                    .filter(|i| i.config == *cfg)
                    .cloned();
                let state = reused.unwrap_or_else(|| {
                    Arc::new(IssuerState::new(name, cfg, settings, http.clone()))
                });
                (name.clone(), state)
            })
            .collect();
        let by_iss = issuers
            .values()
            .map(|i| (i.config.issuer.clone(), i.clone()))
            .collect();
        // A changed trust setting must not leave principals verified under the old one.
        let cache = match previous {
            Some(p) if p.settings == *settings => p.cache.clone(),
            _ => Arc::new(VerifiedCache::new(settings.cache_max_entries)),
        };
        let rejected = match previous {
            Some(p) if p.settings == *settings => p.rejected.clone(),
            _ => Default::default(),
        };
        let introspections = previous
            .map(|p| p.introspections.clone())
            .unwrap_or_else(|| {
                Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_INTROSPECTIONS))
            });
        Authenticator {
            rejected,
            introspections,
            settings: settings.clone(),
            issuers,
            by_iss,
            cache,
            store,
            http,
        }
    }

    /// Makes the issuer configured under `name` (the gateway's own authorization server) take
    /// its keys from memory instead of fetching a key set; `false` when there is no such issuer.
    pub fn use_local_keys(&mut self, name: &str, keys: Arc<dyn LocalKeys>) -> bool {
        let Some(existing) = self.issuers.get(name) else {
            return false;
        };
        let config = existing.config.clone();
        let state = Arc::new(IssuerState::local(
            name,
            &config,
            &self.settings,
            self.http.clone(),
            keys,
        ));
        self.by_iss.insert(config.issuer.clone(), state.clone());
        self.issuers.insert(name.to_owned(), state);
        true
    }

    /// Forgets the verified API key `id`, so that its revocation holds at once in this process
    /// (other processes refuse it within `cache_max_ttl`); returns how many entries went.
    pub fn forget_api_key(&self, id: &str) -> usize {
        self.cache.forget_where(|v| {
            v.principal.issuer() == API_KEY_ISSUER && v.principal.client_id() == Some(id)
        })
    }

    /// The issuer configured under `name`.
    pub fn issuer(&self, name: &str) -> Option<&Arc<IssuerState>> {
        self.issuers.get(name)
    }

    fn issuer_by_iss(&self, iss: &str) -> Option<Arc<IssuerState>> {
        self.by_iss.get(iss).cloned()
    }

    /// Verifies a presented credential, from the cache when it was verified before; opaque
    /// tokens may go to every issuer that introspects.
    #[cfg(test)]
    pub(crate) async fn verify(&self, credential: &str) -> Result<Verified, AuthError> {
        let every: Vec<String> = self.issuers.keys().cloned().collect();
        self.verify_for(credential, &every).await
    }

    /// Like [`Self::verify`], but an opaque token is shown only to the introspecting issuers
    /// among `accepted` (names under `auth.issuers`): an issuer the server does not accept
    /// must not learn its callers' tokens.
    pub(crate) async fn verify_for(
        &self,
        credential: &str,
        accepted: &[String],
    ) -> Result<Verified, AuthError> {
        let digest = CredentialDigest::of(credential);
        if let Some(verified) = self.cache.get(&digest) {
            return Ok(verified);
        }
        let now = Instant::now();
        let max_ttl = self.settings.cache_max_ttl.0;
        let skew = self.settings.clock_skew.0.as_secs();
        let (principal, servers, ttl) = if api_key::looks_like_api_key(credential) {
            let store = self
                .store
                .as_ref()
                .ok_or_else(|| AuthError::Unavailable("API keys need a store".into()))?;
            let (principal, record) = api_key::verify_api_key(store, credential).await?;
            // Revocation takes effect within `cache_max_ttl`.
            (principal, record.servers, max_ttl)
        } else if jwt::looks_like_jwt(credential) {
            let (principal, _) = jwt::verify_jwt(self, credential).await?;
            // A signed token stays valid until it expires; re-verifying it would prove nothing new.
            (principal, Vec::new(), Duration::MAX)
        } else {
            // A refusal holds only for the issuers that were asked.
            let refusal = CredentialDigest::scoped(credential, &accepted.join("\n"));
            if let Some(why) = self.rejected.get(&refusal) {
                return Err(AuthError::Invalid(why));
            }
            let permit =
                tokio::time::timeout(INTROSPECTION_QUEUE_WAIT, self.introspections.acquire())
                    .await
                    .map_err(|_| {
                        AuthError::Unavailable("too many introspections in progress".into())
                    })?
                    .map_err(|_| AuthError::Unavailable("introspection is shutting down".into()))?;
            let issuers: Vec<_> = accepted
                .iter()
                .filter_map(|name| self.issuers.get(name).cloned())
                .collect();
            let result = introspect::introspect(&self.http, &issuers, credential, skew).await;
            drop(permit);
            let (principal, _) = result.inspect_err(|e| {
                if let AuthError::Invalid(why) = e {
                    self.rejected.insert(refusal, why);
                }
            })?;
            // Introspection can report a revocation, so its answer is trusted only briefly.
            (principal, Vec::new(), max_ttl)
        };
        let until = expiry_instant(principal.expires_at(), now, ttl);
        let verified = Verified {
            principal: Arc::new(principal),
            servers: servers.into(),
        };
        if let Some(until) = until {
            self.cache.insert(digest, verified.clone(), until);
        }
        Ok(verified)
    }
}

/// When a verified credential must be verified again: at its expiry, and no later than `ttl`
/// from now. `None` when it must not be remembered at all.
fn expiry_instant(expires_at: Option<u64>, now: Instant, ttl: Duration) -> Option<Instant> {
    let by_ttl = now.checked_add(ttl);
    let by_exp = match expires_at {
        Some(exp) => {
            let left = exp as i64 - crate::store::now_secs();
            if left <= 0 {
                return None;
            }
            Some(now + Duration::from_secs(left as u64))
        }
        None => None,
    };
    match (by_ttl, by_exp) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a
            .or(b)
            .or_else(|| now.checked_add(Duration::from_secs(300))),
    }
}

/// The client the gateway talks to issuers with: no redirects (a metadata or key URL must not
/// send the gateway elsewhere), short timeouts.
fn issuer_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(ISSUER_TIMEOUT)
        .connect_timeout(ISSUER_TIMEOUT)
        .user_agent(concat!("gatehouse/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the issuer HTTP client builds")
}
