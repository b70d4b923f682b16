//! `upstreams.<name>.auth`: the credential the gateway presents to one upstream. It is obtained
//! by the gateway for that upstream (and, for per-user kinds, for that user); the client's own
//! token is never forwarded.

use super::keys::{KEYS_AT_REST, KeyConfig, check_keys};
use super::secret::ValueSource;
use serde::Deserialize;

/// How the gateway authenticates to an upstream.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum UpstreamAuth {
    /// A fixed secret: a header for HTTP upstreams, an environment variable for stdio ones.
    Static {
        /// HTTP: the header to send (`Authorization` when neither this nor `env_var` is set).
        #[serde(default)]
        header: Option<String>,
        /// HTTP: written before the secret, e.g. `Bearer` (default for `Authorization`).
        #[serde(default)]
        scheme: Option<String>,
        /// stdio: the environment variable that receives the secret.
        #[serde(default)]
        env_var: Option<String>,
        /// The secret, from `{ env: VAR }` or `{ file: PATH }`.
        secret: ValueSource,
    },
    /// The gateway's own identity at the upstream's authorization server (OAuth client
    /// credentials grant).
    ClientCredentials {
        /// The gateway's client at the upstream's authorization server; without `issuer` or
        /// `token_endpoint` the server is found through the upstream's RFC 9728 metadata.
        client: OAuthClient,
        /// Scopes to request.
        #[serde(default)]
        scopes: Vec<String>,
        /// RFC 8707 resource (default: the upstream's URL).
        #[serde(default)]
        resource: Option<String>,
        /// An `audience` parameter for servers that want one (Auth0, Okta custom servers).
        #[serde(default)]
        audience: Option<String>,
    },
    /// RFC 8693: the caller's token is exchanged at the IdP for one meant for this upstream.
    TokenExchange {
        /// The gateway's client at the IdP that performs the exchange.
        idp: OAuthClient,
        /// Scopes the upstream token gets (down-scoped).
        #[serde(default)]
        scopes: Vec<String>,
        /// RFC 8707 resource (default: the upstream's URL).
        #[serde(default)]
        resource: Option<String>,
        /// `audience` parameter (logical name of the upstream), if the IdP wants one.
        #[serde(default)]
        audience: Option<String>,
        /// An actor token naming the gateway, from `{ env }` or `{ file }`.
        #[serde(default)]
        actor_token: Option<ValueSource>,
    },
    /// The user's own account at a third-party service: the user connects it once through
    /// the gateway's consent page (URL-mode elicitation); the tokens are stored sealed.
    UserOauth {
        /// The gateway's client at the service's authorization server; without
        /// `issuer`/`token_endpoint` it is found through the upstream's RFC 9728 metadata.
        client: OAuthClient,
        /// Scopes to request (add `offline_access` for a refresh token where the server
        /// needs it).
        #[serde(default)]
        scopes: Vec<String>,
        /// RFC 8707 resource (default: the upstream's URL).
        #[serde(default)]
        resource: Option<String>,
    },
    /// Enterprise-managed authorization: an ID-JAG from the IdP, redeemed with the RFC 7523
    /// jwt-bearer grant at the upstream's authorization server.
    IdJag {
        /// The gateway's client at the enterprise IdP (issues the ID-JAG).
        idp: OAuthClient,
        /// The gateway's client at the upstream's authorization server (redeems it); without
        /// `issuer`/`token_endpoint` it is found through the upstream's RFC 9728 metadata.
        authorization_server: OAuthClient,
        /// Scopes to request.
        #[serde(default)]
        scopes: Vec<String>,
        /// RFC 8707 resource (default: the upstream's URL).
        #[serde(default)]
        resource: Option<String>,
    },
}

