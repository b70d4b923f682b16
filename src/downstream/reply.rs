//! How the call pipeline answers when it does not relay an upstream's stream: a [`Refusal`]
//! (scope, routing, catalog, policy, a transport rule) or an answer the gateway makes itself
//! (a merged listing, `ping`). This is the one place where such an answer is turned into the
//! response for the client's protocol generation, recorded on the audit ticket and counted in
//! the metrics; relayed answers are recorded by the relay (`relay.rs`).

use super::error::{HttpError, for_stateless_client, rpc_error};
use crate::audit::{Outcome, Ticket};
use crate::federation::FederationError;
use crate::protocol::{Message, RequestId};
use crate::telemetry::metrics::METRICS;
use crate::web::json::json;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use std::sync::Arc;

/// Why a request stops before its upstream, with what the audit trail and the metrics must
/// say about it.
#[derive(Debug)]
pub struct Refusal {
    /// Boxed: refusals are the rare path, and results carrying them stay small.
    answer: Box<Answer>,
    /// The audit decision (`deny`, `insufficient_scope`, …) and what decided it.
    decision: Option<(&'static str, String)>,
    counted: Option<Counted>,
}

#[derive(Debug)]
enum Answer {
    /// An HTTP-level refusal (403 `insufficient_scope`, a transport rule): the same for both
    /// generations.
    Http(HttpError),
    /// A JSON-RPC error about the request: as it is to a session-based client, with the codes
    /// and HTTP status of 2026-07-28 to a stateless one. `relayed` is the status an upstream
    /// sent its own error with.
    Rpc {
        message: Message,
        relayed: Option<u16>,
    },
    /// A message sent as it is, with this status, whatever the client's generation.
    Exact(StatusCode, Message),
}

/// Which refusal metric a refusal counts in.
#[derive(Debug)]
enum Counted {
    /// `policy_denials`, by rule; audited as refused.
    Policy(Arc<str>),
    /// `auth_failures` with reason `insufficient_scope`.
    Scope,
}

impl From<HttpError> for Refusal {
    fn from(e: HttpError) -> Refusal {
        Refusal {
            answer: Box::new(Answer::Http(e)),
            decision: None,
            counted: None,
        }
    }
}

impl Refusal {
    /// A JSON-RPC error, in the client's revision.
    pub fn rpc(message: Message) -> Refusal {
        Refusal {
            answer: Box::new(Answer::Rpc {
                message,
                relayed: None,
            }),
            decision: None,
            counted: None,
        }
    }

    /// The error answering a routing or upstream failure `e` of request `id`.
    pub fn federation(id: Option<RequestId>, e: &FederationError) -> Refusal {
        let relayed = match e {
            FederationError::Upstream(u) => u.relayed_status(),
            _ => None,
        };
        Refusal {
            answer: Box::new(Answer::Rpc {
                message: rpc_error(id, e),
                relayed,
            }),
            decision: None,
            counted: None,
        }
    }

    /// `message` as it is, with `status`, to either generation.
    pub fn exact(status: StatusCode, message: Message) -> Refusal {
        Refusal {
            answer: Box::new(Answer::Exact(status, message)),
            decision: None,
            counted: None,
        }
    }

    /// A refusal by a policy rule: counted in `policy_denials` and audited as refused.
    pub fn by_policy(message: Message, rule: Arc<str>) -> Refusal {
        Refusal {
            decision: Some(("deny", rule.to_string())),
            counted: Some(Counted::Policy(rule)),
            ..Refusal::rpc(message)
        }
    }

    /// A step-up refusal (403 `insufficient_scope`); `rule` is what required the scopes.
    pub fn by_scope(e: HttpError, rule: String) -> Refusal {
        Refusal {
            answer: Box::new(Answer::Http(e)),
            decision: Some(("insufficient_scope", rule)),
            counted: Some(Counted::Scope),
        }
    }

    /// A refusal by a quota (429, or 503 while its store is unavailable); `rule` names it.
    pub fn by_quota(e: HttpError, rule: String) -> Refusal {
        Refusal {
            answer: Box::new(Answer::Http(e)),
            decision: Some(("quota", rule)),
            counted: None,
        }
    }

    /// A request an interceptor denied, or that failed closed; `message` says so.
    pub fn by_interceptor(message: Message, e: &crate::intercept::InterceptError) -> Refusal {
        Refusal {
            decision: Some(("deny", format!("interceptor:{}", e.hook()))),
            ..Refusal::exact(StatusCode::OK, message)
        }
    }

    /// The same refusal, recorded as decided by `rule` (`deny`).
    pub fn denied_by(mut self, rule: &str) -> Refusal {
        self.decision = Some(("deny", rule.to_owned()));
        self
    }

    /// Answers request `id` of a stateless client or not, records the refusal on `ticket`
    /// and counts it.
    pub fn answer(
        self,
        server: &str,
        id: Option<RequestId>,
        stateless: bool,
        ticket: Option<&Ticket>,
    ) -> Response {
        match &self.counted {
            Some(Counted::Policy(rule)) => METRICS.policy_denial(server, rule),
            Some(Counted::Scope) => METRICS.auth_failure(server, "insufficient_scope"),
            None => {}
        }
        if let (Some(t), Some((decision, rule))) = (ticket, &self.decision) {
            t.decision(decision, Some(rule));
        }
        let refused = matches!(self.counted, Some(Counted::Policy(_)));
        match *self.answer {
            Answer::Http(e) => {
                let e = e.with_id(id);
                if let Some(t) = ticket {
                    t.complete(Outcome::Refused(i64::from(e.status().as_u16())));
                }
                e.into_response()
            }
            Answer::Rpc { message, relayed } => {
                let (status, message) = if stateless {
                    for_stateless_client(message, relayed)
                } else {
                    (StatusCode::OK, message)
                };
                send(ticket, status, message, refused)
            }
            Answer::Exact(status, message) => send(ticket, status, message, refused),
        }
    }
}

/// Answers with `msg` (a result or an error the gateway made) as JSON with 200, and records it.
pub fn answered(ticket: Option<&Ticket>, msg: Message) -> Response {
    send(ticket, StatusCode::OK, msg, false)
}

/// Records that a request was answered by opening a stream the gateway feeds itself (a
/// `subscriptions/listen` stream), or by a response built where the transport is decided
/// (`initialize`, whose answer carries the session header).
pub fn opened(ticket: Option<&Ticket>) {
    if let Some(t) = ticket {
        t.complete(Outcome::Ok);
    }
}

fn send(ticket: Option<&Ticket>, status: StatusCode, msg: Message, refused: bool) -> Response {
    let bytes = msg.to_bytes();
    if let Some(t) = ticket {
        t.sent(bytes.len());
        t.complete(match msg.error_code() {
            Some(code) if refused => Outcome::Refused(code),
            _ => Outcome::of_message(&msg),
        });
    }
    json(status, bytes)
}
