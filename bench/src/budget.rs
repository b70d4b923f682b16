//! The issue-16 budget checked against one run's own figures: each line names its limit, the
//! measured figure (with nginx's where the budget is about what a zero-work proxy does) and
//! whether it is met. A budget defined against nginx is "not measured" when nginx did not run.

use crate::load::Stats;
use crate::report::Row;
use serde_json::{Value, json};
use std::fmt;

const PLAIN: &str = "small json 2025-11-25";
const SECURED: &str = "small json auth+policy+audit";

/// One budget line.
pub struct Line {
    what: &'static str,
    limit: f64,
    /// The limit is a floor (throughput) rather than a ceiling (latency, CPU).
    at_least: bool,
    unit: &'static str,
    measured: Option<f64>,
    /// Which cell the figure comes from, and nginx's own figure when it is relevant.
    note: String,
}

impl Line {
    fn met(&self) -> Option<bool> {
        let m = self.measured.filter(|m| m.is_finite())?;
        Some(if self.at_least {
            m >= self.limit
        } else {
            m <= self.limit
        })
    }

    pub fn to_json(&self) -> Value {
        json!({"budget": self.what, "limit": self.limit, "at_least": self.at_least, "unit": self.unit,
            "measured": self.measured, "met": self.met(), "note": self.note})
    }
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = if self.at_least { ">=" } else { "<=" };
        write!(f, "{} {op} {}{}: ", self.what, self.limit, self.unit)?;
        match (self.measured, self.met()) {
            (Some(m), Some(met)) => write!(
                f,
                "{m:.2}{} — {}",
                self.unit,
                if met { "met" } else { "missed" }
            )?,
            _ => write!(f, "not measured in this run")?,
        }
        if !self.note.is_empty() {
            write!(f, " ({})", self.note)?;
        }
        Ok(())
    }
}

fn cell<'a>(rows: &'a [Row], name: &str, c: usize) -> Option<&'a Row> {
    rows.iter().find(|r| r.name == name && r.concurrency == c)
}

/// The budget lines for this run's rows and federated `tools/list` figures.
pub fn lines(rows: &[Row], fed_direct: &Stats, fed_gateway: &Stats) -> Vec<Line> {
    let mut out = Vec::new();
    for (name, label, limit) in [
        (PLAIN, "plain, 16 clients: throughput / nginx's", 0.9),
        (SECURED, "secured, 16 clients: throughput / nginx's", 0.75),
    ] {
        let r = cell(rows, name, 16);
        let n = r.and_then(|r| r.nginx.as_ref());
        out.push(Line {
            what: label,
            limit,
            at_least: true,
            unit: "x",
            measured: r.zip(n).map(|(r, n)| r.gateway.rps() / n.stats.rps()),
            note: r.zip(n).map_or(String::new(), |(r, n)| {
                format!(
                    "{:.0} vs {:.0} req/s; nginx keeps {:.2}x of direct",
                    r.gateway.rps(),
                    n.stats.rps(),
                    n.stats.rps() / r.direct.rps()
                )
            }),
        });
    }
    for (name, label) in [
        (PLAIN, "plain, 1 client: added p50"),
        (SECURED, "secured, 1 client: added p50"),
    ] {
        let r = cell(rows, name, 1);
        out.push(Line {
            what: label,
            limit: 100.0,
            at_least: false,
            unit: " us",
            measured: r.map(|r| r.added_p50(&r.gateway) * 1000.0),
            note: nginx_note(r, |r, n| {
                format!("{:.0} us", r.added_p50(&n.stats) * 1000.0)
            }),
        });
    }
    for (name, label, limit) in [
        (PLAIN, "plain, 16 clients: gateway CPU per request", 35.0),
        (
            SECURED,
            "secured, 16 clients: gateway CPU per request",
            50.0,
        ),
    ] {
        let r = cell(rows, name, 16);
        // cpu s/10k × 100 = µs per request.
        out.push(Line {
            what: label,
            limit,
            at_least: false,
            unit: " us",
            measured: r.map(|r| r.cpu_per_10k * 100.0),
            note: nginx_note(r, |_, n| format!("{:.1} us", n.cpu_per_10k * 100.0)),
        });
    }
    let fed = fed_gateway.pct(50.0) / fed_direct.pct(50.0);
    out.push(Line {
        what: "tools/list, 10 federated upstreams: p50 / one upstream's direct p50",
        limit: 3.0,
        at_least: false,
        unit: "x",
        measured: Some(fed),
        note: format!(
            "{:.3} vs {:.3} ms",
            fed_gateway.pct(50.0),
            fed_direct.pct(50.0)
        ),
    });
    // Every 1 MiB row at one client counts; the line reports the worst.
    let worst = rows
        .iter()
        .filter(|r| r.name.starts_with("large ") && r.concurrency == 1)
        .min_by(|a, b| ratio(a).total_cmp(&ratio(b)));
    out.push(Line {
        what: "1 MiB results, 1 client: throughput / direct (worst row)",
        limit: 0.8,
        at_least: true,
        unit: "x",
        measured: worst.map(ratio),
        note: worst.map_or(String::new(), |r| r.name.clone()),
    });
    out
}

fn ratio(r: &Row) -> f64 {
    r.gateway.rps() / r.direct.rps()
}

fn nginx_note(r: Option<&Row>, f: impl Fn(&Row, &crate::report::Through) -> String) -> String {
    r.and_then(|r| r.nginx.as_ref().map(|n| format!("nginx: {}", f(r, n))))
        .unwrap_or_default()
}
