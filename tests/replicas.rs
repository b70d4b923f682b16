//! Two gateway replicas sharing PostgreSQL and the session keys: a client's answer to an
//! elicitation or sampling request relayed by one replica is delivered when it reaches the
//! other (HTTP upstream), refused clearly when only the relaying replica can deliver it (stdio
//! upstream, 421), and an answer naming no pending request is refused (409), never accepted
//! with 202 and dropped.

mod common;

use common::{Client, Fixture, Gateway, stdio_fixture_upstream};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde_json::{Value, json};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const POSTGRES: &str = "postgres://postgres@127.0.0.1:5432";
const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

/// A fresh PostgreSQL database for one run, dropped at the end.
struct PgDatabase {
    admin: sqlx::PgPool,
    name: String,
}

impl PgDatabase {
    async fn create() -> PgDatabase {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let name = format!("gh_replicas_{}_{secs}", std::process::id());
        let admin = sqlx::PgPool::connect(&format!("{POSTGRES}/test"))
            .await
            .unwrap_or_else(|e| {
                panic!("PostgreSQL must run on 127.0.0.1:5432 with a database `test` ({e})")
            });
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .unwrap();
        PgDatabase { admin, name }
    }

    fn url(&self) -> String {
        format!("{POSTGRES}/{}", self.name)
    }

    async fn drop(self) {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&self.admin)
        .await
        .unwrap();
    }
}

fn replica(store: &str, fixture_url: &str) -> Gateway {
    let yaml = format!(
        r#"
store: {{ url: "{store}" }}
sessions:
  keys:
    - {{ id: k1, secret: {{ env: GH_REPLICA_KEY }} }}
servers:
  - {{ name: web, path: /http, upstreams: [fx] }}
  - {{ name: local, path: /stdio, upstreams: [child] }}
upstreams:
  fx: {{ kind: http, url: "{fixture_url}", protocol: "2025-11-25" }}
{child}"#,
        child = stdio_fixture_upstream("child", &[]),
    );
    Gateway::start_with_env(&yaml, &[("GH_REPLICA_KEY", KEY)])
}

/// A call whose answer streams in: the events read so far come one at a time.
struct Streaming {
    events: BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
}

impl Streaming {
    async fn call(client: &mut Client, tool: &str) -> Streaming {
        let id = client.id();
        let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": tool, "arguments": {}}});
        let resp = client
            .http
            .post(&client.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", client.session.as_deref().unwrap())
            .header("mcp-protocol-version", &client.version)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(ct.starts_with("text/event-stream"), "{ct}");
        Streaming {
            events: resp.bytes_stream().boxed(),
            buffer: String::new(),
        }
    }

    /// The next message on the stream.
    async fn next(&mut self) -> Value {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let event: String = self.buffer.drain(..end + 2).collect();
                let data: String = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim)
                    .collect();
                if data.is_empty() {
                    continue;
                }
                return serde_json::from_str(&data).unwrap();
            }
            let chunk = tokio::time::timeout(Duration::from_secs(20), self.events.next())
                .await
                .expect("nothing more on the stream")
                .expect("the stream ended")
                .unwrap();
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

/// POSTs a client's answer to `url` in the client's session.
async fn answer(client: &Client, url: &str, id: &Value, result: Value) -> (u16, Value) {
    let resp = client
        .http
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", client.session.as_deref().unwrap())
        .header("mcp-protocol-version", &client.version)
        .json(&json!({"jsonrpc": "2.0", "id": id, "result": result}))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
    };
    (status, body)
}

fn accepted_name(name: &str) -> Value {
    json!({"action": "accept", "content": {"name": name}})
}

