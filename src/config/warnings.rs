//! Settings that work but that a reviewer should see: `gatehouse check` prints them and
//! `serve` logs them at start. Each names its field and says what to do instead.

use super::{Config, Issue};

/// Audience values that many applications of one IdP share: a token any client got for any
/// of them would be accepted as a token for Gatehouse.
const SHARED_AUDIENCES: [(&str, &str); 3] = [
    (
        "api://default",
        "Okta's default authorization server gives it to every application",
    ),
    ("account", "Keycloak puts it in tokens for every client"),
    (
        "https://graph.microsoft.com",
        "it is Microsoft Graph's audience",
    ),
];

/// Every warning for `config`, with its field (lines are added by the caller).
pub fn warnings(config: &Config) -> Vec<Issue> {
    let mut out = Vec::new();
    shared_audiences(config, &mut out);
    alternatives_read_as_and(config, &mut out);
    plaintext_hooks(config, &mut out);
    out
}

/// An interceptor reached over plain HTTP beyond this machine: what it is sent (arguments,
/// results, who calls) crosses the network unencrypted.
fn plaintext_hooks(config: &Config, out: &mut Vec<Issue>) {
    for (i, s) in config.servers.iter().enumerate() {
        for (j, h) in s.interceptors.iter().enumerate() {
            let Ok(url) = reqwest::Url::parse(&h.url) else {
                continue;
            };
            let loopback = match url.host() {
                Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                None => true,
            };
            if url.scheme() == "http" && !loopback {
                out.push(Issue::new(
                    format!("servers[{i}].interceptors[{j}].url"),
                    "plain http to another host: the calls' arguments, results and callers \
                     travel unencrypted. Use https, or run the hook on this machine"
                        .to_owned(),
                ));
            }
        }
    }
}

fn shared_audiences(config: &Config, out: &mut Vec<Issue>) {
    for (name, issuer) in &config.auth.issuers {
        // The servers this issuer's aliases open: an alias is not any one server's resource.
        let servers: Vec<&str> = config
            .servers
            .iter()
            .filter(|s| {
                s.auth
                    .as_ref()
                    .is_some_and(|a| a.issuers.is_empty() || a.issuers.contains(name))
            })
            .map(|s| s.name.as_str())
            .collect();
        for (k, aud) in issuer.audiences.iter().enumerate() {
            let field = format!("auth.issuers.{name}.audiences[{k}]");
            let aud = aud.trim_end_matches('/');
            if let Some((_, why)) = SHARED_AUDIENCES.iter().find(|(a, _)| *a == aud) {
                out.push(Issue::new(
                    &field,
                    format!(
                        "{aud:?} is shared by many applications ({why}): a token a client got for \
                         another one is accepted here. Use an audience unique to Gatehouse (a \
                         dedicated authorization server, API or app registration)"
                    ),
                ));
            }
            if servers.len() > 1 {
                out.push(Issue::new(
                    &field,
                    format!(
                        "this alias is accepted by every server that trusts {name:?} ({}): a \
                         token issued for one of them is accepted by all. Give each server its \
                         own audience, or accept that they are one resource",
                        servers.join(", ")
                    ),
                ));
            }
        }
    }
}

/// A rule's principal lists are alternatives (any one matching is enough). Next to `tenants`,
/// a reader easily takes `roles: [admin]` for "admins of these tenants".
fn alternatives_read_as_and(config: &Config, out: &mut Vec<Issue>) {
    for (i, server) in config.servers.iter().enumerate() {
        let Some(policy) = &server.policy else {
            continue;
        };
        let mut tenants: Vec<&String> = policy.rules.iter().flat_map(|r| &r.tenants).collect();
        tenants.sort();
        tenants.dedup();
        if tenants.len() < 2 {
            continue;
        }
        for (j, rule) in policy.rules.iter().enumerate() {
            if rule.tenants.is_empty() {
                continue;
            }
            let others: Vec<&str> = [
                ("subjects", &rule.subjects),
                ("clients", &rule.clients),
                ("groups", &rule.groups),
                ("roles", &rule.roles),
                ("scopes", &rule.scopes),
            ]
            .into_iter()
            .filter(|(_, list)| !list.is_empty())
            .map(|(name, _)| name)
            .collect();
            if others.is_empty() {
                continue;
            }
            out.push(Issue::new(
                format!("servers[{i}].policy.rules[{j}]"),
                format!(
                    "`tenants` and `{}` are alternatives (OR), not conditions that must all hold: \
                     anyone matching `{}` in any tenant matches this rule. To require both, keep \
                     `tenants` and add a condition, e.g. `when: \"'admin' in principal.roles\"`",
                    others.join("`, `"),
                    others[0],
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hook_over_plain_http_to_another_host_is_warned_about() {
        let yaml = |url: &str| {
            format!(
                "servers:\n  - name: m\n    path: /mcp\n    upstreams: [u]\n    interceptors:\n      - {{ name: h, url: \"{url}\" }}\nupstreams:\n  u: {{ kind: http, url: \"http://127.0.0.1:9/\" }}\n"
            )
        };
        let warned = |url: &str| {
            let c = Config::from_yaml(&yaml(url), std::path::Path::new("t.yaml")).unwrap();
            warnings(&c)
                .iter()
                .any(|i| i.to_string().contains("interceptors[0].url"))
        };
        assert!(warned("http://dlp.corp.example/hook"));
        assert!(!warned("https://dlp.corp.example/hook"));
        assert!(!warned("http://127.0.0.1:9000/hook"));
        assert!(!warned("http://localhost:9000/hook"));
    }
}
