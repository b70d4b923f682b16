//! Output guardrails: scans what an upstream MCP server returns (the bytes of a JSON-RPC
//! response: tool results, resource contents, prompt messages) as it streams, for secrets,
//! personal data and indirect prompt injection, and redacts, blocks or flags what it finds.
//!
//! Only JSON string values and keys are scanned, after their escapes are decoded, so a PEM
//! key written with `\n` escapes or an email written with `\u0040` is still found. Nothing
//! is parsed beyond a four-state tokenizer, and memory stays bounded: a string is scanned in
//! segments of at most two windows, and the last window of decoded text is carried into the
//! next segment so that a match split by a segment or a chunk boundary is still found. Where
//! each segment ends depends only on the text, never on how the body was chunked, so the
//! output is the same for any chunking.
//!
//! Output fidelity: a string in which nothing is redacted leaves with its original bytes
//! (same escapes). A redaction splices `[REDACTED:<rule>]` into the original bytes in place
//! of the match, which keeps the rest of the string's escapes and the JSON valid.
//!
//! Choices worth knowing:
//! - `high-entropy` ignores every pure hex token (digests, git SHAs, UUIDs: hex can carry at
//!   most 4 bits a character, the threshold, so only contrived strings would qualify) and
//!   is not run on the values of keys named `data` or `blob`, where MCP puts base64 images,
//!   audio and binary resources; every other detector still runs on those values.
//! - A token run longer than the window is judged in window-sized pieces.
//! - The carried text is also capped at one window of raw bytes, so `held()` stays near two
//!   windows even for text made only of `\uXXXX` escapes; in such text the largest match found
//!   shrinks to what fits in a window of raw bytes.
//! - Clean text must be cheap: each regex has a literal to look for or only runs on runs of
//!   its characters around a digit, the entropy check looks at one byte in 32 of ordinary
//!   text, and each detector rescans of the carried window only the part where a match it
//!   has not yet seen could start.
//! - Invalid UTF-8 and lone surrogates decode to U+FFFD for the detectors; the raw bytes are
//!   still what is emitted.

use std::sync::Arc;

use bytes::Bytes;
use regex::{CaptureLocations, Regex};

/// What a rule does when it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Redact,
    Block,
    Flag,
}

impl Action {
    fn strength(self) -> u8 {
        match self {
            Action::Flag => 0,
            Action::Redact => 1,
            Action::Block => 2,
        }
    }
}

pub const PRIVATE_KEY: &str = "private-key";
pub const CLOUD_KEY: &str = "cloud-key";
pub const JWT: &str = "jwt";
pub const BEARER: &str = "bearer-token";
pub const HIGH_ENTROPY: &str = "high-entropy";
pub const EMAIL: &str = "email";
pub const PHONE: &str = "phone";
pub const CARD: &str = "payment-card";
pub const IBAN: &str = "iban";
pub const INJECTION: &str = "prompt-injection";

/// The window used when the configuration names none.
pub const DEFAULT_WINDOW: usize = 16 * 1024;
pub const MIN_WINDOW: usize = 1024;
pub const MAX_WINDOW: usize = 1024 * 1024;

/// A pluggable text check for indirect prompt injection: given decoded text, the first
/// match as (rule id, byte start, byte end). The gateway passes the catalog scanner's rules.
pub type InjectionCheck = Arc<dyn Fn(&str) -> Option<(String, usize, usize)> + Send + Sync>;

/// Every detector, in the order that breaks ties between overlapping matches of equal
/// action: the more specific secret first, and payment-card before phone.
const RULES: [&str; 10] = [
    PRIVATE_KEY,
    CLOUD_KEY,
    JWT,
    BEARER,
    CARD,
    IBAN,
    HIGH_ENTROPY,
    EMAIL,
    PHONE,
    INJECTION,
];
const R_PRIVATE_KEY: u8 = 0;
const R_CLOUD_KEY: u8 = 1;
const R_JWT: u8 = 2;
const R_BEARER: u8 = 3;
const R_CARD: u8 = 4;
const R_IBAN: u8 = 5;
const R_HIGH_ENTROPY: u8 = 6;
const R_EMAIL: u8 = 7;
const R_PHONE: u8 = 8;
const R_INJECTION: u8 = 9;

