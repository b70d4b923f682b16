//! `gatehouse-bench`: the same MCP workload direct to a fast upstream and through Gatehouse,
//! measured in one run, printed as a table of absolute figures and ratios (and JSON).
//!
//!     cargo build --release --workspace && target/release/gatehouse-bench
//!     target/release/gatehouse-bench --smoke      # seconds, for CI: checks it runs and prints
//!
//! When nginx is installed every cell is also measured through it (see `nginx`), so that
//! Gatehouse is read as a ratio of a zero-work proxy's figures from the same run.

mod budget;
mod guard_micro;
mod load;
mod mcp;
mod nginx;
mod procs;
mod profile;
mod report;
mod secured;

/// Where the quota(redis) row counts: the machine's Redis.
const REDIS: &str = "127.0.0.1:6379";

use clap::Parser;
use load::{Stats, Target};
use mcp::{call_body, call_body_named, initialize, initialize_optional, initialize_with, target};
use nginx::Nginx;
use procs::{Proc, sibling};
use report::{Report, Row, Through};
use serde_json::json;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(name = "gatehouse-bench")]
struct Args {
    /// A short run that checks the benchmark works (used by CI).
    #[arg(long)]
    smoke: bool,
    /// Seconds per measured cell.
    #[arg(long, default_value_t = 4.0)]
    seconds: f64,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Idle sessions to open for the memory figure.
    #[arg(long, default_value_t = 10_000)]
    idle_sessions: usize,
    /// The gateway binary (default: next to this one).
    #[arg(long)]
    gateway: Option<PathBuf>,
    /// The fixture binary (default: next to this one).
    #[arg(long)]
    fixture: Option<PathBuf>,
    /// Only table rows whose workload name contains this (e.g. `auth` while profiling).
    #[arg(long)]
    only: Option<String>,
    /// Another gateway's MCP endpoint serving the same fixture (see bench/contextforge.sh):
    /// adds rows for it, same workload, same direct baseline.
    #[arg(long)]
    compare_url: Option<String>,
    /// Bearer token for `--compare-url`.
    #[arg(long, env = "COMPARE_TOKEN")]
    compare_token: Option<String>,
    /// The fixture's `big` tool as the other gateway names it.
    #[arg(long, default_value = "big")]
    compare_tool: String,
    /// A label for the other gateway's rows.
    #[arg(long, default_value = "other gateway")]
    compare_name: String,
    /// The nginx binary for the zero-work-proxy columns (default: found on PATH or in /usr/sbin).
    #[arg(long)]
    nginx: Option<PathBuf>,
    /// Skip the nginx columns even when nginx is installed.
    #[arg(long)]
    no_nginx: bool,
    /// Drive only this row through one gateway, for a profiler (see `profile`): plain,
    /// stateless, sse, large, secured or fed.
    #[arg(long)]
    profile: Option<String>,
    /// Clients for `--profile`.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// For `--profile`: send exactly this many requests instead of running for `--seconds`.
    #[arg(long)]
    requests: Option<u64>,
    /// Run only the in-process micro-benchmarks (a policy decision, the output guardrails'
    /// scanner) and print them; no processes are started.
    #[arg(long)]
    micro: bool,
}

fn print_guardrails(figures: &[(&str, f64, f64)]) {
    for (body, whole, pieces) in figures {
        println!(
            "output guardrails (in process, default rules): 1 MiB {body}: {whole:.0} MB/s whole, {pieces:.0} MB/s in 16 KiB pieces"
        );
    }
}

const SMALL: u64 = 100;
const LARGE: u64 = 1 << 20;

