//! Server-Sent Events: an incremental parser for upstream streams and the encoder used downstream.

use bytes::{BufMut, Bytes, BytesMut};

/// What an SSE stream carries, as soon as it arrives: pieces of an event's data (the `data:`
/// lines joined with `\n`, in as many pieces as the network delivered) and the end of an event.
/// Other fields (`id`, `event`, `retry`) and comments are skipped: the gateway relays messages,
/// not upstream event ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SsePiece {
    /// The next bytes of the current event's data.
    Data(Bytes),
    /// The current event is complete (only sent for events that had data).
    Dispatch,
}

/// An upstream event larger than the configured limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an SSE event exceeded {limit} bytes")]
pub struct EventTooLarge {
    /// The limit that was exceeded.
    pub limit: usize,
}

#[derive(Debug)]
enum Line {
    Start,
    Name(BytesMut),
    Data { skip_space: bool },
    Skip,
}

/// Field names longer than this are not `data` and are skipped, not buffered.
const MAX_FIELD_NAME: usize = 16;

/// Incremental SSE parser: feed it chunks as they arrive; a long `data:` line is handed on in
/// pieces, never buffered here.
#[derive(Debug)]
pub struct SseParser {
    line: Line,
    after_cr: bool,
    has_data: bool,
    event_bytes: usize,
    max_event: usize,
}

impl SseParser {
    /// A parser that refuses events whose data exceeds `max_event` bytes.
    pub fn new(max_event: usize) -> Self {
        SseParser {
            line: Line::Start,
            after_cr: false,
            has_data: false,
            event_bytes: 0,
            max_event,
        }
    }

    /// Adds bytes and returns the pieces they make.
    pub fn feed(&mut self, chunk: &Bytes) -> Result<Vec<SsePiece>, EventTooLarge> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < chunk.len() {
            let b = chunk[i];
            if std::mem::take(&mut self.after_cr) && b == b'\n' {
                i += 1;
                continue;
            }
            match &mut self.line {
                Line::Start if b == b'\n' || b == b'\r' => {
                    self.after_cr = b == b'\r';
                    if std::mem::take(&mut self.has_data) {
                        out.push(SsePiece::Dispatch);
                    }
                    self.event_bytes = 0;
                }
                Line::Start => {
                    self.line = Line::Name(BytesMut::new());
                    continue;
                }
                Line::Name(name) => match b {
                    b':' if name.is_empty() => self.line = Line::Skip,
                    b':' if &name[..] == b"data" => {
                        self.start_data(&mut out)?;
                        self.line = Line::Data { skip_space: true };
                    }
                    b':' => self.line = Line::Skip,
                    b'\n' | b'\r' => {
                        if &name[..] == b"data" {
                            self.start_data(&mut out)?;
                        }
                        self.end_line(b);
                    }
                    _ if name.len() >= MAX_FIELD_NAME => self.line = Line::Skip,
                    _ => name.put_u8(b),
                },
                Line::Skip => {
                    let rest = &chunk[i..];
                    match memchr::memchr2(b'\n', b'\r', rest) {
                        Some(n) => {
                            i += n;
                            self.end_line(chunk[i]);
                        }
                        None => i = chunk.len(),
                    }
                    i += 1;
                    continue;
                }
                Line::Data { skip_space } => {
                    if std::mem::take(skip_space) && b == b' ' {
                        i += 1;
                        continue;
                    }
                    let rest = &chunk[i..];
                    let n = memchr::memchr2(b'\n', b'\r', rest).unwrap_or(rest.len());
                    if n > 0 {
                        self.event_bytes += n;
                        if self.event_bytes > self.max_event {
                            return Err(EventTooLarge {
                                limit: self.max_event,
                            });
                        }
                        out.push(SsePiece::Data(chunk.slice(i..i + n)));
                    }
                    i += n;
                    if let Some(&end) = chunk.get(i) {
                        self.end_line(end);
                        i += 1;
                    }
                    continue;
                }
            }
            i += 1;
        }
        Ok(out)
    }

    /// Adds bytes and returns the data of the events they complete, gathered in `events`.
    pub fn feed_whole(
        &mut self,
        chunk: &Bytes,
        events: &mut EventBuffer,
    ) -> Result<Vec<Vec<u8>>, EventTooLarge> {
        let pieces = self.feed(chunk)?;
        Ok(pieces.into_iter().filter_map(|p| events.push(p)).collect())
    }

    /// A `data` field begins: the line break that joins it to the previous one counts
    /// towards the event's size like any data byte (an event of empty `data` lines is made of
    /// nothing else).
    fn start_data(&mut self, out: &mut Vec<SsePiece>) -> Result<(), EventTooLarge> {
        if self.has_data {
            self.event_bytes += 1;
            if self.event_bytes > self.max_event {
                return Err(EventTooLarge {
                    limit: self.max_event,
                });
            }
            out.push(SsePiece::Data(Bytes::from_static(b"\n")));
        }
        self.has_data = true;
        Ok(())
    }

    fn end_line(&mut self, terminator: u8) {
        self.after_cr = terminator == b'\r';
        self.line = Line::Start;
    }
}

