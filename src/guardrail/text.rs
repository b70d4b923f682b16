//! The text the guardrails scan: a response body read as JSON strings while it streams. A
//! four-state tokenizer passes everything outside strings through and holds the current
//! string twice: its raw bytes, which are what is emitted, and its decoded text, which is
//! what the detectors see. Marks map one to the other, so that a match in the decoded text
//! can be spliced out of the raw bytes with the rest of the string's escapes left as the
//! upstream wrote them.
//!
//! Invalid UTF-8 and lone surrogates decode to U+FFFD; their raw bytes are still what is
//! emitted. Also here: the byte searches that scanning clean text fast depends on.

/// Text already emitted that is kept before a segment, so that the detectors see the word
/// boundary a match starts at.
const CONTEXT: usize = 32;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Outside,
    Str,
    Escape,
    Unicode { digits: u8, value: u32 },
}

/// What [`Text::read`] leaves for the scanner to do.
pub(super) enum Step {
    /// Nothing: outside strings, or within an escape.
    Nothing,
    /// The current string grew; enough of it may be held to scan a segment.
    Grew,
    /// The current string ended: all of it is to be scanned, then [`Text::close`]d.
    Ended,
}

/// The current string of a body.
pub(super) struct Text {
    mode: Mode,
    /// The current string's raw bytes not yet emitted.
    raw: Vec<u8>,
    /// The current string's decoded text: `text[..ctx]` was emitted and is kept only as
    /// context for word boundaries; `text[ctx..]` corresponds to `raw`.
    text: String,
    ctx: usize,
    /// (text offset, raw offset) after each place where decoding is not byte for byte (an
    /// escape, an invalid byte); between marks the two advance together. `(ctx, 0)` is
    /// implied.
    marks: Vec<(usize, usize)>,
    utf8: [u8; 4],
    utf8_len: usize,
    /// A high surrogate waiting for its low half, and the raw offset where its escape ends.
    high: Option<(u32, usize)>,
    /// The string is the value of a `data` or `blob` key, where MCP puts base64.
    binary: bool,
    last_binary_key: bool,
    binary_next: bool,
    window: usize,
}

impl Text {
    /// `window`: the most of a string read at once.
    pub(super) fn new(window: usize) -> Text {
        Text {
            window,
            mode: Mode::Outside,
            raw: Vec::new(),
            text: String::new(),
            ctx: 0,
            marks: Vec::new(),
            utf8: [0; 4],
            utf8_len: 0,
            high: None,
            binary: false,
            last_binary_key: false,
            binary_next: false,
        }
    }

    /// The decoded text held (`[..ctx()]` is context already emitted).
    pub(super) fn decoded(&self) -> &str {
        &self.text
    }

    pub(super) fn ctx(&self) -> usize {
        self.ctx
    }

    /// Raw bytes held back.
    pub(super) fn held(&self) -> usize {
        self.raw.len()
    }

    pub(super) fn in_string(&self) -> bool {
        self.mode != Mode::Outside
    }

    /// Whether the current string is a `data` or `blob` value.
    pub(super) fn binary(&self) -> bool {
        self.binary
    }

    /// Forgets what is held, for a body that will not be emitted.
    pub(super) fn discard(&mut self) {
        self.raw = Vec::new();
        self.text = String::new();
    }