fn gateway_config(
    fixture_json: &str,
    fixture_sse: &str,
    fed: &[String],
    fixture_bin: &str,
) -> String {
    // The plain configuration: no authentication, policy or audit. The bench opens its
    // idle sessions (10,000) and every cell's from one address, past the default cap of 64,
    // and a cell's clients (up to 64) share one session, past the default 16 streams.
    let mut y = String::from(
        "listen: 127.0.0.1:0\nops: { listen: 127.0.0.1:0 }\nwatch_config: false\nlog: { level: warn }\naudit: { enabled: false }\nlimits: { sessions_per_address: 1000000, streams_per_session: 256 }\nservers:\n",
    );
    y.push_str("  - { name: json, path: /json, upstreams: [fxj] }\n");
    y.push_str("  - { name: sse, path: /sse, upstreams: [fxs] }\n");
    y.push_str("  - { name: stdio, path: /stdio, upstreams: [fxstdio] }\n");
    let names: Vec<String> = (0..fed.len()).map(|i| format!("f{i}")).collect();
    y.push_str(&format!(
        "  - {{ name: fed, path: /fed, upstreams: [{}], prefix: always }}\n",
        names.join(", ")
    ));
    y.push_str("upstreams:\n");
    y.push_str(&format!(
        "  fxj: {{ kind: http, url: \"{fixture_json}\", protocol: \"2025-11-25\" }}\n"
    ));
    y.push_str(&format!(
        "  fxs: {{ kind: http, url: \"{fixture_sse}\", protocol: \"2025-11-25\" }}\n"
    ));
    y.push_str(&format!(
        "  fxstdio: {{ kind: stdio, command: \"{fixture_bin}\", args: [stdio] }}\n"
    ));
    for (i, url) in fed.iter().enumerate() {
        y.push_str(&format!(
            "  f{i}: {{ kind: http, url: \"{url}\", protocol: \"2025-11-25\" }}\n"
        ));
    }
    y
}

/// One cell through nginx, when it runs: the same target shape against its `path`.
async fn through_nginx(
    client: &reqwest::Client,
    nginx: Option<&Nginx>,
    path: &str,
    bytes: u64,
    stateless: bool,
    concurrency: usize,
    cell: Duration,
) -> Option<Through> {
    let n = nginx?;
    let t = target(client, &format!("{}{path}", n.base), bytes, stateless).await;
    let cpu0 = n.cpu_seconds();
    let stats = load::run(client, &t, concurrency, cell).await;
    let cpu = n.cpu_seconds() - cpu0;
    Some(Through {
        cpu_per_10k: cpu / stats.requests.max(1) as f64 * 10_000.0,
        stats,
    })
}

/// The workload of one cell as nginx is given it: its path there, result size and generation.
struct Workload<'a> {
    nginx_path: &'a str,
    bytes: u64,
    stateless: bool,
}

/// One row: `c` clients direct (`d`), through nginx, then through the gateway process `gw`
/// (`g`, its CPU counted), one right after the other.
#[allow(clippy::too_many_arguments)]
async fn measure(
    name: String,
    client: &reqwest::Client,
    ngx: Option<&Nginx>,
    gw: &Proc,
    (d, g): (&Target, &Target),
    w: Workload<'_>,
    c: usize,
    cell: Duration,
) -> Row {
    let direct = load::run(client, d, c, cell).await;
    let nginx = through_nginx(client, ngx, w.nginx_path, w.bytes, w.stateless, c, cell).await;
    let cpu0 = gw.cpu_seconds();
    let gateway = load::run(client, g, c, cell).await;
    let cpu = gw.cpu_seconds() - cpu0;
    Row {
        name,
        concurrency: c,
        cpu_per_10k: cpu / gateway.requests.max(1) as f64 * 10_000.0,
        direct,
        gateway,
        nginx,
    }
}

#[tokio::main]
async fn main() {
    // Returning rather than exiting from `run` drops (kills) every child process first.
    if !run(Args::parse()).await {
        std::process::exit(1);
    }
}

