//! Relays one upstream call to the client: a single JSON answer when the upstream answers at
//! once, otherwise an SSE stream that passes each message on as it arrives.

use super::error::{HttpError, upstream_error};
use super::input_required::ParkingLot;
use super::session::Session;
use crate::audit::{Outcome, Ticket};
use crate::federation::VirtualServer;
use crate::protocol::sse::encode_event;
use crate::protocol::stateless::{log_allowed, with_current_error_code, with_result_type};
use crate::protocol::{ErrorCode, Message, RequestId};
use crate::upstream::{CallStream, Frame, ReplyRoute, StreamedResponse, UpstreamError};
use crate::web::json::json;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use http::{HeaderValue, StatusCode, header};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// What a relay needs to translate frames for this client.
pub struct Relay {
    /// The quota places the call holds, given back when the relay and its response's
    /// stream have both ended.
    pub permit: Option<Arc<crate::quota::Permit>>,
    /// The virtual server (for outward names).
    pub server: Arc<VirtualServer>,
    /// Which member is answering.
    pub member: usize,
    /// The downstream session; `None` for stateless clients, who cannot be asked questions
    /// mid-call in this form.
    pub session: Option<Arc<Session>>,
    /// The downstream request id.
    pub request_id: Option<RequestId>,
    /// Fires when the client cancels the request.
    pub cancel: CancellationToken,
    /// Whether the result is cacheable (2026-07-28 caching hints).
    pub cacheable: bool,
    /// For stateless clients, the log level the request opted in to (`None`: no log messages).
    pub log_floor: Option<u8>,
    /// For stateless clients: where calls wait while the client answers a server request.
    pub parked: Option<ParkingLot>,
    /// For stateless clients: the capabilities this request declared in `_meta`.
    pub client_capabilities: serde_json::Value,
    /// The audit record of this call, completed when the answer has been sent.
    pub ticket: Option<Arc<Ticket>>,
    /// How a task id in the answer is shown to the client (tasks extension).
    pub tasks: Option<super::tasks::Rewrite>,
    /// For whom the call is made (what refusing a server request upstream is sent as).
    pub context: crate::context::CallContext,
    /// What the result passes before the client sees it (guardrails, response hooks).
    pub vet: Option<Arc<super::vet::Vet>>,
    /// For a `resources/read` of a renamed URI: (the upstream's, the client's).
    pub read_as: Option<(String, String)>,
}

impl Relay {
    /// Waits for the first frame and answers with JSON or opens an SSE stream.
    pub async fn respond(self, mut stream: CallStream) -> Response {
        let first = tokio::select! {
            f = stream.next() => f,
            _ = self.cancel.cancelled() => {
                self.finish();
                self.outcome(Outcome::Cancelled, 0);
                return cancelled(self.request_id.clone());
            }
        };
        match first {
            Some(Frame::Response(mut m)) => {
                self.finish();
                if let Some(t) = &self.tasks {
                    t.apply(&mut m);
                }
                self.rename_contents(&mut m);
                if let Some(v) = &self.vet {
                    v.response(&mut m, self.ticket.as_deref()).await;
                }
                if self.request_id.is_some() {
                    m.id = self.request_id.clone();
                }
                if self.session.is_none() {
                    m.result = m.result.map(|r| with_result_type(r, self.cacheable));
                    with_current_error_code(&mut m);
                }
                let bytes = m.to_bytes();
                self.outcome(Outcome::of_message(&m), bytes.len());
                json(StatusCode::OK, bytes)
            }
            Some(Frame::Streamed(body)) => {
                self.finish();
                json_stream(self.streamed_body(body, false))
            }
            Some(Frame::Failed(e)) => {
                self.finish();
                let bytes = upstream_error(self.request_id.clone(), &e).to_bytes();
                self.outcome(failure(&e), bytes.len());
                json(StatusCode::OK, bytes)
            }
            None => {
                self.finish();
                self.outcome(Outcome::Error(ErrorCode::INTERNAL_ERROR.0), 0);
                json(
                    StatusCode::OK,
                    Message::error_response(
                        self.request_id.clone(),
                        ErrorCode::INTERNAL_ERROR,
                        "no response",
                        None,
                    )
                    .to_bytes(),
                )
            }
            Some(Frame::Request { message, route }) if self.can_park(&message) => {
                match self.park(stream, message, route) {
                    Ok(bytes) => {
                        self.outcome(Outcome::Ok, bytes.len());
                        json(StatusCode::OK, bytes)
                    }
                    Err(refusal) => {
                        self.outcome(Outcome::Refused(429), 0);
                        refusal.with_id(self.request_id.clone()).into_response()
                    }
                }
            }
            Some(frame) => sse_response(self.into_body(frame, stream)),
        }
    }

