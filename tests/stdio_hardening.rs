//! stdio children against a real gateway: they get a cleared environment (none of the
//! gateway's secrets), a crashing child is restarted at the configured backoff and not in a
//! tight loop, and an endless stderr line is cut at the documented cap.

mod common;

use common::{Client, Gateway, stdio_fixture_upstream};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Secrets an operator keeps in the gateway's environment, as the docs tell them to.
const SESSION_KEY: (&str, &str) = (
    "GATEHOUSE_TEST_SESSION_KEY",
    "c2VjcmV0LXNlc3Npb24ta2V5LTMyLWJ5dGVzLWxvbmc=",
);
const OTHER_CREDENTIAL: (&str, &str) = ("GATEHOUSE_TEST_OTHER_TOKEN", "other-upstream-s3cret");
const GIVEN: (&str, &str) = ("GATEHOUSE_TEST_GIVEN", "given-to-the-child");

/// The `environment` tool's answer: the child's variables.
async fn child_environment(gw: &Gateway) -> serde_json::Map<String, Value> {
    let mut c = Client::new(&gw.url("/mcp"));
    c.initialize().await;
    let r = c.call_tool("environment", json!({})).await;
    let text = r.text();
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(vars)) => vars,
        _ => panic!("not an environment: {}", r.raw),
    }
}

fn env_config(extra: &str) -> String {
    format!(
        "sessions:\n  keys:\n    - {{ id: k1, secret: {{ env: {} }} }}\nservers:\n  - {{ name: main, path: /mcp, upstreams: [fx] }}\nupstreams:\n{}    env: {{ GIVEN: {{ env: {} }} }}\n{extra}",
        SESSION_KEY.0,
        stdio_fixture_upstream("fx", &["--env-tool"]),
        GIVEN.0,
    )
}

