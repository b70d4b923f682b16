//! `gatehouse audit`: who called what, with what, and what happened.

use crate::config::HumanDuration;
use crate::store::{AuditFilter, AuditRecord, Store};

/// What to look for.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// How far back (`1h`, `7d`), or `all`.
    pub since: String,
    /// Exactly this subject.
    pub subject: Option<String>,
    /// Exactly this tool, prompt or resource.
    pub tool: Option<String>,
    /// Exactly this outcome.
    pub outcome: Option<String>,
    /// Exactly this virtual server.
    pub server: Option<String>,
    /// Exactly this tenant.
    pub tenant: Option<String>,
    /// At most this many records (newest first).
    pub limit: i64,
}

/// Outcomes a record can have, for validating `--outcome`.
pub const OUTCOMES: [&str; 6] = [
    "ok",
    "error",
    "upstream_failure",
    "timeout",
    "refused",
    "cancelled",
];

/// Runs the query; `json` prints one JSON object per line instead of a table.
pub async fn query(store: &Store, q: &AuditQuery, json: bool) -> Result<String, String> {
    let records = store
        .query_audit(&filter(q)?)
        .await
        .map_err(|e| e.to_string())?;
    if json {
        return Ok(json_lines(&records));
    }
    Ok(table(&records))
}

/// The store's filter for `q`, or what is wrong with it (in the command line's words; the
/// admin API's parameters have the same names).
pub fn filter(q: &AuditQuery) -> Result<AuditFilter, String> {
    let since_ms = match q.since.as_str() {
        "all" => 0,
        s => {
            let d = HumanDuration::parse(s).map_err(|e| format!("--since: {e}, or \"all\""))?;
            crate::audit::now_ms() - d.0.as_millis() as i64
        }
    };
    if let Some(o) = &q.outcome
        && !OUTCOMES.contains(&o.as_str())
    {
        return Err(format!(
            "--outcome {o:?}: expected one of {}",
            OUTCOMES.join(", ")
        ));
    }
    if q.limit < 1 {
        return Err("--limit must be at least 1".into());
    }
    Ok(AuditFilter {
        since_ms,
        subject: q.subject.clone(),
        target: q.tool.clone(),
        outcome: q.outcome.clone(),
        server: q.server.clone(),
        tenant: q.tenant.clone(),
        limit: q.limit,
        ..AuditFilter::default()
    })
}

/// The columns of [`csv`], in order.
const CSV_COLUMNS: [&str; 19] = [
    "time",
    "request_id",
    "server",
    "upstream",
    "method",
    "target",
    "subject",
    "issuer",
    "client_id",
    "decision",
    "rule",
    "outcome",
    "error_code",
    "latency_us",
    "bytes_in",
    "bytes_out",
    "arguments",
    "trace_id",
    "tenant",
];

/// Records as CSV (RFC 4180: a header line, CRLF, fields quoted when needed). A field that a
/// spreadsheet would run as a formula (`=`, `+`, `-`, `@` first) is prefixed with `'`.
pub fn csv(records: &[AuditRecord]) -> String {
    let mut out = CSV_COLUMNS.join(",");
    out.push_str("\r\n");
    for r in records {
        let opt = |v: &Option<String>| v.clone().unwrap_or_default();
        let fields = [
            crate::commands::keys::format_time_ms(r.at_ms),
            r.request_id.clone(),
            r.server.clone(),
            opt(&r.upstream),
            r.method.clone(),
            opt(&r.target),
            opt(&r.subject),
            opt(&r.issuer),
            opt(&r.client_id),
            r.decision.clone(),
            opt(&r.rule),
            r.outcome.clone(),
            r.error_code.map(|c| c.to_string()).unwrap_or_default(),
            r.latency_us.to_string(),
            r.bytes_in.to_string(),
            r.bytes_out.to_string(),
            opt(&r.arguments),
            opt(&r.trace_id),
            opt(&r.tenant),
        ];
        let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    }
    out
}

fn csv_field(f: &str) -> String {
    let f = if f.starts_with(['=', '+', '-', '@', '\t', '\r']) && f.parse::<f64>().is_err() {
        format!("'{f}")
    } else {
        f.to_owned()
    };
    if f.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", f.replace('"', "\"\""))
    } else {
        f
    }
}

/// Records as JSON lines.
pub fn json_lines(records: &[AuditRecord]) -> String {
    let mut out = String::new();
    for r in records {
        out.push_str(&serde_json::to_string(r).expect("records serialize"));
        out.push('\n');
    }
    out
}

fn table(records: &[AuditRecord]) -> String {
    let mut out = format!(
        "{:<23} {:<10} {:<16} {:<14} {:<24} {:<18} {:<26} {:>9}\n",
        "TIME (UTC)", "SERVER", "SUBJECT", "METHOD", "TARGET", "DECISION", "OUTCOME", "LATENCY"
    );
    for r in records {
        let outcome = match r.error_code {
            Some(c) => format!("{} {c}", r.outcome),
            None => r.outcome.clone(),
        };
        let decision = match &r.rule {
            Some(rule) if r.decision == "allow" || r.decision == "deny" => {
                format!("{} ({rule})", r.decision)
            }
            _ => r.decision.clone(),
        };
        out.push_str(&format!(
            "{:<23} {:<10} {:<16} {:<14} {:<24} {:<18} {:<26} {:>7}ms\n",
            crate::commands::keys::format_time_ms(r.at_ms),
            clip(&r.server, 10),
            clip(r.subject.as_deref().unwrap_or("-"), 16),
            clip(&r.method, 14),
            clip(r.target.as_deref().unwrap_or("-"), 24),
            clip(&decision, 18),
            clip(&outcome, 26),
            r.latency_us / 1000,
        ));
    }
    out
}

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut c: String = s.chars().take(n - 1).collect();
        c.push('…');
        c
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn csv_quotes_and_defuses_formulas() {
        assert_eq!(super::csv_field("plain"), "plain");
        assert_eq!(super::csv_field("a,b"), "\"a,b\"");
        assert_eq!(super::csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(super::csv_field("=cmd()"), "'=cmd()");
        assert_eq!(super::csv_field("-32602"), "-32602");
    }
}
