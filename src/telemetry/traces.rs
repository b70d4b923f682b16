//! OpenTelemetry traces: a span per stage of the request path (`gatehouse.request`,
//! `gatehouse.auth`, `gatehouse.policy`, `gatehouse.upstream`), exported in batches over
//! OTLP/HTTP, with W3C trace context taken from clients and passed on to HTTP upstreams.

use crate::config::Traces;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider,
};
use std::sync::OnceLock;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::filter_fn;

/// Whether spans are exported (propagation is skipped otherwise).
static ENABLED: OnceLock<bool> = OnceLock::new();

/// Flushes exported spans when the process ends.
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Exports what is pending and stops the exporter (call outside the async runtime).
    pub fn shutdown(self) {
        if let Some(p) = self.provider
            && let Err(e) = p.shutdown()
        {
            eprintln!("gatehouse: exporting the last spans failed: {e}");
        }
    }
}

type BoxedLayer = Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync>;

/// The OpenTelemetry layer for `config`, if export is configured.
pub(super) fn layer(config: &Traces) -> (Option<BoxedLayer>, TelemetryGuard) {
    let Some(endpoint) = &config.otlp_endpoint else {
        let _ = ENABLED.set(false);
        return (None, TelemetryGuard { provider: None });
    };
    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(endpoint.clone())
        .with_timeout(std::time::Duration::from_secs(5))
        .with_headers(Default::default())
        .build()
    {
        Ok(e) => e,
        Err(e) => {
            eprintln!("gatehouse: traces are not exported: {e}");
            let _ = ENABLED.set(false);
            return (None, TelemetryGuard { provider: None });
        }
    };
    let batch = BatchConfigBuilder::default()
        .with_scheduled_delay(config.export_interval.0)
        .build();
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(batch)
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            config.sample_ratio,
        ))))
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(config.service_name.clone())
                .build(),
        )
        .build();
    let tracer = provider.tracer("gatehouse");
    let _ = ENABLED.set(true);
    // Only the gateway's own spans: log events stay in the log.
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(filter_fn(|m| {
            m.is_span() && m.target().starts_with("gatehouse")
        }))
        .boxed();
    (
        Some(layer),
        TelemetryGuard {
            provider: Some(provider),
        },
    )
}

fn enabled() -> bool {
    ENABLED.get().copied().unwrap_or(false)
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(k, v);
        }
    }
}

/// Continues the client's trace (W3C `traceparent`) in `span`.
pub fn set_remote_parent(span: &tracing::Span, headers: &http::HeaderMap) {
    if !enabled() || !headers.contains_key("traceparent") {
        return;
    }
    let cx = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    let _ = span.set_parent(cx);
}

/// Adds the current span's trace context to an upstream request.
pub fn inject_trace_context(headers: &mut http::HeaderMap) {
    if !enabled() {
        return;
    }
    let cx = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(headers));
}
