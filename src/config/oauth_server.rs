//! `oauth_server`: Gatehouse as the authorization server MCP clients see, while users sign in
//! at the enterprise IdP. For IdPs without dynamic registration, client metadata documents or
//! RFC 8707 resource indicators.

use super::duration::HumanDuration;
use super::keys::{KEYS_AT_REST, KeyConfig, check_keys};
use super::secret::ValueSource;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// The name under which servers' `auth.issuers` accept the façade's tokens.
pub const FACADE_ISSUER_NAME: &str = "gatehouse";

/// The whole `oauth_server` block.
#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OAuthServerConfig {
    /// The enterprise IdP users sign in at.
    pub idp: IdpConfig,
    /// AES-256-GCM keys sealing the token-signing keys kept in the store (first seals).
    pub keys: Vec<KeyConfig>,
    /// Lifetime of access tokens.
    #[serde(default = "default_access_ttl")]
    pub access_token_ttl: HumanDuration,
    /// Lifetime of refresh tokens (each use rotates it).
    #[serde(default = "default_refresh_ttl")]
    pub refresh_token_ttl: HumanDuration,
    /// A new signing key is made when the current one is this old.
    #[serde(default = "default_rotate")]
    pub rotate_signing_key_after: HumanDuration,
    /// Scopes clients may ask for (advertised as `scopes_supported`).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Clients registered here, safest first.
    #[serde(default)]
    pub clients: Vec<StaticClient>,
    /// Client ID Metadata Documents (the client id is an https URL).
    #[serde(default)]
    pub cimd: CimdConfig,
    /// RFC 7591 dynamic registration (off by default).
    #[serde(default)]
    pub registration: RegistrationConfig,
    /// ID-JAG assertions accepted with the RFC 7523 jwt-bearer grant.
    #[serde(default)]
    pub id_jag: Option<IdJagConfig>,
}

fn default_access_ttl() -> HumanDuration {
    HumanDuration(Duration::from_secs(300))
}
fn default_refresh_ttl() -> HumanDuration {
    HumanDuration(Duration::from_secs(30 * 86400))
}
fn default_rotate() -> HumanDuration {
    HumanDuration(Duration::from_secs(30 * 86400))
}

/// The enterprise IdP (an OpenID Connect provider) and its quirks.
#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdpConfig {
    /// `oidc`, `entra`, `google`, `okta`, `auth0`, `keycloak`, `ping` or `forgerock`.
    #[serde(default = "default_flavor")]
    pub flavor: String,
    /// The issuer, exactly as in its ID tokens.
    pub issuer: String,
    /// Where the OpenID configuration is; by default `{issuer}/.well-known/openid-configuration`.
    #[serde(default)]
    pub discovery_url: Option<String>,
    /// Overrides of discovered endpoints.
    #[serde(default)]
    pub authorization_endpoint: Option<String>,
    /// Token endpoint override.
    #[serde(default)]
    pub token_endpoint: Option<String>,
    /// Key set override.
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// Gatehouse's client id at the IdP.
    pub client_id: String,
    /// Its secret (`{ env }` or `{ file }`).
    #[serde(default)]
    pub client_secret: Option<ValueSource>,
    /// `client_secret_basic` (default) or `client_secret_post`.
    #[serde(default)]
    pub auth_method: super::auth::ClientAuthMethod,
    /// Scopes asked of the IdP (default `openid profile email`).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Extra authorization request parameters (Okta/Auth0 `audience`, Entra `domain_hint`).
    #[serde(default)]
    pub extra_authorize_params: BTreeMap<String, String>,
    /// Where groups are in the ID token (dotted paths; the flavor gives defaults).
    #[serde(default)]
    pub groups_claim: Vec<String>,
    /// Where roles are.
    #[serde(default)]
    pub roles_claim: Vec<String>,
    /// When set, only users of these tenants sign in (Entra `tid`, Google Workspace `hd`);
    /// required for a multi-tenant Entra issuer.
    #[serde(default)]
    pub allowed_tenants: Vec<String>,
}

fn default_flavor() -> String {
    "oidc".into()
}

/// The flavors [`IdpConfig::flavor`] accepts.
pub const IDP_FLAVORS: [&str; 8] = [
    "oidc",
    "entra",
    "google",
    "okta",
    "auth0",
    "keycloak",
    "ping",
    "forgerock",
];

