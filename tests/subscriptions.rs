//! Subscriptions obey the rules reads obey: a 2026-07-28 `subscriptions/listen` and a
//! 2025-11-25 `resources/subscribe` pass the same step-up scopes, catalog and policy as
//! `resources/read`; a hidden URI is refused exactly like an unknown one; nothing refused
//! reaches the upstream; and one listen subscribes to at most `limits.subscriptions_per_listen`
//! URIs.

mod auth_support;
mod common;

use auth_support::TestIssuer;
use common::{Client, Fixture, Gateway};
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn catalog(config: &Path, args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .arg("catalog")
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .expect("run gatehouse catalog");
    assert!(
        out.status.success(),
        "catalog {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The URIs the fixture was asked to subscribe to (asked directly, not through the gateway).
async fn subscribed_upstream(fx: &Fixture) -> Vec<String> {
    let mut c = Client::new(&fx.url);
    c.initialize().await;
    let stats: Value = serde_json::from_str(&c.call_tool("stats", json!({})).await.text()).unwrap();
    stats["subscribed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap().to_owned())
        .collect()
}

/// What a `subscriptions/listen` got: the status, and the JSON body or the stream's first event.
struct Listen {
    status: u16,
    content_type: String,
    first: Value,
}

impl Listen {
    fn error_code(&self) -> Option<i64> {
        self.first.pointer("/error/code").and_then(Value::as_i64)
    }

    /// The error message with `uri` replaced, to compare refusals of different URIs.
    fn error_without(&self, uri: &str) -> String {
        self.first["error"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("not an error: {}", self.first))
            .replace(uri, "URI")
    }
}

async fn listen(url: &str, token: Option<&str>, uris: &[&str]) -> Listen {
    let body = json!({
        "jsonrpc": "2.0", "id": 7, "method": "subscriptions/listen",
        "params": {
            "notifications": {"resourceSubscriptions": uris},
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {},
                "io.modelcontextprotocol/clientInfo": {"name": "subs-test", "version": "1"}
            }
        }
    });
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "subscriptions/listen");
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req.json(&body).send().await.unwrap();
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if !content_type.starts_with("text/event-stream") {
        let first = resp.json().await.unwrap();
        return Listen {
            status,
            content_type,
            first,
        };
    }
    // The stream stays open: read up to its first event, then hang up.
    let mut stream = resp.bytes_stream();
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !text.contains("\n\n") {
        let chunk = tokio::time::timeout_at(deadline.into(), stream.next())
            .await
            .expect("no event on the listen stream")
            .expect("the listen stream ended")
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let data: String = text
        .split("\n\n")
        .next()
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim)
        .collect();
    Listen {
        status,
        content_type,
        first: serde_json::from_str(&data).unwrap(),
    }
}

struct Stack {
    issuer: TestIssuer,
    fx: Fixture,
    gw: Gateway,
}

impl Stack {
    async fn start() -> Stack {
        let issuer = TestIssuer::start().await;
        let fx = Fixture::http(&[]);
        let yaml = format!(
            r#"
catalog: {{}}
auth:
  issuers:
    test: {{ issuer: "{iss}", algorithms: [ES256] }}
servers:
  - name: main
    path: /mcp
    upstreams: [fx]
    auth:
      scopes: [mcp:tools]
      require:
        - {{ resources: "fixture://doc/3", scopes: [docs:secret] }}
    policy:
      default: allow
      rules:
        - {{ name: no-doc-2, effect: deny, resources: "fixture://doc/2" }}
upstreams:
  fx: {{ kind: http, url: "{url}", protocol: "2025-11-25" }}
"#,
            iss = issuer.issuer(),
            url = fx.url,
        );
        let gw = Gateway::start(&yaml);
        Stack { issuer, fx, gw }
    }

    fn token(&self, scope: &str) -> String {
        self.issuer
            .token(&self.gw.url("/mcp"), json!({"scope": scope}))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn listen_subscribes_only_to_what_a_read_may_reach() {
    let s = Stack::start().await;
    let url = s.gw.url("/mcp");
    let token = s.token("mcp:tools");

    // The catalog has never approved fx: its URIs are unknown, and nothing is subscribed there.
    let r = listen(&url, Some(&token), &["fixture://doc/1"]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.error_code(), Some(-32602), "{}", r.first);
    assert_eq!(r.first["id"], 7);
    assert!(
        subscribed_upstream(&s.fx).await.is_empty(),
        "a subscription reached an upstream the catalog never approved"
    );

    catalog(&s.gw.config_path, &["add", "fx"]);
    catalog(&s.gw.config_path, &["approve", "fx", "--by", "alice"]);
    // The gateway re-reads catalog decisions every 2 s.
    let deadline = Instant::now() + Duration::from_secs(15);
    let ok = loop {
        let r = listen(&url, Some(&token), &["fixture://doc/1"]).await;
        if r.content_type.starts_with("text/event-stream") {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "approval never took: {}",
            r.first
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(ok.status, 200);
    assert_eq!(
        ok.first["method"], "notifications/subscriptions/acknowledged",
        "{}",
        ok.first
    );
    assert_eq!(
        ok.first["params"]["notifications"]["resourceSubscriptions"],
        json!(["fixture://doc/1"])
    );
    assert_eq!(subscribed_upstream(&s.fx).await, ["fixture://doc/1"]);

    // Hidden by policy: refused exactly like a URI that neither the listing nor a template offers.
    let hidden = listen(&url, Some(&token), &["fixture://doc/0", "fixture://doc/2"]).await;
    let unknown = listen(&url, Some(&token), &["fixture://doc/0", "nothing://at-all"]).await;
    assert_eq!(hidden.status, unknown.status);
    assert_eq!(hidden.error_code(), Some(-32602), "{}", hidden.first);
    assert_eq!(hidden.error_code(), unknown.error_code());
    assert_eq!(
        hidden.error_without("fixture://doc/2"),
        unknown.error_without("nothing://at-all")
    );
    // The data names the URI refused, and nothing else.
    assert_eq!(
        hidden.first["error"]["data"],
        json!({"uri": "fixture://doc/2"})
    );
    assert_eq!(
        unknown.first["error"]["data"],
        json!({"uri": "nothing://at-all"})
    );

    // A URI whose reads need a step-up scope needs it to be subscribed to as well.
    let stepup = listen(&url, Some(&token), &["fixture://doc/3"]).await;
    assert_eq!(stepup.status, 403, "{}", stepup.first);
    assert_eq!(stepup.error_code(), Some(-32005));
    assert_eq!(
        stepup.first["error"]["data"]["requiredScopes"],
        json!(["mcp:tools", "docs:secret"])
    );
    let stepped = listen(
        &url,
        Some(&s.token("mcp:tools docs:secret")),
        &["fixture://doc/3"],
    )
    .await;
    assert!(
        stepped.content_type.starts_with("text/event-stream"),
        "{}",
        stepped.first
    );

    // Only admitted URIs reached the upstream (doc/0 before each refusal, in request order).
    let reached = subscribed_upstream(&s.fx).await;
    assert!(
        !reached
            .iter()
            .any(|u| u == "fixture://doc/2" || u == "nothing://at-all")
    );
    assert_eq!(
        reached.iter().filter(|u| *u == "fixture://doc/3").count(),
        1,
        "{reached:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn resources_subscribe_in_a_session_obeys_the_same_rules() {
    let s = Stack::start().await;
    let token = s.token("mcp:tools");
    let mut c = Client::new(&s.gw.url("/mcp")).with_bearer(&token);
    c.initialize().await;

    let never = c
        .request("resources/subscribe", json!({"uri": "fixture://doc/1"}))
        .await;
    assert_eq!(never.error_code(), Some(-32002), "{}", never.raw);
    assert!(subscribed_upstream(&s.fx).await.is_empty());

    catalog(&s.gw.config_path, &["add", "fx"]);
    catalog(&s.gw.config_path, &["approve", "fx", "--by", "alice"]);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = c
            .request("resources/subscribe", json!({"uri": "fixture://doc/1"}))
            .await;
        if r.error_code().is_none() {
            break;
        }
        assert!(Instant::now() < deadline, "approval never took: {}", r.raw);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let hidden = c
        .request("resources/subscribe", json!({"uri": "fixture://doc/2"}))
        .await;
    let unknown = c
        .request("resources/subscribe", json!({"uri": "nothing://at-all"}))
        .await;
    assert_eq!(hidden.status, unknown.status);
    assert_eq!(hidden.error_code(), Some(-32002), "{}", hidden.raw);
    assert_eq!(hidden.error_code(), unknown.error_code());
    assert_eq!(
        hidden.error_message().replace("fixture://doc/2", "URI"),
        unknown.error_message().replace("nothing://at-all", "URI")
    );
    let stepup = c
        .request("resources/subscribe", json!({"uri": "fixture://doc/3"}))
        .await;
    assert_eq!(stepup.status, 403, "{}", stepup.raw);
    assert_eq!(subscribed_upstream(&s.fx).await, ["fixture://doc/1"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_listen_subscribes_to_at_most_the_configured_number_of_uris() {
    let fx = Fixture::http(&[]);
    let gw = Gateway::start(&common::http_fixture_config(&fx.url, "2025-11-25"));
    let url = gw.url("/mcp");
    let uris: Vec<String> = (0..101).map(|i| format!("fixture://item/{i}")).collect();
    let refs: Vec<&str> = uris.iter().map(String::as_str).collect();

    let over = listen(&url, None, &refs).await;
    assert_eq!(over.status, 400, "{}", over.first);
    assert_eq!(over.error_code(), Some(-32008));
    assert_eq!(over.first["id"], 7);
    assert_eq!(
        over.first["error"]["data"],
        json!({"limit": "limits.subscriptions_per_listen", "max": 100})
    );
    assert!(
        over.first["error"]["message"]
            .as_str()
            .unwrap()
            .contains("limits.subscriptions_per_listen"),
        "{}",
        over.first
    );
    assert!(
        subscribed_upstream(&fx).await.is_empty(),
        "an over-cap listen subscribed upstream"
    );

    // Exactly at the cap, counting a repeated URI once, the listen opens.
    let mut at_cap = refs[..100].to_vec();
    at_cap.push(refs[0]);
    let ok = listen(&url, None, &at_cap).await;
    assert!(
        ok.content_type.starts_with("text/event-stream"),
        "{}",
        ok.first
    );
    assert_eq!(subscribed_upstream(&fx).await.len(), 100);
}
