//! A session-based (2025-11-25) client in front of an upstream that speaks only 2026-07-28.
//!
//! - What the client declared at `initialize` (capabilities, clientInfo) and its
//!   `logging/setLevel` go into the `_meta` of every request sent for it.
//! - An `InputRequiredResult` becomes server→client requests on the call's own stream (ids the
//!   gateway's), whose answers are sent back in a retry of the request with `inputResponses`
//!   and `requestState`, round after round, until the upstream gives its final result.
//! - `resources/subscribe`/`unsubscribe` and `ping` are answered by the gateway: the
//!   subscriptions feed an upstream `subscriptions/listen` stream, re-opened when they change,
//!   whose notifications reach the client's GET stream.
//!
//! All of it is bounded: rounds per call, questions per round, answers awaited, URIs per
//! session; the call's deadline covers every round, and a client that goes away ends it.

use super::HttpUpstream;
use crate::context::CallContext;
use crate::protocol::jsonrpc::to_raw;
use crate::protocol::stateless::{DeclaredClient, SUBSCRIPTION_META_KEY};
use crate::protocol::{ErrorCode, Message, Method, RequestId};
use crate::upstream::{
    CallStream, ClientIdentity, Delivery, Frame, ReplyRoute, UpstreamClient, UpstreamError,
    UpstreamSession,
};
use serde_json::{Map, Value};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// Most input rounds one call may take before the gateway gives up on it.
pub(crate) const MAX_ROUNDS: usize = 8;
/// Most input requests in one InputRequiredResult.
pub(crate) const MAX_QUESTIONS: usize = 16;
/// Most questions awaiting their answer at once, over all bridged calls of one upstream.
const MAX_WAITING: usize = 4096;
/// How long a listen stream that ended waits before it is opened again.
const LISTEN_RETRY: Duration = Duration::from_secs(2);

/// The state the gateway keeps for one session-based client on a stateless upstream.
pub struct Bridge {
    capabilities: Value,
    client_info: Value,
    log_level: Mutex<Option<String>>,
    subscriptions: watch::Sender<BTreeSet<String>>,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge")
            .field("subscriptions", &self.subscriptions.borrow().len())
            .finish_non_exhaustive()
    }
}

impl Bridge {
    /// The bridge for `who`.
    pub fn new(who: &ClientIdentity) -> Self {
        Bridge {
            capabilities: who.capabilities.clone(),
            client_info: who.client_info.clone(),
            log_level: Mutex::new(None),
            subscriptions: watch::channel(BTreeSet::new()).0,
        }
    }

    /// What goes into each request's `_meta`.
    pub fn declared(&self) -> DeclaredClient {
        DeclaredClient {
            capabilities: if self.capabilities.is_object() {
                self.capabilities.clone()
            } else {
                Value::Object(Map::new())
            },
            client_info: self.client_info.clone(),
            log_level: self.log_level.lock().expect("lock").clone(),
        }
    }

    /// Whether the client declared the capability a server→client request needs.
    fn can_answer(&self, method: &str) -> bool {
        let Some(needed) = Method::parse(method).client_capability() else {
            return false;
        };
        self.capabilities.get(needed).is_some()
    }

    /// The URIs subscribed now.
    pub fn subscriptions(&self) -> BTreeSet<String> {
        self.subscriptions.borrow().clone()
    }

    /// Answers, on the gateway's side, the requests that have no 2026-07-28 form; at most
    /// `max` URIs may be subscribed at once.
    fn answer_locally(
        &self,
        request: &Message,
        max: usize,
    ) -> Option<Result<Value, (ErrorCode, String)>> {
        #[derive(serde::Deserialize)]
        struct Uri {
            uri: String,
        }
        #[derive(serde::Deserialize)]
        struct Level {
            level: String,
        }
        let empty = || Ok(Value::Object(Map::new()));
        let invalid = |what: &str| {
            Err((
                ErrorCode::INVALID_PARAMS,
                format!("params.{what} is required"),
            ))
        };
        Some(match Method::of(request) {
            Method::Ping => empty(),
            Method::LoggingSetLevel => match request.params_as::<Level>() {
                Ok(l) => {
                    *self.log_level.lock().expect("lock") = Some(l.level);
                    empty()
                }
                Err(_) => invalid("level"),
            },
            Method::ResourcesSubscribe => match request.params_as::<Uri>() {
                Ok(u) => {
                    let mut full = false;
                    self.subscriptions.send_if_modified(|set| {
                        if set.contains(&u.uri) {
                            false
                        } else if set.len() >= max {
                            full = true;
                            false
                        } else {
                            set.insert(u.uri.clone())
                        }
                    });
                    if full {
                        Err((
                            ErrorCode::INVALID_REQUEST,
                            format!(
                                "at most {max} resources may be subscribed at once (limits.subscriptions_per_listen)"
                            ),
                        ))
                    } else {
                        empty()
                    }
                }
                Err(_) => invalid("uri"),
            },
            Method::ResourcesUnsubscribe => match request.params_as::<Uri>() {
                Ok(u) => {
                    self.subscriptions
                        .send_if_modified(|set| set.remove(&u.uri));
                    empty()
                }
                Err(_) => invalid("uri"),
            },
            _ => return None,
        })
    }
}

