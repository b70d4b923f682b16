//! Metrics about the process itself rather than the calls it serves: build information,
//! configuration and certificate reloads, failed TLS handshakes. Registered in the one
//! registry of [`super::metrics::METRICS`].

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels of `gatehouse_build_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    /// The crate version.
    pub version: String,
    /// The short commit the binary was built from, or `unknown`.
    pub commit: String,
}

/// Labels of a reload outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `success` or `failure`.
    pub outcome: String,
}

/// Labels of a listener's certificate reload.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerOutcomeLabels {
    /// `mcp` or `ops`.
    pub listener: String,
    /// `success` or `failure`.
    pub outcome: String,
}

/// Labels naming a listener.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    /// `mcp` or `ops`.
    pub listener: String,
}

/// The process metrics.
pub struct OpsMetrics {
    /// Always 1, labelled with the version and commit.
    pub build_info: Family<BuildLabels, Gauge>,
    /// Configuration reloads by outcome.
    pub config_reloads: Family<OutcomeLabels, Counter>,
    /// Certificate reloads by listener and outcome.
    pub tls_reloads: Family<ListenerOutcomeLabels, Counter>,
    /// TLS handshakes that failed or timed out, by listener.
    pub tls_handshake_failures: Family<ListenerLabels, Counter>,
    /// HTTP requests in progress (until the last byte of the answer), by listener.
    pub requests_in_flight: Family<ListenerLabels, Gauge>,
}

impl OpsMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> OpsMetrics {
        let m = OpsMetrics {
            build_info: Family::default(),
            config_reloads: Family::default(),
            tls_reloads: Family::default(),
            tls_handshake_failures: Family::default(),
            requests_in_flight: Family::default(),
        };
        m.build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_owned(),
                commit: crate::telemetry::COMMIT.to_owned(),
            })
            .set(1);
        registry.register(
            "build_info",
            "Version and commit of this binary (always 1)",
            m.build_info.clone(),
        );
        registry.register(
            "config_reloads",
            "Configuration reloads (SIGHUP or file change), by outcome",
            m.config_reloads.clone(),
        );
        registry.register(
            "tls_reloads",
            "Certificate and key reloads of a listener, by outcome",
            m.tls_reloads.clone(),
        );
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes that failed or timed out",
            m.tls_handshake_failures.clone(),
        );
        registry.register(
            "http_requests_in_flight",
            "HTTP requests in progress, until the last byte of their answer",
            m.requests_in_flight.clone(),
        );
        m
    }

    /// The in-flight gauge of `listener`.
    pub fn in_flight(&self, listener: &str) -> Gauge {
        self.requests_in_flight
            .get_or_create(&ListenerLabels {
                listener: listener.into(),
            })
            .clone()
    }

    /// Counts a configuration reload.
    pub fn config_reload(&self, ok: bool) {
        self.config_reloads
            .get_or_create(&OutcomeLabels {
                outcome: outcome(ok).into(),
            })
            .inc();
    }

    /// Counts a certificate reload of `listener`.
    pub fn tls_reload(&self, listener: &str, ok: bool) {
        self.tls_reloads
            .get_or_create(&ListenerOutcomeLabels {
                listener: listener.into(),
                outcome: outcome(ok).into(),
            })
            .inc();
    }

    /// Counts a failed handshake on `listener`.
    pub fn tls_handshake_failure(&self, listener: &str) {
        self.tls_handshake_failures
            .get_or_create(&ListenerLabels {
                listener: listener.into(),
            })
            .inc();
    }
}

fn outcome(ok: bool) -> &'static str {
    if ok { "success" } else { "failure" }
}
