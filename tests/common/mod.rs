//! Test harness: starts real `gatehouse` and `gatehouse-fixture` processes on free loopback
//! ports and talks to them over HTTP like an MCP client would.
#![allow(dead_code)]

use gatehouse::protocol::sse::{EventBuffer, SseParser};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A binary of this workspace, next to the gateway binary cargo built for the tests.
pub fn workspace_bin(name: &str) -> PathBuf {
    let gateway = PathBuf::from(env!("CARGO_BIN_EXE_gatehouse"));
    let path = gateway.with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing; build the workspace first (cargo build --workspace)",
        path.display()
    );
    path
}

/// The fixture binary.
pub fn fixture_bin() -> PathBuf {
    workspace_bin("gatehouse-fixture")
}

/// A child process killed when dropped, with its stderr kept in a file.
pub struct Proc {
    pub child: Child,
    pub stderr_path: PathBuf,
    /// Lines printed to stdout before the ready line.
    earlier_stdout: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    _dir: Option<tempfile::TempDir>,
}

impl Proc {
    /// Starts `cmd`, waits for a stdout line starting with `ready_prefix`, returns the rest.
    pub fn spawn(mut cmd: Command, ready_prefix: &str, dir: tempfile::TempDir) -> (Proc, String) {
        let stderr_path = dir.path().join(format!("stderr-{}.log", rand_suffix()));
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let prefix = ready_prefix.to_owned();
        let earlier = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = earlier.clone();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !sent && let Some(rest) = line.strip_prefix(&prefix) {
                    let _ = tx.send(rest.trim().to_owned());
                    sent = true;
                } else if !sent {
                    seen.lock().unwrap().push(line);
                }
            }
        });
        let mut proc = Proc {
            child,
            stderr_path,
            earlier_stdout: earlier,
            _dir: Some(dir),
        };
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(rest) => (proc, rest),
            Err(_) => {
                let _ = proc.child.kill();
                panic!("{cmd:?} did not become ready; stderr:\n{}", proc.stderr());
            }
        }
    }

    /// The rest of the first stdout line before the ready line that starts with `prefix`.
    pub fn printed(&self, prefix: &str) -> Option<String> {
        self.earlier_stdout
            .lock()
            .unwrap()
            .iter()
            .find_map(|l| l.strip_prefix(prefix).map(|r| r.trim().to_owned()))
    }

    /// What the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Sends a signal.
    pub fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A running fixture upstream over HTTP.
pub struct Fixture {
    pub url: String,
    pub proc: Proc,
}

impl Fixture {
    /// Starts `gatehouse-fixture http` with extra arguments.
    pub fn http(args: &[&str]) -> Fixture {
        let mut cmd = Command::new(fixture_bin());
        cmd.arg("http").arg("--port").arg("0").args(args);
        let (proc, url) = Proc::spawn(cmd, "READY ", tempfile::tempdir().unwrap());
        Fixture { url, proc }
    }
}

/// A running gateway.
pub struct Gateway {
    pub base: String,
    /// Base URL of the operations listener.
    pub ops_base: String,
    pub proc: Proc,
    pub config_path: PathBuf,
}

impl Gateway {
    /// Starts the gateway with this YAML (its `listen` is forced to a free loopback port).
    pub fn start(yaml: &str) -> Gateway {
        Self::start_with_env(yaml, &[])
    }

    /// Starts the gateway with extra environment variables.
    pub fn start_with_env(yaml: &str, env: &[(&str, &str)]) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("gatehouse.yaml");
        let mut yaml = if yaml.lines().any(|l| l.starts_with("listen:")) {
            yaml.to_owned()
        } else {
            format!("listen: 127.0.0.1:0\n{yaml}")
        };
        // The default operations port is fixed; tests run side by side, so each gets a free one.
        if !yaml.lines().any(|l| l.starts_with("ops:")) {
            yaml = format!("ops: {{ listen: 127.0.0.1:0 }}\n{yaml}");
        }
        std::fs::write(&config_path, yaml).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_gatehouse"));
        cmd.arg("serve").arg("--config").arg(&config_path);
        cmd.env("RUST_LOG", "gatehouse=debug,info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let (proc, base) = Proc::spawn(cmd, "gatehouse listening on ", dir);
        let ops_base = proc
            .printed("gatehouse ops listening on ")
            .expect("the gateway prints its ops address before its main one");
        Gateway {
            base,
            ops_base,
            proc,
            config_path,
        }
    }

    /// The URL of a path on this gateway.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The URL of a path on the gateway's operations listener (`/metrics`, `/healthz`,
    /// `/readyz`).
    pub fn ops_url(&self, path: &str) -> String {
        format!("{}{}", self.ops_base, path)
    }