/// A client registration at an authorization server.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OAuthClient {
    /// The server's issuer (its token endpoint is discovered).
    #[serde(default)]
    pub issuer: Option<String>,
    /// The token endpoint, when discovery is not wanted.
    #[serde(default)]
    pub token_endpoint: Option<String>,
    /// The client id.
    pub client_id: String,
    /// The client secret (`client_secret_basic` or `_post`).
    #[serde(default)]
    pub client_secret: Option<ValueSource>,
    /// A PEM private key for `private_key_jwt`.
    #[serde(default)]
    pub private_key: Option<ValueSource>,
    /// The `kid` of that key as registered at the server.
    #[serde(default)]
    pub key_id: Option<String>,
    /// How the client authenticates (default: `client_secret_basic` with a secret,
    /// `private_key_jwt` with a key).
    #[serde(default)]
    pub auth_method: Option<TokenClientAuth>,
}

/// `consent`: how users connect their own accounts for `user_oauth` upstreams.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsentConfig {
    /// The gateway's OpenID Connect client at the enterprise IdP: the consent page signs the
    /// user in with it and checks that the signed-in subject is the MCP token's subject.
    pub login: OAuthClient,
    /// AES-256-GCM keys sealing stored tokens: the first seals, all open (rotation).
    pub keys: Vec<KeyConfig>,
    /// How long a consent link stays valid.
    #[serde(default = "default_link_ttl")]
    pub link_ttl: super::HumanDuration,
}

fn default_link_ttl() -> super::HumanDuration {
    super::HumanDuration(std::time::Duration::from_secs(600))
}

/// Checks the `consent` block.
pub fn check_consent(c: &ConsentConfig, add: &mut dyn FnMut(String, String)) {
    check_client(&c.login, "consent.login", true, add);
    if c.login.token_endpoint.is_some() && c.login.issuer.is_none() {
        add(
            "consent.login.issuer".into(),
            "required: the sign-in page is found by discovery".into(),
        );
    }
    for (name, src) in [
        ("client_secret", &c.login.client_secret),
        ("private_key", &c.login.private_key),
    ] {
        if let Some(s) = src {
            secret_source(s, &format!("consent.login.{name}"), add);
        }
    }
    check_keys(&c.keys, "consent.keys", KEYS_AT_REST, add);
    if c.link_ttl.0.is_zero() {
        add(
            "consent.link_ttl".into(),
            "must be greater than zero".into(),
        );
    }
}

fn secret_source(src: &ValueSource, field: &str, add: &mut dyn FnMut(String, String)) {
    if src.is_written_in_yaml() {
        add(
            field.into(),
            "a secret must not be written in the YAML; use { env: VAR } or { file: PATH }".into(),
        );
    } else if let Err(e) = src.resolve() {
        add(field.into(), e);
    }
}

/// Token endpoint client authentication.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TokenClientAuth {
    /// HTTP Basic with the client id and secret.
    ClientSecretBasic,
    /// The id and secret in the form body.
    ClientSecretPost,
    /// A signed JWT assertion (RFC 7523), ES256 or RS256 from the key's type.
    PrivateKeyJwt,
}

impl OAuthClient {
    /// The method in effect.
    pub fn method(&self) -> TokenClientAuth {
        self.auth_method.unwrap_or(if self.private_key.is_some() {
            TokenClientAuth::PrivateKeyJwt
        } else {
            TokenClientAuth::ClientSecretBasic
        })
    }
}

/// Checks an `auth` block; `add(field suffix, message)` records a problem.
impl UpstreamAuth {
    /// Whether the credential depends on the user making the call (so the gateway cannot
    /// reach the upstream on its own).
    pub fn is_per_user(&self) -> bool {
        matches!(
            self,
            UpstreamAuth::TokenExchange { .. }
                | UpstreamAuth::IdJag { .. }
                | UpstreamAuth::UserOauth { .. }
        )
    }
}

