//! Semantic checks that the YAML model alone cannot express.

use super::Issue;
use super::model::*;
use crate::protocol::headers;
use std::collections::HashSet;
use std::net::SocketAddr;

/// Paths the gateway serves itself; a virtual server may not take them.
const RESERVED_PATHS: [&str; 9] = [
    "/healthz",
    "/readyz",
    "/metrics",
    "/.well-known",
    "/connect",
    "/connections",
    "/v0",
    "/admin",
    "/oauth",
];

/// Headers the gateway manages on upstream requests; configuring them would break the transport.
const MANAGED_HEADERS: [&str; 8] = [
    "host",
    "content-length",
    "content-type",
    "accept",
    headers::SESSION_ID,
    headers::PROTOCOL_VERSION,
    headers::MCP_METHOD,
    headers::MCP_NAME,
];

struct Issues(Vec<Issue>);

impl Issues {
    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(Issue::new(field, message));
    }
}

/// Returns every problem in the configuration (empty when it is usable).
pub fn validate(c: &Config) -> Vec<Issue> {
    let mut issues = Issues(Vec::new());
    if c.listen.parse::<SocketAddr>().is_err() {
        issues.add(
            "listen",
            format!(
                "{:?} is not an address; expected IP:PORT such as \"127.0.0.1:8080\"",
                c.listen
            ),
        );
    }
    for (i, origin) in c.allowed_origins.iter().enumerate() {
        if !is_origin(origin) {
            issues.add(
                format!("allowed_origins[{i}]"),
                format!("{origin:?} is not an origin; expected scheme://host[:port] with no path"),
            );
        }
    }
    check_limits(&c.limits, &mut issues);
    super::listener::check(
        &c.limits.connections,
        &c.ops,
        &c.listen,
        &c.upstreams,
        &mut |f, m| issues.add(f, m),
    );
    if let Some(tls) = &c.tls {
        super::tls::check(tls, "tls", &mut |f, m| issues.add(f, m));
    }
    if let Some(admin) = &c.admin
        && admin.require_client_cert
        && c.tls.as_ref().is_none_or(|t| t.client_ca.is_none())
    {
        issues.add(
            "admin.require_client_cert",
            "needs `tls` with `client_ca` on the main listener (and `client_cert: optional` unless every client has one)",
        );
    }
    super::access_log::check(&c.log.access, &mut |f, m| issues.add(f, m));
    check_sessions(&c.sessions, &mut issues);
    if c.servers.is_empty() {
        issues.add("servers", "at least one virtual server is required");
    }
    let mut names = HashSet::new();
    let mut paths = HashSet::new();
    for (i, s) in c.servers.iter().enumerate() {
        check_server(i, s, c, &mut names, &mut paths, &mut issues);
    }
    let mut prefixes = HashSet::new();
    if let Some(catalog) = &c.catalog {
        for (i, name) in catalog.trusted.iter().enumerate() {
            if !c.upstreams.contains_key(name) {
                issues.add(
                    format!("catalog.trusted[{i}]"),
                    format!("unknown upstream {name:?}"),
                );
            }
        }
        if let Err(e) = crate::catalog::scan::check_custom_rules(&catalog.rules) {
            issues.add("catalog.rules", e);
        }
    }
    if let Some(consent) = &c.consent {
        super::credentials::check_consent(consent, &mut |f, m| issues.add(f, m));
    }
    for (name, u) in &c.upstreams {
        if matches!(
            u.auth,
            Some(super::credentials::UpstreamAuth::UserOauth { .. })
        ) && c.consent.is_none()
        {
            issues.add(
                format!("upstreams.{name}.auth"),
                "kind user_oauth needs the top-level consent block (sign-in and sealing keys)",
            );
        }
        check_upstream(name, u, &mut prefixes, &mut issues);
    }
    super::auth::check(c, &mut |field, message| issues.add(field, message));
    super::tenants::check(c, &mut |field, message| issues.add(field, message));
    super::quotas::check(c, &mut |field, message| issues.add(field, message));
    super::audit::check(&c.audit, &mut |field, message| issues.add(field, message));
    if let Some(e) = &c.traces.otlp_endpoint
        && !reqwest::Url::parse(e).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
    {
        issues.add(
            "traces.otlp_endpoint",
            format!("{e:?}: expected an http(s) URL such as http://127.0.0.1:4318/v1/traces"),
        );
    }
    if !(0.0..=1.0).contains(&c.traces.sample_ratio) {
        issues.add("traces.sample_ratio", "expected a number from 0 to 1");
    }
    for (i, s) in c.servers.iter().enumerate() {
        if let Some(p) = &s.policy
            && s.auth.is_none()
            && let Some(j) = p.rules.iter().position(|r| !r.require_scopes.is_empty())
        {
            issues.add(
                format!("servers[{i}].policy.rules[{j}].require_scopes"),
                "scopes can only be required on a server with `auth`",
            );
        }
        let mut add = |field: String, message: String| issues.add(field, message);
        super::interceptors::check(
            &format!("servers[{i}].interceptors"),
            &s.interceptors,
            &mut add,
        );
        if let Some(g) = &s.guardrails {
            super::guardrails::check(&format!("servers[{i}].guardrails"), g, &mut add);
        }
        if let Some(v) = &s.virtuals {
            super::virtual_tools::check(
                &format!("servers[{i}].virtual"),
                v,
                &s.upstreams,
                &mut add,
            );
        }
        if let Some(p) = &s.policy {
            super::policy::check(
                &format!("servers[{i}].policy"),
                p,
                &s.upstreams,
                &mut |field, message| issues.add(field, message),
            );
        }
    }
    issues.0
}

