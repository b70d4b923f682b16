//! Federation against scripted 2026-07-28 upstreams: merged caching hints, and upstream
//! JSON-RPC errors on HTTP 4xx relayed as they are.

use super::*;
use crate::downstream::stateless::SharedSessions;
use crate::testing::{Script, discover, result, schema_errors, virtual_server as server};
use serde_json::json;

/// An upstream whose `tools/list` offers `tool` with these caching hints (none if `Null`).
fn lister(tool: &'static str, ttl: Value, scope: Value) -> Script {
    Arc::new(move |method, _| match method {
        "server/discover" => discover(),
        "tools/list" => {
            let mut r = json!({ "resultType": "complete", "tools": [
                { "name": tool, "inputSchema": { "type": "object" } }
            ]});
            if !ttl.is_null() {
                r["ttlMs"] = ttl.clone();
            }
            if !scope.is_null() {
                r["cacheScope"] = scope.clone();
            }
            result(r)
        }
        _ => (404, json!({})),
    })
}

/// `tools/list` as the gateway itself asks for it, unfiltered.
async fn all_tools(server: &VirtualServer) -> Result<Listing, FederationError> {
    server
        .list(
            &SharedSessions::gateway(CallContext::gateway()),
            ListKind::Tools,
            None,
            None,
        )
        .await
}

async fn merged(members: Vec<(&str, Script)>, filtered: bool) -> Listing {
    let server = server(members).await;
    let all = |_: usize, _: &str| true;
    let visible: Option<&Visibility<'_>> = if filtered { Some(&all) } else { None };
    server
        .list(
            &SharedSessions::gateway(CallContext::gateway()),
            ListKind::Tools,
            None,
            visible,
        )
        .await
        .expect("the list")
}

#[tokio::test]
async fn merged_lists_take_the_shortest_ttl_and_private_if_any_member_is() {
    let both_public = merged(
        vec![
            ("a", lister("one", json!(300_000), json!("public"))),
            ("b", lister("two", json!(60_000), json!("public"))),
        ],
        false,
    )
    .await;
    assert_eq!(
        both_public.hints,
        CacheHints {
            ttl_ms: 60_000,
            public: true
        }
    );
    assert_eq!(both_public.result.items().len(), 2);

    let one_private = merged(
        vec![
            ("a", lister("one", json!(300_000), json!("public"))),
            ("b", lister("two", json!(900_000), json!("private"))),
        ],
        false,
    )
    .await;
    assert_eq!(
        one_private.hints,
        CacheHints {
            ttl_ms: 300_000,
            public: false
        }
    );

    // A member that gives no hints makes the whole list immediately stale and private.
    let one_silent = merged(
        vec![
            ("a", lister("one", json!(300_000), json!("public"))),
            ("b", lister("two", Value::Null, Value::Null)),
        ],
        false,
    )
    .await;
    assert_eq!(one_silent.hints, CacheHints::NONE);

    // A list filtered by policy is the caller's own, whatever the members say.
    let filtered = merged(
        vec![("a", lister("one", json!(300_000), json!("public")))],
        true,
    )
    .await;
    assert_eq!(
        filtered.hints,
        CacheHints {
            ttl_ms: 300_000,
            public: false
        }
    );
}

#[tokio::test]
async fn a_partial_list_is_immediately_stale() {
    let broken: Script = Arc::new(|method, _| match method {
        "server/discover" => discover(),
        _ => (500, json!({})),
    });
    let server = {
        let mut s = server(vec![
            ("a", lister("one", json!(300_000), json!("public"))),
            ("b", broken),
        ])
        .await;
        s.on_error = OnUpstreamError::Partial;
        s
    };
    let listing = all_tools(&server).await.unwrap();
    assert_eq!(listing.result.items().len(), 1);
    assert_eq!(
        listing.hints,
        CacheHints {
            ttl_ms: 0,
            public: true
        }
    );
}