fn gateway_env() -> Vec<(&'static str, &'static str)> {
    vec![
        SESSION_KEY,
        OTHER_CREDENTIAL,
        GIVEN,
        ("GATEHOUSE_TEST_SHARE_REGION", "eu-west"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stdio_child_sees_none_of_the_gateways_secrets() {
    let gw = Gateway::start_with_env(&env_config(""), &gateway_env());
    let vars = child_environment(&gw).await;
    let all = serde_json::to_string(&vars).unwrap();
    for (name, secret) in [SESSION_KEY, OTHER_CREDENTIAL] {
        assert!(!all.contains(secret), "the child can read {name}: {all}");
        assert!(!vars.contains_key(name), "{all}");
    }
    assert!(!vars.contains_key("RUST_LOG"), "{all}");
    assert!(!vars.contains_key("GATEHOUSE_TEST_SHARE_REGION"), "{all}");
    // What it was given, and the default allow-list.
    assert_eq!(vars["GIVEN"], GIVEN.1, "{all}");
    assert_eq!(
        vars.get("PATH").and_then(Value::as_str),
        std::env::var("PATH").ok().as_deref(),
        "{all}"
    );
    let allowed = ["PATH", "HOME", "LANG", "TMPDIR", "GIVEN"];
    let others: Vec<&String> = vars
        .keys()
        .filter(|k| !allowed.contains(&k.as_str()))
        .collect();
    assert!(others.is_empty(), "unexpected variables {others:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inherit_env_chooses_what_the_child_inherits() {
    let gw = Gateway::start_with_env(
        &env_config("    inherit_env: [PATH, \"GATEHOUSE_TEST_SHARE_*\"]\n"),
        &gateway_env(),
    );
    let vars = child_environment(&gw).await;
    let all = serde_json::to_string(&vars).unwrap();
    assert_eq!(vars["GATEHOUSE_TEST_SHARE_REGION"], "eu-west", "{all}");
    assert!(vars.contains_key("PATH"), "{all}");
    assert!(
        !vars.contains_key("HOME"),
        "HOME is no longer inherited: {all}"
    );
    assert!(!all.contains(OTHER_CREDENTIAL.1), "{all}");
}

/// The value of `gatehouse_upstream_restarts_total{upstream="<name>",tenant=""}` (0 when absent).
fn restarts(metrics: &str, upstream: &str) -> u64 {
    let prefix =
        format!("gatehouse_upstream_restarts_total{{upstream=\"{upstream}\",tenant=\"\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.trim().parse::<f64>().unwrap() as u64)
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_looping_child_is_restarted_at_the_configured_pace() {
    let yaml = format!(
        "servers:\n  - {{ name: main, path: /mcp, upstreams: [fx] }}\nupstreams:\n{}    restart: {{ initial_backoff: 200ms, max_backoff: 1s }}\n",
        stdio_fixture_upstream("fx", &["--crash-at-start"])
    );
    let gw = Gateway::start(&yaml);
    let mut c = Client::new(&gw.url("/mcp"));
    c.initialize().await;
    let before = restarts(&gw.metrics().await, "fx");
    // Four clients ask for the tool list as fast as they get answers, for three seconds: every
    // request wants the child, so only the backoff paces the restarts.
    let window = Duration::from_secs(3);
    let started = Instant::now();
    let mut load = Vec::new();
    for _ in 0..4 {
        let mut client = Client::new(&gw.url("/mcp"));
        client.session = c.session.clone();
        load.push(tokio::spawn(async move {
            let mut answered = 0u32;
            while started.elapsed() < window && answered < 2000 {
                let r = client.request("tools/list", json!({})).await;
                assert_eq!(r.status, 200, "{}", r.raw);
                answered += 1;
            }
            answered
        }));
    }
    tokio::time::sleep(window).await;
    let during = restarts(&gw.metrics().await, "fx") - before;
    let mut answered = 0;
    for l in load {
        answered += l.await.unwrap();
    }
    eprintln!("{during} restarts in {window:?}, {answered} requests answered");
    // Backoff 200ms doubling to 1s, jittered down to half: at most ~7 restarts fit in 3 s,
    // and at least 2 even at the longest delays. Without the backoff it was hundreds.
    assert!(
        (2..=8).contains(&during),
        "{during} restarts in {window:?} ({answered} requests answered)"
    );
    let log = gw.proc.stderr();
    assert!(
        log.contains("waiting before restarting the process"),
        "{}",
        &log[log.len().saturating_sub(3000)..]
    );
}

/// The peak resident memory of a process, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_stderr_line_is_cut_at_the_cap_and_memory_stays_flat() {
    const FLOOD: usize = 256 * 1024 * 1024;
    let yaml = format!(
        "servers:\n  - {{ name: main, path: /mcp, upstreams: [fx] }}\nupstreams:\n{}",
        stdio_fixture_upstream("fx", &["--stderr-line-bytes", &FLOOD.to_string()])
    );
    let gw = Gateway::start(&yaml);
    let mut c = Client::new(&gw.url("/mcp"));
    c.initialize().await;
    // The child keeps serving while it writes.
    let r = c.call_tool("echo", json!({"text": "still here"})).await;
    assert_eq!(r.text(), "still here", "{}", r.raw);
    let deadline = Instant::now() + Duration::from_secs(60);
    let log = loop {
        let log = gw.proc.stderr();
        if log.contains("fixture: stderr flood done") {
            break log;
        }
        assert!(Instant::now() < deadline, "the flood did not end");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let cut = log
        .lines()
        .find(|l| l.contains("line longer than 4096 bytes, the rest is dropped"))
        .expect("the log says the line was cut");
    let kept = cut.bytes().filter(|&b| b == b'x').count();
    assert!((4096..4096 + 200).contains(&kept), "{kept} bytes kept");
    assert!(log.len() < 1024 * 1024, "the log holds {} bytes", log.len());
    let peak = peak_rss(gw.proc.child.id());
    eprintln!("gateway peak RSS {} MiB", peak >> 20);
    assert!(
        peak < (FLOOD / 4) as u64,
        "the gateway's memory peaked at {} MiB while the child wrote one {} MiB line",
        peak >> 20,
        FLOOD >> 20
    );
}
