//! The session's standalone stream before the client's GET attaches.
//!
//! Servers may send requests (sampling, elicitation, roots) and notifications on the GET stream
//! of a session. A client typically sends `notifications/initialized`, POSTs its first call and
//! opens its GET at about the same time; if the gateway opened the upstream stream only when
//! the GET arrived, a request the upstream sent meanwhile would go nowhere and the call would
//! hang. So when a session starts, the gateway opens each upstream's stream at once (and, for
//! members whose upstream session opens later, when it opens) and holds what arrives, bounded
//! by count and age, until the client's GET takes it over. If no GET comes within the hold
//! time the upstream streams are closed (the upstream then knows the client has none, as
//! without the gateway), and every held request is answered upstream with an error instead of
//! being left to time out.

use super::session::Session;
use crate::context::CallContext;
use crate::federation::VirtualServer;
use crate::protocol::{ErrorCode, Message};
use crate::telemetry::metrics::METRICS;
use crate::upstream::{Frame, UpstreamSession};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How much a hold may keep: `limits.standalone_hold_messages` and `limits.standalone_hold_time`.
#[derive(Debug, Clone, Copy)]
pub struct HoldLimits {
    /// Most messages held per session; more are dropped.
    pub max_messages: usize,
    /// How long the upstream streams stay open waiting for the client's GET, and the longest
    /// a message is held.
    pub max_age: Duration,
}

impl HoldLimits {
    /// The hold limits of the configuration.
    pub fn of(limits: &crate::config::Limits) -> Self {
        HoldLimits {
            max_messages: limits.standalone_hold_messages,
            max_age: limits.standalone_hold_time.0,
        }
    }
}

struct Held {
    at: Instant,
    member: usize,
    frame: Frame,
}

type Pump = JoinHandle<Option<mpsc::Receiver<Frame>>>;

#[derive(Default)]
struct State {
    buffer: VecDeque<Held>,
    pumps: HashMap<usize, Pump>,
    /// Whether the overflow was logged already (once per session is enough).
    overflow_logged: bool,
}

/// What the client's GET takes over: the held messages (oldest first) and the open upstream
/// streams, by member index.
pub struct Released {
    /// Messages that arrived before the GET, in order.
    pub held: Vec<(usize, Frame)>,
    /// Upstream streams still open, by member index.
    pub streams: HashMap<usize, mpsc::Receiver<Frame>>,
}

/// The upstream standalone streams of one session, opened before the client's GET.
pub struct Hold {
    server: Arc<VirtualServer>,
    /// The context of the request that started the session (`notifications/initialized`):
    /// the streams are opened, and held requests refused, as made for its user.
    ctx: CallContext,
    limits: HoldLimits,
    started: Instant,
    /// Ends the pumps (which hand their streams back) and the expiry task.
    stop: CancellationToken,
    state: Mutex<State>,
}

