//! The enterprise IdP adapter: Gatehouse as an OpenID Connect relying party. Users log in at the
//! IdP (authorization code + PKCE); Gatehouse redeems the code and trusts nothing in the answer
//! until the ID token has been verified: signature against the IdP's keys, `iss`, `aud`, `azp`,
//! `exp`/`iat`/`nbf`, `nonce`, and an asymmetric algorithm from an allow-list.
//!
//! Flavors only change defaults (scopes, claim paths, accepted issuer spellings) and refuse
//! settings known to break an IdP (Entra rejects the RFC 8707 `resource` parameter).
//!
//! Entra multi-tenant apps (`…/common/v2.0`, `…/organizations/v2.0`) publish the issuer
//! `https://login.microsoftonline.com/{tenantid}/v2.0`, a template, not an issuer: such a
//! document is refused unless `allowed_tenants` lists the tenants to accept; the ID token's `iss`
//! must then be the template filled with its own `tid`, and that `tid` must be listed.

use super::common::{acceptable_endpoint, same, string_at, strings_at};
use super::idp_jwt::{asymmetric, header_of, idp_keys, issued_at, validation, verify_claims};
use crate::auth::jwks::{JwksCache, JwksSource};
use crate::config::Secret;
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// Largest token endpoint response read.
const MAX_RESPONSE_BYTES: usize = 1 << 20;
/// The Entra issuer template placeholder.
const TENANT_PLACEHOLDER: &str = "{tenantid}";
/// Authorization request parameters Gatehouse sets itself; configured extras may not override them.
const RESERVED_PARAMS: [&str; 9] = [
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
    "request",
];

/// Which IdP product; only defaults and known quirks depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdpFlavor {
    /// Any OpenID Connect provider.
    Oidc,
    /// Microsoft Entra ID (v2.0 endpoints).
    Entra,
    /// Google (OpenID Connect discovery only, no RFC 8414).
    Google,
    /// Okta.
    Okta,
    /// Auth0.
    Auth0,
    /// Keycloak.
    Keycloak,
    /// Ping Identity.
    Ping,
    /// ForgeRock / Ping Advanced Identity Cloud.
    ForgeRock,
}

/// How Gatehouse authenticates to the IdP's token endpoint when it has a client secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthMethod {
    /// `client_secret_basic`: HTTP Basic with form-encoded id and secret (RFC 6749 §2.3.1).
    Basic,
    /// `client_secret_post`: id and secret in the form body.
    Post,
}

/// Where the identity's attributes are in the ID token (dotted paths; a claim whose own name
/// contains dots, such as an Auth0 namespaced URL claim, is matched first). Lists: first found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimMapping {
    /// The subject.
    pub subject: String,
    /// Group memberships.
    pub groups: Vec<String>,
    /// Roles.
    pub roles: Vec<String>,
    /// Email address.
    pub email: Vec<String>,
    /// Display name.
    pub name: Vec<String>,
    /// Tenant or organisation.
    pub tenant: Vec<String>,
}

impl ClaimMapping {
    /// Sane defaults per product. `sub` is the subject everywhere: it is always present and
    /// stable per application (Entra's `oid` stays available through `IdpIdentity::claims`).
    pub fn for_flavor(flavor: IdpFlavor) -> ClaimMapping {
        let v = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let (groups, roles, tenant) = match flavor {
            IdpFlavor::Entra => (v(&["groups"]), v(&["roles"]), v(&["tid"])),
            // Google has no groups in tokens; `hd` is the Workspace domain.
            IdpFlavor::Google => (v(&[]), v(&[]), v(&["hd"])),
            IdpFlavor::Okta => (v(&["groups"]), v(&[]), v(&[])),
            // Auth0 puts custom claims under a namespace the tenant chooses: configure the paths.
            IdpFlavor::Auth0 => (v(&[]), v(&[]), v(&["org_id"])),
            IdpFlavor::Keycloak => (v(&["groups"]), v(&["realm_access.roles"]), v(&[])),
            IdpFlavor::Oidc | IdpFlavor::Ping | IdpFlavor::ForgeRock => {
                (v(&["groups"]), v(&["roles"]), v(&[]))
            }
        };
        ClaimMapping {
            subject: "sub".into(),
            groups,
            roles,
            email: v(&["email"]),
            name: v(&["name"]),
            tenant,
        }
    }
}

