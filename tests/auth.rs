//! Inbound authentication against a real gateway process: protected resource metadata,
//! challenges, JWT/introspection/API-key verification, step-up, session binding, key rotation,
//! and a matrix of bad credentials none of which may reach the upstream.

mod auth_support;
mod common;

use auth_support::{INTROSPECTION_CLIENT, RS_PUBLIC_PEM, TestIssuer, TestKey, now};
use common::{Client, Fixture, Gateway, Reply};
use serde_json::{Value, json};
use std::time::Duration;

const SECRET_ENV: &str = "TEST_INTROSPECTION_SECRET";

struct Setup {
    issuer: TestIssuer,
    other: TestIssuer,
    _fixture: Fixture,
    gw: Gateway,
}

impl Setup {
    fn resource(&self) -> String {
        self.gw.url("/mcp")
    }

    fn client(&self, token: &str) -> Client {
        Client::new(&self.gw.url("/mcp")).with_bearer(token)
    }

    fn good_token(&self) -> String {
        self.issuer.token(&self.resource(), json!({}))
    }
}

/// An issuer address nobody can serve: this test process holds the port (so that another
/// test's server cannot take it, as a released port could be) and closes every connection.
fn refusing_address() -> String {
    static DOWN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DOWN.get_or_init(|| {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                drop(conn);
            }
        });
        format!("http://{addr}")
    })
    .clone()
}

fn config(issuer: &str, other: &str, fixture: &str, extra_auth: &str) -> String {
    let down = refusing_address();
    format!(
        r#"
auth:
{extra_auth}
  issuers:
    test:
      issuer: {issuer}
      algorithms: [ES256, RS256, EdDSA]
      audiences: ["api://gatehouse-tests"]
      introspection:
        client_id: {client}
        client_secret: {{ env: {SECRET_ENV} }}
    other:
      issuer: {other}
    down:
      issuer: {down}
servers:
  - name: main
    path: /mcp
    upstreams: [fx]
    auth:
      issuers: [test, down]
      scopes: [mcp:tools]
      require:
        - tools: "slo*"
          scopes: [admin:slow]
      api_keys: true
  - name: second
    path: /other
    upstreams: [fx]
    auth: {{ issuers: [test, other], scopes: [mcp:tools], api_keys: true }}
  - name: open
    path: /open
    upstreams: [fx]
upstreams:
  fx: {{ kind: http, url: "{fixture}", protocol: "2025-11-25" }}
"#,
        client = INTROSPECTION_CLIENT.0,
    )
}

async fn setup_with(extra_auth: &str) -> Setup {
    let issuer = TestIssuer::start().await;
    let other = TestIssuer::start().await;
    let fixture = Fixture::http(&[]);
    let yaml = config(issuer.issuer(), other.issuer(), &fixture.url, extra_auth);
    let gw = Gateway::start_with_env(&yaml, &[(SECRET_ENV, INTROSPECTION_CLIENT.1)]);
    Setup {
        issuer,
        other,
        _fixture: fixture,
        gw,
    }
}

async fn setup() -> Setup {
    setup_with("  clock_skew: 60s").await
}

fn initialize_body() -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "auth-tests", "version": "1"}}})
}

async fn get_json(url: &str) -> Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

