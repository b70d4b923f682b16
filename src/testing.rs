//! Test support shared by unit tests: an in-process scripted MCP upstream on loopback, and
//! the 2026-07-28 schema the gateway's results must validate against. A whole gateway over
//! in-memory scripted upstreams is in [`in_process`].

pub mod in_process;

use serde_json::Value;
use std::sync::Arc;

/// The subset of the 2026-07-28 schema kept under `tests/schema/` (its `$comment` names the
/// source revision).
pub const SCHEMA_2026_07_28: &str = include_str!("../tests/schema/mcp-2026-07-28.json");

/// The schema's violations by `instance` of definition `def` (empty when valid).
pub fn schema_errors(def: &str, instance: &Value) -> Vec<String> {
    let schema: Value = serde_json::from_str(SCHEMA_2026_07_28).expect("the schema is JSON");
    let root = serde_json::json!({
        "$schema": schema["$schema"],
        "$defs": schema["$defs"],
        "$ref": format!("#/$defs/{def}"),
    });
    let validator = jsonschema::validator_for(&root).expect("the schema compiles");
    validator
        .iter_errors(instance)
        .map(|e| format!("{def}{}: {e}", e.instance_path()))
        .collect()
}

/// How the scripted upstream answers one request: an HTTP status and a JSON body.
pub type Script = Arc<dyn Fn(&str, &Value) -> (u16, Value) + Send + Sync>;

/// Serves `script` over Streamable HTTP (JSON answers) on a free loopback port; the URL of
/// its endpoint. The server lives as long as the test's runtime.
pub async fn scripted_upstream(script: Script) -> String {
    use axum::response::IntoResponse;
    let app = axum::Router::new().route(
        "/mcp",
        axum::routing::post(move |body: axum::body::Bytes| {
            let script = script.clone();
            async move {
                let msg: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let method = msg["method"].as_str().unwrap_or("").to_owned();
                if msg.get("id").is_none() {
                    return http::StatusCode::ACCEPTED.into_response();
                }
                let (status, mut answer) = script(&method, &msg);
                if answer.get("id").is_some_and(Value::is_null) {
                    answer["id"] = msg["id"].clone();
                }
                let mut resp = (
                    http::StatusCode::from_u16(status).expect("a status"),
                    answer.to_string(),
                )
                    .into_response();
                resp.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/json"),
                );
                resp
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/mcp")
}

/// A JSON-RPC result answering the scripted request (its id is filled in).
pub fn result(result: Value) -> (u16, Value) {
    (
        200,
        serde_json::json!({ "jsonrpc": "2.0", "id": null, "result": result }),
    )
}

/// A `server/discover` result of a 2026-07-28 upstream.
pub fn discover() -> (u16, Value) {
    result(serde_json::json!({
        "resultType": "complete",
        "supportedVersions": ["2026-07-28"],
        "capabilities": { "tools": {}, "resources": {}, "prompts": {} },
        "_meta": { "io.modelcontextprotocol/serverInfo": { "name": "scripted", "version": "1" } },
        "ttlMs": 60000,
        "cacheScope": "public"
    }))
}

/// A client, configured as by default (`protocol: auto`), of the upstream at `url`.
pub fn stateless_client(name: &str, url: &str) -> Arc<crate::upstream::UpstreamClient> {
    let cfg: crate::config::Upstream = serde_json::from_value(serde_json::json!({
        "kind": "http", "url": url
    }))
    .expect("an upstream entry");
    let limits: crate::config::Limits =
        serde_json::from_value(serde_json::json!({})).expect("default limits");
    Arc::new(crate::upstream::UpstreamClient::new(name, &cfg, &limits, None).expect("a client"))
}

/// A virtual server `main` at /mcp over scripted upstreams (name, script), in that order.
pub async fn virtual_server(members: Vec<(&str, Script)>) -> crate::federation::VirtualServer {
    let mut clients = std::collections::HashMap::new();
    let mut upstreams = std::collections::BTreeMap::new();
    for (name, script) in &members {
        let url = scripted_upstream(script.clone()).await;
        clients.insert(name.to_string(), stateless_client(name, &url));
        upstreams.insert(
            name.to_string(),
            serde_json::from_value(serde_json::json!({ "kind": "http", "url": url }))
                .expect("an upstream entry"),
        );
    }
    let names: Vec<&str> = members.iter().map(|(n, _)| *n).collect();
    let cfg: crate::config::VirtualServer = serde_json::from_value(
        serde_json::json!({ "name": "main", "path": "/mcp", "upstreams": names }),
    )
    .expect("a server entry");
    crate::federation::VirtualServer::new(&cfg, &upstreams, &clients, None)
}
