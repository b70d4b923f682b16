//! Relays a JSON-RPC response while it arrives: only the top-level `id` is replaced (and
//! `resultType` added for stateless clients when the result has none), so a 1 MiB result is
//! neither parsed into values nor held whole before the client sees its first byte.
//!
//! The scanner reads the envelope exactly (keys, `jsonrpc`, `id`) and the result only as far
//! as needed to find where it ends (strings, escapes, nesting). It decides within the first
//! member or two whether a message can be streamed: a response whose `result` comes before
//! anything unexpected. Errors, requests, notifications and odd envelopes are left to the
//! whole-message parser, which can say precisely what is wrong.

use super::RequestId;

/// How a message fed so far should be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Not known yet; the output is held back.
    Undecided,
    /// A response result being streamed; output is produced as input arrives.
    Streaming,
    /// Not a streamable response: parse it whole (see [`ResponseRewriter::take_head`]).
    NotStreamable,
}

/// Why a streamed response had to be abandoned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PassthroughError {
    /// The bytes are not a valid JSON-RPC response.
    #[error("the response is not valid JSON-RPC: {0}")]
    Invalid(&'static str),
    /// The response answers another request.
    #[error("the response id does not match the request")]
    WrongId,
    /// The response is larger than the configured limit.
    #[error("a response exceeded {0} bytes")]
    TooLarge(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Top {
    Start,
    KeyOrEnd,
    Key,
    Colon,
    Value,
    StringValue,
    Literal,
    Nested,
    CommaOrEnd,
    KeyAfterComma,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Member {
    Id,
    Jsonrpc,
    Result,
    Other,
}

/// Longest envelope prefix held back before giving up on streaming.
const MAX_UNDECIDED: usize = 4096;

/// Rewrites one response as its bytes arrive.
#[derive(Debug)]
pub struct ResponseRewriter {
    expect: Vec<u8>,
    replace: Vec<u8>,
    /// Add `"resultType":"complete"` at the end of the result unless it has a `resultType`.
    add_result_type: bool,
    result_keys: ResultKeys,
    max: usize,
    seen: usize,
    state: Top,
    member: Member,
    depth: u32,
    in_string: bool,
    escaped: bool,
    token: Vec<u8>,
    progress: Progress,
    head: Vec<u8>,
    pending: Vec<u8>,
    saw_id: bool,
    saw_jsonrpc: bool,
    saw_result: bool,
}

/// The result object's own members, followed while it streams: whether one is `resultType`.
#[derive(Debug, Default)]
struct ResultKeys {
    /// Inside the result object (not another nested value).
    inside: bool,
    /// The next string at the result's top level is a key.
    expect_key: bool,
    /// The key being read, while it is short enough to be `resultType`.
    key: Option<Vec<u8>>,
    any_member: bool,
    has_result_type: bool,
    /// A key spelled with escapes, which could say `resultType`: nothing is added then.
    escaped_key: bool,
}

const RESULT_TYPE_KEY: &[u8] = b"resultType";

impl ResponseRewriter {
    /// A rewriter for the answer to upstream request `expect`, restored to `replace`
    /// downstream; `add_result_type` appends `"resultType":"complete"` to a result that has
    /// none (a 2026-07-28 client, whose SDK rejects results without it).
    pub fn new(
        expect: &RequestId,
        replace: &Option<RequestId>,
        add_result_type: bool,
        max: usize,
    ) -> Self {
        let json = |id: &RequestId| serde_json::to_vec(id).expect("ids serialize");
        ResponseRewriter {
            expect: json(expect),
            replace: replace
                .as_ref()
                .map(json)
                .unwrap_or_else(|| b"null".to_vec()),
            add_result_type,
            result_keys: ResultKeys::default(),
            max,
            seen: 0,
            state: Top::Start,
            member: Member::Other,
            depth: 0,
            in_string: false,
            escaped: false,
            token: Vec::new(),
            progress: Progress::Undecided,
            head: Vec::new(),
            pending: Vec::new(),
            saw_id: false,
            saw_jsonrpc: false,
            saw_result: false,
        }
    }

    /// Consumes `input`, appending what may be sent on to `out` once streaming.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<Progress, PassthroughError> {
        self.seen += input.len();
        if self.seen > self.max {
            return Err(PassthroughError::TooLarge(self.max));
        }
        match self.progress {
            Progress::NotStreamable => return Ok(Progress::NotStreamable),
            Progress::Streaming => {
                self.scan(input, out)?;
                return Ok(Progress::Streaming);
            }
            Progress::Undecided => {}
        }
        self.head.extend_from_slice(input);
        let mut held = std::mem::take(&mut self.pending);
        let scanned = self.scan(input, &mut held);
        self.pending = held;
        match scanned {
            Err(_) | Ok(()) if self.progress == Progress::NotStreamable => {
                Ok(Progress::NotStreamable)
            }
            Err(e) => Err(e),
            Ok(()) if self.progress == Progress::Streaming => {
                out.append(&mut self.pending);
                self.head = Vec::new();
                Ok(Progress::Streaming)
            }
            Ok(()) if self.head.len() > MAX_UNDECIDED => {
                self.progress = Progress::NotStreamable;
                Ok(Progress::NotStreamable)
            }
            Ok(()) => Ok(Progress::Undecided),
        }
    }

    /// The raw input fed before the decision, for the whole-message parser.
    pub fn take_head(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.head)
    }

    /// Checks that the message ended where it should, after the input is exhausted.
    pub fn finish(&self) -> Result<(), PassthroughError> {
        if self.state != Top::Done {
            return Err(PassthroughError::Invalid("the message ended early"));
        }
        if !(self.saw_id && self.saw_jsonrpc && self.saw_result) {
            return Err(PassthroughError::Invalid(
                "a response needs jsonrpc, id and result",
            ));
        }
        Ok(())
    }

    /// Gives up streaming before anything was sent; the error only matters once streaming.
    fn not_streamable(&mut self, e: PassthroughError) -> Result<(), PassthroughError> {
        if self.progress == Progress::Undecided {
            self.progress = Progress::NotStreamable;
        }
        Err(e)
    }

    fn scan(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), PassthroughError> {
        let mut i = 0;
        while i < input.len() {
            if self.state == Top::Nested {
                i = self.scan_nested(input, i, out)?;
                continue;
            }
            let b = input[i];
            match self.state {
                Top::Start | Top::Done => {
                    if b == b'{' && self.state == Top::Start {
                        out.push(b);
                        self.state = Top::KeyOrEnd;
                    } else if !b.is_ascii_whitespace() {
                        return self
                            .not_streamable(PassthroughError::Invalid("expected one JSON object"));
                    }
                }
                Top::KeyOrEnd | Top::KeyAfterComma => match b {
                    b'"' => {
                        self.token.clear();
                        self.state = Top::Key;
                    }
                    b'}' if self.state == Top::KeyOrEnd => self.close(out),
                    _ if b.is_ascii_whitespace() => {}
                    _ => return self.not_streamable(PassthroughError::Invalid("expected a key")),
                },
                Top::Key => match b {
                    b'"' => self.key_done(out)?,
                    // An escaped key could spell "id" in a way only a full parser sees.
                    b'\\' => {
                        return self
                            .not_streamable(PassthroughError::Invalid("escaped top-level key"));
                    }
                    // Keys go out as they came: a raw line break would end the SSE data line.
                    _ if b < 0x20 => {
                        return self.not_streamable(PassthroughError::Invalid(
                            "control character in a string",
                        ));
                    }
                    _ => self.token.push(b),
                },
                Top::Colon => match b {
                    b':' => {
                        out.push(b);
                        self.state = Top::Value;
                    }
                    _ if b.is_ascii_whitespace() => {}
                    _ => return self.not_streamable(PassthroughError::Invalid("expected ':'")),
                },
                Top::Value => match b {
                    b'"' => {
                        self.token.clear();
                        self.token.push(b);
                        self.escaped = false;
                        self.state = Top::StringValue;
                    }
                    b'{' | b'[' => {
                        if self.member == Member::Id || self.member == Member::Jsonrpc {
                            return self.not_streamable(PassthroughError::Invalid(
                                "id and jsonrpc must be scalars",
                            ));
                        }
                        out.push(b);
                        if b == b'{' && self.member == Member::Result {
                            self.result_keys = ResultKeys {
                                inside: true,
                                expect_key: true,
                                ..ResultKeys::default()
                            };
                        }
                        self.depth = 1;
                        self.in_string = false;
                        self.escaped = false;
                        self.state = Top::Nested;
                    }
                    _ if b.is_ascii_whitespace() => {}
                    _ => {
                        self.token.clear();
                        self.token.push(b);
                        self.state = Top::Literal;
                    }
                },
                Top::StringValue => {
                    // Checked before the escape: `\` followed by a line break is no escape,
                    // and would put a raw line break in the output.
                    if b < 0x20 {
                        return self.not_streamable(PassthroughError::Invalid(
                            "control character in a string",
                        ));
                    }
                    self.token.push(b);
                    if self.escaped {
                        self.escaped = false;
                    } else if b == b'\\' {
                        self.escaped = true;
                    } else if b == b'"' {
                        self.value_done(out)?;
                    }
                }
                Top::Literal => {
                    if matches!(b, b',' | b'}') || b.is_ascii_whitespace() {
                        self.value_done(out)?;
                        continue;
                    }
                    self.token.push(b);
                }
                Top::CommaOrEnd => match b {
                    b',' => {
                        out.push(b);
                        self.state = Top::KeyAfterComma;
                    }
                    b'}' => self.close(out),
                    _ if b.is_ascii_whitespace() => {}
                    _ => {
                        return self
                            .not_streamable(PassthroughError::Invalid("expected ',' or '}'"));
                    }
                },
                Top::Nested => unreachable!("handled above"),
            }
            i += 1;
        }
        Ok(())
    }

    fn key_done(&mut self, out: &mut Vec<u8>) -> Result<(), PassthroughError> {
        let (member, seen) = match self.token.as_slice() {
            b"id" => (Member::Id, self.saw_id),
            b"jsonrpc" => (Member::Jsonrpc, self.saw_jsonrpc),
            b"result" => (Member::Result, self.saw_result),
            b"error" | b"method" | b"params" => {
                return self.not_streamable(PassthroughError::Invalid(
                    "a streamed response must not carry error, method or params",
                ));
            }
            _ if self.progress == Progress::Undecided => {
                return self.not_streamable(PassthroughError::Invalid("unexpected member"));
            }
            _ => (Member::Other, false),
        };
        if seen {
            return self.not_streamable(PassthroughError::Invalid("a member is repeated"));
        }
        out.push(b'"');
        out.extend_from_slice(&self.token);
        out.push(b'"');
        self.member = member;
        match member {
            Member::Id => self.saw_id = true,
            Member::Jsonrpc => self.saw_jsonrpc = true,
            Member::Result => {
                self.saw_result = true;
                if self.progress == Progress::Undecided {
                    self.progress = Progress::Streaming;
                }
            }
            Member::Other => {}
        }
        self.state = Top::Colon;
        Ok(())
    }

    fn value_done(&mut self, out: &mut Vec<u8>) -> Result<(), PassthroughError> {
        match self.member {
            Member::Id => {
                if self.token != self.expect {
                    return self.not_streamable(PassthroughError::WrongId);
                }
                out.extend_from_slice(&self.replace);
            }
            Member::Jsonrpc if self.token != br#""2.0""# => {
                return self.not_streamable(PassthroughError::Invalid("jsonrpc must be \"2.0\""));
            }
            Member::Result => {
                return self.not_streamable(PassthroughError::Invalid("result must be an object"));
            }
            _ => out.extend_from_slice(&self.token),
        }
        self.state = Top::CommaOrEnd;
        Ok(())
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        out.push(b'}');
        self.state = Top::Done;
    }

    /// Scans inside a nested value from `i`; returns where it stopped. Raw line breaks
    /// outside strings are dropped, so the output is always one line (safe inside SSE data).
    fn scan_nested(
        &mut self,
        input: &[u8],
        mut i: usize,
        out: &mut Vec<u8>,
    ) -> Result<usize, PassthroughError> {
        while i < input.len() {
            if self.in_string {
                if self.escaped {
                    // `\` then a line break is not an escape; passed on, the line break would
                    // end the SSE data line and let the upstream write its own events.
                    if matches!(input[i], b'\n' | b'\r') {
                        return Err(PassthroughError::Invalid("line break in a string"));
                    }
                    self.escaped = false;
                    out.push(input[i]);
                    i += 1;
                    continue;
                }
                let rest = &input[i..];
                let stop = memchr::memchr3(b'"', b'\\', b'\n', rest).unwrap_or(rest.len());
                if memchr::memchr(b'\r', &rest[..stop]).is_some() {
                    return Err(PassthroughError::Invalid("line break in a string"));
                }
                out.extend_from_slice(&rest[..stop]);
                self.result_keys.key_bytes(&rest[..stop]);
                i += stop;
                let Some(&b) = input.get(i) else { break };
                match b {
                    b'"' => {
                        self.in_string = false;
                        self.result_keys.key_done();
                    }
                    b'\\' => {
                        self.escaped = true;
                        self.result_keys.key_escaped();
                    }
                    _ => return Err(PassthroughError::Invalid("line break in a string")),
                }
                out.push(b);
                i += 1;
                continue;
            }
            let b = input[i];
            i += 1;
            if b == b'\n' || b == b'\r' {
                continue;
            }
            let top = self.depth == 1 && self.result_keys.inside;
            if top && b == b'}' && self.add_result_type {
                self.result_keys.complete(out);
            }
            out.push(b);
            match b {
                b'"' => {
                    self.in_string = true;
                    if top && self.result_keys.expect_key {
                        self.result_keys.key_start();
                    }
                }
                b',' if top => self.result_keys.expect_key = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        self.result_keys.inside = false;
                        self.state = Top::CommaOrEnd;
                        return Ok(i);
                    }
                }
                _ => {}
            }
        }
        Ok(i)
    }
}

