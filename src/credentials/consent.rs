//! Per-user consent for `user_oauth` upstreams. A call for a user who has not connected the
//! upstream yet gets a link (URL-mode elicitation). On that page the user signs in to the
//! gateway at the enterprise IdP — the signed-in subject must be the MCP token's subject —
//! and then authorizes the gateway at the upstream's authorization server (code + PKCE).
//! The tokens are sealed (AES-256-GCM) into the store; they never pass through the client.

use super::cache::{Fresh, TokenCache};
use super::sealed::TokenSealer;
use super::token_client::TokenClient;
use super::{CredentialError, OnBehalfOf};
use crate::config::{self, ConsentConfig, Secret};
use crate::store::{Store, StoredConnection};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::HeaderValue;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Most consent flows kept at once (expired ones are swept first).
const MAX_FLOWS: usize = 10_000;

/// One `user_oauth` upstream as the consent service knows it.
pub struct ConnectableUpstream {
    name: String,
    client: TokenClient,
    scopes: String,
    resource: String,
    cache: TokenCache,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Issued,
    SigningIn { state: String, verifier: String },
    Authorizing { state: String, verifier: String },
}

#[derive(Debug, Clone)]
struct Flow {
    binding: String,
    subject: String,
    issuer: String,
    upstream: String,
    created: Instant,
    step: Step,
}

/// The sealed form of a user's tokens for one upstream.
#[derive(Serialize, Deserialize)]
struct TokenSet {
    access_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    expires_at_ms: Option<i64>,
}

/// What a consent page should show.
#[derive(Debug)]
pub enum Page {
    /// Send the browser on.
    Redirect(String),
    /// The connection is made.
    Connected {
        /// The upstream's name.
        upstream: String,
    },
    /// The flow stopped; say why (no secrets).
    Refused {
        /// HTTP status.
        status: u16,
        /// A sentence for the user.
        message: String,
    },
}

fn refused(status: u16, message: impl Into<String>) -> Page {
    Page::Refused {
        status,
        message: message.into(),
    }
}

/// Consent flows, sealing and the store of user connections.
pub struct ConsentService {
    public_url: String,
    login: TokenClient,
    login_issuer: String,
    sealer: TokenSealer,
    store: Store,
    link_ttl: Duration,
    http: reqwest::Client,
    flows: Mutex<HashMap<String, Flow>>,
    upstreams: Mutex<HashMap<String, Arc<ConnectableUpstream>>>,
}

impl ConsentService {
    /// Builds the service; `public_url` is where browsers reach the gateway.
    pub fn new(cfg: &ConsentConfig, public_url: &str, store: Store) -> Result<Self, String> {
        let keys: Vec<(String, Secret)> = cfg
            .keys
            .iter()
            .map(|k| Ok((k.id.clone(), k.key.resolve()?)))
            .collect::<Result<_, String>>()?;
        let sealer = TokenSealer::new(&keys).map_err(|e| format!("consent.keys: {e}"))?;
        let login_issuer = cfg
            .login
            .issuer
            .clone()
            .ok_or("consent.login.issuer is required")?;
        Ok(ConsentService {
            public_url: public_url.trim_end_matches('/').to_owned(),
            login: TokenClient::new(&cfg.login, None)?,
            login_issuer,
            sealer,
            store,
            link_ttl: cfg.link_ttl.0,
            http: super::oauth_http()?,
            flows: Mutex::new(HashMap::new()),
            upstreams: Mutex::new(HashMap::new()),
        })
    }

    /// Registers a `user_oauth` upstream (done when its credentials are built).
    pub fn register(
        &self,
        name: &str,
        client: &config::OAuthClient,
        scopes: &[String],
        resource: String,
        upstream_url: &str,
    ) -> Result<(), String> {
        let up = ConnectableUpstream {
            name: name.to_owned(),
            client: TokenClient::new(client, Some(upstream_url))?,
            scopes: scopes.join(" "),
            resource,
            cache: TokenCache::default(),
        };
        self.upstreams
            .lock()
            .expect("consent lock")
            .insert(name.to_owned(), Arc::new(up));
        Ok(())
    }

