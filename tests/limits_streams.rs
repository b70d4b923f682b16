//! Streams and sessions are bounded: a client's dropped GET stream closes what it opened
//! upstream, idle sessions end (their upstream sessions deleted), and every per-caller cap —
//! sessions, concurrent streams, parked calls — refuses with 429, `Retry-After` and a JSON-RPC
//! error naming the limit. All against the real gateway and fixture, in the default
//! configuration unless a test is about a setting.

mod auth_support;
mod common;

use common::{Client, Fixture, Gateway, Reply, http_fixture_config};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Polls `check` every 100 ms until it holds or `within` passes; returns whether it held.
async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Open file descriptors of a process (Linux).
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// A session of its own on the fixture, to read its counters without going through the gateway.
async fn fixture_client(fx: &Fixture) -> Client {
    let mut c = Client::new(&fx.url);
    c.initialize().await;
    c
}

async fn stats(c: &Client) -> Value {
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "stats", "arguments": {}}});
    serde_json::from_str(&c.post(&call).await.text()).unwrap()
}

/// A request's status (a fixed id: the caller waits for each answer).
async fn status_of(c: &Client, method: &str) -> u16 {
    c.post(&json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": {}}))
        .await
        .status
}

/// Opens the session's GET stream and waits for its first bytes (by then the gateway has opened
/// the upstream's stream); the caller drops it to disconnect.
async fn open_get(http: &reqwest::Client, c: &Client) -> reqwest::Response {
    let mut resp = http
        .get(&c.url)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", c.session.as_deref().unwrap())
        .header("mcp-protocol-version", "2025-11-25")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let first = tokio::time::timeout(Duration::from_secs(10), resp.chunk())
        .await
        .expect("the stream sends a keep-alive at once");
    assert!(first.unwrap().is_some());
    resp
}

/// Checks a refusal for `limit`: 429, a usable `Retry-After`, JSON-RPC -32008 naming it.
fn assert_limit(reply: &Reply, limit: &str, max: u64) {
    assert_eq!(reply.status, 429, "{}", reply.raw);
    let retry: u64 = reply
        .headers
        .get("retry-after")
        .unwrap_or_else(|| panic!("no Retry-After: {:?}", reply.headers))
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1, "Retry-After {retry}");
    assert_eq!(reply.error_code(), Some(-32008), "{}", reply.raw);
    let data = &reply.last()["error"]["data"];
    assert_eq!(data["limit"], limit, "{}", reply.raw);
    assert_eq!(data["max"], max, "{}", reply.raw);
}

fn config(fx: &Fixture) -> String {
    http_fixture_config(&fx.url, "2025-11-25")
}

