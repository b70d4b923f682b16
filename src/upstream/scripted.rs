//! An in-memory upstream for unit tests: no sockets, no processes. A test scripts what it
//! answers per method (or per tool), as a list of [`Step`]s: notifications, server→client
//! requests that wait for the client's answer, delays, a hang, then a result or a JSON-RPC
//! error. Everything the gateway sends it is recorded as [`Seen`] events for assertions.
//!
//! It speaks either generation as far as the gateway's pipeline sees it: a session upstream
//! opens with `initialize` (a session id per client), a 2026-07-28 one with `server/discover`
//! (no session; requests are recorded with the `_meta` the HTTP client would add on that
//! wire). What is specific to a transport stays with it and is not modelled: the bridge that
//! turns a stateless upstream's `InputRequiredResult` into questions (the HTTP client's), wire
//! headers, streamed result bytes. A call's frames come as the transports deliver them, so
//! the relay, the parking lot and cancellation see what they would see in production.
//!
//! `ScriptedUpstream` is a cheap handle: the test keeps one to script and inspect, and binds
//! [`client`](ScriptedUpstream::client) into a gateway.

use super::client::{Listened, Opened, Upstream};
use super::{
    AnswerId, CallStream, ClientIdentity, Delivery, Frame, InitInfo, MirroredParams, ReplyRoute,
    UpstreamClient, UpstreamError, UpstreamSession,
};
use crate::context::CallContext;
use crate::protocol::jsonrpc::to_raw;
use crate::protocol::{ErrorCode, Message, Method, ProtocolVersion, RequestId};
use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

mod script;
pub use script::{FromAnswers, Reply, Seen, Step};

/// Which protocol generation the upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generation {
    /// 2025-11-25: `initialize`, one session per client.
    Sessions,
    /// 2026-07-28: `server/discover`, no sessions.
    Stateless,
}

type Handler = Arc<dyn Fn(&Value) -> Reply + Send + Sync>;

struct Inner {
    name: String,
    generation: Generation,
    capabilities: Value,
    replies: Mutex<HashMap<String, Handler>>,
    tools: Mutex<HashMap<String, Reply>>,
    seen: Mutex<Vec<Seen>>,
    waiting: Mutex<HashMap<RequestId, oneshot::Sender<Message>>>,
    running: Mutex<HashMap<RequestId, CancellationToken>>,
    shared: Mutex<HashMap<String, (UpstreamSession, Arc<InitInfo>)>>,
    unsolicited: broadcast::Sender<Message>,
    mirrored: MirroredParams,
    next_id: AtomicI64,
    /// The gateway's deadline for each call (`timeouts.request` of a configured upstream).
    timeout: Mutex<Duration>,
}

/// The scripted upstream (a handle; clones share the script and the record).
#[derive(Clone)]
pub struct ScriptedUpstream(Arc<Inner>);

impl ScriptedUpstream {
    /// An upstream of `generation` named `name`, answering nothing yet (unscripted methods get
    /// -32601).
    pub fn new(name: &str, generation: Generation) -> Self {
        ScriptedUpstream(Arc::new(Inner {
            name: name.to_owned(),
            generation,
            capabilities: json!({ "tools": { "listChanged": true }, "prompts": {}, "resources": {} }),
            replies: Default::default(),
            tools: Default::default(),
            seen: Default::default(),
            waiting: Default::default(),
            running: Default::default(),
            shared: Default::default(),
            unsolicited: broadcast::channel(64).0,
            mirrored: Default::default(),
            next_id: AtomicI64::new(1),
            timeout: Mutex::new(Duration::from_secs(10)),
        }))
    }

    /// A 2025-11-25 upstream.
    pub fn sessions(name: &str) -> Self {
        Self::new(name, Generation::Sessions)
    }

    /// A 2026-07-28 upstream.
    pub fn stateless(name: &str) -> Self {
        Self::new(name, Generation::Stateless)
    }

