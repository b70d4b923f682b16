//! Resumable GET streams (2025-11-25): every event of a session's GET stream carries an id, the
//! last events are kept (bounded by `limits.replay_events_per_stream` and
//! `limits.replay_bytes_per_stream`), and a GET with `Last-Event-ID` gets those after it again.
//!
//! Ids are `<stream key>-<sequence>`: the key is 128 random bits drawn per session, so an id
//! reveals nothing and cannot name another session's events (the buffer lives in the session,
//! and an id whose key is not this session's replays nothing).

use crate::protocol::sse::encode_event;
use bytes::{BufMut, Bytes, BytesMut};
use rand::RngCore;
use std::collections::VecDeque;

/// How much of a stream is kept for replay.
#[derive(Debug, Clone, Copy)]
pub struct ReplayLimits {
    /// Most events kept.
    pub max_events: usize,
    /// Most bytes (encoded events) kept.
    pub max_bytes: usize,
}

impl ReplayLimits {
    /// The replay limits of the configuration.
    pub fn of(limits: &crate::config::Limits) -> Self {
        ReplayLimits {
            max_events: limits.replay_events_per_stream,
            max_bytes: limits.replay_bytes_per_stream,
        }
    }
}

/// The recent events of one session's GET stream.
pub struct Replay {
    key: String,
    next: u64,
    kept: VecDeque<(u64, Bytes)>,
    bytes: usize,
}

impl Default for Replay {
    fn default() -> Self {
        let mut raw = [0u8; 16];
        rand::rng().fill_bytes(&mut raw);
        Replay {
            key: crate::hex::encode(&raw),
            next: 1,
            kept: VecDeque::new(),
            bytes: 0,
        }
    }
}

/// How long a client waits before reconnecting a stream that broke (the `retry` field).
const RETRY_MS: u32 = 1000;

impl Replay {
    fn id(&self, seq: u64) -> String {
        format!("{}-{seq}", self.key)
    }

    /// Encodes a message as the stream's next event, keeping it for replay.
    pub fn stamp(&mut self, data: &[u8], limits: ReplayLimits) -> Bytes {
        let seq = self.next;
        self.next += 1;
        let event = encode_event(data, Some(&self.id(seq)));
        self.kept.push_back((seq, event.clone()));
        self.bytes += event.len();
        while self.kept.len() > limits.max_events || self.bytes > limits.max_bytes {
            match self.kept.pop_front() {
                Some((_, e)) => self.bytes -= e.len(),
                None => break,
            }
        }
        event
    }

    /// The priming event (SEP-1699) a stream starts with: the id to resume from and the
    /// reconnection delay, with empty data.
    pub fn priming(&self) -> Bytes {
        let mut out = BytesMut::new();
        out.put_slice(
            format!(
                "id: {}\nretry: {RETRY_MS}\ndata: \n\n",
                self.id(self.next - 1)
            )
            .as_bytes(),
        );
        out.freeze()
    }

    /// The kept events after `last_event_id`, if it names an event of this stream.
    pub fn after(&self, last_event_id: &str) -> Option<Vec<Bytes>> {
        let (key, seq) = last_event_id.rsplit_once('-')?;
        if key != self.key {
            return None;
        }
        let seq: u64 = seq.parse().ok()?;
        if seq >= self.next {
            return None;
        }
        Some(
            self.kept
                .iter()
                .filter(|(s, _)| *s > seq)
                .map(|(_, e)| e.clone())
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ReplayLimits = ReplayLimits {
        max_events: 3,
        max_bytes: 1 << 20,
    };

    fn id_of(event: &Bytes) -> String {
        let text = std::str::from_utf8(event).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("id: "))
            .unwrap()
            .to_owned()
    }

    #[test]
    fn replays_the_events_after_the_last_one_seen() {
        let mut r = Replay::default();
        let first = r.stamp(b"{\"n\":1}", LIMITS);
        let second = r.stamp(b"{\"n\":2}", LIMITS);
        let third = r.stamp(b"{\"n\":3}", LIMITS);
        assert_eq!(r.after(&id_of(&first)).unwrap(), [second, third.clone()]);
        assert_eq!(r.after(&id_of(&third)).unwrap(), Vec::<Bytes>::new());
        // The priming event names the last event, so a reconnect right after it replays nothing.
        assert_eq!(id_of(&r.priming()), id_of(&third));
    }

    #[test]
    fn keeps_at_most_the_caps() {
        let mut r = Replay::default();
        let first = r.stamp(b"1", LIMITS);
        for n in 2..=5 {
            r.stamp(n.to_string().as_bytes(), LIMITS);
        }
        assert_eq!(r.after(&id_of(&first)).unwrap().len(), 3);
        // Room for one event and a half: the byte cap, not the count, keeps it to one.
        let mut small = Replay::default();
        let one = small.stamp(&[b'x'; 40], LIMITS).len();
        let bytes = ReplayLimits {
            max_events: 100,
            max_bytes: one * 3 / 2,
        };
        for _ in 0..10 {
            small.stamp(&[b'x'; 40], bytes);
        }
        assert!(
            small.bytes <= one * 3 / 2 && small.kept.len() == 1,
            "{} bytes in {} events",
            small.bytes,
            small.kept.len()
        );
    }

    #[test]
    fn ids_of_another_stream_replay_nothing() {
        let mut a = Replay::default();
        let mut b = Replay::default();
        let ea = a.stamp(b"a", LIMITS);
        b.stamp(b"b", LIMITS);
        assert!(b.after(&id_of(&ea)).is_none());
        assert!(b.after("garbage").is_none());
        assert!(b.after(&format!("{}-99", b.key)).is_none());
        // 128 random bits per stream: ids do not repeat across streams.
        assert_ne!(a.key, b.key);
        assert_eq!(a.key.len(), 32);
    }
}