    /// Whether this server→client request becomes an InputRequiredResult: only for stateless
    /// clients, and only if the request declared the capability it needs (otherwise the
    /// upstream is told the client cannot answer, and the call goes on).
    fn can_park(&self, question: &Message) -> bool {
        let Some(needed) = crate::protocol::Method::of(question).client_capability() else {
            return false;
        };
        self.session.is_none()
            && self.parked.is_some()
            && self.client_capabilities.get(needed).is_some()
    }

    /// Parks the call and answers this request with the upstream's question; refused when
    /// the caller has too many calls parked.
    fn park(
        &self,
        stream: CallStream,
        question: Message,
        route: ReplyRoute,
    ) -> Result<Vec<u8>, HttpError> {
        let lot = self.parked.as_ref().expect("can_park checked");
        let result = lot.park(stream, self.member, question, route)?;
        Ok(Message::response(
            self.request_id.clone().unwrap_or(RequestId::Number(0)),
            result,
        )
        .to_bytes())
    }

    fn rename_contents(&self, m: &mut Message) {
        if let (Some((from, to)), Some(r)) = (&self.read_as, &m.result)
            && let Some(renamed) = crate::federation::renamed_contents(r, from, to)
        {
            m.result = Some(renamed);
        }
    }

    fn finish(&self) {
        if let (Some(s), Some(id)) = (&self.session, &self.request_id) {
            s.untrack(id);
        }
    }

    /// Records how the call ended and the last bytes sent.
    fn outcome(&self, outcome: Outcome, bytes: usize) {
        if let Some(t) = &self.ticket {
            t.sent(bytes);
            t.complete(outcome);
        }
    }

    fn into_body(self, first: Frame, stream: CallStream) -> Body {
        let state = (self, Some(stream), Some(first));
        let events =
            futures_util::stream::unfold(state, |(relay, mut stream, mut pending)| async move {
                let mut open = stream.take()?;
                loop {
                    let frame = match pending.take() {
                        Some(f) => Some(f),
                        None => tokio::select! {
                            f = open.next() => f,
                            _ = relay.cancel.cancelled() => None,
                        },
                    };
                    let Some(frame) = frame else {
                        relay.finish();
                        return None;
                    };
                    let frame = match frame {
                        Frame::Streamed(body) => {
                            relay.finish();
                            let pieces = relay.streamed_body(body, true);
                            return Some((pieces, (relay, None, None)));
                        }
                        Frame::Request { message, route } if relay.can_park(&message) => {
                            let (bytes, outcome) = match relay.park(open, message, route) {
                                Ok(bytes) => (bytes, Outcome::Ok),
                                // The stream is open: the refusal can only be its last event.
                                Err(refusal) => (
                                    refusal.rpc_message(relay.request_id.clone()).to_bytes(),
                                    Outcome::Refused(429),
                                ),
                            };
                            relay.finish();
                            relay.outcome(outcome, bytes.len());
                            return Some((one(encode_event(&bytes, None)), (relay, None, None)));
                        }
                        other => other,
                    };
                    let last = frame.is_final();
                    let ending = match &frame {
                        Frame::Response(m) if last => Some(Outcome::of_message(m)),
                        Frame::Failed(e) if last => Some(failure(e)),
                        _ => None,
                    };
                    if let Some(bytes) = relay.translate(frame).await {
                        if last {
                            relay.finish();
                        }
                        match ending {
                            Some(o) => relay.outcome(o, bytes.len()),
                            None => {
                                if let Some(t) = &relay.ticket {
                                    t.sent(bytes.len());
                                }
                            }
                        }
                        let next = if last { None } else { Some(open) };
                        return Some((one(encode_event(&bytes, None)), (relay, next, None)));
                    }
                }
            });
        Body::from_stream(events.flatten())
    }

