//! The overview page: each upstream up or down (the `gatehouse_upstream_up` gauge its last
//! call set) with its catalog state, and the last hour of calls, refusals and latency from the
//! audit trail, drawn server-side as small SVG bar charts (no script, nothing fetched).

use super::page::{self, esc, url_part};
use super::session::viewer;
use crate::store::{AuditFilter, AuditRecord};
use crate::telemetry::metrics::METRICS;
use crate::web::AppState;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::HeaderMap;
use std::fmt::Write;

/// The window shown, and its bars.
const WINDOW_MS: i64 = 3_600_000;
const BARS: usize = 12;
/// Most records the hour is drawn from (a busier hour is drawn from its newest ones, and says so).
const MAX_RECORDS: i64 = 20_000;

/// `GET /admin/`.
pub async fn page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let v = match viewer(&state, &headers).await {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let rt = state.gateway.runtime();
    let mut body = String::new();
    let now = crate::audit::now_ms();
    let records = match &state.gateway.store {
        Some(store) => store
            .query_audit(&AuditFilter {
                since_ms: now - WINDOW_MS,
                limit: MAX_RECORDS,
                ..AuditFilter::default()
            })
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "admin console: audit query failed");
                Vec::new()
            }),
        None => Vec::new(),
    };
    let calls: Vec<&AuditRecord> = records
        .iter()
        .filter(|r| !r.method.starts_with("catalog/") && !r.method.starts_with("console/"))
        .collect();
    let refused: Vec<&AuditRecord> = calls.iter().copied().filter(|r| is_refused(r)).collect();
    let failed = calls
        .iter()
        .filter(|r| !is_refused(r))
        .filter(|r| matches!(r.outcome.as_str(), "error" | "upstream_failure" | "timeout"))
        .count();
    let mut latencies: Vec<i64> = calls
        .iter()
        .filter(|r| !is_refused(r))
        .map(|r| r.latency_us)
        .collect();
    latencies.sort_unstable();
    let pct = |p: f64| -> String {
        if latencies.is_empty() {
            return "—".into();
        }
        let i = ((latencies.len() - 1) as f64 * p).round() as usize;
        format!("{:.1} ms", latencies[i] as f64 / 1000.0)
    };
    let _ = write!(
        body,
        "<h2>The last hour</h2><div class=\"cards\">\
         <div class=\"card\"><div class=\"muted\">Requests</div><div class=\"figure\">{n}</div>{c1}</div>\
         <div class=\"card\"><div class=\"muted\">Refused</div><div class=\"figure\">{r}</div>{c2}</div>\
         <div class=\"card\"><div class=\"muted\">Failed upstream or errors</div><div class=\"figure\">{failed}</div></div>\
         <div class=\"card\"><div class=\"muted\">Latency p50 / p95</div><div class=\"figure\">{p50}</div><div class=\"muted\">p95 {p95}</div></div></div>",
        n = calls.len(),
        r = refused.len(),
        c1 = bars(&calls, now, "Requests per 5 minutes"),
        c2 = bars(&refused, now, "Refusals per 5 minutes"),
        p50 = pct(0.5),
        p95 = pct(0.95),
    );
    if records.len() as i64 >= MAX_RECORDS {
        let _ = write!(
            body,
            "<p class=\"muted\">Drawn from the newest {MAX_RECORDS} records of the hour.</p>"
        );
    }
    let catalog = match &state.gateway.store {
        Some(store) => store.catalog_upstreams().await.unwrap_or_default(),
        None => Vec::new(),
    };
    body.push_str("<h2>Upstreams</h2><table aria-label=\"Upstreams\"><thead><tr><th>Upstream</th><th>Transport</th><th>Last call</th><th>Catalog</th></tr></thead><tbody>");
    for (name, u) in &rt.config.upstreams {
        let up = METRICS
            .upstream_up
            .get(&METRICS.upstream_labels(name))
            .map(|g| g.get());
        let health = match up {
            Some(1) => "<span class=\"state state-up\">up</span>",
            Some(_) => "<span class=\"state state-down\">down</span>",
            None => "<span class=\"state\">no calls yet</span>",
        };
        let cat = catalog
            .iter()
            .find(|c| &c.upstream == name)
            .map(|c| c.state.as_str())
            .unwrap_or(if rt.config.catalog.is_some() {
                "unregistered"
            } else {
                "not governed"
            });
        let _ = write!(
            body,
            "<tr><td><a href=\"/admin/upstreams/{l}\">{n}</a></td><td>{t}</td><td>{health}</td><td><span class=\"state state-{c}\">{c}</span></td></tr>",
            l = url_part(name),
            n = esc(name),
            t = match u.kind {
                crate::config::UpstreamKind::Stdio => "stdio",
                _ => "http",
            },
            c = esc(cat),
        );
    }
    body.push_str("</tbody></table><h2>Virtual servers</h2><table aria-label=\"Virtual servers\"><thead><tr><th>Server</th><th>Path</th><th>Upstreams</th><th>Authentication</th></tr></thead><tbody>");
    for s in &rt.config.servers {
        let _ = write!(
            body,
            "<tr><td>{n}</td><td><code>{p}</code></td><td>{u}</td><td>{a}</td></tr>",
            n = esc(&s.name),
            p = esc(&s.path),
            u = esc(&s.upstreams.join(", ")),
            a = if s.auth.is_some() { "required" } else { "open" },
        );
    }
    body.push_str("</tbody></table>");
    page::render(&v, "/admin/", "Overview", &body)
}

/// Refused by the gateway (authentication, policy, catalog), whatever error it answered.
fn is_refused(r: &AuditRecord) -> bool {
    r.decision != "allow" || r.outcome == "refused"
}

/// A bar chart of how many of `records` fall in each 5-minute slice of the last hour.
fn bars(records: &[&AuditRecord], now: i64, label: &str) -> String {
    let slice = WINDOW_MS / BARS as i64;
    let mut counts = [0usize; BARS];
    for r in records {
        let age = now - r.at_ms;
        if (0..WINDOW_MS).contains(&age) {
            counts[BARS - 1 - (age / slice) as usize] += 1;
        }
    }
    let max = counts.iter().copied().max().unwrap_or(0).max(1);
    let mut svg = format!(
        "<svg viewBox=\"0 0 120 40\" role=\"img\" aria-label=\"{l}: {c}\" preserveAspectRatio=\"none\">",
        l = esc(label),
        c = counts
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    for (i, n) in counts.iter().enumerate() {
        let h = (*n as f64 / max as f64 * 38.0).max(if *n > 0 { 1.5 } else { 0.0 });
        let _ = write!(
            svg,
            "<rect x=\"{x}\" y=\"{y:.1}\" width=\"8\" height=\"{h:.1}\" fill=\"#1f5fbf\"><title>{n}</title></rect>",
            x = i * 10 + 1,
            y = 40.0 - h,
        );
    }
    svg.push_str("</svg>");
    svg
}
