//! Logging, metrics and traces.

pub mod guard_metrics;
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
    let filter = rust_log()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new(&log.level));
    // Behind a reload handle, so that a configuration reload can change `log.level`.
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let _ = FILTER.set(handle);
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

/// `RUST_LOG`, when set and not empty (an empty one defers to `log.level`).
fn rust_log() -> Option<String> {
    std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
}

/// The handle that swaps the log filter of the installed subscriber.
static FILTER: std::sync::OnceLock<
    tracing_subscriber::reload::Handle<EnvFilter, tracing_subscriber::Registry>,
> = std::sync::OnceLock::new();

/// Applies a new `log.level`; `RUST_LOG`, when set, keeps precedence. Returns whether the filter
/// changed, or why the level cannot be used.
pub fn set_level(level: &str) -> Result<bool, String> {
    if rust_log().is_some() {
        return Ok(false);
    }
    let filter = EnvFilter::try_new(level).map_err(|e| format!("log.level: {e}"))?;
    let Some(handle) = FILTER.get() else {
        return Ok(false);
    };
    handle.reload(filter).map_err(|e| e.to_string())?;
    Ok(true)
}

/// Logging only (commands other than `serve`).
pub fn init_logging(log: &Log) {
    let _ = init(log, &Traces::default());
}