    /// The pieces of a streamed final response, as the whole JSON body or as one SSE event.
    /// The audit record completes when the last piece is out; an upstream failure midway
    /// aborts the body, since the client has already seen part of the answer.
    fn streamed_body(&self, body: StreamedResponse, sse: bool) -> Pieces {
        let body = match &self.vet {
            Some(v) => v
                .clone()
                .stream(body, self.request_id.clone(), self.ticket.clone()),
            None => super::vet::plain(body),
        };
        let state = Some((body, self.ticket.clone(), self.permit.clone()));
        let pieces = futures_util::stream::unfold(state, |state| async move {
            let (mut body, ticket, permit) = state?;
            match body.next().await {
                Some(Ok(b)) => {
                    if let Some(t) = &ticket {
                        t.sent(b.len());
                    }
                    Some((Ok(b), Some((body, ticket, permit))))
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "a streamed response broke off");
                    if let Some(t) = &ticket {
                        t.complete(failure(&e));
                    }
                    Some((Err(e), None))
                }
                None => {
                    if let Some(t) = &ticket {
                        t.complete(Outcome::Ok);
                    }
                    None
                }
            }
        });
        if !sse {
            return pieces.boxed();
        }
        let head = Bytes::from_static(b"event: message\ndata: ");
        let tail = Bytes::from_static(b"\n\n");
        one(head).chain(pieces).chain(one(tail)).boxed()
    }

    /// Turns a frame into the bytes the client should see (or `None` to send nothing).
    pub async fn translate(&self, mut frame: Frame) -> Option<Vec<u8>> {
        if let (Some(t), Frame::Response(m)) = (&self.tasks, &mut frame) {
            t.apply(m);
        }
        if let Frame::Response(m) = &mut frame {
            self.rename_contents(m);
        }
        if let (Some(v), Frame::Response(m)) = (&self.vet, &mut frame) {
            v.response(m, self.ticket.as_deref()).await;
        }
        if let (None, Frame::Notification(m)) = (&self.session, &frame)
            && crate::protocol::Method::of(m) == crate::protocol::Method::NotificationsMessage
            && !log_allowed(m, self.log_floor)
        {
            return None;
        }
        translate(
            &self.server,
            &self.context,
            self.member,
            self.session.as_ref(),
            &self.request_id,
            frame,
            self.cacheable,
        )
        .await
    }
}

// A relay dropped before its call ended (the client went away mid-stream, or the request was
// abandoned while waiting for the upstream) must not leave the request tracked: the session
// would look busy for ever and never be reaped.
impl Drop for Relay {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The outcome of an upstream failure.
fn failure(e: &crate::upstream::UpstreamError) -> Outcome {
    if e.is_timeout() {
        Outcome::Timeout
    } else {
        Outcome::UpstreamFailure
    }
}

/// Frame translation shared by call relays and listen streams.
pub async fn translate(
    server: &VirtualServer,
    ctx: &crate::context::CallContext,
    member: usize,
    session: Option<&Arc<Session>>,
    request_id: &Option<RequestId>,
    frame: Frame,
    cacheable: bool,
) -> Option<Vec<u8>> {
    match frame {
        Frame::Response(mut m) => {
            if session.is_none() {
                m.result = m.result.map(|r| with_result_type(r, cacheable));
                with_current_error_code(&mut m);
            }
            if request_id.is_some() {
                // A resumed call answers the retry, whose id differs from the first request's.
                m.id = request_id.clone();
            }
            Some(m.to_bytes())
        }
        Frame::Failed(e) => Some(upstream_error(request_id.clone(), &e).to_bytes()),
        Frame::Streamed(_) => unreachable!("streamed answers are relayed, not translated"),
        Frame::Notification(m) => Some(server.outward(member, m).to_bytes()),
        Frame::Request { mut message, route } => match session {
            Some(s) => {
                message.id = Some(s.register_reply(member, route));
                Some(message.to_bytes())
            }
            None => {
                refuse_server_request(server, ctx, member, route, message.method()).await;
                None
            }
        },
    }
}

async fn refuse_server_request(
    server: &VirtualServer,
    ctx: &crate::context::CallContext,
    member: usize,
    route: ReplyRoute,
    method: &str,
) {
    let answer = Message::error_response(
        None,
        ErrorCode::METHOD_NOT_FOUND,
        &format!("the client is stateless and cannot answer {method} through the gateway"),
        None,
    );
    if let Err(e) = server.members[member]
        .client
        .respond(ctx, &route, answer)
        .await
    {
        tracing::debug!(error = %e, "could not refuse a server request");
    }
}

fn cancelled(id: Option<RequestId>) -> Response {
    json(
        StatusCode::OK,
        Message::error_response(
            id,
            ErrorCode::REQUEST_TIMEOUT,
            "the request was cancelled",
            None,
        )
        .to_bytes(),
    )
}

/// Bytes on their way to the client; an error aborts the response.
type Pieces = BoxStream<'static, Result<Bytes, UpstreamError>>;

fn one(bytes: Bytes) -> Pieces {
    futures_util::stream::once(std::future::ready(Ok(bytes))).boxed()
}

/// A JSON response whose body is relayed in pieces.
fn json_stream(pieces: Pieces) -> Response {
    let mut resp = Response::new(Body::from_stream(pieces));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Wraps an SSE body with the headers every stream needs.
pub fn sse_response(body: Body) -> Response {
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-transform"),
    );
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}
