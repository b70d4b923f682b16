//! Faults: crashing, vanishing, silent upstreams and clients that go away. Each gives the client
//! a clear JSON-RPC error (never a hang) and the gateway keeps serving.

mod common;

use common::{Client, Fixture, Gateway, http_fixture_config, stdio_fixture_upstream};
use serde_json::json;
use std::time::{Duration, Instant};

fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
            }
        }
    }
    out
}

fn stdio_config(request_timeout: &str) -> String {
    format!(
        "servers:\n  - {{ name: main, path: /mcp, upstreams: [fx] }}\nupstreams:\n{}    timeouts: {{ request: {request_timeout} }}\n    restart: {{ initial_backoff: 100ms, max_backoff: 1s }}\n",
        stdio_fixture_upstream("fx", &[])
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_stdio_upstream_fails_the_call_and_is_restarted() {
    let gw = Gateway::start(&stdio_config("30s"));
    let mut client = Client::new(&gw.url("/mcp"));
    client.initialize().await;
    let mut caller = Client::new(&gw.url("/mcp"));
    caller.session = client.session.clone();
    let started = Instant::now();
    let call = tokio::spawn(async move { caller.call_tool("slow", json!({"ms": 20000})).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let kids = children_of(gw.proc.child.id());
    assert_eq!(kids.len(), 1, "expected one upstream child, found {kids:?}");
    unsafe { libc::kill(kids[0] as i32, libc::SIGKILL) };

    let r = call.await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the client waited {:?}",
        started.elapsed()
    );
    assert_eq!(r.error_code(), Some(-32000), "{}", r.raw);
    assert!(
        r.error_message().contains("\"fx\"") && r.error_message().contains("exited"),
        "{}",
        r.raw
    );

    // The next call starts a fresh process.
    let r = client.call_tool("echo", json!({"text": "again"})).await;
    assert_eq!(r.text(), "again", "{}", r.raw);
    let now = children_of(gw.proc.child.id());
    assert_eq!(now.len(), 1);
    assert_ne!(now[0], kids[0]);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_that_crashes_itself_mid_call_gives_a_clear_error() {
    let gw = Gateway::start(&stdio_config("30s"));
    let mut client = Client::new(&gw.url("/mcp"));
    client.initialize().await;
    let r = client.call_tool("crash", json!({})).await;
    assert_eq!(r.error_code(), Some(-32000), "{}", r.raw);
    let r = client.call_tool("echo", json!({"text": "alive"})).await;
    assert_eq!(r.text(), "alive");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_upstream_times_out() {
    let gw = Gateway::start(&stdio_config("1s"));
    let mut client = Client::new(&gw.url("/mcp"));
    client.initialize().await;
    let started = Instant::now();
    let r = client.call_tool("hang", json!({})).await;
    let took = started.elapsed();
    assert_eq!(r.error_code(), Some(-32001), "{}", r.raw);
    assert!(r.raw.contains("within 1000ms"), "{}", r.raw);
    // The upstream is named (it once read `upstream ""`, its name lost with the cancellation).
    assert!(r.error_message().contains(r#"upstream "fx""#), "{}", r.raw);
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
    let r = client
        .call_tool("echo", json!({"text": "still here"}))
        .await;
    assert_eq!(r.text(), "still here");
    // The audit record carries the code the client was answered with.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .args([
                "audit", "--since", "all", "--json", "--tool", "hang", "--config",
            ])
            .arg(&gw.config_path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        if let Some(line) = text.lines().next() {
            let record: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(record["outcome"], "timeout", "{record}");
            assert_eq!(record["error_code"], -32001, "{record}");
            assert_eq!(record["upstream"], "fx", "{record}");
            break;
        }
        assert!(Instant::now() < deadline, "no audit record of the timeout");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_http_upstream_fails_fast_and_lists_go_partial() {
    let mut down = Fixture::http(&["--name", "down"]);
    let up = Fixture::http(&["--name", "up"]);
    let yaml = format!(
        "servers:\n  - {{ name: main, path: /mcp, upstreams: [down, up] }}\nupstreams:\n  down: {{ kind: http, url: \"{}\" }}\n  up: {{ kind: http, url: \"{}\" }}\n",
        down.url, up.url
    );
    let gw = Gateway::start(&yaml);
    let mut client = Client::new(&gw.url("/mcp"));
    client.initialize().await;
    assert_eq!(
        client
            .call_tool("down__echo", json!({"text": "x"}))
            .await
            .text(),
        "x"
    );

    down.proc.child.kill().unwrap();
    down.proc.child.wait().unwrap();
    let started = Instant::now();
    let r = client.call_tool("down__echo", json!({"text": "x"})).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(r.error_code(), Some(-32000), "{}", r.raw);
    assert!(
        r.error_message().contains("\"down\"") && r.error_message().contains("unavailable"),
        "{}",
        r.raw
    );

    let names = client.tool_names().await;
    assert!(names.iter().any(|n| n == "up__echo"), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("down__")), "{names:?}");
    assert!(gw.proc.stderr().contains("partial"), "no warning logged");
}

#[tokio::test(flavor = "multi_thread")]
async fn fail_closed_lists_fail_when_an_upstream_is_down() {
    let up = Fixture::http(&[]);
    let yaml = format!(
        "servers:\n  - {{ name: main, path: /mcp, upstreams: [gone, up], on_upstream_error: fail }}\nupstreams:\n  gone: {{ kind: http, url: \"http://127.0.0.1:9/mcp\" }}\n  up: {{ kind: http, url: \"{}\" }}\n",
        up.url
    );
    let gw = Gateway::start(&yaml);
    let mut client = Client::new(&gw.url("/mcp"));
    client.initialize().await;
    let r = client.request("tools/list", json!({})).await;
    assert_eq!(r.error_code(), Some(-32000), "{}", r.raw);
    assert!(r.error_message().contains("\"gone\""), "{}", r.raw);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_disconnects_cancels_the_upstream_call() {
    let fx = Fixture::http(&[]);
    let yaml = http_fixture_config(&fx.url, "auto");
    let gw = Gateway::start(&yaml);
    let mut client = Client::new(&gw.url("/mcp"));
    client.initialize().await;
    let sid = client.session.clone().unwrap();
    let quick = reqwest::Client::builder()
        .timeout(Duration::from_millis(700))
        .build()
        .unwrap();
    let r = quick
        .post(gw.url("/mcp"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", &sid)
        .header("mcp-protocol-version", "2025-11-25")
        .body(r#"{"jsonrpc":"2.0","id":77,"method":"tools/call","params":{"name":"hang","arguments":{}}}"#)
        .send()
        .await;
    assert!(
        r.is_err() || r.unwrap().text().await.is_err(),
        "the call should not have completed"
    );

    // The upstream is told: the fixture counts cancellations it received.
    let mut seen = 0;
    for _ in 0..30 {
        let r = client.call_tool("stats", json!({})).await;
        let stats: serde_json::Value = serde_json::from_str(&r.text()).unwrap();
        seen = stats["cancelled"].as_u64().unwrap_or(0);
        if seen > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        seen, 1,
        "the upstream never received notifications/cancelled"
    );
    assert_eq!(
        client.call_tool("echo", json!({"text": "ok"})).await.text(),
        "ok"
    );
}
