//! A whole gateway in-process for unit tests: built from YAML with some upstream names bound
//! to scripted upstreams, its axum router driven request by request (no listener, no TCP),
//! and clients of both generations that speak the Streamable HTTP rules the endpoint checks.

use crate::config::Config;
use crate::gateway::Gateway;
use crate::upstream::Upstream;
use crate::upstream::scripted::ScriptedUpstream;
use axum::body::Body;
use axum::response::Response;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;

/// Longest wait for any one response or event in these tests: they take milliseconds, this
/// only bounds a hang.
pub const WAIT: Duration = Duration::from_secs(5);

/// A gateway's router (which holds the gateway).
pub struct TestGateway {
    app: axum::Router,
}

impl TestGateway {
    /// A gateway serving `yaml`, whose upstreams named like one of `scripted` are served by it
    /// (the configuration still needs an entry for each, e.g. `{ kind: http, url: … }`).
    pub fn start(yaml: &str, scripted: &[&ScriptedUpstream]) -> Self {
        Self::with_store(yaml, scripted, None)
    }

    /// Like [`start`](Self::start), with a store (API keys need one).
    pub fn with_store(
        yaml: &str,
        scripted: &[&ScriptedUpstream],
        store: Option<crate::store::Store>,
    ) -> Self {
        let config = Config::from_yaml(yaml, std::path::Path::new("pipeline-test.yaml"))
            .unwrap_or_else(|e| panic!("the test configuration: {e}"));
        let bound: HashMap<_, _> = scripted
            .iter()
            .map(|u| (u.name().to_owned(), u.client()))
            .collect();
        let gateway = Gateway::with_clients(config, store, &bound).expect("a gateway");
        let app = crate::downstream::router(crate::web::AppState { gateway });
        TestGateway { app }
    }

    /// Serves one HTTP request.
    pub async fn send(&self, req: http::Request<Body>) -> Response {
        use tower_service::Service;
        let mut app = self.app.clone();
        futures_util::future::poll_fn(|cx| {
            Service::<http::Request<Body>>::poll_ready(&mut app, cx)
        })
        .await
        .expect("the router is always ready");
        tokio::time::timeout(WAIT, app.call(req))
            .await
            .expect("the gateway answers in time")
            .expect("infallible")
    }

    /// POSTs `body` to `path` with the headers every MCP POST carries and `extra`.
    pub async fn post(&self, path: &str, extra: &[(&str, String)], body: &Value) -> Response {
        let mut req = http::Request::post(path)
            .header("host", "127.0.0.1")
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream");
        for (k, v) in extra {
            req = req.header(*k, v);
        }
        self.send(req.body(Body::from(body.to_string())).expect("a request"))
            .await
    }
}

/// The body of `resp` as JSON.
pub async fn json_body(resp: Response) -> Value {
    let bytes = tokio::time::timeout(WAIT, resp.into_body().collect())
        .await
        .expect("the body completes in time")
        .expect("a body")
        .to_bytes();
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
}

