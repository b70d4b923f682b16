//! Hot reload: a new configuration takes effect without dropping in-flight requests, and a bad
//! one is refused while the old one keeps serving.

mod common;

use common::{Client, Gateway, stdio_fixture_upstream};
use serde_json::json;
use std::time::Duration;

fn config(extra_server: bool, watch: bool) -> String {
    let mut yaml = format!(
        "watch_config: {watch}\nservers:\n  - {{ name: main, path: /mcp, upstreams: [fx] }}\n"
    );
    if extra_server {
        yaml.push_str("  - { name: second, path: /second, upstreams: [fx] }\n");
    }
    yaml.push_str("upstreams:\n");
    yaml.push_str(&stdio_fixture_upstream("fx", &[]));
    yaml
}

async fn wait_for(mut check: impl AsyncFnMut() -> bool) -> bool {
    for _ in 0..50 {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

async fn endpoint_exists(url: &str) -> bool {
    let c = Client::new(url);
    let r = c
        .post(&json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}))
        .await;
    r.status == 200
}

#[tokio::test(flavor = "multi_thread")]
async fn file_changes_apply_without_dropping_in_flight_calls() {
    let gw = Gateway::start(&config(false, true));
    let mut client = Client::new(&gw.url("/mcp"));
    client.initialize().await;
    assert!(!endpoint_exists(&gw.url("/second")).await);

    let mut slow = Client::new(&gw.url("/mcp"));
    slow.session = client.session.clone();
    let in_flight = tokio::spawn(async move { slow.call_tool("slow", json!({"ms": 2500})).await });
    tokio::time::sleep(Duration::from_millis(300)).await;

    std::fs::write(&gw.config_path, config(true, true)).unwrap();
    let second = gw.url("/second");
    assert!(
        wait_for(async || endpoint_exists(&second).await).await,
        "the new server never appeared"
    );

    let r = in_flight.await.unwrap();
    assert!(
        r.last().get("result").is_some(),
        "the in-flight call was dropped: {}",
        r.raw
    );
    // The session started before the reload keeps working.
    assert!(client.tool_names().await.contains(&"echo".to_owned()));

    // A broken file is refused; the running configuration stays.
    std::fs::write(
        &gw.config_path,
        "servers: [ {name: x, path: nope, upstreams: [missing]} ]\nupstreams: {}\n",
    )
    .unwrap();
    let stderr_has = |needle: &'static str| {
        let path = gw.proc.stderr_path.clone();
        async move {
            std::fs::read_to_string(&path)
                .unwrap_or_default()
                .contains(needle)
        }
    };
    assert!(
        wait_for(async || stderr_has("NOT reloaded").await).await,
        "no refusal logged:\n{}",
        gw.proc.stderr()
    );
    assert!(
        gw.proc.stderr().contains("unknown upstream \"missing\""),
        "{}",
        gw.proc.stderr()
    );
    assert!(endpoint_exists(&gw.url("/second")).await);
    assert!(client.tool_names().await.contains(&"echo".to_owned()));
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads() {
    let gw = Gateway::start(&config(false, false));
    std::fs::write(&gw.config_path, config(true, false)).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !endpoint_exists(&gw.url("/second")).await,
        "watching was disabled; only SIGHUP may reload"
    );
    gw.proc.signal(libc::SIGHUP);
    let second = gw.url("/second");
    assert!(
        wait_for(async || endpoint_exists(&second).await).await,
        "SIGHUP did not reload"
    );
}
