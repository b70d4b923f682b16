//! `admin.console`: the browser console at `/admin/`, its sign-in IdP, its read-only users and
//! how long a sign-in lasts. The administrators themselves are `admin.subjects/groups/roles`.

use super::Config;
use super::duration::HumanDuration;
use super::oauth_server::IdpConfig;
use serde::Deserialize;
use std::time::Duration;

/// `admin.console`.
#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Where staff sign in (OIDC authorization code with PKCE); the client registered there
    /// must allow the redirect URI `{public_url}/admin/callback`. Defaults to `oauth_server.idp`.
    #[serde(default)]
    pub idp: Option<IdpConfig>,
    /// Who may look but not act (administrators may do both), matched like them.
    #[serde(default)]
    pub readers: super::People,
    /// How long a sign-in lasts before the IdP is asked again (at most 12h).
    #[serde(default = "default_session_ttl")]
    pub session_ttl: HumanDuration,
    /// Which listener serves the console: `main` (beside the MCP endpoints) or `ops` (beside
    /// health and metrics, e.g. reachable only from the management network). Read at start.
    #[serde(default)]
    pub listener: ConsoleListener,
    /// The console's external base URL (scheme, host, port), when it is not the listener's own
    /// address: `public_url` for `main`, `http://{ops.listen}` (https with `ops.tls`) for `ops`.
    #[serde(default)]
    pub public_url: Option<String>,
}

/// `admin.console.listener`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ConsoleListener {
    /// The MCP listener.
    #[default]
    Main,
    /// The operations listener.
    Ops,
}

fn default_session_ttl() -> HumanDuration {
    HumanDuration(Duration::from_secs(3600))
}

/// Longest sign-in accepted: a console session is a bearer credential for the whole gateway.
const MAX_SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

impl ConsoleConfig {
    /// The console's external base URL, without a trailing slash (redirect URI and origin).
    pub fn base(&self, config: &Config) -> String {
        if let Some(u) = &self.public_url {
            return u.trim_end_matches('/').to_owned();
        }
        match self.listener {
            ConsoleListener::Main => config.public_base(),
            ConsoleListener::Ops => {
                let scheme = if config.ops.tls.is_some() {
                    "https"
                } else {
                    "http"
                };
                format!("{scheme}://{}", config.ops.listen)
            }
        }
    }

    /// The IdP staff sign in at: the console's own, or the façade's.
    pub fn idp<'a>(&'a self, config: &'a Config) -> Option<&'a IdpConfig> {
        self.idp
            .as_ref()
            .or(config.oauth_server.as_ref().map(|o| &o.idp))
    }
}

/// Checks the block; `add(field, message)` collects problems.
pub fn check(c: &ConsoleConfig, config: &Config, add: &mut dyn FnMut(String, String)) {
    match &c.idp {
        Some(idp) => super::oauth_server::check_idp(idp, "admin.console.idp", add),
        None if config.oauth_server.is_none() => add(
            "admin.console.idp".into(),
            "required: the IdP staff sign in at (or configure oauth_server, whose idp is then used)"
                .into(),
        ),
        None => {}
    }
    if c.session_ttl.0.is_zero() || c.session_ttl.0 > MAX_SESSION_TTL {
        add(
            "admin.console.session_ttl".into(),
            "between 1s and 12h".into(),
        );
    }
    // The session cookie is `__Host-` and Secure: browsers keep it only from a secure origin.
    let base = c.base(config);
    let secure = match url::Url::parse(&base) {
        Ok(u) => {
            u.scheme() == "https"
                || match u.host() {
                    Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                    Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                    Some(url::Host::Domain(d)) => d == "localhost",
                    None => false,
                }
        }
        Err(_) => false,
    };
    let tls = match c.listener {
        ConsoleListener::Main => config.tls.is_some(),
        ConsoleListener::Ops => config.ops.tls.is_some(),
    };
    if let Some(u) = &c.public_url
        && url::Url::parse(u).is_err()
    {
        add(
            "admin.console.public_url".into(),
            format!("{u:?} is not a URL"),
        );
    }
    if !secure && (!tls || c.public_url.is_some()) {
        add(
            "admin.console".into(),
            format!(
                "the console needs https: set `tls` (`ops.tls` for listener ops) or a https `public_url` (a TLS proxy in front); {base} is plain http on a non-loopback host"
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use crate::config::validate::tests::issues;

    const BASE: &str = "servers:\n  - { name: main, path: /mcp, upstreams: [a] }\nupstreams:\n  a: { kind: http, url: \"http://127.0.0.1:9/mcp\" }\n";

    #[test]
    fn console_mistakes_are_reported_with_their_fields() {
        let yaml = format!(
            "{BASE}public_url: \"http://gw.example.com\"\nadmin:\n  groups: [ops]\n  console:\n    session_ttl: 2d\n"
        );
        let got = issues(&yaml).join("\n");
        for expected in [
            "admin.console.idp: required",
            "admin.console.session_ttl: between 1s and 12h",
            "admin.console: the console needs https",
        ] {
            assert!(got.contains(expected), "{expected:?} missing from:\n{got}");
        }
        let yaml = format!(
            "{BASE}admin:\n  groups: [ops]\n  console:\n    idp: {{ flavor: okay, issuer: \"ftp://idp\", client_id: \"\", client_secret: \"inline\" }}\n"
        );
        let got = issues(&yaml).join("\n");
        for expected in [
            "admin.console.idp.flavor: \"okay\" is not one of",
            "admin.console.idp.issuer: \"ftp://idp\" is not an http(s) URL",
            "admin.console.idp.client_id: must not be empty",
            "admin.console.idp.client_secret: a secret must not be written in the YAML",
        ] {
            assert!(got.contains(expected), "{expected:?} missing from:\n{got}");
        }
        let yaml = format!(
            "{BASE}ops: {{ listen: \"0.0.0.0:9464\" }}\nadmin:\n  groups: [ops]\n  console:\n    listener: ops\n    idp: {{ issuer: \"https://idp.example.com\", client_id: gw }}\n"
        );
        let got = issues(&yaml).join("\n");
        assert!(got.contains("http://0.0.0.0:9464 is plain http"), "{got}");
        let got = issues(&format!("{BASE}admin:\n  groups: [ops]\n")).join("\n");
        assert!(got.contains("admin: set `auth`"), "{got}");
    }

    #[test]
    fn a_console_on_https_or_loopback_with_an_idp_is_accepted() {
        for public in ["https://gw.example.com", "http://127.0.0.1:8080"] {
            let yaml = format!(
                "{BASE}public_url: \"{public}\"\nadmin:\n  groups: [ops]\n  console:\n    idp: {{ issuer: \"https://idp.example.com\", client_id: gw }}\n    readers: {{ groups: [audit] }}\n"
            );
            assert!(issues(&yaml).is_empty(), "{public}: {:?}", issues(&yaml));
        }
    }
}
