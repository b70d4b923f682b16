//! Tool parameters mirrored into `Mcp-Param-*` headers (SEP-2243, `x-mcp-header`) through the
//! default configuration, in front of the fixture's 2026-07-28 side, which refuses a call whose
//! headers do not match its body: the gateway checks what 2026-07-28 clients send (400/-32020
//! of its own), sends the headers itself on the 2026-07-28 wire (for session clients too), and
//! learns the annotations even when a call comes before any listing.

mod common;

use common::{Client, Fixture, Gateway, Reply};
use serde_json::{Value, json};

fn gateway(fx: &Fixture) -> Gateway {
    Gateway::start(&format!(
        "servers:\n  - {{ name: main, path: /mcp, upstreams: [fx] }}\nupstreams:\n  fx: {{ kind: http, url: \"{}\" }}\n",
        fx.url
    ))
}

fn meta() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "param-headers-test", "version": "1"}
    })
}

/// A 2026-07-28 `tools/call` of `regional_echo` with `region` and the given extra headers.
async fn call(c: &Client, region: &str, extra: &[(&str, &str)]) -> Reply {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "regional_echo", "arguments": {"region": region, "text": "hi"}, "_meta": meta()
    }});
    let mut headers = vec![
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/call"),
        ("mcp-name", "regional_echo"),
    ];
    headers.extend_from_slice(extra);
    c.post_raw(serde_json::to_vec(&body).unwrap(), &headers)
        .await
}

fn text(r: &Reply) -> String {
    r.last()["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stateless_clients_headers_are_checked_before_any_listing_and_sent_on() {
    for generations in ["both", "stateless"] {
        let fx = Fixture::http(&["--generations", generations]);
        let gw = gateway(&fx);
        let c = Client::new(&gw.url("/mcp"));

        // The first request of all is a call: the gateway lists to learn the annotation.
        let ok = call(&c, "us-west1", &[("mcp-param-region", "us-west1")]).await;
        assert_eq!(ok.status, 200, "{generations}: {}", ok.raw);
        assert!(text(&ok).contains("us-west1"), "{generations}: {}", ok.raw);

        let encoded = call(
            &c,
            "Hello, 世界",
            &[("mcp-param-region", "=?base64?SGVsbG8sIOS4lueVjA==?=")],
        )
        .await;
        assert_eq!(encoded.status, 200, "{generations}: {}", encoded.raw);
        assert!(text(&encoded).contains("Hello, 世界"), "{}", encoded.raw);

        // Refusals are the gateway's own (its message), before anything reaches the upstream.
        for (label, extra) in [
            ("missing", vec![]),
            ("different", vec![("mcp-param-region", "eu-north1")]),
            (
                "bad base64",
                vec![("mcp-param-region", "=?base64?SGVsbG8?=")],
            ),
        ] {
            let r = call(&c, "us-west1", &extra).await;
            assert_eq!(r.status, 400, "{generations} {label}: {}", r.raw);
            assert_eq!(r.error_code(), Some(-32020), "{label}: {}", r.raw);
            assert!(
                r.error_message()
                    .starts_with("Header mismatch: Mcp-Param-Region"),
                "{label}: {}",
                r.error_message()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_client_reaches_a_stateless_upstream_that_checks_mirrored_headers() {
    let fx = Fixture::http(&["--generations", "stateless"]);
    let gw = gateway(&fx);
    let mut c = Client::new(&gw.url("/mcp"));
    c.initialize().await;
    // No listing first: the gateway learns the annotation on the call's behalf, and sends
    // the header the 2026-07-28 upstream requires (Base64 for a value a header cannot carry).
    for region in ["us-west1", " padded ", "Grüße"] {
        let r = c
            .call_tool("regional_echo", json!({"region": region, "text": "hi"}))
            .await;
        assert_eq!(r.status, 200, "{}", r.raw);
        assert!(r.last().get("error").is_none(), "{region:?}: {}", r.raw);
        assert!(text(&r).contains(region.trim()), "{region:?}: {}", r.raw);
    }
}
