//! Failures talking to an upstream MCP server.

use std::time::Duration;

/// Why an upstream could not serve a request. Messages name the upstream and never carry
/// header values or other secrets.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// Could not connect, or the process could not be started.
    #[error("upstream {upstream:?} is unavailable: {reason}")]
    Unavailable {
        /// The upstream's name.
        upstream: String,
        /// What went wrong.
        reason: String,
    },
    /// The connection or process ended before the answer arrived.
    #[error("upstream {upstream:?} failed before answering: {reason}")]
    Crashed {
        /// The upstream's name.
        upstream: String,
        /// What went wrong.
        reason: String,
    },
    /// No answer within the configured time.
    #[error("upstream {upstream:?} did not answer within {}ms", after.as_millis())]
    Timeout {
        /// The upstream's name.
        upstream: String,
        /// The limit that was exceeded.
        after: Duration,
    },
    /// The upstream answered with an HTTP error status.
    #[error("upstream {upstream:?} answered HTTP {status}")]
    Status {
        /// The upstream's name.
        upstream: String,
        /// The status code.
        status: u16,
    },
    /// The upstream sent something that is not valid MCP.
    #[error("upstream {upstream:?} violated the protocol: {reason}")]
    Protocol {
        /// The upstream's name.
        upstream: String,
        /// What was wrong.
        reason: String,
    },
    /// The gateway could not obtain the credential this upstream needs.
    #[error("upstream {upstream:?}: cannot obtain its credential: {reason}")]
    Credentials {
        /// The upstream's name.
        upstream: String,
        /// Why (never a token or secret).
        reason: String,
    },
    /// The user must connect their account at this upstream first (URL-mode elicitation).
    #[error(
        "upstream {upstream:?} needs your consent: open {url} to connect your account, then retry"
    )]
    ConsentRequired {
        /// The upstream's name.
        upstream: String,
        /// The consent page.
        url: String,
        /// The elicitation id.
        elicitation_id: String,
    },
    /// The upstream refused the request with a JSON-RPC error on an HTTP error status (how
    /// 2026-07-28 carries protocol errors such as -32020, -32021, -32022, -32601, -32602).
    /// The error is the upstream's answer, relayed as it is: its message is the whole text.
    #[error("{message}")]
    Rejected {
        /// The upstream's name.
        upstream: String,
        /// The HTTP status it answered with (4xx or 5xx).
        status: u16,
        /// Its JSON-RPC error code.
        code: i64,
        /// Its JSON-RPC error message.
        message: String,
        /// Its JSON-RPC error `data`, if any.
        data: Option<serde_json::Value>,
    },
    /// The upstream no longer knows our session (HTTP 404); the caller may re-open it.
    #[error("upstream {upstream:?} ended our session")]
    SessionExpired {
        /// The upstream's name.
        upstream: String,
    },
}

impl UpstreamError {
    /// Whether this is a timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(self, UpstreamError::Timeout { .. })
    }

    /// The `data` of the JSON-RPC error: the elicitation a consent needs (2025-11-25
    /// `URLElicitationRequiredError`).
    pub fn data(&self) -> Option<serde_json::Value> {
        match self {
            UpstreamError::ConsentRequired {
                upstream,
                url,
                elicitation_id,
            } => Some(serde_json::json!({ "elicitations": [{
                "mode": "url",
                "elicitationId": elicitation_id,
                "url": url,
                "message": format!("Connect your account for {upstream} to continue."),
            }]})),
            UpstreamError::Rejected { data, .. } => data.clone(),
            _ => None,
        }
    }

    /// For an error the upstream itself answered (relayed as it is), the HTTP status it came
    /// with: a 2026-07-28 client should see the same one.
    pub fn relayed_status(&self) -> Option<u16> {
        match self {
            UpstreamError::Rejected { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The JSON-RPC error code that reports this failure to a client.
    pub fn code(&self) -> crate::protocol::ErrorCode {
        use crate::protocol::ErrorCode;
        match self {
            UpstreamError::Timeout { .. } => ErrorCode::REQUEST_TIMEOUT,
            UpstreamError::Credentials { .. } => ErrorCode::UPSTREAM_CREDENTIALS,
            UpstreamError::ConsentRequired { .. } => ErrorCode::URL_ELICITATION_REQUIRED,
            UpstreamError::Rejected { code, .. } => ErrorCode(*code),
            _ => ErrorCode::UPSTREAM_UNAVAILABLE,
        }
    }
}
