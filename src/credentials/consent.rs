//! Per-user consent for `user_oauth` upstreams. A call for a user who has not connected the
//! upstream yet gets a link (URL-mode elicitation). On that page the user signs in to the
//! gateway at the enterprise IdP — the ID token is verified (signature against the IdP's keys,
//! `nonce`, issuer, audience, expiry) and its subject must be the MCP token's subject — and
//! then authorizes the gateway at the upstream's authorization server (code + PKCE). The link
//! works once and the flow is bound to the browser that opened it (see `consent_flows`); the
//! last page names the accounts linked. The tokens are sealed (AES-256-GCM) into the store;
//! they never pass through the client.

use super::cache::{Fresh, TokenCache};
use super::consent_flows::{FlowError, Flows, MAX_FLOWS, MAX_FLOWS_PER_USER, Step, digest};
use super::token_client::TokenClient;
use super::{CredentialError, OnBehalfOf};
use crate::config::{self, ConsentConfig};
use crate::keyring::Keyring;
use crate::oauth::idp::{Idp, IdpFlavor, IdpIdentity, IdpSettings};
use crate::store::{Store, StoredConnection};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub use super::consent_flows::BrowserCookie;

/// One `user_oauth` upstream as the consent service knows it.
pub struct ConnectableUpstream {
    name: String,
    client: TokenClient,
    scopes: String,
    resource: String,
    cache: TokenCache,
    /// Verifies the service's ID tokens (only when `openid` is among the scopes).
    id_tokens: tokio::sync::OnceCell<Idp>,
}

impl ConnectableUpstream {
    fn asks_openid(&self) -> bool {
        self.scopes.split(' ').any(|s| s == "openid")
    }
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
        /// The account at the service, when its ID token names it.
        account: Option<String>,
        /// The user at the enterprise IdP the connection serves.
        user: String,
    },
    /// The flow stopped; say why (no secrets).
    Refused {
        /// HTTP status.
        status: u16,
        /// A sentence for the user.
        message: String,
    },
}

/// A page and the cookie change that goes with it.
#[derive(Debug)]
pub struct Answer {
    /// What to show.
    pub page: Page,
    /// What to do to the browser's cookies.
    pub cookie: Option<BrowserCookie>,
}

impl From<Page> for Answer {
    fn from(page: Page) -> Answer {
        Answer { page, cookie: None }
    }
}

fn refused(status: u16, message: impl Into<String>) -> Page {
    Page::Refused {
        status,
        message: message.into(),
    }
}

fn flow_refused(e: FlowError) -> Page {
    refused(e.status(), e.to_string())
}

/// Consent flows, sealing and the store of user connections.
pub struct ConsentService {
    public_url: String,
    login: TokenClient,
    login_issuer: String,
    /// Verifies the sign-in's ID token (discovered on first use).
    login_id_tokens: tokio::sync::OnceCell<Idp>,
    sealer: Keyring,
    store: Store,
    link_ttl: std::time::Duration,
    http: reqwest::Client,
    flows: Flows,
    upstreams: Mutex<HashMap<String, Arc<ConnectableUpstream>>>,
}