pub fn check(auth: &UpstreamAuth, is_http: bool, add: &mut dyn FnMut(String, String)) {
    let secret = secret_source;
    match auth {
        UpstreamAuth::Static {
            header,
            scheme,
            env_var,
            secret: s,
        } => {
            secret(s, "auth.secret", add);
            if is_http {
                if env_var.is_some() {
                    add("auth.env_var".into(), "only for stdio upstreams".into());
                }
                if let Some(h) = header
                    && http::HeaderName::from_bytes(h.as_bytes()).is_err()
                {
                    add("auth.header".into(), "not a valid HTTP header name".into());
                }
            } else {
                if header.is_some() || scheme.is_some() {
                    add(
                        "auth.header".into(),
                        "stdio upstreams get the secret as an environment variable: set env_var"
                            .into(),
                    );
                }
                match env_var {
                    None => add(
                        "auth.env_var".into(),
                        "required for a stdio upstream".into(),
                    ),
                    Some(v) if v.is_empty() || v.contains(['=', '\0']) => {
                        add("auth.env_var".into(), "not a valid variable name".into())
                    }
                    Some(_) => {}
                }
            }
        }
        other => {
            if !is_http {
                add(
                    "auth.kind".into(),
                    "stdio upstreams take only kind static (as env_var)".into(),
                );
            }
            let (clients, needs_location): (Vec<(&str, &OAuthClient)>, &[&str]) = match other {
                UpstreamAuth::ClientCredentials { client, .. }
                | UpstreamAuth::UserOauth { client, .. } => (vec![("client", client)], &[]),
                UpstreamAuth::TokenExchange {
                    idp, actor_token, ..
                } => {
                    if let Some(a) = actor_token {
                        secret(a, "auth.actor_token", add);
                    }
                    (vec![("idp", idp)], &["idp"])
                }
                UpstreamAuth::IdJag {
                    idp,
                    authorization_server,
                    ..
                } => (
                    vec![("idp", idp), ("authorization_server", authorization_server)],
                    &["idp"],
                ),
                UpstreamAuth::Static { .. } => unreachable!("handled above"),
            };
            for (name, c) in clients {
                check_client(
                    c,
                    &format!("auth.{name}"),
                    needs_location.contains(&name),
                    add,
                );
                if let Some(s) = &c.client_secret {
                    secret(s, &format!("auth.{name}.client_secret"), add);
                }
                if let Some(k) = &c.private_key {
                    secret(k, &format!("auth.{name}.private_key"), add);
                }
            }
        }
    }
}