    /// The client to bind into a gateway.
    pub fn client(&self) -> Arc<UpstreamClient> {
        Arc::new(UpstreamClient::Scripted(self.clone()))
    }

    /// Gives each call `timeout` to answer before the gateway gives up (10 s by default).
    pub fn set_timeout(&self, timeout: Duration) -> &Self {
        *self.0.timeout.lock().expect("lock") = timeout;
        self
    }

    /// Answers every `method` request with `reply`.
    pub fn on(&self, method: &str, reply: Reply) -> &Self {
        self.on_fn(method, move |_| reply.clone())
    }

    /// Answers `method` requests with what `f` makes of their params.
    pub fn on_fn(
        &self,
        method: &str,
        f: impl Fn(&Value) -> Reply + Send + Sync + 'static,
    ) -> &Self {
        self.0
            .replies
            .lock()
            .expect("lock")
            .insert(method.to_owned(), Arc::new(f));
        self
    }

    /// Answers `tools/call` of tool `name` with `reply` (before any `on("tools/call")`).
    pub fn on_tool(&self, name: &str, reply: Reply) -> &Self {
        self.0
            .tools
            .lock()
            .expect("lock")
            .insert(name.to_owned(), reply);
        self
    }

    /// Lists these tools (one page), each answering a call with the text `<upstream>:<tool>`.
    pub fn with_tools(&self, names: &[&str]) -> &Self {
        let tools: Vec<Value> = names
            .iter()
            .map(|n| json!({ "name": n, "inputSchema": { "type": "object" } }))
            .collect();
        self.on("tools/list", Reply::result(json!({ "tools": tools })));
        for n in names {
            self.on_tool(n, Reply::text(&format!("{}:{n}", self.0.name)));
        }
        self
    }

    /// Sends a notification outside any request to whoever listens.
    pub fn push(&self, method: &str, params: Value) {
        let _ = self
            .0
            .unsolicited
            .send(Message::notification(method, Some(to_raw(&params))));
    }