/// Candidate patterns; the code behind each one validates what it finds. ASCII word
/// boundaries keep the regex engine on its fast DFA over non-ASCII text.
fn pattern(rule: u8) -> Option<&'static str> {
    Some(match rule {
        R_PRIVATE_KEY => r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----",
        R_CLOUD_KEY => concat!(
            r"(?-u:\b)(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}(?-u:\b)",
            r#"|(?i:aws_?secret_?(?:access_?)?key)["']?\s{0,8}[:=]\s{0,8}["']?([A-Za-z0-9/+]{40})"#,
            r"|AIza[0-9A-Za-z_-]{35}",
            r"|(?-u:\b)gh[pousr]_[A-Za-z0-9]{36,255}(?-u:\b)",
            r"|(?-u:\b)github_pat_[A-Za-z0-9_]{22,255}(?-u:\b)",
            r"|(?-u:\b)xox[abprs]-[A-Za-z0-9-]{10,250}",
            r"|(?-u:\b)[sr]k_live_[A-Za-z0-9]{16,247}(?-u:\b)",
            r"|AccountKey=([A-Za-z0-9+/=]{40,128})",
        ),
        R_JWT => r"(?-u:\b)eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*",
        R_BEARER => concat!(
            r#"(?i:(?-u:\b)(?:proxy-)?authorization["']?\s{0,8}[:=]\s{0,8}["']?(?:(basic|bearer|token)\s{1,8})?"#,
            r"|(?-u:\b)(bearer)\s{1,8})",
            r"([A-Za-z0-9._~+/=-]{8,})",
        ),
        R_CARD => r"(?-u:\b)[3-6][0-9](?:[ -]?[0-9]){11,17}(?-u:\b)",
        R_IBAN => r"(?-u:\b)[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?-u:\b)",
        R_EMAIL => {
            r"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})*\.[A-Za-z]{2,24}(?-u:\b)"
        }
        R_PHONE => r"\+?(?:\([0-9]{1,4}\)|[0-9])[0-9 ().-]{5,22}[0-9]",
        _ => return None,
    })
}

/// How far back from a segment's end a match the detector has not found may start: the
/// longest text it needs to recognize a match (a longer match is found truncated, and so
/// rescanned); None: anywhere in the window.
fn reach(rule: u8) -> Option<usize> {
    match rule {
        R_CLOUD_KEY | R_BEARER => Some(320),
        R_CARD | R_PHONE => Some(48),
        R_IBAN => Some(56),
        _ => None,
    }
}

const N: usize = RULES.len();

/// The compiled rule set: which detectors are on, with which action. Built once per config,
/// shared (Arc) by every call.
pub struct Guard {
    actions: [Option<Action>; N],
    regexes: [Option<Regex>; N],
    injection: Option<InjectionCheck>,
    window: usize,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let on = RULES
            .iter()
            .zip(&self.actions)
            .filter_map(|(id, a)| a.map(|a| (*id, a)));
        let on: Vec<_> = on.collect();
        f.debug_struct("Guard")
            .field("rules", &on)
            .field("window", &self.window)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    #[error("unknown output guardrail rule {id:?}; the rules are: {}", RULES.join(", "))]
    UnknownRule { id: String },
    #[error("the output guardrail rule {0:?} is listed more than once")]
    DuplicateRule(String),
    #[error(
        "the output guardrail rule \"prompt-injection\" is enabled but no injection check was supplied"
    )]
    MissingInjectionCheck,
    #[error(
        "the output guardrail window must be between {MIN_WINDOW} and {MAX_WINDOW} bytes, not {0}"
    )]
    Window(usize),
    #[error("the output guardrail patterns failed to compile: {0}")]
    Pattern(String),
}

/// One rule that matched, for the audit record and metrics (never the matched text itself).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    pub rule: String,
    pub action: Action,
    pub count: u32,
}

/// A block rule matched: the response must not reach the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the response was blocked by the output guardrail {rule:?}")]
pub struct Blocked {
    pub rule: String,
}

impl Guard {
    /// `rules`: (detector id, action) for each enabled detector; ids outside the list above
    /// are an error naming the id and listing the valid ones. `injection` is used when
    /// INJECTION is enabled (error if enabled without one). `window`: the largest match the
    /// scanner will find, in bytes of decoded text (default 16 KiB; min 1 KiB, max 1 MiB;
    /// error otherwise).
    pub fn new(
        rules: &[(String, Action)],
        injection: Option<InjectionCheck>,
        window: usize,
    ) -> Result<Guard, GuardError> {
        if !(MIN_WINDOW..=MAX_WINDOW).contains(&window) {
            return Err(GuardError::Window(window));
        }
        let mut actions = [None; N];
        for (id, action) in rules {
            let Some(i) = RULES.iter().position(|r| r == id) else {
                return Err(GuardError::UnknownRule { id: id.clone() });
            };
            if actions[i].replace(*action).is_some() {
                return Err(GuardError::DuplicateRule(id.clone()));
            }
        }
        let injection = match (actions[usize::from(R_INJECTION)], injection) {
            (Some(_), None) => return Err(GuardError::MissingInjectionCheck),
            (Some(_), check) => check,
            (None, _) => None,
        };
        let mut regexes = [const { None }; N];
        for (i, re) in regexes.iter_mut().enumerate() {
            if let (Some(_), Some(p)) = (actions[i], pattern(i as u8)) {
                *re = Some(Regex::new(p).map_err(|e| GuardError::Pattern(e.to_string()))?);
            }
        }
        Ok(Guard {
            actions,
            regexes,
            injection,
            window,
        })
    }

