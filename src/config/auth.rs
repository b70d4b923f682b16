//! Configuration of inbound authentication: trusted issuers, per-server requirements, API keys
//! and the store that keeps them.

use super::duration::HumanDuration;
use super::secret::ValueSource;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// Token verification shared by every virtual server.
#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Auth {
    /// Trusted token issuers, by name.
    pub issuers: BTreeMap<String, Issuer>,
    /// Tolerance for `exp`, `nbf` and `iat` against this machine's clock.
    pub clock_skew: HumanDuration,
    /// Most verified tokens remembered (each is re-verified only after it leaves the cache).
    pub cache_max_entries: usize,
    /// Longest time an introspection result or API key lookup is trusted without asking again.
    pub cache_max_ttl: HumanDuration,
    /// Least time between two JWKS fetches of one issuer caused by an unknown `kid`.
    pub jwks_refetch_interval: HumanDuration,
    /// How long fetched issuer metadata and keys are used before being fetched again.
    pub jwks_max_age: HumanDuration,
    /// How long keys older than `jwks_max_age` keep verifying while they cannot be fetched
    /// again (the IdP is unreachable); `0s`: not at all.
    pub jwks_stale_window: HumanDuration,
}

impl Default for Auth {
    fn default() -> Self {
        Auth {
            issuers: BTreeMap::new(),
            clock_skew: HumanDuration(Duration::from_secs(60)),
            cache_max_entries: 100_000,
            cache_max_ttl: HumanDuration(Duration::from_secs(60)),
            jwks_refetch_interval: HumanDuration(Duration::from_secs(30)),
            jwks_max_age: HumanDuration(Duration::from_secs(3600)),
            jwks_stale_window: HumanDuration(Duration::from_secs(3600)),
        }
    }
}

/// One trusted authorization server.
#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Issuer {
    /// The issuer identifier, exactly as in the tokens' `iss` claim.
    pub issuer: String,
    /// Where to read the issuer's metadata; by default the RFC 8414 and OpenID Connect
    /// well-known locations are tried in the order the MCP specification gives.
    #[serde(default)]
    pub metadata_url: Option<String>,
    /// The key set's URL; by default `jwks_uri` from the metadata.
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// Signature algorithms accepted from this issuer.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Audiences accepted besides the virtual server's resource URI, for IdPs that cannot put
    /// the resource in `aud` (e.g. `api://gatehouse` for Entra, a client id for Google).
    #[serde(default)]
    pub audiences: Vec<String>,
    /// RFC 7662 introspection of opaque tokens.
    #[serde(default)]
    pub introspection: Option<Introspection>,
    /// Where the principal's attributes are found in the claims.
    #[serde(default)]
    pub claims: ClaimPaths,
}

fn default_algorithms() -> Vec<String> {
    vec!["RS256".into(), "ES256".into()]
}

/// The algorithms an issuer may be configured with; symmetric ones are never accepted.
pub const SUPPORTED_ALGORITHMS: [&str; 9] = [
    "ES256", "ES384", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "EdDSA",
];

/// How the gateway calls an issuer's introspection endpoint.
#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Introspection {
    /// The endpoint; by default `introspection_endpoint` from the metadata.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The gateway's client id at the issuer.
    pub client_id: String,
    /// Its secret (from `env` or `file`).
    pub client_secret: ValueSource,
    /// `client_secret_basic` (default) or `client_secret_post`.
    #[serde(default)]
    pub auth_method: ClientAuthMethod,
}

/// How a client secret is presented to a token or introspection endpoint.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthMethod {
    /// HTTP Basic authentication.
    #[default]
    ClientSecretBasic,
    /// Form parameters `client_id` and `client_secret`.
    ClientSecretPost,
}

/// Dotted claim paths (e.g. `realm_access.roles`). Where several paths are listed, the first
/// present one gives the client id, scopes and tenant; groups and roles are the union of every
/// path present (Keycloak's realm and client roles are both roles).
#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ClaimPaths {
    /// The subject.
    pub subject: String,
    /// The OAuth client the token was issued to.
    pub client_id: Vec<String>,
    /// Granted scopes (a space-separated string or a list).
    pub scopes: Vec<String>,
    /// Group memberships (every path present counts).
    pub groups: Vec<String>,
    /// Roles (every path present counts).
    pub roles: Vec<String>,
    /// Tenant or organisation.
    pub tenant: Vec<String>,
}