/// The content type of `resp`.
pub fn content_type(resp: &Response) -> &str {
    resp.headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// The events of an SSE response, read as they come.
pub struct Events {
    body: Body,
    buf: Vec<u8>,
}

impl Events {
    /// Reads the SSE body of `resp` (panics if it is not one).
    pub fn of(resp: Response) -> Self {
        assert_eq!(content_type(&resp), "text/event-stream", "an SSE answer");
        Events {
            body: resp.into_body(),
            buf: Vec::new(),
        }
    }

    /// The next event's data as JSON; `None` once the stream ends.
    pub async fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let event: Vec<u8> = self.buf.drain(..end + 2).collect();
                let text = String::from_utf8(event).expect("UTF-8 events");
                let data: Vec<&str> = text
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(|d| d.strip_prefix(' ').unwrap_or(d))
                    .collect();
                if data.concat().is_empty() {
                    continue; // a comment (keep-alive) or a priming event (an id, no data)
                }
                return Some(serde_json::from_str(&data.join("\n")).expect("JSON data"));
            }
            let frame = tokio::time::timeout(WAIT, self.body.frame())
                .await
                .expect("an event in time");
            match frame {
                None => return None,
                Some(f) => {
                    if let Ok(data) = f.expect("the stream does not break").into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}

/// A 2025-11-25 client with its session.
pub struct SessionClient<'a> {
    gw: &'a TestGateway,
    path: String,
    /// The session id the gateway issued.
    pub session: String,
    auth: Option<String>,
}

impl<'a> SessionClient<'a> {
    /// Initializes a session at `path`, declaring `capabilities`; `auth` is a bearer credential.
    pub async fn start(
        gw: &'a TestGateway,
        path: &str,
        capabilities: Value,
        auth: Option<&str>,
    ) -> SessionClient<'a> {
        let auth = auth.map(|a| format!("Bearer {a}"));
        let mut headers = Vec::new();
        if let Some(a) = &auth {
            headers.push(("authorization", a.clone()));
        }
        let resp = gw
            .post(
                path,
                &headers,
                &json!({
                    "jsonrpc": "2.0", "id": 0, "method": "initialize",
                    "params": {
                        "protocolVersion": "2025-11-25",
                        "capabilities": capabilities,
                        "clientInfo": { "name": "pipeline-test", "version": "1" }
                    }
                }),
            )
            .await;
        assert_eq!(resp.status(), 200, "initialize");
        let session = resp
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .expect("a session id")
            .to_owned();
        let client = SessionClient {
            gw,
            path: path.to_owned(),
            session,
            auth,
        };
        let r = client
            .send(&json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }))
            .await;
        assert_eq!(r.status(), 202, "notifications/initialized");
        client
    }

    /// POSTs one message in the session.
    pub async fn send(&self, msg: &Value) -> Response {
        let mut headers = vec![
            ("mcp-session-id", self.session.clone()),
            ("mcp-protocol-version", "2025-11-25".to_owned()),
        ];
        if let Some(a) = &self.auth {
            headers.push(("authorization", a.clone()));
        }
        self.gw.post(&self.path, &headers, msg).await
    }

    /// Opens the session's GET stream.
    pub async fn listen(&self) -> Response {
        let mut req = http::Request::get(&self.path)
            .header("host", "127.0.0.1")
            .header("accept", "text/event-stream")
            .header("mcp-session-id", &self.session)
            .header("mcp-protocol-version", "2025-11-25");
        if let Some(a) = &self.auth {
            req = req.header("authorization", a);
        }
        self.gw
            .send(req.body(Body::empty()).expect("a request"))
            .await
    }

    /// Sends request `id` and returns the response.
    pub async fn request(&self, id: i64, method: &str, params: Value) -> Response {
        self.send(&json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }))
            .await
    }
}

/// A 2026-07-28 client: every request carries its `_meta` and the routing headers.
pub struct StatelessClient<'a> {
    gw: &'a TestGateway,
    path: String,
    /// What the client declares it can answer.
    pub capabilities: Value,
}

impl<'a> StatelessClient<'a> {
    /// A client of `path` declaring `capabilities`.
    pub fn new(gw: &'a TestGateway, path: &str, capabilities: Value) -> Self {
        StatelessClient {
            gw,
            path: path.to_owned(),
            capabilities,
        }
    }

    /// Sends request `id`: `params` gain the `_meta` 2026-07-28 requires.
    pub async fn request(&self, id: i64, method: &str, mut params: Value) -> Response {
        params["_meta"] = json!({
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": self.capabilities,
            "io.modelcontextprotocol/clientInfo": { "name": "pipeline-test", "version": "1" },
        });
        let mut headers = vec![
            ("mcp-protocol-version", "2026-07-28".to_owned()),
            ("mcp-method", method.to_owned()),
        ];
        let name = params
            .get("name")
            .or_else(|| params.get("uri"))
            .and_then(Value::as_str);
        if let Some(n) = name {
            headers.push(("mcp-name", crate::protocol::param_headers::encode(n)));
        }
        let msg = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        self.gw.post(&self.path, &headers, &msg).await
    }
}