/// How to reach and trust the enterprise IdP (mapped from the YAML by the configuration).
#[derive(Debug, Clone)]
pub struct IdpSettings {
    /// The product.
    pub flavor: IdpFlavor,
    /// The issuer identifier, exactly as in its ID tokens.
    pub issuer: String,
    /// The discovery document; by default `{issuer}/.well-known/openid-configuration`.
    pub discovery_url: Option<String>,
    /// Overrides the discovered authorization endpoint.
    pub authorization_endpoint: Option<String>,
    /// Overrides the discovered token endpoint.
    pub token_endpoint: Option<String>,
    /// Overrides the discovered key set URL.
    pub jwks_uri: Option<String>,
    /// Gatehouse's client id at the IdP.
    pub client_id: String,
    /// Gatehouse's client secret; `None` for a public client (PKCE only).
    pub client_secret: Option<Secret>,
    /// How the secret is sent.
    pub auth_method: ClientAuthMethod,
    /// Scopes requested; `openid` is added when missing.
    pub scopes: Vec<String>,
    /// Further authorize parameters (e.g. Okta/Auth0 `audience`, Google `hd`).
    pub extra_authorize_params: BTreeMap<String, String>,
    /// Where the identity's attributes are.
    pub claims: ClaimMapping,
    /// Tolerated clock difference.
    pub clock_skew: Duration,
    /// ID token signature algorithms accepted (asymmetric only).
    pub algorithms: Vec<Algorithm>,
    /// When non-empty, the identity's tenant must be one of these (Entra `tid`, Google `hd`);
    /// required for an Entra multi-tenant issuer.
    pub allowed_tenants: Vec<String>,
}

impl IdpSettings {
    /// Settings with the flavor's defaults.
    pub fn new(flavor: IdpFlavor, issuer: &str, client_id: &str) -> IdpSettings {
        IdpSettings {
            flavor,
            issuer: issuer.to_owned(),
            discovery_url: None,
            authorization_endpoint: None,
            token_endpoint: None,
            jwks_uri: None,
            client_id: client_id.to_owned(),
            client_secret: None,
            auth_method: ClientAuthMethod::Basic,
            scopes: vec!["openid".into(), "profile".into(), "email".into()],
            extra_authorize_params: BTreeMap::new(),
            claims: ClaimMapping::for_flavor(flavor),
            clock_skew: Duration::from_secs(60),
            algorithms: vec![Algorithm::RS256, Algorithm::PS256, Algorithm::ES256],
            allowed_tenants: Vec::new(),
        }
    }
}

/// The user, as the verified ID token says.
#[derive(Debug, Clone, PartialEq)]
pub struct IdpIdentity {
    /// The IdP's issuer (`iss`).
    pub issuer: String,
    /// The subject.
    pub subject: String,
    /// Email, unless the IdP says it is not verified.
    pub email: Option<String>,
    /// Display name.
    pub name: Option<String>,
    /// Group memberships.
    pub groups: Vec<String>,
    /// Roles.
    pub roles: Vec<String>,
    /// Tenant or organisation.
    pub tenant: Option<String>,
    /// True when the IdP left groups out for size (Entra "groups overage"): a rule that
    /// denies by group membership must not treat the list as complete.
    pub groups_incomplete: bool,
    /// Every verified claim of the ID token.
    pub claims: Value,
}

/// Why the IdP could not be used or a login not completed. Never contains a code, a token or
/// a secret.
#[derive(Debug, thiserror::Error)]
pub enum IdpError {
    /// The settings are not usable.
    #[error("identity provider settings: {0}")]
    Config(String),
    /// The discovery document could not be read or is unusable.
    #[error("identity provider discovery: {0}")]
    Discovery(String),
    /// The discovery document names another issuer.
    #[error("the discovery document names issuer {discovered:?}, but {configured:?} is configured")]
    IssuerMismatch {
        /// The configured issuer.
        configured: String,
        /// What the document says.
        discovered: String,
    },
    /// An Entra multi-tenant template issuer without `allowed_tenants`.
    #[error(
        "the IdP's issuer {0:?} is a multi-tenant template; list the tenants to accept in \
         allowed_tenants, or configure the tenant's own issuer"
    )]
    MultiTenant(String),
    /// The token endpoint could not be reached.
    #[error("the IdP's token endpoint is unavailable: {0}")]
    Unavailable(String),
    /// The token endpoint refused the code.
    #[error("the IdP's token endpoint answered HTTP {status} ({error})")]
    TokenEndpoint {
        /// HTTP status.
        status: u16,
        /// The OAuth error code, when it is a plain one.
        error: String,
    },
    /// The token response has no ID token.
    #[error("the IdP's token response has no id_token (is the openid scope granted?)")]
    NoIdToken,
    /// The ID token failed verification.
    #[error("the IdP's ID token was refused: {0}")]
    IdToken(String),
    /// The identity's tenant is not allowed.
    #[error("tenant {0:?} is not allowed to log in")]
    TenantNotAllowed(String),
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    #[serde(default)]
    authorization_endpoint: Option<String>,
    #[serde(default)]
    token_endpoint: Option<String>,
    #[serde(default)]
    jwks_uri: Option<String>,
    #[serde(default)]
    code_challenge_methods_supported: Option<Vec<String>>,
}

