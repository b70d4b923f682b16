//! Quotas: the `quotas` rules compiled, and the one question the call pipeline asks of them —
//! may this request go now? Every rule that applies to a request names one counter per kind
//! it limits (a token bucket for the rate, a set of leases for concurrent calls, a count per
//! UTC day); the request passes only if every counter has room, and then takes from all of
//! them at once, or from none (`local.rs` under one lock, `redis.rs` in one Lua script).
//! What concurrent calls hold is given back when the [`Permit`] drops, with the response.

mod local;
mod redis;

use crate::config::quotas::{Dimension, OnOutage, QuotaRule};
use crate::telemetry::metrics::METRICS;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Which kind of limit a counter enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `rate`.
    Rate,
    /// `concurrent`.
    Concurrent,
    /// `daily`.
    Daily,
}

impl Kind {
    /// As configured, and as errors, audit records and metrics name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Rate => "rate",
            Kind::Concurrent => "concurrent",
            Kind::Daily => "daily",
        }
    }
}

/// One counter a request takes from.
#[derive(Debug, Clone)]
pub(crate) struct Counter {
    /// Which rule it belongs to (an index into the rules).
    rule: usize,
    /// The counter's identity: the rule and the dimension values, digested.
    key: String,
    /// What it limits, with the rule's numbers.
    check: Check,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Check {
    /// GCRA: one request every `interval_us`, up to `tolerance_us` ahead (the burst).
    Rate { interval_us: u64, tolerance_us: u64 },
    /// At most `limit` held at once; a holder lost in a crash frees its place after `lease_ms`.
    Concurrent { limit: u32, lease_ms: u64 },
    /// At most `limit` in UTC day `day` (days since the epoch).
    Daily { limit: u64, day: i64 },
}

/// What a store answers when a request does not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Full {
    /// Which of the request's counters had no room.
    pub index: usize,
    /// For a rate: how long until it would have room.
    pub wait: Duration,
}

/// Why a store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis failed or did not answer in time.
    #[error("the quota store (Redis) is unavailable: {0}")]
    Redis(String),
    /// The in-process counters are all in use.
    #[error("the gateway's quota counters are full (quotas.max_counters)")]
    CountersFull,
}

/// Why a request may not go now.
#[derive(Debug, thiserror::Error)]
pub enum QuotaError {
    /// A limit was reached.
    #[error(
        "Too Many Requests: quota {rule:?} ({kind} limit {limit}) reached; retry after {retry_after_secs}s",
        kind = kind.as_str()
    )]
    Exceeded {
        /// The rule's name.
        rule: Arc<str>,
        /// Which of its limits.
        kind: Kind,
        /// The configured number (requests per period, calls at once, calls a day).
        limit: u64,
        /// Seconds until the limit has room again (at least 1).
        retry_after_secs: u64,
        /// When it resets, in ms since the epoch.
        resets_at_ms: i64,
    },
    /// The counters could not be consulted and `on_outage` is `closed`.
    #[error(
        "Service Unavailable: {0}; quotas refuse requests while it is (quotas.redis.on_outage: closed)"
    )]
    Unavailable(StoreError),
}

/// The request being admitted, as quota rules see it.
pub struct Request<'a> {
    /// Who (a principal's binding, or a client address on an open server).
    pub who: &'a str,
    /// The virtual server.
    pub server: &'a str,
    /// Its tenant.
    pub tenant: Option<&'a str>,
    /// The tool, prompt or resource named, if any.
    pub target: Option<&'a str>,
}

struct Rule {
    name: Arc<str>,
    per: Vec<Dimension>,
    servers: Vec<String>,
    tools: Vec<String>,
    tenants: Vec<String>,
    rate: Option<(u64, u64, u32)>,
    concurrent: Option<u32>,
    daily: Option<u64>,
}