    /// Starts scanning one response body.
    pub fn scan(self: &Arc<Self>) -> Scan {
        Scan {
            guard: Arc::clone(self),
            mode: Mode::Outside,
            raw: Vec::new(),
            text: String::new(),
            ctx: 0,
            marks: Vec::new(),
            utf8: [0; 4],
            utf8_len: 0,
            high: None,
            skip_entropy: false,
            last_binary_key: false,
            binary_next: false,
            resume: [0; N],
            work: Work {
                hits: Vec::new(),
                names: Vec::new(),
                locs: std::array::from_fn(|i| {
                    self.regexes[i].as_ref().map(Regex::capture_locations)
                }),
                tail: 0,
            },
            findings: Vec::new(),
            injection_rules: Vec::new(),
            blocked: None,
        }
    }

    /// Convenience: scans a whole body at once (used when the gateway already holds it).
    pub fn scan_whole(self: &Arc<Self>, body: &[u8]) -> Result<(Bytes, Vec<Finding>), Blocked> {
        let mut scan = self.scan();
        let head = scan.push(body)?;
        let tail = scan.finish()?;
        let out = if tail.is_empty() {
            head
        } else {
            let mut all = Vec::with_capacity(head.len() + tail.len());
            all.extend_from_slice(&head);
            all.extend_from_slice(&tail);
            Bytes::from(all)
        };
        Ok((out, scan.findings))
    }

    fn run(&self, rule: u8, text: &str, from: usize, work: &mut Work) {
        let i = usize::from(rule);
        // Most strings are short keys and values: skip the regex call where no match fits.
        let shortest = match rule {
            R_PRIVATE_KEY => 40,
            R_CLOUD_KEY => 20,
            R_JWT => 18,
            R_BEARER | R_IBAN => 15,
            R_CARD => 13,
            R_PHONE => 8,
            _ => 6,
        };
        let rest = &text.as_bytes()[from.min(text.len())..];
        if rest.len() < shortest || (rule == R_EMAIL && rest.len() < 256 && !rest.contains(&b'@')) {
            return;
        }
        let (Some(re), Some(action), Some(locs)) =
            (&self.regexes[i], self.actions[i], &mut work.locs[i])
        else {
            return;
        };
        let bytes = text.as_bytes();
        let mut pos = from;
        while let Some(m) = re.captures_read_at(locs, text, pos) {
            let (s, e) = (m.start(), m.end());
            pos = e;
            let hit = match rule {
                R_PRIVATE_KEY => {
                    pos = private_key_end(text, s, e, self.window);
                    Some(Hit::new(s, pos, rule, action))
                }
                R_CLOUD_KEY => {
                    let mut hit = Hit::new(s, e, rule, action);
                    if let Some((gs, ge)) = locs.get(1) {
                        // The 40 characters must be the whole secret, not part of a longer run.
                        let more = |b: &u8| b.is_ascii_alphanumeric() || b"+/=".contains(b);
                        if bytes.get(ge).is_some_and(more) {
                            continue;
                        }
                        hit.red = (gs, ge);
                    } else if let Some(g) = locs.get(2) {
                        hit.red = g;
                    }
                    Some(hit)
                }
                R_BEARER => {
                    let Some((cs, ce)) = locs.get(3) else {
                        continue;
                    };
                    let cred = &bytes[cs..ce];
                    // A bare "bearer" or a scheme-less Authorization needs a credential that
                    // looks like one, or prose like "bearer instruments" would match.
                    let plausible = if locs.get(1).is_some() {
                        cred.len() >= 8
                    } else {
                        cred.len() >= 16 && cred.iter().any(u8::is_ascii_digit)
                    };
                    plausible.then(|| Hit {
                        red: (cs, ce),
                        ..Hit::new(s, e, rule, action)
                    })
                }
                // A greedy candidate can run into the next number: try it shorter, and if it
                // is no number at all, look again from its second group.
                R_CARD | R_PHONE => {
                    let found = if rule == R_CARD {
                        card_len(&text[s..e]).map(|n| s + n)
                    } else {
                        group_ends(bytes, s, e).find(|&end| phone_valid(text, s, end))
                    };
                    pos = found.unwrap_or_else(|| group_ends(bytes, s, e).last().unwrap_or(e));
                    found.map(|end| Hit::new(s, end, rule, action))
                }
                R_IBAN => iban_valid(&text[s..e]).then(|| Hit::new(s, e, rule, action)),
                _ => Some(Hit::new(s, e, rule, action)),
            };
            work.hits.extend(hit);
        }
    }

