//! Policy, audit and metrics through the real HTTP endpoint: several principals with real
//! signed tokens against two upstreams; the audit trail in SQLite and PostgreSQL; a SIGKILL
//! under load loses no more than the flush interval; /metrics after traffic.

mod auth_support;
mod common;

use auth_support::{TestIssuer, now};
use common::{Client, Fixture, Gateway, Reply};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const POLICY: &str = r#"
    policy:
      default: deny
      rules:
        - name: no-contractors
          effect: deny
          groups: [contractors]
        - name: sales-crm
          tools: "crm__*"
          groups: [sales]
          scopes: [crm:read]
        - name: no-long-echo
          effect: deny
          tools: files__echo
          arguments: "size(args.text) > 10"
        - name: slow-needs-admin
          tools: files__slow
          groups: [engineering]
          require_scopes: [files:admin]
        - name: engineers-files
          upstreams: [files]
          when: 'principal.groups.exists(g, g == "engineering")'
"#;

struct Stack {
    issuer: TestIssuer,
    _crm: Fixture,
    _files: Fixture,
    gw: Gateway,
}

async fn stack(store_url: &str) -> Stack {
    let issuer = TestIssuer::start().await;
    let crm = Fixture::http(&[]);
    let files = Fixture::http(&[]);
    let yaml = format!(
        r#"
auth:
  issuers:
    test: {{ issuer: "{iss}", algorithms: [ES256] }}
audit:
  flush_interval: 100ms
  jsonl: audit.jsonl
  redact:
    digest_tools: ["crm__whoami"]
store:
  url: "{store_url}"
servers:
  - name: main
    path: /mcp
    upstreams: [crm, files]
    prefix: always
    auth: {{ scopes: [mcp:tools] }}
{POLICY}
upstreams:
  crm: {{ kind: http, url: "{crm}" }}
  files: {{ kind: http, url: "{files}" }}
"#,
        iss = issuer.issuer(),
        crm = crm.url,
        files = files.url,
    );
    let gw = Gateway::start(&yaml);
    Stack {
        issuer,
        _crm: crm,
        _files: files,
        gw,
    }
}

impl Stack {
    fn token(&self, sub: &str, groups: &[&str], scope: &str) -> String {
        self.issuer.token(
            &self.gw.url("/mcp"),
            json!({"sub": sub, "groups": groups, "scope": scope}),
        )
    }

    async fn client(&self, sub: &str, groups: &[&str], scope: &str) -> Client {
        let mut c = Client::new(&self.gw.url("/mcp")).with_bearer(&self.token(sub, groups, scope));
        c.initialize().await;
        c
    }
}