    fn upstream(&self, name: &str) -> Option<Arc<ConnectableUpstream>> {
        self.upstreams
            .lock()
            .expect("consent lock")
            .get(name)
            .cloned()
    }

    /// The header for `who` at upstream `name`: a stored token (refreshed when needed), or
    /// `ConsentRequired` with a link for the user.
    pub async fn header_for(
        &self,
        name: &str,
        who: &OnBehalfOf,
    ) -> Result<HeaderValue, CredentialError> {
        let up = self.upstream(name).ok_or(CredentialError::NoSubject(
            "the upstream is not registered for consent",
        ))?;
        let fetch = self.stored_token(&up, who);
        up.cache.get_or_fetch(&who.binding, fetch).await
    }

    async fn stored_token(
        &self,
        up: &ConnectableUpstream,
        who: &OnBehalfOf,
    ) -> Result<Fresh, CredentialError> {
        let row = self
            .store
            .connection(&who.binding, &up.name)
            .await
            .map_err(|e| CredentialError::Store(e.to_string()))?;
        let Some(row) = row else {
            return Err(self.consent_required(who, &up.name));
        };
        let aad = aad(&who.binding, &up.name);
        let set: TokenSet = self
            .sealer
            .open(&row.sealed, aad.as_bytes())
            .ok()
            .and_then(|plain| serde_json::from_slice(&plain).ok())
            .ok_or_else(|| {
                tracing::warn!(upstream = %up.name, "a stored connection could not be opened; asking the user to connect again");
                self.consent_required(who, &up.name)
            })?;
        let now = crate::audit::now_ms();
        let fresh_enough = set.expires_at_ms.is_none_or(|e| e > now + 5_000);
        if fresh_enough {
            let left = set.expires_at_ms.map(|e| ((e - now) / 1000).max(0) as u64);
            return Fresh::bearer(&set.access_token, left);
        }
        let Some(refresh) = set.refresh_token.clone() else {
            return Err(self.consent_required(who, &up.name));
        };
        let params = vec![
            ("grant_type", "refresh_token".to_owned()),
            ("refresh_token", refresh.clone()),
            ("resource", up.resource.clone()),
        ];
        match up.client.request(&self.http, "refresh", params).await {
            Ok(t) => {
                let renewed = TokenSet {
                    access_token: t.access_token.clone(),
                    refresh_token: t.refresh_token.or(Some(refresh)),
                    expires_at_ms: t.expires_in.map(|s| now + s as i64 * 1000),
                };
                self.save(who, &up.name, &renewed, &row.scopes).await?;
                Fresh::bearer(&t.access_token, t.expires_in)
            }
            Err(CredentialError::Refused { .. }) => {
                tracing::info!(upstream = %up.name, "the refresh token was refused; asking the user to connect again");
                let _ = self.store.delete_connection(&who.binding, &up.name).await;
                Err(self.consent_required(who, &up.name))
            }
            Err(e) => Err(e),
        }
    }

    async fn save(
        &self,
        who: &OnBehalfOf,
        upstream: &str,
        set: &TokenSet,
        scopes: &str,
    ) -> Result<(), CredentialError> {
        let plain = serde_json::to_vec(set).expect("token sets serialize");
        let now = crate::audit::now_ms();
        let row = StoredConnection {
            binding: who.binding.clone(),
            upstream: upstream.to_owned(),
            subject: who.subject.clone(),
            issuer: who.issuer.clone(),
            key_id: self.sealer.current_key_id().to_owned(),
            sealed: self
                .sealer
                .seal(&plain, aad(&who.binding, upstream).as_bytes()),
            scopes: scopes.to_owned(),
            expires_at_ms: set.expires_at_ms,
            created_at_ms: now,
            updated_at_ms: now,
        };
        self.store
            .put_connection(&row)
            .await
            .map_err(|e| CredentialError::Store(e.to_string()))
    }

