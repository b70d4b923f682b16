//! What a result passes between its upstream and the client: the output guardrails (always
//! on the bytes as they stream, a bounded window held back) and then the response-phase
//! interceptors (which need the result whole, so a call they are asked about is delivered
//! whole). Also the request phase, which runs after policy and before the request is sent.
//! Refusals of both phases are answered here, as JSON-RPC errors that say what stopped the
//! call; the relay (`relay.rs`) applies a [`Vet`] to each final response it passes on.

use super::access::Access;
use super::reply::Refusal;
use crate::audit::{Outcome, Ticket};
use crate::config::interceptors::Phase;
use crate::federation::{Routed, VirtualServer};
use crate::guardrail::Blocked;
use crate::intercept::{InterceptError, Interceptors, Subject};
use crate::protocol::jsonrpc::to_raw;
use crate::protocol::{CallHead, ErrorCode, Message, Method, RequestId};
use crate::upstream::{StreamedResponse, UpstreamError};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

/// How much of a guarded streamed result is held before anything is sent, so that a block
/// found in it is answered with a clean error rather than a cut-off response.
const HOLD_BEFORE_SENDING: usize = 64 * 1024;

/// The methods whose results are vetted (those that carry content from the upstream), by
/// the name hooks are told. A task's result, polled later, is scanned like the call's would
/// have been; hooks are asked only about the three calls (validation keeps their `methods`
/// to those).
fn vetted(method: &Method) -> Option<&'static str> {
    match method {
        Method::ToolsCall => Some("tools/call"),
        Method::PromptsGet => Some("prompts/get"),
        Method::ResourcesRead => Some("resources/read"),
        Method::TasksGet => Some("tasks/get"),
        Method::TasksResult => Some("tasks/result"),
        _ => None,
    }
}

/// What a call's result passes: the server's guard (`server.guardrail`), and the hooks asked
/// about its response.
pub struct Vet {
    hooks: Option<Arc<Interceptors>>,
    server: Arc<VirtualServer>,
    method: &'static str,
    target: Option<String>,
    upstream: String,
    principal: Option<Arc<crate::auth::Principal>>,
    trace_id: Option<Arc<str>>,
    arguments: Option<Value>,
}

impl Vet {
    /// The vet of a call to `member`; `None` when nothing looks at its result.
    pub fn of(
        server: &Arc<VirtualServer>,
        access: &Access,
        head: &CallHead,
        member: usize,
        sent: &Message,
    ) -> Option<Vet> {
        let method = vetted(&head.method)?;
        let hooks = server
            .interceptors
            .clone()
            .filter(|h| h.asks(Phase::Response, method));
        if hooks.is_none() && server.guardrail.is_none() {
            return None;
        }
        Some(Vet {
            arguments: hooks.as_ref().and_then(|_| arguments_of(sent)),
            hooks,
            server: server.clone(),
            method,
            target: head.name.clone(),
            upstream: server.members[member].upstream.clone(),
            principal: access.caller.as_ref().map(|c| c.principal.clone()),
            trace_id: access.trace_id.clone(),
        })
    }

    /// Whether the result must be delivered whole (a hook reads it).
    pub fn wants_whole(&self) -> bool {
        self.hooks.is_some()
    }

