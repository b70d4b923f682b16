//! Which wire an HTTP upstream is spoken to on, per client generation: a session-based client
//! gets an upstream session of its own (`initialize` with its capabilities and clientInfo), a
//! 2026-07-28 client the stateless wire. With `protocol: auto` what the upstream offers is
//! learned at the first open of each kind and kept; a wire that is refused later is learned
//! again (see [`Offers`]).

use super::HttpUpstream;
use super::bridge::Bridge;
use crate::config::UpstreamProtocol;
use crate::context::CallContext;
use crate::protocol::jsonrpc::to_raw;
use crate::protocol::{Message, MessageKind, Method, ProtocolVersion};
use crate::upstream::{ClientIdentity, InitInfo, UpstreamError, UpstreamSession};
use std::sync::{Arc, Mutex};

/// The two wires an upstream may offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wire {
    /// 2025-11-25 and older: `initialize`, `Mcp-Session-Id`.
    Sessions,
    /// 2026-07-28: `server/discover`, `_meta` on every request.
    Stateless,
}

/// What an upstream was seen to offer: `None` until tried. A wire the upstream refused is
/// skipped on later opens, which go straight to the other; if that one is refused too, both
/// are forgotten and the next open tries again from the start (an upstream that was
/// redeployed with other generations is learned anew).
#[derive(Debug, Default)]
pub(super) struct Offers(Mutex<[Option<bool>; 2]>);

impl Offers {
    fn slot(wire: Wire) -> usize {
        match wire {
            Wire::Sessions => 0,
            Wire::Stateless => 1,
        }
    }

    fn refused(&self, wire: Wire) -> bool {
        self.0.lock().expect("offers lock")[Self::slot(wire)] == Some(false)
    }

    fn learn(&self, wire: Wire, offered: bool) {
        self.0.lock().expect("offers lock")[Self::slot(wire)] = Some(offered);
    }

    fn forget(&self) {
        *self.0.lock().expect("offers lock") = [None, None];
    }

    /// What is known: `(sessions, stateless)`.
    #[cfg(test)]
    pub(super) fn known(&self) -> (Option<bool>, Option<bool>) {
        let o = self.0.lock().expect("offers lock");
        (o[0], o[1])
    }

    /// The wires to try for a client of this generation, best first.
    fn order(&self, stateless_client: bool) -> [Wire; 2] {
        let (best, other) = if stateless_client {
            (Wire::Stateless, Wire::Sessions)
        } else {
            (Wire::Sessions, Wire::Stateless)
        };
        if self.refused(best) && !self.refused(other) {
            [other, best]
        } else {
            [best, other]
        }
    }
}

/// Whether a failed handshake says the upstream does not speak that wire (as opposed to being
/// down, slow, or refusing our credential, which teach nothing about generations).
fn not_offered(e: &UpstreamError) -> bool {
    match e {
        UpstreamError::Status { status, .. } | UpstreamError::Rejected { status, .. } => {
            (400..500).contains(status) && !matches!(status, 401 | 403 | 407 | 408 | 429)
        }
        UpstreamError::Protocol { .. } | UpstreamError::SessionExpired { .. } => true,
        // Every variant named: a new kind of failure must be sorted here, not fall through.
        UpstreamError::Unavailable { .. }
        | UpstreamError::Crashed { .. }
        | UpstreamError::Timeout { .. }
        | UpstreamError::Credentials { .. }
        | UpstreamError::ConsentRequired { .. } => false,
    }
}

