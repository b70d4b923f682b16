//! The façade as a running service: built from the `oauth_server` block, holding the client
//! registry, signing keys, the enterprise IdP and the ID-JAG verifier, and describing itself
//! (RFC 8414 metadata).

use super::cimd::{CimdFetcher, CimdSettings};
use super::clients::{ClientRegistry, PreRegistered};
use super::id_jag::{IdJagVerifier, TrustedIdp};
use super::idp::{ClaimMapping, ClientAuthMethod, Idp, IdpError, IdpFlavor, IdpSettings};
use super::keys::SigningKeys;
use super::registration::{RateLimiter, RegistrationPolicy, hash_secret};
use crate::config::oauth_server::{FACADE_ISSUER_NAME, IdpConfig, OAuthServerConfig};
use crate::config::{ClientAuthMethod as ConfigAuthMethod, Config};
use crate::keyring::Keyring;
use crate::store::Store;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// How long a login may take at the IdP (and on the consent page).
pub const LOGIN_LIFETIME: Duration = Duration::from_secs(600);

/// The running authorization server.
pub struct Facade {
    /// The issuer identifier (`public_url`).
    pub issuer: String,
    /// Who the clients are.
    pub registry: ClientRegistry,
    /// Dynamic registration rules.
    pub registration: RegistrationPolicy,
    /// Registration rate limits.
    pub limiter: RateLimiter,
    /// Token-signing keys (in the store, sealed).
    pub keys: Arc<SigningKeys>,
    /// Seals the state of logins in progress and consent tickets.
    pub sealer: Arc<Keyring>,
    /// Verifies ID-JAGs, when configured.
    pub id_jag: Option<IdJagVerifier>,
    /// Resource URIs of the virtual servers that accept this façade's tokens.
    pub resources: Vec<(String, String)>,
    /// Scopes clients may be granted.
    pub scopes: Vec<String>,
    /// Access token lifetime.
    pub access_ttl: Duration,
    /// Refresh token lifetime.
    pub refresh_ttl: Duration,
    /// The store (codes, refresh tokens, clients).
    pub store: Store,
    idp_settings: IdpSettings,
    idp: tokio::sync::OnceCell<Idp>,
    http: reqwest::Client,
    /// The configuration it was built from (to reuse it across reloads).
    pub config: OAuthServerConfig,
}

fn flavor(name: &str) -> IdpFlavor {
    match name {
        "entra" => IdpFlavor::Entra,
        "google" => IdpFlavor::Google,
        "okta" => IdpFlavor::Okta,
        "auth0" => IdpFlavor::Auth0,
        "keycloak" => IdpFlavor::Keycloak,
        "ping" => IdpFlavor::Ping,
        "forgerock" => IdpFlavor::ForgeRock,
        _ => IdpFlavor::Oidc,
    }
}

/// The IdP client settings of an `idp` block (the façade's, the console's); resolves the secret.
pub fn idp_settings(i: &IdpConfig, clock_skew: Duration) -> Result<IdpSettings, String> {
    let fl = flavor(&i.flavor);
    let mut idp_settings = IdpSettings::new(fl, &i.issuer, &i.client_id);
    idp_settings.discovery_url.clone_from(&i.discovery_url);
    idp_settings
        .authorization_endpoint
        .clone_from(&i.authorization_endpoint);
    idp_settings.token_endpoint.clone_from(&i.token_endpoint);
    idp_settings.jwks_uri.clone_from(&i.jwks_uri);
    idp_settings.client_secret = match &i.client_secret {
        Some(s) => Some(s.resolve()?),
        None => None,
    };
    idp_settings.auth_method = match i.auth_method {
        ConfigAuthMethod::ClientSecretBasic => ClientAuthMethod::Basic,
        ConfigAuthMethod::ClientSecretPost => ClientAuthMethod::Post,
    };
    if !i.scopes.is_empty() {
        idp_settings.scopes.clone_from(&i.scopes);
    }
    idp_settings.extra_authorize_params = i.extra_authorize_params.clone();
    let mut claims = ClaimMapping::for_flavor(fl);
    if !i.groups_claim.is_empty() {
        claims.groups.clone_from(&i.groups_claim);
    }
    if !i.roles_claim.is_empty() {
        claims.roles.clone_from(&i.roles_claim);
    }
    idp_settings.claims = claims;
    idp_settings.allowed_tenants.clone_from(&i.allowed_tenants);
    idp_settings.clock_skew = clock_skew;
    Ok(idp_settings)
}

