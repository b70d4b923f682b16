// The body of the `sse_parser` fuzz target (fuzz/fuzz_targets/sse_parser.rs), included there and by
// tests/fuzz_seeds.rs, which replays every seed through it in the ordinary test run.

use bytes::Bytes;
use gatehouse::protocol::sse::{EventBuffer, SseParser};

/// The event limit: small, so that the fuzzer reaches it.
const MAX_EVENT: usize = 64;

/// The events (data joined with `\n`) of the whole stream, or `None` when one of them,
/// including an unfinished last one, exceeds `MAX_EVENT`.
fn reference(stream: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut events = Vec::new();
    let mut data: Option<Vec<u8>> = None;
    let mut rest = stream;
    loop {
        let Some(end) = rest.iter().position(|&b| b == b'\n' || b == b'\r') else {
            // An unterminated last line: its data arrives, the event never completes.
            let total = partial_size(&data, rest);
            if total > MAX_EVENT {
                return None;
            }
            return Some(events);
        };
        let line = &rest[..end];
        let skip = if rest[end] == b'\r' && rest.get(end + 1) == Some(&b'\n') {
            2
        } else {
            1
        };
        rest = &rest[end + skip..];
        if line.is_empty() {
            if let Some(d) = data.take() {
                events.push(d);
            }
            continue;
        }
        if let Some(value) = field_value(line) {
            match &mut data {
                Some(d) => {
                    d.push(b'\n');
                    d.extend_from_slice(value);
                }
                None => data = Some(value.to_vec()),
            }
            if data.as_ref().map_or(0, Vec::len) > MAX_EVENT {
                return None;
            }
        }
    }
}

/// The size of the current event once `line` (unterminated) is added to it. A line without
/// its colon yet is not known to be a `data` field, so it adds nothing.
fn partial_size(data: &Option<Vec<u8>>, line: &[u8]) -> usize {
    let have = data.as_ref().map_or(0, Vec::len);
    if !line.contains(&b':') {
        return have;
    }
    match field_value(line) {
        Some(value) => have + usize::from(data.is_some()) + value.len(),
        None => have,
    }
}

/// The value of a `data` field line; `None` for other fields and comments.
fn field_value(l: &[u8]) -> Option<&[u8]> {
    let (name, value) = match l.iter().position(|&b| b == b':') {
        Some(i) => (&l[..i], &l[i + 1..]),
        None => (l, &l[l.len()..]),
    };
    if name != b"data" {
        return None;
    }
    Some(value.strip_prefix(b" ").unwrap_or(value))
}

/// What the parser makes of `stream` fed in the pieces `cuts` gives.
fn parse(stream: &[u8], cuts: &[usize]) -> Option<Vec<Vec<u8>>> {
    let mut p = SseParser::new(MAX_EVENT);
    let mut buf = EventBuffer::default();
    let mut events = Vec::new();
    let mut at = 0;
    for &cut in cuts.iter().chain(std::iter::once(&stream.len())) {
        let cut = cut.clamp(at, stream.len());
        let chunk = Bytes::copy_from_slice(&stream[at..cut]);
        at = cut;
        match p.feed_whole(&chunk, &mut buf) {
            Ok(done) => events.extend(done),
            Err(e) => {
                assert_eq!(e.limit, MAX_EVENT);
                return None;
            }
        }
    }
    Some(events)
}

pub fn fuzz_one(data: &[u8]) {
    // The first byte says how many cut points follow (one byte each, relative steps).
    let (n, rest) = match data.split_first() {
        Some((n, rest)) => (usize::from(*n % 8), rest),
        None => return,
    };
    let n = n.min(rest.len());
    let (steps, stream) = rest.split_at(n);
    let mut cuts = Vec::new();
    let mut at = 0;
    for s in steps {
        at += usize::from(*s);
        cuts.push(at);
    }
    let want = reference(stream);
    assert_eq!(parse(stream, &[]), want, "whole stream");
    assert_eq!(parse(stream, &cuts), want, "cut at {cuts:?}");
}
