//! The serving layer under hostile clients, with the default configuration unless a test says
//! why not: metrics labels from closed sets, connection timers and caps, the operations
//! listener, readiness that follows the store, and the SIGTERM drain.

mod common;

use common::{Client, Gateway, stdio_fixture_upstream};
use serde_json::json;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

fn stdio_config() -> String {
    format!(
        "servers:\n  - {{ name: main, path: /mcp, upstreams: [fx] }}\nupstreams:\n{}",
        stdio_fixture_upstream("fx", &[])
    )
}

fn addr_of(base: &str) -> SocketAddr {
    base.trim_start_matches("http://").parse().unwrap()
}

/// Series in a Prometheus exposition (sample lines).
fn series(metrics: &str) -> usize {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .count()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn caller_chosen_methods_and_names_do_not_grow_metrics_or_memory() {
    let gw = Gateway::start(&stdio_config());
    let mut client = Client::new(&gw.url("/mcp"));
    client.initialize().await;
    // Every kind of answer once, so that the baseline has their series.
    assert_eq!(
        client.call_tool("echo", json!({"text": "hi"})).await.text(),
        "hi"
    );
    client.call_tool("no-such-tool", json!({})).await;
    client.request("no/such-method", json!({})).await;
    let baseline_metrics = gw.metrics().await;
    let baseline = series(&baseline_metrics);
    let rss_before = rss_kib(gw.proc.child.id());

    let nonce = std::process::id();
    let client = std::sync::Arc::new(client);
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..250 {
                let method = format!("x/{nonce}-{worker}-{i}");
                let body = json!({"jsonrpc": "2.0", "id": i, "method": method, "params": {}});
                c.post(&body).await;
                let tool = format!("tool-{nonce}-{worker}-{i}");
                let body = json!({"jsonrpc": "2.0", "id": i, "method": "tools/call",
                    "params": {"name": tool, "arguments": {}}});
                c.post(&body).await;
            }
            // A few very long names: each once grew every labelled family by its length.
            for i in 0..4 {
                let long = format!("{worker}-{i}-{}", "m".repeat(256 * 1024));
                let body = json!({"jsonrpc": "2.0", "id": i, "method": long.clone(), "params": {}});
                c.post(&body).await;
                let body = json!({"jsonrpc": "2.0", "id": i, "method": "tools/call",
                    "params": {"name": long, "arguments": {}}});
                c.post(&body).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let after = gw.metrics().await;
    assert!(
        series(&after) <= baseline + 8,
        "4,032 caller-chosen methods and names added {} series",
        series(&after) - baseline
    );
    assert!(
        after.len() < baseline_metrics.len() * 2 + 16 * 1024,
        "the exposition grew from {} to {} bytes",
        baseline_metrics.len(),
        after.len()
    );
    assert!(after.contains(r#"method="other""#), "{after}");
    assert!(after.contains(r#"tool="unknown""#), "{after}");
    assert!(!after.contains(&format!("x/{nonce}")));
    assert!(!after.contains(&format!("tool-{nonce}")));
    let grown_mib = rss_kib(gw.proc.child.id()).saturating_sub(rss_before) / 1024;
    eprintln!("the gateway's RSS grew by {grown_mib} MiB");
    eprintln!("the gateway's RSS grew by {grown_mib} MiB");
    assert!(
        grown_mib < 48,
        "the gateway's memory grew by {grown_mib} MiB"
    );
    // A routed name still labels its own series.
    assert!(after.contains(r#"tool="echo",outcome="ok""#), "{after}");
}

/// Opens a raw connection from `source` (an address in 127.0.0.0/8) to `to`.
async fn connect_from(source: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

/// Whatever the server sends before closing, within `wait`.
async fn read_all(stream: &mut TcpStream, wait: Duration) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_trickles_its_headers_is_cut_at_the_header_read_timeout() {
    let gw = Gateway::start(&stdio_config());
    let mut slow = TcpStream::connect(addr_of(&gw.base)).await.unwrap();
    let started = Instant::now();
    slow.write_all(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    let mut cut_after = None;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut probe = [0u8; 512];
        // A byte of a header line every half second: never a complete head.
        let wrote = slow.write_all(b"X").await;
        let read = tokio::time::timeout(Duration::from_millis(10), slow.read(&mut probe)).await;
        if wrote.is_err() || matches!(read, Ok(Ok(0)) | Ok(Err(_))) {
            cut_after = Some(started.elapsed());
            break;
        }
        // The operations listener keeps answering meanwhile.
        let health = reqwest::get(gw.ops_url("/healthz")).await.unwrap();
        assert_eq!(health.status(), 200);
    }
    let cut_after = cut_after.expect("the slow client was never cut");
    assert!(
        cut_after >= Duration::from_secs(9) && cut_after < Duration::from_secs(14),
        "cut after {cut_after:?}, expected about the default 10s"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn at_the_per_client_cap_new_connections_are_refused_fast_while_established_ones_work() {
    let gw = Gateway::start(&stdio_config());
    let to = addr_of(&gw.base);
    // One established client with a keep-alive connection.
    let mut client = Client::new(&gw.url("/mcp"));
    client.initialize().await;
    // The default per-client cap is 256: fill it up from 127.0.0.1 with idle connections.
    let mut idle = Vec::new();
    for _ in 0..255 {
        idle.push(connect_from("127.0.0.1", to).await);
    }
    let started = Instant::now();
    let mut refused = connect_from("127.0.0.1", to).await;
    let answer = read_all(&mut refused, Duration::from_secs(2)).await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refusal took {:?}",
        started.elapsed()
    );
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    assert!(answer.contains("retry-after: 1"), "{answer}");
    let body: serde_json::Value =
        serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(
        body["error"]["data"]["limit"],
        "limits.connections.per_client"
    );
    assert_eq!(body["error"]["data"]["max"], 256);
    // The established connection still serves calls.
    assert_eq!(
        client
            .call_tool("echo", json!({"text": "still"}))
            .await
            .text(),
        "still"
    );
    // Another client address is not affected, and the probes answer.
    let mut other = connect_from("127.0.0.2", to).await;
    other
        .write_all(b"GET /nope HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = read_all(&mut other, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 404 "), "{answer}");
    let ready = reqwest::get(gw.ops_url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    // Closing connections gives their places back.
    drop(idle);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut again = connect_from("127.0.0.1", to).await;
    again
        .write_all(b"GET /nope HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = read_all(&mut again, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 404 "), "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn at_the_global_cap_every_address_is_refused() {
    // A small global cap, so that a test can reach it without thousands of sockets.
    let yaml = format!(
        "limits: {{ connections: {{ max: 6, per_client: 4 }} }}\n{}",
        stdio_config()
    );
    let gw = Gateway::start(&yaml);
    let to = addr_of(&gw.base);
    let mut held = Vec::new();
    for source in ["127.0.0.1", "127.0.0.2"] {
        for _ in 0..3 {
            held.push(connect_from(source, to).await);
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut refused = connect_from("127.0.0.3", to).await;
    let answer = read_all(&mut refused, Duration::from_secs(2)).await;
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    assert!(
        answer.contains(r#""limit":"limits.connections.max""#),
        "{answer}"
    );
    // The operations listener has caps of its own.
    assert_eq!(
        reqwest::get(gw.ops_url("/healthz")).await.unwrap().status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_and_probes_are_on_the_operations_listener_only() {
    let gw = Gateway::start(&stdio_config());
    let http = reqwest::Client::new();
    for path in ["/metrics", "/healthz", "/readyz"] {
        let r = http.get(gw.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path} on the MCP listener");
        let r = http.get(gw.ops_url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path} on the ops listener");
    }
    let ready: serde_json::Value = http
        .get(gw.ops_url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["ready"], true, "{ready}");
    assert_eq!(ready["checks"]["store"], "ok", "{ready}");
    // The default operations address is loopback.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["check", "--config"])
        .arg(&gw.config_path)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        gatehouse::config::Ops::default().listen,
        "127.0.0.1:9464",
        "metrics must not be public by default"
    );
}

/// A TCP relay to PostgreSQL that a test can cut, standing for a store that goes away.
struct StoreLink {
    port: u16,
    tasks: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl StoreLink {
    async fn start(port: u16) -> StoreLink {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let tasks: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>> =
            Default::default();
        let held = tasks.clone();
        let acceptor = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let relay = tokio::spawn(async move {
                    if let Ok(mut out) = TcpStream::connect("127.0.0.1:5432").await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
                held.lock().unwrap().push(relay);
            }
        });
        tasks.lock().unwrap().push(acceptor);
        StoreLink { port, tasks }
    }

    fn cut(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

async fn readiness(gw: &Gateway) -> (u16, serde_json::Value) {
    let r = reqwest::get(gw.ops_url("/readyz")).await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_follows_the_store() {
    let schema = format!("gh_ready_{}", std::process::id());
    let admin = sqlx::PgPool::connect("postgres://postgres@127.0.0.1:5432/test")
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&admin)
        .await
        .unwrap();
    let link = StoreLink::start(0).await;
    let yaml = format!(
        "store: {{ url: \"postgres://postgres@127.0.0.1:{}/test?options=-c%20search_path%3D{schema}\" }}\n{}",
        link.port,
        stdio_config()
    );
    let gw = Gateway::start(&yaml);
    let (status, body) = readiness(&gw).await;
    assert_eq!(
        (status, &body["checks"]["store"]),
        (200, &json!("ok")),
        "{body}"
    );

    link.cut();
    let deadline = Instant::now() + Duration::from_secs(15);
    let body = loop {
        let (status, body) = readiness(&gw).await;
        if status == 503 {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "still ready without a store: {body}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(body["ready"], false, "{body}");
    assert_ne!(body["checks"]["store"], "ok", "{body}");
    // Liveness is another question: the process is fine.
    assert_eq!(
        reqwest::get(gw.ops_url("/healthz")).await.unwrap().status(),
        200
    );

    // The store comes back on the same address; so does readiness.
    let _back = StoreLink::start(link.port).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = readiness(&gw).await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "not ready again: {body}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    drop(gw);
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&admin)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_can_require_upstreams() {
    let yaml = format!(
        "ops: {{ listen: 127.0.0.1:0, ready_requires: [fx, gone] }}\nservers:\n  - {{ name: main, path: /mcp, upstreams: [fx, gone] }}\nupstreams:\n{}  gone: {{ kind: http, url: \"http://127.0.0.1:1/mcp\" }}\n",
        stdio_fixture_upstream("fx", &[])
    );
    let gw = Gateway::start(&yaml);
    let (status, body) = readiness(&gw).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["checks"]["upstream fx"], "ok", "{body}");
    assert!(
        body["checks"]["upstream gone"]
            .as_str()
            .unwrap()
            .contains(r#"upstream "gone""#),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_then_lets_in_flight_calls_finish() {
    let mut gw = Gateway::start(&stdio_config());
    let mut client = Client::new(&gw.url("/mcp"));
    client.initialize().await;
    let slow = {
        let body = json!({"jsonrpc": "2.0", "id": 99, "method": "tools/call",
            "params": {"name": "slow", "arguments": {"ms": 3000}}});
        let mut c = Client::new(&client.url);
        c.session = client.session.clone();
        tokio::spawn(async move { c.post(&body).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let signalled = Instant::now();
    gw.proc.signal(libc::SIGTERM);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = readiness(&gw).await;
    assert_eq!(status, 503, "{body}");
    assert!(body["checks"]["draining"].is_string(), "{body}");
    // During the drain new requests are still served (on a fresh connection, too).
    let mut late = Client::new(&gw.url("/mcp"));
    late.initialize().await;
    assert_eq!(
        late.call_tool("echo", json!({"text": "late"})).await.text(),
        "late"
    );
    // The call that was in flight completes.
    let reply = slow.await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.raw);
    assert!(reply.last()["result"].is_object(), "{}", reply.raw);
    // Then the gateway stops: after the default 5s drain, well before the grace runs out.
    while gw.proc.running() && signalled.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!gw.proc.running(), "the gateway did not stop");
    let took = signalled.elapsed();
    assert!(
        took >= Duration::from_millis(4500) && took < Duration::from_secs(12),
        "stopped {took:?} after SIGTERM"
    );
    assert_eq!(gw.proc.child.wait().unwrap().code(), Some(0));
}
