//! OpenTelemetry: spans of the request path exported over OTLP/HTTP to a collector (a test
//! receiver on loopback), continuing the client's W3C trace and passing it to the upstream.

mod common;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use common::{Client, Fixture, Gateway};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

async fn collector() -> (String, Received, tokio::task::JoinHandle<()>) {
    let received: Received = Default::default();
    let app = axum::Router::new()
        .route(
            "/v1/traces",
            post(
                |State(r): State<Received>, headers: http::HeaderMap, body: Bytes| async move {
                    let ct = headers
                        .get("content-type")
                        .map(|v| v.to_str().unwrap().to_owned())
                        .unwrap_or_default();
                    r.lock().unwrap().push((ct, body.to_vec()));
                    ""
                },
            ),
        )
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (url, received, task)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_and_the_client_trace_reaches_the_upstream() {
    let (endpoint, received, task) = collector().await;
    let fixture = Fixture::http(&[]);
    let yaml = format!(
        "traces:\n  otlp_endpoint: \"{endpoint}\"\n  export_interval: 100ms\n  service_name: gatehouse-test\nservers:\n  - {{ name: main, path: /mcp, upstreams: [fx] }}\nupstreams:\n  fx: {{ kind: http, url: \"{}\" }}\n",
        fixture.url
    );
    let gw = Gateway::start(&yaml);
    let trace_id: [u8; 16] = rand_bytes();
    let traceparent = format!("00-{}-{}-01", hex(&trace_id), "00f067aa0ba902b7");
    let mut c = Client::new(&gw.url("/mcp"));
    c.always.push(("traceparent".into(), traceparent));
    c.initialize().await;
    let r = c.call_tool("whoami", json!({})).await;
    let seen: serde_json::Value =
        serde_json::from_str(r.last()["result"]["content"][0]["text"].as_str().unwrap()).unwrap();
    let upstream_parent = seen["traceparent"]
        .as_str()
        .unwrap_or_else(|| panic!("no traceparent upstream: {seen}"));
    assert!(
        upstream_parent.starts_with(&format!("00-{}-", hex(&trace_id))),
        "{upstream_parent}"
    );
    assert!(
        !upstream_parent.contains("00f067aa0ba902b7"),
        "the upstream's parent is the gateway's own span"
    );

    // The spans arrive at the collector, in the client's trace.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let bodies = received.lock().unwrap().clone();
        let all: Vec<u8> = bodies.iter().flat_map(|(_, b)| b.clone()).collect();
        let has = |needle: &[u8]| all.windows(needle.len()).any(|w| w == needle);
        if has(&trace_id)
            && has(b"gatehouse.upstream")
            && has(b"gatehouse.request")
            && has(b"gatehouse-test")
        {
            assert!(
                bodies.iter().all(|(ct, _)| ct == "application/x-protobuf"),
                "{:?}",
                bodies.iter().map(|b| &b.0).collect::<Vec<_>>()
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "spans not exported; got {} bodies",
            bodies.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    task.abort();
}

fn rand_bytes() -> [u8; 16] {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    b[0] |= 1; // never the invalid all-zero id
    b
}
