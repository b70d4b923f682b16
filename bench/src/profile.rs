//! `--profile ROW`: one workload through one gateway and nothing else, so that a profiler
//! sees only the path being measured. Starts the fixture(s) and the one gateway the row
//! needs, warms up, then drives the row with `--clients` closed-loop clients for `--seconds`
//! (or exactly `--requests` requests), and prints requests/s and gateway CPU per request.
//!
//! Two hooks let a profiler attach to exactly the driven part (both run with `sh -c`, with
//! the gateway's pid in `$GW_PID`): `GATEHOUSE_BENCH_BEFORE` runs after the warm-up,
//! `GATEHOUSE_BENCH_AFTER` once the drive is over. `GATEHOUSE_BENCH_WRAP` prefixes the
//! gateway's command line (e.g. `valgrind --tool=callgrind`), for instruction counts that
//! do not depend on what else the machine runs:
//!
//!     GATEHOUSE_BENCH_WRAP="valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out" \
//!     GATEHOUSE_BENCH_BEFORE='callgrind_control -z $GW_PID' \
//!     GATEHOUSE_BENCH_AFTER='callgrind_control -d $GW_PID' \
//!     target/release/gatehouse-bench --profile plain --clients 4 --requests 2000

use crate::load::{self, Target};
use crate::mcp::{call_body, initialize, initialize_with, target};
use crate::procs::{Fixtures, Proc, wait_ready};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a gateway started under valgrind may take to become ready.
const VALGRIND_START: Duration = Duration::from_secs(300);

/// The rows `--profile` knows.
pub const ROWS: &str = "plain, stateless, sse, large, secured, fed";

/// What to drive and for how long.
pub struct Profile<'a> {
    pub row: &'a str,
    pub clients: usize,
    pub seconds: f64,
    pub requests: Option<u64>,
    pub gateway_bin: &'a Path,
    pub fixture_bin: &'a Path,
}

