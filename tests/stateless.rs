//! 2026-07-28 clients through the gateway: stateless requests bridged to a session-based
//! upstream, including multi round-trip requests (InputRequiredResult) built from the
//! upstream's server→client requests.

mod common;

use common::{Client, Fixture, Gateway, http_fixture_config};
use serde_json::{Value, json};

fn meta() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": { "elicitation": {} }
    })
}

async fn call(client: &Client, id: i64, params: Value) -> common::Reply {
    let name = params["name"].as_str().unwrap().to_owned();
    let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params});
    client
        .post_raw(
            serde_json::to_vec(&body).unwrap(),
            &[
                ("mcp-protocol-version", "2026-07-28"),
                ("mcp-method", "tools/call"),
                ("mcp-name", &name),
            ],
        )
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_question_becomes_input_required_and_the_retry_resumes_the_call() {
    let fx = Fixture::http(&[]);
    let yaml = http_fixture_config(&fx.url, "2025-11-25");
    let gw = Gateway::start(&yaml);
    let client = Client::new(&gw.url("/mcp"));

    let first = call(
        &client,
        1,
        json!({"name": "elicit", "arguments": {}, "_meta": meta()}),
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.raw);
    let result = &first.last()["result"];
    assert_eq!(result["resultType"], "input_required", "{}", first.raw);
    assert_eq!(first.last()["id"], 1);
    let requests = result["inputRequests"].as_object().unwrap();
    assert_eq!(requests.len(), 1);
    let (key, question) = requests.iter().next().unwrap();
    assert_eq!(question["method"], "elicitation/create");
    assert_eq!(question["params"]["message"], "Your name?");
    let state = result["requestState"].as_str().unwrap().to_owned();

    // A forged state is refused.
    let forged = call(&client, 2, json!({"name": "elicit", "arguments": {}, "_meta": meta(), "requestState": "gatehouse.00", "inputResponses": {}})).await;
    assert_eq!(forged.status, 400, "{}", forged.raw);
    assert_eq!(forged.error_code(), Some(-32602));
    assert_eq!(forged.last()["id"], 2);

    let answer = json!({"action": "accept", "content": {"name": "Ada"}});
    let retry = call(
        &client,
        3,
        json!({"name": "elicit", "arguments": {}, "_meta": meta(), "requestState": state, "inputResponses": {key.as_str(): answer}}),
    )
    .await;
    assert_eq!(retry.last()["id"], 3, "{}", retry.raw);
    assert_eq!(
        retry.last()["result"]["resultType"],
        "complete",
        "{}",
        retry.raw
    );
    assert!(retry.text().contains("Ada"), "{}", retry.raw);

    // The state is single-use.
    let again = call(&client, 4, json!({"name": "elicit", "arguments": {}, "_meta": meta(), "requestState": state, "inputResponses": {}})).await;
    assert_eq!(again.status, 400, "{}", again.raw);
}

#[tokio::test(flavor = "multi_thread")]
async fn log_messages_reach_stateless_clients_only_when_asked_for() {
    let fx = Fixture::http(&[]);
    let yaml = http_fixture_config(&fx.url, "2025-11-25");
    let gw = Gateway::start(&yaml);
    let client = Client::new(&gw.url("/mcp"));
    let logs = |r: &common::Reply| {
        r.messages
            .iter()
            .filter(|m| m["method"] == "notifications/message")
            .count()
    };

    let quiet = call(
        &client,
        1,
        json!({"name": "test_logging_tool", "arguments": {}, "_meta": meta()}),
    )
    .await;
    assert_eq!(logs(&quiet), 0, "{}", quiet.raw);
    assert!(quiet.text().contains("logged"));

    let mut m = meta();
    m["io.modelcontextprotocol/logLevel"] = json!("warning");
    let loud = call(
        &client,
        2,
        json!({"name": "test_logging_tool", "arguments": {}, "_meta": m}),
    )
    .await;
    assert_eq!(logs(&loud), 2, "warning and error only: {}", loud.raw);
}