    /// Phone numbers, cards and IBANs all need digits: their regexes run only on the runs of
    /// their characters around a digit that hold enough digits, which prose and base64 seldom
    /// have.
    fn find_numbers(&self, text: &str, ctx: usize, resume: &[usize; N], work: &mut Work) {
        let on = |r: u8| self.actions[usize::from(r)].is_some();
        let from = |r: u8| resume[usize::from(r)].max(ctx);
        let Some(start) = [R_PHONE, R_CARD, R_IBAN]
            .into_iter()
            .filter(|r| on(*r))
            .map(from)
            .min()
        else {
            return;
        };
        let b = text.as_bytes();
        let phone_card = on(R_PHONE) || on(R_CARD);
        let mut phone_end = if phone_card { start } else { usize::MAX };
        let mut iban_end = if on(R_IBAN) { start } else { usize::MAX };
        let mut i = start;
        loop {
            i = find_byte(b, i, |x| between(x, b'0', b'9'));
            if i >= b.len() {
                break;
            }
            // Cheap necessary conditions first, as base64 is full of digits: a phone or card
            // number has eight phone characters from its first digit on; an IBAN has two
            // capitals before its two check digits.
            let phone_like = |w: &[u8]| {
                let x = u64::from_le_bytes(w.try_into().unwrap_or([0; 8]));
                between(x, b'(', b'9') | between(x, b' ', b' ') == HI
            };
            if i >= phone_end && b.get(i..i + 8).is_none_or(phone_like) {
                let (s, e, digits) = run_around(b, start, i, PHONE_CHAR);
                phone_end = e;
                let hay = &text[..ceil_boundary(text, e + 1)];
                if digits >= 8 {
                    self.run(R_PHONE, hay, s.max(from(R_PHONE)), work);
                }
                if digits >= 13 {
                    self.run(R_CARD, hay, s.max(from(R_CARD)), work);
                }
            }
            let check_digits = i >= 2
                && b[i - 2..i].iter().all(u8::is_ascii_uppercase)
                && b.get(i + 1).is_some_and(u8::is_ascii_digit);
            if i >= iban_end && check_digits {
                let (s, e, digits) = run_around(b, start, i, IBAN_CHAR);
                iban_end = e;
                if digits >= 4 && e - s >= 15 {
                    let hay = &text[..ceil_boundary(text, e + 1)];
                    self.run(R_IBAN, hay, s.max(from(R_IBAN)), work);
                }
            }
            i = (i + 1).max(phone_end.min(iban_end));
        }
    }

    /// Every match in `text[ctx..]` (each detector from its resume point), unresolved: they
    /// may overlap.
    fn detect(
        &self,
        text: &str,
        ctx: usize,
        resume: &[usize; N],
        skip_entropy: bool,
        work: &mut Work,
    ) {
        work.hits.clear();
        work.names.clear();
        work.tail = text.len();
        let from = |rule: u8| resume[usize::from(rule)].max(ctx);
        for rule in [R_PRIVATE_KEY, R_CLOUD_KEY, R_JWT, R_BEARER, R_EMAIL] {
            self.run(rule, text, from(rule), work);
        }
        self.find_numbers(text, ctx, resume, work);
        if let (Some(action), false) = (self.actions[usize::from(R_HIGH_ENTROPY)], skip_entropy) {
            let from = from(R_HIGH_ENTROPY);
            work.tail = find_high_entropy(text, from, self.window, action, &mut work.hits);
        }
        let from = ctx;
        if let (Some(check), Some(action)) =
            (&self.injection, self.actions[usize::from(R_INJECTION)])
        {
            let mut pos = from;
            while pos < text.len() {
                let Some((name, s, e)) = check(&text[pos..]) else {
                    break;
                };
                let start = floor_boundary(text, pos + s.min(text.len() - pos));
                let end = ceil_boundary(text, (pos + e.min(text.len() - pos)).max(start + 1));
                work.hits.push(Hit {
                    start,
                    end,
                    red: (start, end),
                    rule: R_INJECTION,
                    action,
                    name: work.names.len(),
                });
                work.names.push(name);
                pos = end;
            }
        }
    }
}

#[derive(Clone, Copy)]
struct Hit {
    start: usize,
    end: usize,
    /// The part replaced when redacted (the credential after "Bearer ", say).
    red: (usize, usize),
    rule: u8,
    action: Action,
    /// For prompt-injection: the index of the catalog rule's id in `Work::names`.
    name: usize,
}

impl Hit {
    fn new(start: usize, end: usize, rule: u8, action: Action) -> Hit {
        Hit {
            start,
            end,
            red: (start, end),
            rule,
            action,
            name: 0,
        }
    }

    /// Which of two overlapping matches wins: the strongest action, then the more specific
    /// rule, then the longer match.
    fn beats(&self, other: &Hit) -> bool {
        let key = |h: &Hit| (h.action.strength(), u8::MAX - h.rule, h.end - h.start);
        key(self) > key(other)
    }
}

/// Per-scan scratch space, reused from segment to segment.
struct Work {
    hits: Vec<Hit>,
    names: Vec<String>,
    locs: [Option<CaptureLocations>; N],
    /// Where the token run still open at the segment's end starts, for high-entropy.
    tail: usize,
}

