//! `tenancy`: several organisations on one gateway. A tenant owns virtual servers (and so their
//! upstreams, credentials, catalog decisions, consent records and policy), trusts its own
//! issuers, has its own administrators and its own partition of the audit trail. How a
//! request finds its tenant is `tenancy.resolve`: by host name, by path prefix, or by a token
//! claim; whichever it is, a token is only ever accepted by servers of the tenant it is for.

use super::Config;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};

/// `tenancy`.
#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Tenancy {
    /// How a request on the MCP listener finds its tenant.
    #[serde(default)]
    pub resolve: Resolve,
    /// The tenants, by name (the name labels audit records and metrics).
    pub tenants: BTreeMap<String, Tenant>,
}

/// `tenancy.resolve`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Resolve {
    /// By the path: every server of a tenant lies under its `path_prefix`.
    #[default]
    Path,
    /// By the `Host` of the request (one of the tenant's `hosts`); tenants may use the same
    /// paths.
    Host,
    /// By the token's tenant claim (the issuer's `claims.tenant`, e.g. `tid`, `org_id`),
    /// which must be one of the `claim_values` of the server's tenant.
    Claim,
}

/// One tenant.
#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Tenant {
    /// The issuers (names under `auth.issuers`) whose tokens this tenant's servers accept;
    /// a server's own `auth.issuers` may only narrow them.
    pub issuers: Vec<String>,
    /// `resolve: path`: the prefix every server path of this tenant starts with (`/acme`).
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// `resolve: host`: the host names (no port) this tenant is reached at.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Values of the token's tenant claim accepted by this tenant's servers: required with
    /// `resolve: claim`, and an extra check otherwise (a token of another tenant of the same
    /// IdP is refused).
    #[serde(default)]
    pub claim_values: Vec<String>,
    /// This tenant's external base URL, from which its servers' resource URIs are formed
    /// (required with `resolve: host`); by default `public_url`.
    #[serde(default)]
    pub public_url: Option<String>,
    /// Who administers this tenant (admin API: its catalog and its audit records only),
    /// matched like `admin`.
    #[serde(default)]
    pub admins: super::People,
}

/// Longest tenant name: it labels metrics and audit records.
const MAX_NAME: usize = 64;
/// Most tenants: each is a metrics label value.
pub const MAX_TENANTS: usize = 1000;

impl Config {
    /// The tenant that owns `server`, if tenancy is configured.
    pub fn tenant_of(&self, server: &super::VirtualServer) -> Option<(&str, &Tenant)> {
        let name = server.tenant.as_deref()?;
        self.tenancy
            .as_ref()?
            .tenants
            .get_key_value(name)
            .map(|(k, t)| (k.as_str(), t))
    }

    /// What identifies `server` among the routes: its path, and with tenants resolved by
    /// host, its tenant too (each tenant's hosts have paths of their own).
    pub fn route_key(&self, server: &super::VirtualServer) -> String {
        match (&self.tenancy, &server.tenant) {
            (Some(t), Some(name)) if t.resolve == Resolve::Host => {
                route_key(Some(name), &server.path)
            }
            _ => route_key(None, &server.path),
        }
    }

    /// Which tenant each server and upstream belongs to (an upstream: the tenant of the
    /// servers that use it), built once per configuration for routing decisions, audit
    /// records and metrics labels alike.
    pub fn owners(&self) -> Owners {
        let mut owners = Owners::default();
        for s in &self.servers {
            if let Some(t) = &s.tenant {
                owners.servers.insert(s.name.clone(), t.clone());
                for u in &s.upstreams {
                    owners.upstreams.insert(u.clone(), t.clone());
                }
            }
        }
        owners
    }
}

/// Each server's and upstream's tenant ([`Config::owners`]); empty without `tenancy`.
#[derive(Debug, Default)]
pub struct Owners {
    /// By server name.
    pub servers: HashMap<String, String>,
    /// By upstream name.
    pub upstreams: HashMap<String, String>,
}

