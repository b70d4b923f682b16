//! Sealed sessions: any replica with the same key continues a session, and nothing else can.

mod common;

use common::{Client, Fixture, Gateway};
use serde_json::{Value, json};

const KEY1: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
const KEY2: &str = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";

fn config(upstream_url: &str, keys: &[(&str, &str)]) -> String {
    let mut yaml = String::from("sessions:\n  keys:\n");
    for (id, env) in keys {
        yaml.push_str(&format!("    - id: {id}\n      secret: {{ env: {env} }}\n"));
    }
    yaml.push_str(&format!(
        "servers:\n  - name: main\n    path: /mcp\n    upstreams: [fx]\nupstreams:\n  fx:\n    kind: http\n    protocol: \"2025-11-25\"\n    url: {upstream_url}\n"
    ));
    yaml
}

/// The `Mcp-Session-Id` the upstream saw, from the fixture's `whoami` tool.
async fn upstream_session_seen(client: &mut Client) -> String {
    let r = client.call_tool("whoami", json!({})).await;
    let headers: Value = serde_json::from_str(&r.text()).unwrap();
    headers["mcp-session-id"]
        .as_str()
        .unwrap_or_else(|| panic!("no upstream session in {headers}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_replica_with_the_same_key_continues_the_session() {
    let fx = Fixture::http(&[]);
    let env = [("GH_KEY1", KEY1), ("GH_KEY2", KEY2)];
    let a = Gateway::start_with_env(&config(&fx.url, &[("k1", "GH_KEY1")]), &env);
    let b = Gateway::start_with_env(&config(&fx.url, &[("k1", "GH_KEY1")]), &env);
    let stranger = Gateway::start_with_env(&config(&fx.url, &[("k1", "GH_KEY2")]), &env);
    let rotated = Gateway::start_with_env(
        &config(&fx.url, &[("k2", "GH_KEY2"), ("k1", "GH_KEY1")]),
        &env,
    );

    let mut client = Client::new(&a.url("/mcp"));
    client.initialize().await;
    let sid = client.session.clone().unwrap();
    assert!(sid.starts_with("k1."), "{sid}");
    assert!(
        !sid.contains(&fx.url) && !sid.contains("127.0.0.1"),
        "the id must reveal nothing: {sid}"
    );
    let on_a = upstream_session_seen(&mut client).await;
    assert!(
        !sid.contains(&on_a),
        "the upstream session id must not be readable in ours"
    );

    // Same session id, other process: same upstream session, no new initialize.
    client.url = b.url("/mcp");
    assert!(client.tool_names().await.contains(&"echo".to_owned()));
    assert_eq!(upstream_session_seen(&mut client).await, on_a);

    // After rotation the old key still opens old sessions; new ones use the new key.
    client.url = rotated.url("/mcp");
    assert_eq!(upstream_session_seen(&mut client).await, on_a);
    let mut fresh = Client::new(&rotated.url("/mcp"));
    fresh.initialize().await;
    assert!(fresh.session.as_deref().unwrap().starts_with("k2."));

    // A gateway with another key does not accept it.
    client.url = stranger.url("/mcp");
    let r = client.request("tools/list", json!({})).await;
    assert_eq!(r.status, 404, "{}", r.raw);

    // Ending the session on B makes it unknown there.
    client.url = b.url("/mcp");
    let del = client
        .http
        .delete(&client.url)
        .header("mcp-session-id", &sid)
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 200);
    let r = client.request("tools/list", json!({})).await;
    assert_eq!(r.status, 404, "{}", r.raw);
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_are_bound_to_their_virtual_server() {
    let fx = Fixture::http(&[]);
    let yaml = format!(
        "servers:\n  - {{ name: one, path: /one, upstreams: [fx] }}\n  - {{ name: two, path: /two, upstreams: [fx] }}\nupstreams:\n  fx: {{ kind: http, url: \"{}\" }}\n",
        fx.url
    );
    let gw = Gateway::start(&yaml);
    let mut client = Client::new(&gw.url("/one"));
    client.initialize().await;
    client.url = gw.url("/two");
    let r = client.request("tools/list", json!({})).await;
    assert_eq!(
        r.status, 404,
        "a session of /one must not be usable on /two: {}",
        r.raw
    );
}