/// Questions of bridged calls waiting for the client's answer, by the id the gateway gave them.
#[derive(Default)]
pub(super) struct Waiting(Mutex<HashMap<RequestId, oneshot::Sender<Message>>>);

impl Waiting {
    fn register(&self, id: RequestId) -> Option<oneshot::Receiver<Message>> {
        let mut map = self.0.lock().expect("lock");
        map.retain(|_, tx| !tx.is_closed());
        if map.len() >= MAX_WAITING {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        map.insert(id, tx);
        Some(rx)
    }

    /// Hands the client's answer to the call that asked; gives it back if none waits for it.
    pub(super) fn deliver(&self, answer: Message) -> Result<(), Message> {
        let Some(id) = answer.id.clone() else {
            return Err(answer);
        };
        let waiter = self.0.lock().expect("lock").remove(&id);
        match waiter {
            Some(tx) => tx.send(answer),
            None => Err(answer),
        }
    }
}

/// What an upstream answer asks of the client, if it is an InputRequiredResult.
struct InputRequired {
    requests: Map<String, Value>,
    state: Option<Value>,
}

impl InputRequired {
    fn of(answer: &Message) -> Option<InputRequired> {
        let result = answer.result.as_ref()?;
        // Cheap test first: most results are not.
        if !result.get().contains("input_required") {
            return None;
        }
        let mut v: Map<String, Value> = serde_json::from_str(result.get()).ok()?;
        if v.get("resultType").and_then(Value::as_str) != Some("input_required") {
            return None;
        }
        let requests = match v.remove("inputRequests") {
            Some(Value::Object(m)) => m,
            _ => Map::new(),
        };
        Some(InputRequired {
            requests,
            state: v.remove("requestState"),
        })
    }
}

/// The original request again, with this round's answers and the upstream's state.
fn retry(request: &Message, answers: Map<String, Value>, state: Option<Value>) -> Message {
    let mut params: Map<String, Value> = request.params_as().unwrap_or_default();
    params.insert("inputResponses".into(), Value::Object(answers));
    match state {
        Some(s) => params.insert("requestState".into(), s),
        None => params.remove("requestState"),
    };
    let mut out = request.clone();
    out.params = Some(to_raw(&Value::Object(params)));
    out
}

/// Forgets a call's questions however it ends.
struct Asked<'a> {
    waiting: &'a Waiting,
    ids: Vec<RequestId>,
}

impl Drop for Asked<'_> {
    fn drop(&mut self) {
        let mut map = self.waiting.0.lock().expect("lock");
        for id in &self.ids {
            map.remove(id);
        }
    }
}

impl HttpUpstream {
    /// A call for a session-based client on the stateless wire (see the module docs).
    pub(super) async fn call_bridged(
        &self,
        me: &Arc<UpstreamClient>,
        ctx: &CallContext,
        session: &UpstreamSession,
        bridge: &Arc<Bridge>,
        request: Message,
    ) -> Result<CallStream, UpstreamError> {
        let (tx, rx) = mpsc::channel(16);
        let stream = CallStream::local(rx, self.request_timeout, self.name());
        if let Some(answer) = bridge.answer_locally(&request, self.max_subscriptions) {
            let id = request.id.clone();
            let message = match answer {
                Ok(result) => {
                    Message::response(id.unwrap_or(RequestId::Number(0)), to_raw(&result))
                }
                Err((code, text)) => Message::error_response(id, code, &text, None),
            };
            let _ = tx.try_send(Frame::Response(message));
            return Ok(stream);
        }
        // The result is read whole: it may be a question rather than the answer.
        let first = self
            .call_once(me, ctx, session, request.clone(), Delivery::Whole)
            .await?;
        let rounds = Rounds {
            me: me.clone(),
            ctx: ctx.clone(),
            session: session.clone(),
            bridge: bridge.clone(),
            request,
            tx,
        };
        tokio::spawn(rounds.run(first));
        Ok(stream)
    }
}