impl Owners {
    /// The tenant of `upstream`, if it has one.
    pub fn of_upstream(&self, upstream: &str) -> Option<&str> {
        self.upstreams.get(upstream).map(String::as_str)
    }

    /// The tenant of `server`, if it has one.
    pub fn of_server(&self, server: &str) -> Option<&str> {
        self.servers.get(server).map(String::as_str)
    }
}

/// Checks the block against the servers; `add(field, message)` collects problems.
pub fn check(c: &Config, add: &mut dyn FnMut(String, String)) {
    let Some(tenancy) = &c.tenancy else {
        for (i, s) in c.servers.iter().enumerate() {
            if let Some(t) = &s.tenant {
                add(
                    format!("servers[{i}].tenant"),
                    format!("{t:?}: no `tenancy` block defines tenants"),
                );
            }
        }
        return;
    };
    if tenancy.tenants.is_empty() {
        add(
            "tenancy.tenants".into(),
            "at least one tenant is required".into(),
        );
    }
    if tenancy.tenants.len() > MAX_TENANTS {
        add(
            "tenancy.tenants".into(),
            format!("at most {MAX_TENANTS} tenants"),
        );
    }
    let mut hosts: HashMap<String, &str> = HashMap::new();
    let mut claims: HashMap<&str, &str> = HashMap::new();
    let mut prefixes: Vec<(&str, &str)> = Vec::new();
    for (name, t) in &tenancy.tenants {
        let field = format!("tenancy.tenants.{name}");
        let name_ok = !name.is_empty()
            && name.len() <= MAX_NAME
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !name_ok {
            add(
                field.clone(),
                format!(
                    "{name:?} is not a tenant name; expected 1 to {MAX_NAME} of a-z, 0-9, '-' and '_'"
                ),
            );
        }
        let named = !(t.admins.subjects.is_empty()
            && t.admins.groups.is_empty()
            && t.admins.roles.is_empty());
        if named && c.admin.as_ref().is_none_or(|a| a.auth.is_none()) {
            add(
                format!("{field}.admins"),
                "tenant administrators use the JSON admin API: configure `admin.auth`".into(),
            );
        }
        if t.issuers.is_empty() {
            add(
                format!("{field}.issuers"),
                "at least one issuer (a name under auth.issuers) is required".into(),
            );
        }
        for (j, i) in t.issuers.iter().enumerate() {
            if !c.auth.issuers.contains_key(i) {
                add(
                    format!("{field}.issuers[{j}]"),
                    format!("unknown issuer {i:?} (not under auth.issuers)"),
                );
            }
        }
        for v in &t.claim_values {
            if let Some(other) = claims.insert(v, name) {
                add(
                    format!("{field}.claim_values"),
                    format!("{v:?} is also a claim value of tenant {other:?}"),
                );
            }
        }
        if let Some(u) = &t.public_url
            && !url::Url::parse(u).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
        {
            add(
                format!("{field}.public_url"),
                format!("{u:?} is not an http(s) URL"),
            );
        }
        match tenancy.resolve {
            Resolve::Path => match &t.path_prefix {
                Some(p) if p.starts_with('/') && p.len() > 1 && !p.ends_with('/') => {
                    prefixes.push((p, name));
                }
                Some(p) => add(
                    format!("{field}.path_prefix"),
                    format!("{p:?}: expected a path such as \"/acme\" (no trailing '/')"),
                ),
                None => add(
                    format!("{field}.path_prefix"),
                    "required with tenancy.resolve: path".into(),
                ),
            },
            Resolve::Host => {
                if t.hosts.is_empty() {
                    add(
                        format!("{field}.hosts"),
                        "required with tenancy.resolve: host".into(),
                    );
                }
                for h in &t.hosts {
                    let h = h.to_ascii_lowercase();
                    if h.is_empty() || h.contains([':', '/']) {
                        add(
                            format!("{field}.hosts"),
                            format!("{h:?}: expected a host name without port or path"),
                        );
                    } else if let Some(other) = hosts.insert(h.clone(), name) {
                        add(
                            format!("{field}.hosts"),
                            format!("{h:?} is also a host of tenant {other:?}"),
                        );
                    }
                }
                if t.public_url.is_none() {
                    add(
                        format!("{field}.public_url"),
                        "required with tenancy.resolve: host (its servers' resource URIs)".into(),
                    );
                }
            }
            Resolve::Claim => {
                if t.claim_values.is_empty() {
                    add(
                        format!("{field}.claim_values"),
                        "required with tenancy.resolve: claim".into(),
                    );
                }
            }
        }
    }
    for (i, (a, an)) in prefixes.iter().enumerate() {
        for (b, bn) in &prefixes[i + 1..] {
            if under(a, b) || under(b, a) {
                add(
                    format!("tenancy.tenants.{bn}.path_prefix"),
                    format!("{b:?} overlaps {a:?} of tenant {an:?}"),
                );
            }
        }
    }
    let mut owner: BTreeMap<&str, &str> = BTreeMap::new();
    for (i, s) in c.servers.iter().enumerate() {
        let field = format!("servers[{i}]");
        let Some(name) = &s.tenant else {
            add(
                format!("{field}.tenant"),
                "required with `tenancy`: every server belongs to one tenant".into(),
            );
            continue;
        };
        let Some(t) = tenancy.tenants.get(name) else {
            let known: Vec<&str> = tenancy.tenants.keys().map(String::as_str).collect();
            add(
                format!("{field}.tenant"),
                format!("unknown tenant {name:?}; tenants: {}", known.join(", ")),
            );
            continue;
        };
        if let (Resolve::Path, Some(p)) = (tenancy.resolve, &t.path_prefix)
            && !under(&s.path, p)
        {
            add(
                format!("{field}.path"),
                format!(
                    "{:?} is not under the path_prefix {p:?} of tenant {name:?}",
                    s.path
                ),
            );
        }
        match &s.auth {
            None if tenancy.resolve == Resolve::Claim => add(
                format!("{field}.auth"),
                "required with tenancy.resolve: claim (the tenant is read from the token)".into(),
            ),
            None => {}
            Some(a) => {
                for (j, i) in a.issuers.iter().enumerate() {
                    if !t.issuers.contains(i) {
                        add(
                            format!("{field}.auth.issuers[{j}]"),
                            format!("{i:?} is not an issuer of tenant {name:?}"),
                        );
                    }
                }
            }
        }
        if tenancy.resolve == Resolve::Host
            && s.auth.as_ref().is_some_and(|a| a.api_keys)
            && c.servers
                .iter()
                .any(|o| o.path == s.path && o.tenant != s.tenant)
        {
            add(
                format!("{field}.auth.api_keys"),
                format!(
                    "API keys name servers by path, and {:?} is also a path of another tenant: give this server a path of its own",
                    s.path
                ),
            );
        }
        for u in &s.upstreams {
            match owner.insert(u, name) {
                Some(other) if other != name => add(
                    format!("upstreams.{u}"),
                    format!(
                        "used by servers of tenants {other:?} and {name:?}: an upstream (its credentials, catalog decisions and consent records) belongs to one tenant"
                    ),
                ),
                _ => {}
            }
        }
    }
}

