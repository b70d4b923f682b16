//! The audit page: records searched by time, principal, server, tool and outcome, a page at a
//! time, and the same search exported as CSV or JSON lines (the CLI's formats).

use super::page::{self, esc, shown, url_part};
use super::session::viewer;
use crate::commands::audit::{OUTCOMES, csv, json_lines};
use crate::config::HumanDuration;
use crate::store::AuditFilter;
use crate::web::AppState;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Deserialize;
use std::fmt::Write;

/// Records per page.
const PAGE: i64 = 50;
/// Most records one export holds (narrow the search for more).
const MAX_EXPORT: i64 = 10_000;
/// Deepest page (the offset costs the store a scan).
const MAX_OFFSET: i64 = 100_000;

/// The search form.
#[derive(Deserialize, Default, Clone)]
pub struct Search {
    /// How far back: `1h`, `7d`, or `all`.
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    server: Option<String>,
    #[serde(default)]
    tool: Option<String>,
    #[serde(default)]
    outcome: Option<String>,
    #[serde(default)]
    page: Option<i64>,
    #[serde(default)]
    format: Option<String>,
}

fn nonempty(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

impl Search {
    fn filter(&self, limit: i64) -> Result<AuditFilter, String> {
        let since = nonempty(&self.since).unwrap_or_else(|| "24h".into());
        let since_ms = if since == "all" {
            0
        } else {
            let d = HumanDuration::parse(&since).map_err(|e| format!("Since: {e}, or \"all\""))?;
            crate::audit::now_ms() - d.0.as_millis() as i64
        };
        let outcome = nonempty(&self.outcome);
        if let Some(o) = &outcome
            && !OUTCOMES.contains(&o.as_str())
        {
            return Err(format!("Outcome: expected one of {}", OUTCOMES.join(", ")));
        }
        let page = self.page.unwrap_or(0).max(0);
        Ok(AuditFilter {
            since_ms,
            subject: nonempty(&self.subject),
            target: nonempty(&self.tool),
            outcome,
            server: nonempty(&self.server),
            limit,
            offset: (page * PAGE).min(MAX_OFFSET),
            ..AuditFilter::default()
        })
    }

    /// The search as a query string (without page and format).
    fn query(&self) -> String {
        let mut q = Vec::new();
        for (k, v) in [
            ("since", &self.since),
            ("subject", &self.subject),
            ("server", &self.server),
            ("tool", &self.tool),
            ("outcome", &self.outcome),
        ] {
            if let Some(v) = nonempty(v) {
                q.push(format!("{k}={}", url_part(&v)));
            }
        }
        q.join("&")
    }
}

/// `GET /admin/audit?…`.
pub async fn search(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(s): Query<Search>,
) -> Response {
    let v = match viewer(&state, &headers).await {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let Some(store) = state.gateway.store.clone() else {
        return page::message(
            StatusCode::SERVICE_UNAVAILABLE,
            "No store",
            "This gateway runs without a store.",
        );
    };
    let field = |name: &str, label: &str, value: &Option<String>, hint: &str| {
        format!(
            "<label>{label}<input name=\"{name}\" value=\"{v}\" placeholder=\"{hint}\"></label>",
            v = esc(value.as_deref().unwrap_or(""))
        )
    };
    let mut outcome =
        String::from("<label>Outcome<select name=\"outcome\"><option value=\"\">any</option>");
    for o in OUTCOMES {
        let sel = if s.outcome.as_deref() == Some(o) {
            " selected"
        } else {
            ""
        };
        let _ = write!(outcome, "<option{sel}>{o}</option>");
    }
    outcome.push_str("</select></label>");
    let mut body = format!(
        "<form method=\"get\" action=\"/admin/audit\" class=\"filters\" role=\"search\">{}{}{}{}{}<button type=\"submit\" class=\"primary\">Search</button></form>",
        field("since", "Since", &s.since, "24h, 7d or all"),
        field("subject", "Principal", &s.subject, "subject"),
        field("server", "Server", &s.server, "virtual server"),
        field("tool", "Tool", &s.tool, "tool, prompt or URI"),
        outcome,
    );
    let filter = match s.filter(PAGE + 1) {
        Ok(f) => f,
        Err(e) => {
            let _ = write!(body, "<p class=\"error\" role=\"alert\">{}</p>", esc(&e));
            return page::render(&v, "/admin/audit", "Audit", &body);
        }
    };
    let mut records = match store.query_audit(&filter).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "admin console: audit query failed");
            body.push_str("<p class=\"error\" role=\"alert\">The audit trail could not be read; see the gateway's log.</p>");
            return page::render(&v, "/admin/audit", "Audit", &body);
        }
    };
    let more = records.len() as i64 > PAGE;
    records.truncate(PAGE as usize);
    let q = s.query();
    let _ = write!(
        body,
        "<p class=\"actions\"><span class=\"muted\">Export this search (newest {MAX_EXPORT} at most):</span>\
         <a href=\"/admin/audit/export?{q}&amp;format=csv\">CSV</a><a href=\"/admin/audit/export?{q}&amp;format=jsonl\">JSON lines</a></p>",
        q = esc(&q)
    );
    if records.is_empty() {
        body.push_str("<p class=\"muted\">No records match.</p>");
    } else {
        body.push_str("<table aria-label=\"Audit records\"><thead><tr><th>Time (UTC)</th><th>Principal</th><th>Server</th><th>Method</th><th>Target</th><th>Decision</th><th>Outcome</th><th class=\"num\">Latency</th></tr></thead><tbody>");
        for r in &records {
            let decision = match &r.rule {
                Some(rule) => format!(
                    "{} <span class=\"muted\">({})</span>",
                    esc(&r.decision),
                    shown(rule)
                ),
                None => esc(&r.decision),
            };
            let outcome = match r.error_code {
                Some(c) => format!("{} {c}", esc(&r.outcome)),
                None => esc(&r.outcome),
            };
            let _ = write!(
                body,
                "<tr><td>{t}</td><td>{p}</td><td>{sv}</td><td>{m}</td><td>{tg}</td><td>{decision}</td><td>{outcome}</td><td class=\"num\">{l:.1} ms</td></tr>",
                t = page::time(r.at_ms),
                p = shown(r.subject.as_deref().unwrap_or("—")),
                sv = esc(&r.server),
                m = esc(&r.method),
                tg = shown(r.target.as_deref().unwrap_or("—")),
                l = r.latency_us as f64 / 1000.0,
            );
        }
        body.push_str("</tbody></table>");
    }
    let current = s.page.unwrap_or(0).max(0);
    let mut nav = String::new();
    if current > 0 {
        let _ = write!(
            nav,
            "<a href=\"/admin/audit?{}&amp;page={}\">Newer</a>",
            esc(&q),
            current - 1
        );
    }
    if more && (current + 1) * PAGE <= MAX_OFFSET {
        let _ = write!(
            nav,
            "<a href=\"/admin/audit?{}&amp;page={}\">Older</a>",
            esc(&q),
            current + 1
        );
    }
    if !nav.is_empty() {
        let _ = write!(body, "<p class=\"actions\" aria-label=\"Pages\">{nav}</p>");
    }
    page::render(&v, "/admin/audit", "Audit", &body)
}

