//! Federation: prefixed names and URIs, pagination across upstreams, notifications outside
//! requests, name collisions, version bridging, and a shared stdio child serving many clients.

mod common;

use common::{Client, Fixture, Gateway, http_fixture_config, parse_body, stdio_fixture_upstream};
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::time::Duration;

fn two_http(a: &Fixture, b: &Fixture, extra: &str) -> String {
    format!(
        "servers:\n  - {{ name: main, path: /mcp, upstreams: [a, b]{extra} }}\nupstreams:\n  a: {{ kind: http, url: \"{}\", protocol: \"2025-11-25\" }}\n  b: {{ kind: http, url: \"{}\", protocol: \"2025-11-25\" }}\n",
        a.url, b.url
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn resources_paginate_across_upstreams_and_read_back_by_prefixed_uri() {
    let (a, b) = (Fixture::http(&[]), Fixture::http(&[]));
    let gw = Gateway::start(&two_http(&a, &b, ""));
    let mut client = Client::new(&gw.url("/mcp"));
    client.initialize().await;

    let mut uris = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let params = match &cursor {
            Some(c) => json!({"cursor": c}),
            None => json!({}),
        };
        let r = client.request("resources/list", params).await;
        let result = &r.last()["result"];
        pages += 1;
        uris.extend(
            result["resources"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["uri"].as_str().unwrap().to_owned()),
        );
        match result.get("nextCursor").and_then(Value::as_str) {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
        assert!(pages < 5, "pagination does not end");
    }
    assert_eq!(pages, 2, "each upstream has two pages, fetched in parallel");
    for prefix in ["a+", "b+"] {
        let mine: Vec<_> = uris.iter().filter(|u| u.starts_with(prefix)).collect();
        assert_eq!(mine.len(), 8, "{prefix}: {mine:?}");
        assert!(
            mine.iter().any(|u| u.ends_with("fixture://doc/4")),
            "second page missing: {mine:?}"
        );
    }
    let r = client
        .request("resources/read", json!({"uri": "b+fixture://doc/4"}))
        .await;
    assert_eq!(
        r.last()["result"]["contents"][0]["text"],
        "content of fixture://doc/4",
        "{}",
        r.raw
    );
    let r = client
        .request("resources/read", json!({"uri": "b+test://template/7/data"}))
        .await;
    assert!(r.raw.contains("Data for ID: 7"), "{}", r.raw);
    let names = client.tool_names().await;
    assert!(
        names.contains(&"a__echo".to_owned()) && names.contains(&"b__echo".to_owned()),
        "{names:?}"
    );
    let r = client
        .request(
            "prompts/get",
            json!({"name": "b__greet", "arguments": {"name": "Ada"}}),
        )
        .await;
    assert!(r.raw.contains("Hello, Ada!"), "{}", r.raw);
}

#[tokio::test(flavor = "multi_thread")]
async fn list_changed_from_an_upstream_reaches_the_clients_get_stream() {
    let (a, b) = (Fixture::http(&[]), Fixture::http(&[]));
    let gw = Gateway::start(&two_http(&a, &b, ""));
    let mut client = Client::new(&gw.url("/mcp"));
    client.initialize().await;
    let get = client
        .http
        .get(gw.url("/mcp"))
        .header("accept", "text/event-stream")
        .header("mcp-session-id", client.session.clone().unwrap())
        .header("mcp-protocol-version", "2025-11-25")
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 200);
    assert!(
        get.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut body = get.bytes_stream();
    // Give the gateway a moment to open the upstream GET streams.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        client.call_tool("b__change_list", json!({})).await.text(),
        "announced"
    );
    let mut seen = String::new();
    let found = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(chunk) = body.next().await {
            seen.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            if seen.contains("notifications/tools/list_changed") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(
        found,
        Ok(true),
        "no list_changed on the GET stream: {seen:?}"
    );
    let messages = parse_body("text/event-stream", &seen);
    assert!(
        messages
            .iter()
            .any(|m| m["method"] == "notifications/tools/list_changed")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn never_prefixing_keeps_the_first_upstreams_tool_on_collision() {
    let a = Fixture::http(&["--tool-description-suffix", " (from A)"]);
    let b = Fixture::http(&["--tool-description-suffix", " (from B)"]);
    let gw = Gateway::start(&two_http(&a, &b, ", prefix: never"));
    let mut client = Client::new(&gw.url("/mcp"));
    client.initialize().await;
    let r = client.request("tools/list", json!({})).await;
    let tools = r.last()["result"]["tools"].as_array().unwrap().clone();
    let echoes: Vec<_> = tools.iter().filter(|t| t["name"] == "echo").collect();
    assert_eq!(echoes.len(), 1, "a name must appear once");
    assert!(
        echoes[0]["description"]
            .as_str()
            .unwrap()
            .ends_with("(from A)")
    );
    assert_eq!(
        client
            .call_tool("echo", json!({"text": "unprefixed"}))
            .await
            .text(),
        "unprefixed"
    );
    assert!(
        gw.proc
            .stderr()
            .contains("two upstreams offer the same name"),
        "collision not logged"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_client_is_bridged_to_a_stateless_upstream() {
    let fx = Fixture::http(&[]);
    let yaml = http_fixture_config(&fx.url, "2026-07-28");
    let gw = Gateway::start(&yaml);
    let mut client = Client::new(&gw.url("/mcp"));
    client.initialize().await;
    let r = client.call_tool("whoami", json!({})).await;
    let seen: Value = serde_json::from_str(&r.text()).unwrap();
    assert_eq!(seen["mcp-protocol-version"], "2026-07-28", "{seen}");
    assert_eq!(seen["mcp-method"], "tools/call");
    assert_eq!(seen["mcp-name"], "whoami");
    assert!(
        seen.get("mcp-session-id").is_none(),
        "a stateless upstream gets no session: {seen}"
    );
    assert_eq!(
        client
            .call_tool("echo", json!({"text": "bridged"}))
            .await
            .text(),
        "bridged"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn one_stdio_child_keeps_concurrent_clients_progress_apart() {
    let yaml = format!(
        "servers:\n  - {{ name: main, path: /mcp, upstreams: [fx] }}\nupstreams:\n{}",
        stdio_fixture_upstream("fx", &[])
    );
    let gw = Gateway::start(&yaml);
    let mut calls = Vec::new();
    for n in 0..2 {
        let mut client = Client::new(&gw.url("/mcp"));
        client.initialize().await;
        calls.push(tokio::spawn(async move {
            let r = client
                .request(
                    "tools/call",
                    json!({"name": "progress", "arguments": {"steps": 3 + n, "delay_ms": 30}, "_meta": {"progressToken": "same-token"}}),
                )
                .await;
            (n, r)
        }));
    }
    for call in calls {
        let (n, r) = call.await.unwrap();
        let progress: Vec<_> = r
            .messages
            .iter()
            .filter(|m| m["method"] == "notifications/progress")
            .collect();
        assert_eq!(
            progress.len() as i64,
            3 + n,
            "client {n} got someone else's progress: {}",
            r.raw
        );
        assert!(
            progress
                .iter()
                .all(|p| p["params"]["progressToken"] == "same-token"
                    && p["params"]["total"] == 3 + n)
        );
        assert_eq!(r.text(), format!("{} steps done", 3 + n));
    }
}