    /// Reads `chunk` from `i` on, up to the next point where the scanner has something to
    /// do, and emits into `out` what needs no scanning. Returns where to read on, and what
    /// to do.
    // Inlined, as `emit` is: most strings are short keys and values, for which the calls
    // would cost more than the work.
    #[inline]
    pub(super) fn read(&mut self, chunk: &[u8], mut i: usize, out: &mut Vec<u8>) -> (usize, Step) {
        let step = match self.mode {
            Mode::Outside => {
                let start = i;
                while i < chunk.len() {
                    match chunk[i] {
                        b'"' => break,
                        b':' => {
                            self.binary_next = self.last_binary_key;
                            self.last_binary_key = false;
                        }
                        b' ' | b'\t' | b'\n' | b'\r' => {}
                        _ => {
                            self.binary_next = false;
                            self.last_binary_key = false;
                        }
                    }
                    i += 1;
                }
                out.extend_from_slice(&chunk[start..i]);
                if i < chunk.len() {
                    out.push(b'"');
                    i += 1;
                    self.begin_string();
                }
                Step::Nothing
            }
            Mode::Str => {
                // At most a window at a time, so that a large chunk is not copied whole
                // into the buffers and then moved along them segment by segment.
                let start = i;
                let piece = &chunk[..chunk.len().min(start + self.window)];
                i = find_byte(piece, start, |x| equal(x, b'"') | equal(x, b'\\'));
                self.plain(&chunk[start..i]);
                if i < piece.len() {
                    self.flush_utf8();
                    let quote = chunk[i] == b'"';
                    i += 1;
                    if quote {
                        self.flush_high();
                        return (i, Step::Ended);
                    }
                    self.raw.push(b'\\');
                    self.mode = Mode::Escape;
                }
                Step::Grew
            }
            Mode::Escape => {
                let b = chunk[i];
                i += 1;
                self.raw.push(b);
                if b == b'u' {
                    self.mode = Mode::Unicode {
                        digits: 0,
                        value: 0,
                    };
                    return (i, Step::Nothing);
                }
                self.flush_high();
                let c = match b {
                    b'b' => '\u{8}',
                    b'f' => '\u{c}',
                    b'n' => '\n',
                    b'r' => '\r',
                    b't' => '\t',
                    _ if b.is_ascii() => char::from(b),
                    _ => '\u{fffd}',
                };
                self.push_char(c);
                self.mode = Mode::Str;
                Step::Grew
            }
            Mode::Unicode { digits, value } => {
                let b = chunk[i];
                let Some(d) = char::from(b).to_digit(16) else {
                    // Not JSON: the partial escape stands for one unknown character and
                    // this byte is read again as string content.
                    self.flush_high();
                    self.push_char('\u{fffd}');
                    self.mode = Mode::Str;
                    return (i, Step::Nothing);
                };
                i += 1;
                self.raw.push(b);
                let value = value * 16 + d;
                if digits < 3 {
                    self.mode = Mode::Unicode {
                        digits: digits + 1,
                        value,
                    };
                    return (i, Step::Nothing);
                }
                self.mode = Mode::Str;
                self.unicode_escape(value);
                Step::Grew
            }
        };
        (i, step)
    }

    /// A body that ends inside a string: a partial character becomes U+FFFD (a partial
    /// escape stays as it came), so that all of the text can be scanned.
    pub(super) fn flush(&mut self) {
        self.flush_utf8();
        self.flush_high();
    }

    /// Emits the rest of the current string (after [`Step::Ended`], with its closing
    /// quote) and leaves it.
    pub(super) fn close(&mut self, out: &mut Vec<u8>, quote: bool) {
        out.extend_from_slice(&self.raw);
        if quote {
            out.push(b'"');
        }
        self.mode = Mode::Outside;
        // A trimmed string keeps at least CONTEXT bytes, so only a short one can equal these.
        self.last_binary_key = matches!(self.text.as_str(), "data" | "blob");
        self.raw.clear();
        self.marks.clear();
        self.text.clear();
        self.ctx = 0;
        // Keep the allocations of ordinary strings, not those of a huge one.
        if self.text.capacity() > 4 * self.window {
            self.text = String::new();
            self.raw = Vec::new();
        }
    }

    fn begin_string(&mut self) {
        self.mode = Mode::Str;
        self.raw.clear();
        self.text.clear();
        self.marks.clear();
        self.ctx = 0;
        self.utf8_len = 0;
        self.high = None;
        self.binary = self.binary_next;
        self.binary_next = false;
        self.last_binary_key = false;
    }

    fn unicode_escape(&mut self, value: u32) {
        match value {
            0xD800..=0xDBFF => {
                self.flush_high();
                self.high = Some((value, self.raw.len()));
            }
            0xDC00..=0xDFFF => match self.high.take() {
                Some((hi, _)) => {
                    let c = 0x10000 + ((hi - 0xD800) << 10) + (value - 0xDC00);
                    self.push_char(char::from_u32(c).unwrap_or('\u{fffd}'));
                }
                None => self.push_char('\u{fffd}'),
            },
            _ => {
                self.flush_high();
                self.push_char(char::from_u32(value).unwrap_or('\u{fffd}'));
            }
        }
    }

    /// A decoded character whose raw form ends at the end of `raw`.
    fn push_char(&mut self, c: char) {
        self.text.push(c);
        self.marks.push((self.text.len(), self.raw.len()));
    }

    fn flush_high(&mut self) {
        if let Some((_, end)) = self.high.take() {
            self.text.push('\u{fffd}');
            self.marks.push((self.text.len(), end));
        }
    }

    fn flush_utf8(&mut self) {
        if self.utf8_len > 0 {
            self.utf8_len = 0;
            self.bad_utf8(self.raw.len());
        }
    }

    fn bad_utf8(&mut self, raw_end: usize) {
        self.text.push('\u{fffd}');
        self.marks.push((self.text.len(), raw_end));
    }