/// `GET /admin/audit/export?…&format=csv|jsonl`.
pub async fn export(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(s): Query<Search>,
) -> Response {
    let v = match viewer(&state, &headers).await {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let Some(store) = state.gateway.store.clone() else {
        return page::message(
            StatusCode::SERVICE_UNAVAILABLE,
            "No store",
            "This gateway runs without a store.",
        );
    };
    let mut filter = match s.filter(MAX_EXPORT) {
        Ok(f) => f,
        Err(e) => return page::message(StatusCode::BAD_REQUEST, "Bad search", &e),
    };
    filter.offset = 0;
    let records = match store.query_audit(&filter).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "admin console: audit export failed");
            return page::message(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Export failed",
                "The audit trail could not be read; see the gateway's log.",
            );
        }
    };
    let (body, kind, ext) = match s.format.as_deref() {
        Some("csv") => (csv(&records), "text/csv; charset=utf-8", "csv"),
        Some("jsonl") => (json_lines(&records), "application/x-ndjson", "jsonl"),
        _ => {
            return page::message(
                StatusCode::BAD_REQUEST,
                "Bad export",
                "format must be csv or jsonl",
            );
        }
    };
    super::audit_action(
        &state,
        &v.subject,
        "console/audit_export",
        &s.query(),
        "allow",
    );
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    if let Ok(d) = HeaderValue::from_str(&format!("attachment; filename=\"gatehouse-audit.{ext}\""))
    {
        h.insert(header::CONTENT_DISPOSITION, d);
    }
    page::secure_headers(&mut resp);
    resp
}