    /// A link for `who` to connect `upstream` (one per user and upstream at a time).
    fn consent_required(&self, who: &OnBehalfOf, upstream: &str) -> CredentialError {
        let mut flows = self.flows.lock().expect("consent lock");
        let ttl = self.link_ttl;
        flows.retain(|_, f| f.created.elapsed() < ttl);
        let existing = flows
            .iter()
            .find(|(_, f)| f.binding == who.binding && f.upstream == upstream)
            .map(|(id, _)| id.clone());
        let id = match existing {
            Some(id) => id,
            None => {
                if flows.len() >= MAX_FLOWS {
                    return CredentialError::NoSubject(
                        "too many consent flows are open; try again later",
                    );
                }
                let id = random_token();
                flows.insert(
                    id.clone(),
                    Flow {
                        binding: who.binding.clone(),
                        subject: who.subject.clone(),
                        issuer: who.issuer.clone(),
                        upstream: upstream.to_owned(),
                        created: Instant::now(),
                        step: Step::Issued,
                    },
                );
                id
            }
        };
        CredentialError::ConsentRequired {
            url: format!("{}/connect/{id}", self.public_url),
            elicitation_id: id,
        }
    }

    /// The consent link was opened: sign the user in at the IdP first.
    pub async fn open_link(&self, id: &str) -> Page {
        let Some(flow) = self.flow(id) else {
            return refused(
                404,
                "This link is unknown or has expired. Call the tool again to get a new one.",
            );
        };
        let authorize = match self.login.authorization_endpoint(&self.http).await {
            Ok(a) => a,
            Err(e) => return refused(502, format!("The sign-in page cannot be found: {e}")),
        };
        let (state, verifier) = (random_token(), random_token());
        let url = authorize_url(
            &authorize,
            &[
                ("response_type", "code"),
                ("client_id", self.login.client_id()),
                ("redirect_uri", &self.redirect("signed-in")),
                ("scope", "openid"),
                ("state", &state),
                ("code_challenge", &challenge(&verifier)),
                ("code_challenge_method", "S256"),
            ],
        );
        self.set_step(id, &flow, Step::SigningIn { state, verifier });
        Page::Redirect(url)
    }