/// The whole run; false when a cell failed.
async fn run(args: Args) -> bool {
    let seconds = if args.smoke { 0.5 } else { args.seconds };
    let cell = Duration::from_secs_f64(seconds);
    let fixture_bin = sibling("gatehouse-fixture", args.fixture.as_deref());
    let gateway_bin = sibling("gatehouse", args.gateway.as_deref());
    if args.micro {
        let (simple, cel) = secured::policy_micro(if args.smoke { 10_000 } else { 1_000_000 });
        println!(
            "policy decision (in process): {simple:.0} ns with declarative rules, {cel:.0} ns when a CEL rule decides"
        );
        print_guardrails(&guard_micro::run(if args.smoke { 1 } else { 10 }));
        return true;
    }
    if let Some(row) = &args.profile {
        return profile::run(profile::Profile {
            row,
            clients: args.clients,
            seconds,
            requests: args.requests,
            gateway_bin: &gateway_bin,
            fixture_bin: &fixture_bin,
        })
        .await;
    }
    let fixtures = procs::Fixtures::start(&fixture_bin);
    let (fx_json, fx_sse) = (&fixtures.json, &fixtures.sse);
    let fed_urls = fixtures.fed_urls();

    let dir = std::env::temp_dir().join(format!("gatehouse-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("bench.yaml");
    std::fs::write(
        &config,
        gateway_config(
            &fx_json.ready_line,
            &fx_sse.ready_line,
            &fed_urls,
            &fixture_bin.display().to_string(),
        ),
    )
    .unwrap();
    let nginx = if args.no_nginx {
        Err("--no-nginx".to_owned())
    } else {
        let routes = [
            nginx::Route {
                path: "/json",
                upstream: &fx_json.ready_line,
            },
            nginx::Route {
                path: "/sse",
                upstream: &fx_sse.ready_line,
            },
        ];
        Nginx::start(args.nginx.as_deref(), &dir, &routes).map_err(|e| e.to_string())
    };
    let ngx = nginx.as_ref().ok();
    let mut cmd = Command::new(&gateway_bin);
    cmd.arg("serve").arg("--config").arg(&config);
    let t0 = Instant::now();
    let gw = Proc::start(cmd, "gatehouse listening on ");
    let base = gw.ready_line.clone();
    let ops_base = gw.ops_base();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .tcp_nodelay(true)
        .build()
        .unwrap();
    procs::wait_ready(&client, &ops_base, Duration::from_secs(30)).await;
    let ready_ms = t0.elapsed().as_secs_f64() * 1000.0;

    // The secured configuration in its own process (audit is process-wide).
    let issuer = secured::start_issuer().await;
    let secure_config = dir.join("secure.yaml");
    std::fs::write(
        &secure_config,
        secured::config(&issuer, &fx_json.ready_line, None),
    )
    .unwrap();
    let mut cmd = Command::new(&gateway_bin);
    cmd.arg("serve").arg("--config").arg(&secure_config);
    cmd.env(secured::IDP_SECRET_ENV, "bench-secret");
    let secure_gw = Proc::start(cmd, "gatehouse listening on ");
    // The same with the quota counters in the machine's Redis, when one answers there.
    let redis_gw = match std::net::TcpStream::connect_timeout(
        &REDIS.parse().unwrap(),
        Duration::from_millis(300),
    ) {
        Ok(_) => {
            let redis_dir = dir.join("redis");
            std::fs::create_dir_all(&redis_dir).unwrap();
            let redis_config = redis_dir.join("secure.yaml");
            std::fs::write(
                &redis_config,
                secured::config(
                    &issuer,
                    &fx_json.ready_line,
                    Some(&format!("redis://{REDIS}")),
                ),
            )
            .unwrap();
            let mut cmd = Command::new(&gateway_bin);
            cmd.arg("serve").arg("--config").arg(&redis_config);
            cmd.env(secured::IDP_SECRET_ENV, "bench-secret");
            let p = Proc::start(cmd, "gatehouse listening on ");
            procs::wait_ready(&client, &p.ops_base(), Duration::from_secs(30)).await;
            Some(p)
        }
        Err(e) => {
            println!("no Redis at {REDIS} ({e}): the quota(redis) row is left out");
            None
        }
    };
    let secure_url = format!("{}/secure", secure_gw.ready_line);
    procs::wait_ready(&client, &secure_gw.ops_base(), Duration::from_secs(30)).await;
    let bearer = format!("Bearer {}", secured::token(&issuer, &secure_url));
    // For `perf record -p` while a run is under way.
    println!(
        "pids: gateway {}, secured gateway {}{}",
        gw.pid(),
        secure_gw.pid(),
        ngx.map_or(String::new(), |n| format!(", nginx {}", n.pid()))
    );
    let secured_target_at = |url: &String, bearer: &String, bytes: u64| {
        let (client, url, bearer) = (client.clone(), url.clone(), bearer.clone());
        async move {
            let sid = initialize_with(&client, &url, &[("authorization", &bearer)]).await;
            Target {
                url,
                headers: load::headers(&[
                    ("mcp-session-id", &sid),
                    ("mcp-protocol-version", "2025-11-25"),
                    ("authorization", &bearer),
                ]),
                body: Arc::new(call_body(bytes, false)),
            }
        }
    };
    let secured_target = || secured_target_at(&secure_url, &bearer, SMALL);

    let concurrencies: &[usize] = if args.smoke { &[16] } else { &[1, 16, 64] };
    let mut rows = Vec::new();
    let mut cases = vec![("small", SMALL), ("large", LARGE)];
    if args.smoke {
        cases.truncate(1);
    }
    for (size_name, bytes) in &cases {
        for (mode, direct_url, path) in [
            ("json", &fx_json.ready_line, "/json"),
            ("sse", &fx_sse.ready_line, "/sse"),
        ] {
            for (proto, stateless) in [("2025-11-25", false), ("2026-07-28", true)] {
                let name = format!("{size_name} {mode} {proto}");
                if args
                    .only
                    .as_ref()
                    .is_some_and(|o| !name.contains(o.as_str()))
                {
                    continue;
                }
                for &c in concurrencies {
                    if *bytes == LARGE && c == 64 {
                        continue; // 64 × 1 MiB in flight measures the loopback, not the gateway
                    }
                    let d = target(&client, direct_url, *bytes, stateless).await;
                    let g = target(&client, &format!("{base}{path}"), *bytes, stateless).await;
                    let w = Workload {
                        nginx_path: path,
                        bytes: *bytes,
                        stateless,
                    };
                    rows.push(measure(name.clone(), &client, ngx, &gw, (&d, &g), w, c, cell).await);
                }
            }
        }
    }

    // Authentication (ES256 JWT) + policy + audit, small JSON results; the same with a
    // token_exchange upstream credential (served from the gateway's cache after the first
    // exchange; the bench IdP counts exchanges); and with quotas counted, in this process and
    // in Redis. The zero-work proxy has nothing to authenticate: plain nginx to the same fixture.
    let on_secure = |path: &str| {
        let url = format!("{}{path}", secure_gw.ready_line);
        let bearer = format!("Bearer {}", secured::token(&issuer, &url));
        (&secure_gw, url, bearer)
    };
    let secured_cases = [
        Some(("small json auth+policy+audit", on_secure("/secure"))),
        Some((
            "small json auth+policy+audit+guardrails",
            on_secure("/guarded"),
        )),
        Some(("large json auth+policy+audit", on_secure("/secure"))),
        Some((
            "large json auth+policy+audit+guardrails",
            on_secure("/guarded"),
        )),
        Some((
            "small json auth+policy+audit+token_exchange",
            on_secure("/exchange"),
        )),
        Some(("small json auth+policy+audit+quota", on_secure("/quota"))),
        redis_gw.as_ref().map(|p| {
            let url = format!("{}/quota", p.ready_line);
            let bearer = format!("Bearer {}", secured::token(&issuer, &url));
            (
                "small json auth+policy+audit+quota(redis)",
                (p, url, bearer),
            )
        }),
    ];
    for (name, (gw_proc, url, bearer)) in secured_cases.into_iter().flatten() {
        if args
            .only
            .as_ref()
            .is_some_and(|o| !name.contains(o.as_str()))
        {
            continue;
        }
        let bytes = if name.starts_with("large") {
            LARGE
        } else {
            SMALL
        };
        if bytes == LARGE && args.smoke {
            continue;
        }
        for &c in concurrencies {
            if bytes == LARGE && c == 64 {
                continue; // as above: the loopback, not the gateway
            }
            let d = target(&client, &fx_json.ready_line, bytes, false).await;
            let g = secured_target_at(&url, &bearer, bytes).await;
            let w = Workload {
                nginx_path: "/json",
                bytes,
                stateless: false,
            };
            rows.push(measure(name.into(), &client, ngx, gw_proc, (&d, &g), w, c, cell).await);
        }
    }
    let exchanges = secured::EXCHANGES.load(std::sync::atomic::Ordering::Relaxed);

    // The same small-JSON workload through another gateway, when one is given.
    if let Some(url) = &args.compare_url {
        let bearer = args.compare_token.as_ref().map(|t| format!("Bearer {t}"));
        let mut pairs = vec![("mcp-protocol-version", "2025-11-25")];
        if let Some(b) = &bearer {
            pairs.push(("authorization", b.as_str()));
        }
        let sid = initialize_optional(&client, url, &pairs).await;
        if let Some(s) = &sid {
            pairs.push(("mcp-session-id", s.as_str()));
        }
        let other = Target {
            url: url.clone(),
            headers: load::headers(&pairs),
            body: Arc::new(call_body_named(&args.compare_tool, SMALL, false)),
        };
        for &c in concurrencies {
            let d = target(&client, &fx_json.ready_line, SMALL, false).await;
            let direct = load::run(&client, &d, c, cell).await;
            let gateway = load::run(&client, &other, c, cell).await;
            rows.push(Row {
                name: format!("small json via {}", args.compare_name),
                concurrency: c,
                cpu_per_10k: f64::NAN,
                direct,
                gateway,
                nginx: None,
            });
        }
    }

    // Latency at half of the direct maximum load (small JSON, 16 clients).
    let half = if let Some(max) = rows
        .iter()
        .find(|r| r.name == "small json 2025-11-25" && r.concurrency == 16)
    {
        let rate = max.direct.rps() / 2.0;
        let d = target(&client, &fx_json.ready_line, SMALL, false).await;
        let g = target(&client, &format!("{base}/json"), SMALL, false).await;
        let direct = load::run_paced(&client, &d, 16, cell, rate).await;
        let gateway = load::run_paced(&client, &g, 16, cell, rate).await;
        let s = secured_target().await;
        let secure = load::run_paced(&client, &s, 16, cell, rate).await;
        Some((rate, direct, gateway, secure))
    } else {
        None
    };

    // tools/list over a virtual server federating 10 upstreams, one client.
    let list = |url: String, sid: String| Target {
        url,
        headers: load::headers(&[
            ("mcp-session-id", &sid),
            ("mcp-protocol-version", "2025-11-25"),
        ]),
        body: Arc::new(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#.to_vec()),
    };
    let fed_direct = {
        let sid = initialize(&client, &fed_urls[0]).await;
        load::run(&client, &list(fed_urls[0].clone(), sid), 1, cell).await
    };
    let fed_gw = {
        let url = format!("{base}/fed");
        let sid = initialize(&client, &url).await;
        load::run(&client, &list(url, sid), 1, cell).await
    };

    // stdio upstream: one client, small result.
    let stdio = {
        let t = target(&client, &format!("{base}/stdio"), SMALL, false).await;
        load::run(&client, &t, 1, cell).await
    };

    // Idle sessions: RSS growth per open session.
    let idle = if args.smoke { 200 } else { args.idle_sessions };
    let rss_before = gw.status_kib("VmRSS");
    let url = format!("{base}/json");
    let mut opened = 0;
    let mut batch = Vec::new();
    for _ in 0..idle {
        let (client, url) = (client.clone(), url.clone());
        batch.push(tokio::spawn(async move { initialize(&client, &url).await }));
        if batch.len() == 64 {
            for b in batch.drain(..) {
                if b.await.is_ok() {
                    opened += 1;
                }
            }
        }
    }
    for b in batch {
        if b.await.is_ok() {
            opened += 1;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_after = gw.status_kib("VmRSS");
    let per_session_kib = (rss_after.saturating_sub(rss_before)) as f64 / opened.max(1) as f64;
    let peak_rss_mib = gw.status_kib("VmHWM") as f64 / 1024.0;

    // Memory under large results: a fresh gateway per size (its peak RSS untouched by the cells
    // above), many clients pulling SSE results of 1 and then 4 MiB. A relay that held results
    // whole would grow with clients × size; a streaming one with clients × its buffers only.
    let large_clients = if args.smoke { 4 } else { 32 };
    let mut large_memory = Vec::new();
    if args.only.as_ref().is_none_or(|o| o.contains("large")) {
        for mib in [1u64, 4] {
            let mut cmd = Command::new(&gateway_bin);
            cmd.arg("serve").arg("--config").arg(&config);
            let fresh = Proc::start(cmd, "gatehouse listening on ");
            let url = format!("{}/sse", fresh.ready_line);
            let t = target(&client, &url, mib * LARGE, false).await;
            load::run(&client, &t, 1, Duration::from_millis(200)).await;
            let before = fresh.status_kib("VmRSS");
            let stats = load::run(&client, &t, large_clients, cell).await;
            let growth_mib = fresh.status_kib("VmHWM").saturating_sub(before) as f64 / 1024.0;
            large_memory.push(json!({"result_mib": mib, "clients": large_clients,
                "answered": stats.requests, "peak_rss_growth_mib": growth_mib}));
        }
    }

    let (policy_simple_ns, policy_cel_ns) =
        secured::policy_micro(if args.smoke { 10_000 } else { 1_000_000 });
    let guardrail_mbps = guard_micro::run(if args.smoke { 1 } else { 10 });
    let report = Report {
        rows: &rows,
        half: &half,
        fed_direct: &fed_direct,
        fed_gateway: &fed_gw,
        stdio: &stdio,
        ready_ms,
        sessions: opened,
        per_session_kib,
        peak_rss_mib,
        nginx: nginx
            .as_ref()
            .map(|n| n.version.as_str())
            .map_err(Clone::clone),
    };
    report.print();
    println!(
        "policy decision (in process): {policy_simple_ns:.0} ns with declarative rules, {policy_cel_ns:.0} ns when a CEL rule decides"
    );
    print_guardrails(&guardrail_mbps);
    if rows.iter().any(|r| r.name.ends_with("+token_exchange")) {
        println!(
            "token_exchange rows: the IdP answered {exchanges} exchange(s) for one user over all their requests"
        );
    }
    for m in &large_memory {
        println!(
            "large results in flight: {} clients pulling {} MiB SSE results ({} answered) grew the gateway's peak RSS by {:.1} MiB",
            m["clients"],
            m["result_mib"],
            m["answered"],
            m["peak_rss_growth_mib"].as_f64().unwrap_or(0.0)
        );
    }
    report.print_budget();
    if let Some(path) = &args.json {
        let mut v = report.to_json();
        v["policy_decision_ns"] = json!({"declarative": policy_simple_ns, "cel": policy_cel_ns});
        v["guardrail_mb_per_s"] = guardrail_mbps
            .iter()
            .map(|(b, w, p)| (b.to_string(), json!({"whole": w, "pieces_16k": p})))
            .collect::<serde_json::Map<_, _>>()
            .into();
        v["large_results_in_flight"] = json!(large_memory);
        v["token_exchanges"] = json!(exchanges);
        std::fs::write(path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
        println!("\nJSON written to {}", path.display());
    }
    let _ = std::fs::remove_dir_all(&dir);
    // Another gateway's failures are results to report, not a broken benchmark.
    let (other, ours): (Vec<&Row>, Vec<&Row>) = rows
        .iter()
        .partition(|r| r.name.starts_with("small json via "));
    for r in &other {
        if r.gateway.errors > 0 {
            println!(
                "{} at {} clients: {} failed requests by HTTP status (0 = no response): {:?}",
                r.name, r.concurrency, r.gateway.errors, r.gateway.error_statuses
            );
        }
    }
    // A failing nginx cell is a broken configuration here, not a result.
    fn through(r: &Row) -> Option<&Stats> {
        r.nginx.as_ref().map(|n| &n.stats)
    }
    let errors: u64 = ours
        .iter()
        .map(|r| r.direct.errors + r.gateway.errors + through(r).map_or(0, |n| n.errors))
        .sum();
    let empty = ours
        .iter()
        .any(|r| r.gateway.requests == 0 || through(r).is_some_and(|n| n.requests == 0));
    if empty || errors > 0 {
        eprintln!("gatehouse-bench: {errors} errors, or a cell completed no request");
        return false;
    }
    true
}