/// A discovered IdP, ready for logins.
pub struct Idp {
    settings: IdpSettings,
    authorization_endpoint: String,
    token_endpoint: String,
    /// `iss` values an ID token may carry.
    issuers: Vec<String>,
    /// The Entra template, when multi-tenant.
    tenant_template: Option<String>,
    keys: std::sync::Arc<JwksCache>,
    http: reqwest::Client,
}

impl Idp {
    /// Reads the IdP's OpenID Connect discovery document (unless every endpoint is configured),
    /// checks it names the configured issuer, and applies the overrides. `http` should not
    /// follow redirects.
    pub async fn discover(
        mut settings: IdpSettings,
        http: reqwest::Client,
    ) -> Result<Idp, IdpError> {
        check_settings(&mut settings)?;
        let overridden = settings.authorization_endpoint.is_some()
            && settings.token_endpoint.is_some()
            && settings.jwks_uri.is_some();
        let mut issuers = vec![settings.issuer.clone()];
        let mut tenant_template = None;
        let doc = if overridden && settings.discovery_url.is_none() {
            None
        } else {
            let url = settings.discovery_url.clone().unwrap_or_else(|| {
                format!(
                    "{}/.well-known/openid-configuration",
                    settings.issuer.trim_end_matches('/')
                )
            });
            let doc: Discovery = crate::auth::fetch_json(&http, &url, None)
                .await
                .map_err(|e| IdpError::Discovery(format!("{url}: {e}")))?;
            if doc.issuer.contains(TENANT_PLACEHOLDER) && settings.flavor == IdpFlavor::Entra {
                if settings.allowed_tenants.is_empty() {
                    return Err(IdpError::MultiTenant(doc.issuer));
                }
                issuers = settings
                    .allowed_tenants
                    .iter()
                    .map(|t| doc.issuer.replace(TENANT_PLACEHOLDER, t))
                    .collect();
                tenant_template = Some(doc.issuer.clone());
            } else if doc.issuer != settings.issuer {
                return Err(IdpError::IssuerMismatch {
                    configured: settings.issuer.clone(),
                    discovered: doc.issuer,
                });
            }
            if let Some(methods) = &doc.code_challenge_methods_supported
                && !methods.iter().any(|m| m == "S256")
            {
                return Err(IdpError::Discovery(
                    "the IdP does not support PKCE with S256".into(),
                ));
            }
            Some(doc)
        };
        // Google's ID tokens may carry the issuer without its scheme.
        if settings.flavor == IdpFlavor::Google && settings.issuer == "https://accounts.google.com"
        {
            issuers.push("accounts.google.com".into());
        }
        let pick =
            |configured: &Option<String>, discovered: Option<&Option<String>>, what: &str| {
                let url = configured
                    .clone()
                    .or_else(|| discovered.cloned().flatten())
                    .ok_or_else(|| {
                        IdpError::Discovery(format!("no {what} is configured or discovered"))
                    })?;
                if !acceptable_endpoint(&url) {
                    return Err(IdpError::Discovery(format!(
                        "the {what} {url:?} is not an https URL"
                    )));
                }
                Ok(url)
            };
        let authorization_endpoint = pick(
            &settings.authorization_endpoint,
            doc.as_ref().map(|d| &d.authorization_endpoint),
            "authorization_endpoint",
        )?;
        let token_endpoint = pick(
            &settings.token_endpoint,
            doc.as_ref().map(|d| &d.token_endpoint),
            "token_endpoint",
        )?;
        let jwks_uri = pick(
            &settings.jwks_uri,
            doc.as_ref().map(|d| &d.jwks_uri),
            "jwks_uri",
        )?;
        Ok(Idp {
            keys: idp_keys(&settings.issuer, JwksSource::Uri(jwks_uri), &http),
            settings,
            authorization_endpoint,
            token_endpoint,
            issuers,
            tenant_template,
            http,
        })
    }