#[tokio::test(flavor = "multi_thread")]
async fn dropped_get_streams_return_upstream_streams_and_fds_to_the_baseline() {
    let fx = Fixture::http(&[]);
    let gw = Gateway::start(&config(&fx));
    let pid = gw.proc.child.id();
    let fxc = &fixture_client(&fx).await;
    let http = reqwest::Client::new();

    // Warm up the pools both ways, then take the baseline.
    let mut warm = Client::new(&gw.url("/mcp"));
    warm.http = http.clone();
    warm.initialize().await;
    drop(open_get(&http, &warm).await);
    assert!(
        eventually(Duration::from_secs(10), || async move {
            stats(fxc).await["get_streams_open"] == 0
        })
        .await
    );
    let baseline_fds = fds(pid);
    let opened_before = stats(fxc).await["get_streams_opened"].as_u64().unwrap();

    // 200 open-and-drop cycles over 50 sessions: each session's last stream is dropped by the
    // client alone (no later GET replaces it, no DELETE ends the session).
    let mut sessions = Vec::new();
    for _ in 0..50 {
        let mut c = Client::new(&gw.url("/mcp"));
        // One connection pool for all, so that idle keep-alive connections do not blur the count.
        c.http = http.clone();
        c.initialize().await;
        sessions.push(c);
    }
    for _ in 0..4 {
        for c in &sessions {
            drop(open_get(&http, c).await);
        }
    }
    let opened = stats(fxc).await["get_streams_opened"].as_u64().unwrap();
    assert!(
        opened >= opened_before + 200,
        "the upstream saw {} GET streams",
        opened - opened_before
    );

    let settled = eventually(Duration::from_secs(20), || async move {
        stats(fxc).await["get_streams_open"] == 0 && fds(pid) <= baseline_fds + 8
    })
    .await;
    assert!(
        settled,
        "upstream streams still open: {}, gateway fds {} (baseline {baseline_fds})",
        stats(fxc).await["get_streams_open"],
        fds(pid)
    );

    // The sessions still work, and a new stream opens upstream again.
    let r = sessions[0].request("tools/list", json!({})).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let live = open_get(&http, &sessions[0]).await;
    assert_eq!(stats(fxc).await["get_streams_open"], 1);
    drop(live);
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_sessions_end_and_their_upstream_sessions_are_deleted() {
    let fx = Fixture::http(&[]);
    let yaml = format!("sessions:\n  idle_timeout: 2s\n{}", config(&fx));
    let gw = Gateway::start(&yaml);
    let fxc = &fixture_client(&fx).await;
    let http = reqwest::Client::new();
    let base = stats(fxc).await;
    let live_before = base["sessions_live"].as_u64().unwrap();

    let mut idle = Vec::new();
    for _ in 0..10 {
        let mut c = Client::new(&gw.url("/mcp"));
        c.initialize().await;
        idle.push(c);
    }
    // A session whose client holds its GET stream open is in use, however long.
    let mut listening = Client::new(&gw.url("/mcp"));
    listening.initialize().await;
    let stream = open_get(&http, &listening).await;
    assert_eq!(
        stats(fxc).await["sessions_live"].as_u64().unwrap(),
        live_before + 11
    );

    let reaped = eventually(Duration::from_secs(15), || async move {
        stats(fxc).await["sessions_deleted"].as_u64().unwrap() >= 10
    })
    .await;
    assert!(reaped, "{}", stats(fxc).await);
    assert_eq!(
        stats(fxc).await["sessions_live"].as_u64().unwrap(),
        live_before + 1
    );
    // An ended session is gone for its client: 404, so it starts a new one.
    let r = idle[0].request("tools/list", json!({})).await;
    assert_eq!(r.status, 404, "{}", r.raw);
    let r = listening.request("tools/list", json!({})).await;
    assert_eq!(r.status, 200, "{}", r.raw);

    // Once its client drops the stream, that session is idle too: it ends, upstream as well.
    drop(stream);
    let reaped = eventually(Duration::from_secs(15), || async move {
        let s = stats(fxc).await;
        s["sessions_live"].as_u64().unwrap() == live_before && s["get_streams_open"] == 0
    })
    .await;
    assert!(reaped, "{}", stats(fxc).await);
    let r = listening.request("tools/list", json!({})).await;
    assert_eq!(r.status, 404, "{}", r.raw);
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_per_address_are_capped_and_a_slot_comes_back() {
    let fx = Fixture::http(&[]);
    let gw = Gateway::start(&config(&fx));
    let fxc = &fixture_client(&fx).await;
    let opened_before = stats(fxc).await["sessions_opened"].as_u64().unwrap();
    let mut sessions = Vec::new();
    for _ in 0..64 {
        let mut c = Client::new(&gw.url("/mcp"));
        c.initialize().await;
        sessions.push(c);
    }
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"}}});
    let extra = Client::new(&gw.url("/mcp"));
    let refused = extra.post(&init).await;
    assert_limit(&refused, "limits.sessions_per_address", 64);
    assert_eq!(refused.last()["id"], 1);
    // Refused before anything was opened upstream for it.
    assert_eq!(
        stats(fxc).await["sessions_opened"].as_u64().unwrap(),
        opened_before + 64
    );

    // Ending one frees its slot.
    let del = reqwest::Client::new()
        .delete(gw.url("/mcp"))
        .header("mcp-session-id", sessions[0].session.as_deref().unwrap())
        .header("mcp-protocol-version", "2025-11-25")
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 200);
    let again = extra.post(&init).await;
    assert_eq!(again.status, 200, "{}", again.raw);
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_per_principal_are_capped_per_principal() {
    let issuer = auth_support::TestIssuer::start().await;
    let fx = Fixture::http(&[]);
    let yaml = format!(
        "auth:\n  issuers:\n    t: {{ issuer: \"{}\", algorithms: [ES256] }}\nservers:\n  - {{ name: main, path: /mcp, upstreams: [fx], auth: {{ scopes: [mcp:tools] }} }}\nupstreams:\n  fx: {{ kind: http, url: \"{}\", protocol: \"2025-11-25\" }}\n",
        issuer.issuer(),
        fx.url
    );
    let gw = Gateway::start(&yaml);
    let resource = gw.url("/mcp");
    let alice = issuer.token(&resource, json!({}));
    let bob = issuer.token(&resource, json!({"sub": "bob"}));
    for _ in 0..64 {
        Client::new(&resource)
            .with_bearer(&alice)
            .initialize()
            .await;
    }
    let init = json!({"jsonrpc": "2.0", "id": 7, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"}}});
    let refused = Client::new(&resource).with_bearer(&alice).post(&init).await;
    assert_limit(&refused, "limits.sessions_per_principal", 64);
    // Another principal from the same address is not affected.
    let ok = Client::new(&resource).with_bearer(&bob).post(&init).await;
    assert_eq!(ok.status, 200, "{}", ok.raw);
}

/// Starts `n` calls of the fixture's `hang` tool on `c`'s session (they never answer).
fn hang(c: &Client, n: usize) -> Vec<tokio::task::JoinHandle<()>> {
    (0..n)
        .map(|i| {
            let req = c
                .http
                .post(&c.url)
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .header("mcp-session-id", c.session.clone().unwrap())
                .header("mcp-protocol-version", "2025-11-25")
                .body(
                    json!({"jsonrpc": "2.0", "id": 1000 + i, "method": "tools/call",
                        "params": {"name": "hang", "arguments": {}}})
                    .to_string(),
                );
            tokio::spawn(async move {
                if let Ok(r) = req.send().await {
                    let _ = r.bytes().await;
                }
            })
        })
        .collect()
}

async fn wait_calls(fxc: &Client, n: u64) {
    let reached = eventually(Duration::from_secs(20), || async move {
        stats(fxc).await["calls"].as_u64().unwrap() >= n
    })
    .await;
    assert!(reached, "{}", stats(fxc).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_per_session_are_capped_and_answers_still_pass() {
    let fx = Fixture::http(&[]);
    let gw = Gateway::start(&config(&fx));
    let fxc = &fixture_client(&fx).await;
    let http = reqwest::Client::new();
    let mut c = Client::new(&gw.url("/mcp"));
    c.initialize().await;
    let _stream = open_get(&http, &c).await;
    // The fixture's own `stats` calls count too: read the starting point.
    let calls_before = stats(fxc).await["calls"].as_u64().unwrap();
    let mut calls = hang(&c, 15);
    wait_calls(fxc, calls_before + 15).await;

    let refused = c.request("tools/list", json!({})).await;
    assert_limit(&refused, "limits.streams_per_session", 16);
    // Notifications and answers to the server never wait for a slot.
    let n = c
        .post(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .await;
    assert_eq!(n.status, 202, "{}", n.raw);
    // Another session of the same caller is not affected.
    let mut other = Client::new(&gw.url("/mcp"));
    other.initialize().await;
    let r = other.request("tools/list", json!({})).await;
    assert_eq!(r.status, 200, "{}", r.raw);

    // A call whose client goes away frees its slot.
    calls.pop().unwrap().abort();
    let c = &c;
    let freed = eventually(Duration::from_secs(10), || async move {
        status_of(c, "tools/list").await == 200
    })
    .await;
    assert!(freed);
    for t in calls {
        t.abort();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_per_principal_are_capped_across_sessions() {
    let fx = Fixture::http(&[]);
    let gw = Gateway::start(&config(&fx));
    let fxc = &fixture_client(&fx).await;
    let http = reqwest::Client::new();
    let calls_before = stats(fxc).await["calls"].as_u64().unwrap();
    // 8 sessions × (a GET stream + 15 calls in progress) = 128 streams of this address.
    let mut streams = Vec::new();
    let mut calls = Vec::new();
    for _ in 0..8 {
        let mut c = Client::new(&gw.url("/mcp"));
        c.initialize().await;
        streams.push(open_get(&http, &c).await);
        calls.extend(hang(&c, 15));
    }
    wait_calls(fxc, calls_before + 120).await;

    let mut ninth = Client::new(&gw.url("/mcp"));
    ninth.initialize().await;
    let refused = ninth.request("tools/list", json!({})).await;
    assert_limit(&refused, "limits.streams_per_principal", 128);
    let get = http
        .get(gw.url("/mcp"))
        .header("accept", "text/event-stream")
        .header("mcp-session-id", ninth.session.as_deref().unwrap())
        .header("mcp-protocol-version", "2025-11-25")
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 429);
    assert!(get.headers().contains_key("retry-after"));

    // Closing a stream frees a slot.
    drop(streams.pop());
    let ninth = &ninth;
    let freed = eventually(Duration::from_secs(10), || async move {
        status_of(ninth, "tools/list").await == 200
    })
    .await;
    assert!(freed);
    for t in calls {
        t.abort();
    }
}

fn stateless_meta() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": { "elicitation": {} }
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn parked_calls_per_principal_are_capped() {
    let fx = Fixture::http(&[]);
    let gw = Gateway::start(&config(&fx));
    let client = Client::new(&gw.url("/mcp"));
    let mut states = Vec::new();
    for id in 1..=16 {
        let r = client
            .stateless_call(
                id,
                json!({"name": "elicit", "arguments": {}, "_meta": stateless_meta()}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.raw);
        let result = &r.last()["result"];
        assert_eq!(result["resultType"], "input_required", "{}", r.raw);
        states.push(result["requestState"].as_str().unwrap().to_owned());
    }
    let refused = client
        .stateless_call(
            17,
            json!({"name": "elicit", "arguments": {}, "_meta": stateless_meta()}),
        )
        .await;
    assert_limit(&refused, "limits.parked_calls_per_principal", 16);
    assert_eq!(refused.last()["id"], 17);

    // Answering one resumes it (and frees its place): the next question parks again.
    let answer = json!({"action": "accept", "content": {"name": "Ada"}});
    let retry = client
        .stateless_call(
            18,
            json!({"name": "elicit", "arguments": {}, "_meta": stateless_meta(),
                "requestState": states[0], "inputResponses": {"input-1": answer}}),
        )
        .await;
    assert!(retry.text().contains("Ada"), "{}", retry.raw);
    let parked = client
        .stateless_call(
            19,
            json!({"name": "elicit", "arguments": {}, "_meta": stateless_meta()}),
        )
        .await;
    assert_eq!(
        parked.last()["result"]["resultType"],
        "input_required",
        "{}",
        parked.raw
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_continues_a_session_another_one_ended_for_being_idle() {
    const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    let fx = Fixture::http(&[]);
    let keyed = |extra: &str| {
        format!(
            "sessions:\n  keys:\n    - {{ id: k1, secret: {{ env: GH_KEY }} }}\n{extra}{}",
            config(&fx)
        )
    };
    let env = [("GH_KEY", KEY)];
    let a = Gateway::start_with_env(&keyed("  idle_timeout: 1s\n"), &env);
    let b = Gateway::start_with_env(&keyed(""), &env);
    let fxc = &fixture_client(&fx).await;
    let mut client = Client::new(&a.url("/mcp"));
    client.initialize().await;
    let deleted = eventually(Duration::from_secs(15), || async move {
        stats(fxc).await["sessions_deleted"].as_u64().unwrap() >= 1
    })
    .await;
    assert!(deleted, "replica a never ended the idle session");

    // On b the id is still good; its upstream session is gone, so b opens a new one, for the
    // GET stream (opened first here) as for calls.
    client.url = b.url("/mcp");
    let http = reqwest::Client::new();
    let _stream = open_get(&http, &client).await;
    assert_eq!(stats(fxc).await["get_streams_open"], 1);
    let r = client.request("tools/list", json!({})).await;
    assert_eq!(r.status, 200, "{}", r.raw);
}

/// Opens a 2026-07-28 `subscriptions/listen` stream and waits for its acknowledgement.
async fn open_listen(http: &reqwest::Client, url: &str) -> reqwest::Response {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "subscriptions/listen", "params": {
        "notifications": {"toolsListChanged": true}, "_meta": stateless_meta()}});
    let mut resp = http
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "subscriptions/listen")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let first = tokio::time::timeout(Duration::from_secs(10), resp.chunk())
        .await
        .expect("the acknowledgement comes at once");
    assert!(first.unwrap().is_some());
    resp
}

#[tokio::test(flavor = "multi_thread")]
async fn dropped_listen_streams_free_their_slots_and_fds() {
    let fx = Fixture::http(&[]);
    let gw = Gateway::start(&config(&fx));
    let pid = gw.proc.child.id();
    let fxc = &fixture_client(&fx).await;
    let http = reqwest::Client::new();
    let url = gw.url("/mcp");
    drop(open_listen(&http, &url).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let baseline_fds = fds(pid);

    // More cycles than limits.streams_per_principal (128): a slot kept by a dropped stream
    // would refuse the later ones with 429.
    for _ in 0..200 {
        drop(open_listen(&http, &url).await);
    }
    // Stateless listeners share the upstream stream of the shared session, which closes
    // once the last of them has gone.
    let settled = eventually(Duration::from_secs(20), || async move {
        stats(fxc).await["get_streams_open"] == 0 && fds(pid) <= baseline_fds + 8
    })
    .await;
    assert!(
        settled,
        "upstream streams open: {}, gateway fds {} (baseline {baseline_fds})",
        stats(fxc).await["get_streams_open"],
        fds(pid)
    );
    // And a listener that comes later gets a stream again.
    let _live = open_listen(&http, &url).await;
    assert_eq!(stats(fxc).await["get_streams_open"], 1);
}