impl Default for ClaimPaths {
    fn default() -> Self {
        let v = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect();
        ClaimPaths {
            subject: "sub".into(),
            client_id: v(&["client_id", "azp", "cid", "appid"]),
            scopes: v(&["scope", "scp"]),
            groups: v(&["groups"]),
            roles: v(&["roles", "realm_access.roles"]),
            tenant: v(&["tid", "tenant", "org_id"]),
        }
    }
}

/// What a virtual server requires of its callers.
#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerAuth {
    /// Issuers (names under `auth.issuers`) whose tokens are accepted; empty means all.
    #[serde(default)]
    pub issuers: Vec<String>,
    /// Scopes every request needs; also advertised as `scopes_supported` and in challenges.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Further scopes needed for particular tools, prompts or resources (step-up).
    #[serde(default)]
    pub require: Vec<ScopeRule>,
    /// Accept gateway API keys (`gatehouse keys create`).
    #[serde(default)]
    pub api_keys: bool,
    /// The canonical resource URI; by default `public_url` followed by the server's path.
    #[serde(default)]
    pub resource: Option<String>,
    /// The scopes a 401 challenge names (clients register and authorize with them).
    #[serde(default)]
    pub challenge_scopes: ChallengeScopes,
}

/// The scopes a 401 challenge (no token, or a bad one) names. Clients authorize with them, and
/// the MCP SDKs register with them: an authorization server that holds a client to the scopes
/// it registered with then refuses every later step-up beyond them.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum ChallengeScopes {
    /// `required`: the scopes every request needs (`scopes`); step-up asks for more later.
    #[default]
    Required,
    /// `all`: every scope the server can require (`scopes`, `require` rules, policy
    /// `require_scopes`), so that the first authorization asks for them all.
    All,
    /// A list: `scopes` and these.
    These(Vec<String>),
}

impl schemars::JsonSchema for ChallengeScopes {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ChallengeScopes".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "`required`, `all`, or a list of scopes.",
            "oneOf": [
                { "enum": ["required", "all"] },
                { "type": "array", "items": { "type": "string", "pattern": "^[!#-\\[\\]-~]+$" } },
            ],
        })
    }
}

impl<'de> Deserialize<'de> for ChallengeScopes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = ChallengeScopes;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("`required`, `all`, or a list of scopes")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ChallengeScopes, E> {
                match v {
                    "required" => Ok(ChallengeScopes::Required),
                    "all" => Ok(ChallengeScopes::All),
                    other => Err(E::custom(format!(
                        "challenge_scopes is `required`, `all` or a list of scopes, not {other:?}"
                    ))),
                }
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<ChallengeScopes, A::Error> {
                let mut scopes = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    // RFC 6749 §3.3: a scope token is visible ASCII without `"` or `\`.
                    let token = |c: char| c.is_ascii_graphic() && c != '"' && c != '\\';
                    if s.is_empty() || !s.chars().all(token) {
                        return Err(serde::de::Error::custom(format!(
                            "challenge_scopes: {s:?} is not a scope (visible ASCII, no spaces, quotes or backslashes)"
                        )));
                    }
                    scopes.push(s);
                }
                Ok(ChallengeScopes::These(scopes))
            }
        }
        d.deserialize_any(Visit)
    }
}

/// Extra scopes for the functions whose names match.
#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScopeRule {
    /// Tool names as clients see them; `*` matches any run of characters.
    #[serde(default)]
    pub tools: Option<String>,
    /// Prompt names.
    #[serde(default)]
    pub prompts: Option<String>,
    /// Resource URIs.
    #[serde(default)]
    pub resources: Option<String>,
    /// Every one of these is needed.
    pub scopes: Vec<String>,
}

/// Where durable state lives.
#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Store {
    /// `sqlite://PATH` (relative to the configuration file) or `postgres://…`.
    pub url: ValueSource,
    /// Most connections in the pool.
    pub max_connections: u32,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            url: ValueSource::Literal("sqlite://gatehouse.db".into()),
            max_connections: 8,
        }
    }
}

