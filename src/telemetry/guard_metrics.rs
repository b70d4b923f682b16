//! Metrics of what guards results and requests beyond policy: the output guardrails'
//! findings and the interceptors' answers. Registered in the one registry of
//! [`super::metrics::METRICS`]; every label comes from the configuration (server, detector,
//! hook names), never from callers.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels of a guardrail finding.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FindingLabels {
    /// Virtual server.
    pub server: String,
    /// The detector, e.g. `payment-card`.
    pub rule: String,
    /// `redact`, `block` or `flag`.
    pub action: String,
    /// The server's tenant (empty without `tenancy`).
    pub tenant: String,
}

/// Labels of an interceptor's answer.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HookLabels {
    /// Virtual server.
    pub server: String,
    /// The interceptor's name.
    pub interceptor: String,
    /// `request` or `response`.
    pub phase: String,
    /// `allow`, `deny`, `mutate`, or `error` (timed out, unreachable, a bad answer).
    pub outcome: String,
    /// The server's tenant (empty without `tenancy`).
    pub tenant: String,
}

/// Labels of an interceptor's latency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HookLatencyLabels {
    /// Virtual server.
    pub server: String,
    /// The interceptor's name.
    pub interceptor: String,
}

/// The guard metrics.
pub struct GuardMetrics {
    /// Guardrail matches, by server, detector and action.
    pub guardrail_findings: Family<FindingLabels, Counter>,
    /// Interceptor answers, by server, hook, phase and outcome.
    pub interceptor_calls: Family<HookLabels, Counter>,
    /// Time waiting for interceptors (a concurrency slot included).
    pub interceptor_seconds: Family<HookLatencyLabels, Histogram, fn() -> Histogram>,
}

fn buckets() -> Histogram {
    // 100 µs to ~52 s: a hook on loopback answers in a millisecond, a remote one in tens.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0001, 2.0, 20,
    ))
}

impl GuardMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> GuardMetrics {
        let m = GuardMetrics {
            guardrail_findings: Family::default(),
            interceptor_calls: Family::default(),
            interceptor_seconds: Family::new_with_constructor(buckets),
        };
        registry.register(
            "guardrail_findings",
            "Output guardrail matches, by server, detector and action",
            m.guardrail_findings.clone(),
        );
        registry.register(
            "interceptor_calls",
            "Interceptor answers, by server, interceptor, phase and outcome",
            m.interceptor_calls.clone(),
        );
        registry.register(
            "interceptor_seconds",
            "Time waiting for an interceptor's answer",
            m.interceptor_seconds.clone(),
        );
        m
    }
}

impl super::metrics::Metrics {
    /// Counts a guardrail finding.
    pub fn guardrail_finding(&self, server: &str, rule: &str, action: &str, count: u32) {
        self.guards
            .guardrail_findings
            .get_or_create(&FindingLabels {
                server: server.into(),
                rule: rule.into(),
                action: action.into(),
                tenant: self.server_tenant(server),
            })
            .inc_by(u64::from(count));
    }

    /// Counts an interceptor's answer and how long it took.
    pub fn interceptor_answer(
        &self,
        server: &str,
        hook: &str,
        phase: &str,
        outcome: &str,
        seconds: f64,
    ) {
        self.guards
            .interceptor_calls
            .get_or_create(&HookLabels {
                server: server.into(),
                interceptor: hook.into(),
                phase: phase.into(),
                outcome: outcome.into(),
                tenant: self.server_tenant(server),
            })
            .inc();
        self.guards
            .interceptor_seconds
            .get_or_create(&HookLatencyLabels {
                server: server.into(),
                interceptor: hook.into(),
            })
            .observe(seconds);
    }
}
