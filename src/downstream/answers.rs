//! Where a client's answer to a server→client request (elicitation, sampling, roots) goes.
//!
//! The id the client sees for such a request is sealed with the session keys and bound to the
//! downstream session: it carries the whole route back (member, upstream, upstream session,
//! the upstream's own request id) and the replica that relayed it. So an answer that lands on
//! any replica sharing `sessions.keys` is delivered, not dropped:
//!
//! - on the replica that relayed the request, through its pending entry (single use);
//! - on another replica, straight to an HTTP upstream: the upstream holds the pending request
//!   in its own session, and answering it is one POST there, exactly what the relaying replica
//!   would send (its open call stream then receives the upstream's final answer as usual);
//! - a stdio upstream is a child process of the relaying replica, which no other replica can
//!   reach: 421 Misdirected Request, saying so.
//!
//! An answer naming no pending request (never issued, for another session, already answered,
//! expired) is 409 Conflict. Never 404, which tells a client its session is gone and that it
//! must start a new one; never 202, which would swallow the answer.

use super::error::HttpError;
use super::session::{PendingReply, Session};
use crate::federation::VirtualServer;
use crate::keyring::Keyring;
use crate::protocol::{Message, ProtocolVersion, RequestId};
use crate::upstream::{ReplyRoute, UpstreamClient, UpstreamSession};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a relayed request stays answerable (as long as a parked 2026-07-28 call waits).
pub const ANSWER_WINDOW: Duration = Duration::from_secs(600);

/// Marks the ids of relayed requests, so that logs and clients can tell them apart.
const PREFIX: &str = "gatehouse.";

/// What a relayed request's id carries (short names keep ids small).
#[derive(Serialize, Deserialize)]
struct Sealed {
    /// The replica that relayed it.
    #[serde(rename = "r")]
    replica: String,
    /// Its pending entry there.
    #[serde(rename = "n")]
    entry: u64,
    /// The member of the virtual server that asked…
    #[serde(rename = "m")]
    member: usize,
    /// …and its upstream's name (a reload may renumber members).
    #[serde(rename = "u")]
    upstream: String,
    /// The upstream session the request came in.
    #[serde(rename = "s")]
    session: Option<String>,
    /// The version negotiated in it.
    #[serde(rename = "v")]
    version: String,
    /// The upstream's id for the request.
    #[serde(rename = "i")]
    id: RequestId,
    /// Relayed at, seconds since the epoch.
    #[serde(rename = "t")]
    at: u64,
}

/// This process's replica id: random, so that replicas need no configuration to tell their
/// relayed requests apart.
fn replica() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        let mut b = [0u8; 8];
        rand::rng().fill_bytes(&mut b);
        crate::hex::encode(&b)
    })
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn context(session_id: &str) -> String {
    format!("answer:{session_id}")
}

/// The id a client sees for a server→client request relayed in session `session_id`, whose
/// pending entry here is `entry`.
pub fn seal(
    sealer: &Keyring,
    session_id: &str,
    entry: u64,
    member: usize,
    route: &ReplyRoute,
) -> RequestId {
    let sealed = Sealed {
        replica: replica().to_owned(),
        entry,
        member,
        upstream: route.upstream.clone(),
        session: route.session.id.clone(),
        version: route.session.version.as_str().to_owned(),
        id: route.id.clone(),
        at: now_secs(),
    };
    RequestId::String(format!(
        "{PREFIX}{}",
        sealer.seal_value(&sealed, &context(session_id))
    ))
}

/// Delivers a client's answer (a JSON-RPC response or error) to the upstream that asked.
pub async fn deliver(
    server: &VirtualServer,
    ctx: &crate::context::CallContext,
    session: &Session,
    message: Message,
) -> Result<(), HttpError> {
    let Some(RequestId::String(id)) = &message.id else {
        return Err(HttpError::NoPendingRequest);
    };
    let sealed: Sealed = id
        .strip_prefix(PREFIX)
        .and_then(|s| session.sealer().open_value(s, &context(&session.id)).ok())
        .ok_or(HttpError::NoPendingRequest)?;
    if now_secs() > sealed.at.saturating_add(ANSWER_WINDOW.as_secs()) {
        return Err(HttpError::NoPendingRequest);
    }
    let member = server
        .members
        .get(sealed.member)
        .filter(|m| m.upstream == sealed.upstream)
        .ok_or(HttpError::NoPendingRequest)?;
    let route = if sealed.replica == replica() {
        let PendingReply { route, .. } = session
            .take_reply(sealed.entry)
            .ok_or(HttpError::NoPendingRequest)?;
        route
    } else if let UpstreamClient::Http(_) = &*member.client {
        tracing::debug!(upstream = %sealed.upstream, "delivering an answer relayed by another replica");
        ReplyRoute {
            upstream: sealed.upstream,
            session: UpstreamSession {
                id: sealed.session,
                version: sealed
                    .version
                    .parse()
                    .unwrap_or(ProtocolVersion::LATEST_SESSION),
                bridge: None,
            },
            id: sealed.id,
        }
    } else {
        tracing::info!(upstream = %sealed.upstream, "an answer reached a replica that does not run the stdio upstream that asked");
        return Err(HttpError::AnswerHeldElsewhere {
            upstream: sealed.upstream,
        });
    };
    member
        .client
        .respond(ctx, &route, message)
        .await
        .map_err(|e| {
            tracing::warn!(upstream = %route.upstream, error = %e, "could not deliver the client's answer");
            HttpError::AnswerNotDelivered {
                upstream: route.upstream.clone(),
                reason: e.to_string(),
            }
        })
}