/// One bridged call, round after round.
struct Rounds {
    me: Arc<UpstreamClient>,
    /// Every retry is made for the same user as the call.
    ctx: CallContext,
    session: UpstreamSession,
    bridge: Arc<Bridge>,
    request: Message,
    tx: mpsc::Sender<Frame>,
}

impl Rounds {
    fn http(&self) -> &HttpUpstream {
        match &*self.me {
            UpstreamClient::Http(h) => h,
            _ => unreachable!("only HTTP upstreams are bridged"),
        }
    }

    fn fail(&self, reason: String) -> Frame {
        Frame::Failed(self.http().protocol_error(reason))
    }

    async fn run(self, mut stream: CallStream) {
        for round in 1..=MAX_ROUNDS + 1 {
            let answer = loop {
                let frame = tokio::select! {
                    f = stream.next() => f,
                    // The client went away: dropping `stream` cancels the upstream call.
                    _ = self.tx.closed() => return,
                };
                match frame {
                    Some(Frame::Response(m)) => break m,
                    Some(Frame::Failed(e)) => {
                        let _ = self.tx.send(Frame::Failed(e)).await;
                        return;
                    }
                    Some(other) => {
                        if self.tx.send(other).await.is_err() {
                            return;
                        }
                    }
                    None => return,
                }
            };
            let Some(asked) = InputRequired::of(&answer) else {
                let _ = self.tx.send(Frame::Response(answer)).await;
                return;
            };
            if round > MAX_ROUNDS {
                let _ = self
                    .tx
                    .send(self.fail(format!(
                        "the upstream still asked for input after {MAX_ROUNDS} rounds"
                    )))
                    .await;
                return;
            }
            let answers = match self.ask(asked.requests).await {
                Ok(a) => a,
                Err(Some(frame)) => {
                    let _ = self.tx.send(frame).await;
                    return;
                }
                Err(None) => return,
            };
            let again = retry(&self.request, answers, asked.state);
            stream = match self
                .http()
                .call_once(&self.me, &self.ctx, &self.session, again, Delivery::Whole)
                .await
            {
                Ok(s) => s,
                Err(e) => {
                    let _ = self.tx.send(Frame::Failed(e)).await;
                    return;
                }
            };
        }
    }

    /// Puts each question to the client and collects the answers by key. `Err(None)`: the
    /// client went away; `Err(Some(frame))`: the call ends with that frame.
    async fn ask(
        &self,
        questions: Map<String, Value>,
    ) -> Result<Map<String, Value>, Option<Frame>> {
        if questions.len() > MAX_QUESTIONS {
            return Err(Some(self.fail(format!(
                "the upstream asked {} questions at once (at most {MAX_QUESTIONS} are relayed)",
                questions.len()
            ))));
        }
        let h = self.http();
        let mut asked = Asked {
            waiting: &h.waiting,
            ids: Vec::new(),
        };
        let mut pending = Vec::new();
        for (key, question) in questions {
            let method = question.get("method").and_then(Value::as_str).unwrap_or("");
            if !self.bridge.can_answer(method) {
                return Err(Some(self.fail(format!(
                    "the upstream asked for {method:?}, which the client did not declare"
                ))));
            }
            let id = h.next_id();
            let Some(rx) = h.waiting.register(id.clone()) else {
                return Err(Some(Frame::Failed(UpstreamError::Unavailable {
                    upstream: h.name().to_owned(),
                    reason: "too many questions are waiting for their answers".into(),
                })));
            };
            asked.ids.push(id.clone());
            let params = question
                .get("params")
                .cloned()
                .unwrap_or(Value::Object(Map::new()));
            let message = Message::request(id.clone(), method, Some(to_raw(&params)));
            let route = ReplyRoute {
                upstream: h.name().to_owned(),
                session: self.session.clone(),
                id,
            };
            if self
                .tx
                .send(Frame::Request { message, route })
                .await
                .is_err()
            {
                return Err(None);
            }
            pending.push((key, rx));
        }
        let mut answers = Map::new();
        for (key, rx) in pending {
            let answer = tokio::select! {
                a = rx => a,
                _ = self.tx.closed() => return Err(None),
            };
            let Ok(answer) = answer else { return Err(None) };
            match (answer.result, answer.error) {
                (Some(result), _) => {
                    let value = serde_json::from_str(result.get()).unwrap_or(Value::Null);
                    answers.insert(key, value);
                }
                // The client refused (a declined sampling, say): that ends the call, with the
                // client's own error.
                (None, error) => {
                    let error = error
                        .and_then(|e| serde_json::from_str::<Value>(e.get()).ok())
                        .unwrap_or(Value::Null);
                    let code = error.get("code").and_then(Value::as_i64).unwrap_or(-32603);
                    let text = error
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("the client could not answer");
                    let message = Message::error_response(
                        self.request.id.clone(),
                        ErrorCode(code),
                        text,
                        None,
                    );
                    return Err(Some(Frame::Response(message)));
                }
            }
        }
        drop(asked);
        Ok(answers)
    }
}

