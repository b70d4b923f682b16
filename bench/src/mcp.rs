//! The MCP requests the bench sends: `tools/call` bodies, opening sessions, and the request
//! shape ([`Target`]) of a cell for either protocol generation.

use crate::load::{self, Target};
use serde_json::json;
use std::sync::Arc;

pub fn call_body(bytes: u64, stateless: bool) -> Vec<u8> {
    call_body_named("big", bytes, stateless)
}

pub fn call_body_named(tool: &str, bytes: u64, stateless: bool) -> Vec<u8> {
    let mut params = json!({"name": tool, "arguments": {"bytes": bytes}});
    if stateless {
        params["_meta"] = json!({
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {}
        });
    }
    serde_json::to_vec(
        &json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}),
    )
    .unwrap()
}

/// Opens a 2025-11-25 session and returns its id.
pub async fn initialize(client: &reqwest::Client, url: &str) -> String {
    initialize_with(client, url, &[]).await
}

/// Initializes against a server that may or may not use sessions; returns its session id.
pub async fn initialize_optional(
    client: &reqwest::Client,
    url: &str,
    extra: &[(&str, &str)],
) -> Option<String> {
    let body = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}});
    let resp = client
        .post(url)
        .headers(load::headers(extra))
        .body(body.to_string())
        .send()
        .await
        .ok()?;
    assert!(
        resp.status().is_success(),
        "initialize at {url}: HTTP {}",
        resp.status()
    );
    let sid = resp
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let _ = resp.bytes().await;
    sid
}

/// Opens a session sending `extra` headers (e.g. `authorization`) too.
pub async fn initialize_with(
    client: &reqwest::Client,
    url: &str,
    extra: &[(&str, &str)],
) -> String {
    let sid = initialize_optional(client, url, extra)
        .await
        .expect("initialize: no session id");
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let mut pairs = vec![
        ("mcp-session-id", sid.as_str()),
        ("mcp-protocol-version", "2025-11-25"),
    ];
    pairs.extend_from_slice(extra);
    let h = load::headers(&pairs);
    let _ = client
        .post(url)
        .headers(h)
        .body(note.to_string())
        .send()
        .await;
    sid
}

pub async fn target(client: &reqwest::Client, url: &str, bytes: u64, stateless: bool) -> Target {
    let headers = if stateless {
        load::headers(&[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "big"),
        ])
    } else {
        let sid = initialize(client, url).await;
        load::headers(&[
            ("mcp-session-id", &sid),
            ("mcp-protocol-version", "2025-11-25"),
        ])
    };
    Target {
        url: url.to_owned(),
        headers,
        body: Arc::new(call_body(bytes, stateless)),
    }
}