fn check_limits(l: &Limits, issues: &mut Issues) {
    if l.max_body_bytes < 1024 {
        issues.add("limits.max_body_bytes", "must be at least 1024");
    }
    if l.max_upstream_message_bytes < 1024 {
        issues.add("limits.max_upstream_message_bytes", "must be at least 1024");
    }
    if l.subscriptions_per_listen == 0 {
        issues.add("limits.subscriptions_per_listen", "must be at least 1");
    }
    if l.body_read_timeout.0.is_zero() {
        issues.add("limits.body_read_timeout", "must be greater than zero");
    }
    let caps = [
        ("limits.sessions_per_principal", l.sessions_per_principal),
        ("limits.sessions_per_address", l.sessions_per_address),
        ("limits.streams_per_session", l.streams_per_session),
        ("limits.streams_per_principal", l.streams_per_principal),
        (
            "limits.parked_calls_per_principal",
            l.parked_calls_per_principal,
        ),
    ];
    for (field, value) in caps {
        if value == 0 {
            issues.add(field, "must be at least 1");
        }
    }
    // A GET stream takes a slot, so a session needs a second one for any request.
    if l.streams_per_session == 1 {
        issues.add(
            "limits.streams_per_session",
            "must be at least 2 (the GET stream and one request)",
        );
    }
}

fn check_sessions(s: &Sessions, issues: &mut Issues) {
    super::keys::check_keys(
        &s.keys,
        "sessions.keys",
        super::keys::SESSION_KEYS,
        &mut |f, m| issues.add(f, m),
    );
    if s.max_lifetime.0.is_zero() {
        issues.add("sessions.max_lifetime", "must be greater than zero");
    }
    if s.idle_timeout.0 < std::time::Duration::from_secs(1) {
        issues.add("sessions.idle_timeout", "must be at least 1s");
    }
}

