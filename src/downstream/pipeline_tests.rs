//! The request pipeline end to end, in-process and fast: a gateway built from YAML whose
//! upstreams are in-memory scripted ones, driven through its HTTP router (never through the
//! downstream functions, which may change shape). Routing and renaming, list merging and
//! pagination, policy filtering, JSON and SSE relay, questions asked mid-call (over SSE to a
//! session client, parked as an InputRequiredResult for a 2026-07-28 one) and cancellation.

use crate::testing::in_process::{
    Events, SessionClient, StatelessClient, TestGateway, WAIT, content_type, json_body,
};
use crate::upstream::scripted::{Reply, ScriptedUpstream, Seen};
use serde_json::{Value, json};

/// A virtual server `/mcp` over the scripted upstreams `a` and `b` with `prefix: always`;
/// `b` is renamed `beta` in the names clients see. `extra` is added to the server entry.
fn two_upstreams(extra: &str) -> String {
    format!(
        r#"
servers:
  - name: main
    path: /mcp
    upstreams: [a, b]
    prefix: always
{extra}
upstreams:
  a: {{ kind: http, url: "http://127.0.0.1:9/a" }}
  b: {{ kind: http, url: "http://127.0.0.1:9/b", prefix: beta }}
"#
    )
}

/// A virtual server `/mcp` over the one scripted upstream `a`, names unprefixed.
pub(super) const ONE_UPSTREAM: &str = r#"
servers:
  - name: main
    path: /mcp
    upstreams: [a]
upstreams:
  a: { kind: http, url: "http://127.0.0.1:9/a" }
"#;

/// The upstream-side id of the last `method` request `u` received.
fn last_request_id(u: &ScriptedUpstream, method: &str) -> crate::protocol::RequestId {
    u.seen()
        .into_iter()
        .rev()
        .find_map(|s| match s {
            Seen::Request { id, method: m, .. } if m == method => Some(id),
            _ => None,
        })
        .expect("the request reached the upstream")
}