impl Hold {
    /// A hold for `server`'s members; its expiry task ends it after the hold time.
    pub fn new(
        server: Arc<VirtualServer>,
        limits: HoldLimits,
        session: &Arc<Session>,
        ctx: CallContext,
    ) -> Arc<Hold> {
        let hold = Arc::new(Hold {
            server,
            ctx,
            limits,
            started: Instant::now(),
            stop: CancellationToken::new(),
            state: Mutex::new(State::default()),
        });
        let tick = (limits.max_age / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let h = hold.clone();
        let session = Arc::downgrade(session);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = h.stop.cancelled() => return,
                    _ = tokio::time::sleep(tick) => {}
                }
                if h.started.elapsed() >= h.limits.max_age {
                    // No GET came: the upstream streams close, as the client holds none.
                    if let Some(s) = session.upgrade() {
                        s.end_hold(&h);
                    }
                    h.end("no GET stream within limits.standalone_hold_time");
                    return;
                }
                h.prune();
            }
        });
        hold
    }

    /// The index of the member named `upstream`.
    pub fn member_index(&self, upstream: &str) -> Option<usize> {
        self.server
            .members
            .iter()
            .position(|m| m.upstream == upstream)
    }

    /// Whether the hold has ended (released to a GET, expired, or the session ended).
    pub fn is_over(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Opens member `i`'s stream on `upstream` and holds what it sends; resolves once the
    /// stream is open (or failed to open), so that a call sent next cannot race it.
    pub fn start(self: &Arc<Self>, i: usize, upstream: UpstreamSession) -> oneshot::Receiver<()> {
        let (opened, wait) = oneshot::channel();
        let mut st = self.state.lock().expect("lock");
        if self.stop.is_cancelled() || st.pumps.contains_key(&i) {
            return wait;
        }
        let hold = self.clone();
        let pump = tokio::spawn(async move {
            let member = &hold.server.members[i];
            let listened = member.client.listen(&hold.ctx, &upstream).await;
            let _ = opened.send(());
            let mut frames = match listened {
                Ok(Some(frames)) => frames,
                Ok(None) => return None,
                Err(e) => {
                    tracing::debug!(upstream = %member.upstream, error = %e, "no standalone stream from this upstream at session start");
                    return None;
                }
            };
            loop {
                tokio::select! {
                    biased;
                    _ = hold.stop.cancelled() => return Some(frames),
                    f = frames.recv() => match f {
                        Some(f) => hold.push(i, f),
                        None => return None,
                    },
                }
            }
        });
        st.pumps.insert(i, pump);
        wait
    }

    fn push(&self, member: usize, frame: Frame) {
        self.prune();
        let mut st = self.state.lock().expect("lock");
        if st.buffer.len() >= self.limits.max_messages {
            if !std::mem::replace(&mut st.overflow_logged, true) {
                tracing::warn!(
                    server = %self.server.name,
                    max = self.limits.max_messages,
                    "messages on a session's standalone stream before its GET arrived exceed limits.standalone_hold_messages; dropping"
                );
            }
            drop(st);
            self.drop_held(member, frame, "overflow");
            return;
        }
        st.buffer.push_back(Held {
            at: Instant::now(),
            member,
            frame,
        });
    }

    /// Drops messages held longer than the hold time.
    fn prune(&self) {
        let aged: Vec<Held> = {
            let mut st = self.state.lock().expect("lock");
            let mut aged = Vec::new();
            while st
                .buffer
                .front()
                .is_some_and(|h| h.at.elapsed() >= self.limits.max_age)
            {
                aged.extend(st.buffer.pop_front());
            }
            aged
        };
        for h in aged {
            self.drop_held(h.member, h.frame, "expired");
        }
    }

    /// Counts a message that cannot be delivered; a request is answered upstream with an
    /// error, so that the call waiting for it goes on instead of timing out.
    fn drop_held(&self, member: usize, frame: Frame, reason: &'static str) {
        METRICS.standalone_dropped(&self.server.members[member].upstream, reason);
        let Frame::Request { message, route } = frame else {
            tracing::debug!(reason, "dropped a held standalone-stream message");
            return;
        };
        let method = message.method().to_owned();
        tracing::info!(upstream = %route.upstream, %method, reason, "a server request on the standalone stream could not reach the client; answering it with an error");
        let answer = Message::error_response(
            None,
            ErrorCode::INTERNAL_ERROR,
            &format!(
                "the gateway could not deliver {method}: the client had no GET stream open ({reason})"
            ),
            None,
        );
        let client = self.server.members[member].client.clone();
        let ctx = self.ctx.clone();
        tokio::spawn(async move {
            if let Err(e) = client.respond(&ctx, &route, answer).await {
                tracing::debug!(error = %e, "could not refuse a held server request");
            }
        });
    }

    /// Hands the streams and the held messages to the client's GET.
    pub async fn release(&self) -> Released {
        self.stop.cancel();
        let pumps = std::mem::take(&mut self.state.lock().expect("lock").pumps);
        let mut streams = HashMap::new();
        for (i, pump) in pumps {
            if let Ok(Some(frames)) = pump.await {
                streams.insert(i, frames);
            }
        }
        // The pumps are done: nothing is pushed any more.
        self.prune();
        let held = std::mem::take(&mut self.state.lock().expect("lock").buffer)
            .into_iter()
            .map(|h| (h.member, h.frame))
            .collect();
        Released { held, streams }
    }

    /// Ends the hold without a GET: streams close, held requests are refused.
    pub fn end(&self, reason: &'static str) {
        self.stop.cancel();
        // Each pump hands its stream back into its dropped handle: the stream closes.
        drop(std::mem::take(&mut self.state.lock().expect("lock").pumps));
        let held = std::mem::take(&mut self.state.lock().expect("lock").buffer);
        if !held.is_empty() {
            tracing::debug!(count = held.len(), reason, "standalone hold ended");
        }
        for h in held {
            self.drop_held(h.member, h.frame, "expired");
        }
    }

    /// How many messages are held now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.state.lock().expect("lock").buffer.len()
    }
}