fn check_client(
    c: &OAuthClient,
    field: &str,
    needs_location: bool,
    add: &mut dyn FnMut(String, String),
) {
    if c.client_id.is_empty() {
        add(format!("{field}.client_id"), "must not be empty".into());
    }
    if needs_location && c.issuer.is_none() && c.token_endpoint.is_none() {
        add(
            field.into(),
            "set issuer (discovered) or token_endpoint".into(),
        );
    }
    for (value, name) in [(&c.issuer, "issuer"), (&c.token_endpoint, "token_endpoint")] {
        if let Some(u) = value
            && !reqwest::Url::parse(u).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
        {
            add(
                format!("{field}.{name}"),
                format!("{u:?} is not an http(s) URL"),
            );
        }
    }
    match c.method() {
        TokenClientAuth::PrivateKeyJwt if c.private_key.is_none() => add(
            format!("{field}.private_key"),
            "required for private_key_jwt".into(),
        ),
        TokenClientAuth::ClientSecretBasic | TokenClientAuth::ClientSecretPost
            if c.client_secret.is_none() =>
        {
            add(
                format!("{field}.client_secret"),
                "required for client_secret_basic and client_secret_post".into(),
            )
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use crate::config::validate::tests::issues;

    fn with_auth(http_auth: &str, stdio_auth: &str) -> String {
        format!(
            r#"
servers:
  - {{ name: main, path: /mcp, upstreams: [a, b] }}
upstreams:
  a: {{ kind: http, url: "http://127.0.0.1:9/mcp", auth: {http_auth} }}
  b: {{ kind: stdio, command: "true", auth: {stdio_auth} }}
"#
        )
    }

    #[test]
    fn every_kind_parses_with_secrets_from_the_environment() {
        // SAFETY: tests in this module only read this variable.
        unsafe { std::env::set_var("GATEHOUSE_TEST_UPSTREAM_SECRET", "s3cret") };
        let stdio =
            "{ kind: static, env_var: API_TOKEN, secret: { env: GATEHOUSE_TEST_UPSTREAM_SECRET } }";
        for http in [
            "{ kind: static, header: X-API-Key, secret: { env: GATEHOUSE_TEST_UPSTREAM_SECRET } }",
            "{ kind: client_credentials, client: { client_id: gw, client_secret: { env: GATEHOUSE_TEST_UPSTREAM_SECRET } }, scopes: [a] }",
            "{ kind: token_exchange, idp: { issuer: \"http://127.0.0.1:8/\", client_id: gw, client_secret: { env: GATEHOUSE_TEST_UPSTREAM_SECRET }, auth_method: client_secret_post }, scopes: [crm:read] }",
            "{ kind: id_jag, idp: { token_endpoint: \"http://127.0.0.1:8/token\", client_id: gw, client_secret: { env: GATEHOUSE_TEST_UPSTREAM_SECRET } }, authorization_server: { client_id: gw, client_secret: { env: GATEHOUSE_TEST_UPSTREAM_SECRET } } }",
        ] {
            assert_eq!(
                issues(&with_auth(http, stdio)),
                Vec::<String>::new(),
                "{http}"
            );
        }
    }

    #[test]
    fn mistakes_are_named_by_field() {
        let cases = [
            (
                "{ kind: static, secret: plain-text }",
                "upstreams.a.auth.secret: a secret must not be written in the YAML",
            ),
            (
                "{ kind: static, secret: { value: x } }",
                "upstreams.a.auth.secret: a secret must not be written in the YAML",
            ),
            (
                "{ kind: static, env_var: X, secret: { env: GATEHOUSE_TEST_SURELY_UNSET } }",
                "upstreams.a.auth.env_var: only for stdio upstreams",
            ),
            (
                "{ kind: client_credentials, client: { client_id: gw } }",
                "upstreams.a.auth.client.client_secret: required for client_secret_basic",
            ),
            (
                "{ kind: client_credentials, client: { client_id: gw, auth_method: private_key_jwt } }",
                "upstreams.a.auth.client.private_key: required for private_key_jwt",
            ),
            (
                "{ kind: token_exchange, idp: { client_id: gw, client_secret: { env: GATEHOUSE_TEST_UPSTREAM_SECRET } } }",
                "upstreams.a.auth.idp: set issuer (discovered) or token_endpoint",
            ),
            (
                "{ kind: token_exchange, idp: { issuer: \"ftp://x\", client_id: gw, client_secret: { env: GATEHOUSE_TEST_UPSTREAM_SECRET } } }",
                "upstreams.a.auth.idp.issuer: \"ftp://x\" is not an http(s) URL",
            ),
        ];
        // SAFETY: see above.
        unsafe { std::env::set_var("GATEHOUSE_TEST_UPSTREAM_SECRET", "s3cret") };
        let stdio_ok =
            "{ kind: static, env_var: T, secret: { env: GATEHOUSE_TEST_UPSTREAM_SECRET } }";
        for (auth, want) in cases {
            let got = issues(&with_auth(auth, stdio_ok)).join("\n");
            assert!(got.contains(want), "{auth}: want {want:?} in:\n{got}");
        }
        let stdio_bad = "{ kind: client_credentials, client: { issuer: \"http://x\", client_id: gw, client_secret: { env: GATEHOUSE_TEST_UPSTREAM_SECRET } } }";
        let got = issues(&with_auth(
            "{ kind: static, secret: { env: GATEHOUSE_TEST_UPSTREAM_SECRET } }",
            stdio_bad,
        ))
        .join("\n");
        assert!(
            got.contains("upstreams.b.auth.kind: stdio upstreams take only kind static"),
            "{got}"
        );
        let unknown =
            issues(&with_auth("{ kind: magic, secret: { env: X } }", stdio_ok)).join("\n");
        assert!(unknown.contains("magic"), "{unknown}");
    }
}