fn gateway(bin: &Path, config: &Path, env: &[(&str, &str)]) -> Proc {
    let wrap = std::env::var("GATEHOUSE_BENCH_WRAP").unwrap_or_default();
    let mut words = wrap.split_whitespace();
    let mut cmd = match words.next() {
        Some(first) => {
            let mut c = Command::new(first);
            c.args(words).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    cmd.arg("serve").arg("--config").arg(config);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Proc::start(cmd, "gatehouse listening on ")
}

fn hook(var: &str, pid: u32) {
    let Ok(script) = std::env::var(var) else {
        return;
    };
    let status = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .env("GW_PID", pid.to_string())
        .status();
    if !status.is_ok_and(|s| s.success()) {
        eprintln!("{var} failed: {script}");
    }
}

/// Sends exactly `total` requests from `clients` closed-loop clients.
async fn run_count(client: &reqwest::Client, t: &Target, clients: usize, total: u64) -> u64 {
    let left = Arc::new(AtomicU64::new(total));
    let mut workers = Vec::new();
    for _ in 0..clients {
        let (client, t, left) = (client.clone(), t.clone(), left.clone());
        workers.push(tokio::spawn(async move {
            let mut ok = 0u64;
            while left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                let sent = client
                    .post(&t.url)
                    .headers(t.headers.clone())
                    .body(t.body.as_ref().clone())
                    .send()
                    .await;
                if let Ok(resp) = sent
                    && resp.status().is_success()
                    && resp.bytes().await.is_ok_and(|b| !b.is_empty())
                {
                    ok += 1;
                }
            }
            ok
        }));
    }
    let mut ok = 0;
    for w in workers {
        ok += w.await.expect("worker");
    }
    ok
}

/// Runs the profile; false when the row is unknown or requests failed.
pub async fn run(p: Profile<'_>) -> bool {
    // The plain configuration always has its federating server (idle unless profiled).
    let fixtures = Fixtures::start(p.fixture_bin);
    let (fx_json, fx_sse) = (&fixtures.json, &fixtures.sse);
    let fed_urls = fixtures.fed_urls();
    let dir = std::env::temp_dir().join(format!("gatehouse-profile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .tcp_nodelay(true)
        .build()
        .unwrap();
    let (gw, t) = if p.row == "secured" {
        let issuer = crate::secured::start_issuer().await;
        let config = dir.join("secure.yaml");
        std::fs::write(
            &config,
            crate::secured::config(&issuer, &fx_json.ready_line, None),
        )
        .unwrap();
        // The audit database is relative to the working directory.
        std::env::set_current_dir(&dir).unwrap();
        let gw = gateway(
            p.gateway_bin,
            &config,
            &[(crate::secured::IDP_SECRET_ENV, "bench-secret")],
        );
        // Generous: under valgrind the gateway starts some fifty times slower.
        wait_ready(&client, &gw.ops_base(), VALGRIND_START).await;
        let url = format!("{}/secure", gw.ready_line);
        let bearer = format!("Bearer {}", crate::secured::token(&issuer, &url));
        let sid = initialize_with(&client, &url, &[("authorization", &bearer)]).await;
        let t = Target {
            url,
            headers: load::headers(&[
                ("mcp-session-id", &sid),
                ("mcp-protocol-version", "2025-11-25"),
                ("authorization", &bearer),
            ]),
            body: Arc::new(call_body(crate::SMALL, false)),
        };
        (gw, t)
    } else {
        let config = dir.join("bench.yaml");
        let yaml = crate::gateway_config(
            &fx_json.ready_line,
            &fx_sse.ready_line,
            &fed_urls,
            &p.fixture_bin.display().to_string(),
        );
        std::fs::write(&config, yaml).unwrap();
        let gw = gateway(p.gateway_bin, &config, &[]);
        // Generous: under valgrind the gateway starts some fifty times slower.
        wait_ready(&client, &gw.ops_base(), VALGRIND_START).await;
        let base = gw.ready_line.clone();
        let t = match p.row {
            "plain" => target(&client, &format!("{base}/json"), crate::SMALL, false).await,
            "stateless" => target(&client, &format!("{base}/json"), crate::SMALL, true).await,
            "sse" => target(&client, &format!("{base}/sse"), crate::SMALL, false).await,
            "large" => target(&client, &format!("{base}/json"), crate::LARGE, false).await,
            "fed" => {
                let url = format!("{base}/fed");
                let sid = initialize(&client, &url).await;
                Target {
                    url,
                    headers: load::headers(&[
                        ("mcp-session-id", &sid),
                        ("mcp-protocol-version", "2025-11-25"),
                    ]),
                    body: Arc::new(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#.to_vec()),
                }
            }
            other => {
                eprintln!("unknown --profile row {other:?}; one of: {ROWS}");
                return false;
            }
        };
        (gw, t)
    };
    // Warm up: sessions opened, pools filled, routes and labels learned.
    run_count(&client, &t, p.clients, 200).await;
    println!("profile {}: driving gateway pid {}", p.row, gw.pid());
    hook("GATEHOUSE_BENCH_BEFORE", gw.pid());
    let cpu0 = gw.cpu_seconds();
    let started = Instant::now();
    let (done, failed) = match p.requests {
        Some(n) => {
            let ok = run_count(&client, &t, p.clients, n).await;
            (ok, n - ok)
        }
        None => {
            let s = load::run(&client, &t, p.clients, Duration::from_secs_f64(p.seconds)).await;
            (s.requests, s.errors)
        }
    };
    let secs = started.elapsed().as_secs_f64();
    let cpu = gw.cpu_seconds() - cpu0;
    hook("GATEHOUSE_BENCH_AFTER", gw.pid());
    println!(
        "profile {}: {} clients, {done} requests ({failed} failed) in {secs:.2} s: {:.0} req/s, gateway CPU {:.1} us/request",
        p.row,
        p.clients,
        done as f64 / secs,
        cpu / done.max(1) as f64 * 1e6
    );
    drop(gw);
    let _ = std::fs::remove_dir_all(&dir);
    failed == 0
}