#[tokio::test]
async fn merged_lists_completed_for_a_stateless_client_validate_against_the_schema() {
    let mut listing = merged(
        vec![
            ("a", lister("one", json!(300_000), json!("public"))),
            ("b", lister("two", json!(60_000), json!("private"))),
        ],
        false,
    )
    .await;
    crate::protocol::stateless::complete_authored(&mut listing.result, Some(listing.hints), "main");
    let v = listing.result.to_value();
    assert_eq!(
        schema_errors("ListToolsResult", &v),
        Vec::<String>::new(),
        "{v}"
    );
    assert_eq!(v["ttlMs"], 60_000);
    assert_eq!(v["cacheScope"], "private");
    // Without the hints the schema refuses it: the check can fail.
    let mut bare = v.clone();
    bare.as_object_mut().unwrap().remove("ttlMs");
    assert!(!schema_errors("ListToolsResult", &bare).is_empty());
}

/// An upstream that refuses `tools/call` with HTTP `status` and this JSON-RPC error.
fn refuser(status: u16, error: Value) -> Script {
    Arc::new(move |method, msg| match method {
        "server/discover" => discover(),
        "tools/call" => (
            status,
            json!({ "jsonrpc": "2.0", "id": msg["id"], "error": error }),
        ),
        _ => (404, json!({})),
    })
}

async fn call_error(script: Script) -> UpstreamError {
    let server = server(vec![("a", script)]).await;
    let call = Message::request(
        RequestId::Number(7),
        "tools/call",
        Some(to_raw(&json!({ "name": "x", "arguments": {} }))),
    );
    match server
        .call(&SharedSessions::gateway(CallContext::gateway()), 0, call)
        .await
    {
        Err(FederationError::Upstream(e)) => e,
        Err(e) => panic!("not an upstream error: {e}"),
        Ok(_) => panic!("the call was not refused"),
    }
}

#[tokio::test]
async fn each_protocol_error_on_a_4xx_is_relayed_as_it_is() {
    let cases = [
        (400, -32020, json!(null)),
        (
            400,
            -32021,
            json!({ "requiredCapabilities": { "sampling": {} } }),
        ),
        (
            400,
            -32022,
            json!({ "requested": "2026-07-28", "supported": ["2025-11-25"] }),
        ),
        (404, -32601, json!(null)),
        (400, -32602, json!({ "uri": "test://nowhere" })),
    ];
    for (status, code, data) in cases {
        let mut error = json!({ "code": code, "message": format!("refused with {code}") });
        if !data.is_null() {
            error["data"] = data.clone();
        }
        let e = call_error(refuser(status, error)).await;
        assert_eq!(e.relayed_status(), Some(status), "{e:?}");
        assert_eq!(e.code().0, code, "{e:?}");
        assert_eq!(e.to_string(), format!("refused with {code}"));
        assert_eq!(e.data(), (!data.is_null()).then_some(data));
        // What the downstream sends: the same error, under the client's id.
        let out = crate::downstream::error::upstream_error(Some(RequestId::Number(1)), &e);
        let v: Value = serde_json::from_slice(&out.to_bytes()).unwrap();
        assert_eq!(v["id"], 1);
        assert_eq!(v["error"]["code"], code);
        assert_eq!(
            schema_errors("JSONRPCErrorResponse", &v),
            Vec::<String>::new()
        );
    }
}