impl HttpUpstream {
    /// The client's GET stream for a bridged session: an upstream `subscriptions/listen` for
    /// the list changes and the subscribed URIs, opened again whenever they change.
    pub(in crate::upstream) fn listen_bridged(
        me: Arc<UpstreamClient>,
        ctx: CallContext,
        session: UpstreamSession,
        bridge: Arc<Bridge>,
    ) -> mpsc::Receiver<Frame> {
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            let UpstreamClient::Http(h) = &*me else {
                return;
            };
            let mut changes = bridge.subscriptions.subscribe();
            loop {
                let uris: Vec<String> = changes.borrow_and_update().iter().cloned().collect();
                let mut upstream = match h.open_listen(&ctx, &session, uris).await {
                    Ok(frames) => frames,
                    Err(e) => {
                        tracing::debug!(upstream = %h.name(), error = %e, "subscriptions/listen failed");
                        tokio::select! {
                            _ = tokio::time::sleep(LISTEN_RETRY) => continue,
                            _ = tx.closed() => return,
                        }
                    }
                };
                loop {
                    tokio::select! {
                        changed = changes.changed() => {
                            if changed.is_err() { return }
                            break;
                        }
                        f = upstream.recv() => match f {
                            Some(Frame::Notification(m)) => {
                                if Method::of(&m) == Method::NotificationsSubscriptionsAcknowledged {
                                    continue;
                                }
                                if tx.send(Frame::Notification(untagged(m))).await.is_err() {
                                    return;
                                }
                            }
                            Some(_) => {}
                            None => {
                                // Ended by the upstream: open it again after a pause.
                                tokio::select! {
                                    _ = tokio::time::sleep(LISTEN_RETRY) => break,
                                    _ = tx.closed() => return,
                                }
                            }
                        },
                        _ = tx.closed() => return,
                    }
                }
            }
        });
        rx
    }
}

/// A listen notification as a session client sees it: without the subscription id, which
/// names the gateway's stream, not anything the client opened.
fn untagged(mut m: Message) -> Message {
    let Ok(mut params) = m.params_as::<Map<String, Value>>() else {
        return m;
    };
    if let Some(Value::Object(meta)) = params.get_mut("_meta") {
        meta.remove(SUBSCRIPTION_META_KEY);
        if meta.is_empty() {
            params.remove("_meta");
        }
    }
    m.params = Some(to_raw(&Value::Object(params)));
    m
}