impl ResultKeys {
    fn key_start(&mut self) {
        self.expect_key = false;
        self.any_member = true;
        self.key = Some(Vec::with_capacity(RESULT_TYPE_KEY.len()));
    }

    fn key_bytes(&mut self, bytes: &[u8]) {
        if let Some(k) = &mut self.key {
            if k.len() + bytes.len() > RESULT_TYPE_KEY.len() {
                self.key = None;
            } else {
                k.extend_from_slice(bytes);
            }
        }
    }

    fn key_escaped(&mut self) {
        if self.key.take().is_some() {
            self.escaped_key = true;
        }
    }

    fn key_done(&mut self) {
        if let Some(k) = self.key.take() {
            self.has_result_type |= k == RESULT_TYPE_KEY;
        }
    }

    /// Writes the missing `resultType` before the result's closing brace.
    fn complete(&self, out: &mut Vec<u8>) {
        if self.has_result_type || self.escaped_key {
            return;
        }
        if self.any_member {
            out.push(b',');
        }
        out.extend_from_slice(br#""resultType":"complete""#);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &str, chunk: usize, inject: bool) -> Result<String, PassthroughError> {
        let mut r = ResponseRewriter::new(
            &RequestId::Number(7),
            &Some(RequestId::String("a".into())),
            inject,
            1 << 20,
        );
        let mut out = Vec::new();
        for piece in input.as_bytes().chunks(chunk) {
            if r.feed(piece, &mut out)? == Progress::NotStreamable {
                return Ok("whole".into());
            }
        }
        r.finish()?;
        Ok(String::from_utf8(out).unwrap())
    }

    fn every_split(input: &str, inject: bool) -> Result<String, PassthroughError> {
        let first = run(input, input.len(), inject);
        for chunk in 1..input.len() {
            assert_eq!(run(input, chunk, inject), first, "chunk size {chunk}");
        }
        first
    }

    fn same_json(a: &str, b: &str) {
        let a: serde_json::Value = serde_json::from_str(a).unwrap();
        let b: serde_json::Value = serde_json::from_str(b).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn replaces_the_id_wherever_it_comes() {
        for input in [
            r#"{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"x\"}{"}]}}"#,
            r#"{"result":{"content":[{"type":"text","text":"x\"}{"}]},"jsonrpc":"2.0","id":7}"#,
            "{ \"result\" : {\n \"content\": [ {\"type\":\"text\",\"text\":\"x\\\"}{\"} ] } ,\r\n \"jsonrpc\":\"2.0\" , \"id\" : 7 }\n",
        ] {
            let out = every_split(input, false).unwrap();
            assert!(!out.contains('\n'));
            same_json(
                &out,
                r#"{"jsonrpc":"2.0","id":"a","result":{"content":[{"type":"text","text":"x\"}{"}]}}"#,
            );
        }
    }

    #[test]
    fn adds_the_result_type_for_stateless_clients_when_it_is_missing() {
        let out = every_split(r#"{"jsonrpc":"2.0","id":7,"result":{"a":[1,{}]}}"#, true).unwrap();
        same_json(
            &out,
            r#"{"jsonrpc":"2.0","id":"a","result":{"resultType":"complete","a":[1,{}]}}"#,
        );
        let out = every_split(r#"{"jsonrpc":"2.0","id":7,"result":{ }}"#, true).unwrap();
        same_json(
            &out,
            r#"{"jsonrpc":"2.0","id":"a","result":{"resultType":"complete"}}"#,
        );
        // One the result carries is kept as it is, wherever it comes, and never doubled.
        for input in [
            r#"{"jsonrpc":"2.0","id":7,"result":{"resultType":"input_required","a":"resultType"}}"#,
            r#"{"jsonrpc":"2.0","id":7,"result":{"a":{"resultType":"x"},"resultType":"input_required"}}"#,
        ] {
            let out = every_split(input, true).unwrap();
            assert_eq!(
                out.matches(r#""resultType""#).count(),
                input.matches(r#""resultType""#).count(),
                "{out}"
            );
            let v: serde_json::Value = serde_json::from_str(&out).unwrap();
            assert_eq!(v["result"]["resultType"], "input_required", "{out}");
        }
        // Keys and values that only resemble it do not count; nested ones do not either.
        let out = every_split(
            r#"{"jsonrpc":"2.0","id":7,"result":{"resultTypes":1,"x":"resultType","n":{"resultType":"task"}}}"#,
            true,
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["result"]["resultType"], "complete", "{out}");
        // A key spelled with escapes might be it: nothing is added rather than a duplicate.
        let out = every_split(
            r#"{"jsonrpc":"2.0","id":7,"result":{"\u0072esultType":"task"}}"#,
            true,
        )
        .unwrap();
        assert_eq!(out.matches("esultType").count(), 1, "{out}");
    }

    #[test]
    fn leaves_everything_else_to_the_whole_parser() {
        for input in [
            r#"{"jsonrpc":"2.0","id":7,"error":{"code":1,"message":"x"}}"#,
            r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{}}"#,
            r#"{"jsonrpc":"2.0","id":8,"result":{}}"#,
            r#"{"jsonrpc":"1.0","id":7,"result":{}}"#,
            r#"{"\u0069d":7,"result":{}}"#,
            r#"{"x":1,"result":{}}"#,
            r#"[{"jsonrpc":"2.0","id":7,"result":{}}]"#,
            r#"{"id":{"a":1},"result":{}}"#,
        ] {
            assert_eq!(every_split(input, false).unwrap(), "whole", "{input}");
        }
    }

    #[test]
    fn refuses_a_streamed_response_that_goes_wrong_later() {
        for (input, want) in [
            (
                r#"{"result":{},"id":8,"jsonrpc":"2.0"}"#,
                PassthroughError::WrongId,
            ),
            (
                r#"{"result":{},"jsonrpc":"2.0"}"#,
                PassthroughError::Invalid("a response needs jsonrpc, id and result"),
            ),
            (
                r#"{"result":{},"error":{},"jsonrpc":"2.0","id":7}"#,
                PassthroughError::Invalid(
                    "a streamed response must not carry error, method or params",
                ),
            ),
            (
                r#"{"result":{},"result":{},"jsonrpc":"2.0","id":7}"#,
                PassthroughError::Invalid("a member is repeated"),
            ),
            (
                r#"{"result":{},"id":7,"id":7,"jsonrpc":"2.0"}"#,
                PassthroughError::Invalid("a member is repeated"),
            ),
            (
                r#"{"result":{"a":1}"#,
                PassthroughError::Invalid("the message ended early"),
            ),
            (
                r#"{"result":{},"jsonrpc":"2.0","id":7}{"#,
                PassthroughError::Invalid("expected one JSON object"),
            ),
            (
                "{\"result\":{\"a\":\"x\ny\"},\"jsonrpc\":\"2.0\",\"id\":7}",
                PassthroughError::Invalid("line break in a string"),
            ),
            // Found by the passthrough_rewriter fuzz target: a line break after a backslash, or
            // in a top-level key or string after the result, went out raw.
            (
                "{\"result\":{\"a\":\"x\\\ny\"},\"jsonrpc\":\"2.0\",\"id\":7}",
                PassthroughError::Invalid("line break in a string"),
            ),
            (
                "{\"result\":{\"a\":\"x\\\r\"},\"jsonrpc\":\"2.0\",\"id\":7}",
                PassthroughError::Invalid("line break in a string"),
            ),
            (
                "{\"result\":{},\"a\nb\":1,\"jsonrpc\":\"2.0\",\"id\":7}",
                PassthroughError::Invalid("control character in a string"),
            ),
            (
                "{\"result\":{},\"x\":\"\\\n\",\"jsonrpc\":\"2.0\",\"id\":7}",
                PassthroughError::Invalid("control character in a string"),
            ),
        ] {
            assert_eq!(every_split(input, false), Err(want), "{input}");
        }
    }

    #[test]
    fn enforces_the_size_limit() {
        let mut r = ResponseRewriter::new(&RequestId::Number(7), &None, false, 10);
        let mut out = Vec::new();
        assert_eq!(
            r.feed(br#"{"result":{"a":"0123456789"}}"#, &mut out),
            Err(PassthroughError::TooLarge(10))
        );
    }

    #[test]
    fn gives_up_on_a_long_undecided_prefix() {
        let input = format!(
            r#"{{"jsonrpc":"2.0","id":"{}","result":{{}}}}"#,
            "x".repeat(5000)
        );
        assert_eq!(every_split_quick(&input), Progress::NotStreamable);
    }

    fn every_split_quick(input: &str) -> Progress {
        let mut r = ResponseRewriter::new(&RequestId::Number(7), &None, false, 1 << 20);
        let mut out = Vec::new();
        let mut last = Progress::Undecided;
        for piece in input.as_bytes().chunks(100) {
            last = r.feed(piece, &mut out).unwrap_or(Progress::NotStreamable);
        }
        assert!(out.is_empty());
        assert!(!r.take_head().is_empty());
        last
    }

    #[test]
    fn streams_a_large_result_as_it_arrives() {
        let text = "y".repeat(1 << 20);
        let input = format!(
            r#"{{"jsonrpc":"2.0","id":7,"result":{{"content":[{{"type":"text","text":"{text}"}}]}}}}"#
        );
        let mut r = ResponseRewriter::new(
            &RequestId::Number(7),
            &Some(RequestId::Number(1)),
            false,
            2 << 20,
        );
        let mut out = Vec::new();
        let mut first = None;
        for (n, piece) in input.as_bytes().chunks(16 * 1024).enumerate() {
            assert_eq!(r.feed(piece, &mut out).unwrap(), Progress::Streaming);
            if first.is_none() && !out.is_empty() {
                first = Some(n);
            }
        }
        r.finish().unwrap();
        assert_eq!(first, Some(0), "output starts with the first chunk");
        assert_eq!(out.len(), input.len());
    }
}
