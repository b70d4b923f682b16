//! Reads what an HTTP upstream sends back (an SSE stream, or a large JSON body) and turns it
//! into frames. A result the gateway only relays is passed on while it arrives
//! ([`crate::protocol::passthrough`]); everything else is collected and parsed whole.

use super::{
    AnswerId, Delivery, Frame, ReplyRoute, StreamedResponse, UpstreamError, UpstreamSession,
};
use crate::protocol::passthrough::{Progress, ResponseRewriter};
use crate::protocol::sse::{SseParser, SsePiece};
use crate::protocol::{Message, MessageKind, RequestId};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;

/// The call is over for this reader: the client went away, or a failure was already sent.
pub(super) struct Stop;

/// Reads one upstream response body.
pub(super) struct BodyReader {
    pub upstream: String,
    pub session: UpstreamSession,
    pub max_message: usize,
    /// For a call: the id used upstream and the id to answer with downstream.
    pub expect: Option<(RequestId, AnswerId)>,
    pub delivery: Delivery,
}

/// One message on its way: streamed once the rewriter says it can be, otherwise collected.
struct Pending {
    /// Whether any byte arrived yet (the rewriter is made then, with the answer id of then).
    started: bool,
    rewriter: Option<ResponseRewriter>,
    whole: Vec<u8>,
    sink: Option<mpsc::Sender<Result<Bytes, UpstreamError>>>,
}

impl Pending {
    /// Resolves when nobody waits for this message any more: the call's frames before the
    /// answer started streaming, the streamed answer after.
    async fn listener_gone(&self, frames: &mpsc::Sender<Frame>) {
        match &self.sink {
            Some(sink) => sink.closed().await,
            None => frames.closed().await,
        }
    }
}

impl BodyReader {
    fn pending(&self) -> Pending {
        Pending {
            started: false,
            rewriter: None,
            whole: Vec::new(),
            sink: None,
        }
    }

    fn rewriter(&self) -> Option<ResponseRewriter> {
        match (&self.expect, self.delivery) {
            (Some((up, answer)), Delivery::Streamed { stateless_client }) => Some(
                ResponseRewriter::new(up, &answer.get(), stateless_client, self.max_message),
            ),
            _ => None,
        }
    }

    fn protocol_error(&self, reason: impl std::fmt::Display) -> UpstreamError {
        UpstreamError::Protocol {
            upstream: self.upstream.clone(),
            reason: reason.to_string(),
        }
    }

    fn broken(&self, e: &reqwest::Error) -> UpstreamError {
        UpstreamError::Crashed {
            upstream: self.upstream.clone(),
            reason: super::http::describe(e),
        }
    }

    /// Ends the call with `e`, on the streamed response if one was started.
    async fn fail(&self, p: &mut Pending, frames: &mpsc::Sender<Frame>, e: UpstreamError) -> Stop {
        match p.sink.take() {
            Some(sink) => {
                let _ = sink.send(Err(e)).await;
            }
            None => {
                let _ = frames.send(Frame::Failed(e)).await;
            }
        }
        Stop
    }

    async fn feed(
        &self,
        p: &mut Pending,
        bytes: &[u8],
        frames: &mpsc::Sender<Frame>,
    ) -> Result<(), Stop> {
        if !std::mem::replace(&mut p.started, true) {
            p.rewriter = self.rewriter();
        }
        if let Some(rw) = &mut p.rewriter {
            let mut out = Vec::new();
            match rw.feed(bytes, &mut out) {
                Ok(Progress::Undecided) => return Ok(()),
                Ok(Progress::Streaming) => {
                    if p.sink.is_none() {
                        let (tx, rx) = mpsc::channel(8);
                        let first = Frame::Streamed(StreamedResponse::new(rx, &self.upstream));
                        frames.send(first).await.map_err(|_| Stop)?;
                        p.sink = Some(tx);
                    }
                    if !out.is_empty() {
                        let sink = p.sink.as_ref().expect("set above");
                        sink.send(Ok(out.into())).await.map_err(|_| Stop)?;
                    }
                    return Ok(());
                }
                Ok(Progress::NotStreamable) => {
                    p.whole = rw.take_head();
                    p.rewriter = None;
                    return Ok(());
                }
                Err(e) => {
                    let e = self.protocol_error(e);
                    return Err(self.fail(p, frames, e).await);
                }
            }
        }
        if p.whole.len() + bytes.len() > self.max_message {
            let e = self.protocol_error(format!("a response exceeded {} bytes", self.max_message));
            return Err(self.fail(p, frames, e).await);
        }
        p.whole.extend_from_slice(bytes);
        Ok(())
    }

    /// Ends a message: `Ok(None)` if it was streamed (the call is complete), else its bytes.
    async fn end(
        &self,
        mut p: Pending,
        frames: &mpsc::Sender<Frame>,
    ) -> Result<Option<Vec<u8>>, Stop> {
        if p.sink.is_some() {
            let finished = p.rewriter.as_ref().expect("streaming").finish();
            if let Err(e) = finished {
                let e = self.protocol_error(e);
                return Err(self.fail(&mut p, frames, e).await);
            }
            return Ok(None);
        }
        Ok(Some(match p.rewriter.as_mut() {
            Some(rw) => rw.take_head(),
            None => p.whole,
        }))
    }

