//! What a test scripts a [`ScriptedUpstream`](super::ScriptedUpstream) to do ([`Reply`], a
//! list of [`Step`]s) and what it records of the gateway's doing ([`Seen`]).

use crate::protocol::RequestId;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// Computes a result from the answers the call received to its questions, in order.
pub type FromAnswers = Arc<dyn Fn(&[Value]) -> Value + Send + Sync>;

/// One thing the upstream does while serving a call.
#[derive(Clone)]
pub enum Step {
    /// Sends a notification related to the call.
    Notify(String, Value),
    /// Asks the client something (`sampling/createMessage`, `elicitation/create`…) and waits
    /// for the answer.
    Ask(String, Value),
    /// Waits this long.
    Sleep(Duration),
    /// Never answers (until the call is cancelled or abandoned).
    Hang,
    /// Ends the call with this result.
    Result(Value),
    /// Ends the call with a JSON-RPC error.
    Error(i64, String),
    /// Ends the call with a result made from the answers received.
    ResultFrom(FromAnswers),
}

/// What the upstream does for one request: its steps in order. Without a final step the call
/// ends as if the connection closed.
#[derive(Clone, Default)]
pub struct Reply(pub Vec<Step>);

impl Reply {
    /// Answers at once with `result`.
    pub fn result(result: Value) -> Reply {
        Reply(vec![Step::Result(result)])
    }

    /// Answers at once with a JSON-RPC error.
    pub fn error(code: i64, message: &str) -> Reply {
        Reply(vec![Step::Error(code, message.to_owned())])
    }

    /// A tool result of one text item.
    pub fn text(text: &str) -> Reply {
        Reply::result(json!({ "content": [{ "type": "text", "text": text }] }))
    }

    /// No steps yet (add them with the builder methods).
    pub fn steps() -> Reply {
        Reply::default()
    }

    /// Then sends a notification.
    pub fn notify(mut self, method: &str, params: Value) -> Reply {
        self.0.push(Step::Notify(method.to_owned(), params));
        self
    }

    /// Then asks the client and waits for its answer.
    pub fn ask(mut self, method: &str, params: Value) -> Reply {
        self.0.push(Step::Ask(method.to_owned(), params));
        self
    }

    /// Then waits.
    pub fn sleep(mut self, d: Duration) -> Reply {
        self.0.push(Step::Sleep(d));
        self
    }

    /// Then never answers.
    pub fn hang(mut self) -> Reply {
        self.0.push(Step::Hang);
        self
    }

    /// Then ends with `result`.
    pub fn then_result(mut self, result: Value) -> Reply {
        self.0.push(Step::Result(result));
        self
    }

    /// Then ends with a result made from the answers the call received.
    pub fn then_result_from(
        mut self,
        f: impl Fn(&[Value]) -> Value + Send + Sync + 'static,
    ) -> Reply {
        self.0.push(Step::ResultFrom(Arc::new(f)));
        self
    }
}

/// Something the gateway did to the upstream, in the order it happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    /// A session was opened (`initialize` or `server/discover`, with its params).
    Opened {
        /// `initialize` or `server/discover`.
        method: String,
        /// What the gateway declared.
        params: Value,
        /// The session id handed out (`None` on the stateless wire).
        session: Option<String>,
    },
    /// A request, under the upstream id the gateway gave it.
    Request {
        /// The gateway's id for it upstream.
        id: RequestId,
        /// Its method.
        method: String,
        /// Its params, as the wire would carry them.
        params: Value,
        /// The session it was sent in.
        session: Option<String>,
    },
    /// A notification other than a cancellation.
    Notification {
        /// Its method.
        method: String,
        /// Its params (`null` without).
        params: Value,
    },
    /// The client's answer to one of the upstream's questions.
    Answer {
        /// The question's id.
        id: RequestId,
        /// The whole answer message.
        message: Value,
    },
    /// `notifications/cancelled` for request `id`.
    Cancelled {
        /// The upstream id of the cancelled request.
        id: RequestId,
        /// The reason given.
        reason: Option<String>,
    },
    /// A call stopped before its final step: it was cancelled, or the gateway dropped its
    /// frames (the client went away).
    Stopped {
        /// The upstream id of the call.
        id: RequestId,
    },
    /// A per-client session was closed.
    Closed {
        /// Its id.
        session: Option<String>,
    },
}
