//! Operational signals of the real binary: the access log line of each request (client through
//! a trusted proxy, status, path without query, subject, escaped user agent, trace id) read from
//! its stderr, and the build, reload and in-flight metrics scraped from `/metrics`.

mod auth_support;
mod common;

use common::{Client, Gateway, stdio_fixture_upstream};
use serde_json::json;
use std::time::Duration;

fn config(extra: &str) -> String {
    format!(
        "{extra}servers:\n  - {{ name: main, path: /mcp, upstreams: [fx] }}\nupstreams:\n{}",
        stdio_fixture_upstream("fx", &[])
    )
}

fn access_lines(gw: &Gateway) -> Vec<String> {
    gw.proc
        .stderr()
        .lines()
        .filter(|l| l.contains("gatehouse::access"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn each_request_gets_an_access_line_with_the_forwarded_client_and_trace_id() {
    let issuer = auth_support::TestIssuer::start().await;
    let audit_dir = tempfile::tempdir().unwrap();
    let jsonl = audit_dir.path().join("audit.jsonl");
    let yaml = format!(
        "log: {{ format: json, access: {{ trusted_proxies: [127.0.0.0/8] }} }}\n\
         audit: {{ jsonl: {:?}, flush_interval: 100ms }}\n\
         auth:\n  issuers:\n    test: {{ issuer: \"{}\" }}\n{}",
        jsonl.display().to_string(),
        issuer.issuer(),
        config("").replace(
            "upstreams: [fx] }",
            "upstreams: [fx], auth: { issuers: [test] } }"
        )
    );
    let gw = Gateway::start(&yaml);
    let token = issuer.token(&gw.url("/mcp"), json!({"sub": "alice"}));
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let r = reqwest::Client::new()
        .post(gw.url("/mcp?secret=dont-log-me"))
        .bearer_auth(&token)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .header("x-forwarded-for", "203.0.113.50, 127.0.0.1")
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .header("user-agent", "agent/1.0\tbell")
        .body(json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Without a token: 401, no subject.
    let r = reqwest::get(gw.url("/mcp")).await.unwrap();
    assert_eq!(r.status(), 401);

    let mut lines = Vec::new();
    for _ in 0..50 {
        lines = access_lines(&gw);
        if lines.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(lines.len(), 2, "{}", gw.proc.stderr());
    let first: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(first["client"], "203.0.113.50", "{first}");
    assert_eq!(first["method"], "POST");
    assert_eq!(first["path"], "/mcp");
    assert_eq!(first["status"], 200);
    assert_eq!(first["subject"], "alice");
    assert_eq!(first["trace_id"], trace);
    assert_eq!(first["user_agent"], "agent/1.0\\tbell");
    assert!(first["latency_ms"].as_f64().unwrap() >= 0.0);
    assert!(!lines[0].contains("dont-log-me"));
    let second: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(second["status"], 401);
    assert_eq!(second["subject"], "-");
    assert_eq!(second["client"], "127.0.0.1");
    let fresh = second["trace_id"].as_str().unwrap();
    assert!(fresh.len() == 32 && fresh != trace, "{second}");
    // Other lines of a request carry its trace id too (the auth refusal's info line).
    assert!(
        gw.proc
            .stderr()
            .lines()
            .any(|l| l.contains("not authenticated") && l.contains(fresh)),
        "{}",
        gw.proc.stderr()
    );
    // Not a terminal: no colour codes.
    assert!(!gw.proc.stderr().contains('\u{1b}'));

    // The audit records of both requests carry their trace ids.
    let mut records: Vec<serde_json::Value> = Vec::new();
    for _ in 0..50 {
        records = std::fs::read_to_string(&jsonl)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if records.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let traced = |id: &str| records.iter().any(|r| r["trace_id"] == id);
    assert!(traced(trace), "{records:?}");
    assert!(traced(fresh), "{records:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn text_access_lines_have_no_colours_and_an_untrusted_peer_cannot_forge_its_address() {
    let gw = Gateway::start(&config(""));
    let mut client = Client::new(&gw.url("/mcp"));
    client
        .always
        .push(("x-forwarded-for".into(), "198.51.100.1".into()));
    client.initialize().await;
    let mut lines = Vec::new();
    for _ in 0..50 {
        lines = access_lines(&gw);
        if !lines.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let line = lines.first().expect("an access line");
    assert!(line.contains("client=127.0.0.1"), "{line}");
    assert!(line.contains("status=200"), "{line}");
    assert!(!line.contains("198.51.100.1"), "{line}");
    assert!(!gw.proc.stderr().contains('\u{1b}'));
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_report_the_build_reloads_and_requests_in_flight() {
    let gw = Gateway::start(&config(""));
    let version = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .arg("--version")
        .output()
        .unwrap();
    let version = String::from_utf8(version.stdout).unwrap();
    let commit = version
        .split("(commit ")
        .nth(1)
        .and_then(|r| r.strip_suffix(")\n"))
        .unwrap_or_else(|| panic!("{version}"));
    assert!(!commit.is_empty());
    let text = gw.metrics().await;
    assert!(
        text.contains(&format!(
            "gatehouse_build_info{{version=\"{}\",commit=\"{commit}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    // The scrape itself is the one request in flight on the ops listener.
    assert!(
        text.contains("gatehouse_http_requests_in_flight{listener=\"ops\"} 1"),
        "{text}"
    );

    let yaml = std::fs::read_to_string(&gw.config_path).unwrap();
    std::fs::write(&gw.config_path, format!("{yaml}\n# touched\n")).unwrap();
    let mut ok = false;
    for _ in 0..50 {
        if gw
            .metrics()
            .await
            .contains("gatehouse_config_reloads_total{outcome=\"success\"} 1")
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "the reload was not counted");
    std::fs::write(&gw.config_path, "servers: []\nupstreams: {}\n").unwrap();
    let mut failed = false;
    for _ in 0..50 {
        if gw
            .metrics()
            .await
            .contains("gatehouse_config_reloads_total{outcome=\"failure\"} 1")
        {
            failed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(failed, "the refused reload was not counted");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_applies_log_level_and_names_the_settings_that_need_a_restart() {
    // An empty RUST_LOG defers to `log.level`.
    let gw = Gateway::start_with_env(&config("log: { level: warn }\n"), &[("RUST_LOG", "")]);
    let mut client = Client::new(&gw.url("/mcp"));
    client.initialize().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(access_lines(&gw).is_empty(), "{}", gw.proc.stderr());

    let yaml = std::fs::read_to_string(&gw.config_path).unwrap();
    let yaml = yaml
        .replace("log: { level: warn }", "log: { level: info, format: json }")
        .replace("watch_config: true\n", "")
        + "watch_config: true\n";
    std::fs::write(&gw.config_path, yaml).unwrap();
    let mut seen = false;
    for _ in 0..50 {
        client.tool_names().await;
        if !access_lines(&gw).is_empty() {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen, "log.level was not applied: {}", gw.proc.stderr());
    let stderr = gw.proc.stderr();
    let warn = stderr
        .lines()
        .find(|l| l.contains("take effect only after a restart"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(warn.contains("log.format"), "{warn}");
    assert!(!warn.contains("watch_config"), "{warn}");
}