    /// Relays a JSON body holding the answer to a call.
    pub async fn run_json(self, resp: reqwest::Response, frames: mpsc::Sender<Frame>) {
        let mut body = resp.bytes_stream();
        let mut p = self.pending();
        loop {
            let chunk = tokio::select! {
                c = body.next() => c,
                _ = p.listener_gone(&frames) => return,
            };
            match chunk {
                Some(Ok(c)) => {
                    if self.feed(&mut p, &c, &frames).await.is_err() {
                        return;
                    }
                }
                Some(Err(e)) => {
                    let e = self.broken(&e);
                    self.fail(&mut p, &frames, e).await;
                    return;
                }
                None => break,
            }
        }
        let Ok(Some(bytes)) = self.end(p, &frames).await else {
            return;
        };
        let frame = match Message::parse(&bytes) {
            Err(e) => Frame::Failed(self.protocol_error(e)),
            Ok(m) => match self.answer(m) {
                Some(m) => Frame::Response(m),
                None => {
                    Frame::Failed(self.protocol_error("the response id does not match the request"))
                }
            },
        };
        let _ = frames.send(frame).await;
    }

    /// Relays an SSE stream: messages for a call until its answer, or unsolicited ones.
    pub async fn run_sse(self, resp: reqwest::Response, frames: mpsc::Sender<Frame>) {
        let mut stream = resp.bytes_stream();
        let mut parser = SseParser::new(self.max_message);
        let mut p = self.pending();
        loop {
            let chunk = tokio::select! {
                c = stream.next() => c,
                _ = p.listener_gone(&frames) => return,
            };
            let chunk = match chunk {
                Some(Ok(c)) => c,
                Some(Err(e)) => {
                    let e = self.broken(&e);
                    self.fail(&mut p, &frames, e).await;
                    return;
                }
                None => {
                    if p.sink.is_some() {
                        let e = self.protocol_error("the stream ended inside the response");
                        self.fail(&mut p, &frames, e).await;
                    }
                    return;
                }
            };
            let pieces = match parser.feed(&chunk) {
                Ok(pieces) => pieces,
                Err(e) => {
                    let e = self.protocol_error(e);
                    self.fail(&mut p, &frames, e).await;
                    return;
                }
            };
            for piece in pieces {
                match piece {
                    SsePiece::Data(b) => {
                        if self.feed(&mut p, &b, &frames).await.is_err() {
                            return;
                        }
                    }
                    SsePiece::Dispatch => {
                        let done = std::mem::replace(&mut p, self.pending());
                        let data = match self.end(done, &frames).await {
                            Ok(Some(data)) => data,
                            Ok(None) | Err(Stop) => return,
                        };
                        let msg = match event_message(&data) {
                            Event::Message(m) => m,
                            Event::Empty => continue,
                            Event::Invalid(e) => {
                                tracing::warn!(upstream = %self.upstream, error = %e, "ignoring an invalid message on an SSE stream");
                                continue;
                            }
                        };
                        if self.forward(msg, &frames).await {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// The call's answer re-addressed downstream, or `None` if `m` answers something else.
    fn answer(&self, mut m: Message) -> Option<Message> {
        let (up, answer) = self.expect.as_ref()?;
        if m.id.as_ref() != Some(up) {
            return None;
        }
        m.id = answer.get();
        Some(m)
    }

    /// Sends one message on; true when the call is complete.
    async fn forward(&self, msg: Message, frames: &mpsc::Sender<Frame>) -> bool {
        let frame = match msg.kind {
            MessageKind::Response | MessageKind::Error => match self.answer(msg) {
                Some(m) => {
                    let _ = frames.send(Frame::Response(m)).await;
                    return true;
                }
                None => return false,
            },
            MessageKind::Notification => Frame::Notification(msg),
            MessageKind::Request => {
                let route = ReplyRoute {
                    upstream: self.upstream.clone(),
                    session: self.session.clone(),
                    id: msg.id.clone().expect("requests have ids"),
                };
                Frame::Request {
                    message: msg,
                    route,
                }
            }
        };
        frames.send(frame).await.is_err()
    }
}

/// What one SSE event's data holds.
#[derive(Debug)]
enum Event {
    /// A JSON-RPC message.
    Message(Message),
    /// No data: a priming event (SEP-1699: an `id` and `retry` to resume from, empty data) or
    /// an empty keep-alive event. Valid, and nothing to relay.
    Empty,
    /// Data that is not a JSON-RPC message.
    Invalid(crate::protocol::jsonrpc::EnvelopeError),
}

fn event_message(data: &[u8]) -> Event {
    if data.iter().all(u8::is_ascii_whitespace) {
        return Event::Empty;
    }
    match Message::parse(data) {
        Ok(m) => Event::Message(m),
        Err(e) => Event::Invalid(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::sse::EventBuffer;

    fn events(stream: &[u8]) -> Vec<Event> {
        let mut parser = SseParser::new(1 << 16);
        let mut buf = EventBuffer::default();
        parser
            .feed_whole(&Bytes::copy_from_slice(stream), &mut buf)
            .unwrap()
            .iter()
            .map(|d| event_message(d))
            .collect()
    }

    #[test]
    fn priming_events_are_valid_and_carry_no_message() {
        // As SDK servers send them: an id and a retry, with an empty data line (or none at
        // all after the field name), before the first message.
        let got = events(
            b"id: 0-abc\nretry: 1000\ndata: \n\nid: 1\ndata:\n\nevent: message\nid: 2\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/x\"}\n\n",
        );
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(matches!(got[0], Event::Empty));
        assert!(matches!(got[1], Event::Empty));
        assert!(matches!(&got[2], Event::Message(m) if m.method() == "notifications/x"));
    }

    #[test]
    fn data_that_is_not_a_message_is_still_invalid() {
        let got = events(b"data: hello\n\n");
        assert!(matches!(got[..], [Event::Invalid(_)]), "{got:?}");
    }
}