fn text(r: &Reply) -> String {
    r.last()["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn prefixes(names: &[String]) -> BTreeSet<String> {
    names
        .iter()
        .map(|n| n.split("__").next().unwrap().to_owned())
        .collect()
}

/// The scripted session both stores are checked against; returns the tokens used.
async fn scripted_session(s: &Stack) -> Vec<String> {
    let alice = s.client("alice", &["sales"], "mcp:tools").await;
    let bob = s.client("bob", &["engineering"], "mcp:tools").await;
    let carol = s
        .client("carol", &["contractors", "sales"], "mcp:tools crm:read")
        .await;
    let dave = s.client("dave", &[], "mcp:tools crm:read").await;
    let erin = s
        .client("erin", &["engineering"], "mcp:tools files:admin")
        .await;
    let mut clients = [alice, bob, carol, dave, erin];
    let tokens = clients.iter().map(|c| c.always[0].1.clone()).collect();
    let [alice, bob, carol, dave, erin] = &mut clients;

    // Listings show each principal exactly what it may use.
    let lists = [
        (alice.tool_names().await, vec!["crm"]),
        (bob.tool_names().await, vec!["files"]),
        (dave.tool_names().await, vec!["crm"]),
        (erin.tool_names().await, vec!["files"]),
    ];
    for (names, want) in &lists {
        assert!(!names.is_empty());
        assert_eq!(
            prefixes(names),
            want.iter().map(|s| s.to_string()).collect(),
            "{names:?}"
        );
    }
    assert!(
        carol.tool_names().await.is_empty(),
        "the deny rule beats sales-crm for contractors"
    );
    assert!(
        bob.tool_names().await.contains(&"files__slow".to_owned()),
        "step-up tools stay visible"
    );

    // Allowed calls work; arguments with secrets are redacted in the audit trail.
    let r = alice
        .call_tool("crm__echo", json!({"text": "hello", "password": "hunter2"}))
        .await;
    assert_eq!(text(&r), "hello", "{}", r.raw);
    assert_eq!(
        text(&bob.call_tool("files__echo", json!({"text": "short"})).await),
        "short"
    );
    // Hidden functions answer exactly like missing ones.
    for (c, name) in [
        (&mut *alice, "files__echo"),
        (&mut *bob, "crm__echo"),
        (&mut *carol, "crm__echo"),
    ] {
        let hidden = c.call_tool(name, json!({"text": "x"})).await;
        // A name no upstream could offer, which the gateway itself answers.
        let missing = c.call_tool("nobody__tool", json!({})).await;
        assert_eq!(hidden.status, 200);
        assert_eq!(hidden.error_code(), missing.error_code(), "{}", hidden.raw);
        assert_eq!(
            hidden.error_message().replace(name, "X"),
            missing.error_message().replace("nobody__tool", "X")
        );
    }
    // Completions of a hidden prompt are refused like the prompt itself.
    let complete = |name: &str| json!({"ref": {"type": "ref/prompt", "name": name}, "argument": {"name": "name", "value": "a"}});
    let r = carol
        .request("completion/complete", complete("files__greet"))
        .await;
    assert_eq!(r.error_code(), Some(-32602), "{}", r.raw);
    let r = alice
        .request("completion/complete", complete("files__greet"))
        .await;
    assert_eq!(
        r.error_code(),
        Some(-32602),
        "alice's rules name only tools: {}",
        r.raw
    );
    let r = bob
        .request("completion/complete", complete("files__greet"))
        .await;
    assert!(r.last()["result"]["completion"].is_object(), "{}", r.raw);
    // An argument rule refuses a visible tool and names itself.
    let r = bob
        .call_tool("files__echo", json!({"text": "far too long for the rule"}))
        .await;
    assert_eq!(r.error_code(), Some(-32006), "{}", r.raw);
    assert!(r.error_message().contains("no-long-echo"), "{}", r.raw);
    // require_scopes: 403 with every scope the call needs, decided before any stream opens.
    let r = bob.call_tool("files__slow", json!({"ms": 1})).await;
    assert_eq!(r.status, 403, "{}", r.raw);
    let challenge = r.headers["www-authenticate"].to_str().unwrap().to_owned();
    assert!(
        challenge.contains(r#"scope="mcp:tools files:admin""#),
        "{challenge}"
    );
    assert_eq!(
        erin.call_tool("files__slow", json!({"ms": 1})).await.status,
        200
    );
    // A digest-only tool.
    assert_eq!(
        alice
            .call_tool("crm__whoami", json!({"secret_question": "pets"}))
            .await
            .status,
        200
    );
    tokens
}

fn audit_cli(gw: &Gateway, args: &[&str]) -> Vec<Value> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .arg("audit")
        .arg("--config")
        .arg(&gw.config_path)
        .args(["--since", "all", "--json", "--limit", "1000"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn find<'a>(records: &'a [Value], subject: &str, target: &str) -> Vec<&'a Value> {
    records
        .iter()
        .filter(|r| r["subject"] == subject && r["target"] == target)
        .collect()
}

async fn check_audit_trail(s: &Stack, tokens: &[String]) {
    tokio::time::sleep(Duration::from_millis(400)).await; // > flush_interval
    let all = audit_cli(&s.gw, &[]);
    let ok = find(&all, "alice", "crm__echo");
    assert_eq!(ok.len(), 1, "{all:#?}");
    let r = ok[0];
    assert_eq!(
        (
            r["decision"].as_str(),
            r["rule"].as_str(),
            r["outcome"].as_str()
        ),
        (Some("allow"), Some("sales-crm"), Some("ok"))
    );
    assert_eq!(r["upstream"], "crm");
    assert_eq!(r["method"], "tools/call");
    assert!(
        r["latency_us"].as_i64().unwrap() > 0
            && r["bytes_out"].as_i64().unwrap() > 0
            && r["bytes_in"].as_i64().unwrap() > 0
    );
    let args = r["arguments"].as_str().unwrap();
    assert!(
        args.contains("hello") && args.contains("[redacted]") && !args.contains("hunter2"),
        "{args}"
    );

    let denied = find(&all, "bob", "files__echo");
    let refused: Vec<_> = denied
        .iter()
        .filter(|r| r["outcome"] == "refused")
        .collect();
    assert_eq!(refused.len(), 1, "{denied:#?}");
    assert_eq!(
        (
            refused[0]["decision"].as_str(),
            refused[0]["rule"].as_str(),
            refused[0]["error_code"].as_i64()
        ),
        (Some("deny"), Some("no-long-echo"), Some(-32006))
    );
    let hidden = find(&all, "carol", "crm__echo");
    assert_eq!(
        (hidden[0]["decision"].as_str(), hidden[0]["rule"].as_str()),
        (Some("deny"), Some("no-contractors"))
    );
    let step_up = find(&all, "bob", "files__slow");
    assert_eq!(
        (
            step_up[0]["decision"].as_str(),
            step_up[0]["error_code"].as_i64()
        ),
        (Some("insufficient_scope"), Some(403))
    );
    let digest = find(&all, "alice", "crm__whoami");
    let d = digest[0]["arguments"].as_str().unwrap();
    assert!(d.starts_with("sha256:") && !d.contains("pets"), "{d}");
    // Listings and initialize are recorded too.
    assert!(
        all.iter()
            .any(|r| r["method"] == "tools/list" && r["subject"] == "carol")
    );
    assert!(
        all.iter()
            .any(|r| r["method"] == "initialize" && r["subject"] == "erin")
    );
    // Filters of the CLI.
    let only = audit_cli(&s.gw, &["--subject", "bob", "--outcome", "refused"]);
    assert!(
        !only.is_empty()
            && only
                .iter()
                .all(|r| r["subject"] == "bob" && r["outcome"] == "refused")
    );
    let table = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["audit", "--since", "1h", "--tool", "crm__echo", "--config"])
        .arg(&s.gw.config_path)
        .output()
        .unwrap();
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(
        table.contains("allow (sales-crm)") && table.contains("alice"),
        "{table}"
    );
    // No credential anywhere: not in the records, not in the log.
    let dump = serde_json::to_string(&all).unwrap();
    let log = s.gw.proc.stderr();
    for t in tokens {
        let sig = t.rsplit('.').next().unwrap();
        assert!(!dump.contains(sig) && !log.contains(sig), "a token leaked");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_matrix_and_audit_trail_on_sqlite() {
    let s = stack("sqlite://gatehouse.db").await;
    let tokens = scripted_session(&s).await;
    check_audit_trail(&s, &tokens).await;
    // The database file itself holds no token either.
    let dir = s.gw.config_path.parent().unwrap();
    let mut bytes = std::fs::read(dir.join("gatehouse.db")).unwrap();
    bytes.extend(std::fs::read(dir.join("gatehouse.db-wal")).unwrap_or_default());
    for t in &tokens {
        let sig = t.rsplit('.').next().unwrap().as_bytes();
        assert!(!bytes.windows(sig.len()).any(|w| w == sig));
    }
    // The JSON-lines sink (next to the configuration) carries the same records.
    let lines = std::fs::read_to_string(dir.join("audit.jsonl")).unwrap();
    let from_file: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        find(&from_file, "bob", "files__echo")
            .iter()
            .any(|r| r["rule"] == "no-long-echo")
    );
    assert_eq!(
        from_file.len(),
        audit_cli(&s.gw, &[]).len(),
        "every stored record is also a line"
    );
    // Metrics after the traffic.
    let metrics = s.gw.metrics().await;
    for expected in [
        r#"gatehouse_requests_total{server="main",upstream="crm",method="tools/call",tool="crm__echo",outcome="ok",tenant=""} 1"#,
        r#"gatehouse_policy_denials_total{server="main",rule="no-long-echo",tenant=""} 1"#,
        r#"gatehouse_auth_failures_total{server="main",reason="insufficient_scope",tenant=""} 1"#,
        r#"gatehouse_upstream_up{upstream="files",tenant=""} 1"#,
        "gatehouse_added_latency_seconds_bucket",
        "gatehouse_audit_written_total",
    ] {
        assert!(
            metrics.contains(expected),
            "missing {expected} in\n{metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_audit_trail_on_postgres() {
    let schema = format!("gh_audit_{}_{}", std::process::id(), now());
    let admin = sqlx::PgPool::connect("postgres://postgres@127.0.0.1:5432/test")
        .await
        .expect("PostgreSQL on 127.0.0.1:5432");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&admin)
        .await
        .unwrap();
    let url =
        format!("postgres://postgres@127.0.0.1:5432/test?options=-c%20search_path%3D{schema}");
    let s = stack(&url).await;
    let tokens = scripted_session(&s).await;
    check_audit_trail(&s, &tokens).await;
    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {schema}.audit_records"
    )))
    .fetch_one(&admin)
    .await
    .unwrap();
    assert!(n > 20, "{n} records in PostgreSQL");
    drop(s);
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&admin)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_gateway_loses_no_more_than_the_flush_interval() {
    let s = stack("sqlite://gatehouse.db").await;
    let token = s.token("loader", &["sales"], "mcp:tools");
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let mut c = Client::new(&s.gw.url("/mcp")).with_bearer(&token);
        c.initialize().await;
        let (url, session, token) = (c.url.clone(), c.session.clone().unwrap(), token.clone());
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut done = Vec::new();
            let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "crm__echo", "arguments": {"text": "x"}}});
            while started.elapsed() < Duration::from_millis(1500) {
                let sent = http
                    .post(&url)
                    .bearer_auth(&token)
                    .header("accept", "application/json, text/event-stream")
                    .header("mcp-session-id", &session)
                    .header("mcp-protocol-version", "2025-11-25")
                    .json(&body)
                    .send()
                    .await;
                // After the kill, requests fail; only answered calls count.
                let Ok(r) = sent else { break };
                let ok = r.status() == 200;
                match r.text().await {
                    Ok(t) if ok && t.contains("result") => done.push(Instant::now()),
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            done
        }));
    }
    // Kill while the load is still running.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let killed_at = Instant::now();
    s.gw.proc.signal(libc::SIGKILL);
    let mut completed = Vec::new();
    for t in tasks {
        completed.extend(t.await.unwrap());
    }
    // Calls answered before the kill, minus the documented window (flush_interval 100ms) and
    // a margin for the write itself, must all be in the store.
    let window = Duration::from_millis(100 + 200);
    let must_have = completed
        .iter()
        .filter(|t| **t + window < killed_at)
        .count();
    let dir = s.gw.config_path.parent().unwrap();
    let store = gatehouse::store::Store::open("sqlite://gatehouse.db", dir, 1)
        .await
        .unwrap();
    let filter = gatehouse::store::AuditFilter {
        subject: Some("loader".into()),
        target: Some("crm__echo".into()),
        limit: 1_000_000,
        ..Default::default()
    };
    let stored = store.query_audit(&filter).await.unwrap().len();
    eprintln!(
        "answered {}, answered before kill - window {must_have}, stored {stored}",
        completed.len()
    );
    assert!(
        must_have > 20,
        "the load produced too few calls to judge: {must_have}"
    );
    assert!(
        stored >= must_have,
        "{stored} records stored, {must_have} calls finished more than {window:?} before the kill"
    );
    assert!(
        stored <= completed.len() + 4,
        "{stored} records for {} calls",
        completed.len()
    );
}

