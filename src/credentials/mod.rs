//! Upstream credentials: what the gateway presents to each upstream, obtained by the gateway
//! for that upstream (and, for per-user kinds, for that user). The client's token is never
//! forwarded; at most it is the subject of an exchange at the IdP.
//!
//! The user a request is made for comes with each request as a [`CallContext`], which the
//! transport hands over when it asks for a header at the moment it sends, whichever path led
//! there (a call, a session handshake, a notification).

mod cache;
pub mod consent;
mod consent_flows;
mod token_client;

use crate::config::{self, Secret, UpstreamAuth};
use cache::{Fresh, TokenCache};
use consent::ConsentService;
use http::{HeaderName, HeaderValue};
use std::sync::Arc;
use token_client::TokenClient;

const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
const ID_JAG_TYPE: &str = "urn:ietf:params:oauth:token-type:id-jag";

/// Why an upstream credential could not be obtained. Never carries a token or secret.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CredentialError {
    /// The kind needs an authenticated user and the request has none usable.
    #[error("{0}")]
    NoSubject(&'static str),
    /// The authorization server could not be found.
    #[error("authorization server discovery failed: {0}")]
    Discovery(String),
    /// The authorization server could not be reached.
    #[error("the authorization server could not be reached for the {grant}: {reason}")]
    Unreachable {
        /// Which request.
        grant: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// The authorization server refused.
    #[error("the authorization server refused the {grant}: {error}{}", description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Refused {
        /// Which request.
        grant: &'static str,
        /// The OAuth error code.
        error: String,
        /// Its description, cleaned.
        description: Option<String>,
    },
    /// The user has not connected this upstream yet: they must open `url`.
    #[error("the user has not connected this upstream yet; open {url} to connect it")]
    ConsentRequired {
        /// The consent page for this user and upstream.
        url: String,
        /// The URL-mode elicitation id.
        elicitation_id: String,
    },
    /// The store of user connections failed.
    #[error("the connection store failed: {0}")]
    Store(String),
    /// The answer could not be used.
    #[error("the authorization server's answer to the {grant} is unusable: {reason}")]
    Invalid {
        /// Which request.
        grant: &'static str,
        /// What was wrong.
        reason: String,
    },
}

pub use crate::context::{CallContext, OnBehalfOf};

// One value per configured upstream, built once: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Kind {
    Static {
        name: HeaderName,
        value: HeaderValue,
    },
    ClientCredentials {
        client: TokenClient,
        params: Vec<(&'static str, String)>,
    },
    TokenExchange {
        idp: TokenClient,
        params: Vec<(&'static str, String)>,
        actor_token: Option<Secret>,
    },
    IdJag {
        idp: TokenClient,
        server: TokenClient,
        scopes: String,
        resource: String,
    },
    UserOauth {
        consent: Arc<ConsentService>,
        upstream: String,
    },
}

/// A client for authorization servers: bounded waits, no redirects followed.
fn oauth_http() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(15))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())
}

/// The credential source of one upstream.
pub struct UpstreamCredentials {
    kind: Kind,
    http: reqwest::Client,
    cache: TokenCache,
}

impl UpstreamCredentials {
    /// Whether the credential depends on the user the request is for.
    pub fn is_per_user(&self) -> bool {
        matches!(
            self.kind,
            Kind::TokenExchange { .. } | Kind::IdJag { .. } | Kind::UserOauth { .. }
        )
    }

    /// Whether the user must have connected the upstream first (`user_oauth`).
    pub fn asks_consent(&self) -> bool {
        matches!(self.kind, Kind::UserOauth { .. })
    }

    /// Builds the source for an HTTP upstream's `auth` block (validated); `None` without one.
    /// `consent` serves `user_oauth` upstreams.
    pub fn for_http(
        name: &str,
        cfg: &config::Upstream,
        consent: Option<&Arc<ConsentService>>,
    ) -> Result<Option<Self>, String> {
        let Some(auth) = &cfg.auth else {
            return Ok(None);
        };
        let url = cfg.url.clone().unwrap_or_default();
        let scope_param = |scopes: &[String]| scopes.join(" ");
        let kind = match auth {
            UpstreamAuth::Static {
                header,
                scheme,
                secret,
                ..
            } => {
                let name = header.as_deref().unwrap_or("authorization");
                let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
                let scheme = match scheme {
                    Some(s) => Some(s.as_str()),
                    None if name == http::header::AUTHORIZATION => Some("Bearer"),
                    None => None,
                };
                let secret = secret.resolve()?;
                let text = match scheme {
                    Some(s) => format!("{s} {}", secret.expose()),
                    None => secret.expose().to_owned(),
                };
                let mut value = HeaderValue::from_str(&text)
                    .map_err(|_| "the secret contains characters not allowed in a header")?;
                value.set_sensitive(true);
                Kind::Static { name, value }
            }
            UpstreamAuth::ClientCredentials {
                client,
                scopes,
                resource,
                audience,
            } => {
                let mut params = vec![("grant_type", "client_credentials".to_owned())];
                params.push(("resource", resource.clone().unwrap_or_else(|| url.clone())));
                if !scopes.is_empty() {
                    params.push(("scope", scope_param(scopes)));
                }
                if let Some(a) = audience {
                    params.push(("audience", a.clone()));
                }
                Kind::ClientCredentials {
                    client: TokenClient::new(client, Some(&url))?,
                    params,
                }
            }
            UpstreamAuth::TokenExchange {
                idp,
                scopes,
                resource,
                audience,
                actor_token,
            } => {
                let mut params = vec![
                    ("grant_type", TOKEN_EXCHANGE.to_owned()),
                    ("subject_token_type", ACCESS_TOKEN_TYPE.to_owned()),
                    ("requested_token_type", ACCESS_TOKEN_TYPE.to_owned()),
                    ("resource", resource.clone().unwrap_or_else(|| url.clone())),
                ];
                if !scopes.is_empty() {
                    params.push(("scope", scope_param(scopes)));
                }
                if let Some(a) = audience {
                    params.push(("audience", a.clone()));
                }
                Kind::TokenExchange {
                    idp: TokenClient::new(idp, None)?,
                    params,
                    actor_token: actor_token.as_ref().map(|a| a.resolve()).transpose()?,
                }
            }
            UpstreamAuth::IdJag {
                idp,
                authorization_server,
                scopes,
                resource,
            } => Kind::IdJag {
                idp: TokenClient::new(idp, None)?,
                server: TokenClient::new(authorization_server, Some(&url))?,
                scopes: scope_param(scopes),
                resource: resource.clone().unwrap_or(url),
            },
            UpstreamAuth::UserOauth {
                client,
                scopes,
                resource,
            } => {
                let consent = consent
                    .ok_or("kind user_oauth needs the top-level consent block")?
                    .clone();
                let resource = resource.clone().unwrap_or_else(|| url.clone());
                consent.register(name, client, scopes, resource, &url)?;
                Kind::UserOauth {
                    consent,
                    upstream: name.to_owned(),
                }
            }
        };
        let http = oauth_http()?;
        Ok(Some(UpstreamCredentials {
            kind,
            http,
            cache: TokenCache::default(),
        }))
    }