    /// The Prometheus exposition, as text.
    pub async fn metrics(&self) -> String {
        reqwest::get(self.ops_url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

/// YAML for one virtual server at /mcp in front of one HTTP upstream named `fx`.
pub fn http_fixture_config(url: &str, protocol: &str) -> String {
    format!(
        "servers:\n  - {{ name: main, path: /mcp, upstreams: [fx] }}\nupstreams:\n  fx: {{ kind: http, url: \"{url}\", protocol: \"{protocol}\" }}\n"
    )
}

/// YAML for a stdio upstream running the fixture.
pub fn stdio_fixture_upstream(name: &str, extra_args: &[&str]) -> String {
    let mut args = vec!["stdio".to_owned()];
    args.extend(extra_args.iter().map(|s| s.to_string()));
    format!(
        "  {name}:\n    kind: stdio\n    command: {:?}\n    args: {}\n",
        fixture_bin().display().to_string(),
        serde_json::to_string(&args).unwrap()
    )
}

/// What came back for one POST.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    /// Every JSON-RPC message in the body (one for JSON, several for SSE).
    pub messages: Vec<Value>,
    pub raw: String,
}

impl Reply {
    /// The last message (the final response for a request).
    pub fn last(&self) -> &Value {
        self.messages
            .last()
            .unwrap_or_else(|| panic!("no message in reply: {self:?}"))
    }

    /// The error code of the last message.
    pub fn error_code(&self) -> Option<i64> {
        self.messages.last()?.pointer("/error/code")?.as_i64()
    }

    /// The error message of the last message.
    pub fn error_message(&self) -> String {
        self.messages
            .last()
            .and_then(|m| m.pointer("/error/message"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    }

    /// The content type's media type.
    pub fn content_type(&self) -> String {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    }

    /// The first text content of a tool result.
    pub fn text(&self) -> String {
        self.last()
            .pointer("/result/content/0/text")
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no text content in {:?}", self.last()))
            .to_owned()
    }
}

/// Parses a response body as JSON or SSE.
pub fn parse_body(content_type: &str, body: &str) -> Vec<Value> {
    if content_type.starts_with("text/event-stream") {
        let mut p = SseParser::new(usize::MAX);
        let chunk = bytes::Bytes::copy_from_slice(body.as_bytes());
        p.feed_whole(&chunk, &mut EventBuffer::default())
            .unwrap()
            .into_iter()
            .filter(|data| !data.is_empty())
            .map(|data| {
                serde_json::from_slice(&data).unwrap_or_else(|e| {
                    panic!("not JSON ({e}): {}", String::from_utf8_lossy(&data))
                })
            })
            .collect()
    } else if body.trim().is_empty() {
        vec![]
    } else {
        vec![serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))]
    }
}

/// A minimal MCP client over Streamable HTTP.
pub struct Client {
    pub http: reqwest::Client,
    pub url: String,
    pub session: Option<String>,
    pub version: String,
    /// Headers sent with every request (e.g. `authorization`).
    pub always: Vec<(String, String)>,
    next_id: i64,
}

impl Client {
    /// A client for an endpoint URL.
    pub fn new(url: &str) -> Client {
        Client {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            url: url.to_owned(),
            session: None,
            version: "2025-11-25".into(),
            always: Vec::new(),
            next_id: 1,
        }
    }

    /// The same client sending `Authorization: Bearer <token>` with every request.
    pub fn with_bearer(mut self, token: &str) -> Client {
        self.always.retain(|(k, _)| k != "authorization");
        self.always
            .push(("authorization".into(), format!("Bearer {token}")));
        self
    }

    /// A fresh request id.
    pub fn id(&mut self) -> i64 {
        self.next_id += 1;
        self.next_id
    }

    /// POSTs a raw body with the standard headers plus `extra`.
    pub async fn post_raw(&self, body: impl Into<reqwest::Body>, extra: &[(&str, &str)]) -> Reply {
        let mut req = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream");
        if let Some(s) = &self.session {
            req = req.header("mcp-session-id", s);
            req = req.header("mcp-protocol-version", &self.version);
        }
        for (k, v) in &self.always {
            req = req.header(k.as_str(), v.as_str());
        }
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        let resp = req.body(body).send().await.expect("request failed");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let raw = resp.text().await.unwrap_or_default();
        let ct = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let messages = if status == 202 {
            vec![]
        } else {
            parse_body(&ct, &raw)
        };
        Reply {
            status,
            headers,
            messages,
            raw,
        }
    }

    /// POSTs a JSON value.
    pub async fn post(&self, body: &Value) -> Reply {
        self.post_raw(serde_json::to_vec(body).unwrap(), &[]).await
    }

    /// Runs initialize + initialized and keeps the session id.
    pub async fn initialize(&mut self) -> Value {
        let id = self.id();
        let reply = self
            .post(&json!({
                "jsonrpc": "2.0", "id": id, "method": "initialize",
                "params": {
                    "protocolVersion": self.version,
                    "capabilities": { "sampling": {}, "elicitation": {}, "roots": { "listChanged": true } },
                    "clientInfo": { "name": "gatehouse-tests", "version": "1" }
                }
            }))
            .await;
        assert_eq!(reply.status, 200, "initialize failed: {}", reply.raw);
        self.session = reply
            .headers
            .get("mcp-session-id")
            .map(|v| v.to_str().unwrap().to_owned());
        assert!(self.session.is_some(), "no session id");
        let r = self
            .post(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        assert_eq!(r.status, 202);
        reply.last().clone()
    }

    /// Sends a request and returns the reply.
    pub async fn request(&mut self, method: &str, params: Value) -> Reply {
        let id = self.id();
        self.post(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await
    }

    /// A 2026-07-28 `tools/call` (no session; the name echoed in `Mcp-Name`).
    pub async fn stateless_call(&self, id: i64, params: Value) -> Reply {
        let name = params["name"].as_str().unwrap().to_owned();
        let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params});
        self.post_raw(
            serde_json::to_vec(&body).unwrap(),
            &[
                ("mcp-protocol-version", "2026-07-28"),
                ("mcp-method", "tools/call"),
                ("mcp-name", &name),
            ],
        )
        .await
    }

    /// Calls a tool.
    pub async fn call_tool(&mut self, name: &str, arguments: Value) -> Reply {
        self.request("tools/call", json!({"name": name, "arguments": arguments}))
            .await
    }

    /// The names of the tools listed.
    pub async fn tool_names(&mut self) -> Vec<String> {
        let r = self.request("tools/list", json!({})).await;
        r.last()["result"]["tools"]
            .as_array()
            .unwrap_or_else(|| panic!("bad tools/list: {}", r.raw))
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect()
    }
}