/// Checks of the authentication settings; `add(field, message)` records a problem.
pub(super) fn check(c: &super::Config, add: &mut dyn FnMut(String, String)) {
    if let Some(u) = &c.public_url
        && let Err(e) = check_url(u, false)
    {
        add("public_url".into(), e);
    }
    let a = &c.auth;
    if a.clock_skew.0 > Duration::from_secs(600) {
        add(
            "auth.clock_skew".into(),
            "at most 10m; a larger skew accepts long-expired tokens".into(),
        );
    }
    if a.cache_max_entries == 0 {
        add("auth.cache_max_entries".into(), "must be at least 1".into());
    }
    if a.jwks_max_age.0.is_zero() {
        add(
            "auth.jwks_max_age".into(),
            "must be greater than zero".into(),
        );
    }
    if a.jwks_stale_window.0 > Duration::from_secs(7 * 24 * 3600) {
        add(
            "auth.jwks_stale_window".into(),
            "at most 7d; keys the IdP may have withdrawn must not verify forever".into(),
        );
    }
    // Tokens are matched to an issuer by `iss`: two entries with one issuer string would make
    // the per-server `issuers` lists ambiguous.
    let mut by_iss: BTreeMap<&str, &str> = BTreeMap::new();
    if c.oauth_server.is_some()
        && let Some(u) = &c.public_url
    {
        by_iss.insert(
            u.trim_end_matches('/'),
            super::oauth_server::FACADE_ISSUER_NAME,
        );
    }
    for (name, issuer) in &a.issuers {
        check_issuer(name, issuer, add);
        if let Some(first) = by_iss.insert(issuer.issuer.as_str(), name.as_str()) {
            add(
                format!("auth.issuers.{name}.issuer"),
                format!(
                    "{:?} is also the issuer of auth.issuers.{first}; configure each issuer once and name it in every server that accepts it",
                    issuer.issuer
                ),
            );
        }
    }
    let facade = c.oauth_server.is_some();
    if let Some(o) = &c.oauth_server {
        super::oauth_server::check(o, add);
        if let Some(u) = &c.public_url {
            check_issuer_url(u, add);
        }
        if !c.servers.iter().any(|s| {
            s.auth.as_ref().is_some_and(|a| {
                a.issuers
                    .iter()
                    .any(|n| n == super::oauth_server::FACADE_ISSUER_NAME)
            })
        }) {
            add(
                "oauth_server".into(),
                "no server accepts its tokens: add `gatehouse` to a server's auth.issuers".into(),
            );
        }
    }
    for (i, s) in c.servers.iter().enumerate() {
        if let Some(sa) = &s.auth {
            check_server_auth(&format!("servers[{i}].auth"), sa, a, facade, add);
        }
    }
    if let Some(admin) = &c.admin {
        if let Some(auth) = &admin.auth {
            check_server_auth("admin.auth", auth, a, facade, add);
        }
        if admin
            .auth
            .as_ref()
            .is_some_and(|auth| !auth.require.is_empty())
        {
            add(
                "admin.auth.require".into(),
                "per-function scopes mean nothing for the admin API; use admin.auth.scopes".into(),
            );
        }
        if admin.subjects.is_empty() && admin.groups.is_empty() && admin.roles.is_empty() {
            add(
                "admin".into(),
                "name the administrators: at least one of subjects, groups or roles".into(),
            );
        }
        if admin.auth.is_none() && admin.console.is_none() {
            add(
                "admin".into(),
                "set `auth` (the JSON admin API), `console` (the browser console) or both".into(),
            );
        }
        if let Some(console) = &admin.console {
            super::console::check(console, c, add);
        }
    }
    match c.store.url.resolve() {
        Err(e) => add("store.url".into(), e),
        Ok(url) => {
            let u = url.expose();
            if !(u.starts_with("sqlite:")
                || u.starts_with("postgres://")
                || u.starts_with("postgresql://"))
            {
                add(
                    "store.url".into(),
                    "expected sqlite://PATH, sqlite::memory: or postgres://USER@HOST/DB".into(),
                );
            }
        }
    }
    if c.store.max_connections == 0 {
        add("store.max_connections".into(), "must be at least 1".into());
    }
}