impl Rule {
    fn compile(r: &QuotaRule) -> Rule {
        Rule {
            name: r.name.as_str().into(),
            per: r.per.clone(),
            servers: r.servers.clone(),
            tools: r
                .tools
                .as_ref()
                .map(|g| g.patterns().to_vec())
                .unwrap_or_default(),
            tenants: r.tenants.clone(),
            rate: r.rate.as_ref().map(|rate| {
                let period = rate.per.0.as_micros() as u64;
                let interval = (period / u64::from(rate.requests)).max(1);
                let burst = rate.burst.unwrap_or(rate.requests).max(1);
                (interval, interval * u64::from(burst - 1), rate.requests)
            }),
            concurrent: r.concurrent,
            daily: r.daily,
        }
    }

    /// The key of this rule's counters for `req`, or `None` when the rule does not apply.
    fn key(&self, req: &Request<'_>) -> Option<String> {
        if !self.servers.is_empty() && !self.servers.iter().any(|s| s == req.server) {
            return None;
        }
        if !self.tenants.is_empty()
            && !req
                .tenant
                .is_some_and(|t| self.tenants.iter().any(|x| x == t))
        {
            return None;
        }
        if !self.tools.is_empty() {
            let name = req.target?;
            if !self.tools.iter().any(|p| crate::auth::glob_match(p, name)) {
                return None;
            }
        }
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for d in &self.per {
            let value = match d {
                Dimension::Principal => req.who,
                Dimension::Server => req.server,
                Dimension::Tenant => req.tenant.unwrap_or(""),
                Dimension::Tool => {
                    h.update(req.server.as_bytes());
                    h.update([0]);
                    req.target?
                }
            };
            h.update(value.as_bytes());
            h.update([0]);
        }
        // The dimension values (who, which tool) never appear in a key, only their digest.
        Some(format!(
            "{}:{}",
            self.name,
            crate::hex::encode(&h.finalize()[..16])
        ))
    }
}

/// Longest a concurrent call holds its place when the gateway holding it disappears.
const LEASE: Duration = Duration::from_secs(600);

enum Store {
    Local(local::Local),
    Redis(Arc<redis::Shared>),
}

/// The compiled `quotas` block with its counters.
pub struct Quotas {
    rules: Vec<Rule>,
    store: Arc<Store>,
    on_outage: OnOutage,
}

/// What an admitted request holds until its response is finished: its places among
/// concurrent calls.
#[derive(Default)]
pub struct Permit {
    held: Option<(Arc<Store>, Vec<String>, String)>,
}

impl Permit {
    /// The permit to keep alive with a response, `None` when it holds nothing (no
    /// allocation on the path of requests no concurrency limit applies to).
    pub fn shared(self) -> Option<Arc<Permit>> {
        self.held.is_some().then(|| Arc::new(self))
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let Some((store, keys, member)) = self.held.take() else {
            return;
        };
        match &*store {
            Store::Local(l) => l.release(&keys),
            Store::Redis(r) => r.release(keys, member),
        }
    }
}

impl Quotas {
    /// Compiles the block (validated), reusing `previous`'s counters when the store is the same.
    pub fn new(
        config: &crate::config::quotas::Quotas,
        previous: Option<&Quotas>,
        previous_config: Option<&crate::config::quotas::Quotas>,
    ) -> Result<Quotas, String> {
        let same_store = previous_config
            .is_some_and(|p| p.redis == config.redis && p.max_counters == config.max_counters);
        let store = match (previous, same_store) {
            (Some(p), true) => p.store.clone(),
            _ => Arc::new(match &config.redis {
                None => Store::Local(local::Local::new(config.max_counters)),
                Some(r) => Store::Redis(Arc::new(redis::Shared::start(r)?)),
            }),
        };
        Ok(Quotas {
            rules: config.rules.iter().map(Rule::compile).collect(),
            store,
            on_outage: config
                .redis
                .as_ref()
                .map(|r| r.on_outage)
                .unwrap_or(OnOutage::Closed),
        })
    }

