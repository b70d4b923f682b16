//! Server→client requests sent on the session's standalone (GET) stream are not lost when the
//! client's GET arrives after its call: the gateway opens the upstream stream when the session
//! starts and holds what comes, bounded by `limits.standalone_hold_messages` and
//! `limits.standalone_hold_time`; what cannot be delivered is answered upstream with an error.
//! Real gateway, real fixture (`--requests-on-standalone-stream`).

mod common;

use common::{Client, Fixture, Gateway, Reply, http_fixture_config};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// The messages of one SSE response, one at a time.
struct Events {
    body: BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
}

impl Events {
    fn of(resp: reqwest::Response) -> Events {
        assert_eq!(resp.status(), 200);
        let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(ct.starts_with("text/event-stream"), "{ct}");
        Events {
            body: resp.bytes_stream().boxed(),
            buffer: String::new(),
        }
    }

    /// The next JSON-RPC message (comments and empty events are skipped).
    async fn next(&mut self, within: Duration) -> Value {
        loop {
            let normalized = self.buffer.replace("\r\n", "\n");
            self.buffer = normalized;
            if let Some(end) = self.buffer.find("\n\n") {
                let event: String = self.buffer.drain(..end + 2).collect();
                let data: Vec<&str> = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(|d| d.strip_prefix(' ').unwrap_or(d))
                    .collect();
                let data = data.join("\n");
                if data.trim().is_empty() {
                    continue;
                }
                return serde_json::from_str(&data).unwrap_or_else(|e| panic!("{e}: {data}"));
            }
            let chunk = tokio::time::timeout(within, self.body.next())
                .await
                .expect("nothing more on the stream in time")
                .expect("the stream ended")
                .unwrap();
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

/// POSTs a tools/call in the background (the gateway answers once the first message comes);
/// the handle gives the whole reply.
fn call(client: &mut Client, tool: &str) -> tokio::task::JoinHandle<Reply> {
    let id = client.id();
    let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": tool, "arguments": {}}});
    let mut c = Client::new(&client.url);
    c.http = client.http.clone();
    c.session = client.session.clone();
    c.version = client.version.clone();
    tokio::spawn(async move { c.post(&body).await })
}

/// The final message of a call, waited for at most `within`.
async fn finished(call: &mut tokio::task::JoinHandle<Reply>, within: Duration) -> Value {
    let reply = tokio::time::timeout(within, call)
        .await
        .expect("the call did not complete in time")
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.raw);
    reply.last().clone()
}

/// Opens the session's GET stream.
async fn get(client: &Client) -> Events {
    let resp = client
        .http
        .get(&client.url)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", client.session.as_deref().unwrap())
        .header("mcp-protocol-version", &client.version)
        .send()
        .await
        .unwrap();
    Events::of(resp)
}

/// POSTs the client's answer to a server request.
async fn answer(client: &Client, id: &Value, result: Value) {
    let r = client
        .post(&json!({"jsonrpc": "2.0", "id": id, "result": result}))
        .await;
    assert_eq!(r.status, 202, "{}", r.raw);
}

/// The answer the client gives to each question the fixture asks.
fn answer_for(method: &str, n: usize) -> (Value, String) {
    match method {
        "sampling/createMessage" => {
            let text = format!("sampled-{n}");
            (
                json!({"role": "assistant", "model": "m", "content": {"type": "text", "text": text}}),
                text,
            )
        }
        "elicitation/create" => {
            let name = format!("name-{n}");
            (json!({"action": "accept", "content": {"name": name}}), name)
        }
        other => panic!("unexpected question {other}"),
    }
}

/// The text of a tools/call result message.
fn result_text(m: &Value) -> String {
    m["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("not a text result: {m}"))
        .to_owned()
}

/// 20 sessions, each POSTing its call before it opens its GET: every question reaches the
/// GET, is answered, and every call completes with the client's answer.
async fn calls_before_the_get_still_get_their_questions(yaml: &str) {
    let fx = Fixture::http(&["--requests-on-standalone-stream"]);
    let gw = Gateway::start(&yaml.replace("FIXTURE_URL", &fx.url));
    for n in 0..20 {
        let mut client = Client::new(&gw.url("/mcp"));
        client.initialize().await;
        let tool = if n % 2 == 0 { "sample" } else { "elicit" };
        let mut result = call(&mut client, tool);
        // Half the time the GET comes well after the upstream asked (without the hold, that
        // question is lost for certain), half the time it races the call.
        if n % 4 < 2 {
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        let mut stream = get(&client).await;
        let question = stream.next(Duration::from_secs(10)).await;
        let method = question["method"].as_str().unwrap_or_default().to_owned();
        let (reply, expected) = answer_for(&method, n);
        answer(&client, &question["id"], reply).await;
        let done = finished(&mut result, Duration::from_secs(10)).await;
        assert!(
            result_text(&done).contains(&expected),
            "call {n} ({tool}): {done}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn questions_on_the_standalone_stream_reach_a_get_opened_after_the_call() {
    calls_before_the_get_still_get_their_questions(
        "servers:\n  - { name: main, path: /mcp, upstreams: [fx] }\nupstreams:\n  fx: { kind: http, url: \"FIXTURE_URL\" }\n",
    )
    .await;
}

/// The same with the upstream pinned to sessions (an upstream that only speaks 2025-11-25).
#[tokio::test(flavor = "multi_thread")]
async fn questions_on_the_standalone_stream_reach_a_late_get_with_a_sessions_upstream() {
    calls_before_the_get_still_get_their_questions(&http_fixture_config(
        "FIXTURE_URL",
        "2025-11-25",
    ))
    .await;
}

/// How many GET streams are open on the fixture.
async fn streams_open(fixture: &Client) -> u64 {
    let stats = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "stats", "arguments": {}}});
    let v: Value = serde_json::from_str(&fixture.post(&stats).await.text()).unwrap();
    v["get_streams_open"].as_u64().unwrap()
}

fn capped(fx: &Fixture, limits: &str) -> String {
    format!(
        "limits: {{ {limits} }}\n{}",
        http_fixture_config(&fx.url, "2025-11-25")
    )
}

/// The value of a counter series in a Prometheus exposition (0 if absent).
fn counter(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn questions_past_the_hold_cap_are_refused_upstream_not_left_hanging() {
    let fx = Fixture::http(&["--requests-on-standalone-stream"]);
    let gw = Gateway::start(&capped(&fx, "standalone_hold_messages: 2"));
    let mut client = Client::new(&gw.url("/mcp"));
    client.initialize().await;
    // Three questions while no GET is open: two are held, the third is over the cap.
    let mut calls = Vec::new();
    for _ in 0..3 {
        calls.push(call(&mut client, "sample"));
    }
    let overflow = r#"gatehouse_standalone_dropped_total{upstream="fx",reason="overflow"}"#;
    let deadline = Instant::now() + Duration::from_secs(10);
    while counter(&gw.metrics().await, overflow) < 1 {
        assert!(Instant::now() < deadline, "{}", gw.metrics().await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The refused one completes at once (not after the fixture's 30 s wait) with the error.
    let deadline = Instant::now() + Duration::from_secs(5);
    let refused_at = loop {
        if let Some(i) = calls.iter().position(|c| c.is_finished()) {
            break i;
        }
        assert!(
            Instant::now() < deadline,
            "the call over the cap did not complete"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let m = finished(&mut calls[refused_at], Duration::from_secs(1)).await;
    let text = result_text(&m);
    assert!(
        text.contains("could not deliver sampling/createMessage"),
        "{m}"
    );
    assert!(gw.proc.stderr().contains("limits.standalone_hold_messages"));

    // The two held questions reach the GET when it opens, and their calls complete.
    let mut stream = get(&client).await;
    for n in 0..2 {
        let q = stream.next(Duration::from_secs(10)).await;
        assert_eq!(q["method"], "sampling/createMessage", "{q}");
        let (reply, _) = answer_for("sampling/createMessage", n);
        answer(&client, &q["id"], reply).await;
    }
    let mut answered = Vec::new();
    for (i, c) in calls.iter_mut().enumerate() {
        if i != refused_at {
            answered.push(result_text(&finished(c, Duration::from_secs(10)).await));
        }
    }
    answered.sort();
    assert!(answered[0].contains("sampled-0"), "{answered:?}");
    assert!(answered[1].contains("sampled-1"), "{answered:?}");
    assert_eq!(counter(&gw.metrics().await, overflow), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_get_the_hold_ends_its_questions_refused_and_its_streams_closed() {
    let fx = Fixture::http(&["--requests-on-standalone-stream"]);
    let gw = Gateway::start(&capped(&fx, "standalone_hold_time: 2s"));
    let mut stats_client = Client::new(&fx.url);
    stats_client.initialize().await;
    let mut client = Client::new(&gw.url("/mcp"));
    client.initialize().await;
    // The upstream's stream is open from the session's start, before any GET.
    assert_eq!(streams_open(&stats_client).await, 1);
    let started = Instant::now();
    let mut c = call(&mut client, "sample");
    let m = finished(&mut c, Duration::from_secs(10)).await;
    let waited = started.elapsed();
    assert!(
        result_text(&m).contains("could not deliver sampling/createMessage"),
        "{m}"
    );
    assert!(waited < Duration::from_secs(6), "refused after {waited:?}");
    let expired = r#"gatehouse_standalone_dropped_total{upstream="fx",reason="expired"}"#;
    assert_eq!(counter(&gw.metrics().await, expired), 1);
    // Past the hold time the upstream stream is closed: the client holds none.
    let deadline = Instant::now() + Duration::from_secs(5);
    while streams_open(&stats_client).await != 0 {
        assert!(
            Instant::now() < deadline,
            "the held upstream stream stayed open"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A GET opened later works as without the hold.
    let mut stream = get(&client).await;
    let mut c = call(&mut client, "sample");
    let q = stream.next(Duration::from_secs(10)).await;
    let (reply, expected) = answer_for("sampling/createMessage", 7);
    answer(&client, &q["id"], reply).await;
    assert!(result_text(&finished(&mut c, Duration::from_secs(10)).await).contains(&expected));
}

/// Opens the session's GET stream resuming after `last_event_id`.
async fn get_after(client: &Client, last_event_id: &str) -> Events {
    let resp = client
        .http
        .get(&client.url)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", client.session.as_deref().unwrap())
        .header("mcp-protocol-version", &client.version)
        .header("last-event-id", last_event_id)
        .send()
        .await
        .unwrap();
    Events::of(resp)
}

impl Events {
    /// The `id` of the next event, data or not (the priming event has none).
    async fn next_id(&mut self, within: Duration) -> String {
        loop {
            let normalized = self.buffer.replace("\r\n", "\n");
            self.buffer = normalized;
            if let Some(end) = self.buffer.find("\n\n") {
                let event: String = self.buffer.drain(..end + 2).collect();
                if let Some(id) = event.lines().find_map(|l| l.strip_prefix("id: ")) {
                    return id.to_owned();
                }
                continue;
            }
            let chunk = tokio::time::timeout(within, self.body.next())
                .await
                .expect("nothing more on the stream in time")
                .expect("the stream ended")
                .unwrap();
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resumed_get_stream_replays_what_the_client_missed_and_only_its_own() {
    let fx = Fixture::http(&["--requests-on-standalone-stream"]);
    let gw = Gateway::start(&http_fixture_config(&fx.url, "2025-11-25"));
    let mut client = Client::new(&gw.url("/mcp"));
    client.initialize().await;
    let mut stream = get(&client).await;
    // SEP-1699: the stream starts with a priming event, an id to resume from.
    let primed = stream.next_id(Duration::from_secs(5)).await;
    let mut c = call(&mut client, "sample");
    let question = stream.next(Duration::from_secs(10)).await;
    assert_eq!(question["method"], "sampling/createMessage");
    // The connection breaks before the client handled the question; it resumes after the
    // priming event and gets the question again, then answers it.
    drop(stream);
    let mut other = Client::new(&gw.url("/mcp"));
    other.initialize().await;
    // Another session naming this session's event id gets nothing of it.
    let mut foreign = get_after(&other, &primed).await;
    let foreign_first = foreign.next_id(Duration::from_secs(5)).await;
    assert_ne!(foreign_first.split('-').next(), primed.split('-').next());
    let mut resumed = get_after(&client, &primed).await;
    let again = resumed.next(Duration::from_secs(5)).await;
    assert_eq!(again, question);
    let (reply, expected) = answer_for("sampling/createMessage", 3);
    answer(&client, &question["id"], reply).await;
    assert!(result_text(&finished(&mut c, Duration::from_secs(10)).await).contains(&expected));
}