fn check_server(
    i: usize,
    s: &VirtualServer,
    c: &Config,
    names: &mut HashSet<String>,
    paths: &mut HashSet<String>,
    issues: &mut Issues,
) {
    let field = format!("servers[{i}]");
    if s.name.trim().is_empty() {
        issues.add(format!("{field}.name"), "must not be empty");
    } else if !names.insert(s.name.clone()) {
        issues.add(
            format!("{field}.name"),
            format!("duplicate server name {:?}", s.name),
        );
    }
    let path_ok = s.path.starts_with('/')
        && s.path.len() > 1
        && !s.path.ends_with('/')
        && !s.path.contains("//")
        && s.path
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "/-_.~".contains(ch));
    if !path_ok {
        issues.add(
            format!("{field}.path"),
            format!(
                "{:?} is not a path; expected e.g. \"/mcp\" (starts with '/', no trailing '/')",
                s.path
            ),
        );
    } else if RESERVED_PATHS
        .iter()
        .any(|r| s.path == *r || s.path.starts_with(&format!("{r}/")))
    {
        issues.add(
            format!("{field}.path"),
            format!("{:?} is reserved by the gateway", s.path),
        );
    } else if !paths.insert(c.route_key(s)) {
        issues.add(
            format!("{field}.path"),
            format!("path {:?} is used by another server", s.path),
        );
    }
    if s.upstreams.is_empty() {
        issues.add(
            format!("{field}.upstreams"),
            "at least one upstream is required",
        );
    }
    let mut seen = HashSet::new();
    for (j, u) in s.upstreams.iter().enumerate() {
        if !c.upstreams.contains_key(u) {
            let known: Vec<_> = c.upstreams.keys().map(String::as_str).collect();
            issues.add(
                format!("{field}.upstreams[{j}]"),
                format!(
                    "unknown upstream {u:?}; defined upstreams: {}",
                    known.join(", ")
                ),
            );
        }
        if !seen.insert(u) {
            issues.add(
                format!("{field}.upstreams[{j}]"),
                format!("upstream {u:?} is listed twice"),
            );
        }
    }
    if s.separator.is_empty() || !s.separator.chars().all(is_name_char) {
        issues.add(
            format!("{field}.separator"),
            "expected one or more of the characters allowed in tool names: A-Z a-z 0-9 _ - .",
        );
    }
}

