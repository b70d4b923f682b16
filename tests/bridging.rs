//! Every client generation against every upstream generation, with the default configuration
//! (`protocol: auto`): a 2025-11-25 client and a 2026-07-28 client each in front of a fixture
//! that serves both generations, only sessions, or only 2026-07-28 (`--generations`). What the
//! upstream asks of the client (sampling, elicitation, several rounds) reaches the client and
//! its answers come back; `resources/subscribe` delivers `notifications/resources/updated`;
//! capabilities a client did not declare are never claimed upstream; and the gateway learns
//! once per upstream which generations it offers.

mod common;

use common::{Client, Fixture, Gateway};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const GENERATIONS: [&str; 3] = ["both", "sessions", "stateless"];

fn fixture(generations: &str) -> Fixture {
    Fixture::http(&["--generations", generations])
}

/// The default configuration: one server in front of one HTTP upstream, `protocol` unset.
fn gateway(fx: &Fixture) -> Gateway {
    Gateway::start(&format!(
        "servers:\n  - {{ name: main, path: /mcp, upstreams: [fx] }}\nupstreams:\n  fx: {{ kind: http, url: \"{}\" }}\n",
        fx.url
    ))
}

/// A 2025-11-25 session declaring `capabilities`; returns the client and its InitializeResult.
async fn session_client(gw: &Gateway, capabilities: Value) -> (Client, Value) {
    let mut c = Client::new(&gw.url("/mcp"));
    let id = c.id();
    let reply = c
        .post(
            &json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": capabilities,
                "clientInfo": {"name": "bridging-test", "version": "1"}
            }}),
        )
        .await;
    assert_eq!(reply.status, 200, "initialize failed: {}", reply.raw);
    c.session = Some(reply.headers["mcp-session-id"].to_str().unwrap().to_owned());
    let r = c
        .post(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .await;
    assert_eq!(r.status, 202);
    let result = reply.last()["result"].clone();
    (c, result)
}

/// SSE events read one message at a time, with a deadline on each (a JSON body is one
/// message).
struct Events {
    events: BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
    json: bool,
}

impl Events {
    fn of(resp: reqwest::Response) -> Events {
        let json = resp
            .headers()
            .get("content-type")
            .is_some_and(|v| v.to_str().unwrap().starts_with("application/json"));
        Events {
            events: resp.bytes_stream().boxed(),
            buffer: String::new(),
            json,
        }
    }

    /// The next message, or `None` if none comes within `wait`.
    async fn next_within(&mut self, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        if self.json {
            while let Ok(Some(chunk)) = tokio::time::timeout_at(deadline, self.events.next()).await
            {
                self.buffer
                    .push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            }
            let body = std::mem::take(&mut self.buffer);
            return (!body.trim().is_empty()).then(|| serde_json::from_str(&body).unwrap());
        }
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let event: String = self.buffer.drain(..end + 2).collect();
                let data: String = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim)
                    .collect();
                if data.is_empty() {
                    continue;
                }
                return Some(serde_json::from_str(&data).unwrap());
            }
            let chunk = tokio::time::timeout_at(deadline, self.events.next())
                .await
                .ok()??
                .unwrap();
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    async fn next(&mut self) -> Value {
        self.next_within(Duration::from_secs(20))
            .await
            .expect("nothing more on the stream")
    }
}