fn header(r: &Reply, name: &str) -> String {
    r.headers
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// What the upstream has received so far, asked through an authenticated session.
async fn upstream_stats(c: &mut Client) -> Value {
    let r = c.call_tool("stats", json!({})).await;
    serde_json::from_str(r.last()["result"]["content"][0]["text"].as_str().unwrap()).unwrap()
}

/// Runs `gatehouse keys …` against the gateway's configuration; returns stdout.
fn keys_cli(gw: &Gateway, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .arg("keys")
        .arg("--config")
        .arg(&gw.config_path)
        .env(SECRET_ENV, INTROSPECTION_CLIENT.1)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_and_the_first_challenge_tell_a_client_where_to_log_in() {
    let s = setup().await;
    let http = reqwest::Client::new();
    let meta = get_json(&s.gw.url("/.well-known/oauth-protected-resource/mcp")).await;
    assert_eq!(meta["resource"], s.resource());
    let mut servers: Vec<String> =
        serde_json::from_value(meta["authorization_servers"].clone()).unwrap();
    servers.sort();
    assert!(servers.contains(&s.issuer.issuer().to_owned()), "{meta}");
    assert!(
        !servers.contains(&s.other.issuer().to_owned()),
        "other is not accepted at /mcp: {meta}"
    );
    assert_eq!(meta["scopes_supported"], json!(["mcp:tools", "admin:slow"]));
    assert_eq!(meta["bearer_methods_supported"], json!(["header"]));
    let other = get_json(&s.gw.url("/.well-known/oauth-protected-resource/other")).await;
    assert_eq!(other["resource"], s.gw.url("/other"));
    // Two protected servers: the root document would be ambiguous, and the open server has none.
    for path in [
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-protected-resource/open",
    ] {
        assert_eq!(
            http.get(s.gw.url(path)).send().await.unwrap().status(),
            404,
            "{path}"
        );
    }

    let anonymous = Client::new(&s.gw.url("/mcp"));
    let r = anonymous.post(&initialize_body()).await;
    assert_eq!(r.status, 401, "{}", r.raw);
    let challenge = header(&r, "www-authenticate");
    assert_eq!(
        challenge,
        format!(
            r#"Bearer resource_metadata="{}", scope="mcp:tools""#,
            s.gw.url("/.well-known/oauth-protected-resource/mcp")
        )
    );
    assert_eq!(r.last()["error"]["code"], -32004, "{}", r.raw);
    // Decided before the body of an unauthenticated client is read, so no id can be echoed.
    assert_eq!(r.last()["id"], Value::Null, "{}", r.raw);
    // GET and DELETE are refused the same way, before any stream opens.
    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let r = http
            .request(method.clone(), s.gw.url("/mcp"))
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{method}");
        assert!(r.headers().contains_key("www-authenticate"));
    }
    // The open server needs nothing.
    let mut open = Client::new(&s.gw.url("/open"));
    open.initialize().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_protected_server_also_publishes_metadata_at_the_root() {
    let issuer = TestIssuer::start().await;
    let fixture = Fixture::http(&[]);
    let yaml = format!(
        "auth:\n  issuers:\n    t: {{ issuer: \"{}\", algorithms: [ES256] }}\nservers:\n  - {{ name: main, path: /mcp, upstreams: [fx], auth: {{ scopes: [a] }} }}\nupstreams:\n  fx: {{ kind: http, url: \"{}\" }}\n",
        issuer.issuer(),
        fixture.url
    );
    let gw = Gateway::start(&yaml);
    let meta = get_json(&gw.url("/.well-known/oauth-protected-resource")).await;
    assert_eq!(meta["resource"], gw.url("/mcp"));
    assert_eq!(meta["authorization_servers"], json!([issuer.issuer()]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_signed_with_each_allowed_algorithm_get_in_and_credentials_never_go_upstream() {
    let s = setup().await;
    for key in [TestKey::EsA, TestKey::Rs, TestKey::Ed] {
        let token = s.issuer.sign(key, &s.issuer.claims(&s.resource()));
        let mut c = s.client(&token);
        c.initialize().await;
        assert!(c.tool_names().await.contains(&"echo".to_owned()), "{key:?}");
    }
    // An audience alias configured for IdPs that cannot put the resource in `aud`.
    let alias = s.issuer.token("api://gatehouse-tests", json!({}));
    s.client(&alias).initialize().await;
    // The upstream sees neither the client's token nor its cookies.
    let mut c = s.client(&s.good_token());
    c.initialize().await;
    let id = c.id();
    let r = c
        .post_raw(
            serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": "whoami", "arguments": {}}}))
                .unwrap(),
            &[("cookie", "sid=browser-session-secret")],
        )
        .await;
    let seen = r.last()["result"]["content"][0]["text"]
        .as_str()
        .unwrap()
        .to_lowercase();
    assert!(!seen.contains("authorization"), "upstream saw {seen}");
    assert!(
        !seen.contains("cookie") && !seen.contains("browser-session-secret"),
        "upstream saw {seen}"
    );
    assert!(!seen.contains(&s.good_token()[..20].to_lowercase()));
}

/// One bad credential: what to send, and whether the refusal carries `error="invalid_token"`.
struct Bad {
    name: &'static str,
    authorization: Vec<String>,
    status: u16,
    error: Option<&'static str>,
}

fn bad(name: &'static str, token: String) -> Bad {
    Bad {
        name,
        authorization: vec![format!("Bearer {token}")],
        status: 401,
        error: Some("invalid_token"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_are_refused_with_a_challenge_and_never_reach_the_upstream() {
    let s = setup().await;
    let res = s.resource();
    let t = |changes: Value| s.issuer.token(&res, changes);
    let now = now() as i64;
    let good = s.good_token();

    // API keys: one revoked, one expired, one for the other server only.
    let make_key = |extra: &[&str]| {
        let mut args = vec!["create", "--subject", "robot", "--scopes", "mcp:tools"];
        args.extend_from_slice(extra);
        let (ok, out, err) = keys_cli(&s.gw, &args);
        assert!(ok, "keys create failed: {err}");
        out.trim().to_owned()
    };
    let revoked = make_key(&[]);
    let revoked_id = revoked.split('_').nth(1).unwrap().to_owned();
    assert!(keys_cli(&s.gw, &["revoke", &revoked_id]).0);
    let expired = make_key(&["--expires", "1s"]);
    let elsewhere = make_key(&["--server", "/other"]);
    let unknown_key = format!("ghk_{}_{}", "abcdefghijkl", "A".repeat(43));

    // Opaque tokens known to the introspection endpoint.
    let exp = now as u64 + 300;
    s.issuer
        .add_opaque("opaque-inactive", json!({"active": false}));
    s.issuer.add_opaque("opaque-other-aud", json!({"active": true, "sub": "alice", "aud": s.gw.url("/other"), "scope": "mcp:tools", "exp": exp}));
    s.issuer.add_opaque(
        "opaque-expired",
        json!({"active": true, "sub": "alice", "aud": res, "scope": "mcp:tools", "exp": now - 600}),
    );
    s.issuer.add_opaque(
        "opaque-no-aud",
        json!({"active": true, "sub": "alice", "scope": "mcp:tools", "exp": exp}),
    );
    s.issuer.add_opaque("opaque-wrong-iss", json!({"active": true, "iss": "https://evil.example", "sub": "alice", "aud": res, "scope": "mcp:tools", "exp": exp}));

    // Forged JWTs.
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    let tampered_sig = {
        let mut sig = parts[2].clone().into_bytes();
        sig[10] = if sig[10] == b'A' { b'B' } else { b'A' };
        format!(
            "{}.{}.{}",
            parts[0],
            parts[1],
            String::from_utf8(sig).unwrap()
        )
    };
    let tampered_payload = {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut claims: Value = serde_json::from_slice(&b64.decode(&parts[1]).unwrap()).unwrap();
        claims["sub"] = json!("admin");
        parts[1] = b64.encode(serde_json::to_vec(&claims).unwrap());
        parts.join(".")
    };
    let unsigned = {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let h = b64.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let c = b64.encode(serde_json::to_vec(&s.issuer.claims(&res)).unwrap());
        format!("{h}.{c}.")
    };
    let hs256_with_public_key = {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some("rs".into());
        let key = jsonwebtoken::EncodingKey::from_secret(RS_PUBLIC_PEM);
        jsonwebtoken::encode(&header, &s.issuer.claims(&res), &key).unwrap()
    };
    let hs256_with_jwks_oct_key = {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some("hmac".into());
        let key = jsonwebtoken::EncodingKey::from_secret(b"secret");
        jsonwebtoken::encode(&header, &s.issuer.claims(&res), &key).unwrap()
    };
    let es_header_on_rsa_kid = {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some("rs".into());
        jsonwebtoken::encode(
            &header,
            &s.issuer.claims(&res),
            &TestKey::EsA.encoding_key(),
        )
        .unwrap()
    };
    let ps256_not_allowed = {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::PS256);
        header.kid = Some("rs".into());
        jsonwebtoken::encode(&header, &s.issuer.claims(&res), &TestKey::Rs.encoding_key()).unwrap()
    };
    let unknown_kid = s.issuer.sign(TestKey::EsB, &s.issuer.claims(&res));
    let from_other_issuer = s.other.token(&res, json!({}));
    let from_down_issuer = {
        let mut claims = s.issuer.claims(&res);
        claims["iss"] = json!("https://untrusted.example");
        s.issuer.sign(TestKey::EsA, &claims)
    };

    let mut cases = vec![
        bad("expired", t(json!({"exp": now - 600}))),
        bad("not yet valid", t(json!({"nbf": now + 600}))),
        bad("issued in the future", t(json!({"iat": now + 600}))),
        bad("untrusted issuer", from_down_issuer),
        bad(
            "issuer trusted elsewhere but not by this server",
            from_other_issuer,
        ),
        bad(
            "wrong audience",
            t(json!({"aud": "https://evil.example/mcp"})),
        ),
        bad(
            "audience of another virtual server",
            t(json!({"aud": s.gw.url("/other")})),
        ),
        bad("no audience", t(json!({"aud": null}))),
        bad("no expiry", t(json!({"exp": null}))),
        bad("no subject", t(json!({"sub": null}))),
        bad("exp of the wrong type", t(json!({"exp": "tomorrow"}))),
        bad("unknown kid", unknown_kid),
        bad("tampered signature", tampered_sig),
        bad("tampered payload", tampered_payload),
        bad("alg none", unsigned),
        bad(
            "HS256 signed with the RSA public key",
            hs256_with_public_key,
        ),
        bad(
            "HS256 with a symmetric key slipped into the JWKS",
            hs256_with_jwks_oct_key,
        ),
        bad("ES256 header naming the RSA key", es_header_on_rsa_kid),
        bad("PS256, not in the issuer's allow-list", ps256_not_allowed),
        bad("malformed JWT", "abc.def.ghi".into()),
        bad("not base64 at all", "a.b".into()),
        bad(
            "opaque token the issuer does not know",
            "opaque-unknown".into(),
        ),
        bad("inactive introspection", "opaque-inactive".into()),
        bad(
            "introspected token for another server",
            "opaque-other-aud".into(),
        ),
        bad("introspected token expired", "opaque-expired".into()),
        bad(
            "introspected token without audience",
            "opaque-no-aud".into(),
        ),
        bad(
            "introspection naming another issuer",
            "opaque-wrong-iss".into(),
        ),
        bad("revoked API key", revoked),
        bad("expired API key", expired),
        bad("API key for another server", elsewhere),
        bad("unknown API key", unknown_key),
        bad("malformed API key", "ghk_short".into()),
    ];
    cases.push(Bad {
        name: "no credential",
        authorization: vec![],
        status: 401,
        error: None,
    });
    cases.push(Bad {
        name: "Basic scheme",
        authorization: vec!["Basic YWxpY2U6cHc=".into()],
        status: 401,
        error: Some("invalid_token"),
    });
    cases.push(Bad {
        name: "empty bearer",
        authorization: vec!["Bearer ".into()],
        status: 401,
        error: Some("invalid_token"),
    });
    cases.push(Bad {
        name: "two Authorization headers",
        authorization: vec![format!("Bearer {good}"), format!("Bearer {good}")],
        status: 401,
        error: Some("invalid_token"),
    });
    cases.push(Bad {
        name: "characters a token cannot have",
        authorization: vec!["Bearer a,b;c".into()],
        status: 401,
        error: Some("invalid_token"),
    });
    cases.push(Bad {
        name: "valid token without the server's scope",
        authorization: vec![format!("Bearer {}", t(json!({"scope": "other"})))],
        status: 403,
        error: Some("insufficient_scope"),
    });
    assert!(cases.len() >= 25);
    tokio::time::sleep(Duration::from_millis(1100)).await; // let the 1s API key expire

    let mut honest = s.client(&good);
    honest.initialize().await;
    let before = upstream_stats(&mut honest).await;
    let fetches_before = s
        .issuer
        .shared
        .jwks_fetches
        .load(std::sync::atomic::Ordering::SeqCst);
    let http = reqwest::Client::new();
    let call = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "x"}}});
    let mut failures = Vec::new();
    for case in &cases {
        // Each bad credential tries both a new session and the honest client's session.
        for (body, session) in [
            (initialize_body(), None),
            (call.clone(), honest.session.clone()),
        ] {
            let mut req = http
                .post(s.gw.url("/mcp"))
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream");
            if let Some(sid) = &session {
                req = req
                    .header("mcp-session-id", sid)
                    .header("mcp-protocol-version", "2025-11-25");
            }
            for a in &case.authorization {
                req = req.header("authorization", a);
            }
            let r = req.json(&body).send().await.unwrap();
            let status = r.status().as_u16();
            let challenge = r
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            let text = r.text().await.unwrap();
            let ok = status == case.status
                && challenge.starts_with("Bearer ")
                && challenge.contains("resource_metadata=\"")
                && match case.error {
                    Some(e) => {
                        challenge.contains(&format!("error=\"{e}\""))
                            && challenge.contains("error_description=\"")
                    }
                    None => !challenge.contains("error="),
                }
                && text.contains("\"error\"");
            if !ok {
                failures.push(format!("{}: {status} {challenge} {text}", case.name));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let after = upstream_stats(&mut honest).await;
    assert_eq!(
        after["calls"],
        before["calls"].as_u64().unwrap() + 1,
        "only the stats call itself reached the upstream"
    );
    assert_eq!(
        after["requests"],
        before["requests"].as_u64().unwrap() + 1,
        "no bad request reached the upstream at all"
    );
    // Unknown kids do not make the gateway hammer the issuer's key endpoint.
    let fetches = s
        .issuer
        .shared
        .jwks_fetches
        .load(std::sync::atomic::Ordering::SeqCst)
        - fetches_before;
    assert!(
        fetches <= 1,
        "{fetches} JWKS fetches for {} unknown-kid attempts",
        2
    );
    // Nothing secret in the log.
    let log = s.gw.proc.stderr();
    assert!(!log.contains(&good), "a token was logged");
    assert!(
        !log.contains(INTROSPECTION_CLIENT.1),
        "the introspection secret was logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_descriptions_say_what_is_wrong() {
    let s = setup().await;
    let res = s.resource();
    let expect = [
        (s.issuer.token(&res, json!({"exp": now() - 600})), "expired"),
        (
            s.issuer.token("https://evil.example/mcp", json!({})),
            "audience",
        ),
        (s.issuer.sign(TestKey::EsB, &s.issuer.claims(&res)), "es-b"),
        ("ghk_short".to_owned(), "malformed API key"),
    ];
    for (token, words) in expect {
        let r = s.client(&token).post(&initialize_body()).await;
        assert_eq!(r.status, 401);
        assert!(
            header(&r, "www-authenticate").contains(words),
            "{words}: {}",
            header(&r, "www-authenticate")
        );
        assert!(
            r.last()["error"]["message"]
                .as_str()
                .unwrap()
                .contains(words),
            "{}",
            r.raw
        );
    }
    // An issuer that cannot be reached is the gateway's problem, not the client's: 503.
    let mut claims = s.issuer.claims(&res);
    let down = {
        let text = std::fs::read_to_string(&s.gw.config_path).unwrap();
        let line = text
            .lines()
            .skip_while(|l| !l.contains("down:"))
            .nth(1)
            .unwrap()
            .to_owned();
        line.trim().trim_start_matches("issuer:").trim().to_owned()
    };
    claims["iss"] = json!(down);
    let r = s
        .client(&s.issuer.sign(TestKey::EsA, &claims))
        .post(&initialize_body())
        .await;
    assert_eq!(r.status, 503, "{}", r.raw);
    assert!(header(&r, "www-authenticate").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_that_needs_more_scope_answers_403_with_every_scope_for_step_up() {
    let s = setup().await;
    let mut c = s.client(&s.good_token());
    c.initialize().await;
    let r = c.call_tool("slow", json!({"ms": 1})).await;
    assert_eq!(r.status, 403, "{}", r.raw);
    assert!(
        r.content_type().starts_with("application/json"),
        "decided before any stream opens"
    );
    let challenge = header(&r, "www-authenticate");
    assert!(
        challenge.contains(r#"error="insufficient_scope""#),
        "{challenge}"
    );
    assert!(
        challenge.contains(r#"scope="mcp:tools admin:slow""#),
        "{challenge}"
    );
    assert_eq!(r.last()["error"]["code"], -32005);
    assert_eq!(
        r.last()["error"]["data"]["requiredScopes"],
        json!(["mcp:tools", "admin:slow"])
    );
    // Other tools need only the server's scope.
    assert_eq!(c.call_tool("echo", json!({"text": "x"})).await.status, 200);
    // The stepped-up token (same subject) continues the same session.
    let stepped = s
        .issuer
        .token(&s.resource(), json!({"scope": "mcp:tools admin:slow"}));
    let mut c2 = s.client(&stepped);
    c2.session = c.session.clone();
    let r = c2.call_tool("slow", json!({"ms": 1})).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert!(r.last()["result"].is_object(), "{}", r.raw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_belongs_to_its_principal() {
    let s = setup().await;
    let mut alice = s.client(&s.good_token());
    alice.initialize().await;
    let bob_token = s.issuer.token(&s.resource(), json!({"sub": "bob"}));
    let mut bob = s.client(&bob_token);
    bob.session = alice.session.clone();
    let r = bob.call_tool("echo", json!({"text": "x"})).await;
    assert_eq!(
        r.status, 404,
        "another principal's session does not exist for bob: {}",
        r.raw
    );
    assert_eq!(
        alice.call_tool("echo", json!({"text": "x"})).await.status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_tokens_are_introspected_once_and_trusted_no_longer_than_the_cache_allows() {
    let s = setup_with("  cache_max_ttl: 1s").await;
    let exp = now() + 300;
    s.issuer.add_opaque(
        "opaque-good",
        json!({"active": true, "sub": "carol", "aud": s.resource(), "scope": "mcp:tools", "exp": exp, "client_id": "agent"}),
    );
    let mut c = s.client("opaque-good");
    c.initialize().await;
    for _ in 0..5 {
        assert_eq!(c.call_tool("echo", json!({"text": "x"})).await.status, 200);
    }
    let asked = s
        .issuer
        .shared
        .introspections
        .load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(asked, 1, "a verified token is served from the cache");
    // The issuer revokes it: within cache_max_ttl the gateway stops accepting it.
    s.issuer.add_opaque("opaque-good", json!({"active": false}));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let r = c.call_tool("echo", json!({"text": "x"})).await;
    assert_eq!(r.status, 401, "{}", r.raw);
    // A refused token replayed does not reach the issuer again for a while.
    let before = s
        .issuer
        .shared
        .introspections
        .load(std::sync::atomic::Ordering::SeqCst);
    for _ in 0..10 {
        let r = c.call_tool("echo", json!({"text": "x"})).await;
        assert_eq!(r.status, 401);
        assert!(header(&r, "www-authenticate").contains("not active"));
    }
    let after = s
        .issuer
        .shared
        .introspections
        .load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        after, before,
        "replays of a refused token are answered from memory"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_signing_keys_are_picked_up_and_old_ones_keep_working() {
    let s = setup_with("  jwks_refetch_interval: 1s").await;
    let old = s.good_token();
    s.client(&old).initialize().await;
    let new = s.issuer.sign(TestKey::EsB, &s.issuer.claims(&s.resource()));
    // Not yet published: refused, and the refetch it caused is rate-limited.
    assert_eq!(s.client(&new).post(&initialize_body()).await.status, 401);
    let fetches = s
        .issuer
        .shared
        .jwks_fetches
        .load(std::sync::atomic::Ordering::SeqCst);
    for _ in 0..5 {
        let again = s.issuer.sign(TestKey::EsB, &s.issuer.claims(&s.resource()));
        assert_eq!(s.client(&again).post(&initialize_body()).await.status, 401);
    }
    let more = s
        .issuer
        .shared
        .jwks_fetches
        .load(std::sync::atomic::Ordering::SeqCst)
        - fetches;
    assert!(more <= 1, "{more} refetches within the interval");
    s.issuer.rotate_in_es_b();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let rotated = s.issuer.sign(TestKey::EsB, &s.issuer.claims(&s.resource()));
    s.client(&rotated).initialize().await;
    s.client(&s.good_token()).initialize().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_are_created_listed_used_and_revoked() {
    let s = setup_with("  cache_max_ttl: 1s").await;
    let (ok, key, err) = keys_cli(
        &s.gw,
        &[
            "create",
            "--subject",
            "build-bot",
            "--scopes",
            "mcp:tools",
            "--groups",
            "ci",
            "--description",
            "nightly",
        ],
    );
    assert!(ok, "{err}");
    let key = key.trim().to_owned();
    assert!(
        key.starts_with("ghk_") && key.len() == 4 + 12 + 1 + 43,
        "{key}"
    );
    assert!(err.contains("cannot be shown again"), "{err}");
    let (ok, list, _) = keys_cli(&s.gw, &["list"]);
    assert!(ok);
    let id = &key[4..16];
    assert!(
        list.contains(id) && list.contains("build-bot") && list.contains("active"),
        "{list}"
    );
    assert!(
        !list.contains(&key[17..]),
        "the secret must never be listed"
    );
    let (_, json_list, _) = keys_cli(&s.gw, &["list", "--json"]);
    let parsed: Value = serde_json::from_str(&json_list).unwrap();
    assert_eq!(parsed[0]["subject"], "build-bot");
    assert!(parsed[0].get("digest").is_none());
    // Only a digest is stored.
    let db =
        std::fs::read(s.gw.config_path.parent().unwrap().join("gatehouse.db")).unwrap_or_default();
    let wal = std::fs::read(s.gw.config_path.parent().unwrap().join("gatehouse.db-wal"))
        .unwrap_or_default();
    let secret = &key.as_bytes()[17..];
    assert!(
        !db.windows(secret.len()).any(|w| w == secret)
            && !wal.windows(secret.len()).any(|w| w == secret)
    );

    let mut c = s.client(&key);
    c.initialize().await;
    assert_eq!(c.call_tool("echo", json!({"text": "x"})).await.status, 200);
    assert!(keys_cli(&s.gw, &["revoke", id]).0);
    let (ok, _, err) = keys_cli(&s.gw, &["revoke", id]);
    assert!(!ok && err.contains("no active key"), "{err}");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let r = c.call_tool("echo", json!({"text": "x"})).await;
    assert_eq!(r.status, 401, "{}", r.raw);
    assert!(header(&r, "www-authenticate").contains("revoked"));
    // Mistakes are explained.
    let (ok, _, err) = keys_cli(&s.gw, &["create", "--subject", "x", "--server", "/open"]);
    assert!(!ok && err.contains("does not accept API keys"), "{err}");
    let (ok, _, err) = keys_cli(&s.gw, &["create", "--subject", "x", "--expires", "soon"]);
    assert!(!ok && err.contains("--expires"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stateless_clients_authenticate_per_request_and_only_the_caller_resumes_its_call() {
    let s = setup().await;
    let meta = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": { "elicitation": {} }
    });
    let alice = s.client(&s.good_token());
    let bob = s.client(&s.issuer.token(&s.resource(), json!({"sub": "bob"})));
    let anonymous = Client::new(&s.gw.url("/mcp"));
    let r = anonymous
        .stateless_call(
            1,
            json!({"name": "echo", "arguments": {"text": "x"}, "_meta": meta}),
        )
        .await;
    assert_eq!(r.status, 401, "{}", r.raw);
    // Step-up applies to stateless requests too.
    let r = s
        .client(&s.good_token())
        .stateless_call(
            1,
            json!({"name": "slow", "arguments": {"ms": 1}, "_meta": meta}),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.raw);

    let first = s
        .client(&s.good_token())
        .stateless_call(1, json!({"name": "elicit", "arguments": {}, "_meta": meta}))
        .await;
    let result = &first.last()["result"];
    assert_eq!(result["resultType"], "input_required", "{}", first.raw);
    let state = result["requestState"].as_str().unwrap().to_owned();
    let key = result["inputRequests"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    let answer = json!({"action": "accept", "content": {"name": "Mallory"}});
    let retry = json!({"name": "elicit", "arguments": {}, "_meta": meta, "requestState": state, "inputResponses": {key.as_str(): answer}});
    let stolen = bob.stateless_call(2, retry.clone()).await;
    assert_eq!(
        stolen.status, 400,
        "another principal cannot resume alice's call: {}",
        stolen.raw
    );
    let done = alice.stateless_call(3, retry).await;
    assert_eq!(done.status, 200, "{}", done.raw);
    assert!(
        done.raw.contains("Mallory"),
        "alice's call still resumes: {}",
        done.raw
    );
}