fn check_upstream(name: &str, u: &Upstream, prefixes: &mut HashSet<String>, issues: &mut Issues) {
    let field = format!("upstreams.{name}");
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        issues.add(
            &field,
            "upstream names may contain only letters, digits, '_' and '-'",
        );
    }
    let prefix = u.prefix.as_deref().unwrap_or(name);
    if prefix.is_empty() || !prefix.chars().all(is_name_char) {
        issues.add(
            format!("{field}.prefix"),
            "expected letters, digits, '_', '-' or '.'",
        );
    }
    if !prefixes.insert(prefix.to_owned()) {
        issues.add(
            format!("{field}.prefix"),
            format!("prefix {prefix:?} is used by another upstream"),
        );
    }
    if u.timeouts.connect.0.is_zero() {
        issues.add(
            format!("{field}.timeouts.connect"),
            "must be greater than zero",
        );
    }
    if u.timeouts.request.0.is_zero() {
        issues.add(
            format!("{field}.timeouts.request"),
            "must be greater than zero",
        );
    }
    if let Some(auth) = &u.auth {
        super::credentials::check(auth, u.kind == UpstreamKind::Http, &mut |f, m| {
            issues.add(format!("{field}.{f}"), m)
        });
    }
    match u.kind {
        UpstreamKind::Http => {
            match &u.url {
                None => issues.add(format!("{field}.url"), "required for kind http"),
                Some(url) => match reqwest::Url::parse(url) {
                    Ok(parsed)
                        if matches!(parsed.scheme(), "http" | "https")
                            && parsed.host().is_some() => {}
                    _ => issues.add(
                        format!("{field}.url"),
                        format!("{url:?} is not an http(s) URL"),
                    ),
                },
            }
            for (k, v) in &u.headers {
                let hf = format!("{field}.headers.{k}");
                if http::HeaderName::from_bytes(k.as_bytes()).is_err() {
                    issues.add(&hf, "not a valid HTTP header name");
                } else if MANAGED_HEADERS.contains(&k.to_ascii_lowercase().as_str()) {
                    issues.add(
                        &hf,
                        "this header is managed by the gateway and cannot be set",
                    );
                }
                match v.resolve() {
                    Err(e) => issues.add(&hf, e),
                    Ok(s) if http::HeaderValue::from_str(s.expose()).is_err() => {
                        issues.add(&hf, "the value contains characters not allowed in a header")
                    }
                    Ok(_) => {}
                }
            }
            for (present, what) in [
                (u.command.is_some(), "command"),
                (!u.args.is_empty(), "args"),
                (!u.env.is_empty(), "env"),
                (u.cwd.is_some(), "cwd"),
                (u.inherit_env != DEFAULT_INHERIT_ENV, "inherit_env"),
            ] {
                if present {
                    issues.add(format!("{field}.{what}"), "only allowed for kind stdio");
                }
            }
        }
        UpstreamKind::Stdio => {
            match &u.command {
                None => issues.add(format!("{field}.command"), "required for kind stdio"),
                Some(c) if c.trim().is_empty() => {
                    issues.add(format!("{field}.command"), "must not be empty")
                }
                Some(_) => {}
            }
            for (k, v) in &u.env {
                if !is_env_name(k) {
                    issues.add(
                        format!("{field}.env.{k}"),
                        "not an environment variable name (no '=', NUL or empty name)",
                    );
                }
                if let Err(e) = v.resolve() {
                    issues.add(format!("{field}.env.{k}"), e);
                }
            }
            for (j, name) in u.inherit_env.iter().enumerate() {
                let bare = name.strip_suffix('*').unwrap_or(name);
                if !is_env_name(bare) || bare.contains('*') {
                    issues.add(
                        format!("{field}.inherit_env[{j}]"),
                        format!("{name:?} is not a variable name, or a name prefix ending in '*'"),
                    );
                }
            }
            if let Some(cwd) = &u.cwd
                && !cwd.is_dir()
            {
                issues.add(
                    format!("{field}.cwd"),
                    format!("{} is not a directory", cwd.display()),
                );
            }
            for (present, what) in [
                (u.url.is_some(), "url"),
                (!u.headers.is_empty(), "headers"),
                (u.protocol != UpstreamProtocol::Auto, "protocol"),
            ] {
                if present {
                    issues.add(format!("{field}.{what}"), "only allowed for kind http");
                }
            }
        }
    }
    if u.restart.initial_backoff.0.is_zero() || u.restart.max_backoff < u.restart.initial_backoff {
        issues.add(
            format!("{field}.restart"),
            "initial_backoff must be > 0 and max_backoff >= initial_backoff",
        );
    }
}

/// A name `execve` can pass: not empty, no `=` and no NUL.
fn is_env_name(s: &str) -> bool {
    !s.is_empty() && !s.contains(['=', '\0'])
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.'
}

fn is_origin(s: &str) -> bool {
    match reqwest::Url::parse(s) {
        Ok(u) => {
            u.host().is_some()
                && (u.path() == "/" || u.path().is_empty())
                && !s.ends_with('/')
                && u.query().is_none()
                && u.fragment().is_none()
        }
        Err(_) => false,
    }
}

#[cfg(test)]
pub(super) mod tests {
    use crate::config::{Config, ConfigError};
    use std::path::Path;

    /// Every problem `check` reports for `yaml`, as text.
    pub(in crate::config) fn issues(yaml: &str) -> Vec<String> {
        match Config::from_yaml(yaml, Path::new("t.yaml")) {
            Ok(_) => vec![],
            Err(ConfigError::Invalid { issues, .. }) => {
                issues.iter().map(|i| i.to_string()).collect()
            }
            Err(e) => vec![e.to_string()],
        }
    }

    const GOOD: &str = r#"
servers:
  - name: main
    path: /mcp
    upstreams: [a, b]
upstreams:
  a: { kind: http, url: "http://127.0.0.1:9/mcp" }
  b: { kind: stdio, command: "true" }
"#;

    #[test]
    fn a_good_config_has_no_issues() {
        assert_eq!(issues(GOOD), Vec::<String>::new());
    }

