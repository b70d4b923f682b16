//! The command line and the process lifecycle: `check`, JSON logs, graceful shutdown that takes
//! the upstream child processes with it.

mod common;

use common::{Client, Gateway, stdio_fixture_upstream};
use serde_json::json;
use std::process::Command;
use std::time::{Duration, Instant};

fn check(path: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["check", "--config"])
        .arg(path)
        .output()
        .unwrap()
}

#[test]
fn check_names_the_file_and_every_bad_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "listen: nowhere\nservers:\n  - { name: a, path: /mcp, upstreams: [ghost] }\nupstreams:\n  real: { kind: http }\n",
    )
    .unwrap();
    let out = check(&path);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let file = path.display().to_string();
    for needle in [
        // Semantic problems carry the line of the field, or of the mapping that lacks it.
        format!("{file}:1: listen:"),
        format!("{file}:3: servers[0].upstreams[0]: unknown upstream \"ghost\""),
        format!("{file}:5: upstreams.real.url: required for kind http"),
    ] {
        assert!(err.contains(&needle), "missing {needle:?} in:\n{err}");
    }

    std::fs::write(&path, "servers: []\nupstreams: {}\nlisten_on: x\n").unwrap();
    let out = check(&path);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("listen_on"));

    let good = format!(
        "servers:\n  - {{ name: a, path: /mcp, upstreams: [fx] }}\nupstreams:\n{}",
        stdio_fixture_upstream("fx", &[])
    );
    std::fs::write(&path, good).unwrap();
    let out = check(&path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK (1 virtual server, 1 upstream)"));
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_the_gateway_and_its_upstream_processes_and_logs_are_json() {
    let yaml = format!(
        "log: {{ format: json, level: info }}\nservers:\n  - {{ name: a, path: /mcp, upstreams: [fx] }}\nupstreams:\n{}",
        stdio_fixture_upstream("fx", &[])
    );
    let mut gw = Gateway::start_with_env(&yaml, &[("RUST_LOG", "info")]);
    let mut client = Client::new(&gw.url("/mcp"));
    client.initialize().await;
    assert_eq!(
        client.call_tool("echo", json!({"text": "up"})).await.text(),
        "up"
    );
    let kids: Vec<u32> = (std::fs::read_dir(format!("/proc/{}/task", gw.proc.child.id())).unwrap())
        .flatten()
        .flat_map(|t| {
            std::fs::read_to_string(t.path().join("children"))
                .unwrap_or_default()
                .split_whitespace()
                .map(|p| p.parse().unwrap())
                .collect::<Vec<u32>>()
        })
        .collect();
    assert_eq!(kids.len(), 1, "{kids:?}");

    gw.proc.signal(libc::SIGTERM);
    let started = Instant::now();
    while gw.proc.running() && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!gw.proc.running(), "the gateway did not stop on SIGTERM");
    assert_eq!(gw.proc.child.wait().unwrap().code(), Some(0));
    assert!(
        !std::path::Path::new(&format!("/proc/{}", kids[0])).exists(),
        "the upstream child outlived the gateway"
    );

    let stderr = gw.proc.stderr();
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for line in &lines {
        if line.contains("stderr:") {
            continue; // the child's own stderr, copied into a JSON log line anyway
        }
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v.get("level").is_some() && v.get("message").is_some(),
            "{line}"
        );
    }
    assert!(stderr.contains("stopped upstream process"), "{stderr}");
}

/// Risky settings that work are warnings: `check` still passes, and names the line and field.
#[test]
fn check_warns_of_shared_audiences_and_rules_read_as_and() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("risky.yaml");
    std::fs::write(
        &path,
        "auth:\n  issuers:\n    okta:\n      issuer: https://corp.okta.com/oauth2/default\n      audiences: [\"api://default\"]\nservers:\n  - name: a\n    path: /mcp\n    upstreams: [u]\n    auth: { scopes: [mcp:tools] }\n    policy:\n      rules:\n        - { tenants: [t-1], roles: [admin] }\n        - { tenants: [t-2], groups: [ops] }\nupstreams:\n  u: { kind: http, url: \"http://127.0.0.1:9/mcp\" }\n",
    )
    .unwrap();
    let out = check(&path);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let file = path.display().to_string();
    for needle in [
        format!("warning: {file}:5: auth.issuers.okta.audiences[0]: \"api://default\" is shared"),
        format!(
            "warning: {file}:13: servers[0].policy.rules[0]: `tenants` and `roles` are alternatives (OR)"
        ),
        format!(
            "warning: {file}:14: servers[0].policy.rules[1]: `tenants` and `groups` are alternatives"
        ),
    ] {
        assert!(err.contains(&needle), "missing {needle:?} in:\n{err}");
    }
    // In a pipeline that reviews configurations, warnings can fail the check.
    let strict = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["check", "--strict", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(strict.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&strict.stderr).contains("3 warnings (--strict)"));
    // One tenant only: nothing to confuse, no warning.
    let single = std::fs::read_to_string(&path)
        .unwrap()
        .replace("t-2", "t-1");
    std::fs::write(&path, single).unwrap();
    let out = check(&path);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("alternatives"));
}

/// `gatehouse probe` is the image's health check: it must tell up from down and from a non-2xx.
#[test]
fn probe_succeeds_only_on_a_2xx() {
    let yaml = format!(
        "servers:\n  - {{ name: a, path: /mcp, upstreams: [fx] }}\nupstreams:\n{}",
        stdio_fixture_upstream("fx", &[])
    );
    let gw = Gateway::start(&yaml);
    let probe = |url: &str| {
        Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .args(["probe", "--timeout", "2", url])
            .output()
            .unwrap()
    };
    let up = probe(&gw.ops_url("/healthz"));
    assert_eq!(up.status.code(), Some(0), "{up:?}");
    let missing = probe(&gw.ops_url("/nothing-here"));
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("answered 404"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = probe(&format!("http://127.0.0.1:{port}/healthz"));
    assert_eq!(down.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&down.stderr).contains("no answer"));
    let bad = probe("ftp://127.0.0.1/");
    assert_eq!(bad.status.code(), Some(1));
}