/// Where a private key that begins at `s` (its BEGIN line ending at `e`) ends: after its END
/// line if that is within the window, else after the base64 body that follows the BEGIN line.
fn private_key_end(text: &str, s: usize, e: usize, window: usize) -> usize {
    let limit = floor_boundary(text, (s + window).min(text.len()));
    let body = &text[e.min(limit)..limit];
    let kind = |k: &[u8]| {
        k.iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b' ')
    };
    if let Some(i) = body.find("-----END ")
        && let after = e + i + "-----END ".len()
        && let Some(j) = text[after..limit].find("PRIVATE KEY-----")
        && kind(&text.as_bytes()[after..after + j])
    {
        return after + j + "PRIVATE KEY-----".len();
    }
    let pem = |b: &u8| b.is_ascii_alphanumeric() || b"+/=:,-. \r\n\t".contains(b);
    let n = body.as_bytes().iter().take_while(|b| pem(b)).count();
    // Cut by the window: end at a line break, so that the next line is a whole token for
    // the high-entropy detector.
    match body[..n].rfind('\n') {
        Some(nl) if n == body.len() && e + n < text.len() => e + nl + 1,
        _ => e + n,
    }
}

const TOKEN: u8 = 1;
const PHONE_CHAR: u8 = 2;
const IBAN_CHAR: u8 = 4;
static CLASS: [u8; 256] = {
    let mut t = [0; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        let digit = b.is_ascii_digit();
        if b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'_' | b'-') {
            t[i] |= TOKEN;
        }
        if digit || matches!(b, b' ' | b'(' | b')' | b'.' | b'+' | b'-') {
            t[i] |= PHONE_CHAR;
        }
        if digit || b.is_ascii_uppercase() || b == b' ' {
            t[i] |= IBAN_CHAR;
        }
        i += 1;
    }
    t
};
const MIN_TOKEN: usize = 32;

