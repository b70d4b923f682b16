//! Large results stream through the gateway: the client sees the first half of an answer while
//! the upstream has not yet written the second, in JSON and SSE, for both protocol generations.
//! An answer that turns out to be for another request is cut off, not delivered.

mod common;

use common::{Client, Fixture, Gateway, http_fixture_config, parse_body};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const PAUSE_MS: u64 = 1500;
const BYTES: usize = 1 << 20;

/// What one streamed call looked like from the client.
struct Observed {
    first_byte_after: Duration,
    total: Duration,
    body: Result<String, String>,
    content_type: String,
}

async fn call_trickle(client: &Client, stateless: bool, args: Value) -> Observed {
    let mut params = json!({"name": "trickle", "arguments": args});
    if stateless {
        params["_meta"] = json!({
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {}
        });
    }
    let body = json!({"jsonrpc": "2.0", "id": 41, "method": "tools/call", "params": params});
    let mut req = client
        .http
        .post(&client.url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body.to_string());
    if stateless {
        req = req
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", "tools/call")
            .header("mcp-name", "trickle");
    } else {
        req = req
            .header("mcp-session-id", client.session.as_deref().unwrap())
            .header("mcp-protocol-version", "2025-11-25");
    }
    let start = Instant::now();
    let mut resp = req.send().await.expect("request failed");
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
    let mut first_byte_after = None;
    let mut bytes = Vec::new();
    let body = loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                // SSE keep-alive comments are not part of the answer.
                if first_byte_after.is_none() && !c.starts_with(b":") {
                    first_byte_after = Some(start.elapsed());
                }
                bytes.extend_from_slice(&c);
            }
            Ok(None) => break Ok(String::from_utf8(bytes).unwrap()),
            Err(e) => break Err(format!("{e} after {} bytes", bytes.len())),
        }
    };
    Observed {
        first_byte_after: first_byte_after.unwrap_or(Duration::MAX),
        total: start.elapsed(),
        body,
        content_type,
    }
}

async fn gateway_for(fixture_args: &[&str]) -> (Fixture, Gateway) {
    let fx = Fixture::http(fixture_args);
    let gw = Gateway::start(&http_fixture_config(&fx.url, "2025-11-25"));
    (fx, gw)
}

#[tokio::test]
async fn a_large_result_reaches_the_client_while_the_upstream_is_still_writing_it() {
    for fixture_args in [&[][..], &["--json-response"][..]] {
        let (_fx, gw) = gateway_for(fixture_args).await;
        for stateless in [false, true] {
            let mut client = Client::new(&gw.url("/mcp"));
            if !stateless {
                client.initialize().await;
            }
            let args = json!({"bytes": BYTES, "pause_ms": PAUSE_MS});
            let seen = call_trickle(&client, stateless, args).await;
            let case = format!("fixture {fixture_args:?}, stateless {stateless}");
            assert!(
                seen.first_byte_after < Duration::from_millis(PAUSE_MS - 500),
                "{case}: the first byte came after {:?}, so the gateway waited for the whole answer",
                seen.first_byte_after
            );
            assert!(
                seen.total >= Duration::from_millis(PAUSE_MS),
                "{case}: answered too soon ({:?}): {:?}",
                seen.total,
                seen.body
                    .as_ref()
                    .map(|b| (b.len(), b.chars().rev().take(100).collect::<String>()))
            );
            let body = seen.body.unwrap_or_else(|e| panic!("{case}: {e}"));
            let messages = parse_body(&seen.content_type, &body);
            let answer = messages.last().unwrap();
            assert_eq!(answer["id"], 41, "{case}");
            assert_eq!(answer["jsonrpc"], "2.0", "{case}");
            let text = answer["result"]["content"][0]["text"].as_str().unwrap();
            assert_eq!(text.len(), BYTES, "{case}");
            if stateless {
                assert_eq!(answer["result"]["resultType"], "complete", "{case}");
            } else {
                assert!(answer["result"].get("resultType").is_none(), "{case}");
            }
        }
    }
}

#[tokio::test]
async fn a_streamed_answer_to_another_request_is_cut_off() {
    for fixture_args in [&[][..], &["--json-response"][..]] {
        let (_fx, gw) = gateway_for(fixture_args).await;
        let mut client = Client::new(&gw.url("/mcp"));
        client.initialize().await;
        let args = json!({"bytes": 200_000, "pause_ms": 10, "wrong_id": true});
        let seen = call_trickle(&client, false, args).await;
        let case = format!("fixture {fixture_args:?}");
        match seen.body {
            // The body is aborted midway (JSON), or the SSE event never completes.
            Err(_) => {}
            Ok(body) => {
                let messages = if seen.content_type.starts_with("text/event-stream") {
                    parse_body(&seen.content_type, &body)
                } else {
                    serde_json::from_str::<Value>(&body).into_iter().collect()
                };
                assert!(
                    messages.iter().all(|m| m.get("result").is_none()),
                    "{case}: a result for another request was delivered: {}",
                    &body[..body.len().min(200)]
                );
            }
        }
        // The gateway stays healthy and the session usable.
        let ok = client
            .call_tool("echo", json!({"text": "still here"}))
            .await;
        assert_eq!(ok.text(), "still here", "{case}");
        assert!(
            gw.proc.stderr().contains("response id does not match"),
            "{case}: the log should say why the answer was cut off"
        );
    }
}