    /// Vets a final response held whole: guardrails, then hooks. A refusal replaces it.
    pub async fn response(&self, m: &mut Message, ticket: Option<&Ticket>) {
        let Some(result) = m.result.as_ref() else {
            return;
        };
        if let Some(g) = &self.server.guardrail {
            match g.scan_whole(result.get().as_bytes()) {
                Ok((bytes, findings)) => {
                    self.found(&findings, ticket);
                    if bytes.as_ref() != result.get().as_bytes() {
                        match String::from_utf8(bytes.to_vec()).map(RawValue::from_string) {
                            Ok(Ok(r)) => m.result = Some(r),
                            _ => {
                                tracing::error!(server = %self.server.name, "a redacted result is not JSON; it is withheld");
                                *m = blocked(m.id.clone(), "invalid-redaction", ticket);
                                return;
                            }
                        }
                    }
                }
                Err(b) => {
                    *m = blocked(m.id.clone(), &b.rule, ticket);
                    return;
                }
            }
        }
        let Some(hooks) = &self.hooks else {
            return;
        };
        let Some(result) = m.result.as_ref() else {
            return;
        };
        let Ok(value) = serde_json::from_str::<Value>(result.get()) else {
            return;
        };
        let subject = self.subject();
        match hooks.after(&subject, self.arguments.as_ref(), value).await {
            Ok(new) => m.result = Some(to_raw(&new)),
            Err(e) => *m = intercepted(m.id.clone(), &e, ticket),
        }
    }

    fn subject(&self) -> Subject<'_> {
        Subject {
            server: &self.server.name,
            tenant: self.server.tenant.as_deref(),
            method: self.method,
            target: self.target.as_deref(),
            upstream: &self.upstream,
            principal: self.principal.as_deref(),
            trace_id: self.trace_id.as_deref(),
        }
    }

    fn found(&self, findings: &[crate::guardrail::Finding], ticket: Option<&Ticket>) {
        if findings.is_empty() {
            return;
        }
        crate::guardrail::count(&self.server.name, findings);
        if let Some(t) = ticket {
            t.guardrails(findings);
        }
        tracing::info!(server = %self.server.name, target = ?self.target, findings = ?findings, "output guardrails matched");
    }

    /// A streamed result's pieces, scanned as they pass. A block within the first
    /// [`HOLD_BEFORE_SENDING`] bytes answers with a clean error; later, the response is cut
    /// off (the client has seen part of it) and the ticket says why.
    pub fn stream(
        self: Arc<Self>,
        body: StreamedResponse,
        request_id: Option<RequestId>,
        ticket: Option<Arc<Ticket>>,
    ) -> BoxStream<'static, Result<Bytes, UpstreamError>> {
        let Some(guard) = self.server.guardrail.clone() else {
            return plain(body);
        };
        let state = Guarded {
            body,
            scan: guard.scan(),
            held: BytesMut::new(),
            sending: false,
            done: false,
            vet: self,
            request_id,
            ticket,
        };
        futures_util::stream::unfold(state, |mut s| async move {
            let piece = s.next().await?;
            Some((piece, s))
        })
        .boxed()
    }
}

/// The pieces of a streamed result, unscanned.
pub fn plain(body: StreamedResponse) -> BoxStream<'static, Result<Bytes, UpstreamError>> {
    futures_util::stream::unfold(body, |mut b| async move {
        let piece = b.next().await?;
        Some((piece, b))
    })
    .boxed()
}

struct Guarded {
    body: StreamedResponse,
    scan: crate::guardrail::Scan,
    held: BytesMut,
    sending: bool,
    done: bool,
    vet: Arc<Vet>,
    request_id: Option<RequestId>,
    ticket: Option<Arc<Ticket>>,
}

impl Guarded {
    async fn next(&mut self) -> Option<Result<Bytes, UpstreamError>> {
        loop {
            if self.done {
                return None;
            }
            let scanned = match self.body.next().await {
                Some(Ok(b)) => self.scan.push(&b),
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(e));
                }
                None => {
                    self.done = true;
                    let last = self.scan.finish();
                    self.vet.found(self.scan.findings(), self.ticket.as_deref());
                    last
                }
            };
            match scanned {
                Ok(out) => {
                    self.held.extend_from_slice(&out);
                    if self.done || self.sending || self.held.len() >= HOLD_BEFORE_SENDING {
                        self.sending = true;
                        if !self.held.is_empty() {
                            return Some(Ok(self.held.split().freeze()));
                        }
                    }
                }
                Err(b) => return Some(self.block(&b)),
            }
        }
    }

    fn block(&mut self, b: &Blocked) -> Result<Bytes, UpstreamError> {
        self.done = true;
        self.vet.found(self.scan.findings(), self.ticket.as_deref());
        let ticket = self.ticket.as_deref();
        if !self.sending {
            let error = blocked(self.request_id.clone(), &b.rule, ticket);
            return Ok(Bytes::from(error.to_bytes()));
        }
        if let Some(t) = ticket {
            t.decision("deny", Some(&format!("guardrail:{}", b.rule)));
        }
        Err(UpstreamError::Protocol {
            upstream: self.vet.upstream.clone(),
            reason: format!("{b}; the response was cut off after part of it was sent"),
        })
    }
}