    /// The header to send for the current request.
    pub async fn header(
        &self,
        ctx: &CallContext,
    ) -> Result<(HeaderName, HeaderValue), CredentialError> {
        let bearer = |value| (http::header::AUTHORIZATION, value);
        match &self.kind {
            Kind::Static { name, value } => Ok((name.clone(), value.clone())),
            Kind::ClientCredentials { client, params } => {
                let fetch = async {
                    let t = client
                        .request(&self.http, "client credentials grant", params.clone())
                        .await?;
                    Fresh::bearer(&t.access_token, t.expires_in)
                };
                self.cache.get_or_fetch("", fetch).await.map(bearer)
            }
            Kind::TokenExchange {
                idp,
                params,
                actor_token,
            } => {
                let (who, subject) = subject(ctx)?;
                let fetch = async {
                    let mut params = params.clone();
                    params.push(("subject_token", subject.expose().to_owned()));
                    if let Some(a) = actor_token {
                        params.push(("actor_token", a.expose().to_owned()));
                        params.push(("actor_token_type", ACCESS_TOKEN_TYPE.to_owned()));
                    }
                    let t = idp.request(&self.http, "token exchange", params).await?;
                    Fresh::bearer(&t.access_token, t.expires_in)
                };
                self.cache.get_or_fetch(&who, fetch).await.map(bearer)
            }
            Kind::IdJag {
                idp,
                server,
                scopes,
                resource,
            } => {
                let (who, subject) = subject(ctx)?;
                let fetch = async {
                    let audience = server.issuer(&self.http).await?;
                    let mut params = vec![
                        ("grant_type", TOKEN_EXCHANGE.to_owned()),
                        ("requested_token_type", ID_JAG_TYPE.to_owned()),
                        ("subject_token_type", ACCESS_TOKEN_TYPE.to_owned()),
                        ("subject_token", subject.expose().to_owned()),
                        ("audience", audience),
                        ("resource", resource.clone()),
                    ];
                    if !scopes.is_empty() {
                        params.push(("scope", scopes.clone()));
                    }
                    let jag = idp.request(&self.http, "ID-JAG exchange", params).await?;
                    if jag.issued_token_type.as_deref() != Some(ID_JAG_TYPE) {
                        return Err(CredentialError::Invalid {
                            grant: "ID-JAG exchange",
                            reason: "issued_token_type is not an ID-JAG".into(),
                        });
                    }
                    let mut params = vec![
                        ("grant_type", JWT_BEARER.to_owned()),
                        ("assertion", jag.access_token),
                        ("resource", resource.clone()),
                    ];
                    if !scopes.is_empty() {
                        params.push(("scope", scopes.clone()));
                    }
                    let t = server
                        .request(&self.http, "jwt-bearer grant", params)
                        .await?;
                    Fresh::bearer(&t.access_token, t.expires_in)
                };
                self.cache.get_or_fetch(&who, fetch).await.map(bearer)
            }
            Kind::UserOauth { consent, upstream } => {
                let who = ctx.user().ok_or(CredentialError::NoSubject(
                    "this upstream needs the caller's identity; protect the virtual server with auth",
                ))?;
                consent.header_for(upstream, who).await.map(bearer)
            }
        }
    }
}

/// The request's user: cache key and exchangeable token.
fn subject(ctx: &CallContext) -> Result<(String, Secret), CredentialError> {
    let who = ctx.user().ok_or(CredentialError::NoSubject(
        "this upstream needs the caller's identity; protect the virtual server with auth",
    ))?;
    let token = who.subject_token.clone().ok_or(CredentialError::NoSubject(
        "an API key cannot be exchanged at the identity provider; call with an IdP token",
    ))?;
    Ok((who.binding.clone(), token))
}

/// The environment variable a stdio upstream's `static` auth sets, resolved now.
pub fn stdio_env(cfg: &config::Upstream) -> Result<Option<(String, Secret)>, String> {
    match &cfg.auth {
        Some(UpstreamAuth::Static {
            env_var: Some(var),
            secret,
            ..
        }) => Ok(Some((var.clone(), secret.resolve()?))),
        _ => Ok(None),
    }
}
