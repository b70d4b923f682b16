//! What a run prints and writes as JSON: the table (direct and through Gatehouse), the same cells
//! through nginx as ratios when nginx ran, the other figures, and the issue-16 budget lines.

use crate::budget;
use crate::load::Stats;
use serde_json::{Value, json};

/// One cell measured through nginx.
pub struct Through {
    pub stats: Stats,
    pub cpu_per_10k: f64,
}

/// One table row: the same workload and concurrency direct, through Gatehouse and (when nginx
/// runs) through nginx, measured one right after the other.
pub struct Row {
    pub name: String,
    pub concurrency: usize,
    pub direct: Stats,
    pub gateway: Stats,
    pub cpu_per_10k: f64,
    pub nginx: Option<Through>,
}

impl Row {
    /// Latency a proxy added at p50, in milliseconds.
    pub fn added_p50(&self, through: &Stats) -> f64 {
        through.pct(50.0) - self.direct.pct(50.0)
    }
}

/// Everything a run measured.
pub struct Report<'a> {
    pub rows: &'a [Row],
    /// Paced at half the direct maximum: (rate, direct, gateway, secured gateway).
    pub half: &'a Option<(f64, Stats, Stats, Stats)>,
    pub fed_direct: &'a Stats,
    pub fed_gateway: &'a Stats,
    pub stdio: &'a Stats,
    pub ready_ms: f64,
    pub sessions: usize,
    pub per_session_kib: f64,
    pub peak_rss_mib: f64,
    /// nginx's version when it ran, or why it did not.
    pub nginx: Result<&'a str, String>,
}