#[tokio::test]
async fn anything_else_on_an_error_status_stays_a_gateway_error() {
    // Not JSON-RPC, an error for another request, a result on an error status, and a body
    // past the cap: none is the upstream's answer to our request.
    let huge = "x".repeat(100 * 1024);
    let mut scripts: Vec<Script> = vec![
        Arc::new(|m, _| {
            if m == "server/discover" {
                discover()
            } else {
                (400, json!({ "oops": true }))
            }
        }),
        Arc::new(|m, _| {
            if m == "server/discover" {
                discover()
            } else {
                (
                    400,
                    json!({ "jsonrpc": "2.0", "id": 999_999, "error": { "code": -32602, "message": "other" } }),
                )
            }
        }),
        Arc::new(|m, msg| {
            if m == "server/discover" {
                discover()
            } else {
                (
                    400,
                    json!({ "jsonrpc": "2.0", "id": msg["id"], "result": {} }),
                )
            }
        }),
        Arc::new(move |m, msg| {
            if m == "server/discover" {
                discover()
            } else {
                (
                    400,
                    json!({ "jsonrpc": "2.0", "id": msg["id"], "error": { "code": -32602, "message": huge } }),
                )
            }
        }),
    ];
    // The gateway's own credential refused: the client must not read it as its own.
    scripts.push(Arc::new(|m, msg| if m == "server/discover" { discover() } else {
        (401, json!({ "jsonrpc": "2.0", "id": msg["id"], "error": { "code": -32001, "message": "bad token" } }))
    }));
    for script in scripts {
        let e = call_error(script).await;
        assert!(
            matches!(
                e,
                UpstreamError::Status {
                    status: 400 | 401,
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(e.code(), ErrorCode::UPSTREAM_UNAVAILABLE);
    }
}

#[tokio::test]
async fn tools_with_invalid_mirrored_parameters_are_left_out_and_valid_ones_learned() {
    let upstream: Script = Arc::new(|method, _| match method {
        "server/discover" => discover(),
        "tools/list" => result(
            json!({ "resultType": "complete", "ttlMs": 0, "cacheScope": "public", "tools": [
                { "name": "good", "inputSchema": { "type": "object", "properties": {
                    "region": { "type": "string", "x-mcp-header": "Region" } } } },
                { "name": "plain", "inputSchema": { "type": "object" } },
                { "name": "number", "inputSchema": { "type": "object", "properties": {
                    "n": { "type": "number", "x-mcp-header": "N" } } } },
                { "name": "in_items", "inputSchema": { "type": "object", "properties": {
                    "xs": { "type": "array", "items": { "type": "string", "x-mcp-header": "X" } } } } }
            ]}),
        ),
        _ => (404, json!({})),
    });
    let server = server(vec![("a", upstream)]).await;
    let listing = all_tools(&server).await.expect("the list");
    let names: Vec<_> = listing.result.to_value()["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["good", "plain"]);
    let table = server.members[0].client.mirrored();
    assert!(table.mirrors("good").is_some());
    assert_eq!(
        table.get("plain"),
        Known::Nothing,
        "a whole listing was read"
    );
}

#[tokio::test]
async fn a_streamed_result_without_result_type_gains_it_for_a_stateless_client() {
    // Large enough to be relayed while it arrives rather than read whole.
    let big = "x".repeat(200 * 1024);
    let upstream: Script = Arc::new(move |method, _| match method {
        "server/discover" => discover(),
        "tools/call" => result(json!({ "content": [{ "type": "text", "text": big }] })),
        "tools/list" => result(json!({ "resultType": "complete", "tools": [] })),
        _ => (404, json!({})),
    });
    let server = server(vec![("a", upstream)]).await;
    let call = Message::request(
        RequestId::Number(9),
        "tools/call",
        Some(to_raw(&json!({ "name": "t", "arguments": {} }))),
    );
    let sessions = SharedSessions::declaring(CallContext::gateway(), json!({}));
    let mut stream = server
        .call_with(
            &sessions,
            0,
            call,
            Delivery::Streamed {
                stateless_client: true,
            },
        )
        .await
        .expect("the call");
    let mut streamed = loop {
        match stream.next().await.expect("a final frame") {
            Frame::Streamed(s) => break s,
            Frame::Response(m) => panic!("expected a streamed answer, got {:?}", m.result),
            Frame::Failed(e) => panic!("{e}"),
            _ => {}
        }
    };
    let mut bytes = Vec::new();
    while let Some(chunk) = streamed.next().await {
        bytes.extend_from_slice(&chunk.expect("a chunk"));
    }
    let v: Value = serde_json::from_slice(&bytes).expect("one JSON-RPC message");
    assert_eq!(v["id"], 9);
    assert_eq!(v["result"]["resultType"], "complete");
    assert_eq!(
        schema_errors("CallToolResult", &v["result"]),
        Vec::<String>::new()
    );
}
