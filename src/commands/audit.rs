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
    let filter = AuditFilter {
        since_ms,
        subject: q.subject.clone(),
        target: q.tool.clone(),
        outcome: q.outcome.clone(),
        server: q.server.clone(),
        limit: q.limit,
    };
    let records = store
        .query_audit(&filter)
        .await
        .map_err(|e| e.to_string())?;
    if json {
        let mut out = String::new();
        for r in &records {
            out.push_str(&serde_json::to_string(r).map_err(|e| e.to_string())?);
            out.push('\n');
        }
        return Ok(out);
    }
    Ok(table(&records))
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