impl HttpUpstream {
    pub(super) async fn handshake(
        &self,
        ctx: &CallContext,
        who: &ClientIdentity,
    ) -> Result<(UpstreamSession, Arc<InitInfo>), UpstreamError> {
        match self.protocol {
            UpstreamProtocol::Sessions => return self.initialize(ctx, who).await,
            UpstreamProtocol::Stateless => return self.discover(ctx, who).await,
            UpstreamProtocol::Auto => {}
        }
        let mut refusal = None;
        for wire in self.offers.order(who.version.is_stateless()) {
            let tried = match wire {
                Wire::Sessions => self.initialize(ctx, who).await,
                Wire::Stateless => self.discover(ctx, who).await,
            };
            match tried {
                Ok(found) => {
                    self.offers.learn(wire, true);
                    return Ok(found);
                }
                Err(e) if not_offered(&e) => {
                    tracing::debug!(upstream = %self.name, ?wire, error = %e, "the upstream does not offer this wire");
                    self.offers.learn(wire, false);
                    refusal = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        self.offers.forget();
        Err(refusal.expect("two wires were tried"))
    }

    /// The stateless wire. For a session-based client it is bridged: the session carries what
    /// the client declared, sent in `_meta` on each request.
    async fn discover(
        &self,
        ctx: &CallContext,
        who: &ClientIdentity,
    ) -> Result<(UpstreamSession, Arc<InitInfo>), UpstreamError> {
        let mut session = UpstreamSession::new(None, ProtocolVersion::V2026_07_28);
        if !who.version.is_stateless() {
            session.bridge = Some(Arc::new(Bridge::new(who)));
        }
        let msg = Message::request(
            self.next_id(),
            Method::ServerDiscover.as_str(),
            Some(to_raw(&serde_json::json!({}))),
        );
        let answer = self.roundtrip(ctx, &session, &msg).await?;
        let result = answer.result.ok_or_else(|| {
            self.protocol_error(format!(
                "server/discover was refused: {}",
                answer.error.as_ref().map(|e| e.get()).unwrap_or("")
            ))
        })?;
        let info = InitInfo::from_result(result, ProtocolVersion::V2026_07_28)
            .map_err(|e| self.protocol_error(e))?;
        Ok((session, Arc::new(info)))
    }

    async fn initialize(
        &self,
        ctx: &CallContext,
        who: &ClientIdentity,
    ) -> Result<(UpstreamSession, Arc<InitInfo>), UpstreamError> {
        let version = if who.version.is_stateless() {
            ProtocolVersion::LATEST_SESSION
        } else {
            who.version
        };
        let params = serde_json::json!({
            "protocolVersion": version.as_str(),
            "capabilities": who.capabilities,
            "clientInfo": who.client_info,
        });
        let msg = Message::request(
            self.next_id(),
            Method::Initialize.as_str(),
            Some(to_raw(&params)),
        );
        let pre = UpstreamSession::new(None, version);
        let resp = self.post(ctx, &pre, &msg, false).await?;
        let sid = resp
            .headers()
            .get(super::SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let answer = self.final_message(resp, &msg).await?;
        if answer.kind == MessageKind::Error {
            return Err(self.protocol_error(format!(
                "initialize was refused: {}",
                answer.error.as_ref().map(|e| e.get()).unwrap_or("")
            )));
        }
        let result = answer
            .result
            .ok_or_else(|| self.protocol_error("initialize returned no result"))?;
        let info = InitInfo::from_result(result, version).map_err(|e| self.protocol_error(e))?;
        if info.version.is_stateless() {
            return Err(self.protocol_error("initialize negotiated a stateless version"));
        }
        let session = UpstreamSession::new(sid, info.version);
        self.notify(
            ctx,
            &session,
            Message::notification(Method::NotificationsInitialized.as_str(), None),
        )
        .await?;
        Ok((session, Arc::new(info)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16) -> UpstreamError {
        UpstreamError::Status {
            upstream: "u".into(),
            status,
        }
    }

    #[test]
    fn each_generation_tries_its_own_wire_first() {
        let o = Offers::default();
        assert_eq!(o.order(false), [Wire::Sessions, Wire::Stateless]);
        assert_eq!(o.order(true), [Wire::Stateless, Wire::Sessions]);
        o.learn(Wire::Sessions, true);
        o.learn(Wire::Stateless, true);
        assert_eq!(o.order(false), [Wire::Sessions, Wire::Stateless]);
        assert_eq!(o.order(true), [Wire::Stateless, Wire::Sessions]);
    }

    #[test]
    fn a_refused_wire_is_skipped_until_the_other_is_refused_too() {
        let o = Offers::default();
        o.learn(Wire::Sessions, false);
        o.learn(Wire::Stateless, true);
        assert_eq!(o.order(false), [Wire::Stateless, Wire::Sessions]);
        o.learn(Wire::Stateless, false);
        // Both refused: nothing to prefer, each client's own generation first again.
        assert_eq!(o.order(false), [Wire::Sessions, Wire::Stateless]);
        o.forget();
        assert_eq!(o.known(), (None, None));
    }

    #[test]
    fn only_protocol_refusals_teach_what_is_offered() {
        assert!(not_offered(&status(400)));
        assert!(not_offered(&status(404)));
        assert!(not_offered(&status(405)));
        for s in [401, 403, 429, 500, 502, 503] {
            assert!(!not_offered(&status(s)), "{s}");
        }
        assert!(!not_offered(&UpstreamError::Unavailable {
            upstream: "u".into(),
            reason: "connection refused".into()
        }));
        assert!(!not_offered(&UpstreamError::Timeout {
            upstream: "u".into(),
            after: std::time::Duration::from_secs(1)
        }));
    }
}