/// Hosts of Microsoft Entra ID's v2.0 issuers: the public cloud, US Government and the two
/// China clouds. Entra External ID tenants are `{tenant}.ciamlogin.com`.
const ENTRA_HOSTS: [&str; 4] = [
    "login.microsoftonline.com",
    "login.microsoftonline.us",
    "login.chinacloudapi.cn",
    "login.partner.microsoftonline.cn",
];

/// Why `issuer` cannot be used with the `entra` flavor, if it cannot: a v1 issuer
/// (`sts.windows.net`, whose tokens the v2.0 endpoints never issue) or a host that is not
/// Microsoft's would make every login fail at run time. A loopback host is accepted as a test
/// stand-in. The facade checks the same at start, so `check` and `serve` agree.
pub fn entra_issuer_problem(issuer: &str) -> Option<String> {
    let Ok(url) = url::Url::parse(issuer) else {
        return Some(format!("{issuer:?} is not a URL"));
    };
    let host = url.host_str().unwrap_or_default();
    let loopback = matches!(host, "localhost" | "127.0.0.1" | "[::1]");
    if host == "sts.windows.net" {
        return Some(format!(
            "{issuer:?} is an Entra v1 issuer; the entra flavor signs users in at the v2.0 \
             endpoints, whose tokens name https://login.microsoftonline.com/<tenant>/v2.0 \
             (set the app registration's accessTokenAcceptedVersion to 2)"
        ));
    }
    if !(loopback || ENTRA_HOSTS.contains(&host) || host.ends_with(".ciamlogin.com")) {
        return Some(format!(
            "{issuer:?} is not a Microsoft Entra issuer (host {host:?}); use \
             https://login.microsoftonline.com/<tenant>/v2.0, or another flavor for this IdP"
        ));
    }
    if !url.path().trim_end_matches('/').ends_with("/v2.0") {
        return Some(format!(
            "{issuer:?}: use the v2.0 issuer https://{host}/<tenant>/v2.0"
        ));
    }
    None
}

/// A client registered in the configuration.
#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StaticClient {
    /// Its id.
    pub client_id: String,
    /// Shown on the consent page.
    #[serde(default)]
    pub name: Option<String>,
    /// Exact redirect URIs (loopback ones match on any port).
    pub redirect_uris: Vec<String>,
    /// A secret for a confidential client (`{ env }` or `{ file }`); absent: public client.
    #[serde(default)]
    pub secret: Option<ValueSource>,
}

/// `oauth_server.cimd`.
#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CimdConfig {
    /// Accept client ids that are metadata document URLs.
    pub enabled: bool,
    /// Largest document fetched.
    pub max_bytes: usize,
    /// Longest wait for a document.
    pub timeout: HumanDuration,
    /// Tests only: fetch from loopback and private addresses (and over plain http there).
    pub allow_private_addresses: bool,
}

impl Default for CimdConfig {
    fn default() -> Self {
        CimdConfig {
            enabled: true,
            max_bytes: 5 * 1024,
            timeout: HumanDuration(Duration::from_secs(3)),
            allow_private_addresses: false,
        }
    }
}

/// `oauth_server.registration`.
#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrationConfig {
    /// Offer RFC 7591 registration at all.
    pub enabled: bool,
    /// When set, registration needs this bearer token (`{ env }` or `{ file }`).
    pub initial_access_token: Option<ValueSource>,
    /// Hosts allowed in https redirect URIs (loopback http is always allowed); empty: any.
    pub redirect_hosts: Vec<String>,
    /// Registrations one IP address may make per hour.
    pub per_ip_per_hour: u32,
    /// Registrations per hour in all.
    pub global_per_hour: u32,
    /// Most registered clients kept.
    pub max_clients: u64,
    /// A client never used (or unused) this long is deleted.
    pub unused_expiry: HumanDuration,
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        RegistrationConfig {
            enabled: false,
            initial_access_token: None,
            redirect_hosts: Vec::new(),
            per_ip_per_hour: 10,
            global_per_hour: 200,
            max_clients: 10_000,
            unused_expiry: HumanDuration(Duration::from_secs(7 * 86400)),
        }
    }
}

