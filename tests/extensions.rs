//! MCP extensions through the gateway, with the real gateway and two fixture upstreams
//! federated: the tasks extension (task ids sealed, routed back to the upstream that made the
//! task, owner-bound, policy applied), MCP Apps (`ui://` resources and the tools' links to them
//! routed back to their upstream), and the advertisement of extensions only when a member
//! offers them.

mod auth_support;
mod common;

use auth_support::TestIssuer;
use common::{Client, Fixture, Gateway, Reply};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const TASKS: &str = "io.modelcontextprotocol/tasks";
const UI: &str = "io.modelcontextprotocol/ui";

struct Stack {
    issuer: TestIssuer,
    _a: Fixture,
    _b: Fixture,
    _plain: Fixture,
    gw: Gateway,
}

async fn stack() -> Stack {
    let issuer = TestIssuer::start().await;
    let a = Fixture::http(&["--tasks", "--apps", "--name", "a"]);
    let b = Fixture::http(&["--tasks", "--apps", "--name", "b"]);
    let plain = Fixture::http(&["--name", "plain"]);
    let yaml = format!(
        r#"
auth:
  issuers:
    test: {{ issuer: "{iss}", algorithms: [ES256] }}
servers:
  - name: main
    path: /mcp
    upstreams: [a, b]
    prefix: always
    auth: {{ scopes: [mcp:tools] }}
    policy:
      default: allow
      rules:
        - name: no-contractors
          effect: deny
          groups: [contractors]
  - name: other
    path: /other
    upstreams: [a, b]
    prefix: always
    auth: {{ scopes: [mcp:tools] }}
  - name: plain
    path: /plain
    upstreams: [plain]
  - name: guarded
    path: /guarded
    upstreams: [a]
    auth: {{ scopes: [mcp:tools] }}
    guardrails: {{}}
upstreams:
  a: {{ kind: http, url: "{a}" }}
  b: {{ kind: http, url: "{b}" }}
  plain: {{ kind: http, url: "{plain}" }}
"#,
        iss = issuer.issuer(),
        a = a.url,
        b = b.url,
        plain = plain.url,
    );
    let gw = Gateway::start(&yaml);
    Stack {
        issuer,
        _a: a,
        _b: b,
        _plain: plain,
        gw,
    }
}

impl Stack {
    /// A stateless (2026-07-28) client at `path` for `sub` in `groups`.
    fn client(&self, path: &str, sub: &str, groups: &[&str]) -> Client {
        let token = self.issuer.token(
            &self.gw.url(path),
            json!({"sub": sub, "groups": groups, "scope": "mcp:tools"}),
        );
        Client::new(&self.gw.url(path)).with_bearer(&token)
    }
}

/// Sends a 2026-07-28 request; `tasks` declares the extension in the per-request capabilities.
async fn stateless(c: &Client, method: &str, mut params: Value, tasks: bool) -> Reply {
    let caps = if tasks {
        json!({"extensions": {TASKS: {}}, "elicitation": {}})
    } else {
        json!({})
    };
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": caps,
        "io.modelcontextprotocol/clientInfo": {"name": "extensions-tests", "version": "1"}
    });
    let name = ["name", "uri", "taskId"]
        .iter()
        .find_map(|k| params.get(*k).and_then(Value::as_str))
        .map(str::to_owned);
    let body = json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params});
    let mut headers = vec![
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", method),
    ];
    if let Some(n) = &name {
        headers.push(("mcp-name", n));
    }
    c.post_raw(serde_json::to_vec(&body).unwrap(), &headers)
        .await
}

fn result(r: &Reply) -> &Value {
    let m = r.last();
    assert!(m.get("result").is_some(), "expected a result: {}", r.raw);
    &m["result"]
}

/// Creates a task with `tool` and returns the id the client sees.
async fn create(c: &Client, tool: &str, args: Value) -> String {
    let r = stateless(
        c,
        "tools/call",
        json!({"name": tool, "arguments": args}),
        true,
    )
    .await;
    let res = result(&r);
    assert_eq!(res["resultType"], "task", "{}", r.raw);
    res["taskId"].as_str().unwrap().to_owned()
}