#[tokio::test(flavor = "multi_thread")]
async fn an_answer_reaching_the_other_replica_is_delivered_or_refused_never_dropped() {
    let db = PgDatabase::create().await;
    let fx = Fixture::http(&[]);
    let a = replica(&db.url(), &fx.url);
    let b = replica(&db.url(), &fx.url);

    // HTTP upstream: A relays the elicitation, the answer lands on B, the call on A completes.
    let mut client = Client::new(&a.url("/http"));
    client.initialize().await;
    let mut call = Streaming::call(&mut client, "elicit").await;
    let ask = call.next().await;
    assert_eq!(ask["method"], "elicitation/create", "{ask}");
    let id = ask["id"].clone();
    let (status, body) = answer(&client, &b.url("/http"), &id, accepted_name("Ada")).await;
    assert_eq!(status, 202, "{body}");
    let done = call.next().await;
    let text = done["result"]["content"][0]["text"].as_str().unwrap_or("");
    assert!(
        text.contains("Ada"),
        "the answer did not reach the upstream: {done}"
    );

    // Sampling too, and answered on the relaying replica itself, once only.
    let mut call = Streaming::call(&mut client, "sample").await;
    let ask = call.next().await;
    assert_eq!(ask["method"], "sampling/createMessage", "{ask}");
    let reply = json!({"role": "assistant", "content": {"type": "text", "text": "hi from the model"}, "model": "m"});
    let (status, _) = answer(&client, &a.url("/http"), &ask["id"], reply.clone()).await;
    assert_eq!(status, 202);
    let done = call.next().await;
    assert!(
        done["result"]["content"][0]["text"]
            .as_str()
            .unwrap_or("")
            .contains("hi from the model"),
        "{done}"
    );
    let (status, body) = answer(&client, &a.url("/http"), &ask["id"], reply).await;
    assert_eq!(status, 409, "a second answer was accepted: {body}");
    assert_eq!(body["error"]["code"], -32600, "{body}");
    assert_eq!(body["id"], ask["id"]);

    // Stdio upstream: only A runs the child that asked. B refuses clearly; A delivers.
    let mut local = Client::new(&a.url("/stdio"));
    local.initialize().await;
    let mut call = Streaming::call(&mut local, "elicit").await;
    let ask = call.next().await;
    assert_eq!(ask["method"], "elicitation/create", "{ask}");
    let (status, body) = answer(&local, &b.url("/stdio"), &ask["id"], accepted_name("Bo")).await;
    assert_eq!(status, 421, "{body}");
    assert_eq!(body["error"]["code"], -32600, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("another gateway replica"),
        "{body}"
    );
    let (status, body) = answer(&local, &a.url("/stdio"), &ask["id"], accepted_name("Bo")).await;
    assert_eq!(status, 202, "{body}");
    let done = call.next().await;
    assert!(
        done["result"]["content"][0]["text"]
            .as_str()
            .unwrap_or("")
            .contains("Bo"),
        "{done}"
    );

    // Ids naming no pending request of this session, on either replica: 409 with the id echoed.
    let mut other = Client::new(&a.url("/http"));
    other.initialize().await;
    let mut call = Streaming::call(&mut other, "elicit").await;
    let foreign = call.next().await["id"].clone();
    for (who, url, id) in [
        (&client, a.url("/http"), json!("gatehouse-1")),
        (&client, b.url("/http"), json!(12)),
        (
            &client,
            b.url("/http"),
            json!("gatehouse.k1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        ),
        // Another session's pending request is not this session's to answer.
        (&client, a.url("/http"), foreign.clone()),
        (&client, b.url("/http"), foreign.clone()),
    ] {
        let (status, body) = answer(who, &url, &id, accepted_name("Eve")).await;
        assert_eq!(status, 409, "{id}: {body}");
        assert_eq!(body["error"]["code"], -32600, "{body}");
        assert_eq!(body["id"], id);
    }
    // The session that owns it still can.
    let (status, _) = answer(&other, &b.url("/http"), &foreign, accepted_name("Cy")).await;
    assert_eq!(status, 202);
    let done = call.next().await;
    let text = done["result"]["content"][0]["text"].as_str().unwrap_or("");
    assert!(text.contains("Cy") && !text.contains("Eve"), "{done}");

    // A 2026-07-28 client is never sent a server→client request: its answer answers nothing.
    let resp = reqwest::Client::new()
        .post(b.url("/http"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .json(&json!({"jsonrpc": "2.0", "id": "x", "result": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 409);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], -32600, "{body}");

    drop((a, b));
    db.drop().await;
}