    /// The settings in force (after defaults).
    pub fn settings(&self) -> &IdpSettings {
        &self.settings
    }

    /// Where to send the browser: an authorization code request with PKCE S256, the nonce and
    /// the configured extra parameters (never `resource` for Entra).
    pub fn authorization_url(
        &self,
        state: &str,
        nonce: &str,
        pkce_challenge: &str,
        redirect_uri: &str,
    ) -> String {
        // Checked at discovery; an existing query (e.g. an Azure B2C policy) is kept.
        let mut url = match url::Url::parse(&self.authorization_endpoint) {
            Ok(u) => u,
            Err(_) => return self.authorization_endpoint.clone(),
        };
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code")
                .append_pair("client_id", &self.settings.client_id)
                .append_pair("redirect_uri", redirect_uri)
                .append_pair("scope", &self.settings.scopes.join(" "))
                .append_pair("state", state)
                .append_pair("nonce", nonce)
                .append_pair("code_challenge", pkce_challenge)
                .append_pair("code_challenge_method", "S256");
            for (k, v) in &self.settings.extra_authorize_params {
                q.append_pair(k, v);
            }
        }
        url.into()
    }

    /// Redeems the IdP's code (with Gatehouse's PKCE verifier) and verifies the ID token it
    /// returns against `nonce`.
    pub async fn redeem(
        &self,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
        nonce: &str,
    ) -> Result<IdpIdentity, IdpError> {
        let mut form: Vec<(&str, &str)> = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
        ];
        let mut request = self.http.post(&self.token_endpoint);
        match (&self.settings.client_secret, self.settings.auth_method) {
            (Some(secret), ClientAuthMethod::Basic) => {
                request = request.header(
                    reqwest::header::AUTHORIZATION,
                    basic_auth(&self.settings.client_id, secret.expose()),
                );
            }
            (Some(secret), ClientAuthMethod::Post) => {
                form.push(("client_id", &self.settings.client_id));
                form.push(("client_secret", secret.expose()));
            }
            (None, _) => form.push(("client_id", &self.settings.client_id)),
        }
        let mut resp = request
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|e| IdpError::Unavailable(transport(&e)))?;
        let status = resp.status();
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| IdpError::Unavailable(transport(&e)))?
        {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(IdpError::Unavailable(
                    "the token response is too large".into(),
                ));
            }
            body.extend_from_slice(&chunk);
        }
        #[derive(Deserialize)]
        struct TokenResponse {
            #[serde(default)]
            id_token: Option<String>,
            #[serde(default)]
            error: Option<String>,
        }
        let parsed: Option<TokenResponse> = serde_json::from_slice(&body).ok();
        if !status.is_success() {
            // Only a plain error code is repeated: descriptions are free text from outside.
            let error = parsed
                .and_then(|p| p.error)
                .filter(|e| {
                    !e.is_empty()
                        && e.len() <= 64
                        && e.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                })
                .unwrap_or_else(|| "no OAuth error code".into());
            return Err(IdpError::TokenEndpoint {
                status: status.as_u16(),
                error,
            });
        }
        let id_token = parsed.and_then(|p| p.id_token).ok_or(IdpError::NoIdToken)?;
        self.verify_id_token(&id_token, nonce).await
    }

    /// Verifies an ID token issued to Gatehouse for the login that sent `nonce`.
    pub(crate) async fn verify_id_token(
        &self,
        id_token: &str,
        nonce: &str,
    ) -> Result<IdpIdentity, IdpError> {
        let refuse = |m: String| IdpError::IdToken(m);
        let header =
            header_of(id_token, &self.settings.algorithms).map_err(|e| refuse(e.to_string()))?;
        // RFC 8725 §3.11: an access token or ID-JAG must not pass as an ID token.
        if let Some(typ) = &header.typ
            && !typ.eq_ignore_ascii_case("JWT")
        {
            return Err(refuse(format!("type {typ:?} is not an ID token")));
        }
        let v = validation(header.alg, &self.issuers, self.settings.clock_skew);
        let claims = verify_claims(id_token, &header, &self.keys, &v)
            .await
            .map_err(|e| refuse(e.to_string()))?;
        let client_id = &self.settings.client_id;
        let audiences: Vec<&str> = match claims.get("aud") {
            Some(Value::String(a)) => vec![a.as_str()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !audiences.contains(&client_id.as_str()) {
            return Err(refuse("it was issued to another client (aud)".into()));
        }
        match claims.get("azp").map(Value::as_str) {
            Some(Some(azp)) if azp == client_id => {}
            Some(_) => return Err(refuse("it was issued to another client (azp)".into())),
            None if audiences.len() > 1 => {
                return Err(refuse("it has several audiences and no azp".into()));
            }
            None => {}
        }
        issued_at(&claims, self.settings.clock_skew).map_err(|e| refuse(e.to_string()))?;
        match claims.get("nonce").and_then(Value::as_str) {
            Some(n) if same(n, nonce) => {}
            _ => return Err(refuse("the nonce does not match this login".into())),
        }
        let issuer = claims
            .get("iss")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if let Some(template) = &self.tenant_template {
            let tid = claims
                .get("tid")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if tid.is_empty() || issuer != template.replace(TENANT_PLACEHOLDER, tid) {
                return Err(refuse("its issuer does not match its tenant (tid)".into()));
            }
        }
        let identity = self.identity(issuer, claims)?;
        if !self.settings.allowed_tenants.is_empty() {
            let tenant = identity.tenant.clone().unwrap_or_default();
            if !self.settings.allowed_tenants.contains(&tenant) {
                return Err(IdpError::TenantNotAllowed(tenant));
            }
        }
        Ok(identity)
    }

    fn identity(&self, issuer: String, claims: Value) -> Result<IdpIdentity, IdpError> {
        let map = &self.settings.claims;
        let subject = string_at(&claims, std::slice::from_ref(&map.subject)).ok_or_else(|| {
            IdpError::IdToken(format!("it has no subject claim {:?}", map.subject))
        })?;
        let unverified = matches!(claims.get("email_verified"), Some(Value::Bool(false)))
            || claims.get("email_verified").and_then(Value::as_str) == Some("false");
        Ok(IdpIdentity {
            issuer,
            subject,
            email: string_at(&claims, &map.email).filter(|_| !unverified),
            name: string_at(&claims, &map.name),
            groups: strings_at(&claims, &map.groups),
            roles: strings_at(&claims, &map.roles),
            tenant: string_at(&claims, &map.tenant),
            groups_incomplete: claims.pointer("/_claim_names/groups").is_some()
                || claims.get("hasgroups") == Some(&Value::Bool(true)),
            claims,
        })
    }
}

/// Refuses settings that cannot work or would weaken verification; adds `openid`.
fn check_settings(s: &mut IdpSettings) -> Result<(), IdpError> {
    let bad = |m: String| Err(IdpError::Config(m));
    if !acceptable_endpoint(&s.issuer) {
        return bad(format!("issuer {:?} must be an https URL", s.issuer));
    }
    if s.client_id.is_empty() {
        return bad("client_id is empty".into());
    }
    if s.algorithms.is_empty() || s.algorithms.iter().any(|a| !asymmetric(*a)) {
        return bad(
            "algorithms must list asymmetric algorithms only (no HS256/HS384/HS512)".into(),
        );
    }
    for key in s.extra_authorize_params.keys() {
        if RESERVED_PARAMS.contains(&key.as_str()) {
            return bad(format!(
                "extra_authorize_params may not set {key:?}; Gatehouse sets it"
            ));
        }
        if key == "resource" && s.flavor == IdpFlavor::Entra {
            return bad(
                "Entra rejects the resource parameter (RFC 8707); request the API's scope instead"
                    .into(),
            );
        }
    }
    if s.flavor == IdpFlavor::Entra
        && let Some(problem) = crate::config::oauth_server::entra_issuer_problem(&s.issuer)
    {
        return bad(format!("Entra issuer {problem}"));
    }
    if !s.scopes.iter().any(|x| x == "openid") {
        s.scopes.insert(0, "openid".into());
    }
    Ok(())
}

/// RFC 6749 §2.3.1: id and secret are form-encoded before Basic encoding.
fn basic_auth(id: &str, secret: &str) -> String {
    use base64::Engine;
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let pair = format!("{}:{}", enc(id), enc(secret));
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// A transport error in words, without the URL (whose query could carry a secret).
fn transport(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else {
        "the request failed".into()
    }
}

#[cfg(test)]
#[path = "idp_tests.rs"]
mod tests;