    /// Admits `req` now, or says which limit it reached and when to retry.
    pub async fn admit(&self, req: &Request<'_>) -> Result<Permit, QuotaError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let day = (now.as_secs() / 86_400) as i64;
        let mut counters = Vec::new();
        for (i, rule) in self.rules.iter().enumerate() {
            let Some(key) = rule.key(req) else {
                continue;
            };
            if let Some((interval_us, tolerance_us, _)) = rule.rate {
                counters.push(Counter {
                    rule: i,
                    key: format!("r:{key}"),
                    check: Check::Rate {
                        interval_us,
                        tolerance_us,
                    },
                });
            }
            if let Some(limit) = rule.daily {
                counters.push(Counter {
                    rule: i,
                    key: format!("d:{key}:{day}"),
                    check: Check::Daily { limit, day },
                });
            }
            if let Some(limit) = rule.concurrent {
                counters.push(Counter {
                    rule: i,
                    key: format!("c:{key}"),
                    check: Check::Concurrent {
                        limit,
                        lease_ms: LEASE.as_millis() as u64,
                    },
                });
            }
        }
        if counters.is_empty() {
            return Ok(Permit::default());
        }
        let held: Vec<String> = counters
            .iter()
            .filter(|c| matches!(c.check, Check::Concurrent { .. }))
            .map(|c| c.key.clone())
            .collect();
        // Who holds the leases (Redis): only a request that takes some needs an id.
        let member = match &*self.store {
            Store::Redis(r) if !held.is_empty() => r.member(),
            _ => String::new(),
        };
        let taken = match &*self.store {
            Store::Local(l) => l.take(&counters),
            Store::Redis(r) => r.take(&counters, &member).await,
        };
        match taken {
            Ok(None) if held.is_empty() => Ok(Permit::default()),
            Ok(None) => Ok(Permit {
                held: Some((self.store.clone(), held, member)),
            }),
            Ok(Some(full)) => Err(self.exceeded(&counters[full.index], full.wait, now)),
            Err(e) => {
                METRICS.quota_store_error();
                match self.on_outage {
                    OnOutage::Open => {
                        tracing::warn!(error = %e, "quota not counted: the store is unavailable (on_outage: open)");
                        Ok(Permit::default())
                    }
                    OnOutage::Closed => Err(QuotaError::Unavailable(e)),
                }
            }
        }
    }

    fn exceeded(&self, c: &Counter, wait: Duration, now: Duration) -> QuotaError {
        let rule = &self.rules[c.rule];
        let (kind, limit, wait) = match c.check {
            Check::Rate { .. } => (
                Kind::Rate,
                u64::from(rule.rate.map(|r| r.2).unwrap_or_default()),
                wait,
            ),
            // A place frees when some call ends: a short wait is the honest answer.
            Check::Concurrent { limit, .. } => {
                (Kind::Concurrent, u64::from(limit), Duration::from_secs(1))
            }
            Check::Daily { limit, day } => (
                Kind::Daily,
                limit,
                Duration::from_secs(((day + 1) * 86_400) as u64).saturating_sub(now),
            ),
        };
        METRICS.quota_refusal(&rule.name, kind.as_str());
        let retry_after_secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        QuotaError::Exceeded {
            rule: rule.name.clone(),
            kind,
            limit,
            retry_after_secs: retry_after_secs.max(1),
            resets_at_ms: (now + wait).as_millis() as i64,
        }
    }

    /// For `/readyz`: whether requests can be admitted, and what to say about the store.
    pub async fn readiness(&self) -> Option<(bool, String)> {
        match &*self.store {
            Store::Local(_) => None,
            Store::Redis(r) => {
                let up = r.ping().await;
                let ready = up || self.on_outage == OnOutage::Open;
                let said = match (up, self.on_outage) {
                    (true, _) => "ok".to_owned(),
                    (false, OnOutage::Open) => {
                        "unreachable: requests are admitted uncounted (on_outage: open)".to_owned()
                    }
                    (false, OnOutage::Closed) => {
                        "unreachable: requests are refused (on_outage: closed)".to_owned()
                    }
                };
                Some((ready, said))
            }
        }
    }
}

#[cfg(test)]
mod tests;
