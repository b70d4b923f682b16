//! Streamable HTTP upstreams: a pooled client, per-downstream sessions, SSE relayed as it arrives.
//! Which wire each client gets is decided in [`wire`]; session clients on a stateless-only
//! upstream are bridged in [`bridge`].

pub(super) mod bridge;
mod direct;
mod wire;

use super::reader::BodyReader;
use super::{
    AnswerId, CallStream, ClientIdentity, Delivery, Frame, InitInfo, ReplyRoute, UpstreamClient,
    UpstreamError, UpstreamSession,
};
use crate::config::{self, UpstreamProtocol};
use crate::context::CallContext;
use crate::credentials::CredentialError;
use crate::protocol::jsonrpc::to_raw;
use crate::protocol::param_headers;
use crate::protocol::sse::{EventBuffer, SseParser};
use crate::protocol::{Message, MessageKind, Method, ProtocolVersion, RequestId};
use futures_util::StreamExt;
use http::header::{ACCEPT, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

use crate::protocol::headers::{
    MCP_METHOD, MCP_NAME, PROTOCOL_VERSION as VERSION_HEADER, SESSION_ID as SESSION_HEADER,
};

/// Most sessions kept for stateless clients of one upstream (one per user with per-user
/// credentials).
const MAX_SHARED_SESSIONS: usize = 10_000;

/// How often a shared GET stream checks whether it still has listeners.
const SHARED_STREAM_CHECK: Duration = Duration::from_secs(1);

/// A Streamable HTTP upstream.
pub struct HttpUpstream {
    name: String,
    url: reqwest::Url,
    headers: HeaderMap,
    protocol: UpstreamProtocol,
    client: reqwest::Client,
    /// The call path's own client, for plain-`http` upstreams without a proxy.
    direct: Option<direct::Direct>,
    max_message: usize,
    connect_timeout: Duration,
    request_timeout: Duration,
    next_id: AtomicI64,
    /// Sessions shared by stateless clients: one for everybody, or one per user when the
    /// credential is per user (an upstream may bind a session to the user who opened it).
    shared: tokio::sync::Mutex<HashMap<String, (UpstreamSession, Arc<InitInfo>)>>,
    shared_dropped: Mutex<Vec<UpstreamSession>>,
    shared_hub: tokio::sync::Mutex<HashMap<String, broadcast::Sender<Message>>>,
    /// What the gateway presents to this upstream (never the client's token).
    credentials: Option<Arc<crate::credentials::UpstreamCredentials>>,
    /// Which generations the upstream was seen to offer (`protocol: auto`).
    offers: wire::Offers,
    /// Questions of bridged calls waiting for the client's answer.
    waiting: bridge::Waiting,
    /// Most URIs a bridged session may subscribe to (`limits.subscriptions_per_listen`).
    max_subscriptions: usize,
    /// What its tools mirror into `Mcp-Param-*` headers.
    pub(super) mirrored: super::MirroredParams,
}

enum Body {
    Json(Message),
    /// A JSON body too large (or of unknown length) to wait for when it can be streamed.
    LargeJson(reqwest::Response),
    Stream(reqwest::Response),
    Accepted,
}

/// JSON bodies up to this size are read whole even when they could be streamed: waiting for
/// them costs less than a relay task, and the client would not notice the difference.
const STREAM_JSON_ABOVE: u64 = 64 * 1024;

impl HttpUpstream {
    /// Builds the client; header secrets are resolved now.
    pub fn new(
        name: &str,
        cfg: &config::Upstream,
        limits: &config::Limits,
        consent: Option<&Arc<crate::credentials::consent::ConsentService>>,
    ) -> Result<Self, String> {
        let url = cfg.url.as_deref().ok_or("url missing")?;
        let url = reqwest::Url::parse(url).map_err(|e| e.to_string())?;
        let mut headers = HeaderMap::new();
        for (k, v) in &cfg.headers {
            let value = v.resolve()?;
            let mut hv = HeaderValue::from_str(value.expose())
                .map_err(|_| format!("header {k}: invalid value"))?;
            hv.set_sensitive(true);
            headers.insert(
                HeaderName::from_bytes(k.as_bytes()).map_err(|e| e.to_string())?,
                hv,
            );
        }
        let client = reqwest::Client::builder()
            .connect_timeout(cfg.timeouts.connect.0)
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())?;
        Ok(HttpUpstream {
            name: name.to_owned(),
            url: url.clone(),
            headers,
            protocol: cfg.protocol,
            client,
            direct: direct::Direct::for_url(&url, cfg.timeouts.connect.0),
            max_message: limits.max_upstream_message_bytes,
            connect_timeout: cfg.timeouts.connect.0,
            request_timeout: cfg.timeouts.request.0,
            next_id: AtomicI64::new(1),
            shared: Default::default(),
            shared_dropped: Default::default(),
            shared_hub: Default::default(),
            credentials: crate::credentials::UpstreamCredentials::for_http(name, cfg, consent)?
                .map(Arc::new),
            offers: Default::default(),
            waiting: Default::default(),
            max_subscriptions: limits.subscriptions_per_listen,
            mirrored: Default::default(),
        })
    }

    /// The upstream's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn unavailable(&self, e: impl std::fmt::Display) -> UpstreamError {
        UpstreamError::Unavailable {
            upstream: self.name.clone(),
            reason: e.to_string(),
        }
    }

    fn protocol_error(&self, reason: impl Into<String>) -> UpstreamError {
        UpstreamError::Protocol {
            upstream: self.name.clone(),
            reason: reason.into(),
        }
    }

    fn next_id(&self) -> RequestId {
        RequestId::Number(self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// Opens a session for one downstream client.
    pub async fn open(
        &self,
        ctx: &CallContext,
        who: &ClientIdentity,
    ) -> Result<(UpstreamSession, Arc<InitInfo>), UpstreamError> {
        tokio::time::timeout(self.connect_timeout, self.handshake(ctx, who))
            .await
            .map_err(|_| UpstreamError::Timeout {
                upstream: self.name.clone(),
                after: self.connect_timeout,
            })?
    }

    /// Whose shared session a request uses: everybody's (`""`), or, with a per-user
    /// credential, its user's.
    fn shared_key(&self, ctx: &CallContext) -> String {
        match &self.credentials {
            Some(c) if c.is_per_user() => ctx.user().map(|o| o.binding.clone()).unwrap_or_default(),
            _ => String::new(),
        }
    }

    /// The session used for stateless downstream clients (see [`shared_key`]), opened once and
    /// re-opened if it expires. On a session-only upstream the session declares what the
    /// clients using it declared (`declared`, so that the upstream never asks for what they
    /// cannot answer): one session per set of askable capabilities. `None` is the gateway's
    /// own (sampling and elicitation; what the listen streams and discovery use).
    pub async fn shared_session(
        &self,
        ctx: &CallContext,
        declared: Option<&serde_json::Value>,
    ) -> Result<(UpstreamSession, Arc<InitInfo>), UpstreamError> {
        let mut identity = ClientIdentity::gateway_stateless();
        let mut key = self.shared_key(ctx);
        if let Some(d) = declared {
            identity.capabilities = super::askable_capabilities(d);
            key.push('\0');
            key.push_str(&identity.capabilities.to_string());
        }
        let mut shared = self.shared.lock().await;
        let dropped = std::mem::take(&mut *self.shared_dropped.lock().expect("lock"));
        if !dropped.is_empty() {
            shared.retain(|_, (s, _)| !dropped.contains(s));
        }
        if let Some(found) = shared.get(&key) {
            return Ok(found.clone());
        }
        // Bounded: the least useful session to keep is any one; it is opened again if needed.
        if shared.len() >= MAX_SHARED_SESSIONS
            && let Some(evicted) = shared.keys().next().cloned()
        {
            shared.remove(&evicted);
        }
        let opened = self.open(ctx, &identity).await?;
        shared.insert(key, opened.clone());
        Ok(opened)
    }

    /// Marks a shared session as expired.
    pub fn drop_shared_session(&self, session: &UpstreamSession) {
        self.shared_dropped
            .lock()
            .expect("lock")
            .push(session.clone());
    }

    /// `ConsentRequired` when the request's user must connect this upstream first; nothing is
    /// sent to it.
    pub async fn check_consent(&self, ctx: &CallContext) -> Result<(), UpstreamError> {
        if !self.credentials.as_ref().is_some_and(|c| c.asks_consent()) {
            return Ok(());
        }
        match self.authorize(ctx, &mut HeaderMap::new()).await {
            Err(e @ UpstreamError::ConsentRequired { .. }) => Err(e),
            _ => Ok(()),
        }
    }

    /// Adds this upstream's credential for the request made in `ctx`.
    async fn authorize(&self, ctx: &CallContext, h: &mut HeaderMap) -> Result<(), UpstreamError> {
        if let Some(c) = &self.credentials {
            let (name, value) = c.header(ctx).await.map_err(|e| match e {
                CredentialError::ConsentRequired {
                    url,
                    elicitation_id,
                } => UpstreamError::ConsentRequired {
                    upstream: self.name.clone(),
                    url,
                    elicitation_id,
                },
                e => {
                    tracing::warn!(upstream = %self.name, error = %e, "no credential for the upstream");
                    UpstreamError::Credentials {
                        upstream: self.name.clone(),
                        reason: e.to_string(),
                    }
                }
            })?;
            h.insert(name, value);
        }
        Ok(())
    }

    fn request_headers(&self, session: &UpstreamSession, msg: &Message) -> HeaderMap {
        let mut h = self.headers.clone();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(
            ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream"),
        );
        if let Some(id) = session
            .id
            .as_deref()
            .and_then(|s| HeaderValue::from_str(s).ok())
        {
            h.insert(SESSION_HEADER, id);
        }
        if Method::of(msg) != Method::Initialize && session.version >= ProtocolVersion::V2025_06_18
        {
            h.insert(
                VERSION_HEADER,
                HeaderValue::from_static(session.version.as_str()),
            );
        }
        crate::telemetry::inject_trace_context(&mut h);
        if session.version.is_stateless() {
            if let Some(method) = msg
                .method
                .as_deref()
                .and_then(|m| HeaderValue::from_str(m).ok())
            {
                h.insert(MCP_METHOD, method);
            }
            let head = crate::protocol::CallHead::of(msg);
            if let Some(name) = &head.name_header {
                if let Ok(v) = HeaderValue::from_str(&param_headers::encode(name)) {
                    h.insert(MCP_NAME, v);
                }
                if head.method == Method::ToolsCall
                    && let Some(tool) = self.mirrored.mirrors(name)
                {
                    for (k, v) in tool.headers_for(head.arguments()) {
                        h.insert(k, v);
                    }
                }
            }
        }
        h
    }

    async fn post(
        &self,
        ctx: &CallContext,
        session: &UpstreamSession,
        msg: &Message,
        streaming: bool,
    ) -> Result<reqwest::Response, UpstreamError> {
        let body = if session.version.is_stateless() {
            let declared = session.bridge.as_deref().map(bridge::Bridge::declared);
            crate::protocol::stateless::with_stateless_meta(msg, declared.as_ref()).to_bytes()
        } else {
            msg.to_bytes()
        };
        let mut headers = self.request_headers(session, msg);
        self.authorize(ctx, &mut headers).await?;
        let resp = match &self.direct {
            // The caller's deadline and the call's reader bound a streamed answer.
            Some(direct) if streaming => direct
                .post(headers, body)
                .await
                .map_err(|e| self.unavailable(e))?,
            _ => {
                let mut req = self
                    .client
                    .post(self.url.clone())
                    .headers(headers)
                    .body(body);
                if !streaming {
                    req = req.timeout(self.request_timeout);
                }
                req.send()
                    .await
                    .map_err(|e| self.unavailable(describe(&e)))?
            }
        };
        match resp.status() {
            s if s.is_success() => Ok(resp),
            StatusCode::NOT_FOUND if session.id.is_some() => Err(UpstreamError::SessionExpired {
                upstream: self.name.clone(),
            }),
            _ => Err(self.rejection(resp, msg).await),
        }
    }

    /// What an HTTP error status means: the upstream's own JSON-RPC error for `msg` when the
    /// body is one (2026-07-28 sends protocol errors this way), relayed as it is; otherwise a
    /// gateway error naming the status.
    async fn rejection(&self, resp: reqwest::Response, msg: &Message) -> UpstreamError {
        let status = resp.status().as_u16();
        let plain = UpstreamError::Status {
            upstream: self.name.clone(),
            status,
        };
        // Refusals of the gateway's own credential are the gateway's problem: passed on, they
        // would read as the client's (a 401 the client cannot answer).
        if matches!(status, 401 | 403 | 407) {
            return plain;
        }
        let json = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_none_or(|c| c.to_ascii_lowercase().starts_with("application/json"));
        if !json {
            return plain;
        }
        let cap = self.max_message.min(MAX_ERROR_BODY);
        let Ok(bytes) = read_capped(resp, cap).await else {
            return plain;
        };
        match rejected_error(&bytes, msg) {
            Some((code, message, data)) => UpstreamError::Rejected {
                upstream: self.name.clone(),
                status,
                code,
                message,
                data,
            },
            None => plain,
        }
    }

    /// Posts a request whose answer may stream for ever: only its headers must come within
    /// `timeouts.request` (the stream's own deadline is the reader's).
    async fn post_streamed(
        &self,
        ctx: &CallContext,
        session: &UpstreamSession,
        msg: &Message,
    ) -> Result<reqwest::Response, UpstreamError> {
        tokio::time::timeout(self.request_timeout, self.post(ctx, session, msg, true))
            .await
            .map_err(|_| UpstreamError::Timeout {
                upstream: self.name.clone(),
                after: self.request_timeout,
            })?
    }

    async fn classify(
        &self,
        resp: reqwest::Response,
        delivery: Delivery,
    ) -> Result<Body, UpstreamError> {
        if resp.status() == StatusCode::ACCEPTED {
            return Ok(Body::Accepted);
        }
        let ctype = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        if ctype.starts_with("text/event-stream") {
            return Ok(Body::Stream(resp));
        }
        if ctype.starts_with("application/json") || ctype.is_empty() {
            if delivery != Delivery::Whole
                && resp.content_length().is_none_or(|n| n > STREAM_JSON_ABOVE)
            {
                return Ok(Body::LargeJson(resp));
            }
            let bytes = self.read_limited(resp).await?;
            let msg = Message::parse(&bytes).map_err(|e| self.protocol_error(e.to_string()))?;
            return Ok(Body::Json(msg));
        }
        Err(self.protocol_error(format!("unexpected content type {ctype:?}")))
    }

    async fn read_limited(&self, mut resp: reqwest::Response) -> Result<Vec<u8>, UpstreamError> {
        let mut out = Vec::with_capacity(
            resp.content_length()
                .unwrap_or(0)
                .min(self.max_message as u64) as usize,
        );
        while let Some(chunk) = resp.chunk().await.map_err(|e| UpstreamError::Crashed {
            upstream: self.name.clone(),
            reason: describe(&e),
        })? {
            if out.len() + chunk.len() > self.max_message {
                return Err(
                    self.protocol_error(format!("a response exceeded {} bytes", self.max_message))
                );
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// Reads a response to `msg` whichever way it comes, ignoring anything else on the stream.
    async fn final_message(
        &self,
        resp: reqwest::Response,
        msg: &Message,
    ) -> Result<Message, UpstreamError> {
        match self.classify(resp, Delivery::Whole).await? {
            Body::Json(m) => Ok(m),
            Body::Accepted => Err(self.protocol_error("a request was answered with 202")),
            Body::LargeJson(_) => unreachable!("only streamed deliveries leave JSON unread"),
            Body::Stream(resp) => {
                let mut stream = resp.bytes_stream();
                let mut parser = SseParser::new(self.max_message);
                let mut events = EventBuffer::default();
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk.map_err(|e| UpstreamError::Crashed {
                        upstream: self.name.clone(),
                        reason: describe(&e),
                    })?;
                    let complete = parser
                        .feed_whole(&chunk, &mut events)
                        .map_err(|e| self.protocol_error(e.to_string()))?;
                    for data in complete {
                        if let Ok(m) = Message::parse(&data)
                            && matches!(m.kind, MessageKind::Response | MessageKind::Error)
                            && m.id == msg.id
                        {
                            return Ok(m);
                        }
                    }
                }
                Err(UpstreamError::Crashed {
                    upstream: self.name.clone(),
                    reason: "the stream ended before the response".into(),
                })
            }
        }
    }

    async fn roundtrip(
        &self,
        ctx: &CallContext,
        session: &UpstreamSession,
        msg: &Message,
    ) -> Result<Message, UpstreamError> {
        let resp = self.post(ctx, session, msg, false).await?;
        self.final_message(resp, msg).await
    }

    /// Sends a request and relays what comes back (through the bridge for a session client
    /// on the stateless wire).
    pub async fn call(
        &self,
        me: &Arc<UpstreamClient>,
        ctx: &CallContext,
        session: &UpstreamSession,
        request: Message,
        delivery: Delivery,
    ) -> Result<CallStream, UpstreamError> {
        match &session.bridge {
            Some(b) => self.call_bridged(me, ctx, session, b, request).await,
            None => self.call_once(me, ctx, session, request, delivery).await,
        }
    }

    /// One request, one answer.
    async fn call_once(
        &self,
        me: &Arc<UpstreamClient>,
        ctx: &CallContext,
        session: &UpstreamSession,
        request: Message,
        delivery: Delivery,
    ) -> Result<CallStream, UpstreamError> {
        let downstream_id = request.id.clone();
        let upstream_id = self.next_id();
        let mut outgoing = request;
        outgoing.id = Some(upstream_id.clone());
        let resp = self.post_streamed(ctx, session, &outgoing).await?;
        let (tx, rx) = mpsc::channel(16);
        let answer_id = AnswerId::new(downstream_id);
        let stream = CallStream::new(
            rx,
            self.request_timeout,
            me.clone(),
            ctx.clone(),
            session.clone(),
            upstream_id.clone(),
        )
        .with_answer_id(answer_id.clone());
        let reader = |expect| BodyReader {
            upstream: self.name.clone(),
            session: session.clone(),
            max_message: self.max_message,
            expect,
            delivery,
        };
        match self.classify(resp, delivery).await? {
            Body::Json(mut m) => {
                if m.id != Some(upstream_id) {
                    return Err(self.protocol_error("the response id does not match the request"));
                }
                m.id = answer_id.get();
                let _ = tx.try_send(Frame::Response(m));
            }
            Body::Accepted => return Err(self.protocol_error("a request was answered with 202")),
            Body::LargeJson(resp) => {
                tokio::spawn(reader(Some((upstream_id, answer_id))).run_json(resp, tx));
            }
            Body::Stream(resp) => {
                tokio::spawn(reader(Some((upstream_id, answer_id))).run_sse(resp, tx));
            }
        }
        Ok(stream)
    }

    /// Sends a notification or a response (answered with 202).
    pub async fn notify(
        &self,
        ctx: &CallContext,
        session: &UpstreamSession,
        message: Message,
    ) -> Result<(), UpstreamError> {
        let resp = self.post(ctx, session, &message, false).await?;
        drop(resp);
        Ok(())
    }

    /// Delivers a client's answer to a server→client request: a POST in an upstream session; to
    /// the bridged call that asked on the stateless wire (which has no such requests).
    pub async fn respond(
        &self,
        ctx: &CallContext,
        route: &ReplyRoute,
        answer: Message,
    ) -> Result<(), UpstreamError> {
        if !route.session.version.is_stateless() {
            return self.notify(ctx, &route.session, answer).await;
        }
        self.waiting.deliver(answer).map_err(|_| {
            self.protocol_error(
                "no call waits for this answer here (it ended, or was relayed by another replica)",
            )
        })
    }

    /// Opens `subscriptions/listen` for a bridged session: the list changes and `uris`.
    async fn open_listen(
        &self,
        ctx: &CallContext,
        session: &UpstreamSession,
        uris: Vec<String>,
    ) -> Result<mpsc::Receiver<Frame>, UpstreamError> {
        let mut notifications = serde_json::json!({
            "toolsListChanged": true,
            "promptsListChanged": true,
            "resourcesListChanged": true,
        });
        if !uris.is_empty() {
            notifications["resourceSubscriptions"] = serde_json::json!(uris);
        }
        let params = serde_json::json!({ "notifications": notifications });
        let msg = Message::request(
            self.next_id(),
            Method::SubscriptionsListen.as_str(),
            Some(to_raw(&params)),
        );
        let resp = self.post_streamed(ctx, session, &msg).await?;
        let (tx, rx) = mpsc::channel(64);
        let reader = BodyReader {
            upstream: self.name.clone(),
            session: session.clone(),
            max_message: self.max_message,
            expect: None,
            delivery: Delivery::Whole,
        };
        match self.classify(resp, Delivery::Whole).await? {
            Body::Stream(resp) => {
                tokio::spawn(reader.run_sse(resp, tx));
            }
            // Answered at once: the upstream ended the subscription (or refused it).
            Body::Json(_) | Body::Accepted | Body::LargeJson(_) => {}
        }
        Ok(rx)
    }

    /// Opens the GET stream for messages outside any request; `None` if the upstream has none.
    pub async fn listen(
        &self,
        ctx: &CallContext,
        session: &UpstreamSession,
    ) -> Result<Option<mpsc::Receiver<Frame>>, UpstreamError> {
        if session.version.is_stateless() {
            return Ok(None);
        }
        let mut h = self.headers.clone();
        h.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
        if let Some(id) = session
            .id
            .as_deref()
            .and_then(|s| HeaderValue::from_str(s).ok())
        {
            h.insert(SESSION_HEADER, id);
        }
        if session.version >= ProtocolVersion::V2025_06_18 {
            h.insert(
                VERSION_HEADER,
                HeaderValue::from_static(session.version.as_str()),
            );
        }
        self.authorize(ctx, &mut h).await?;
        // The stream itself may stay open for ever, but its headers must come in time: an
        // upstream that accepts and stays silent would hold the client's GET unanswered.
        let send = self.client.get(self.url.clone()).headers(h).send();
        let resp = tokio::time::timeout(self.request_timeout, send)
            .await
            .map_err(|_| UpstreamError::Timeout {
                upstream: self.name.clone(),
                after: self.request_timeout,
            })?
            .map_err(|e| self.unavailable(describe(&e)))?;
        if resp.status() == StatusCode::NOT_FOUND && session.id.is_some() {
            return Err(UpstreamError::SessionExpired {
                upstream: self.name.clone(),
            });
        }
        if resp.status() != StatusCode::OK {
            return Ok(None);
        }
        let (tx, rx) = mpsc::channel(64);
        let reader = BodyReader {
            upstream: self.name.clone(),
            session: session.clone(),
            max_message: self.max_message,
            expect: None,
            delivery: Delivery::Whole,
        };
        tokio::spawn(reader.run_sse(resp, tx));
        Ok(Some(rx))
    }

    /// Unsolicited messages of the shared session, fanned out to every stateless listener
    /// over a single upstream stream (upstreams allow one GET stream per session).
    pub async fn listen_shared(
        &self,
        ctx: &CallContext,
    ) -> Result<Option<mpsc::Receiver<Frame>>, UpstreamError> {
        let key = self.shared_key(ctx);
        let mut hubs = self.shared_hub.lock().await;
        hubs.retain(|_, tx| tx.receiver_count() > 0 || !tx.is_empty());
        let live = hubs.get(&key).cloned();
        let sender = match live {
            Some(tx) => tx,
            None => {
                let (session, _) = self.shared_session(ctx, None).await?;
                let Some(mut frames) = self.listen(ctx, &session).await? else {
                    return Ok(None);
                };
                let (tx, _) = broadcast::channel(256);
                let pump = tx.clone();
                let name = self.name.clone();
                // The upstream stream is closed (by dropping `frames`) once the last listener
                // has gone, not only when a message finds nobody: a silent upstream would
                // otherwise keep one stream per listen cycle open. A hub without receivers is
                // never handed out again (see the `retain` above), so none can join late.
                let mut idle = tokio::time::interval_at(
                    tokio::time::Instant::now() + SHARED_STREAM_CHECK,
                    SHARED_STREAM_CHECK,
                );
                tokio::spawn(async move {
                    loop {
                        let frame = tokio::select! {
                            f = frames.recv() => f,
                            _ = idle.tick() => {
                                if pump.receiver_count() == 0 { break }
                                continue;
                            }
                        };
                        let Some(frame) = frame else { break };
                        match frame {
                            Frame::Notification(m) => {
                                let delivered = pump.send(m).is_ok();
                                if !delivered {
                                    break;
                                }
                            }
                            Frame::Request { message, .. } => {
                                tracing::debug!(upstream = %name, method = message.method(), "dropping a server request on a shared stream");
                            }
                            _ => {}
                        }
                    }
                });
                hubs.insert(key, tx.clone());
                tx
            }
        };
        let sub = sender.subscribe();
        drop(hubs);
        let rx = super::frames_from(sub, self.name.clone());
        Ok(Some(rx))
    }

    /// Ends a session with DELETE; failures are only logged.
    pub async fn close(&self, ctx: &CallContext, session: &UpstreamSession) {
        let Some(id) = session.id.as_deref() else {
            return;
        };
        let mut headers = self.headers.clone();
        if let Err(e) = self.authorize(ctx, &mut headers).await {
            tracing::debug!(upstream = %self.name, error = %e, "closing the upstream session without a credential");
        }
        let mut req = self
            .client
            .delete(self.url.clone())
            .headers(headers)
            .header(SESSION_HEADER, id);
        if session.version >= ProtocolVersion::V2025_06_18 {
            req = req.header(VERSION_HEADER, session.version.as_str());
        }
        if let Err(e) = req.timeout(Duration::from_secs(5)).send().await {
            tracing::debug!(upstream = %self.name, error = %describe(&e), "closing the upstream session failed");
        }
    }
}

/// Error bodies longer than this are not JSON-RPC errors worth relaying (a JSON-RPC error is
/// a code, a sentence and a little data); reading stops there.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// The body of `resp`, or `Err` once it passes `cap` bytes or breaks off.
async fn read_capped(mut resp: reqwest::Response, cap: usize) -> Result<Vec<u8>, ()> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|_| ())? {
        if out.len() + chunk.len() > cap {
            return Err(());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// The code, message and data of `body` if it is a JSON-RPC error answering `request` (its
/// id, or none: a server may refuse before reading the id).
fn rejected_error(
    body: &[u8],
    request: &Message,
) -> Option<(i64, String, Option<serde_json::Value>)> {
    #[derive(serde::Deserialize)]
    struct RpcError {
        code: i64,
        message: String,
        data: Option<serde_json::Value>,
    }
    let m = Message::parse(body).ok()?;
    if m.kind != MessageKind::Error || (m.id.is_some() && m.id != request.id) {
        return None;
    }
    let e: RpcError = serde_json::from_str(m.error.as_deref()?.get()).ok()?;
    Some((e.code, e.message, e.data))
}

/// A reqwest error described without its URL (which could carry credentials in userinfo).
pub(super) fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_connect() {
        "connection failed"
    } else if e.is_timeout() {
        "timed out"
    } else if e.is_body() || e.is_decode() {
        "the connection broke while reading"
    } else if e.is_request() {
        "the request could not be sent"
    } else {
        "HTTP error"
    };
    with_root_cause(kind, e)
}

/// `kind`, followed by the innermost cause of `e` (the part that says what happened, e.g.
/// "Connection refused"; the outer layers would repeat the URL).
pub(super) fn with_root_cause(kind: &str, e: &dyn std::error::Error) -> String {
    let mut detail = String::new();
    let mut source = e.source();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind} ({detail})")
    }
}