fn is(b: u8, class: u8) -> bool {
    CLASS[usize::from(b)] & class != 0
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = LO * 0x80;

/// The bytes of `x` in `lo..=hi` (both below 0x80), as their high bits; exact per byte.
fn between(x: u64, lo: u8, hi: u8) -> u64 {
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
fn find_byte(b: &[u8], mut i: usize, hit: impl Fn(u64) -> u64) -> usize {
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

/// The run of `class` characters around `b[i]` (not before `lo`), and its digits from `i` on.
fn run_around(b: &[u8], lo: usize, i: usize, class: u8) -> (usize, usize, usize) {
    let mut s = i;
    while s > lo && is(b[s - 1], class) {
        s -= 1;
    }
    let (mut e, mut digits) = (i, 0);
    while e < b.len() && is(b[e], class) {
        digits += usize::from(b[e].is_ascii_digit());
        e += 1;
    }
    (s, e, digits)
}

/// Token runs of at least MIN_TOKEN from `from`, judged in pieces of at most a window.
/// Returns where the run reaching the end of `text` starts (the end if none does).
fn find_high_entropy(
    text: &str,
    from: usize,
    window: usize,
    action: Action,
    hits: &mut Vec<Hit>,
) -> usize {
    let b = text.as_bytes();
    let mut i = from;
    // A run of MIN_TOKEN starting at i or later covers i + MIN_TOKEN - 1: probing that
    // byte skips most of ordinary text.
    while i + MIN_TOKEN <= b.len() {
        let probe = i + MIN_TOKEN - 1;
        if !is(b[probe], TOKEN) {
            i = probe + 1;
            continue;
        }
        let mut s = probe;
        while s > i && is(b[s - 1], TOKEN) {
            s -= 1;
        }
        let mut e = probe + 1;
        while e < b.len() && is(b[e], TOKEN) {
            e += 1;
        }
        let mut p = s;
        while e - p >= MIN_TOKEN {
            let end = (p + window).min(e);
            if high_entropy(&b[p..end]) {
                hits.push(Hit::new(p, end, R_HIGH_ENTROPY, action));
            }
            p = end;
        }
        if e == b.len() {
            return s;
        }
        i = e + 1;
    }
    let mut s = b.len();
    while s > i && is(b[s - 1], TOKEN) {
        s -= 1;
    }
    s
}

fn high_entropy(token: &[u8]) -> bool {
    let (mut letter, mut digit, mut non_hex) = (false, false, false);
    let mut counts = [0u32; 128];
    for &c in token {
        letter |= c.is_ascii_alphabetic();
        digit |= c.is_ascii_digit();
        non_hex |= !(c.is_ascii_hexdigit() || c == b'-');
        counts[usize::from(c & 0x7f)] += 1;
    }
    if !(letter && digit && non_hex) {
        return false;
    }
    let n = token.len() as f64;
    let bits: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum();
    bits >= 4.0
}

/// The Luhn checksum over ASCII digits.
fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(d - b'0');
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

/// The ends of the digit groups of `b[s..e]`, longest first.
fn group_ends(b: &[u8], s: usize, e: usize) -> impl Iterator<Item = usize> + '_ {
    let ends = (s + 1..e).filter(move |&i| b[i - 1].is_ascii_digit() && !b[i].is_ascii_digit());
    let mut ends: Vec<usize> = ends.collect();
    ends.push(e);
    ends.into_iter().rev()
}

/// The length of the card number at the start of `candidate`: the whole candidate, or if that
/// fails the check, the longest prefix ending before a separator (a card followed by another
/// number).
fn card_len(candidate: &str) -> Option<usize> {
    let b = candidate.as_bytes();
    let ends = (0..b.len())
        .filter(|&i| !b[i].is_ascii_digit())
        .chain([b.len()]);
    let ends: Vec<usize> = ends.collect();
    ends.into_iter().rev().find(|&end| {
        let digits: Vec<u8> = b[..end]
            .iter()
            .copied()
            .filter(u8::is_ascii_digit)
            .collect();
        (13..=19).contains(&digits.len()) && luhn(&digits)
    })
}

/// IBAN lengths by country, for the countries that use one.
const IBAN_LENGTHS: &str = "AD24 AE23 AT20 BE16 BG22 BH22 BR29 CH21 CY28 CZ24 DE22 DK18 EE20 ES24 \
    FI18 FO18 FR27 GB22 GI23 GL18 GR27 HR21 HU28 IE22 IL23 IS26 IT27 KW30 KZ20 LB28 LI21 LT20 LU20 \
    LV21 MC27 MT31 NL18 NO15 PL28 PT25 QA29 RO24 SA24 SE24 SI19 SK24 SM27 TN24 TR26 UA29";

/// ISO 13616: the country's length where known, and the ISO 7064 mod-97 check.
fn iban_valid(candidate: &str) -> bool {
    let iban: Vec<u8> = candidate.bytes().filter(|b| *b != b' ').collect();
    if !(15..=34).contains(&iban.len()) || !iban.iter().all(u8::is_ascii_alphanumeric) {
        return false;
    }
    let known = IBAN_LENGTHS
        .split_ascii_whitespace()
        .find(|e| e.as_bytes()[..2] == iban[..2]);
    if known.is_some_and(|e| e[2..].parse() != Ok(iban.len())) {
        return false;
    }
    let mut rem = 0u32;
    for &c in iban[4..].iter().chain(&iban[..4]) {
        let v = match c {
            b'0'..=b'9' => u32::from(c - b'0'),
            _ => u32::from(c.to_ascii_uppercase() - b'A') + 10,
        };
        rem = (rem * if v >= 10 { 100 } else { 10 } + v) % 97;
    }
    rem == 1
}

/// Whether `text[s..e]`, a run of digits and separators, is a phone number: E.164 with a
/// `+`, or a national form with separators (North American, or a trunk prefix 0); never a
/// date, an IP address, a time, or part of a longer number or word.
fn phone_valid(text: &str, s: usize, e: usize) -> bool {
    let b = text.as_bytes();
    if s > 0 && (b[s - 1].is_ascii_alphanumeric() || b"._-/+".contains(&b[s - 1])) {
        return false;
    }
    match b.get(e) {
        Some(c) if c.is_ascii_alphanumeric() || *c == b':' => return false,
        Some(c) if b".-/".contains(c) && b.get(e + 1).is_some_and(u8::is_ascii_digit) => {
            return false;
        }
        _ => {}
    }
    let cand = &b[s..e];
    let mut groups: Vec<&[u8]> = Vec::new();
    let (mut run, mut parens, mut dots_only) = (0, 0, true);
    for part in cand.split(|c| !c.is_ascii_digit()) {
        if !part.is_empty() {
            groups.push(part);
        }
    }
    for &c in cand {
        if c.is_ascii_digit() {
            run = 0;
            continue;
        }
        run += 1;
        parens += usize::from(c == b'(' || c == b')');
        dots_only &= c == b'.' || c == b'+';
        if run > 2 {
            return false;
        }
    }
    if parens > 2 {
        return false;
    }
    let digits: usize = groups.iter().map(|g| g.len()).sum();
    let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    let mut seps = cand.iter().filter(|c| !c.is_ascii_digit() && **c != b'+');
    let date_seps = seps.by_ref().take(2).filter(|c| b"-/.".contains(c)).count() == 2;
    let date = date_seps
        && lens.len() >= 3
        && lens[1] <= 2
        && ((lens[0] == 4 && lens[2] <= 2) || (lens[0] <= 2 && lens[2] == 4));
    if date || (dots_only && lens.len() == 4 && lens.iter().all(|&n| n <= 3)) {
        return false;
    }
    if cand[0] == b'+' {
        return (8..=15).contains(&digits) && cand.get(1).is_some_and(|c| *c != b'0');
    }
    if groups.len() < 2 {
        return false;
    }
    let nanp = match lens.as_slice() {
        [1, rest @ ..] if groups[0] == b"1" => rest,
        all => all,
    };
    if nanp == [3, 3, 4] && groups[groups.len() - 3][0] >= b'2' {
        return true;
    }
    groups[0][0] == b'0' && (9..=11).contains(&digits) && lens[1..].iter().all(|&n| n >= 2)
}

fn floor_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i += 1;
    }
    i
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Outside,
    Str,
    Escape,
    Unicode { digits: u8, value: u32 },
}

