//! Hostile and malformed requests: each gets the documented HTTP status and a JSON-RPC error
//! body that says what is wrong, and the gateway keeps serving afterwards.

mod common;

use common::{Client, Gateway, stdio_fixture_upstream};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::time::Duration;

fn config() -> String {
    format!(
        "limits:\n  max_body_bytes: 65536\n  body_read_timeout: 1s\nservers:\n  - name: main\n    path: /mcp\n    upstreams: [fx]\nupstreams:\n{}",
        stdio_fixture_upstream("fx", &[])
    )
}

struct Case {
    name: &'static str,
    method: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    status: u16,
    code: Option<i64>,
    says: &'static str,
}

const JSON_AND_SSE: &str = "application/json, text/event-stream";

fn post(
    name: &'static str,
    body: &str,
    status: u16,
    code: Option<i64>,
    says: &'static str,
) -> Case {
    Case {
        name,
        method: "POST",
        headers: vec![
            ("content-type", "application/json".into()),
            ("accept", JSON_AND_SSE.into()),
        ],
        body: body.as_bytes().to_vec(),
        status,
        code,
        says,
    }
}

fn with(mut c: Case, k: &'static str, v: &str) -> Case {
    c.headers.retain(|(n, _)| *n != k);
    c.headers.push((k, v.to_owned()));
    c
}

fn without(mut c: Case, k: &'static str) -> Case {
    c.headers.retain(|(n, _)| *n != k);
    c
}

const LIST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;

