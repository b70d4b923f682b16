//! `quotas`: how many requests, concurrent calls and calls a day each principal, tool, server
//! or tenant may make, and where the counters live (this process, or Redis shared by every
//! replica).

use super::duration::HumanDuration;
use super::secret::ValueSource;
use serde::Deserialize;
use std::time::Duration;

/// `quotas`.
#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Quotas {
    /// Counters shared by every replica; absent: counters of this process only (each replica
    /// then allows the whole limit).
    #[serde(default)]
    pub redis: Option<RedisQuotas>,
    /// Most counters this process keeps when it counts itself (without Redis); a new counter
    /// beyond it is refused like an unavailable store (`on_outage`).
    #[serde(default = "default_max_counters")]
    pub max_counters: usize,
    /// The limits; a request must pass every rule that applies to it.
    pub rules: Vec<QuotaRule>,
}

/// `quotas.redis`.
#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisQuotas {
    /// `redis://host:port/db` (or `rediss://`); from `env` or `file` when it holds a password.
    pub url: ValueSource,
    /// Prefix of every key the gateway writes.
    #[serde(default = "default_prefix")]
    pub key_prefix: String,
    /// Longest wait for Redis before the request is treated as during an outage.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// What a request gets while Redis cannot be reached: `open` (allowed, uncounted) or
    /// `closed` (refused with 503).
    #[serde(default)]
    pub on_outage: OnOutage,
}

/// `quotas.redis.on_outage`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnOutage {
    /// Allow requests uncounted (availability first).
    #[default]
    Open,
    /// Refuse requests with 503 (limits first).
    Closed,
}

/// One limit.
#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QuotaRule {
    /// Names the limit in errors, audit records and metrics.
    pub name: String,
    /// What is counted apart: `principal` (the caller, or its address on an open server),
    /// `tool` (the tool, prompt or resource, per server), `server`, `tenant`; several: each
    /// combination apart (`[principal, tool]`: each caller's calls of each tool).
    #[serde(default = "default_per")]
    pub per: Vec<Dimension>,
    /// Only these virtual servers (names); empty: all.
    #[serde(default)]
    pub servers: Vec<String>,
    /// Only requests naming these tools, prompts or resources (globs, as clients see them);
    /// empty: every request, listings included.
    #[serde(default)]
    pub tools: Option<super::Globs>,
    /// Only servers of these tenants; empty: all.
    #[serde(default)]
    pub tenants: Vec<String>,
    /// A request rate (token bucket).
    #[serde(default)]
    pub rate: Option<Rate>,
    /// Most requests in progress at once.
    #[serde(default)]
    pub concurrent: Option<u32>,
    /// Most requests per UTC day.
    #[serde(default)]
    pub daily: Option<u64>,
}

/// `quotas.rules[].per`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Dimension {
    /// The authenticated principal, or the client address on an open server.
    Principal,
    /// The tool, prompt or resource named (and its server).
    Tool,
    /// The virtual server.
    Server,
    /// The server's tenant.
    Tenant,
}

/// `quotas.rules[].rate`: `requests` per `per`, with bursts of up to `burst` at once.
#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Requests allowed per period.
    pub requests: u32,
    /// The period.
    #[serde(default = "default_period")]
    pub per: HumanDuration,
    /// Most requests at once after a quiet time; default `requests`.
    #[serde(default)]
    pub burst: Option<u32>,
}

fn default_max_counters() -> usize {
    100_000
}

fn default_prefix() -> String {
    "gatehouse:quota:".into()
}

fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_millis(200))
}

fn default_per() -> Vec<Dimension> {
    vec![Dimension::Principal]
}

fn default_period() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}

/// Longest rule name: it labels metrics.
const MAX_NAME: usize = 64;
/// Most rules: each one a metrics label value and a counter per request.
pub const MAX_RULES: usize = 64;