fn check_issuer(name: &str, issuer: &Issuer, add: &mut dyn FnMut(String, String)) {
    let field = format!("auth.issuers.{name}");
    if let Err(e) = check_url(&issuer.issuer, true) {
        add(format!("{field}.issuer"), e);
    }
    for (key, value) in [
        ("metadata_url", &issuer.metadata_url),
        ("jwks_uri", &issuer.jwks_uri),
    ] {
        if let Some(u) = value
            && let Err(e) = check_url(u, true)
        {
            add(format!("{field}.{key}"), e);
        }
    }
    if issuer.algorithms.is_empty() {
        add(
            format!("{field}.algorithms"),
            "at least one algorithm is required".into(),
        );
    }
    for (i, alg) in issuer.algorithms.iter().enumerate() {
        if !SUPPORTED_ALGORITHMS.contains(&alg.as_str()) {
            add(
                format!("{field}.algorithms[{i}]"),
                format!(
                    "{alg:?} is not accepted; expected one of {} (symmetric and `none` never are)",
                    SUPPORTED_ALGORITHMS.join(", ")
                ),
            );
        }
    }
    if let Some(intro) = &issuer.introspection {
        if let Some(e) = &intro.endpoint
            && let Err(msg) = check_url(e, true)
        {
            add(format!("{field}.introspection.endpoint"), msg);
        }
        if intro.client_id.is_empty() {
            add(
                format!("{field}.introspection.client_id"),
                "must not be empty".into(),
            );
        }
        if intro.client_secret.is_written_in_yaml() {
            add(
                format!("{field}.introspection.client_secret"),
                "a secret must not be written in the YAML; use { env: VAR } or { file: PATH }"
                    .into(),
            );
        } else if let Err(e) = intro.client_secret.resolve() {
            add(format!("{field}.introspection.client_secret"), e);
        }
    }
    if issuer.claims.subject.is_empty() {
        add(
            format!("{field}.claims.subject"),
            "must not be empty".into(),
        );
    }
}

fn check_server_auth(
    field: &str,
    sa: &ServerAuth,
    a: &Auth,
    facade: bool,
    add: &mut dyn FnMut(String, String),
) {
    let facade_name = |name: &str| facade && name == super::oauth_server::FACADE_ISSUER_NAME;
    for (j, name) in sa.issuers.iter().enumerate() {
        if !a.issuers.contains_key(name) && !facade_name(name) {
            let known: Vec<_> = a.issuers.keys().map(String::as_str).collect();
            add(
                format!("{field}.issuers[{j}]"),
                format!(
                    "unknown issuer {name:?}; defined under auth.issuers: {}",
                    known.join(", ")
                ),
            );
        }
    }
    let names_facade = facade
        && sa
            .issuers
            .iter()
            .any(|n| n == super::oauth_server::FACADE_ISSUER_NAME);
    if a.issuers.is_empty() && !sa.api_keys && !names_facade {
        add(
            field.into(),
            "no way in: define an issuer under auth.issuers or set api_keys: true".into(),
        );
    }
    if let Some(r) = &sa.resource
        && let Err(e) = check_url(r, false)
    {
        add(format!("{field}.resource"), e);
    }
    let scope_fields = sa
        .scopes
        .iter()
        .enumerate()
        .map(|(j, s)| (format!("{field}.scopes[{j}]"), s));
    let rule_scopes = sa.require.iter().enumerate().flat_map(|(j, r)| {
        r.scopes
            .iter()
            .enumerate()
            .map(move |(k, s)| (format!("{field}.require[{j}].scopes[{k}]"), s))
    });
    for (f, s) in scope_fields.chain(rule_scopes) {
        if !is_scope_token(s) {
            add(
                f,
                format!(
                    "{s:?} is not a scope (RFC 6749: visible ASCII except space, '\"' and '\\\\')"
                ),
            );
        }
    }
    for (j, r) in sa.require.iter().enumerate() {
        if r.tools.is_none() && r.prompts.is_none() && r.resources.is_none() {
            add(
                format!("{field}.require[{j}]"),
                "name what it applies to with `tools`, `prompts` or `resources`".into(),
            );
        }
        if r.scopes.is_empty() {
            add(
                format!("{field}.require[{j}].scopes"),
                "at least one scope is required".into(),
            );
        }
    }
}

/// A scope token as RFC 6749 §3.3 defines it.
fn is_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}

