//! Logging, metrics and traces.

pub mod metrics;
pub mod ops_metrics;
mod traces;

pub use traces::{TelemetryGuard, inject_trace_context, set_remote_parent};

/// The short commit this binary was built from (`unknown` outside a git checkout).
pub const COMMIT: &str = env!("GATEHOUSE_COMMIT");

use crate::config::{Log, LogFormat, Traces};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the global subscriber: logs to stderr (so that stdout stays free for
/// machine-readable output; `RUST_LOG` overrides the configured level) and, when configured,
/// the request path's spans exported over OTLP. Keep the guard until the process ends.
pub fn init(log: &Log, traces: &Traces) -> TelemetryGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&log.level));
    // Colours only for a person watching: files, journald and collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let fmt = match log.format {
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
        LogFormat::Text => fmt.boxed(),
    };
    let (otel, guard) = traces::layer(traces);
    let mut layers = vec![fmt.with_filter(filter).boxed()];
    layers.extend(otel);
    let _ = tracing_subscriber::registry().with(layers).try_init();
    guard
}

/// Logging only (commands other than `serve`).
pub fn init_logging(log: &Log) {
    let _ = init(log, &Traces::default());
}
