//! Prometheus metrics, served at `/metrics`. One registry per process: every label set is
//! bounded by the configuration (servers, upstreams, tools, rules), never by callers.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

/// Distinct tool and prompt names labelled per virtual server unless `limits` says otherwise.
pub const DEFAULT_NAMES_PER_SERVER: usize = crate::config::DEFAULT_METRIC_NAMES_PER_SERVER;

/// Labels of a handled request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Virtual server.
    pub server: String,
    /// Upstream (empty when none was involved).
    pub upstream: String,
    /// JSON-RPC method.
    pub method: String,
    /// Tool, prompt or resource (empty for other methods).
    pub tool: String,
    /// `ok`, `error`, `upstream_failure`, `timeout`, `refused`, `cancelled`.
    pub outcome: String,
    /// The server's tenant (empty without `tenancy`).
    pub tenant: String,
}

/// Labels of a latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LatencyLabels {
    /// Virtual server.
    pub server: String,
    /// JSON-RPC method.
    pub method: String,
    /// The server's tenant (empty without `tenancy`).
    pub tenant: String,
}

/// Labels naming one upstream.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    /// Upstream name.
    pub upstream: String,
    /// The upstream's tenant (empty without `tenancy`).
    pub tenant: String,
}

/// Labels of an authentication failure.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthFailureLabels {
    /// Virtual server.
    pub server: String,
    /// `missing`, `invalid`, `insufficient_scope` or `unavailable`.
    pub reason: String,
    /// The server's tenant (empty without `tenancy`).
    pub tenant: String,
}

/// Labels of a policy denial.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DenialLabels {
    /// Virtual server.
    pub server: String,
    /// The rule that denied.
    pub rule: String,
    /// The server's tenant (empty without `tenancy`).
    pub tenant: String,
}

/// Labels of a catalog event.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CatalogLabels {
    /// The upstream.
    pub upstream: String,
    /// `hold`, `quarantine`, `remove`, `restore`.
    pub event: String,
    /// The upstream's tenant (empty without `tenancy`).
    pub tenant: String,
}

/// Labels of a request refused by a quota.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QuotaLabels {
    /// The rule's name.
    pub rule: String,
    /// `rate`, `concurrent` or `daily`.
    pub kind: String,
}

/// Labels of an event of the authorization-server façade.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OAuthLabels {
    /// `token`, `consent`, `register`, `revoke`.
    pub event: String,
    /// `issued`, `allow`, `registered`… or the OAuth error code of a refusal.
    pub outcome: String,
}

fn latency_buckets() -> Histogram {
    // 50 µs to ~26 s: the gateway's own share is sub-millisecond, upstream calls take seconds.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.00005, 2.0, 20,
    ))
}

/// Every metric the gateway exports.
pub struct Metrics {
    registry: Registry,
    /// Requests by server, upstream, method, tool and outcome.
    pub requests: Family<RequestLabels, Counter>,
    /// Time from request to last byte.
    pub request_seconds: Family<LatencyLabels, Histogram, fn() -> Histogram>,
    /// Time spent waiting for upstreams.
    pub upstream_seconds: Family<UpstreamLabels, Histogram, fn() -> Histogram>,
    /// Time the gateway itself added (total minus upstream).
    pub added_seconds: Family<LatencyLabels, Histogram, fn() -> Histogram>,
    /// Refused credentials by reason.
    pub auth_failures: Family<AuthFailureLabels, Counter>,
    /// Calls refused or hidden by policy, by rule.
    pub policy_denials: Family<DenialLabels, Counter>,
    /// Definitions held back by the catalog.
    pub catalog_events: Family<CatalogLabels, Counter>,
    /// Events of the authorization-server façade.
    pub oauth_events: Family<OAuthLabels, Counter>,
    /// 1 when the upstream's last call succeeded, 0 when it failed.
    pub upstream_up: Family<UpstreamLabels, Gauge>,
    /// Records waiting to be written.
    pub audit_queue_depth: Gauge,
    /// Records lost because the queue was full (`on_full: drop`) or the store failed.
    pub audit_dropped: Counter,
    /// Records written.
    pub audit_written: Counter,
    /// Tool and prompt names given a label of their own, per virtual server.
    named: Mutex<HashMap<String, HashSet<String>>>,
    /// How many names each server may label (`limits.metric_names_per_server`).
    names_per_server: AtomicUsize,
    /// Starts of a stdio upstream's process after the first (crashes, exits, failed starts).
    pub upstream_restarts: Family<UpstreamLabels, Counter>,
    /// Messages from upstream standalone streams dropped before the client's GET arrived.
    pub standalone_dropped: Family<DropLabels, Counter>,
    /// Requests refused by a quota, by rule and kind.
    pub quota_refusals: Family<QuotaLabels, Counter>,
    /// Whether the quota store (Redis) answered its last request.
    pub quota_store_up: Gauge,
    /// Quota checks the store could not answer (admitted or refused per `on_outage`).
    pub quota_store_errors: Counter,
    /// Build, reload and listener metrics.
    pub ops: super::ops_metrics::OpsMetrics,
    /// Guardrail findings and interceptor answers.
    pub guards: super::guard_metrics::GuardMetrics,
    /// Each server's and upstream's tenant, for the `tenant` labels.
    tenants: arc_swap::ArcSwap<crate::config::tenants::Owners>,
}