    /// String content without escapes.
    fn plain(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.flush_high();
        let base = self.raw.len();
        self.raw.extend_from_slice(bytes);
        let mut i = 0;
        while self.utf8_len > 0 && i < bytes.len() {
            let b = bytes[i];
            if b & 0xC0 != 0x80 {
                self.utf8_len = 0;
                self.bad_utf8(base + i);
                break;
            }
            self.utf8[self.utf8_len] = b;
            self.utf8_len += 1;
            i += 1;
            let width = match self.utf8[0] {
                0xE0..=0xEF => 3,
                0xF0..=0xF7 => 4,
                _ => 2,
            };
            if self.utf8_len == width {
                self.utf8_len = 0;
                match std::str::from_utf8(&self.utf8[..width]) {
                    Ok(s) => self.text.push_str(s),
                    Err(_) => self.bad_utf8(base + i),
                }
            }
        }
        let mut rest = &bytes[i..];
        let mut at = base + i;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    self.text.push_str(s);
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    self.text
                        .push_str(std::str::from_utf8(&rest[..valid]).unwrap_or_default());
                    match e.error_len() {
                        Some(n) => {
                            self.bad_utf8(at + valid + n);
                            rest = &rest[valid + n..];
                            at += valid + n;
                        }
                        None => {
                            let tail = &rest[valid..];
                            self.utf8[..tail.len()].copy_from_slice(tail);
                            self.utf8_len = tail.len();
                            break;
                        }
                    }
                }
            }
        }
    }

    /// The raw offset of text offset `t` (>= ctx).
    pub(super) fn raw_at(&self, t: usize) -> usize {
        let i = self.marks.partition_point(|m| m.0 <= t);
        let (mt, mr) = if i == 0 {
            (self.ctx, 0)
        } else {
            self.marks[i - 1]
        };
        // Inside a character that decodes to more bytes than it came in (U+FFFD for one
        // invalid byte) the raw offset must not pass the character's end.
        let next = self.marks.get(i).map_or(usize::MAX, |m| m.1);
        (mr + (t - mt)).min(next)
    }

    /// The smallest text offset in `lo..=hi` whose raw offset is at least `r`.
    pub(super) fn text_at_raw(&self, lo: usize, hi: usize, r: usize) -> usize {
        let (mut lo, mut hi) = (lo, hi);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.raw_at(mid) >= r {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        lo
    }

    /// Emits the raw bytes of `text[ctx..end]` with each of `replace`'s ranges of text (in
    /// order, not overlapping) replaced by what `with` writes, and drops them, keeping
    /// CONTEXT bytes of text before `end`. Returns how many bytes of text were dropped.
    #[inline]
    pub(super) fn emit<R>(
        &mut self,
        out: &mut Vec<u8>,
        end: usize,
        replace: impl IntoIterator<Item = ((usize, usize), R)>,
        mut with: impl FnMut(&mut Vec<u8>, R),
    ) -> usize {
        let mut emitted = 0;
        for ((s, e), r) in replace {
            let (rs, re) = (self.raw_at(s), self.raw_at(e));
            out.extend_from_slice(&self.raw[emitted..rs]);
            with(out, r);
            emitted = re;
        }
        let raw_end = self.raw_at(end);
        out.extend_from_slice(&self.raw[emitted..raw_end]);
        self.raw.drain(..raw_end);
        let keep = floor_boundary(&self.text, end.saturating_sub(CONTEXT));
        self.text.drain(..keep);
        self.marks.retain(|m| m.0 > end);
        for m in &mut self.marks {
            m.0 -= keep;
            m.1 -= raw_end;
        }
        self.ctx = end - keep;
        keep
    }
}

pub(super) fn floor_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

pub(super) fn ceil_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i += 1;
    }
    i
}

const LO: u64 = 0x0101_0101_0101_0101;
pub(super) const HI: u64 = LO * 0x80;

/// The bytes of `x` in `lo..=hi` (both below 0x80), as their high bits; exact per byte.
pub(super) fn between(x: u64, lo: u8, hi: u8) -> u64 {
    let low = x & (LO * 0x7F);
    (LO * (127 + u64::from(hi) + 1) - low) & !x & (low + LO * (127 - u64::from(lo) + 1)) & HI
}

/// The bytes of `x` equal to `b`, as their high bits; the lowest one is exact.
fn equal(x: u64, b: u8) -> u64 {
    let v = x ^ (LO * u64::from(b));
    v.wrapping_sub(LO) & !v & HI
}

/// The first index from `i` whose byte `hit` marks, eight bytes at a time (`b.len()` if
/// none): clean text is most of what is scanned.
pub(super) fn find_byte(b: &[u8], mut i: usize, hit: impl Fn(u64) -> u64) -> usize {
    while let Some(word) = b.get(i..i + 8) {
        let x = u64::from_le_bytes(word.try_into().unwrap_or([0; 8]));
        let found = hit(x);
        if found != 0 {
            return i + (found.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < b.len() && hit(u64::from(b[i])) == 0 {
        i += 1;
    }
    i
}