/// The request phase, after policy: asks the hooks about the request as it will be sent,
/// taking a mutator's arguments into it.
pub async fn before_sending(
    server: &VirtualServer,
    access: &Access,
    head: &CallHead,
    mut routed: Routed,
    id: &Option<RequestId>,
) -> Result<Routed, Refusal> {
    let Some(hooks) = &server.interceptors else {
        return Ok(routed);
    };
    let Some(method) = vetted(&head.method).filter(|m| hooks.asks(Phase::Request, m)) else {
        return Ok(routed);
    };
    let arguments = arguments_of(&routed.message);
    let subject = Subject {
        server: &server.name,
        tenant: server.tenant.as_deref(),
        method,
        target: head.name.as_deref(),
        upstream: &server.members[routed.member].upstream,
        principal: access.caller.as_ref().map(|c| &*c.principal),
        trace_id: access.trace_id.as_deref(),
    };
    match hooks.before(&subject, arguments.as_ref()).await {
        Ok(None) => Ok(routed),
        Ok(Some(new)) => {
            let mut params: BTreeMap<String, Box<RawValue>> =
                routed.message.params_as().unwrap_or_default();
            params.insert("arguments".into(), to_raw(&new));
            routed.message.params = Some(to_raw(&params));
            Ok(routed)
        }
        Err(e) => Err(Refusal::by_interceptor(
            intercepted(id.clone(), &e, None),
            &e,
        )),
    }
}

/// The arguments a request carries (`params.arguments`).
fn arguments_of(m: &Message) -> Option<Value> {
    #[derive(serde::Deserialize)]
    struct Params {
        arguments: Option<Value>,
    }
    m.params_as::<Params>().ok()?.arguments
}

/// The error answering a result a guardrail blocked, recorded on `ticket`.
fn blocked(id: Option<RequestId>, rule: &str, ticket: Option<&Ticket>) -> Message {
    if let Some(t) = ticket {
        t.decision("deny", Some(&format!("guardrail:{rule}")));
        t.complete(Outcome::Refused(ErrorCode::POLICY_DENIED.0));
    }
    Message::error_response(
        id,
        ErrorCode::POLICY_DENIED,
        &format!("the response was blocked by the output guardrail {rule:?}"),
        Some(json!({"deniedBy": "guardrail", "rule": rule})),
    )
}

/// The error answering a call an interceptor stopped.
fn intercepted(id: Option<RequestId>, e: &InterceptError, ticket: Option<&Ticket>) -> Message {
    let (code, data) = match e {
        InterceptError::Denied { hook, reason } => (
            ErrorCode::POLICY_DENIED,
            json!({"deniedBy": "interceptor", "interceptor": hook, "reason": reason}),
        ),
        InterceptError::Failed { hook, .. } => (
            ErrorCode::UPSTREAM_UNAVAILABLE,
            json!({"deniedBy": "interceptor", "interceptor": hook}),
        ),
    };
    if let Some(t) = ticket {
        t.decision("deny", Some(&format!("interceptor:{}", e.hook())));
        t.complete(Outcome::Refused(code.0));
    }
    Message::error_response(id, code, &e.to_string(), Some(data))
}
