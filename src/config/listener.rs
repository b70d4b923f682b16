//! Configuration of the listeners: connection caps and timers of the MCP listener
//! (`limits.connections`) and the operations listener (`ops`: metrics, health, readiness,
//! shutdown drain).

use super::duration::HumanDuration;
use serde::Deserialize;
use std::net::SocketAddr;
use std::time::Duration;

/// Caps and timers for every connection a listener accepts.
#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Connections {
    /// Connections open at once; beyond this a new connection gets a 503 and is closed.
    pub max: usize,
    /// Connections open at once from one client IP address.
    pub per_client: usize,
    /// Time a client has to send a request's headers, and that an HTTP/1.1 connection may
    /// wait for its next request.
    pub header_read_timeout: HumanDuration,
    /// A connection with no request in progress and no traffic for this long is closed.
    pub idle_timeout: HumanDuration,
    /// Largest request head (request line and headers).
    pub max_header_bytes: usize,
    /// Most headers in one HTTP/1.1 request.
    pub max_headers: usize,
    /// HTTP/2: concurrent streams per connection.
    pub http2_max_streams: u32,
    /// HTTP/2: streams reset by the client before the gateway accepted them, per connection,
    /// beyond which the connection is closed (rapid-reset protection).
    pub http2_max_pending_resets: usize,
}

impl Default for Connections {
    fn default() -> Self {
        Connections {
            max: 4096,
            per_client: 256,
            header_read_timeout: HumanDuration(Duration::from_secs(10)),
            idle_timeout: HumanDuration(Duration::from_secs(120)),
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            http2_max_streams: 100,
            http2_max_pending_resets: 20,
        }
    }
}

impl Connections {
    /// The (smaller) caps of the operations listener: a few scrapers and probes.
    pub fn for_ops() -> Connections {
        Connections {
            max: 64,
            per_client: 32,
            ..Connections::default()
        }
    }
}

/// The operations listener and the shutdown sequence.
#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Ops {
    /// Address of the listener serving `/metrics`, `/healthz` and `/readyz`.
    pub listen: String,
    /// After SIGTERM, `/readyz` answers 503 for this long while requests are still served, so
    /// that load balancers stop sending new ones before the listener closes.
    pub drain: HumanDuration,
    /// After the drain, how long in-flight requests and streams get to finish.
    pub grace: HumanDuration,
    /// Upstreams that must be reachable for `/readyz` to answer 200.
    pub ready_requires: Vec<String>,
    /// TLS on the operations listener; with `client_ca`, scrapers and probes must present a
    /// client certificate (`client_cert` is always `required` here).
    pub tls: Option<super::Tls>,
}

impl Default for Ops {
    fn default() -> Self {
        Ops {
            listen: "127.0.0.1:9464".into(),
            drain: HumanDuration(Duration::from_secs(5)),
            grace: HumanDuration(Duration::from_secs(10)),
            ready_requires: Vec::new(),
            tls: None,
        }
    }
}

/// Reports every problem of `limits.connections` and `ops`.
pub fn check(
    connections: &Connections,
    ops: &Ops,
    listen: &str,
    upstreams: &std::collections::BTreeMap<String, super::Upstream>,
    issues: &mut dyn FnMut(String, String),
) {
    let c = "limits.connections";
    if connections.max == 0 {
        issues(format!("{c}.max"), "must be at least 1".into());
    }
    if connections.per_client == 0 || connections.per_client > connections.max {
        issues(
            format!("{c}.per_client"),
            format!(
                "{} is out of range; expected 1 to limits.connections.max ({})",
                connections.per_client, connections.max
            ),
        );
    }
    if connections.header_read_timeout.0.is_zero() {
        issues(
            format!("{c}.header_read_timeout"),
            "must be longer than 0s (a client could hold a connection forever)".into(),
        );
    }
    if connections.idle_timeout.0.is_zero() {
        issues(
            format!("{c}.idle_timeout"),
            "must be longer than 0s (idle connections would never be closed)".into(),
        );
    }
    if connections.max_header_bytes < 8192 {
        issues(
            format!("{c}.max_header_bytes"),
            format!(
                "{} is too small; expected at least 8192",
                connections.max_header_bytes
            ),
        );
    }
    if connections.max_headers == 0 {
        issues(format!("{c}.max_headers"), "must be at least 1".into());
    }
    if connections.http2_max_streams == 0 {
        issues(
            format!("{c}.http2_max_streams"),
            "must be at least 1".into(),
        );
    }
    match ops.listen.parse::<SocketAddr>() {
        Err(_) => issues(
            "ops.listen".into(),
            format!(
                "{:?} is not an address; expected IP:PORT such as \"127.0.0.1:9464\"",
                ops.listen
            ),
        ),
        Ok(a) if a.port() != 0 && listen.parse::<SocketAddr>().is_ok_and(|l| l == a) => issues(
            "ops.listen".into(),
            format!(
                "{:?} is also `listen`; the operations listener needs its own address",
                ops.listen
            ),
        ),
        Ok(_) => {}
    }
    if let Some(tls) = &ops.tls {
        if tls.client_cert == super::ClientCert::Optional {
            issues(
                "ops.tls.client_cert".into(),
                "must be `required` on the operations listener (or leave out `client_ca`)".into(),
            );
        }
        super::tls::check(tls, "ops.tls", issues);
    }
    for (i, name) in ops.ready_requires.iter().enumerate() {
        if !upstreams.contains_key(name) {
            issues(
                format!("ops.ready_requires[{i}]"),
                format!("unknown upstream {name:?}"),
            );
        }
    }
}