/// Labels of a message dropped from a session's standalone hold.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    /// The upstream that sent it.
    pub upstream: String,
    /// `overflow` (`limits.standalone_hold_messages`) or `expired` (`limits.standalone_hold_time`).
    pub reason: String,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("gatehouse");
        let requests = Family::default();
        let request_seconds = Family::new_with_constructor(latency_buckets as fn() -> Histogram);
        let upstream_seconds = Family::new_with_constructor(latency_buckets as fn() -> Histogram);
        let added_seconds = Family::new_with_constructor(latency_buckets as fn() -> Histogram);
        let auth_failures = Family::default();
        let policy_denials = Family::default();
        let catalog_events = Family::default();
        let oauth_events = Family::default();
        let upstream_up = Family::default();
        let audit_queue_depth = Gauge::default();
        let audit_dropped = Counter::default();
        let audit_written = Counter::default();
        registry.register("requests", "MCP requests handled", requests.clone());
        registry.register(
            "request_duration_seconds",
            "Time from request to last byte",
            request_seconds.clone(),
        );
        registry.register(
            "upstream_duration_seconds",
            "Time spent waiting for upstreams",
            upstream_seconds.clone(),
        );
        registry.register(
            "added_latency_seconds",
            "Time the gateway added to a request",
            added_seconds.clone(),
        );
        registry.register(
            "auth_failures",
            "Requests refused by authentication",
            auth_failures.clone(),
        );
        registry.register(
            "policy_denials",
            "Calls refused by policy",
            policy_denials.clone(),
        );
        registry.register(
            "catalog_events",
            "Definitions held back by the catalog (new or changed)",
            catalog_events.clone(),
        );
        registry.register(
            "oauth_events",
            "Tokens, consents, registrations and revocations of the authorization-server façade, by outcome",
            oauth_events.clone(),
        );
        registry.register(
            "upstream_up",
            "Whether the upstream's last call succeeded",
            upstream_up.clone(),
        );
        registry.register(
            "audit_queue_depth",
            "Audit records waiting to be written",
            audit_queue_depth.clone(),
        );
        registry.register("audit_dropped", "Audit records lost", audit_dropped.clone());
        registry.register(
            "audit_written",
            "Audit records written",
            audit_written.clone(),
        );
        let upstream_restarts = Family::default();
        registry.register(
            "upstream_restarts",
            "Restarts of a stdio upstream's process",
            upstream_restarts.clone(),
        );
        let standalone_dropped = Family::default();
        registry.register(
            "standalone_dropped",
            "Messages of upstream standalone streams dropped before the client's GET stream arrived",
            standalone_dropped.clone(),
        );
        let quota_refusals = Family::default();
        registry.register(
            "quota_refusals",
            "Requests refused by a quota, by rule and kind",
            quota_refusals.clone(),
        );
        let quota_store_up = Gauge::default();
        registry.register(
            "quota_store_up",
            "Whether the quota store (Redis) answered its last request",
            quota_store_up.clone(),
        );
        let quota_store_errors = Counter::default();
        registry.register(
            "quota_store_errors",
            "Quota checks the store could not answer",
            quota_store_errors.clone(),
        );
        let ops = super::ops_metrics::OpsMetrics::register(&mut registry);
        let guards = super::guard_metrics::GuardMetrics::register(&mut registry);
        Metrics {
            registry,
            ops,
            guards,
            requests,
            request_seconds,
            upstream_seconds,
            added_seconds,
            auth_failures,
            policy_denials,
            catalog_events,
            oauth_events,
            upstream_up,
            audit_queue_depth,
            audit_dropped,
            audit_written,
            named: Mutex::new(HashMap::new()),
            names_per_server: AtomicUsize::new(DEFAULT_NAMES_PER_SERVER),
            upstream_restarts,
            standalone_dropped,
            quota_refusals,
            quota_store_up,
            quota_store_errors,
            tenants: Default::default(),
        }
    }

    /// Sets which tenant each server and upstream belongs to (on every configuration load).
    pub fn set_tenants(&self, tenants: std::sync::Arc<crate::config::tenants::Owners>) {
        self.tenants.store(tenants);
    }

    /// The `tenant` label of `server`.
    pub(super) fn server_tenant(&self, server: &str) -> String {
        self.tenants
            .load()
            .of_server(server)
            .unwrap_or_default()
            .to_owned()
    }

    /// The `tenant` label of `upstream`.
    fn upstream_tenant(&self, upstream: &str) -> String {
        self.tenants
            .load()
            .of_upstream(upstream)
            .unwrap_or_default()
            .to_owned()
    }

    /// The labels naming `upstream`.
    pub fn upstream_labels(&self, upstream: &str) -> UpstreamLabels {
        UpstreamLabels {
            upstream: upstream.into(),
            tenant: self.upstream_tenant(upstream),
        }
    }

    /// Sets how many distinct tool and prompt names each virtual server may label.
    pub fn set_names_per_server(&self, cap: usize) {
        self.names_per_server.store(cap, Ordering::Relaxed);
    }

    /// The `tool` label for a call of `name` on `server` that was routed to an upstream: the
    /// name once some call of it succeeded (`ok`), while the server has labelled fewer than its
    /// cap of names; `unknown` otherwise. A name a caller makes up never succeeds, so it never
    /// labels; the cap bounds what an upstream with an endless list could do.
    pub fn tool_label(&self, server: &str, name: &str, ok: bool) -> String {
        let cap = self.names_per_server.load(Ordering::Relaxed);
        let mut named = self.named.lock().unwrap_or_else(|e| e.into_inner());
        let names = match named.get_mut(server) {
            Some(n) => n,
            None => named.entry(server.to_owned()).or_default(),
        };
        if names.contains(name) {
            return name.to_owned();
        }
        if ok && names.len() < cap {
            names.insert(name.to_owned());
            return name.to_owned();
        }
        UNKNOWN.to_owned()
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }

    /// Counts a refused credential.
    pub fn auth_failure(&self, server: &str, reason: &str) {
        self.auth_failures
            .get_or_create(&AuthFailureLabels {
                server: server.into(),
                reason: reason.into(),
                tenant: self.server_tenant(server),
            })
            .inc();
    }

    /// Counts a policy denial.
    pub fn policy_denial(&self, server: &str, rule: &str) {
        self.policy_denials
            .get_or_create(&DenialLabels {
                server: server.into(),
                rule: rule.into(),
                tenant: self.server_tenant(server),
            })
            .inc();
    }

    /// Counts a definition held back by the catalog.
    pub fn catalog_event(&self, upstream: &str, event: &str) {
        self.catalog_events
            .get_or_create(&CatalogLabels {
                upstream: upstream.into(),
                event: event.into(),
                tenant: self.upstream_tenant(upstream),
            })
            .inc();
    }

    /// Counts an event of the authorization-server façade.
    pub fn oauth_event(&self, event: &str, outcome: &str) {
        self.oauth_events
            .get_or_create(&OAuthLabels {
                event: event.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    /// Records a finished request.
    pub fn request_done(&self, labels: RequestLabels, total: Duration, upstream: Option<Duration>) {
        let latency = LatencyLabels {
            server: labels.server.clone(),
            method: labels.method.clone(),
            tenant: labels.tenant.clone(),
        };
        self.request_seconds
            .get_or_create(&latency)
            .observe(total.as_secs_f64());
        if let Some(up) = upstream {
            let upstream_labels = self.upstream_labels(&labels.upstream);
            self.upstream_seconds
                .get_or_create(&upstream_labels)
                .observe(up.as_secs_f64());
            self.added_seconds
                .get_or_create(&latency)
                .observe(total.saturating_sub(up).as_secs_f64());
            let up_value = i64::from(!matches!(
                labels.outcome.as_str(),
                "upstream_failure" | "timeout"
            ));
            self.upstream_up
                .get_or_create(&upstream_labels)
                .set(up_value);
        }
        self.requests.get_or_create(&labels).inc();
    }
}

/// The label of a value that callers choose and the gateway does not recognise.
pub const UNKNOWN: &str = "unknown";
impl Metrics {
    /// Counts a request refused by quota `rule` (a configured name) of `kind`.
    pub fn quota_refusal(&self, rule: &str, kind: &str) {
        self.quota_refusals
            .get_or_create(&QuotaLabels {
                rule: rule.into(),
                kind: kind.into(),
            })
            .inc();
    }

    /// Counts a quota check the store could not answer.
    pub fn quota_store_error(&self) {
        self.quota_store_errors.inc();
    }

    /// Counts a restart of a stdio upstream's process.
    pub fn upstream_restart(&self, upstream: &str) {
        self.upstream_restarts
            .get_or_create(&self.upstream_labels(upstream))
            .inc();
    }
}

impl Metrics {
    /// Counts a message dropped from a session's standalone hold.
    pub fn standalone_dropped(&self, upstream: &str, reason: &str) {
        self.standalone_dropped
            .get_or_create(&DropLabels {
                upstream: upstream.into(),
                reason: reason.into(),
            })
            .inc();
    }
}

/// The process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_label_once_answered_and_only_up_to_the_cap() {
        let m = Metrics::new();
        m.set_names_per_server(2);
        assert_eq!(m.tool_label("s", "made-up", false), UNKNOWN);
        assert_eq!(m.tool_label("s", "a", true), "a");
        // Known names keep their label whatever the outcome.
        assert_eq!(m.tool_label("s", "a", false), "a");
        assert_eq!(m.tool_label("s", "b", true), "b");
        assert_eq!(m.tool_label("s", "c", true), UNKNOWN, "over the cap");
        assert_eq!(
            m.tool_label("other", "c", true),
            "c",
            "the cap is per server"
        );
    }
}