/// Checks the block; `add(field, message)` collects problems.
pub fn check(c: &super::Config, add: &mut dyn FnMut(String, String)) {
    let Some(q) = &c.quotas else {
        return;
    };
    if q.rules.len() > MAX_RULES {
        add("quotas.rules".into(), format!("at most {MAX_RULES} rules"));
    }
    if q.max_counters == 0 {
        add("quotas.max_counters".into(), "must be at least 1".into());
    }
    if let Some(r) = &q.redis {
        let literal = match &r.url {
            ValueSource::Literal(u) => Some(u),
            ValueSource::From(spec) => spec.value.as_ref(),
        };
        if let Some(u) = literal
            && u.contains('@')
        {
            add(
                "quotas.redis.url".into(),
                "a URL with a password must come from `env` or `file`, not the YAML".into(),
            );
        }
        if let Some(u) = literal
            && !(u.starts_with("redis://") || u.starts_with("rediss://"))
        {
            add(
                "quotas.redis.url".into(),
                format!("{u:?}: expected redis://host:port or rediss://host:port"),
            );
        }
        if r.timeout.0.is_zero() || r.timeout.0 > Duration::from_secs(10) {
            add("quotas.redis.timeout".into(), "between 1ms and 10s".into());
        }
    }
    let mut names = std::collections::HashSet::new();
    for (i, r) in q.rules.iter().enumerate() {
        let field = format!("quotas.rules[{i}]");
        let name_ok = !r.name.is_empty()
            && r.name.len() <= MAX_NAME
            && r.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !name_ok {
            add(
                format!("{field}.name"),
                format!(
                    "{:?}: expected 1 to {MAX_NAME} of a-z, A-Z, 0-9, '-', '_' and '.'",
                    r.name
                ),
            );
        } else if !names.insert(&r.name) {
            add(
                format!("{field}.name"),
                format!("duplicate rule name {:?}", r.name),
            );
        }
        if r.per.is_empty() {
            add(
                format!("{field}.per"),
                "name at least one of principal, tool, server, tenant".into(),
            );
        }
        if r.rate.is_none() && r.concurrent.is_none() && r.daily.is_none() {
            add(
                field.clone(),
                "set at least one of rate, concurrent and daily".into(),
            );
        }
        if let Some(rate) = &r.rate {
            if rate.requests == 0 {
                add(
                    format!("{field}.rate.requests"),
                    "must be at least 1".into(),
                );
            }
            if rate.per.0 < Duration::from_millis(1) || rate.per.0 > Duration::from_secs(86_400) {
                add(format!("{field}.rate.per"), "between 1ms and 24h".into());
            }
            if rate.burst == Some(0) {
                add(format!("{field}.rate.burst"), "must be at least 1".into());
            }
        }
        if r.concurrent == Some(0) {
            add(format!("{field}.concurrent"), "must be at least 1".into());
        }
        if r.daily == Some(0) {
            add(format!("{field}.daily"), "must be at least 1".into());
        }
        for (j, s) in r.servers.iter().enumerate() {
            if !c.servers.iter().any(|v| &v.name == s) {
                add(
                    format!("{field}.servers[{j}]"),
                    format!("unknown server {s:?}"),
                );
            }
        }
        for (j, t) in r.tenants.iter().enumerate() {
            if !c
                .tenancy
                .as_ref()
                .is_some_and(|y| y.tenants.contains_key(t))
            {
                add(
                    format!("{field}.tenants[{j}]"),
                    format!("unknown tenant {t:?}"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::validate::tests::issues;

    const BASE: &str = "servers:\n  - { name: main, path: /mcp, upstreams: [a] }\nupstreams:\n  a: { kind: http, url: \"http://127.0.0.1:9/mcp\" }\n";

    #[test]
    fn quota_mistakes_are_reported_with_their_fields() {
        let yaml = format!(
            "{BASE}quotas:\n  redis: {{ url: \"redis://:pw@127.0.0.1:6379\", timeout: 0s }}\n  rules:\n    - {{ name: \"a b\", rate: {{ requests: 0, per: 0s }} }}\n    - {{ name: x, per: [], servers: [nope], tenants: [t] }}\n    - {{ name: x, concurrent: 0, daily: 0 }}\n"
        );
        let got = issues(&yaml).join("\n");
        for expected in [
            "quotas.redis.url: a URL with a password must come from `env` or `file`",
            "quotas.redis.timeout: between 1ms and 10s",
            "quotas.rules[0].name: \"a b\": expected",
            "quotas.rules[0].rate.requests: must be at least 1",
            "quotas.rules[0].rate.per: between 1ms and 24h",
            "quotas.rules[1].per: name at least one",
            "quotas.rules[1]: set at least one of rate, concurrent and daily",
            "quotas.rules[1].servers[0]: unknown server \"nope\"",
            "quotas.rules[1].tenants[0]: unknown tenant \"t\"",
            "quotas.rules[2].name: duplicate rule name \"x\"",
            "quotas.rules[2].concurrent: must be at least 1",
            "quotas.rules[2].daily: must be at least 1",
        ] {
            assert!(got.contains(expected), "{expected:?} missing from:\n{got}");
        }
    }

    #[test]
    fn a_usable_quota_block_is_accepted() {
        let yaml = format!(
            "{BASE}quotas:\n  redis: {{ url: \"redis://127.0.0.1:6379\", on_outage: closed }}\n  rules:\n    - {{ name: per-user, rate: {{ requests: 10, per: 1s, burst: 20 }}, concurrent: 4, daily: 1000 }}\n    - {{ name: search, per: [principal, tool], tools: \"search*\", rate: {{ requests: 1 }} }}\n"
        );
        assert!(issues(&yaml).is_empty(), "{:?}", issues(&yaml));
    }
}
