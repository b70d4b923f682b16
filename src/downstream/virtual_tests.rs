//! Virtual tools through the whole pipeline, in-process: over two prefixed upstreams, a
//! client sees only the virtual definitions, calls are translated back exactly, the hidden
//! originals are refused by their own names, and policy decides on the virtual name.

use super::pipeline_tests::text;
use crate::testing::in_process::{SessionClient, TestGateway, json_body};
use crate::upstream::scripted::{Reply, ScriptedUpstream};
use serde_json::{Value, json};

const YAML: &str = r#"
servers:
  - name: main
    path: /mcp
    upstreams: [a, b]
    prefix: always
    virtual:
      tools:
        - name: file_bug
          upstream: a
          from: create_issue
          description: "Files a bug in acme/app."
          fixed: { repo: acme/app }
          narrow: { priority: { enum: [low, high] } }
        - { name: secret_alias, upstream: a, from: secret }
    policy:
      default: allow
      rules:
        - { name: no-secrets, effect: deny, tools: secret_alias }
upstreams:
  a: { kind: http, url: "http://127.0.0.1:9/a" }
  b: { kind: http, url: "http://127.0.0.1:9/b" }
"#;

#[tokio::test]
async fn a_client_sees_and_calls_only_the_virtual_definitions() {
    let a = ScriptedUpstream::sessions("a");
    let schema = json!({"type": "object", "properties": {
        "repo": {"type": "string"}, "title": {"type": "string"},
        "priority": {"type": "string", "enum": ["low", "medium", "high"]}},
        "required": ["repo", "title"]});
    a.on(
        "tools/list",
        Reply::result(json!({"tools": [
            {"name": "create_issue", "description": "Creates an issue in any repository", "inputSchema": schema},
            {"name": "secret", "inputSchema": {"type": "object"}},
            {"name": "open", "inputSchema": {"type": "object"}}
        ]})),
    );
    a.on_tool("create_issue", Reply::text("created"));
    a.on_tool("secret", Reply::text("a:secret"));
    let b = ScriptedUpstream::sessions("b");
    b.with_tools(&["other"]);
    let gw = TestGateway::start(YAML, &[&a, &b]);
    let client = SessionClient::start(&gw, "/mcp", json!({}), None).await;

    let listing = json_body(client.request(1, "tools/list", json!({})).await).await;
    let tools = listing["result"]["tools"].as_array().unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    // The originals are gone, the denied virtual tool is hidden, the rest is as before.
    assert_eq!(names, ["file_bug", "a__open", "b__other"], "{listing}");
    let bug = &tools[0];
    assert_eq!(bug["description"], "Files a bug in acme/app.");
    assert_eq!(
        bug["inputSchema"],
        json!({"type": "object", "properties": {
            "title": {"type": "string"},
            "priority": {"type": "string", "enum": ["low", "high"]}},
            "required": ["title"]})
    );

    let call = |id: i64, name: &str, args: Value| {
        let client = &client;
        let params = json!({"name": name, "arguments": args});
        async move { json_body(client.request(id, "tools/call", params).await).await }
    };
    let done = call(2, "file_bug", json!({"title": "t", "priority": "high"})).await;
    assert_eq!(text(&done["result"]), "created", "{done}");
    assert_eq!(
        a.requests("tools/call"),
        vec![
            json!({"name": "create_issue", "arguments": {"title": "t", "priority": "high", "repo": "acme/app"}})
        ]
    );
    // What the virtual definition forbids never reaches the upstream.
    let fixed = call(3, "file_bug", json!({"title": "t", "repo": "evil/x"})).await;
    assert_eq!(fixed["error"]["code"], -32602, "{fixed}");
    assert!(
        fixed["error"]["message"]
            .as_str()
            .unwrap()
            .contains("fixed by the gateway")
    );
    let narrowed = call(4, "file_bug", json!({"title": "t", "priority": "medium"})).await;
    assert!(
        narrowed["error"]["message"]
            .as_str()
            .unwrap()
            .contains("one of \"low\", \"high\""),
        "{narrowed}"
    );
    // The originals, by their own names, read like tools no upstream offers.
    for (id, name) in [(5, "a__create_issue"), (6, "a__secret")] {
        let refused = call(id, name, json!({"title": "t"})).await;
        assert_eq!(
            refused,
            json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32602, "message": format!("Unknown tool: {name}")}})
        );
    }
    // Policy decides on the virtual name.
    let denied = call(7, "secret_alias", json!({})).await;
    assert_eq!(denied["error"]["code"], -32602, "{denied}");
    assert_eq!(a.requests("tools/call").len(), 1, "{:?}", a.seen());
}
