//! The accept loop shared by the MCP and the operations listeners: connection caps (in all and
//! per client address), hyper's HTTP/1.1 and HTTP/2 with timers and header limits, an idle
//! timeout, and a drain that lets open connections finish their requests.

use crate::config::Connections;
use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

/// Connections refused at the cap that may be answered at once; beyond this they are closed
/// without an answer (a flood must not turn the refusals themselves into a resource).
const REFUSALS_IN_FLIGHT: usize = 64;
/// Longest time spent writing a refusal.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Open connections, in all and per client address.
pub struct Tracker {
    limits: Connections,
    open: AtomicUsize,
    per_client: Mutex<HashMap<IpAddr, usize>>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtCap {
    /// `limits.connections.max`.
    Total(usize),
    /// `limits.connections.per_client`.
    PerClient(usize),
}

/// One admitted connection; releases its place when dropped.
pub struct Permit {
    tracker: Arc<Tracker>,
    ip: IpAddr,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.tracker.open.fetch_sub(1, Ordering::AcqRel);
        let mut per = self
            .tracker
            .per_client
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = per.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per.remove(&self.ip);
            }
        }
    }
}

impl Tracker {
    /// A tracker enforcing `limits`.
    pub fn new(limits: Connections) -> Arc<Tracker> {
        Arc::new(Tracker {
            limits,
            open: AtomicUsize::new(0),
            per_client: Mutex::new(HashMap::new()),
        })
    }

    /// Connections open now.
    #[cfg(test)]
    fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Admits a connection from `ip`, or says which cap it hit.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Permit, AtCap> {
        let mut per = self.per_client.lock().unwrap_or_else(|e| e.into_inner());
        if self.open.load(Ordering::Acquire) >= self.limits.max {
            return Err(AtCap::Total(self.limits.max));
        }
        let n = per.entry(ip).or_insert(0);
        if *n >= self.limits.per_client {
            if *n == 0 {
                per.remove(&ip);
            }
            return Err(AtCap::PerClient(self.limits.per_client));
        }
        *n += 1;
        self.open.fetch_add(1, Ordering::AcqRel);
        Ok(Permit {
            tracker: self.clone(),
            ip,
        })
    }
}

impl AtCap {
    fn field(self) -> (&'static str, usize) {
        match self {
            AtCap::Total(n) => ("limits.connections.max", n),
            AtCap::PerClient(n) => ("limits.connections.per_client", n),
        }
    }

    /// The whole HTTP/1.1 answer to a connection refused at this cap: 503 with `Retry-After`
    /// and a JSON-RPC error naming the limit, then the connection closes.
    pub fn response(self) -> Vec<u8> {
        let (field, max) = self.field();
        let body = crate::protocol::Message::error_response(
            None,
            crate::protocol::ErrorCode::LIMIT_EXCEEDED,
            &format!(
                "Service Unavailable: too many connections (limit {field}, {max}); retry later"
            ),
            Some(serde_json::json!({ "limit": field, "max": max })),
        )
        .to_bytes();
        let mut out = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(&body);
        out
    }
}

/// What one listener serves and how.
pub struct Listener {
    /// For logs: `mcp` or `ops`.
    pub name: &'static str,
    /// The bound socket.
    pub tcp: TcpListener,
    /// The application.
    pub app: Router,
    /// Caps and timers.
    pub tracker: Arc<Tracker>,
    /// TLS, when configured: the handshake runs inside the connection's task, under its
    /// connection permit and the block's `handshake_timeout`.
    pub tls: Option<Arc<super::tls::TlsSource>>,
    /// The gateway whose `log.access` settings apply, when this listener writes access lines.
    pub access_log: Option<Arc<crate::gateway::Gateway>>,
}

/// Serves `listener` until `stop` turns true, then closes it and asks every open connection
/// to finish (HTTP/1.1: after its current response; HTTP/2: GOAWAY). Returns once every
/// connection has closed; callers bound that wait.
pub async fn serve(listener: Listener, mut stop: watch::Receiver<bool>) {
    let Listener {
        name,
        tcp,
        app,
        tracker,
        tls,
        access_log,
    } = listener;
    let in_flight = crate::telemetry::metrics::METRICS.ops.in_flight(name);
    let limits = tracker.limits.clone();
    let builder = Arc::new(builder(&limits));
    let refusals = Arc::new(Semaphore::new(REFUSALS_IN_FLIGHT));
    let live = Arc::new(AtomicUsize::new(0));
    let all_closed = Arc::new(tokio::sync::Notify::new());
    loop {
        let accepted = tokio::select! {
            a = tcp.accept() => a,
            _ = stop.wait_for(|s| *s) => break,
        };
        let (socket, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors (or a transient error): back off instead of spinning.
                tracing::warn!(listener = name, error = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let permit = match tracker.admit(peer.ip()) {
            Ok(p) => p,
            Err(cap) => {
                tracing::debug!(listener = name, %peer, ?cap, "connection refused at its cap");
                if let Ok(slot) = refusals.clone().try_acquire_owned() {
                    tokio::spawn(async move {
                        let _slot = slot;
                        let mut socket = socket;
                        let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, async {
                            socket.write_all(&cap.response()).await?;
                            socket.shutdown().await
                        })
                        .await;
                    });
                }
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        live.fetch_add(1, Ordering::AcqRel);
        let guard = LiveGuard {
            live: live.clone(),
            all_closed: all_closed.clone(),
        };
        let conn = Conn {
            peer,
            app: app.clone(),
            builder: builder.clone(),
            idle_timeout: limits.idle_timeout.0,
            stop: stop.clone(),
            in_flight: in_flight.clone(),
            access_log: access_log.clone(),
            _held: (permit, guard),
        };
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => conn.serve(socket, None).await,
                Some(tls) => {
                    if let Some((stream, cert)) = tls.accept(socket, peer).await {
                        conn.serve(stream, cert).await;
                    }
                }
            }
        });
    }
    drop(tcp);
    tracing::debug!(
        listener = name,
        "listener closed; waiting for open connections"
    );
    loop {
        let notified = all_closed.notified();
        if live.load(Ordering::Acquire) == 0 {
            return;
        }
        notified.await;
    }
}