/// Collects whole events from pieces (for callers that want complete messages).
#[derive(Debug, Default)]
pub struct EventBuffer {
    data: Vec<u8>,
}

impl EventBuffer {
    /// Adds a piece; returns the event's data when it completes.
    pub fn push(&mut self, piece: SsePiece) -> Option<Vec<u8>> {
        match piece {
            SsePiece::Data(b) => {
                self.data.extend_from_slice(&b);
                None
            }
            SsePiece::Dispatch => Some(std::mem::take(&mut self.data)),
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

    /// Feeds `chunks` and returns the completed events' data.
    fn events(p: &mut SseParser, chunks: &[&[u8]]) -> Result<Vec<String>, EventTooLarge> {
        let mut buf = EventBuffer::default();
        let mut out = Vec::new();
        for c in chunks {
            for data in p.feed_whole(&Bytes::copy_from_slice(c), &mut buf)? {
                out.push(String::from_utf8(data).unwrap());
            }
        }
        Ok(out)
    }

    #[test]
    fn parses_events_split_across_chunks_and_line_endings() {
        let mut p = SseParser::new(1 << 20);
        let got = events(
            &mut p,
            &[
                b"id: 1\r\nevent: message\r\ndata: {\"a\"",
                b":1}\r\n\r\n: comment\n\ndata: x\ndata: y\n\ndata\ndata:z\n\n",
            ],
        )
        .unwrap();
        assert_eq!(got, ["{\"a\":1}", "x\ny", "\nz"]);
    }

    #[test]
    fn every_split_gives_the_same_events() {
        let stream: &[u8] =
            b"retry: 5\r\ndata: {\"a\":\r\ndata:  1}\r\n\r\n:c\rdata: b\r\r\nevent: x\n\n";
        let whole = events(&mut SseParser::new(1024), &[stream]).unwrap();
        assert_eq!(whole, ["{\"a\":\n 1}", "b"]);
        for cut in 1..stream.len() {
            let (a, b) = stream.split_at(cut);
            assert_eq!(
                events(&mut SseParser::new(1024), &[a, b]).unwrap(),
                whole,
                "cut {cut}"
            );
        }
    }

    #[test]
    fn a_long_line_is_handed_on_in_pieces() {
        let mut p = SseParser::new(1 << 20);
        assert!(p.feed(&Bytes::from_static(b"data: ")).unwrap().is_empty());
        for _ in 0..100 {
            let pieces = p.feed(&Bytes::from(vec![b'x'; 1000])).unwrap();
            assert_eq!(pieces, [SsePiece::Data(Bytes::from(vec![b'x'; 1000]))]);
        }
        assert_eq!(
            p.feed(&Bytes::from_static(b"\n\n")).unwrap(),
            [SsePiece::Dispatch]
        );
    }

    #[test]
    fn refuses_oversized_events() {
        let mut p = SseParser::new(16);
        assert!(
            p.feed(&Bytes::from_static(
                b"data: 0123456789012345678901234567890"
            ))
            .is_err()
        );
    }

    /// Found by the `sse_parser` fuzz target: the line breaks joining empty `data` lines were
    /// counted but not checked, so an upstream sending `data` lines without end grew the
    /// gateway's event buffer without limit.
    #[test]
    fn refuses_an_event_of_empty_data_lines_over_the_limit() {
        // 18 empty `data` lines: 17 joining line breaks, one more than the limit.
        let mut p = SseParser::new(16);
        let stream = Bytes::from("data\n".repeat(18));
        assert_eq!(p.feed(&stream), Err(EventTooLarge { limit: 16 }));
        let mut p = SseParser::new(16);
        let at_limit = events(&mut p, &["data\n".repeat(17).as_bytes(), b"\n"]).unwrap();
        assert_eq!(at_limit, ["\n".repeat(16)]);
    }

    #[test]
    fn encoded_events_parse_back() {
        let got = events(
            &mut SseParser::new(1024),
            &[&encode_event(br#"{"x":1}"#, Some("7"))],
        );
        assert_eq!(got.unwrap(), [r#"{"x":1}"#]);
    }
}