/// `oauth_server.id_jag`: enterprise IdPs whose ID-JAGs are redeemed for access tokens.
#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdJagConfig {
    /// The trusted IdPs.
    pub trusted: Vec<TrustedIdp>,
}

/// One IdP trusted to issue ID-JAGs.
#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrustedIdp {
    /// Its issuer identifier.
    pub issuer: String,
    /// Its key set; by default found through its metadata.
    #[serde(default)]
    pub jwks_uri: Option<String>,
}

/// Checks an IdP block (the façade's, the console's) found at `at`.
pub fn check_idp(idp: &IdpConfig, at: &str, add: &mut dyn FnMut(String, String)) {
    let f = |s: &str| format!("{at}.{s}");
    if !IDP_FLAVORS.contains(&idp.flavor.as_str()) {
        add(
            f("flavor"),
            format!("{:?} is not one of {}", idp.flavor, IDP_FLAVORS.join(", ")),
        );
    }
    for (field, url) in [
        ("issuer", Some(&idp.issuer)),
        ("discovery_url", idp.discovery_url.as_ref()),
        (
            "authorization_endpoint",
            idp.authorization_endpoint.as_ref(),
        ),
        ("token_endpoint", idp.token_endpoint.as_ref()),
        ("jwks_uri", idp.jwks_uri.as_ref()),
    ] {
        if let Some(u) = url
            && !(u.starts_with("https://") || u.starts_with("http://"))
        {
            add(f(field), format!("{u:?} is not an http(s) URL"));
        }
    }
    if idp.flavor == "entra"
        && let Some(problem) = entra_issuer_problem(&idp.issuer)
    {
        add(f("issuer"), problem);
    }
    if idp.flavor == "google" && idp.allowed_tenants.is_empty() {
        add(
            f("allowed_tenants"),
            "required with flavor google: name your Workspace domain(s) (the `hd` claim); otherwise any Google account could sign in"
                .into(),
        );
    }
    if idp.client_id.is_empty() {
        add(f("client_id"), "must not be empty".into());
    }
    if let Some(s) = &idp.client_secret {
        check_secret(f("client_secret"), s, add);
    }
}

/// A secret must come from the environment or a file, and be readable there.
fn check_secret(field: String, s: &ValueSource, add: &mut dyn FnMut(String, String)) {
    if s.is_written_in_yaml() {
        add(
            field,
            "a secret must not be written in the YAML; use { env: VAR } or { file: PATH }".into(),
        );
    } else if let Err(e) = s.resolve() {
        add(field, e);
    }
}

/// Checks the block; `add(field, message)` collects problems.
pub fn check(c: &OAuthServerConfig, add: &mut dyn FnMut(String, String)) {
    let f = |s: &str| format!("oauth_server.{s}");
    check_idp(&c.idp, "oauth_server.idp", add);
    for (i, client) in c.clients.iter().enumerate() {
        if let Some(s) = &client.secret {
            check_secret(f(&format!("clients[{i}].secret")), s, add);
        }
    }
    if let Some(s) = &c.registration.initial_access_token {
        check_secret(f("registration.initial_access_token"), s, add);
    }
    check_keys(&c.keys, &f("keys"), KEYS_AT_REST, add);
    for (i, client) in c.clients.iter().enumerate() {
        if client.client_id.is_empty() {
            add(
                f(&format!("clients[{i}].client_id")),
                "must not be empty".into(),
            );
        }
        if client.redirect_uris.is_empty() {
            add(
                f(&format!("clients[{i}].redirect_uris")),
                "at least one redirect URI is required".into(),
            );
        }
    }
    if c.access_token_ttl.0 > Duration::from_secs(3600) || c.access_token_ttl.0.is_zero() {
        add(
            f("access_token_ttl"),
            "between 1s and 1h; refresh tokens carry longer sessions".into(),
        );
    }
    if c.cimd.max_bytes == 0 || c.cimd.max_bytes > 64 * 1024 {
        add(f("cimd.max_bytes"), "between 1 and 65536".into());
    }
    if let Some(j) = &c.id_jag
        && j.trusted.is_empty()
    {
        add(
            f("id_jag.trusted"),
            "name at least one IdP, or remove id_jag".into(),
        );
    }
}

#[cfg(test)]
mod tests {
    use crate::config::validate::tests::issues;