    #[test]
    fn reports_every_problem_with_its_field() {
        let yaml = r#"
listen: "nowhere"
allowed_origins: ["http://ok.example", "not an origin"]
servers:
  - name: main
    path: mcp
    upstreams: [a, missing, a]
    separator: "::"
upstreams:
  a: { kind: http }
  b: { kind: stdio, url: "http://x" }
"#;
        let got = issues(yaml).join("\n");
        for needle in [
            "listen: \"nowhere\" is not an address",
            "allowed_origins[1]",
            "servers[0].path",
            "servers[0].upstreams[1]: unknown upstream \"missing\"",
            "servers[0].upstreams[2]: upstream \"a\" is listed twice",
            "servers[0].separator",
            "upstreams.a.url: required for kind http",
            "upstreams.b.command: required for kind stdio",
            "upstreams.b.url: only allowed for kind http",
        ] {
            assert!(got.contains(needle), "missing {needle:?} in:\n{got}");
        }
    }

    #[test]
    fn inherit_env_takes_names_or_prefixes_and_only_for_stdio() {
        let yaml = GOOD.replace(
            "b: { kind: stdio, command: \"true\" }",
            "b: { kind: stdio, command: \"true\", inherit_env: [PATH, \"LC_*\", \"A=B\", \"*\", \"X*Y*\"], env: { \"K=V\": { value: x } } }",
        );
        let got = issues(&yaml).join("\n");
        for needle in [
            "upstreams.b.inherit_env[2]: \"A=B\" is not a variable name",
            "upstreams.b.inherit_env[3]",
            "upstreams.b.inherit_env[4]",
            "upstreams.b.env.K=V: not an environment variable name",
        ] {
            assert!(got.contains(needle), "missing {needle:?} in:\n{got}");
        }
        assert!(
            !got.contains("inherit_env[0]") && !got.contains("inherit_env[1]"),
            "{got}"
        );
        let http = GOOD.replace(
            "url: \"http://127.0.0.1:9/mcp\" }",
            "url: \"http://127.0.0.1:9/mcp\", inherit_env: [HOME] }",
        );
        assert!(
            issues(&http)
                .join("\n")
                .contains("upstreams.a.inherit_env: only allowed for kind stdio")
        );
    }

    #[test]
    fn caps_and_the_idle_timeout_name_their_field() {
        let yaml = format!(
            "limits:\n  sessions_per_principal: 0\n  sessions_per_address: 0\n  streams_per_session: 1\n  streams_per_principal: 0\n  parked_calls_per_principal: 0\nsessions:\n  idle_timeout: 500ms\n{}",
            GOOD.trim_start()
        );
        let got = issues(&yaml).join("\n");
        for needle in [
            "limits.sessions_per_principal: must be at least 1",
            "limits.sessions_per_address: must be at least 1",
            "limits.streams_per_session: must be at least 2",
            "limits.streams_per_principal: must be at least 1",
            "limits.parked_calls_per_principal: must be at least 1",
            "sessions.idle_timeout: must be at least 1s",
        ] {
            assert!(got.contains(needle), "missing {needle:?} in:\n{got}");
        }
    }

    #[test]
    fn unknown_fields_and_bad_types_are_parse_errors_with_a_line() {
        let err = Config::from_yaml(
            "servers: []\nupstreams: {}\nlisten_on: x\n",
            Path::new("t.yaml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("listen_on"), "{err}");
        assert!(err.starts_with("t.yaml"), "{err}");
    }

    #[test]
    fn reserved_paths_and_managed_headers_are_refused() {
        let yaml = GOOD.replace("path: /mcp", "path: /healthz").replace(
            "url: \"http://127.0.0.1:9/mcp\"",
            "url: \"http://127.0.0.1:9/mcp\", headers: { Mcp-Session-Id: x }",
        );
        let got = issues(&yaml).join("\n");
        assert!(got.contains("reserved"), "{got}");
        assert!(got.contains("managed by the gateway"), "{got}");
    }
}