impl Report<'_> {
    pub fn print(&self) {
        let rows = self.rows;
        println!(
            "\nGatehouse benchmark — same workload direct to the fixture upstream and through the gateway"
        );
        println!(
            "{:<43} {:>4} {:>10} {:>10} {:>6} {:>9} {:>9} {:>9} {:>9} {:>10} {:>9} {:>9}",
            "workload",
            "c",
            "direct/s",
            "gw/s",
            "ratio",
            "d p50ms",
            "gw p50ms",
            "+p50 ms",
            "+p99 ms",
            "+p99.9 ms",
            "+ttfb ms",
            "cpu s/10k"
        );
        for r in rows {
            println!(
                "{:<43} {:>4} {:>10.0} {:>10.0} {:>6.2} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>10.3} {:>9.3} {:>9.3}",
                r.name,
                r.concurrency,
                r.direct.rps(),
                r.gateway.rps(),
                r.gateway.rps() / r.direct.rps(),
                r.direct.pct(50.0),
                r.gateway.pct(50.0),
                r.added_p50(&r.gateway),
                r.gateway.pct(99.0) - r.direct.pct(99.0),
                r.gateway.pct(99.9) - r.direct.pct(99.9),
                r.gateway.ttfb(50.0) - r.direct.ttfb(50.0),
                r.cpu_per_10k
            );
        }
        match &self.nginx {
            Ok(version) => self.print_nginx(version),
            Err(why) => println!("\nnginx row skipped: {why}"),
        }
        if let Some((rate, d, g, s)) = self.half {
            println!(
                "\nat half the direct maximum ({rate:.0} req/s, small json, 16 clients): direct p50 {:.3} ms p99 {:.3} ms; gateway p50 {:.3} ms p99 {:.3} ms; added p50 {:.3} ms, added p99 {:.3} ms",
                d.pct(50.0),
                d.pct(99.0),
                g.pct(50.0),
                g.pct(99.0),
                g.pct(50.0) - d.pct(50.0),
                g.pct(99.0) - d.pct(99.0)
            );
            println!(
                "  same with auth+policy+audit: gateway p50 {:.3} ms p99 {:.3} ms; added p50 {:.3} ms, added p99 {:.3} ms",
                s.pct(50.0),
                s.pct(99.0),
                s.pct(50.0) - d.pct(50.0),
                s.pct(99.0) - d.pct(99.0)
            );
        }
        let (fed_g, fed_d, stdio) = (self.fed_gateway, self.fed_direct, self.stdio);
        println!(
            "tools/list, 10 federated upstreams vs one upstream direct: p50 {:.3} ms vs {:.3} ms, p99 {:.3} ms vs {:.3} ms",
            fed_g.pct(50.0),
            fed_d.pct(50.0),
            fed_g.pct(99.0),
            fed_d.pct(99.0)
        );
        println!(
            "stdio upstream through the gateway, one client, small result: p50 {:.3} ms, p99 {:.3} ms, {:.0} req/s",
            stdio.pct(50.0),
            stdio.pct(99.0),
            stdio.rps()
        );
        println!(
            "ready after start: {:.1} ms; idle sessions: {} at {:.1} KiB each; gateway peak RSS {:.1} MiB",
            self.ready_ms, self.sessions, self.per_session_kib, self.peak_rss_mib
        );
    }

    /// The issue-16 budget lines, checked against this run's figures.
    pub fn print_budget(&self) {
        println!("\nissue-16 budget (same run):");
        for line in budget::lines(self.rows, self.fed_direct, self.fed_gateway) {
            println!("  {line}");
        }
    }

    /// The same cells through nginx: Gatehouse's throughput and added p50 as ratios of nginx's.
    fn print_nginx(&self, version: &str) {
        println!(
            "\nThe same cells through {version} (zero-work proxy: one process, upstream keep-alive, same run)"
        );
        println!(
            "{:<43} {:>4} {:>10} {:>7} {:>7} {:>10} {:>9} {:>8} {:>10} {:>9}",
            "workload",
            "c",
            "nginx/s",
            "ngx/d",
            "gw/ngx",
            "ngx+p50ms",
            "gw+p50ms",
            "gw/ngx+",
            "ngx cpu",
            "gw cpu"
        );
        for r in self.rows {
            let Some(n) = &r.nginx else { continue };
            println!(
                "{:<43} {:>4} {:>10.0} {:>7.2} {:>7.2} {:>10.3} {:>9.3} {:>8.2} {:>10.3} {:>9.3}",
                r.name,
                r.concurrency,
                n.stats.rps(),
                n.stats.rps() / r.direct.rps(),
                r.gateway.rps() / n.stats.rps(),
                r.added_p50(&n.stats),
                r.added_p50(&r.gateway),
                r.added_p50(&r.gateway) / r.added_p50(&n.stats),
                n.cpu_per_10k,
                r.cpu_per_10k
            );
        }
        println!(
            "(ngx/d: nginx's throughput over direct; gw/ngx: Gatehouse's over nginx's; gw/ngx+: added p50 through Gatehouse over through nginx; cpu: s/10k requests)"
        );
    }

    pub fn to_json(&self) -> Value {
        let s = |s: &Stats| json!({"rps": s.rps(), "p50_ms": s.pct(50.0), "p90_ms": s.pct(90.0), "p99_ms": s.pct(99.0), "p999_ms": s.pct(99.9), "ttfb_p50_ms": s.ttfb(50.0), "requests": s.requests, "errors": s.errors});
        let row = |r: &Row| {
            let mut v = json!({"workload": r.name, "concurrency": r.concurrency, "direct": s(&r.direct), "gateway": s(&r.gateway), "throughput_ratio": r.gateway.rps() / r.direct.rps(), "gateway_cpu_seconds_per_10k": r.cpu_per_10k});
            if let Some(n) = &r.nginx {
                v["nginx"] = s(&n.stats);
                v["nginx_cpu_seconds_per_10k"] = json!(n.cpu_per_10k);
                v["gateway_over_nginx_throughput"] = json!(r.gateway.rps() / n.stats.rps());
                v["gateway_over_nginx_added_p50"] =
                    json!(r.added_p50(&r.gateway) / r.added_p50(&n.stats));
            }
            v
        };
        json!({
            "rows": self.rows.iter().map(row).collect::<Vec<_>>(),
            "nginx": match &self.nginx { Ok(v) => json!({"version": v}), Err(why) => json!({"skipped": why}) },
            "half_load": self.half.as_ref().map(|(rate, d, g, sec)| json!({"rate": rate, "direct": s(d), "gateway": s(g), "gateway_auth_policy_audit": s(sec)})),
            "federated_tools_list": {"direct_one_upstream": s(self.fed_direct), "gateway_ten_upstreams": s(self.fed_gateway)},
            "stdio": s(self.stdio),
            "ready_ms": self.ready_ms,
            "idle_sessions": {"count": self.sessions, "kib_per_session": self.per_session_kib},
            "peak_rss_mib": self.peak_rss_mib,
            "budget": budget::lines(self.rows, self.fed_direct, self.fed_gateway).iter().map(budget::Line::to_json).collect::<Vec<_>>(),
        })
    }
}
