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

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_question_becomes_input_required_and_the_retry_resumes_the_call() {
    let fx = Fixture::http(&[]);
    let yaml = http_fixture_config(&fx.url, "2025-11-25");
    let gw = Gateway::start(&yaml);
    let client = Client::new(&gw.url("/mcp"));

    let first = client
        .stateless_call(
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
    let forged = client.stateless_call(2, json!({"name": "elicit", "arguments": {}, "_meta": meta(), "requestState": "gatehouse.00", "inputResponses": {}})).await;
    assert_eq!(forged.status, 400, "{}", forged.raw);
    assert_eq!(forged.error_code(), Some(-32602));
    assert_eq!(forged.last()["id"], 2);

    let answer = json!({"action": "accept", "content": {"name": "Ada"}});
    let retry = client.stateless_call(3,
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
    let again = client.stateless_call(4, json!({"name": "elicit", "arguments": {}, "_meta": meta(), "requestState": state, "inputResponses": {}})).await;
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

    let quiet = client
        .stateless_call(
            1,
            json!({"name": "test_logging_tool", "arguments": {}, "_meta": meta()}),
        )
        .await;
    assert_eq!(logs(&quiet), 0, "{}", quiet.raw);
    assert!(quiet.text().contains("logged"));

    let mut m = meta();
    m["io.modelcontextprotocol/logLevel"] = json!("warning");
    let loud = client
        .stateless_call(
            2,
            json!({"name": "test_logging_tool", "arguments": {}, "_meta": m}),
        )
        .await;
    assert_eq!(logs(&loud), 2, "warning and error only: {}", loud.raw);
}