impl ConsentService {
    /// Builds the service; `public_url` is where browsers reach the gateway.
    pub fn new(cfg: &ConsentConfig, public_url: &str, store: Store) -> Result<Self, String> {
        let sealer = Keyring::from_config(&cfg.keys).map_err(|e| format!("consent.keys: {e}"))?;
        let login_issuer = cfg
            .login
            .issuer
            .clone()
            .ok_or("consent.login.issuer is required")?;
        Ok(ConsentService {
            public_url: public_url.trim_end_matches('/').to_owned(),
            login: TokenClient::new(&cfg.login, None)?,
            login_issuer,
            login_id_tokens: tokio::sync::OnceCell::new(),
            sealer,
            store,
            link_ttl: cfg.link_ttl.0,
            http: super::oauth_http()?,
            flows: Flows::new(cfg.link_ttl.0, MAX_FLOWS, MAX_FLOWS_PER_USER),
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
            id_tokens: tokio::sync::OnceCell::new(),
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

    /// A link for `who` to connect `upstream` (the unopened one, or a new one).
    fn consent_required(&self, who: &OnBehalfOf, upstream: &str) -> CredentialError {
        match self.flows.link(who, upstream) {
            Ok(id) => CredentialError::ConsentRequired {
                url: format!("{}/connect/{id}", self.public_url),
                elicitation_id: id,
            },
            Err(_) => {
                CredentialError::NoSubject("too many consent flows are open; try again later")
            }
        }
    }

    /// The consent link was opened: bind the flow to this browser (a cookie) and sign the
    /// user in at the IdP. A link opens once.
    pub async fn open_link(&self, id: &str) -> Answer {
        let authorize = match self.login.authorization_endpoint(&self.http).await {
            Ok(a) => a,
            Err(e) => return refused(502, format!("The sign-in page cannot be found: {e}")).into(),
        };
        let browser = random_token();
        let (state, verifier, nonce) = (random_token(), random_token(), random_token());
        let step = Step::SigningIn {
            state: state.clone(),
            verifier: verifier.clone(),
            nonce: nonce.clone(),
        };
        if let Err(e) = self.flows.open(id, digest(&browser), step) {
            return flow_refused(e).into();
        }
        let url = authorize_url(
            &authorize,
            &[
                ("response_type", "code"),
                ("client_id", self.login.client_id()),
                ("redirect_uri", &self.redirect("signed-in")),
                ("scope", "openid profile email"),
                ("state", &state),
                ("nonce", &nonce),
                ("code_challenge", &challenge(&verifier)),
                ("code_challenge_method", "S256"),
            ],
        );
        Answer {
            page: Page::Redirect(url),
            cookie: Some(BrowserCookie::Set(browser)),
        }
    }

    /// Back from the IdP: verify who signed in, then send them to the upstream's server.
    pub async fn signed_in(&self, query: &CallbackQuery, cookies: &[String]) -> Answer {
        let taken = self
            .flows
            .take(query.state.as_deref(), cookies, |s| match s {
                Step::SigningIn {
                    state,
                    verifier,
                    nonce,
                } => Some((state.clone(), (verifier.clone(), nonce.clone()))),
                _ => None,
            });
        let taken = match taken {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "consent refused at sign-in");
                return flow_refused(e).into();
            }
        };
        let (mut flow, (verifier, nonce)) = (taken.flow, taken.picked);
        let end = |page: Page| Answer {
            page,
            cookie: Some(BrowserCookie::Clear(taken.cookie.clone())),
        };
        if let Some(e) = &query.error {
            return end(refused(
                403,
                format!("Sign-in was not completed ({}).", printable(e)),
            ));
        }
        let params = vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", query.code.clone().unwrap_or_default()),
            ("redirect_uri", self.redirect("signed-in")),
            ("code_verifier", verifier),
        ];
        let token = match self.login.request(&self.http, "sign-in", params).await {
            Ok(t) => t,
            Err(e) => return end(refused(502, format!("Sign-in failed: {e}"))),
        };
        let identity = match self.verify_login(token.id_token.as_deref(), &nonce).await {
            Ok(i) => i,
            Err((status, e)) => {
                tracing::warn!(upstream = %flow.upstream, error = %e, "consent refused: the sign-in's ID token was not accepted");
                return end(refused(
                    status,
                    format!("The sign-in could not be verified: {e}. The connection was not made."),
                ));
            }
        };
        if identity.subject != flow.subject || flow.issuer != self.login_issuer {
            tracing::warn!(upstream = %flow.upstream, "consent refused: the signed-in user is not the user of the MCP session");
            return end(refused(
                403,
                "You signed in as a different user than the one using the MCP client. The connection was not made.",
            ));
        }
        flow.signed_in_as = Some(account_name(&identity));
        let Some(up) = self.upstream(&flow.upstream) else {
            return end(refused(404, "This upstream is no longer configured."));
        };
        let authorize = match up.client.authorization_endpoint(&self.http).await {
            Ok(a) => a,
            Err(e) => {
                return end(refused(
                    502,
                    format!("The service's authorization server cannot be found: {e}"),
                ));
            }
        };
        let (state, verifier) = (random_token(), random_token());
        let nonce = up.asks_openid().then(random_token);
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
            if let Some(n) = &nonce {
                params.push(("nonce", n.as_str()));
            }
            if up.scopes.split(' ').any(|s| s == "offline_access") {
                params.push(("prompt", "consent"));
            }
            authorize_url(&authorize, &params)
        };
        let step = Step::Authorizing {
            state,
            verifier,
            nonce,
        };
        self.flows.advance(taken.id, flow, step);
        Page::Redirect(url).into()
    }

    /// Back from the upstream's server: redeem the code and store the tokens sealed.
    pub async fn authorized(&self, query: &CallbackQuery, cookies: &[String]) -> Answer {
        let taken = self
            .flows
            .take(query.state.as_deref(), cookies, |s| match s {
                Step::Authorizing {
                    state,
                    verifier,
                    nonce,
                } => Some((state.clone(), (verifier.clone(), nonce.clone()))),
                _ => None,
            });
        let taken = match taken {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "consent refused at the service's callback");
                return flow_refused(e).into();
            }
        };
        let (flow, (verifier, nonce)) = (taken.flow, taken.picked);
        let end = |page: Page| Answer {
            page,
            cookie: Some(BrowserCookie::Clear(taken.cookie.clone())),
        };
        if let Some(e) = &query.error {
            return end(refused(
                403,
                format!(
                    "The service did not authorize the connection ({}).",
                    printable(e)
                ),
            ));
        }
        let Some(up) = self.upstream(&flow.upstream) else {
            return end(refused(404, "This upstream is no longer configured."));
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
            Err(e) => {
                return end(refused(
                    502,
                    format!("The service refused the connection: {e}"),
                ));
            }
        };
        let account = match &nonce {
            None => None,
            Some(nonce) => match self
                .verify_service(&up, token.id_token.as_deref(), nonce)
                .await
            {
                Ok(i) => Some(account_name(&i)),
                Err((_, e)) => {
                    tracing::warn!(upstream = %up.name, error = %e, "consent refused: the service's ID token was not accepted");
                    return end(refused(
                        502,
                        format!(
                            "The service's sign-in could not be verified: {e}. The connection was not made."
                        ),
                    ));
                }
            },
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
            return end(refused(
                503,
                format!("The connection could not be stored: {e}"),
            ));
        }
        up.cache.forget(&flow.binding);
        tracing::info!(upstream = %up.name, "a user connected an upstream");
        end(Page::Connected {
            upstream: up.name.clone(),
            account,
            user: flow.signed_in_as.clone().unwrap_or(flow.subject.clone()),
        })
    }

    /// Verifies the sign-in's ID token (see [`verify_id_token`]).
    async fn verify_login(
        &self,
        id_token: Option<&str>,
        nonce: &str,
    ) -> Result<IdpIdentity, (u16, String)> {
        let (issuer, client_id) = (&self.login_issuer, self.login.client_id());
        verify_id_token(
            &self.login_id_tokens,
            &self.http,
            issuer,
            client_id,
            id_token,
            nonce,
        )
        .await
    }

    /// Verifies the service's ID token the same way, against the service's own keys.
    async fn verify_service(
        &self,
        up: &ConnectableUpstream,
        id_token: Option<&str>,
        nonce: &str,
    ) -> Result<IdpIdentity, (u16, String)> {
        let issuer = up
            .client
            .issuer(&self.http)
            .await
            .map_err(|e| (502, e.to_string()))?;
        let client_id = up.client.client_id();
        verify_id_token(
            &up.id_tokens,
            &self.http,
            &issuer,
            client_id,
            id_token,
            nonce,
        )
        .await
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

    /// The flow cookies a request carries.
    pub fn browser_cookies(headers: &HeaderMap) -> Vec<String> {
        super::consent_flows::browser_cookies(headers)
    }

    /// The `Set-Cookie` value for a cookie change.
    pub fn set_cookie(&self, change: &BrowserCookie) -> Option<HeaderValue> {
        let https = self.public_url.starts_with("https://");
        super::consent_flows::set_cookie(https, self.link_ttl, change)
    }

    fn redirect(&self, step: &str) -> String {
        format!("{}/connect/{step}", self.public_url)
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

/// Verifies an ID token issued to `client_id` by `issuer` for the login that sent `nonce`, with
/// the façade's relying-party checks (signature against the issuer's published keys, `iss`,
/// `aud`/`azp`, `exp`/`iat`, `nonce`, asymmetric algorithms only); the issuer's OpenID
/// configuration is read once into `cell`. Err: the page's status (403 for the token, 502 when
/// the issuer cannot be used) and why.
async fn verify_id_token(
    cell: &tokio::sync::OnceCell<Idp>,
    http: &reqwest::Client,
    issuer: &str,
    client_id: &str,
    id_token: Option<&str>,
    nonce: &str,
) -> Result<IdpIdentity, (u16, String)> {
    let id_token = id_token.ok_or((403, format!("{issuer} sent no ID token")))?;
    let idp = cell
        .get_or_try_init(|| {
            Idp::discover(
                IdpSettings::new(IdpFlavor::Oidc, issuer, client_id),
                http.clone(),
            )
        })
        .await
        .map_err(|e| (502, e.to_string()))?;
    idp.verify_id_token(id_token, nonce)
        .await
        .map_err(|e| (403, e.to_string()))
}

/// How a page names an account: its user name, else its email, else its subject (cut short,
/// without control characters; the page escapes it).
fn account_name(i: &IdpIdentity) -> String {
    let claim = |k: &str| {
        i.claims
            .get(k)
            .and_then(serde_json::Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let name = claim("preferred_username")
        .or_else(|| i.email.clone())
        .unwrap_or_else(|| i.subject.clone());
    name.chars().filter(|c| !c.is_control()).take(200).collect()
}

fn aad(binding: &str, upstream: &str) -> String {
    format!("{binding}\n{upstream}")
}

pub(super) fn random_token() -> String {
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
#[path = "consent_tests.rs"]
mod tests;