/// The resource URIs (and names) of the virtual servers that accept the façade's tokens (those
/// naming `gatehouse` in `auth.issuers`).
pub fn resources_of(config: &Config) -> Vec<(String, String)> {
    config
        .servers
        .iter()
        .filter(|s| {
            s.auth
                .as_ref()
                .is_some_and(|a| a.issuers.iter().any(|n| n == FACADE_ISSUER_NAME))
        })
        .map(|s| (config.resource_uri(s), s.name.clone()))
        .collect()
}

impl Facade {
    /// Builds the façade (creating its first signing key if the store has none). Needs the
    /// multi-threaded runtime. The IdP is discovered on first use, so that the gateway starts
    /// while the IdP is down.
    pub fn start(config: &Config, store: Store) -> Result<Arc<Facade>, String> {
        let cfg = config.oauth_server.clone().ok_or("no oauth_server block")?;
        let issuer = config.public_base();
        let sealer = Arc::new(
            Keyring::from_config(&cfg.keys).map_err(|e| format!("oauth_server.keys: {e}"))?,
        );
        let access_ttl = cfg.access_token_ttl.0;
        let keys = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(SigningKeys::load_or_create(
                store.clone(),
                sealer.clone(),
                cfg.rotate_signing_key_after.0,
                // A replaced key verifies every token it signed, with room for clock skew.
                access_ttl + Duration::from_secs(600),
            ))
        })
        .map_err(|e| format!("oauth_server: signing keys: {e}"))?;
        let keys = Arc::new(keys);
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("oauth_server: HTTP client: {e}"))?;

        let mut pre = Vec::new();
        for c in &cfg.clients {
            let secret_hash = match &c.secret {
                Some(s) => Some(hash_secret(s.resolve()?.expose())),
                None => None,
            };
            pre.push(PreRegistered {
                client_id: c.client_id.clone(),
                redirect_uris: c.redirect_uris.clone(),
                client_name: c.name.clone(),
                secret_hash,
            });
        }
        let cimd = if cfg.cimd.enabled {
            Some(
                CimdFetcher::new(CimdSettings {
                    max_bytes: cfg.cimd.max_bytes,
                    timeout: cfg.cimd.timeout.0,
                    allow_private_addresses: cfg.cimd.allow_private_addresses,
                    ..CimdSettings::default()
                })
                .map_err(|e| format!("oauth_server.cimd: {e}"))?,
            )
        } else {
            None
        };
        let registry = ClientRegistry::new(pre, cimd, Some(store.clone()));
        let r = &cfg.registration;
        let registration = RegistrationPolicy {
            enabled: r.enabled,
            initial_access_token: match &r.initial_access_token {
                Some(s) => Some(s.resolve()?.expose().to_owned()),
                None => None,
            },
            redirect_hosts: r.redirect_hosts.clone(),
            per_ip_per_hour: r.per_ip_per_hour,
            global_per_hour: r.global_per_hour,
            max_clients: r.max_clients,
            unused_expiry: r.unused_expiry.0,
        };
        let limiter = RateLimiter::new(r.per_ip_per_hour, r.global_per_hour);

        let idp_settings = idp_settings(&cfg.idp, config.auth.clock_skew.0)?;

        let id_jag = match &cfg.id_jag {
            Some(j) => {
                let trusted = j
                    .trusted
                    .iter()
                    .map(|t| {
                        let mut idp = TrustedIdp::new(&t.issuer);
                        idp.jwks_uri.clone_from(&t.jwks_uri);
                        idp
                    })
                    .collect();
                Some(
                    IdJagVerifier::new(trusted, &issuer, config.auth.clock_skew.0, http.clone())
                        .map_err(|e| format!("oauth_server.id_jag: {e}"))?,
                )
            }
            None => None,
        };
        let resources = resources_of(config);
        let facade = Arc::new(Facade {
            issuer,
            registry,
            registration,
            limiter,
            keys,
            sealer,
            id_jag,
            resources,
            scopes: cfg.scopes.clone(),
            access_ttl,
            refresh_ttl: cfg.refresh_token_ttl.0,
            store,
            idp_settings,
            idp: tokio::sync::OnceCell::new(),
            http,
            config: cfg,
        });
        let weak = Arc::downgrade(&facade);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(60)).await;
                let Some(f) = weak.upgrade() else { return };
                f.housekeeping().await;
            }
        });
        Ok(facade)
    }

    /// Re-reads signing keys (other replicas may rotate), deletes unused registrations and
    /// expired refresh tokens.
    async fn housekeeping(&self) {
        if let Err(e) = self.keys.refresh().await {
            tracing::warn!(error = %e, "oauth_server: cannot refresh signing keys");
        }
        let cutoff = crate::audit::now_ms() - self.registration.unused_expiry.as_millis() as i64;
        match self.store.delete_unused_oauth_clients(cutoff).await {
            Ok(n) if n > 0 => {
                tracing::info!(deleted = n, "oauth_server: unused registrations expired")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "oauth_server: cannot expire registrations"),
        }
        if let Err(e) = self.store.forget_used_once(crate::audit::now_ms()).await {
            tracing::warn!(error = %e, "oauth_server: cannot forget expired single-use values");
        }
        if let Err(e) = super::tokens::purge_expired(&self.store).await {
            tracing::warn!(error = %e, "oauth_server: cannot purge expired refresh tokens");
        }
    }

    /// Records the first use of a single-use value (shared by every replica through the
    /// store); `false` when it was used before or cannot be recorded (refusing is the safe way
    /// to fail).
    pub async fn first_use(&self, kind: &str, digest: &str, expires_at_ms: i64) -> bool {
        match self.store.use_once(kind, digest, expires_at_ms).await {
            Ok(first) => first,
            Err(e) => {
                tracing::error!(error = %e, kind, "oauth_server: cannot record a single use");
                false
            }
        }
    }

    /// The enterprise IdP, discovered on first use (and again after a failure).
    pub async fn idp(&self) -> Result<&Idp, IdpError> {
        self.idp
            .get_or_try_init(|| Idp::discover(self.idp_settings.clone(), self.http.clone()))
            .await
    }

    /// Where the IdP sends the browser back.
    pub fn callback_uri(&self) -> String {
        format!("{}/oauth/callback", self.issuer)
    }

    /// The virtual server a `resource` names (by resource URI), if it accepts our tokens.
    pub fn resource(&self, uri: &str) -> Option<&(String, String)> {
        let uri = uri.trim_end_matches('/');
        self.resources
            .iter()
            .find(|(r, _)| r.trim_end_matches('/') == uri)
    }

    /// The scopes granted for an authorization request: those asked for that are offered (all
    /// offered ones when none are asked for). Err (for `invalid_scope`) when scopes were asked
    /// for and none of them is offered: an empty grant would silently be worth nothing.
    pub fn grant_scopes(&self, asked: Option<&str>) -> Result<String, String> {
        match asked.map(str::trim).filter(|s| !s.is_empty()) {
            None => Ok(self.scopes.join(" ")),
            Some(a) => {
                let mut kept: Vec<&str> = Vec::new();
                for s in a.split_whitespace() {
                    if self.scopes.iter().any(|o| o == s) && !kept.contains(&s) {
                        kept.push(s);
                    }
                }
                if kept.is_empty() {
                    Err(format!(
                        "none of the requested scopes is offered here (offered: {})",
                        if self.scopes.is_empty() {
                            "none".to_owned()
                        } else {
                            self.scopes.join(" ")
                        }
                    ))
                } else {
                    Ok(kept.join(" "))
                }
            }
        }
    }

    /// RFC 8414 metadata.
    pub fn metadata(&self) -> Value {
        let i = &self.issuer;
        let mut grants = vec!["authorization_code", "refresh_token"];
        if self.id_jag.is_some() {
            grants.push("urn:ietf:params:oauth:grant-type:jwt-bearer");
        }
        let mut m = json!({
            "issuer": i,
            "authorization_endpoint": format!("{i}/oauth/authorize"),
            "token_endpoint": format!("{i}/oauth/token"),
            "revocation_endpoint": format!("{i}/oauth/revoke"),
            "jwks_uri": format!("{i}/oauth/jwks"),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": grants,
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
            "revocation_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
            "scopes_supported": self.scopes,
            "authorization_response_iss_parameter_supported": true,
            "client_id_metadata_document_supported": self.config.cimd.enabled,
        });
        // No ID-token fields (subject_types_supported, id_token_signing_alg_values_supported):
        // the façade issues access tokens only, and the OpenID path serves this same document
        // for clients that look there first.
        if self.registration.enabled {
            m["registration_endpoint"] = json!(format!("{i}/oauth/register"));
        }
        m
    }
}