#[test]
fn policy_explain_names_the_deciding_rule() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gatehouse.yaml");
    std::fs::write(
        &config,
        format!(
            "auth:\n  issuers:\n    t: {{ issuer: \"https://idp.example\" }}\nservers:\n  - name: main\n    path: /mcp\n    upstreams: [crm, files]\n    prefix: always\n    auth: {{ scopes: [mcp:tools] }}\n{POLICY}\nupstreams:\n  crm: {{ kind: http, url: \"http://127.0.0.1:9/\" }}\n  files: {{ kind: http, url: \"http://127.0.0.1:9/\" }}\n"
        ),
    )
    .unwrap();
    let claims = dir.path().join("claims.json");
    let explain = |claims_json: Value, args: &[&str]| {
        std::fs::write(&claims, claims_json.to_string()).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .args(["policy", "explain", "--config"])
            .arg(&config)
            .arg("--token-claims")
            .arg(&claims)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // Claims as the IdP would issue them for this server: its issuer, its resource, not expired.
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let token = |mut claims: Value| {
        let base =
            json!({"iss": "https://idp.example", "aud": "http://127.0.0.1:8080/mcp", "exp": exp});
        for (k, v) in base.as_object().unwrap() {
            claims
                .as_object_mut()
                .unwrap()
                .entry(k.clone())
                .or_insert(v.clone());
        }
        claims
    };
    let sales = token(json!({"sub": "alice", "groups": ["sales"], "scope": "mcp:tools"}));
    let (code, out, _) = explain(sales.clone(), &["--tool", "crm__echo"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("allowed by rule \"sales-crm\"") && out.contains("ALLOWED"),
        "{out}"
    );
    let (code, out, _) = explain(sales, &["--tool", "files__echo"]);
    assert_eq!(code, Some(1));
    assert!(
        out.contains("denied by rule \"default\"") && out.contains("hidden"),
        "{out}"
    );
    // What the gateway refuses with 401 is DENIED, whatever the rules say about the principal.
    for (why, claims, says) in [
        (
            "wrong audience",
            token(
                json!({"sub": "alice", "groups": ["sales"], "scope": "mcp:tools", "aud": "https://other.example/mcp"}),
            ),
            "is not this server",
        ),
        (
            "untrusted issuer",
            token(
                json!({"sub": "alice", "groups": ["sales"], "scope": "mcp:tools", "iss": "https://evil.example"}),
            ),
            "is not trusted",
        ),
        (
            "expired",
            token(
                json!({"sub": "alice", "groups": ["sales"], "scope": "mcp:tools", "exp": 1_000_000}),
            ),
            "expired",
        ),
        (
            "no expiry",
            {
                let mut c =
                    token(json!({"sub": "alice", "groups": ["sales"], "scope": "mcp:tools"}));
                c.as_object_mut().unwrap().remove("exp");
                c
            },
            "no expiry",
        ),
    ] {
        let (code, out, _) = explain(claims, &["--tool", "crm__echo"]);
        assert_eq!(code, Some(1), "{why}: {out}");
        assert!(
            out.contains(says) && out.contains("401") && out.contains("DENIED"),
            "{why}: {out}"
        );
    }
    let eng = token(json!({"sub": "bob", "groups": ["engineering"], "scope": "mcp:tools"}));
    let (_, out, _) = explain(
        eng.clone(),
        &[
            "--tool",
            "files__echo",
            "--arguments",
            r#"{"text": "much longer than ten"}"#,
        ],
    );
    assert!(
        out.contains("denied by rule \"no-long-echo\"")
            && out.contains("visible, but this call is refused"),
        "{out}"
    );
    let (code, out, _) = explain(eng, &["--tool", "files__slow"]);
    assert_eq!(code, Some(1));
    assert!(out.contains("missing files:admin"), "{out}");
    let (code, _, err) = explain(
        json!({"sub": "x"}),
        &["--tool", "crm__echo", "--prompt", "p"],
    );
    assert_eq!(code, Some(2), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_and_scope_changes_apply_on_reload_and_a_bad_rule_is_refused() {
    let s = stack("sqlite://gatehouse.db").await;
    let mut bob = s.client("bob", &["engineering"], "mcp:tools").await;
    assert!(
        bob.tool_names()
            .await
            .iter()
            .all(|n| n.starts_with("files__"))
    );
    let original = std::fs::read_to_string(&s.gw.config_path).unwrap();
    // A CEL syntax error: the reload is refused and the running policy stays.
    std::fs::write(
        &s.gw.config_path,
        original.replace("size(args.text) > 10", "size(args.text >"),
    )
    .unwrap();
    s.gw.proc.signal(libc::SIGHUP);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        s.gw.proc.stderr().contains("NOT reloaded"),
        "{}",
        s.gw.proc.stderr()
    );
    assert!(
        bob.tool_names()
            .await
            .iter()
            .all(|n| n.starts_with("files__"))
    );
    // Engineers get the CRM tools too: the new policy applies to the same session.
    std::fs::write(
        &s.gw.config_path,
        original.replace("groups: [sales]", "groups: [sales, engineering]"),
    )
    .unwrap();
    s.gw.proc.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !bob
        .tool_names()
        .await
        .iter()
        .any(|n| n.starts_with("crm__"))
    {
        assert!(
            Instant::now() < deadline,
            "the reloaded policy did not apply"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A new server scope applies to tokens already verified and cached.
    std::fs::write(
        &s.gw.config_path,
        original.replace(
            "auth: { scopes: [mcp:tools] }",
            "auth: { scopes: [mcp:tools, mcp:v2] }",
        ),
    )
    .unwrap();
    s.gw.proc.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = bob.request("tools/list", json!({})).await;
        if r.status == 403 {
            assert!(
                r.headers["www-authenticate"]
                    .to_str()
                    .unwrap()
                    .contains("mcp:tools mcp:v2")
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new scope requirement did not apply"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