/// Polls `tasks/get` until the task is terminal (or `want`).
async fn poll(c: &Client, id: &str, want: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = stateless(c, "tasks/get", json!({"taskId": id}), true).await;
        let res = result(&r).clone();
        assert_eq!(res["taskId"], id, "the client sees its own id back");
        let s = res["status"].as_str().unwrap_or_default().to_owned();
        if s == want || ["completed", "failed", "cancelled"].contains(&s.as_str()) {
            return res;
        }
        assert!(Instant::now() < deadline, "task stuck in {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_route_back_to_the_upstream_that_made_them() {
    let s = stack().await;
    let alice = s.client("/mcp", "alice", &["eng"]);
    let from_a = create(
        &alice,
        "a__slow_compute",
        json!({"seconds": 0.2, "label": "one"}),
    )
    .await;
    let from_b = create(
        &alice,
        "b__slow_compute",
        json!({"seconds": 0.2, "label": "two"}),
    )
    .await;
    // The upstream's own ids never reach the client.
    for id in [&from_a, &from_b] {
        assert!(!id.starts_with("task-"), "an upstream task id leaked: {id}");
    }
    let done_a = poll(&alice, &from_a, "completed").await;
    let done_b = poll(&alice, &from_b, "completed").await;
    assert_eq!(done_a["status"], "completed", "{done_a}");
    assert!(
        done_a["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("one"),
        "{done_a}"
    );
    assert!(
        done_b["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("two"),
        "{done_b}"
    );

    // tasks/update reaches the task's upstream: answering the question completes it.
    let ask = create(&alice, "b__confirm_delete", json!({"filename": "x.txt"})).await;
    let waiting = poll(&alice, &ask, "input_required").await;
    let key = waiting["inputRequests"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    let ack = stateless(
        &alice,
        "tasks/update",
        json!({"taskId": ask, "inputResponses": {key: {"action": "accept", "content": {"confirm": true}}}}),
        true,
    )
    .await;
    assert_eq!(result(&ack)["resultType"], "complete", "{}", ack.raw);
    assert!(result(&ack).get("taskId").is_none(), "{}", ack.raw);
    assert_eq!(poll(&alice, &ask, "completed").await["status"], "completed");

    // tasks/cancel too.
    let long = create(
        &alice,
        "a__slow_compute",
        json!({"seconds": 60, "label": "long"}),
    )
    .await;
    let ack = stateless(&alice, "tasks/cancel", json!({"taskId": long}), true).await;
    assert_eq!(result(&ack)["resultType"], "complete", "{}", ack.raw);
    assert_eq!(
        poll(&alice, &long, "cancelled").await["status"],
        "cancelled"
    );

    // The routing header must name the task the body names.
    let body = json!({"jsonrpc": "2.0", "id": 9, "method": "tasks/get", "params": {"taskId": from_a, "_meta": {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {"extensions": {TASKS: {}}}}}});
    let r = alice
        .post_raw(
            serde_json::to_vec(&body).unwrap(),
            &[
                ("mcp-protocol-version", "2026-07-28"),
                ("mcp-method", "tasks/get"),
                ("mcp-name", "someone-elses-task"),
            ],
        )
        .await;
    assert_eq!((r.status, r.error_code()), (400, Some(-32020)), "{}", r.raw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_belongs_to_its_owner_its_server_and_its_tools_policy() {
    let s = stack().await;
    let alice = s.client("/mcp", "alice", &["eng"]);
    let id = create(
        &alice,
        "a__slow_compute",
        json!({"seconds": 0, "label": "mine"}),
    )
    .await;
    assert_eq!(poll(&alice, &id, "completed").await["status"], "completed");

    // Another principal presenting the id finds no such task, for every method.
    let bob = s.client("/mcp", "bob", &["eng"]);
    for (method, params) in [
        ("tasks/get", json!({"taskId": id})),
        ("tasks/update", json!({"taskId": id, "inputResponses": {}})),
        ("tasks/cancel", json!({"taskId": id})),
    ] {
        let r = stateless(&bob, method, params, true).await;
        assert_eq!(r.error_code(), Some(-32602), "{method}: {}", r.raw);
        assert!(r.error_message().contains("unknown task"), "{}", r.raw);
    }
    // Nor does the owner at another virtual server over the same upstreams.
    let elsewhere = s.client("/other", "alice", &["eng"]);
    let r = stateless(&elsewhere, "tasks/get", json!({"taskId": id}), true).await;
    assert_eq!(r.error_code(), Some(-32602), "{}", r.raw);
    // A forged or garbled id is unknown, never relayed.
    let r = stateless(&alice, "tasks/get", json!({"taskId": "task-0000"}), true).await;
    assert_eq!(r.error_code(), Some(-32602), "{}", r.raw);

    // The tool's policy applies to its task: once alice is a contractor (same subject, new
    // token), she may no longer follow it.
    let contractor = s.client("/mcp", "alice", &["contractors"]);
    let r = stateless(&contractor, "tasks/get", json!({"taskId": id}), true).await;
    assert_eq!(r.error_code(), Some(-32602), "{}", r.raw);
    // The owner still can.
    assert_eq!(poll(&alice, &id, "completed").await["status"], "completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tasks_result_passes_the_output_guardrails_like_the_calls_would() {
    let s = stack().await;
    let alice = s.client("/guarded", "alice", &["eng"]);
    let key = "AKIAIOSFODNN7EXAMPLE";
    let id = create(&alice, "slow_compute", json!({"seconds": 0, "label": key})).await;
    let done = poll(&alice, &id, "completed").await;
    let text = done.to_string();
    assert!(
        text.contains("computed [REDACTED:cloud-key] after 0s") && !text.contains(key),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_extension_there_are_no_tasks() {
    let s = stack().await;
    let alice = s.client("/mcp", "alice", &["eng"]);
    // A request that does not declare the extension gets a plain result…
    let r = stateless(
        &alice,
        "tools/call",
        json!({"name": "a__slow_compute", "arguments": {"seconds": 0, "label": "sync"}}),
        false,
    )
    .await;
    assert_eq!(result(&r)["resultType"], "complete", "{}", r.raw);
    assert!(result(&r).get("taskId").is_none(), "{}", r.raw);
    // …and tasks/* is refused with -32021 naming the extension.
    let id = create(
        &alice,
        "a__slow_compute",
        json!({"seconds": 0, "label": "x"}),
    )
    .await;
    let r = stateless(&alice, "tasks/get", json!({"taskId": id}), false).await;
    assert_eq!((r.status, r.error_code()), (400, Some(-32021)), "{}", r.raw);
    assert!(
        r.last()
            .pointer("/error/data/requiredCapabilities/extensions")
            .and_then(|e| e.get(TASKS))
            .is_some(),
        "{}",
        r.raw
    );
    // Removed methods of the first tasks design are unknown.
    let r = stateless(&alice, "tasks/list", json!({}), true).await;
    assert_eq!(r.error_code(), Some(-32601), "{}", r.raw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_clients_may_opt_in_per_request() {
    let s = stack().await;
    let token = s.issuer.token(
        &s.gw.url("/mcp"),
        json!({"sub": "alice", "groups": ["eng"], "scope": "mcp:tools"}),
    );
    let mut c = Client::new(&s.gw.url("/mcp")).with_bearer(&token);
    c.initialize().await;
    let meta = json!({"io.modelcontextprotocol/clientCapabilities": {"extensions": {TASKS: {}}}});
    let r = c
        .request(
            "tools/call",
            json!({"name": "b__slow_compute", "arguments": {"seconds": 0, "label": "session"}, "_meta": meta}),
        )
        .await;
    let res = result(&r);
    assert_eq!(res["resultType"], "task", "{}", r.raw);
    let id = res["taskId"].as_str().unwrap().to_owned();
    assert!(!id.starts_with("task-"), "{id}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = c
            .request("tasks/get", json!({"taskId": id, "_meta": meta}))
            .await;
        let res = result(&r);
        if res["status"] == "completed" {
            assert!(
                res["result"]["content"][0]["text"]
                    .as_str()
                    .unwrap()
                    .contains("session")
            );
            break;
        }
        assert!(Instant::now() < deadline, "{}", r.raw);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extensions_are_advertised_only_when_a_member_offers_them() {
    let s = stack().await;
    let discover = |c: Client| async move {
        let r = stateless(&c, "server/discover", json!({}), true).await;
        result(&r)["capabilities"].clone()
    };
    let caps = discover(s.client("/mcp", "alice", &["eng"])).await;
    assert!(
        caps.pointer("/extensions")
            .and_then(|e| e.get(TASKS))
            .is_some(),
        "{caps}"
    );
    assert!(
        caps.pointer("/extensions")
            .and_then(|e| e.get(UI))
            .is_some(),
        "{caps}"
    );
    let caps = discover(Client::new(&s.gw.url("/plain"))).await;
    assert!(caps.get("extensions").is_none(), "{caps}");
    // Session clients see the same in the InitializeResult.
    let mut c = Client::new(&s.gw.url("/plain"));
    let init = c.initialize().await;
    assert!(
        init["result"]["capabilities"].get("extensions").is_none(),
        "{init}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_resources_and_tool_links_route_back_to_their_upstream() {
    let s = stack().await;
    let alice = s.client("/mcp", "alice", &["eng"]);
    // Both upstreams offer the same ui:// URI; each tool links to its own upstream's copy.
    let r = stateless(&alice, "tools/list", json!({}), false).await;
    let tools = result(&r)["tools"].as_array().unwrap().clone();
    let link = |name: &str| {
        let t = tools
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("{name} not listed: {}", r.raw));
        t["_meta"]["ui"]["resourceUri"].as_str().unwrap().to_owned()
    };
    let (la, lb) = (link("a__show_app"), link("b__show_app"));
    assert_eq!(la, "ui://a+fixture/app.html");
    assert_eq!(lb, "ui://b+fixture/app.html");
    // The listing shows the same outward URIs.
    let r = stateless(&alice, "resources/list", json!({}), false).await;
    let uris: Vec<String> = result(&r)["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["uri"].as_str().unwrap().to_owned())
        .collect();
    assert!(uris.contains(&la) && uris.contains(&lb), "{uris:?}");
    // Reading a link reaches the upstream whose tool it is (asked under its own URI, or it
    // would not know it), and the contents come back under the URI the client read.
    for (uri, who) in [(&la, "a"), (&lb, "b")] {
        let r = stateless(&alice, "resources/read", json!({"uri": uri}), false).await;
        let c = &result(&r)["contents"][0];
        assert_eq!(&c["uri"], uri.as_str(), "{}", r.raw);
        assert!(
            c["text"]
                .as_str()
                .unwrap()
                .contains(&format!("app of {who}")),
            "{}",
            r.raw
        );
    }
}
