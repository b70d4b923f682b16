//! Server-Sent Events: an incremental parser for upstream streams and the encoder used downstream.

use bytes::{BufMut, Bytes, BytesMut};

/// One dispatched SSE event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `id:` field, if any.
    pub id: Option<String>,
    /// The `event:` field (empty means "message").
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// An upstream event larger than the configured limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an SSE event exceeded {limit} bytes")]
pub struct EventTooLarge {
    /// The limit that was exceeded.
    pub limit: usize,
}

/// Incremental SSE parser: feed it chunks as they arrive, take events as they complete.
#[derive(Debug)]
pub struct SseParser {
    buf: BytesMut,
    current: SseEvent,
    has_data: bool,
    max_event: usize,
    pending_bytes: usize,
    /// How much of `buf` is known to hold no line end, so a long line arriving in many chunks
    /// is scanned once, not once per chunk.
    scanned: usize,
}

impl SseParser {
    /// A parser that refuses events larger than `max_event` bytes.
    pub fn new(max_event: usize) -> Self {
        SseParser {
            buf: BytesMut::new(),
            current: SseEvent::default(),
            has_data: false,
            max_event,
            pending_bytes: 0,
            scanned: 0,
        }
    }

    /// Adds bytes and returns the events they complete.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, EventTooLarge> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(found) = self.buf[self.scanned..]
            .iter()
            .position(|&b| b == b'\n' || b == b'\r')
        {
            let pos = self.scanned + found;
            if self.buf[pos] == b'\r' && pos + 1 == self.buf.len() {
                // A "\r" at the end may be the first half of "\r\n": wait for the next byte.
                self.scanned = pos;
                return self.check_size(out);
            }
            self.scanned = 0;
            let line = self.buf.split_to(pos);
            // Swallow the terminator; "\r\n" counts as one.
            let term = self.buf.split_to(1);
            if term[0] == b'\r' && self.buf.first() == Some(&b'\n') {
                let _ = self.buf.split_to(1);
            }
            self.pending_bytes += line.len() + 1;
            if self.pending_bytes > self.max_event {
                return Err(EventTooLarge {
                    limit: self.max_event,
                });
            }
            if line.is_empty() {
                if self.has_data {
                    out.push(std::mem::take(&mut self.current));
                } else {
                    self.current = SseEvent::default();
                }
                self.has_data = false;
                self.pending_bytes = 0;
                continue;
            }
            self.field(&line);
        }
        self.scanned = self.buf.len();
        self.check_size(out)
    }

    fn check_size(&self, out: Vec<SseEvent>) -> Result<Vec<SseEvent>, EventTooLarge> {
        if self.pending_bytes + self.buf.len() > self.max_event {
            return Err(EventTooLarge {
                limit: self.max_event,
            });
        }
        Ok(out)
    }

    fn field(&mut self, line: &[u8]) {
        if line[0] == b':' {
            return;
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        let value = String::from_utf8_lossy(value);
        match name {
            b"data" => {
                if self.has_data {
                    self.current.data.push('\n');
                }
                self.current.data.push_str(&value);
                self.has_data = true;
            }
            b"event" => self.current.event = value.into_owned(),
            b"id" if !value.contains('\0') => self.current.id = Some(value.into_owned()),
            _ => {}
        }
    }
}

/// Encodes one JSON-RPC message as an SSE `message` event, optionally with an event id.
pub fn encode_event(data: &[u8], id: Option<&str>) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + 32);
    if let Some(id) = id {
        out.put_slice(b"id: ");
        out.put_slice(id.as_bytes());
        out.put_u8(b'\n');
    }
    out.put_slice(b"event: message\n");
    // JSON from serde never contains raw newlines, but upstream data might: split defensively.
    for line in data.split(|&b| b == b'\n') {
        out.put_slice(b"data: ");
        out.put_slice(line.strip_suffix(b"\r").unwrap_or(line));
        out.put_u8(b'\n');
    }
    out.put_u8(b'\n');
    out.freeze()
}

/// An SSE comment line, used as a keep-alive and to flush headers early.
pub fn keep_alive() -> Bytes {
    Bytes::from_static(b": keep-alive\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_events_split_across_chunks_and_line_endings() {
        let mut p = SseParser::new(1 << 20);
        let mut events = p.feed(b"id: 1\r\nevent: message\r\ndata: {\"a\"").unwrap();
        assert!(events.is_empty());
        events.extend(
            p.feed(b":1}\r\n\r\n: comment\n\ndata: x\ndata: y\n\n")
                .unwrap(),
        );
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].id.as_deref(), Some("1"));
        assert_eq!(events[0].data, "{\"a\":1}");
        assert_eq!(events[1].data, "x\ny");
    }

    #[test]
    fn a_crlf_split_across_chunks_is_one_line_end() {
        let mut p = SseParser::new(1024);
        assert!(p.feed(b"data: a\r").unwrap().is_empty());
        assert!(p.feed(b"\ndata: b\r").unwrap().is_empty());
        let events = p.feed(b"\n\r\n").unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data, "a\nb");
    }

    #[test]
    fn a_long_line_in_many_chunks_is_found() {
        let mut p = SseParser::new(1 << 20);
        assert!(p.feed(b"data: ").unwrap().is_empty());
        for _ in 0..100 {
            assert!(p.feed(&[b'x'; 1000]).unwrap().is_empty());
        }
        let events = p.feed(b"\n\n").unwrap();
        assert_eq!(events[0].data.len(), 100_000);
    }

    #[test]
    fn a_lone_cr_ends_a_line() {
        let mut p = SseParser::new(1024);
        let events = p.feed(b"data: a\r\rdata: b\n\n").unwrap();
        assert_eq!(
            events.iter().map(|e| e.data.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
    }

    #[test]
    fn refuses_oversized_events() {
        let mut p = SseParser::new(16);
        assert!(p.feed(b"data: 0123456789012345678901234567890").is_err());
    }

    #[test]
    fn encoded_events_parse_back() {
        let mut p = SseParser::new(1024);
        let e = p.feed(&encode_event(br#"{"x":1}"#, Some("7"))).unwrap();
        assert_eq!(e[0].data, r#"{"x":1}"#);
        assert_eq!(e[0].id.as_deref(), Some("7"));
    }
}