    /// Everything seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.0.seen.lock().expect("lock").clone()
    }

    /// The params of every `method` request received, in order.
    pub fn requests(&self, method: &str) -> Vec<Value> {
        self.seen()
            .into_iter()
            .filter_map(|s| match s {
                Seen::Request {
                    method: m, params, ..
                } if m == method => Some(params),
                _ => None,
            })
            .collect()
    }

    /// The upstream ids of the requests cancelled so far.
    pub fn cancelled(&self) -> Vec<RequestId> {
        self.seen()
            .into_iter()
            .filter_map(|s| match s {
                Seen::Cancelled { id, .. } => Some(id),
                _ => None,
            })
            .collect()
    }

    /// How many calls are still being played.
    pub fn in_flight(&self) -> usize {
        self.0.running.lock().expect("lock").len()
    }

    /// The answers received to the upstream's questions.
    pub fn answers(&self) -> Vec<Value> {
        self.seen()
            .into_iter()
            .filter_map(|s| match s {
                Seen::Answer { message, .. } => Some(message),
                _ => None,
            })
            .collect()
    }

    /// Waits (at most `within`) until `pred` holds of what was seen; panics otherwise.
    pub async fn wait_for(&self, within: Duration, what: &str, pred: impl Fn(&[Seen]) -> bool) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if pred(&self.0.seen.lock().expect("lock")) {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "{what}: not seen within {within:?}; seen: {:#?}",
                    self.seen()
                );
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    fn record(&self, seen: Seen) {
        self.0.seen.lock().expect("lock").push(seen);
    }

    fn fresh_id(&self) -> RequestId {
        RequestId::Number(self.0.next_id.fetch_add(1, Ordering::Relaxed))
    }

    fn reply_for(&self, method: &str, params: &Value) -> Reply {
        if method == Method::ToolsCall.as_str()
            && let Some(name) = params.get("name").and_then(Value::as_str)
            && let Some(r) = self.0.tools.lock().expect("lock").get(name)
        {
            return r.clone();
        }
        let handler = self.0.replies.lock().expect("lock").get(method).cloned();
        match handler {
            Some(h) => h(params),
            None => Reply::error(
                ErrorCode::METHOD_NOT_FOUND.0,
                &format!("Method not found: {method}"),
            ),
        }
    }

    fn opened(&self, who: &ClientIdentity) -> (UpstreamSession, Arc<InitInfo>) {
        let name = &self.0.name;
        let (method, params, session, result, fallback) = match self.0.generation {
            Generation::Sessions => {
                let version = if who.version.is_stateless() {
                    ProtocolVersion::LATEST_SESSION
                } else {
                    who.version
                };
                let n = self.fresh_id();
                let session = UpstreamSession::new(Some(format!("{name}-session-{n}")), version);
                let params = json!({
                    "protocolVersion": version.as_str(),
                    "capabilities": who.capabilities,
                    "clientInfo": who.client_info,
                });
                let result = json!({
                    "protocolVersion": version.as_str(),
                    "capabilities": self.0.capabilities,
                    "serverInfo": { "name": name, "version": "1" },
                });
                (Method::Initialize, params, session, result, version)
            }
            Generation::Stateless => {
                let session = UpstreamSession::new(None, ProtocolVersion::V2026_07_28);
                let params = self.on_wire(
                    &session,
                    &Message::request(
                        RequestId::Number(0),
                        Method::ServerDiscover.as_str(),
                        Some(to_raw(&json!({}))),
                    ),
                );
                let result = json!({
                    "resultType": "complete",
                    "supportedVersions": ["2026-07-28"],
                    "capabilities": self.0.capabilities,
                    "_meta": { "io.modelcontextprotocol/serverInfo": { "name": name, "version": "1" } },
                    "ttlMs": 60000,
                    "cacheScope": "public",
                });
                let fallback = ProtocolVersion::V2026_07_28;
                (Method::ServerDiscover, params, session, result, fallback)
            }
        };
        self.record(Seen::Opened {
            method: method.as_str().to_owned(),
            params,
            session: session.id.clone(),
        });
        let info = InitInfo::from_result(to_raw(&result), fallback).expect("a scripted result");
        (session, Arc::new(info))
    }

    /// The params of `msg` as the wire of `session` carries them.
    fn on_wire(&self, session: &UpstreamSession, msg: &Message) -> Value {
        let msg = if session.version.is_stateless() {
            crate::protocol::stateless::with_stateless_meta(msg, None)
        } else {
            msg.clone()
        };
        msg.params
            .as_ref()
            .and_then(|p| serde_json::from_str(p.get()).ok())
            .unwrap_or(Value::Null)
    }

    /// Plays `reply` for the call `upstream_id`, sending its frames on `tx`.
    async fn play(
        self,
        reply: Reply,
        upstream_id: RequestId,
        answer_id: AnswerId,
        session: UpstreamSession,
        tx: mpsc::Sender<Frame>,
        stop: CancellationToken,
    ) {
        let mut answers = Vec::new();
        let final_message = |result: Result<Value, (i64, String)>| {
            let mut m = match result {
                Ok(v) => Message::response(upstream_id.clone(), to_raw(&v)),
                Err((code, message)) => {
                    Message::error_response(None, ErrorCode(code), &message, None)
                }
            };
            // As the transports do: the final response carries the downstream id, read when
            // it is sent (a resumed call answers its retry).
            m.id = answer_id.get();
            m
        };
        let mut ended = false;
        for step in reply.0 {
            let frame = match step {
                Step::Notify(method, params) => {
                    Frame::Notification(Message::notification(&method, Some(to_raw(&params))))
                }
                Step::Ask(method, params) => {
                    let qid = RequestId::String(format!("{}-q{}", self.0.name, self.fresh_id()));
                    let (answer_tx, answer_rx) = oneshot::channel();
                    self.0
                        .waiting
                        .lock()
                        .expect("lock")
                        .insert(qid.clone(), answer_tx);
                    let question = Frame::Request {
                        message: Message::request(qid.clone(), &method, Some(to_raw(&params))),
                        route: ReplyRoute {
                            upstream: self.0.name.clone(),
                            session: session.clone(),
                            id: qid.clone(),
                        },
                    };
                    if tx.send(question).await.is_err() {
                        break;
                    }
                    let answer = tokio::select! {
                        a = answer_rx => a.ok(),
                        _ = tx.closed() => None,
                        _ = stop.cancelled() => None,
                    };
                    self.0.waiting.lock().expect("lock").remove(&qid);
                    match answer {
                        Some(m) => answers.push(message_json(&m)),
                        None => break,
                    }
                    continue;
                }
                Step::Sleep(d) => {
                    tokio::select! {
                        _ = tokio::time::sleep(d) => continue,
                        _ = tx.closed() => break,
                        _ = stop.cancelled() => break,
                    }
                }
                Step::Hang => {
                    tokio::select! {
                        _ = tx.closed() => {}
                        _ = stop.cancelled() => {}
                    }
                    break;
                }
                Step::Result(v) => {
                    ended = true;
                    Frame::Response(final_message(Ok(v)))
                }
                Step::Error(code, message) => {
                    ended = true;
                    Frame::Response(final_message(Err((code, message))))
                }
                Step::ResultFrom(f) => {
                    ended = true;
                    Frame::Response(final_message(Ok(f(&answers))))
                }
            };
            if tx.send(frame).await.is_err() {
                ended = false;
                break;
            }
            if ended {
                break;
            }
        }
        self.0.running.lock().expect("lock").remove(&upstream_id);
        if !ended {
            self.record(Seen::Stopped { id: upstream_id });
        }
    }
}