#[cfg(test)]
#[path = "bridge_caps_tests.rs"]
mod caps_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn who(caps: Value) -> ClientIdentity {
        ClientIdentity {
            version: crate::protocol::ProtocolVersion::V2025_11_25,
            client_info: serde_json::json!({"name": "c", "version": "1"}),
            capabilities: caps,
        }
    }

    fn request(method: &str, params: Value) -> Message {
        Message::request(RequestId::Number(7), method, Some(to_raw(&params)))
    }

    #[test]
    fn only_declared_capabilities_can_be_asked_for() {
        let b = Bridge::new(&who(serde_json::json!({"sampling": {}})));
        assert!(b.can_answer("sampling/createMessage"));
        assert!(!b.can_answer("elicitation/create"));
        assert!(!b.can_answer("roots/list"));
        assert!(!b.can_answer("tools/call"));
        assert_eq!(
            b.declared().capabilities,
            serde_json::json!({"sampling": {}})
        );
        let none = Bridge::new(&who(Value::Null));
        assert_eq!(none.declared().capabilities, serde_json::json!({}));
    }

    #[test]
    fn subscriptions_are_kept_per_session_and_bounded() {
        let b = Bridge::new(&who(serde_json::json!({})));
        for uri in ["a://1", "a://1", "a://2"] {
            let r = b.answer_locally(
                &request("resources/subscribe", serde_json::json!({"uri": uri})),
                2,
            );
            assert!(matches!(r, Some(Ok(_))), "{uri}");
        }
        assert_eq!(b.subscriptions().len(), 2);
        let full = b.answer_locally(
            &request("resources/subscribe", serde_json::json!({"uri": "a://3"})),
            2,
        );
        assert!(matches!(full, Some(Err((ErrorCode::INVALID_REQUEST, _)))));
        b.answer_locally(
            &request("resources/unsubscribe", serde_json::json!({"uri": "a://1"})),
            2,
        );
        assert_eq!(b.subscriptions().into_iter().collect::<Vec<_>>(), ["a://2"]);
        assert!(matches!(
            b.answer_locally(&request("resources/subscribe", serde_json::json!({})), 2),
            Some(Err((ErrorCode::INVALID_PARAMS, _)))
        ));
        assert!(
            b.answer_locally(&request("tools/call", serde_json::json!({"name": "x"})), 2)
                .is_none()
        );
    }

    #[test]
    fn the_log_level_goes_into_meta() {
        let b = Bridge::new(&who(serde_json::json!({})));
        assert_eq!(b.declared().log_level, None);
        b.answer_locally(
            &request("logging/setLevel", serde_json::json!({"level": "info"})),
            2,
        );
        assert_eq!(b.declared().log_level.as_deref(), Some("info"));
    }

    #[test]
    fn input_required_results_are_read_and_retried() {
        let answer = Message::response(
            RequestId::Number(1),
            to_raw(&serde_json::json!({
                "resultType": "input_required",
                "inputRequests": {"k": {"method": "sampling/createMessage", "params": {}}},
                "requestState": "s1"
            })),
        );
        let ir = InputRequired::of(&answer).unwrap();
        assert_eq!(ir.requests.len(), 1);
        let plain = Message::response(
            RequestId::Number(1),
            to_raw(&serde_json::json!({"content": [{"type": "text", "text": "input_required"}]})),
        );
        assert!(InputRequired::of(&plain).is_none());
        let original = request(
            "tools/call",
            serde_json::json!({"name": "t", "requestState": "old"}),
        );
        let mut answers = Map::new();
        answers.insert("k".into(), serde_json::json!({"role": "assistant"}));
        let again = retry(&original, answers, ir.state);
        let p: Value = again.params_as().unwrap();
        assert_eq!(p["name"], "t");
        assert_eq!(p["requestState"], "s1");
        assert_eq!(p["inputResponses"]["k"]["role"], "assistant");
        assert_eq!(again.id, original.id);
    }

    #[test]
    fn answers_reach_only_the_question_that_waits() {
        let w = Waiting::default();
        let mut rx = w.register(RequestId::Number(5)).unwrap();
        let stray = Message::response(RequestId::Number(6), to_raw(&serde_json::json!({})));
        assert!(w.deliver(stray).is_err());
        let mine = Message::response(RequestId::Number(5), to_raw(&serde_json::json!({})));
        assert!(w.deliver(mine).is_ok());
        assert!(rx.try_recv().is_ok());
        let again = Message::response(RequestId::Number(5), to_raw(&serde_json::json!({})));
        assert!(w.deliver(again).is_err(), "answered once");
    }

    #[test]
    fn subscription_ids_are_taken_off() {
        let m = Message::notification(
            "notifications/resources/updated",
            Some(to_raw(
                &serde_json::json!({"uri": "a://1", "_meta": {SUBSCRIPTION_META_KEY: 3}}),
            )),
        );
        let p: Value = untagged(m).params_as().unwrap();
        assert_eq!(p, serde_json::json!({"uri": "a://1"}));
    }
}
