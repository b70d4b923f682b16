//! Mirrored `Mcp-Param-*` headers (SEP-2243) on the stateless path, in-process: a first
//! `tools/call` and the retry that resumes a parked one are held to the same check.

use super::pipeline_tests::ONE_UPSTREAM;
use crate::testing::in_process::{TestGateway, json_body};
use crate::upstream::scripted::{Reply, ScriptedUpstream};
use serde_json::{Value, json};

/// A `tools/call` of `deploy` by a 2026-07-28 client, with `Mcp-Param-Region: header` and
/// `extra` params (the retry's state and answers).
async fn call(gw: &TestGateway, id: i64, region: &str, header: &str, extra: Value) -> (u16, Value) {
    let mut params = json!({
        "name": "deploy",
        "arguments": { "region": region },
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": { "elicitation": { "form": {} } },
        },
    });
    if let (Value::Object(p), Value::Object(e)) = (&mut params, extra) {
        p.extend(e);
    }
    let headers = [
        ("mcp-protocol-version", "2026-07-28".to_owned()),
        ("mcp-method", "tools/call".to_owned()),
        ("mcp-name", "deploy".to_owned()),
        ("mcp-param-region", header.to_owned()),
    ];
    let msg = json!({ "jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params });
    let resp = gw.post("/mcp", &headers, &msg).await;
    let status = resp.status().as_u16();
    (status, json_body(resp).await)
}

#[tokio::test]
async fn a_retry_whose_mirrored_header_disagrees_with_its_arguments_is_refused() {
    let a = ScriptedUpstream::sessions("a");
    a.on(
        "tools/list",
        Reply::result(json!({ "tools": [{ "name": "deploy", "inputSchema": {
            "type": "object",
            "properties": { "region": { "type": "string", "x-mcp-header": "Region" } }
        } }] })),
    );
    let ask = json!({ "mode": "form", "message": "Deploy?", "requestedSchema": {
        "type": "object", "properties": { "ok": { "type": "boolean" } } } });
    a.on_tool(
        "deploy",
        Reply::steps()
            .ask("elicitation/create", ask)
            .then_result_from(|_| json!({ "content": [{ "type": "text", "text": "done" }] })),
    );
    let gw = TestGateway::start(ONE_UPSTREAM, &[&a]);

    // A first call whose header disagrees is refused before it reaches the upstream.
    let (status, refused) = call(&gw, 1, "eu", "us", json!({})).await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["error"]["code"], -32020, "{refused}");
    assert!(a.requests("tools/call").is_empty());

    // One that agrees is parked on the upstream's question.
    let (status, first) = call(&gw, 2, "eu", "eu", json!({})).await;
    assert_eq!(status, 200, "{first}");
    let state = first["result"]["requestState"]
        .as_str()
        .expect("parked")
        .to_owned();
    let answers = json!({ "input-1": { "action": "accept", "content": { "ok": true } } });

    // Its retry must agree too: the same check, the same refusal, and no answer upstream.
    let retry = json!({ "requestState": state, "inputResponses": answers });
    let (status, refused) = call(&gw, 3, "eu", "us", retry.clone()).await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["error"]["code"], -32020, "{refused}");
    assert_eq!(refused["id"], 3);
    assert!(
        a.answers().is_empty(),
        "a refused retry answers nothing upstream"
    );
}
