//! Edge cases of inbound authentication against a real gateway and test-owned issuers: opaque
//! tokens reach only the issuers a server accepts, aged keys keep verifying while the IdP is
//! unreachable (for a bounded window, without making requests wait for it), and a key
//! replaced under the same `kid` is picked up at the first signature that fails.

mod auth_support;
mod common;

use auth_support::{INTROSPECTION_CLIENT, KeyService, TestIssuer, TestKey, now};
use common::{Fixture, Gateway};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const SECRET_ENV: &str = "TEST_INTROSPECTION_SECRET";

fn initialize_body() -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "auth-edge-tests", "version": "1"}}})
}

/// The status of an `initialize` sent to `path` with `token`.
async fn status(gw: &Gateway, path: &str, token: &str) -> (u16, String) {
    let r = common::Client::new(&gw.url(path))
        .with_bearer(token)
        .post(&initialize_body())
        .await;
    let challenge = r
        .headers
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (r.status, format!("{challenge} {}", r.raw))
}

fn introspection() -> String {
    format!(
        "{{ client_id: {}, client_secret: {{ env: {SECRET_ENV} }} }}",
        INTROSPECTION_CLIENT.0
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_tokens_go_only_to_the_issuers_the_server_accepts() {
    let a = TestIssuer::start().await;
    let b = TestIssuer::start().await;
    let fixture = Fixture::http(&[]);
    let yaml = format!(
        r#"
auth:
  issuers:
    a: {{ issuer: "{}", introspection: {} }}
    b: {{ issuer: "{}", introspection: {} }}
servers:
  - {{ name: only-a, path: /a, upstreams: [fx], auth: {{ issuers: [a] }} }}
  - {{ name: only-b, path: /b, upstreams: [fx], auth: {{ issuers: [b] }} }}
upstreams:
  fx: {{ kind: http, url: "{}", protocol: "2025-11-25" }}
"#,
        a.issuer(),
        introspection(),
        b.issuer(),
        introspection(),
        fixture.url
    );
    let gw = Gateway::start_with_env(&yaml, &[(SECRET_ENV, INTROSPECTION_CLIENT.1)]);
    let exp = now() + 300;
    a.add_opaque(
        "opaque-from-a",
        json!({"active": true, "sub": "carol", "aud": gw.url("/a"), "exp": exp}),
    );
    // Server b accepts only issuer b: issuer a must not see the token.
    let (code, why) = status(&gw, "/b", "opaque-from-a").await;
    assert_eq!(code, 401, "{why}");
    assert_eq!(a.introspections(), 0, "issuer a saw a token sent to /b");
    assert_eq!(b.introspections(), 1);
    // b's refusal holds for b only: at /a the same token is asked of a, and gets in.
    let (code, why) = status(&gw, "/a", "opaque-from-a").await;
    assert_eq!(code, 200, "{why}");
    assert_eq!(a.introspections(), 1);
    assert_eq!(b.introspections(), 1, "issuer b saw a token sent to /a");
    // Verified once: at /b it is now refused as a's token, without asking anyone.
    let (code, why) = status(&gw, "/b", "opaque-from-a").await;
    assert_eq!(code, 401, "{why}");
    assert!(why.contains("not accepted by this server"), "{why}");
    assert_eq!(a.introspections() + b.introspections(), 2);
}

fn jwt_config(issuer: &TestIssuer, fixture: &str, auth_extra: &str) -> String {
    format!(
        r#"
auth:
{auth_extra}
  issuers:
    test: {{ issuer: "{}", algorithms: [ES256] }}
servers:
  - {{ name: main, path: /mcp, upstreams: [fx], auth: {{ issuers: [test] }} }}
upstreams:
  fx: {{ kind: http, url: "{fixture}", protocol: "2025-11-25" }}
"#,
        issuer.issuer()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aged_keys_keep_verifying_while_the_idp_does_not_answer() {
    let idp = TestIssuer::start().await;
    let fixture = Fixture::http(&[]);
    // Keys age out after 1 s; the stale window is the default.
    let yaml = jwt_config(&idp, &fixture.url, "  jwks_max_age: 1s");
    let gw = Gateway::start(&yaml);
    let aud = gw.url("/mcp");
    let (code, why) = status(&gw, "/mcp", &idp.token(&aud, json!({}))).await;
    assert_eq!(code, 200, "{why}");
    let metadata_fetches = || {
        idp.shared
            .metadata_fetches
            .load(std::sync::atomic::Ordering::SeqCst)
    };
    let fetched = idp.jwks_fetches() + metadata_fetches();
    idp.serve_keys(KeyService::Hanging);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // Every new token (never seen, so not cached) still gets in, without waiting for the IdP.
    for i in 0..6 {
        let started = Instant::now();
        let (code, why) = status(&gw, "/mcp", &idp.token(&aud, json!({}))).await;
        assert_eq!(code, 200, "token {i}: {why}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "token {i} waited {:?} for the IdP",
            started.elapsed()
        );
    }
    // One fetch at a time, whatever the number of requests.
    let attempts = idp.jwks_fetches() + metadata_fetches() - fetched;
    assert!(attempts <= 1, "{attempts} fetches while the IdP hangs");
    // The IdP comes back: the background refresh replaces the keys.
    idp.serve_keys(KeyService::Up);
    idp.rotate_in_es_b();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let new_key = idp.sign(TestKey::EsB, &idp.claims(&aud));
        let (code, _) = status(&gw, "/mcp", &new_key).await;
        if code == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the keys were never refreshed");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_stale_window_new_tokens_wait_for_the_idp_and_get_503() {
    let idp = TestIssuer::start().await;
    let fixture = Fixture::http(&[]);
    let yaml = jwt_config(
        &idp,
        &fixture.url,
        "  jwks_max_age: 1s\n  jwks_stale_window: 1s",
    );
    let gw = Gateway::start(&yaml);
    let aud = gw.url("/mcp");
    let verified_before = idp.token(&aud, json!({}));
    assert_eq!(status(&gw, "/mcp", &verified_before).await.0, 200);
    idp.serve_keys(KeyService::Failing);
    tokio::time::sleep(Duration::from_millis(2300)).await;
    for i in 0..3 {
        let (code, why) = status(&gw, "/mcp", &idp.token(&aud, json!({}))).await;
        assert_eq!(code, 503, "token {i}: {why}");
    }
    // A token verified before stays good until it expires (a signature proves nothing new).
    let (code, why) = status(&gw, "/mcp", &verified_before).await;
    assert_eq!(code, 200, "{why}");
    // The IdP comes back: after a short rest between failed attempts, new tokens get in.
    idp.serve_keys(KeyService::Up);
    let deadline = Instant::now() + Duration::from_secs(10);
    while status(&gw, "/mcp", &idp.token(&aud, json!({}))).await.0 != 200 {
        assert!(
            Instant::now() < deadline,
            "the keys were never fetched again"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_replaced_under_the_same_kid_is_refetched_once_and_then_rate_limited() {
    let idp = TestIssuer::start().await;
    let fixture = Fixture::http(&[]);
    let gw = Gateway::start(&jwt_config(&idp, &fixture.url, "  clock_skew: 60s"));
    let aud = gw.url("/mcp");
    let (code, why) = status(&gw, "/mcp", &idp.token(&aud, json!({}))).await;
    assert_eq!(code, 200, "{why}");
    let fetched = idp.jwks_fetches();
    // The IdP replaces the key behind kid es-a.
    idp.replace_es_a_in_place();
    let replaced = idp.sign_as(TestKey::EsB, "es-a", &idp.claims(&aud));
    let (code, why) = status(&gw, "/mcp", &replaced).await;
    assert_eq!(code, 200, "the replaced key was not picked up: {why}");
    assert_eq!(idp.jwks_fetches(), fetched + 1);
    // Tokens still signed with the withdrawn key fail, and cannot make the gateway refetch
    // again within jwks_refetch_interval (30 s by default).
    for i in 0..5 {
        let old = idp.token(&aud, json!({}));
        let (code, why) = status(&gw, "/mcp", &old).await;
        assert_eq!(code, 401, "old token {i}: {why}");
        assert!(why.contains("signature"), "{why}");
    }
    assert_eq!(
        idp.jwks_fetches(),
        fetched + 1,
        "refetches are rate-limited"
    );
}