/// An absolute http(s) URL without fragment; `https` unless the host is loopback when
/// `secure` is asked for (keys and tokens must not travel in clear text).
fn check_url(u: &str, secure: bool) -> Result<(), String> {
    let parsed = reqwest::Url::parse(u).map_err(|e| format!("{u:?} is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(format!("{u:?}: expected an absolute http(s) URL"));
    }
    if parsed.fragment().is_some() {
        return Err(format!("{u:?}: a fragment is not allowed"));
    }
    let loopback = matches!(parsed.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
    if secure && parsed.scheme() == "http" && !loopback {
        return Err(format!(
            "{u:?}: expected https (plain http only for a loopback host)"
        ));
    }
    Ok(())
}

/// The façade's issuer (`public_url`): https (plain http only on loopback), no path, so that
/// RFC 8414 discovery, its cookie and its form paths work.
fn check_issuer_url(u: &str, add: &mut dyn FnMut(String, String)) {
    let Ok(url) = url::Url::parse(u) else {
        return;
    };
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    };
    if url.scheme() != "https" && !loopback {
        add(
            "public_url".into(),
            "with oauth_server it is an OAuth issuer and must be https (plain http only on loopback)"
                .into(),
        );
    }
    if !url.path().trim_end_matches('/').is_empty() || url.query().is_some() {
        add(
            "public_url".into(),
            "with oauth_server it must have no path or query (e.g. https://gatehouse.example.com)"
                .into(),
        );
    }
}

#[cfg(test)]
mod tests {
    use crate::config::validate::tests::issues;

    #[test]
    fn every_auth_mistake_is_reported_with_its_field() {
        let yaml = r#"
public_url: "ftp://gw"
auth:
  clock_skew: 1h
  issuers:
    corp:
      issuer: "http://idp.example.com"
      algorithms: [HS256, none, ES256]
      introspection: { client_id: gw, client_secret: "plain-text-secret" }
servers:
  - name: main
    path: /mcp
    upstreams: [a]
    auth:
      issuers: [corp, nobody]
      scopes: ["bad scope"]
      require: [{ scopes: [] }]
upstreams:
  a: { kind: http, url: "http://127.0.0.1:9/mcp" }
store: { url: "mysql://x" }
"#;
        let got = issues(yaml).join("\n");
        for expected in [
            "public_url: \"ftp://gw\": expected an absolute http(s) URL",
            "auth.clock_skew: at most 10m",
            "auth.issuers.corp.issuer: \"http://idp.example.com\": expected https",
            "auth.issuers.corp.algorithms[0]: \"HS256\" is not accepted",
            "auth.issuers.corp.algorithms[1]: \"none\" is not accepted",
            "auth.issuers.corp.introspection.client_secret: a secret must not be written in the YAML",
            "servers[0].auth.issuers[1]: unknown issuer \"nobody\"",
            "servers[0].auth.scopes[0]: \"bad scope\" is not a scope",
            "servers[0].auth.require[0]: name what it applies to",
            "servers[0].auth.require[0].scopes: at least one scope",
            "store.url: expected sqlite://PATH",
        ] {
            assert!(got.contains(expected), "missing {expected:?} in:\n{got}");
        }
        assert!(!got.contains("plain-text-secret"), "{got}");
    }

    #[test]
    fn one_issuer_string_configured_twice_is_refused() {
        let yaml = r#"
auth:
  issuers:
    corp: { issuer: "https://idp.example.com" }
    corp-again: { issuer: "https://idp.example.com", audiences: [api://x] }
    other: { issuer: "https://other.example.com" }
servers:
  - { name: m, path: /mcp, upstreams: [a], auth: { issuers: [corp-again] } }
upstreams:
  a: { kind: http, url: "http://127.0.0.1:9/mcp" }
"#;
        let got = issues(yaml);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].starts_with(
                "auth.issuers.corp-again.issuer: \"https://idp.example.com\" is also the issuer of auth.issuers.corp"
            ),
            "{got:?}"
        );
        let ok = yaml.replace(
            "corp-again: { issuer: \"https://idp.example.com\"",
            "corp-again: { issuer: \"https://idp2.example.com\"",
        );
        assert_eq!(issues(&ok), Vec::<String>::new());
    }

    #[test]
    fn a_protected_server_needs_a_way_in() {
        let yaml = "servers:\n  - { name: m, path: /mcp, upstreams: [a], auth: { scopes: [x] } }\nupstreams:\n  a: { kind: http, url: \"http://127.0.0.1:9/mcp\" }\n";
        assert!(issues(yaml).join("\n").contains("no way in"));
        let ok = yaml.replace("scopes: [x]", "api_keys: true");
        assert_eq!(issues(&ok), Vec::<String>::new());
    }
}