/// The scan of one response body.
pub struct Scan {
    guard: Arc<Guard>,
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
    skip_entropy: bool,
    last_binary_key: bool,
    binary_next: bool,
    work: Work,
    findings: Vec<Finding>,
    injection_rules: Vec<String>,
    blocked: Option<Blocked>,
    /// Per detector, where its next scan starts (at least `ctx`).
    resume: [usize; N],
}

/// Text already emitted that is kept before a segment, for the detectors' context.
const CONTEXT: usize = 32;

impl Scan {
    /// Feeds the next piece of the body; returns the bytes that may now be sent (possibly
    /// empty, never more than what was fed plus what was held back), or Blocked.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Bytes, Blocked> {
        if let Some(b) = &self.blocked {
            return Err(b.clone());
        }
        let mut out = Vec::with_capacity(chunk.len() + 32);
        let r = self.feed(chunk, &mut out);
        self.outcome(r, out)
    }

    /// The end of the body: the rest of the bytes.
    pub fn finish(&mut self) -> Result<Bytes, Blocked> {
        if let Some(b) = &self.blocked {
            return Err(b.clone());
        }
        let mut out = Vec::new();
        let r = if self.mode == Mode::Outside {
            Ok(())
        } else {
            // An unterminated string (a truncated or non-JSON body): what is held goes out,
            // scanned, with any partial escape as it came.
            self.flush_utf8();
            self.flush_high();
            self.end_segment(&mut out).map(|()| {
                out.extend_from_slice(&self.raw);
                self.mode = Mode::Outside;
                self.raw.clear();
            })
        };
        self.outcome(r, out)
    }

    /// What has matched so far (one entry per rule, with a count).
    pub fn findings(&self) -> &[Finding] {
        &self.findings
    }

    /// The catalog rules (as named by the injection check) behind the prompt-injection
    /// findings, each once.
    pub fn injection_rules(&self) -> &[String] {
        &self.injection_rules
    }

    /// Bytes currently held back (bounded: at most about 2 * window plus one JSON escape).
    pub fn held(&self) -> usize {
        self.raw.len()
    }

    fn outcome(&mut self, r: Result<(), Blocked>, out: Vec<u8>) -> Result<Bytes, Blocked> {
        match r {
            Ok(()) => Ok(Bytes::from(out)),
            Err(b) => {
                self.blocked = Some(b.clone());
                self.raw = Vec::new();
                self.text = String::new();
                Err(b)
            }
        }
    }

    fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), Blocked> {
        let mut i = 0;
        while i < chunk.len() {
            match self.mode {
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
                }
                Mode::Str => {
                    // At most a window at a time, so that a large chunk is not copied whole
                    // into the buffers and then moved along them segment by segment.
                    let start = i;
                    let piece = &chunk[..chunk.len().min(i + self.guard.window)];
                    i = find_byte(piece, i, |x| equal(x, b'"') | equal(x, b'\\'));
                    self.plain(&chunk[start..i]);
                    if i < piece.len() {
                        self.flush_utf8();
                        if chunk[i] == b'"' {
                            self.flush_high();
                            self.end_segment(out)?;
                            out.extend_from_slice(&self.raw);
                            out.push(b'"');
                            self.end_string();
                        } else {
                            self.raw.push(b'\\');
                            self.mode = Mode::Escape;
                        }
                        i += 1;
                    }
                    if self.mode != Mode::Outside {
                        self.maybe_scan(out)?;
                    }
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
                        continue;
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
                    self.maybe_scan(out)?;
                }
                Mode::Unicode { digits, value } => {
                    let b = chunk[i];
                    let Some(d) = char::from(b).to_digit(16) else {
                        // Not JSON: the partial escape stands for one unknown character and
                        // this byte is read again as string content.
                        self.flush_high();
                        self.push_char('\u{fffd}');
                        self.mode = Mode::Str;
                        continue;
                    };
                    i += 1;
                    self.raw.push(b);
                    let value = value * 16 + d;
                    if digits < 3 {
                        self.mode = Mode::Unicode {
                            digits: digits + 1,
                            value,
                        };
                        continue;
                    }
                    self.mode = Mode::Str;
                    self.unicode_escape(value);
                    self.maybe_scan(out)?;
                }
            }
        }
        Ok(())
    }

    fn begin_string(&mut self) {
        self.mode = Mode::Str;
        self.raw.clear();
        self.text.clear();
        self.marks.clear();
        self.ctx = 0;
        self.resume = [0; N];
        self.utf8_len = 0;
        self.high = None;
        self.skip_entropy = self.binary_next;
        self.binary_next = false;
        self.last_binary_key = false;
    }

    fn end_string(&mut self) {
        self.mode = Mode::Outside;
        // A trimmed string keeps at least CONTEXT bytes, so only a short one can equal these.
        self.last_binary_key = matches!(self.text.as_str(), "data" | "blob");
        self.raw.clear();
        self.marks.clear();
        self.text.clear();
        self.ctx = 0;
        // Keep the allocations of ordinary strings, not those of a huge one.
        if self.text.capacity() > 4 * self.guard.window {
            self.text = String::new();
            self.raw = Vec::new();
        }
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
    fn raw_at(&self, t: usize) -> usize {
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
    fn text_at_raw(&self, lo: usize, hi: usize, r: usize) -> usize {
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

    /// Scans and emits a segment while the held text or raw bytes reach two windows. The
    /// segment is at most two windows of both, and what is carried at most one of each, so
    /// where segments end depends only on the text.
    fn maybe_scan(&mut self, out: &mut Vec<u8>) -> Result<(), Blocked> {
        let w = self.guard.window;
        while self.text.len() - self.ctx >= 2 * w || self.raw.len() >= 2 * w {
            let hi = floor_boundary(&self.text, self.text.len().min(self.ctx + 2 * w));
            let l = if self.raw_at(hi) <= 2 * w {
                hi
            } else {
                let over = self.text_at_raw(self.ctx, hi, 2 * w + 1);
                floor_boundary(&self.text, over - 1)
            };
            let mut cut = floor_boundary(&self.text, l.saturating_sub(w)).max(self.ctx);
            let rl = self.raw_at(l);
            if rl > w {
                let t = self.text_at_raw(self.ctx, l, rl - w);
                cut = cut.max(ceil_boundary(&self.text, t));
            }
            if cut <= self.ctx {
                break;
            }
            self.segment(out, l, cut)?;
        }
        Ok(())
    }

    /// Scans all the held text as final.
    fn end_segment(&mut self, out: &mut Vec<u8>) -> Result<(), Blocked> {
        let l = self.text.len();
        self.segment(out, l, l)
    }

    /// Scans `text[ctx..l]`; matches that start before `cut` are final: they are recorded,
    /// and the text up to `cut` (or the end of a final match, if later) is emitted.
    fn segment(&mut self, out: &mut Vec<u8>, l: usize, cut: usize) -> Result<(), Blocked> {
        let text = &self.text[..l];
        (self.guard).detect(
            text,
            self.ctx,
            &self.resume,
            self.skip_entropy,
            &mut self.work,
        );
        let hits = &mut self.work.hits;
        let mut first = [usize::MAX; N];
        for h in hits.iter().filter(|h| h.start >= cut) {
            let f = &mut first[usize::from(h.rule)];
            *f = (*f).min(h.start);
        }
        hits.sort_unstable_by_key(|h| (h.start, h.rule));
        let mut kept = 0;
        for i in 0..hits.len() {
            let h = hits[i];
            if kept > 0 && h.start < hits[kept - 1].end {
                if h.beats(&hits[kept - 1]) {
                    hits[kept - 1] = h;
                }
            } else {
                hits[kept] = h;
                kept += 1;
            }
        }
        hits.truncate(kept);

        let mut end = cut;
        let mut emitted = 0;
        for k in 0..self.work.hits.len() {
            let h = self.work.hits[k];
            if h.start >= cut {
                break;
            }
            end = end.max(h.end);
            let rule = RULES[usize::from(h.rule)];
            self.record(rule, h.action);
            if h.rule == R_INJECTION {
                let name = &self.work.names[h.name];
                if !self.injection_rules.contains(name) {
                    self.injection_rules.push(name.clone());
                }
            }
            match h.action {
                Action::Block => {
                    return Err(Blocked {
                        rule: rule.to_string(),
                    });
                }
                Action::Redact => {
                    let (rs, re) = (self.raw_at(h.red.0), self.raw_at(h.red.1));
                    out.extend_from_slice(&self.raw[emitted..rs]);
                    out.extend_from_slice(b"[REDACTED:");
                    out.extend_from_slice(rule.as_bytes());
                    out.push(b']');
                    emitted = re;
                }
                Action::Flag => {}
            }
        }
        for (r, resume) in self.resume.iter_mut().enumerate() {
            let unseen = match reach(r as u8) {
                _ if r == usize::from(R_HIGH_ENTROPY) => self.work.tail,
                Some(reach) => l.saturating_sub(reach),
                None => 0,
            };
            *resume = first[r].min(unseen).max(end);
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
        for r in &mut self.resume {
            *r -= keep;
        }
        Ok(())
    }

    fn record(&mut self, rule: &str, action: Action) {
        match self.findings.iter_mut().find(|f| f.rule == rule) {
            Some(f) => f.count += 1,
            None => self.findings.push(Finding {
                rule: rule.to_string(),
                action,
                count: 1,
            }),
        }
    }
}

#[cfg(test)]
#[path = "scan_tests.rs"]
mod tests;