    /// Back from the IdP: check who signed in, then send them to the upstream's server.
    pub async fn signed_in(&self, query: &CallbackQuery) -> Page {
        let Some((id, flow, verifier)) = self.take_state(query, |s| match s {
            Step::SigningIn { state, verifier } => Some((state.clone(), verifier.clone())),
            _ => None,
        }) else {
            return refused(
                400,
                "This sign-in does not belong to a consent in progress.",
            );
        };
        if let Some(e) = &query.error {
            self.drop_flow(&id);
            return refused(
                403,
                format!("Sign-in was not completed ({}).", printable(e)),
            );
        }
        let params = vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", query.code.clone().unwrap_or_default()),
            ("redirect_uri", self.redirect("signed-in")),
            ("code_verifier", verifier),
        ];
        let token = match self.login.request(&self.http, "sign-in", params).await {
            Ok(t) => t,
            Err(e) => {
                self.drop_flow(&id);
                return refused(502, format!("Sign-in failed: {e}"));
            }
        };
        let signed_in = token.id_token.as_deref().and_then(id_token_claims);
        let now = crate::audit::now_ms() / 1000;
        let matches = signed_in.as_ref().is_some_and(|c| {
            c.iss == self.login_issuer
                && c.aud.iter().any(|a| a == self.login.client_id())
                && c.exp > now
                && c.sub == flow.subject
                && flow.issuer == self.login_issuer
        });
        if !matches {
            self.drop_flow(&id);
            tracing::warn!(upstream = %flow.upstream, "consent refused: the signed-in user is not the user of the MCP session");
            return refused(
                403,
                "You signed in as a different user than the one using the MCP client. The connection was not made.",
            );
        }
        let Some(up) = self.upstream(&flow.upstream) else {
            return refused(404, "This upstream is no longer configured.");
        };
        let authorize = match up.client.authorization_endpoint(&self.http).await {
            Ok(a) => a,
            Err(e) => {
                return refused(
                    502,
                    format!("The service's authorization server cannot be found: {e}"),
                );
            }
        };
        let (state, verifier) = (random_token(), random_token());
        let url = {
            let redirect = self.redirect("callback");
            let code_challenge = challenge(&verifier);
            let mut params = vec![
                ("response_type", "code"),
                ("client_id", up.client.client_id()),
                ("redirect_uri", redirect.as_str()),
                ("state", state.as_str()),
                ("code_challenge", code_challenge.as_str()),
                ("code_challenge_method", "S256"),
                ("resource", up.resource.as_str()),
            ];
            if !up.scopes.is_empty() {
                params.push(("scope", up.scopes.as_str()));
            }
            if up.scopes.split(' ').any(|s| s == "offline_access") {
                params.push(("prompt", "consent"));
            }
            authorize_url(&authorize, &params)
        };
        self.set_step(&id, &flow, Step::Authorizing { state, verifier });
        Page::Redirect(url)
    }

    /// Back from the upstream's server: redeem the code and store the tokens sealed.
    pub async fn authorized(&self, query: &CallbackQuery) -> Page {
        let Some((id, flow, verifier)) = self.take_state(query, |s| match s {
            Step::Authorizing { state, verifier } => Some((state.clone(), verifier.clone())),
            _ => None,
        }) else {
            return refused(
                400,
                "This authorization does not belong to a consent in progress.",
            );
        };
        self.drop_flow(&id);
        if let Some(e) = &query.error {
            return refused(
                403,
                format!(
                    "The service did not authorize the connection ({}).",
                    printable(e)
                ),
            );
        }
        let Some(up) = self.upstream(&flow.upstream) else {
            return refused(404, "This upstream is no longer configured.");
        };
        let params = vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", query.code.clone().unwrap_or_default()),
            ("redirect_uri", self.redirect("callback")),
            ("code_verifier", verifier),
            ("resource", up.resource.clone()),
        ];
        let token = match up
            .client
            .request(&self.http, "authorization code grant", params)
            .await
        {
            Ok(t) => t,
            Err(e) => return refused(502, format!("The service refused the connection: {e}")),
        };
        let now = crate::audit::now_ms();
        let set = TokenSet {
            access_token: token.access_token,
            refresh_token: token.refresh_token,
            expires_at_ms: token.expires_in.map(|s| now + s as i64 * 1000),
        };
        let who = OnBehalfOf {
            binding: flow.binding.clone(),
            subject: flow.subject.clone(),
            issuer: flow.issuer.clone(),
            subject_token: None,
        };
        if let Err(e) = self.save(&who, &up.name, &set, &up.scopes).await {
            return refused(503, format!("The connection could not be stored: {e}"));
        }
        up.cache.forget(&flow.binding);
        tracing::info!(upstream = %up.name, "a user connected an upstream");
        Page::Connected {
            upstream: up.name.clone(),
        }
    }

    /// A user's connections (upstream, scopes, when), for listing.
    pub async fn connections(
        &self,
        binding: &str,
    ) -> Result<Vec<StoredConnection>, CredentialError> {
        self.store
            .connections(binding)
            .await
            .map_err(|e| CredentialError::Store(e.to_string()))
    }

    /// Removes a user's connection; the next call asks for consent again.
    pub async fn revoke(&self, binding: &str, upstream: &str) -> Result<bool, CredentialError> {
        let removed = self
            .store
            .delete_connection(binding, upstream)
            .await
            .map_err(|e| CredentialError::Store(e.to_string()))?;
        if let Some(up) = self.upstream(upstream) {
            up.cache.forget(binding);
        }
        Ok(removed)
    }

    fn redirect(&self, step: &str) -> String {
        format!("{}/connect/{step}", self.public_url)
    }

    fn flow(&self, id: &str) -> Option<Flow> {
        let flows = self.flows.lock().expect("consent lock");
        flows
            .get(id)
            .filter(|f| f.created.elapsed() < self.link_ttl)
            .cloned()
    }

    fn set_step(&self, id: &str, flow: &Flow, step: Step) {
        let mut flows = self.flows.lock().expect("consent lock");
        let mut f = flow.clone();
        f.step = step;
        flows.insert(id.to_owned(), f);
    }

    fn drop_flow(&self, id: &str) {
        self.flows.lock().expect("consent lock").remove(id);
    }

    /// The flow waiting for `query.state` at the step `pick` accepts; the state is single-use.
    fn take_state(
        &self,
        query: &CallbackQuery,
        pick: impl Fn(&Step) -> Option<(String, String)>,
    ) -> Option<(String, Flow, String)> {
        let state = query.state.as_deref()?;
        let mut flows = self.flows.lock().expect("consent lock");
        let (id, flow, verifier) = flows.iter().find_map(|(id, f)| {
            let (expected, verifier) = pick(&f.step)?;
            (expected == state && f.created.elapsed() < self.link_ttl)
                .then(|| (id.clone(), f.clone(), verifier))
        })?;
        if let Some(f) = flows.get_mut(&id) {
            f.step = Step::Issued;
        }
        Some((id, flow, verifier))
    }
}