pub(super) fn text(result: &Value) -> &str {
    result["content"][0]["text"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn a_call_goes_to_the_upstream_named_by_its_prefix_under_its_own_name() {
    let a = ScriptedUpstream::sessions("a");
    a.with_tools(&["echo"]);
    let b = ScriptedUpstream::sessions("b");
    b.with_tools(&["echo"]);
    let gw = TestGateway::start(&two_upstreams(""), &[&a, &b]);
    let client = SessionClient::start(&gw, "/mcp", json!({}), None).await;

    let resp = client
        .request(
            3,
            "tools/call",
            json!({ "name": "beta__echo", "arguments": { "x": 1 } }),
        )
        .await;
    assert_eq!(content_type(&resp), "application/json");
    assert_eq!(
        json_body(resp).await,
        json!({ "jsonrpc": "2.0", "id": 3, "result": { "content": [{ "type": "text", "text": "b:echo" }] } })
    );
    assert_eq!(
        b.requests("tools/call"),
        vec![json!({ "name": "echo", "arguments": { "x": 1 } })]
    );
    assert!(a.requests("tools/call").is_empty(), "{:?}", a.seen());

    let resp = client
        .request(4, "tools/call", json!({ "name": "a__echo" }))
        .await;
    assert_eq!(text(&json_body(resp).await["result"]), "a:echo");
    assert_eq!(b.requests("tools/call").len(), 1);
}

#[tokio::test]
async fn lists_are_merged_renamed_and_paginated_per_upstream() {
    let a = ScriptedUpstream::sessions("a");
    a.on_fn("tools/list", |params| match params.get("cursor") {
        None => Reply::result(json!({
            "tools": [{ "name": "one", "inputSchema": { "type": "object" } }],
            "nextCursor": "a-page-2"
        })),
        Some(_) => Reply::result(json!({
            "tools": [{ "name": "two", "inputSchema": { "type": "object" } }]
        })),
    });
    let b = ScriptedUpstream::sessions("b");
    b.with_tools(&["three"]);
    let gw = TestGateway::start(&two_upstreams(""), &[&a, &b]);
    let client = SessionClient::start(&gw, "/mcp", json!({}), None).await;

    let first = json_body(client.request(1, "tools/list", json!({})).await).await;
    let names: Vec<&str> = first["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a__one", "beta__three"], "{first}");
    let cursor = first["result"]["nextCursor"]
        .as_str()
        .expect("a cursor while a has more");

    let second = json_body(
        client
            .request(2, "tools/list", json!({ "cursor": cursor }))
            .await,
    )
    .await;
    assert_eq!(
        second,
        json!({ "jsonrpc": "2.0", "id": 2, "result": {
            "tools": [{ "name": "a__two", "inputSchema": { "type": "object" } }]
        } })
    );
    // Only `a` had more: the second page asks it alone, with its own cursor.
    assert_eq!(
        a.requests("tools/list"),
        vec![Value::Null, json!({ "cursor": "a-page-2" })]
    );
    assert_eq!(b.requests("tools/list"), vec![Value::Null]);
}

#[tokio::test]
async fn a_tool_hidden_by_policy_is_absent_and_refused_like_an_unknown_one() {
    let policy = r#"
    auth: { api_keys: true }
    policy:
      default: allow
      rules:
        - name: no-secrets-for-contractors
          effect: deny
          tools: "a__secret"
          groups: [contractors]"#;
    let yaml = two_upstreams(policy);
    let config = crate::config::Config::from_yaml(&yaml, std::path::Path::new("t.yaml")).unwrap();
    let store = crate::store::Store::open("sqlite::memory:", std::path::Path::new("."), 1)
        .await
        .expect("an in-memory store");
    let key = |subject: &str, groups: &[&str]| crate::commands::keys::CreateKey {
        subject: subject.into(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        expires: "never".into(),
        ..Default::default()
    };
    let contractor =
        crate::commands::keys::create(&config, &store, &key("carol", &["contractors"]))
            .await
            .unwrap();
    let employee = crate::commands::keys::create(&config, &store, &key("erin", &["staff"]))
        .await
        .unwrap();
    let a = ScriptedUpstream::sessions("a");
    a.with_tools(&["secret", "open"]);
    let b = ScriptedUpstream::sessions("b");
    b.with_tools(&["other"]);
    let gw = TestGateway::with_store(&yaml, &[&a, &b], Some(store));

    // Without a credential the server refuses before anything reaches an upstream.
    let resp = gw
        .post(
            "/mcp",
            &[],
            &json!({ "jsonrpc": "2.0", "id": 1, "method": "ping" }),
        )
        .await;
    assert_eq!(resp.status(), 401);

    let names = |listing: &Value| -> Vec<String> {
        listing["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let erin = SessionClient::start(&gw, "/mcp", json!({}), Some(&employee)).await;
    let listing = json_body(erin.request(1, "tools/list", json!({})).await).await;
    assert_eq!(names(&listing), ["a__secret", "a__open", "beta__other"]);

    let carol = SessionClient::start(&gw, "/mcp", json!({}), Some(&contractor)).await;
    let listing = json_body(carol.request(1, "tools/list", json!({})).await).await;
    assert_eq!(names(&listing), ["a__open", "beta__other"]);

    let hidden = json_body(
        carol
            .request(2, "tools/call", json!({ "name": "a__secret" }))
            .await,
    )
    .await;
    // Unknown to the gateway: no upstream's prefix (a prefixed name goes to its upstream,
    // which has its own say about names it does not know).
    let unknown = json_body(
        carol
            .request(2, "tools/call", json!({ "name": "zz__nothing" }))
            .await,
    )
    .await;
    assert_eq!(
        hidden,
        json!({ "jsonrpc": "2.0", "id": 2, "error": { "code": -32602, "message": "Unknown tool: a__secret" } })
    );
    assert_eq!(
        serde_json::to_string(&unknown)
            .unwrap()
            .replace("zz__nothing", "a__secret"),
        serde_json::to_string(&hidden).unwrap(),
        "a hidden tool reads exactly like an unknown one"
    );
    // Only erin's call may reach the upstream.
    assert!(a.requests("tools/call").is_empty(), "{:?}", a.seen());
    let resp = erin
        .request(3, "tools/call", json!({ "name": "a__secret" }))
        .await;
    assert_eq!(text(&json_body(resp).await["result"]), "a:secret");
    assert_eq!(a.requests("tools/call"), vec![json!({ "name": "secret" })]);
}

#[tokio::test]
async fn a_notification_during_a_call_turns_the_answer_into_an_event_stream() {
    let a = ScriptedUpstream::sessions("a");
    a.on_tool(
        "work",
        Reply::steps()
            .notify(
                "notifications/message",
                json!({ "level": "info", "data": "halfway" }),
            )
            .then_result(json!({ "content": [{ "type": "text", "text": "done" }] })),
    );
    let gw = TestGateway::start(ONE_UPSTREAM, &[&a]);
    let client = SessionClient::start(&gw, "/mcp", json!({}), None).await;

    let resp = client
        .request(9, "tools/call", json!({ "name": "work" }))
        .await;
    assert_eq!(resp.status(), 200);
    let mut events = Events::of(resp);
    assert_eq!(
        events.next().await,
        Some(json!({ "jsonrpc": "2.0", "method": "notifications/message",
                     "params": { "level": "info", "data": "halfway" } }))
    );
    assert_eq!(
        events.next().await,
        Some(json!({ "jsonrpc": "2.0", "id": 9,
                     "result": { "content": [{ "type": "text", "text": "done" }] } }))
    );
    assert_eq!(events.next().await, None, "the stream ends with the answer");
}

#[tokio::test]
async fn a_session_client_answers_a_sampling_request_mid_call() {
    let a = ScriptedUpstream::sessions("a");
    a.on_tool(
        "think",
        Reply::steps()
            .ask(
                "sampling/createMessage",
                json!({ "messages": [{ "role": "user", "content": { "type": "text", "text": "6 x 7?" } }],
                        "maxTokens": 10 }),
            )
            .then_result_from(|answers| {
                let said = answers[0]["result"]["content"]["text"].clone();
                json!({ "content": [{ "type": "text", "text": said }] })
            }),
    );
    let gw = TestGateway::start(ONE_UPSTREAM, &[&a]);
    let client = SessionClient::start(&gw, "/mcp", json!({ "sampling": {} }), None).await;

    let resp = client
        .request(5, "tools/call", json!({ "name": "think" }))
        .await;
    let mut events = Events::of(resp);
    let question = events.next().await.expect("the upstream's question");
    assert_eq!(question["method"], "sampling/createMessage");
    assert_eq!(question["params"]["maxTokens"], 10);
    // The id is the gateway's own (sealed), not the upstream's.
    let asked_as = question["id"].clone();
    assert!(
        !asked_as.as_str().unwrap_or_default().starts_with("a-q"),
        "{question}"
    );

    let answer =
        json!({ "role": "assistant", "content": { "type": "text", "text": "42" }, "model": "m" });
    let resp = client
        .send(&json!({ "jsonrpc": "2.0", "id": asked_as, "result": answer }))
        .await;
    assert_eq!(resp.status(), 202);
    assert_eq!(
        events.next().await,
        Some(json!({ "jsonrpc": "2.0", "id": 5,
                     "result": { "content": [{ "type": "text", "text": "42" }] } }))
    );
    assert_eq!(events.next().await, None);
    // The upstream got the answer under its own question id.
    let answers = a.answers();
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0]["result"], answer);
    assert!(
        answers[0]["id"].as_str().unwrap().starts_with("a-q"),
        "{answers:?}"
    );
}

#[tokio::test]
async fn a_stateless_client_is_asked_through_input_required_and_its_retry_completes_the_call() {
    let a = ScriptedUpstream::sessions("a");
    let ask = json!({ "mode": "form", "message": "Deploy?", "requestedSchema": {
        "type": "object", "properties": { "ok": { "type": "boolean" } } } });
    a.on_tool(
        "deploy",
        Reply::steps()
            .ask("elicitation/create", ask.clone())
            .then_result_from(|answers| {
                json!({ "content": [{ "type": "text",
                        "text": format!("action={}", answers[0]["result"]["action"]) }] })
            }),
    );
    let gw = TestGateway::start(ONE_UPSTREAM, &[&a]);
    let client = StatelessClient::new(&gw, "/mcp", json!({ "elicitation": { "form": {} } }));

    let first = client
        .request(1, "tools/call", json!({ "name": "deploy" }))
        .await;
    assert_eq!(content_type(&first), "application/json");
    let first = json_body(first).await;
    let state = first["result"]["requestState"]
        .as_str()
        .expect("a request state")
        .to_owned();
    assert_eq!(
        first,
        json!({ "jsonrpc": "2.0", "id": 1, "result": {
            "resultType": "input_required",
            "inputRequests": { "input-1": { "method": "elicitation/create", "params": ask } },
            "requestState": state,
        } })
    );
    assert!(a.answers().is_empty(), "nothing answered yet");

    let retry = client
        .request(
            2,
            "tools/call",
            json!({
                "name": "deploy",
                "requestState": state,
                "inputResponses": { "input-1": { "action": "accept", "content": { "ok": true } } }
            }),
        )
        .await;
    let retry = json_body(retry).await;
    // The retry is answered, with the result of the call it resumed.
    assert_eq!(
        retry,
        json!({ "jsonrpc": "2.0", "id": 2, "result": {
            "content": [{ "type": "text", "text": "action=\"accept\"" }],
            "resultType": "complete"
        } })
    );
    // One call upstream, resumed: the answer reached the question it asked.
    assert_eq!(a.requests("tools/call").len(), 1);
    let answers = a.answers();
    assert_eq!(
        answers[0]["result"],
        json!({ "action": "accept", "content": { "ok": true } })
    );

    // The state is spent: a second retry with it is refused.
    let again = client
        .request(
            3,
            "tools/call",
            json!({ "name": "deploy", "requestState": state, "inputResponses": {} }),
        )
        .await;
    assert_eq!(again.status(), 400);
}

#[tokio::test]
async fn a_question_a_stateless_client_cannot_answer_is_refused_upstream_and_the_call_goes_on() {
    let a = ScriptedUpstream::sessions("a");
    a.on_tool(
        "maybe",
        Reply::steps()
            .ask("sampling/createMessage", json!({ "messages": [], "maxTokens": 1 }))
            .then_result_from(|answers| {
                json!({ "content": [{ "type": "text", "text": answers[0]["error"]["message"] }] })
            }),
    );
    let gw = TestGateway::start(ONE_UPSTREAM, &[&a]);
    // Declares elicitation only: a sampling question cannot be parked for it.
    let client = StatelessClient::new(&gw, "/mcp", json!({ "elicitation": {} }));

    let resp = client
        .request(1, "tools/call", json!({ "name": "maybe" }))
        .await;
    let mut events = Events::of(resp);
    assert_eq!(
        events.next().await,
        Some(json!({ "jsonrpc": "2.0", "id": 1, "result": {
            "content": [{ "type": "text", "text":
                "the client is stateless and cannot answer sampling/createMessage through the gateway" }],
            "resultType": "complete"
        } }))
    );
    assert_eq!(events.next().await, None);
    assert_eq!(a.answers()[0]["error"]["code"], -32601);
}

#[tokio::test]
async fn a_stateless_upstream_is_discovered_and_sent_the_2026_meta() {
    let a = ScriptedUpstream::stateless("a");
    a.with_tools(&["echo"]);
    let gw = TestGateway::start(ONE_UPSTREAM, &[&a]);
    let client = StatelessClient::new(&gw, "/mcp", json!({}));

    let discovered = json_body(client.request(1, "server/discover", json!({})).await).await;
    assert_eq!(
        discovered["result"]["resultType"], "complete",
        "{discovered}"
    );
    assert_eq!(
        discovered["result"]["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
        "main"
    );
    assert_eq!(discovered["result"]["ttlMs"], 60_000, "the member's hint");
    assert!(matches!(
        &a.seen()[0],
        Seen::Opened { method, session: None, .. } if method == "server/discover"
    ));

    let called = json_body(
        client
            .request(2, "tools/call", json!({ "name": "echo" }))
            .await,
    )
    .await;
    assert_eq!(text(&called["result"]), "a:echo", "{called}");
    let sent = &a.requests("tools/call")[0];
    assert_eq!(sent["name"], "echo");
    assert_eq!(
        sent["_meta"]["io.modelcontextprotocol/protocolVersion"],
        "2026-07-28"
    );
}

#[tokio::test]
async fn a_session_client_cancels_a_call_and_the_upstream_is_told() {
    let a = ScriptedUpstream::sessions("a");
    a.on_tool("slow", Reply::steps().hang());
    let gw = TestGateway::start(ONE_UPSTREAM, &[&a]);
    let client = SessionClient::start(&gw, "/mcp", json!({}), None).await;

    let call = client.request(7, "tools/call", json!({ "name": "slow" }));
    let cancel = async {
        a.wait_for(WAIT, "the call upstream", |seen| {
            seen.iter()
                .any(|s| matches!(s, Seen::Request { method, .. } if method == "tools/call"))
        })
        .await;
        let resp = client
            .send(
                &json!({ "jsonrpc": "2.0", "method": "notifications/cancelled",
                           "params": { "requestId": 7, "reason": "changed my mind" } }),
            )
            .await;
        assert_eq!(resp.status(), 202);
    };
    let (resp, ()) = tokio::join!(call, cancel);
    assert_eq!(
        json_body(resp).await,
        json!({ "jsonrpc": "2.0", "id": 7,
                "error": { "code": -32001, "message": "the request was cancelled" } })
    );

    let upstream_id = last_request_id(&a, "tools/call");
    a.wait_for(WAIT, "the cancellation upstream", |seen| {
        seen.iter()
            .any(|s| matches!(s, Seen::Cancelled { id, .. } if *id == upstream_id))
    })
    .await;
    a.wait_for(WAIT, "the call to stop", |seen| {
        seen.iter()
            .any(|s| matches!(s, Seen::Stopped { id } if *id == upstream_id))
    })
    .await;
    assert_eq!(a.in_flight(), 0);
}

#[tokio::test]
async fn dropping_a_stateless_event_stream_stops_the_call_upstream() {
    let a = ScriptedUpstream::sessions("a");
    a.on_tool(
        "long",
        Reply::steps()
            .notify(
                "notifications/progress",
                json!({ "progressToken": "p1", "progress": 1, "total": 10 }),
            )
            .hang(),
    );
    let gw = TestGateway::start(ONE_UPSTREAM, &[&a]);
    let client = StatelessClient::new(&gw, "/mcp", json!({}));

    let resp = client
        .request(4, "tools/call", json!({ "name": "long" }))
        .await;
    let mut events = Events::of(resp);
    assert_eq!(
        events.next().await,
        Some(
            json!({ "jsonrpc": "2.0", "method": "notifications/progress",
                     "params": { "progressToken": "p1", "progress": 1, "total": 10 } })
        )
    );
    assert_eq!(a.in_flight(), 1);
    drop(events);

    let upstream_id = last_request_id(&a, "tools/call");
    a.wait_for(WAIT, "the cancellation upstream", |seen| {
        seen.iter().any(
            |s| matches!(s, Seen::Cancelled { id, reason } if *id == upstream_id && reason.as_deref() == Some("the client disconnected")),
        )
    })
    .await;
    a.wait_for(WAIT, "the call to stop", |seen| {
        seen.iter()
            .any(|s| matches!(s, Seen::Stopped { id } if *id == upstream_id))
    })
    .await;
    assert_eq!(a.in_flight(), 0);
}

#[tokio::test]
async fn an_upstream_that_answers_too_late_times_out_and_is_told_to_stop() {
    let a = ScriptedUpstream::sessions("a");
    a.set_timeout(std::time::Duration::from_millis(50));
    a.on_tool(
        "sleepy",
        Reply::steps()
            .sleep(std::time::Duration::from_secs(5))
            .then_result(json!({ "content": [] })),
    );
    a.on_tool(
        "brisk",
        Reply::steps()
            .sleep(std::time::Duration::from_millis(5))
            .then_result(json!({ "content": [] })),
    );
    let gw = TestGateway::start(ONE_UPSTREAM, &[&a]);
    let client = SessionClient::start(&gw, "/mcp", json!({}), None).await;

    let brisk = json_body(
        client
            .request(1, "tools/call", json!({ "name": "brisk" }))
            .await,
    )
    .await;
    assert_eq!(
        brisk,
        json!({ "jsonrpc": "2.0", "id": 1, "result": { "content": [] } })
    );

    let sleepy = json_body(
        client
            .request(2, "tools/call", json!({ "name": "sleepy" }))
            .await,
    )
    .await;
    assert_eq!(sleepy["id"], 2, "{sleepy}");
    assert_eq!(sleepy["error"]["code"], -32001, "{sleepy}");
    assert!(
        sleepy["error"]["message"]
            .as_str()
            .unwrap()
            .contains("did not answer within 50ms"),
        "{sleepy}"
    );
    let upstream_id = last_request_id(&a, "tools/call");
    a.wait_for(WAIT, "the cancellation upstream", |seen| {
        seen.iter().any(|s| {
            matches!(s, Seen::Cancelled { id, reason }
                if *id == upstream_id && reason.as_deref() == Some("the gateway's request timeout expired"))
        })
    })
    .await;
    a.wait_for(WAIT, "the call to stop", |seen| {
        seen.iter()
            .any(|s| matches!(s, Seen::Stopped { id } if *id == upstream_id))
    })
    .await;
}

#[tokio::test]
async fn a_notification_outside_any_request_reaches_the_session_get_stream() {
    let a = ScriptedUpstream::sessions("a");
    let gw = TestGateway::start(ONE_UPSTREAM, &[&a]);
    let client = SessionClient::start(&gw, "/mcp", json!({}), None).await;

    let mut events = Events::of(client.listen().await);
    a.push("notifications/tools/list_changed", json!({}));
    assert_eq!(
        events.next().await,
        Some(
            json!({ "jsonrpc": "2.0", "method": "notifications/tools/list_changed", "params": {} })
        )
    );
}