    /// A file holding a sealing key, kept for the whole test run.
    fn key_file() -> &'static str {
        static PATH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        PATH.get_or_init(|| {
            let dir = std::env::temp_dir().join(format!("gh-oauth-cfg-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("seal.key");
            std::fs::write(&path, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").unwrap();
            path.display().to_string()
        })
    }

    fn yaml(public_url: &str, idp: &str, server_issuers: &str) -> String {
        let key = key_file();
        format!(
            "public_url: {public_url}\noauth_server:\n  idp: {idp}\n  keys: [ {{ id: k1, key: {{ file: \"{key}\" }} }} ]\n\
             servers:\n  - {{ name: m, path: /mcp, upstreams: [u], auth: {{ issuers: {server_issuers}, api_keys: true }} }}\n\
             upstreams:\n  u: {{ kind: http, url: \"http://127.0.0.1:1/mcp\" }}\n"
        )
    }

    const IDP: &str = "{ flavor: oidc, issuer: \"https://idp.example\", client_id: gw }";

    #[test]
    fn a_good_facade_configuration_passes() {
        assert_eq!(
            issues(&yaml("https://gw.example", IDP, "[gatehouse]")),
            Vec::<String>::new()
        );
        // Plain http is fine on loopback (local use, tests).
        assert_eq!(
            issues(&yaml("http://127.0.0.1:8080", IDP, "[gatehouse]")),
            Vec::<String>::new()
        );
    }

    #[test]
    fn the_entra_flavor_takes_only_microsoft_v2_issuers() {
        for (issuer, says) in [
            ("https://sts.windows.net/t-1/", "v1 issuer"),
            (
                "https://idp.example/t-1/v2.0",
                "not a Microsoft Entra issuer",
            ),
            ("https://login.microsoftonline.com/t-1", "v2.0 issuer"),
        ] {
            let idp = format!("{{ flavor: entra, issuer: \"{issuer}\", client_id: gw }}");
            let found = issues(&yaml("https://gw.example", &idp, "[gatehouse]"));
            assert!(
                found
                    .iter()
                    .any(|i| i.starts_with("oauth_server.idp.issuer:") && i.contains(says)),
                "{issuer}: {found:?}"
            );
        }
        for good in [
            "https://login.microsoftonline.com/t-1/v2.0",
            "https://login.microsoftonline.us/t-1/v2.0",
            "https://t-1.ciamlogin.com/t-1/v2.0",
            "http://127.0.0.1:4000/t-1/v2.0",
        ] {
            assert_eq!(super::entra_issuer_problem(good), None, "{good}");
        }
    }

    #[test]
    fn facade_mistakes_are_reported_with_their_fields() {
        let got = issues(&yaml("http://gw.example/base", IDP, "[]"));
        let has = |field: &str, words: &str| {
            got.iter()
                .any(|i| i.starts_with(&format!("{field}:")) && i.contains(words))
        };
        assert!(has("public_url", "must be https"), "{got:?}");
        assert!(has("public_url", "no path"), "{got:?}");
        assert!(
            has("oauth_server", "no server accepts its tokens"),
            "{got:?}"
        );

        let google = "{ flavor: google, issuer: \"https://accounts.google.com\", client_id: gw, client_secret: \"written-here\" }";
        let got = issues(&yaml("https://gw.example", google, "[gatehouse]"));
        assert!(
            got.iter()
                .any(|i| i.starts_with("oauth_server.idp.allowed_tenants:")),
            "{got:?}"
        );
        assert!(
            got.iter()
                .any(|i| i.starts_with("oauth_server.idp.client_secret:")
                    && i.contains("must not be written in the YAML")),
            "{got:?}"
        );
        let written = yaml("https://gw.example", IDP, "[gatehouse]").replace(
            &format!("{{ file: \"{}\" }}", key_file()),
            "{ value: \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\" }",
        );
        let got = issues(&written);
        assert!(
            got.iter()
                .any(|i| i.starts_with("oauth_server.keys[0].key:")),
            "{got:?}"
        );
        let unknown = "{ flavor: azure, issuer: \"https://idp.example\", client_id: gw }";
        let got = issues(&yaml("https://gw.example", unknown, "[gatehouse]"));
        assert!(
            got.iter()
                .any(|i| i.starts_with("oauth_server.idp.flavor:")),
            "{got:?}"
        );
    }
}