/// `code`, `state` and `error` of a redirect back to the gateway.
#[derive(Debug, Default, Deserialize)]
pub struct CallbackQuery {
    /// The authorization code.
    #[serde(default)]
    pub code: Option<String>,
    /// The state sent with the request.
    #[serde(default)]
    pub state: Option<String>,
    /// An OAuth error code.
    #[serde(default)]
    pub error: Option<String>,
}

#[derive(Deserialize)]
struct IdTokenClaims {
    iss: String,
    sub: String,
    #[serde(deserialize_with = "one_or_many")]
    aud: Vec<String>,
    exp: i64,
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// The claims of an ID token received directly from the IdP's token endpoint over the
/// back channel (OpenID Connect Core §3.1.3.7 lets TLS to the token endpoint stand in for
/// the signature check); issuer, audience, expiry and subject are still checked by the caller.
fn id_token_claims(token: &str) -> Option<IdTokenClaims> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn aad(binding: &str, upstream: &str) -> String {
    format!("{binding}\n{upstream}")
}

fn random_token() -> String {
    // 32 bytes: 43 characters, the shortest PKCE verifier RFC 7636 allows.
    let mut b = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut b);
    URL_SAFE_NO_PAD.encode(b)
}

fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn authorize_url(endpoint: &str, params: &[(&str, &str)]) -> String {
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    let sep = if endpoint.contains('?') { '&' } else { '?' };
    format!("{endpoint}{sep}{query}")
}

fn printable(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_challenge_is_the_s256_of_the_verifier() {
        // RFC 7636 appendix B.
        assert_eq!(
            challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn id_token_claims_accept_one_or_many_audiences() {
        let payload =
            URL_SAFE_NO_PAD.encode(br#"{"iss":"i","sub":"alice","aud":["a","b"],"exp":9}"#);
        let c = id_token_claims(&format!("h.{payload}.s")).unwrap();
        assert_eq!((c.sub.as_str(), c.aud.len()), ("alice", 2));
        assert!(id_token_claims("not a token").is_none());
    }

    #[test]
    fn authorize_urls_are_form_encoded() {
        let u = authorize_url(
            "https://as/auth",
            &[("scope", "a b"), ("redirect_uri", "http://x/y?z")],
        );
        assert_eq!(
            u,
            "https://as/auth?scope=a+b&redirect_uri=http%3A%2F%2Fx%2Fy%3Fz"
        );
    }
}