/// A session client's `tools/call`, read as it streams.
async fn call(client: &mut Client, tool: &str, arguments: Value) -> Events {
    let id = client.id();
    let resp = client
        .http
        .post(&client.url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", client.session.as_deref().unwrap())
        .header("mcp-protocol-version", &client.version)
        .json(&json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": tool, "arguments": arguments}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    Events::of(resp)
}

/// The session client's answer to a server→client request.
async fn answer(client: &Client, id: &Value, result: Value) {
    let r = client
        .post(&json!({"jsonrpc": "2.0", "id": id, "result": result}))
        .await;
    assert_eq!(r.status, 202, "the answer was not accepted: {}", r.raw);
}

fn sampled(text: &str) -> Value {
    json!({"role": "assistant", "content": {"type": "text", "text": text}, "model": "m", "stopReason": "endTurn"})
}

fn accepted(field: &str, value: &str) -> Value {
    json!({"action": "accept", "content": {field: value}})
}

fn final_text(m: &Value) -> String {
    m.pointer("/result/content/0/text")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("not a tool result: {m}"))
        .to_owned()
}

fn sampling_and_elicitation() -> Value {
    json!({"sampling": {}, "elicitation": {}})
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_client_is_asked_and_answers_on_every_upstream_generation() {
    for generations in GENERATIONS {
        let fx = fixture(generations);
        let gw = gateway(&fx);
        let (mut c, _) = session_client(&gw, sampling_and_elicitation()).await;

        let mut s = call(&mut c, "sample", json!({})).await;
        let ask = s.next().await;
        assert_eq!(
            ask["method"], "sampling/createMessage",
            "{generations}: {ask}"
        );
        answer(&c, &ask["id"], sampled("hi from the model")).await;
        let done = s.next().await;
        assert!(
            final_text(&done).contains("hi from the model"),
            "{generations}: {done}"
        );

        let mut s = call(&mut c, "elicit", json!({})).await;
        let ask = s.next().await;
        assert_eq!(ask["method"], "elicitation/create", "{generations}: {ask}");
        answer(&c, &ask["id"], accepted("name", "Ada")).await;
        let done = s.next().await;
        assert!(final_text(&done).contains("Ada"), "{generations}: {done}");

        // Two rounds, one question each: the second comes only after the first is answered.
        let mut s = call(&mut c, "test_input_required_result_multi_round", json!({})).await;
        let first = s.next().await;
        assert_eq!(
            first["method"], "elicitation/create",
            "{generations}: {first}"
        );
        answer(&c, &first["id"], accepted("name", "Ada")).await;
        let second = s.next().await;
        assert_eq!(
            second["method"], "elicitation/create",
            "{generations}: {second}"
        );
        assert_ne!(first["id"], second["id"]);
        answer(&c, &second["id"], accepted("color", "teal")).await;
        let done = s.next().await;
        assert_eq!(
            final_text(&done),
            "Hello, Ada! Your favorite color is teal.",
            "{generations}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn several_questions_of_one_round_are_all_relayed_and_answered() {
    for generations in ["both", "stateless"] {
        let fx = fixture(generations);
        let gw = gateway(&fx);
        let caps = json!({"sampling": {}, "elicitation": {}, "roots": {}});
        let (mut c, _) = session_client(&gw, caps).await;
        let mut s = call(
            &mut c,
            "test_input_required_result_multiple_inputs",
            json!({}),
        )
        .await;
        let mut asked = Vec::new();
        for _ in 0..3 {
            let q = s.next().await;
            let result = match q["method"].as_str().unwrap() {
                "elicitation/create" => accepted("name", "Ada"),
                "sampling/createMessage" => sampled("Hello there"),
                "roots/list" => json!({"roots": [{"uri": "file:///work", "name": "work"}]}),
                other => panic!("{generations}: unexpected question {other}"),
            };
            asked.push(q["method"].as_str().unwrap().to_owned());
            answer(&c, &q["id"], result).await;
        }
        asked.sort();
        assert_eq!(
            asked,
            ["elicitation/create", "roots/list", "sampling/createMessage"]
        );
        let done = s.next().await;
        assert_eq!(
            final_text(&done),
            "name=Ada, greeting=Hello there, roots=file:///work",
            "{generations}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn capabilities_a_session_client_did_not_declare_are_not_claimed_upstream() {
    // Only the stateless wire lets the upstream see what is claimed per request; on the
    // session wire the client's own initialize params are what the upstream gets.
    let fx = fixture("stateless");
    let gw = gateway(&fx);
    let (mut c, _) = session_client(&gw, json!({"elicitation": {}})).await;

    // Asks only what the claimed capabilities allow: the elicitation, never the sampling.
    let mut s = call(&mut c, "test_input_required_result_capabilities", json!({})).await;
    let q = s.next().await;
    assert_eq!(q["method"], "elicitation/create", "{q}");
    answer(&c, &q["id"], accepted("name", "Ada")).await;
    let done = s.next().await;
    assert!(done.get("result").is_some(), "{done}");
    assert!(
        !final_text(&done).contains("greeting"),
        "sampling was claimed: {done}"
    );

    // A tool that needs sampling is refused by the upstream, and the client is never asked.
    let mut s = call(&mut c, "test_missing_capability", json!({})).await;
    let m = s.next().await;
    assert!(m.get("error").is_some(), "expected a refusal, got {m}");
}

/// A 2026-07-28 `tools/call` with `extra` params (a retry's `inputResponses`, `requestState`).
async fn stateless_call(c: &Client, id: i64, tool: &str, caps: &Value, extra: Value) -> Value {
    let mut params = json!({"name": tool, "arguments": {}, "_meta": {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": caps,
        "io.modelcontextprotocol/clientInfo": {"name": "bridging-test", "version": "1"}
    }});
    for (k, v) in extra.as_object().unwrap() {
        params[k] = v.clone();
    }
    let r = c.stateless_call(id, params).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    r.last().clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stateless_client_is_asked_and_answers_on_every_upstream_generation() {
    for generations in GENERATIONS {
        let fx = fixture(generations);
        let gw = gateway(&fx);
        let c = Client::new(&gw.url("/mcp"));
        let caps = sampling_and_elicitation();

        let first = stateless_call(&c, 1, "sample", &caps, json!({})).await;
        let result = &first["result"];
        assert_eq!(
            result["resultType"], "input_required",
            "{generations}: {first}"
        );
        let requests = result["inputRequests"].as_object().unwrap();
        assert_eq!(requests.len(), 1, "{generations}: {first}");
        let (key, request) = requests.iter().next().unwrap();
        assert_eq!(request["method"], "sampling/createMessage");
        let retry = json!({
            "inputResponses": {key.clone(): sampled("hi from the model")},
            "requestState": result["requestState"],
        });
        let done = stateless_call(&c, 2, "sample", &caps, retry).await;
        assert_eq!(done["id"], 2);
        assert_eq!(
            done["result"]["resultType"], "complete",
            "{generations}: {done}"
        );
        assert!(
            final_text(&done).contains("hi from the model"),
            "{generations}: {done}"
        );

        // Not declared: never asked. The call fails instead of waiting for an answer.
        // A stateless upstream's -32021 comes back as it was sent: on HTTP 400.
        let r = c
            .stateless_call(
                3,
                json!({"name": "test_missing_capability", "arguments": {}, "_meta": {
                    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                    "io.modelcontextprotocol/clientCapabilities": {},
                    "io.modelcontextprotocol/clientInfo": {"name": "bridging-test", "version": "1"}
                }}),
            )
            .await;
        let refused = r.last().clone();
        match r.status {
            400 => assert_eq!(refused["error"]["code"], -32021, "{generations}: {refused}"),
            200 => assert!(
                refused.get("error").is_some()
                    || refused.pointer("/result/isError") == Some(&Value::Bool(true)),
                "{generations}: {refused}"
            ),
            other => panic!("{generations}: HTTP {other}: {}", r.raw),
        }
    }
}

/// Opens a session's GET stream.
async fn get_stream(c: &Client) -> Events {
    let resp = c
        .http
        .get(&c.url)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", c.session.as_deref().unwrap())
        .header("mcp-protocol-version", &c.version)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    Events::of(resp)
}

/// Announces a change of `uri` (through the gateway) until the GET stream shows an update, and
/// returns the URI of the first update seen. The listen stream upstream may still be opening
/// when the first announcement goes out, so it is repeated.
async fn first_update(c: &mut Client, get: &mut Events, announce: &[&str]) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        for uri in announce {
            let r = c.call_tool("update_resource", json!({"uri": uri})).await;
            assert_eq!(r.text(), "announced", "{}", r.raw);
        }
        while let Some(m) = get.next_within(Duration::from_millis(700)).await {
            if m["method"] == "notifications/resources/updated" {
                return Some(m["params"]["uri"].as_str().unwrap().to_owned());
            }
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread")]
async fn resources_subscribe_delivers_updates_on_every_upstream_generation() {
    for generations in GENERATIONS {
        let fx = fixture(generations);
        let gw = gateway(&fx);
        let (mut c, init) = session_client(&gw, json!({})).await;
        assert_eq!(
            init["capabilities"]["resources"]["subscribe"], true,
            "{generations}: the gateway can deliver subscriptions and must say so: {init}"
        );
        for uri in ["test://watched-resource", "test://other"] {
            let r = c.request("resources/subscribe", json!({"uri": uri})).await;
            assert!(
                r.last().get("result").is_some(),
                "{generations}: subscribe failed: {}",
                r.raw
            );
        }
        let r = c.request("ping", json!({})).await;
        assert!(r.last().get("result").is_some(), "{generations}: {}", r.raw);
        let mut get = get_stream(&c).await;
        let seen = first_update(&mut c, &mut get, &["test://watched-resource"]).await;
        assert_eq!(
            seen.as_deref(),
            Some("test://watched-resource"),
            "{generations}: no update arrived"
        );
        if generations == "stateless" {
            // Unsubscribed URIs no longer flow (a session-side fixture sends every update to
            // every GET stream, subscribed or not, so this holds only where the gateway filters).
            let r = c
                .request(
                    "resources/unsubscribe",
                    json!({"uri": "test://watched-resource"}),
                )
                .await;
            assert!(r.last().get("result").is_some(), "{}", r.raw);
            // Let the listen stream be re-opened without the URI before announcing.
            tokio::time::sleep(Duration::from_millis(500)).await;
            while get.next_within(Duration::from_millis(200)).await.is_some() {}
            let seen = first_update(
                &mut c,
                &mut get,
                &["test://watched-resource", "test://other"],
            )
            .await;
            assert_eq!(seen.as_deref(), Some("test://other"));
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn which_generations_an_upstream_offers_is_learned_once() {
    let fx = fixture("stateless");
    let gw = gateway(&fx);
    for _ in 0..3 {
        let (mut c, _) = session_client(&gw, json!({})).await;
        assert!(c.tool_names().await.contains(&"echo".to_owned()));
    }
    let log = gw.proc.stderr();
    assert_eq!(
        log.matches("the upstream does not offer this wire").count(),
        1,
        "initialize was tried more than once on a stateless-only upstream"
    );
}

/// The fixture's counters, read through the gateway by `c`.
async fn upstream_stats_via(c: &mut Client) -> Value {
    let r = c.call_tool("stats", json!({})).await;
    serde_json::from_str(&r.text()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn each_client_generation_gets_its_own_wire_from_a_dual_upstream() {
    let fx = fixture("both");
    let gw = gateway(&fx);
    // A 2026-07-28 client first: the gateway speaks 2026-07-28 upstream, no session is opened.
    let stateless = Client::new(&gw.url("/mcp"));
    let r = stateless_call(
        &stateless,
        1,
        "echo",
        &json!({}),
        json!({"arguments": {"text": "x"}}),
    )
    .await;
    assert_eq!(final_text(&r), "x", "{r}");
    let stats = stateless_call(&stateless, 2, "stats", &json!({}), json!({})).await;
    let stats: Value = serde_json::from_str(&final_text(&stats)).unwrap();
    assert_eq!(stats["sessions_opened"], 0, "{stats}");
    // A session client gets an upstream session of its own.
    let (mut c, _) = session_client(&gw, json!({})).await;
    let stats = upstream_stats_via(&mut c).await;
    assert_eq!(stats["sessions_opened"], 1, "{stats}");
}