struct LiveGuard {
    live: Arc<AtomicUsize>,
    all_closed: Arc<tokio::sync::Notify>,
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        if self.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.all_closed.notify_waiters();
        }
    }
}

fn builder(limits: &Connections) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout.0)
        .max_buf_size(limits.max_header_bytes)
        .max_headers(limits.max_headers)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.http2_max_streams)
        .max_pending_accept_reset_streams(limits.http2_max_pending_resets)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        // Detects peers that vanished without closing (their streams would otherwise stay).
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    b
}

/// One admitted connection and what serving it needs.
struct Conn {
    peer: SocketAddr,
    app: Router,
    builder: Arc<auto::Builder<TokioExecutor>>,
    idle_timeout: Duration,
    stop: watch::Receiver<bool>,
    in_flight: prometheus_client::metrics::gauge::Gauge,
    access_log: Option<Arc<crate::gateway::Gateway>>,
    _held: (Permit, LiveGuard),
}

impl Conn {
    /// Serves the connection until it ends, the listener stops or it stays idle too long.
    async fn serve<S>(self, socket: S, cert: Option<super::tls::ClientCertificate>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Conn {
            peer,
            app,
            builder,
            idle_timeout,
            mut stop,
            in_flight: gauge,
            access_log,
            _held,
        } = self;
        let activity = Activity::new();
        let io = TokioIo::new(Tracked {
            inner: socket,
            activity: activity.clone(),
        });
        let requests = activity.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            if let Some(cert) = &cert {
                req.extensions_mut().insert(cert.clone());
            }
            let in_flight = InFlight::start(requests.clone(), gauge.clone());
            let line = access_log
                .as_ref()
                .and_then(|gw| super::access::start(gw, peer, &mut req));
            // Every log line of the request names its trace id.
            let span = match &line {
                Some(l) => tracing::info_span!("http", trace_id = %l.trace_id),
                None => tracing::Span::none(),
            };
            if let Some(l) = &line {
                let id: Arc<str> = l.trace_id.as_str().into();
                req.extensions_mut().insert(super::access::TraceId(id));
            }
            let call =
                tower_service::Service::call(&mut app.clone(), req.map(axum::body::Body::new));
            async move {
                let call = tracing::Instrument::instrument(call, span);
                let resp = call.await?;
                if let Some(line) = line {
                    line.finish(resp.status());
                }
                Ok::<_, std::convert::Infallible>(
                    resp.map(|body| crate::web::body::holding(body, in_flight)),
                )
            }
        });
        let conn = builder.serve_connection(io, service);
        tokio::pin!(conn);
        let check = (idle_timeout / 4).max(Duration::from_millis(100));
        let mut closing = false;
        loop {
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = stop.wait_for(|s| *s), if !closing => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                _ = tokio::time::sleep(check), if !closing => {
                    if activity.idle_for() >= idle_timeout {
                        tracing::debug!(%peer, "closing an idle connection");
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                    }
                }
            }
        }
    }
}

/// When a connection last moved a byte, and how many of its requests are in progress.
struct Activity {
    since: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn new() -> Arc<Activity> {
        Arc::new(Activity {
            since: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        })
    }

    fn touch(&self) {
        self.last_ms
            .store(self.since.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// How long the connection has been idle: zero while a request is in progress.
    fn idle_for(&self) -> Duration {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Duration::ZERO;
        }
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.since.elapsed().saturating_sub(last)
    }
}

/// A request in progress, until its response body has been sent or dropped; also counted in
/// `gatehouse_http_requests_in_flight`.
struct InFlight(Arc<Activity>, prometheus_client::metrics::gauge::Gauge);

impl InFlight {
    fn start(activity: Arc<Activity>, gauge: prometheus_client::metrics::gauge::Gauge) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        gauge.inc();
        InFlight(activity, gauge)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.1.dec();
    }
}

/// A socket (plain or TLS) that records when it last moved bytes.
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tracker_caps_in_all_and_per_address_and_releases_on_drop() {
        let t = Tracker::new(Connections {
            max: 3,
            per_client: 2,
            ..Connections::default()
        });
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let a1 = t.admit(a).unwrap();
        let _a2 = t.admit(a).unwrap();
        assert_eq!(t.admit(a).err(), Some(AtCap::PerClient(2)));
        let _b1 = t.admit(b).unwrap();
        assert_eq!(t.admit(b).err(), Some(AtCap::Total(3)));
        drop(a1);
        assert_eq!(t.open(), 2);
        assert!(t.admit(a).is_ok());
        assert!(t.per_client.lock().unwrap().len() <= 2);
    }

    #[test]
    fn a_refusal_is_a_complete_http_answer_naming_the_limit() {
        let text = String::from_utf8(AtCap::PerClient(7).response()).unwrap();
        assert!(text.starts_with("HTTP/1.1 503 "), "{text}");
        assert!(text.contains("retry-after: 1\r\n"));
        let body = text.split("\r\n\r\n").nth(1).unwrap();
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["data"]["limit"], "limits.connections.per_client");
        assert_eq!(v["error"]["code"], -32008);
        let len: usize = text
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(len, body.len());
    }
}