fn cases(session: &str, ended: &str) -> Vec<Case> {
    let s = |c: Case| {
        with(
            with(c, "mcp-session-id", session),
            "mcp-protocol-version",
            "2025-11-25",
        )
    };
    let stateless = |c: Case, method: &str| {
        with(
            with(c, "mcp-protocol-version", "2026-07-28"),
            "mcp-method",
            method,
        )
    };
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"pad":"{}"}}}}"#,
        "x".repeat(70_000)
    );
    let deep = format!("{}{}", "[".repeat(30_000), "]".repeat(30_000));
    vec![
        with(
            post("Accept of neither", LIST, 406, Some(-32003), "Accept"),
            "accept",
            "text/html",
        ),
        with(
            post("Accept without SSE", LIST, 406, None, "text/event-stream"),
            "accept",
            "application/json",
        ),
        with(
            post("Accept without JSON", LIST, 406, None, "application/json"),
            "accept",
            "text/event-stream",
        ),
        with(
            post(
                "text/plain body",
                LIST,
                415,
                Some(-32600),
                "Content-Type: application/json",
            ),
            "content-type",
            "text/plain",
        ),
        without(
            post("no Content-Type", LIST, 415, None, "Content-Type"),
            "content-type",
        ),
        s(post(
            "truncated JSON",
            "{\"jsonrpc\":",
            400,
            Some(-32700),
            "not valid JSON",
        )),
        s(post("empty body", "", 400, Some(-32700), "empty")),
        Case {
            body: b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"\xff\"}".to_vec(),
            ..s(post("invalid UTF-8", "", 400, Some(-32700), ""))
        },
        s(post(
            "batch",
            &format!("[{LIST}]"),
            400,
            Some(-32600),
            "batches",
        )),
        s(post("bare number", "42", 400, Some(-32600), "JSON object")),
        s(post(
            "wrong jsonrpc version",
            r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#,
            400,
            Some(-32600),
            "\"2.0\"",
        )),
        s(post(
            "missing jsonrpc",
            r#"{"id":1,"method":"ping"}"#,
            400,
            Some(-32600),
            "missing",
        )),
        s(post(
            "null request id",
            r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#,
            400,
            Some(-32600),
            "null",
        )),
        s(post(
            "fractional id",
            r#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#,
            400,
            Some(-32600),
            "integer",
        )),
        s(post(
            "method not a string",
            r#"{"jsonrpc":"2.0","id":1,"method":5}"#,
            400,
            Some(-32600),
            "string",
        )),
        s(post(
            "params a string",
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":"x"}"#,
            400,
            Some(-32600),
            "params",
        )),
        s(post(
            "result and error",
            r#"{"jsonrpc":"2.0","id":1,"result":{},"error":{"code":1,"message":"m"}}"#,
            400,
            Some(-32600),
            "both",
        )),
        s(post(
            "neither method nor result",
            r#"{"jsonrpc":"2.0","id":1}"#,
            400,
            Some(-32600),
            "method",
        )),
        s(post("deep nesting", &deep, 400, None, "")),
        s(post("oversized body", &big, 413, None, "65536")),
        post("no session id", LIST, 400, None, "Mcp-Session-Id"),
        with(
            post("unknown session id", LIST, 404, None, "initialize"),
            "mcp-session-id",
            "k1.bm90IGEgc2Vzc2lvbg",
        ),
        with(
            post("forged session id", LIST, 404, None, "does not exist"),
            "mcp-session-id",
            &format!("{}AA", &session[..session.len() - 2]),
        ),
        with(
            post("ended session", LIST, 404, None, "ended"),
            "mcp-session-id",
            ended,
        ),
        with(
            s(post(
                "unsupported version header",
                LIST,
                400,
                None,
                "unsupported",
            )),
            "mcp-protocol-version",
            "1999-01-01",
        ),
        with(
            s(post("foreign Origin", LIST, 403, None, "origin")),
            "origin",
            "http://evil.example",
        ),
        with(
            s(post("foreign Host", LIST, 403, None, "host")),
            "host",
            "evil.example",
        ),
        stateless(
            post(
                "2026: Mcp-Method mismatch",
                LIST,
                400,
                Some(-32020),
                "does not match",
            ),
            "tools/call",
        ),
        without(
            with(
                post(
                    "2026: Mcp-Method missing",
                    LIST,
                    400,
                    Some(-32020),
                    "Mcp-Method",
                ),
                "mcp-protocol-version",
                "2026-07-28",
            ),
            "mcp-method",
        ),
        with(
            stateless(
                post(
                    "2026: Mcp-Name mismatch",
                    r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}"#,
                    400,
                    Some(-32020),
                    "Mcp-Name",
                ),
                "tools/call",
            ),
            "mcp-name",
            "other",
        ),
        stateless(
            post(
                "2026: Mcp-Name missing",
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}"#,
                400,
                Some(-32020),
                "Mcp-Name",
            ),
            "tools/call",
        ),
        stateless(
            post(
                "2026: _meta version differs from header",
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2025-11-25"}}}"#,
                400,
                Some(-32020),
                "_meta",
            ),
            "tools/list",
        ),
        Case {
            method: "GET",
            ..with(
                without(
                    post(
                        "GET without SSE in Accept",
                        "",
                        406,
                        None,
                        "text/event-stream",
                    ),
                    "content-type",
                ),
                "accept",
                "application/json",
            )
        },
        Case {
            method: "GET",
            ..with(
                post("GET in 2026-07-28", "", 405, None, "subscriptions/listen"),
                "mcp-protocol-version",
                "2026-07-28",
            )
        },
        Case {
            method: "DELETE",
            ..with(
                post("DELETE in 2026-07-28", "", 405, None, "no sessions"),
                "mcp-protocol-version",
                "2026-07-28",
            )
        },
        Case {
            method: "PUT",
            ..post("PUT", LIST, 405, None, "POST")
        },
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_requests_get_precise_errors() {
    let gw = Gateway::start(&config());
    let url = gw.url("/mcp");
    let mut client = Client::new(&url);
    client.initialize().await;
    let session = client.session.clone().unwrap();
    let mut ended_client = Client::new(&url);
    ended_client.initialize().await;
    let ended = ended_client.session.clone().unwrap();
    let del = client
        .http
        .delete(&url)
        .header("mcp-session-id", &ended)
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 200);

    let all = cases(&session, &ended);
    assert!(all.len() >= 30, "the matrix shrank to {}", all.len());
    let http = reqwest::Client::new();
    let mut failures = Vec::new();
    for case in all {
        let mut req = http
            .request(case.method.parse().unwrap(), &url)
            .body(case.body.clone());
        for (k, v) in &case.headers {
            req = req.header(*k, v);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = resp.text().await.unwrap();
        let parsed: Option<Value> = serde_json::from_str(&body).ok();
        let problem = if status != case.status {
            Some(format!("status {status}, expected {}", case.status))
        } else if !ct.starts_with("application/json") {
            Some(format!("content-type {ct:?}"))
        } else if let Some(v) = &parsed {
            let code = v.pointer("/error/code").and_then(Value::as_i64);
            let msg = v
                .pointer("/error/message")
                .and_then(Value::as_str)
                .unwrap_or("");
            let id_ok = v
                .get("id")
                .is_some_and(|id| id.is_null() || *id == json!(1));
            if v.get("jsonrpc") != Some(&json!("2.0")) || !id_ok {
                Some("not a JSON-RPC error echoing the request id (or null)".into())
            } else if case.code.is_some() && code != case.code {
                Some(format!("code {code:?}, expected {:?}", case.code))
            } else if !msg.to_lowercase().contains(&case.says.to_lowercase()) {
                Some(format!("message {msg:?} does not mention {:?}", case.says))
            } else {
                None
            }
        } else {
            Some("body is not JSON".into())
        };
        if let Some(p) = problem {
            failures.push(format!(
                "{}: {p}; body: {}",
                case.name,
                body.chars().take(300).collect::<String>()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // Still serving, and the upstream was never bothered by the garbage.
    let names = client.tool_names().await;
    assert!(names.contains(&"echo".to_owned()), "{names:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn json_rpc_level_errors_name_the_problem() {
    let gw = Gateway::start(&config());
    let mut client = Client::new(&gw.url("/mcp"));
    client.initialize().await;
    let r = client.call_tool("no-such-tool", json!({})).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.error_code(), Some(-32602), "{}", r.raw);
    assert!(r.raw.contains("no-such-tool"), "{}", r.raw);

    let r = client.request("tools/call", json!({"arguments": {}})).await;
    assert_eq!(r.error_code(), Some(-32602), "{}", r.raw);
    assert!(r.raw.contains("name"), "{}", r.raw);

    let r = client
        .request("tools/list", json!({"cursor": "not-a-cursor"}))
        .await;
    assert_eq!(r.error_code(), Some(-32602), "{}", r.raw);

    let fresh = Client::new(&gw.url("/mcp"));
    let r = fresh
        .post(&json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"capabilities":{}}}))
        .await;
    assert_eq!(r.error_code(), Some(-32602), "{}", r.raw);
    assert!(r.raw.contains("protocolVersion"), "{}", r.raw);
}

#[test]
fn a_slow_body_times_out_with_408() {
    let gw = Gateway::start(&config());
    let addr = gw.base.trim_start_matches("http://").to_owned();
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nAccept: {JSON_AND_SSE}\r\nContent-Length: 100\r\n\r\n{{\"jsonrpc\":"
    )
    .unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("not received in time"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_paths_are_404_and_health_endpoints_answer() {
    let gw = Gateway::start(&config());
    let http = reqwest::Client::new();
    let r = http.post(gw.url("/nope")).body("{}").send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        http.get(gw.ops_url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        http.get(gw.ops_url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}