/// The route key of `path` on `tenant`'s hosts (`None`: the path alone).
pub fn route_key(tenant: Option<&str>, path: &str) -> String {
    match tenant {
        Some(t) => format!("{t}\n{path}"),
        None => path.to_owned(),
    }
}

/// Whether `path` is `prefix` or lies under it.
fn under(path: &str, prefix: &str) -> bool {
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use crate::config::validate::tests::issues;

    const ISSUERS: &str = "auth:\n  issuers:\n    a: { issuer: \"https://a.example\" }\n    b: { issuer: \"https://b.example\" }\nupstreams:\n  ua: { kind: http, url: \"http://127.0.0.1:9/mcp\" }\n  ub: { kind: http, url: \"http://127.0.0.1:9/mcp\" }\n";

    #[test]
    fn tenancy_mistakes_are_reported_with_their_fields() {
        let yaml = format!(
            "{ISSUERS}tenancy:\n  tenants:\n    Acme: {{ issuers: [c], path_prefix: /acme/ }}\n    beta: {{ issuers: [b], path_prefix: /beta, admins: {{ subjects: [bob] }} }}\nservers:\n  - {{ name: a, path: /acme/mcp, upstreams: [ua], tenant: Acme }}\n  - {{ name: b, path: /other/mcp, upstreams: [ua], tenant: beta, auth: {{ issuers: [a] }} }}\n  - {{ name: c, path: /c, upstreams: [ub] }}\n"
        );
        let got = issues(&yaml).join("\n");
        for expected in [
            "tenancy.tenants.Acme: \"Acme\" is not a tenant name",
            "tenancy.tenants.Acme.issuers[0]: unknown issuer \"c\"",
            "tenancy.tenants.Acme.path_prefix: \"/acme/\": expected a path",
            "servers[1].path: \"/other/mcp\" is not under the path_prefix \"/beta\"",
            "servers[1].auth.issuers[0]: \"a\" is not an issuer of tenant \"beta\"",
            "upstreams.ua: used by servers of tenants \"Acme\" and \"beta\"",
            "servers[2].tenant: required with `tenancy`",
            "tenancy.tenants.beta.admins: tenant administrators use the JSON admin API: configure `admin.auth`",
        ] {
            assert!(got.contains(expected), "{expected:?} missing from:\n{got}");
        }
        let yaml = format!(
            "{ISSUERS}tenancy:\n  resolve: host\n  tenants:\n    acme: {{ issuers: [a], hosts: [\"acme.example:443\"] }}\n    beta: {{ issuers: [b], hosts: [] }}\nservers:\n  - {{ name: a, path: /mcp, upstreams: [ua], tenant: acme }}\n"
        );
        let got = issues(&yaml).join("\n");
        for expected in [
            "tenancy.tenants.acme.hosts: \"acme.example:443\": expected a host name",
            "tenancy.tenants.acme.public_url: required with tenancy.resolve: host",
            "tenancy.tenants.beta.hosts: required",
        ] {
            assert!(got.contains(expected), "{expected:?} missing from:\n{got}");
        }
        let yaml = format!(
            "{ISSUERS}tenancy:\n  resolve: claim\n  tenants:\n    acme: {{ issuers: [a], claim_values: [x] }}\n    beta: {{ issuers: [b], claim_values: [x] }}\nservers:\n  - {{ name: a, path: /mcp, upstreams: [ua], tenant: acme }}\n"
        );
        let got = issues(&yaml).join("\n");
        for expected in [
            "tenancy.tenants.beta.claim_values: \"x\" is also a claim value of tenant \"acme\"",
            "servers[0].auth: required with tenancy.resolve: claim",
        ] {
            assert!(got.contains(expected), "{expected:?} missing from:\n{got}");
        }
        let got = issues(&format!(
            "{ISSUERS}servers:\n  - {{ name: a, path: /mcp, upstreams: [ua], tenant: acme }}\n"
        ))
        .join("\n");
        assert!(
            got.contains("servers[0].tenant: \"acme\": no `tenancy` block"),
            "{got}"
        );
    }

    #[test]
    fn two_tenants_on_two_hosts_may_share_a_path() {
        let yaml = format!(
            "{ISSUERS}tenancy:\n  resolve: host\n  tenants:\n    acme: {{ issuers: [a], hosts: [acme.example], public_url: \"https://acme.example\" }}\n    beta: {{ issuers: [b], hosts: [beta.example], public_url: \"https://beta.example\" }}\nservers:\n  - {{ name: a, path: /mcp, upstreams: [ua], tenant: acme, auth: {{}} }}\n  - {{ name: b, path: /mcp, upstreams: [ub], tenant: beta, auth: {{}} }}\n"
        );
        assert!(issues(&yaml).is_empty(), "{:?}", issues(&yaml));
    }
}