fn message_json(m: &Message) -> Value {
    serde_json::from_slice(&m.to_bytes()).unwrap_or(Value::Null)
}

impl Upstream for ScriptedUpstream {
    fn name(&self) -> &str {
        &self.0.name
    }

    fn mirrored(&self) -> &MirroredParams {
        &self.0.mirrored
    }

    fn check_consent<'a>(
        &'a self,
        _ctx: &'a CallContext,
    ) -> BoxFuture<'a, Result<(), UpstreamError>> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn open<'a>(&'a self, _ctx: &'a CallContext, who: &'a ClientIdentity) -> BoxFuture<'a, Opened> {
        Box::pin(std::future::ready(Ok(self.opened(who))))
    }

    fn shared_session<'a>(
        &'a self,
        _ctx: &'a CallContext,
        declared: Option<&'a Value>,
    ) -> BoxFuture<'a, Opened> {
        // As HTTP does: one shared session per set of askable capabilities declared.
        let mut who = ClientIdentity::gateway_stateless();
        let key = match declared {
            Some(d) => {
                who.capabilities = super::askable_capabilities(d);
                who.capabilities.to_string()
            }
            None => String::new(),
        };
        let mut shared = self.0.shared.lock().expect("lock");
        let found = shared
            .entry(key)
            .or_insert_with(|| self.opened(&who))
            .clone();
        Box::pin(std::future::ready(Ok(found)))
    }

    fn drop_shared_session(&self, session: &UpstreamSession) {
        self.0
            .shared
            .lock()
            .expect("lock")
            .retain(|_, (s, _)| s != session);
    }

    fn call<'a>(
        &'a self,
        me: &'a Arc<UpstreamClient>,
        ctx: &'a CallContext,
        session: &'a UpstreamSession,
        request: Message,
        _delivery: Delivery,
    ) -> BoxFuture<'a, Result<CallStream, UpstreamError>> {
        let upstream_id = self.fresh_id();
        let params = self.on_wire(session, &request);
        self.record(Seen::Request {
            id: upstream_id.clone(),
            method: request.method().to_owned(),
            params: params.clone(),
            session: session.id.clone(),
        });
        let reply = self.reply_for(request.method(), &params);
        let (tx, rx) = mpsc::channel(16);
        let answer_id = AnswerId::new(request.id.clone());
        let stop = CancellationToken::new();
        self.0
            .running
            .lock()
            .expect("lock")
            .insert(upstream_id.clone(), stop.clone());
        let timeout = *self.0.timeout.lock().expect("lock");
        let stream = CallStream::new(
            rx,
            timeout,
            me.clone(),
            ctx.clone(),
            session.clone(),
            upstream_id.clone(),
        )
        .with_answer_id(answer_id.clone());
        tokio::spawn(
            self.clone()
                .play(reply, upstream_id, answer_id, session.clone(), tx, stop),
        );
        Box::pin(std::future::ready(Ok(stream)))
    }

    fn notify<'a>(
        &'a self,
        _ctx: &'a CallContext,
        _session: &'a UpstreamSession,
        message: Message,
    ) -> BoxFuture<'a, Result<(), UpstreamError>> {
        let params = message
            .params
            .as_ref()
            .and_then(|p| serde_json::from_str::<Value>(p.get()).ok())
            .unwrap_or(Value::Null);
        if Method::of(&message) == Method::NotificationsCancelled
            && let Ok(id) = serde_json::from_value::<RequestId>(params["requestId"].clone())
        {
            // Recorded before the call stops, so that a test waiting for either sees both.
            self.record(Seen::Cancelled {
                id: id.clone(),
                reason: params["reason"].as_str().map(str::to_owned),
            });
            if let Some(stop) = self.0.running.lock().expect("lock").remove(&id) {
                stop.cancel();
            }
        } else {
            self.record(Seen::Notification {
                method: message.method().to_owned(),
                params,
            });
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn respond<'a>(
        &'a self,
        _ctx: &'a CallContext,
        route: &'a ReplyRoute,
        answer: Message,
    ) -> BoxFuture<'a, Result<(), UpstreamError>> {
        self.record(Seen::Answer {
            id: route.id.clone(),
            message: message_json(&answer),
        });
        let waiting = self.0.waiting.lock().expect("lock").remove(&route.id);
        let delivered = match waiting {
            Some(tx) => tx.send(answer).map_err(|_| ()),
            None => Err(()),
        };
        Box::pin(std::future::ready(delivered.map_err(|()| {
            UpstreamError::Protocol {
                upstream: self.0.name.clone(),
                reason: "no call waits for this answer".into(),
            }
        })))
    }

    fn listen<'a>(
        &'a self,
        _me: &'a Arc<UpstreamClient>,
        _ctx: &'a CallContext,
        session: &'a UpstreamSession,
    ) -> BoxFuture<'a, Listened> {
        // The stateless wire has no stream outside requests (as HTTP: `None`).
        let rx = (!session.version.is_stateless())
            .then(|| super::frames_from(self.0.unsolicited.subscribe(), self.0.name.clone()));
        Box::pin(std::future::ready(Ok(rx)))
    }

    fn listen_shared<'a>(
        &'a self,
        _me: &'a Arc<UpstreamClient>,
        _ctx: &'a CallContext,
    ) -> BoxFuture<'a, Listened> {
        let rx = (self.0.generation == Generation::Sessions)
            .then(|| super::frames_from(self.0.unsolicited.subscribe(), self.0.name.clone()));
        Box::pin(std::future::ready(Ok(rx)))
    }

    fn close<'a>(
        &'a self,
        _ctx: &'a CallContext,
        session: &'a UpstreamSession,
    ) -> BoxFuture<'a, ()> {
        self.record(Seen::Closed {
            session: session.id.clone(),
        });
        Box::pin(std::future::ready(()))
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(std::future::ready(()))
    }
}
