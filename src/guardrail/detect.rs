//! The detectors: each one's pattern, how the detectors search a segment of decoded text
//! (and which part of the carried window each one searches again), which of overlapping
//! matches wins, and which matches are final. Whether a candidate really is a card number,
//! an IBAN or a phone number is `validate`'s.
//!
//! Choices worth knowing:
//! - `high-entropy` ignores every pure hex token (digests, git SHAs, UUIDs: hex can carry at
//!   most 4 bits a character, the threshold, so only contrived strings would qualify) and
//!   is not run on the values of keys named `data` or `blob`, where MCP puts base64 images,
//!   audio and binary resources; every other detector still runs on those values.
//! - A token run longer than the window is judged in window-sized pieces.
//! - Of overlapping matches the stronger keeps the overlap, and what sticks out of the
//!   weaker one stays a match of its own rule: redacting a key inside a longer token does not
//!   leave the rest of the token in the clear.
//! - Clean text must be cheap: each regex has a literal to look for or only runs on runs of
//!   its characters around a digit, the entropy check looks at one byte in 32 of ordinary
//!   text, and each detector rescans of the carried window only the part where a match it
//!   has not yet seen could start.

use std::cmp::Reverse;

use regex::{CaptureLocations, Regex};

use super::scan::{
    Action, BEARER, CARD, CLOUD_KEY, EMAIL, HIGH_ENTROPY, IBAN, INJECTION, InjectionCheck, JWT,
    PHONE, PRIVATE_KEY,
};
use super::text::{HI, between, ceil_boundary, find_byte, floor_boundary};
use super::validate::{
    card_len, group_ends, high_entropy, iban_valid, phone_valid, private_key_end,
};

/// Every detector, in the order that breaks ties between overlapping matches of equal
/// action: the more specific secret first, and payment-card before phone.
pub(super) const RULES: [&str; N] = [
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
pub(super) const N: usize = 10;
const R_PRIVATE_KEY: u8 = 0;
const R_CLOUD_KEY: u8 = 1;
const R_JWT: u8 = 2;
const R_BEARER: u8 = 3;
const R_CARD: u8 = 4;
const R_IBAN: u8 = 5;
const R_HIGH_ENTROPY: u8 = 6;
const R_EMAIL: u8 = 7;
const R_PHONE: u8 = 8;
pub(super) const R_INJECTION: u8 = 9;

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

/// The enabled detectors, compiled.
pub(super) struct Detectors {
    actions: [Option<Action>; N],
    regexes: [Option<Regex>; N],
    injection: Option<InjectionCheck>,
    window: usize,
}

impl Detectors {
    /// `actions` by index in [`RULES`]; `injection` is used if prompt-injection is on.
    pub(super) fn new(
        actions: [Option<Action>; N],
        injection: Option<InjectionCheck>,
        window: usize,
    ) -> Result<Detectors, regex::Error> {
        let mut regexes = [const { None }; N];
        for (i, re) in regexes.iter_mut().enumerate() {
            if let (Some(_), Some(p)) = (actions[i], pattern(i as u8)) {
                *re = Some(Regex::new(p)?);
            }
        }
        let injection = injection.filter(|_| actions[usize::from(R_INJECTION)].is_some());
        Ok(Detectors {
            actions,
            regexes,
            injection,
            window,
        })
    }

    /// The largest match, in bytes of decoded text.
    pub(super) fn window(&self) -> usize {
        self.window
    }

    /// The detectors that are on, with their actions.
    pub(super) fn enabled(&self) -> Vec<(&'static str, Action)> {
        let on = RULES.iter().zip(&self.actions);
        on.filter_map(|(id, a)| a.map(|a| (*id, a))).collect()
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
    fn detect(&self, text: &str, ctx: usize, resume: &[usize; N], binary: bool, work: &mut Work) {
        work.hits.clear();
        work.names.clear();
        work.tail = text.len();
        let from = |rule: u8| resume[usize::from(rule)].max(ctx);
        for rule in [R_PRIVATE_KEY, R_CLOUD_KEY, R_JWT, R_BEARER, R_EMAIL] {
            self.run(rule, text, from(rule), work);
        }
        self.find_numbers(text, ctx, resume, work);
        if let (Some(action), false) = (self.actions[usize::from(R_HIGH_ENTROPY)], binary) {
            let from = from(R_HIGH_ENTROPY);
            work.tail = find_high_entropy(text, from, self.window, action, &mut work.hits);
        }
        if let (Some(check), Some(action)) =
            (&self.injection, self.actions[usize::from(R_INJECTION)])
        {
            let mut pos = ctx;
            while pos < text.len() {
                let Some((name, s, e)) = check(&text[pos..]) else {
                    break;
                };
                let start = floor_boundary(text, pos + s.min(text.len() - pos));
                let end = ceil_boundary(text, (pos + e.min(text.len() - pos)).max(start + 1));
                work.hits.push(Hit {
                    name: work.names.len(),
                    ..Hit::new(start, end, R_INJECTION, action)
                });
                work.names.push(name);
                pos = end;
            }
        }
    }
}

/// A match, or after [`resolve`] the part of one that no stronger match overlaps.
#[derive(Clone, Copy)]
pub(super) struct Hit {
    start: usize,
    end: usize,
    /// The part replaced when redacted (the credential after "Bearer ", say).
    pub(super) red: (usize, usize),
    rule: u8,
    pub(super) action: Action,
    /// For prompt-injection: the index of the catalog rule's id in `Work::names`.
    name: usize,
    /// A later part of a match that a stronger one split: counted with the first part.
    pub(super) continues: bool,
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
            continues: false,
        }
    }

    pub(super) fn rule(&self) -> &'static str {
        RULES[usize::from(self.rule)]
    }
}

/// One scan's detection state: scratch space reused from segment to segment, and per
/// detector where in the current string its next search starts.
pub(super) struct Finder {
    work: Work,
    /// Per detector, where its next search starts (at least the segment's start).
    resume: [usize; N],
}

struct Work {
    hits: Vec<Hit>,
    names: Vec<String>,
    locs: [Option<CaptureLocations>; N],
    /// Where the token run still open at the segment's end starts, for high-entropy.
    tail: usize,
    claimed: Vec<Hit>,
    merged: Vec<Hit>,
}

impl Finder {
    pub(super) fn new(d: &Detectors) -> Finder {
        let locs = std::array::from_fn(|i| d.regexes[i].as_ref().map(Regex::capture_locations));
        Finder {
            work: Work {
                hits: Vec::new(),
                names: Vec::new(),
                locs,
                tail: 0,
                claimed: Vec::new(),
                merged: Vec::new(),
            },
            resume: [0; N],
        }
    }

    /// Finds the matches in `text[ctx..]`. Those that start before `cut`, or inside one
    /// that does, are final: [`Finder::hits`] are they, resolved (in order, not
    /// overlapping). The others are found again in the next segment. Returns where the final
    /// ones end (at least `cut`): the next segment starts there.
    pub(super) fn find(
        &mut self,
        d: &Detectors,
        text: &str,
        ctx: usize,
        cut: usize,
        binary: bool,
    ) -> usize {
        let w = &mut self.work;
        d.detect(text, ctx, &self.resume, binary, w);
        w.hits.sort_unstable_by_key(|h| (h.start, h.rule));
        // A match that starts inside a final one is final too: the text up to the final
        // one's end is emitted now, and with it any match that starts there.
        let (mut end, mut n) = (cut, 0);
        while let Some(h) = w.hits.get(n).filter(|h| h.start < end) {
            end = end.max(h.end);
            n += 1;
        }
        let mut first = [usize::MAX; N];
        for h in &w.hits[n..] {
            let f = &mut first[usize::from(h.rule)];
            *f = (*f).min(h.start);
        }
        w.hits.truncate(n);
        if w.hits.len() > 1 {
            resolve(&mut w.hits, &mut w.claimed, &mut w.merged);
        }
        for (r, resume) in self.resume.iter_mut().enumerate() {
            let unseen = match reach(r as u8) {
                _ if r == usize::from(R_HIGH_ENTROPY) => w.tail,
                Some(reach) => text.len().saturating_sub(reach),
                None => 0,
            };
            *resume = first[r].min(unseen).max(end);
        }
        end
    }

    pub(super) fn hits(&self) -> &[Hit] {
        &self.work.hits
    }

    /// The catalog rule behind a prompt-injection match.
    pub(super) fn injection_rule(&self, h: &Hit) -> Option<&str> {
        (h.rule == R_INJECTION).then(|| self.work.names[h.name].as_str())
    }

    /// The first `n` bytes of the text were dropped.
    pub(super) fn shift(&mut self, n: usize) {
        for r in &mut self.resume {
            *r -= n;
        }
    }

    /// A new string starts.
    pub(super) fn restart(&mut self) {
        self.resume = [0; N];
    }
}

/// Makes `hits` (sorted by start) disjoint. Where matches overlap, the stronger one (by
/// action, then rule) keeps the overlap, and what sticks out of a weaker one on either side
/// stays a match of its rule, so that redacting the stronger one does not leave the rest of
/// the weaker one in the clear. A part with nothing to redact (the "Bearer " before a
/// credential) is dropped.
fn resolve(hits: &mut Vec<Hit>, claimed: &mut Vec<Hit>, merged: &mut Vec<Hit>) {
    if hits.windows(2).all(|w| w[0].end <= w[1].start) {
        return;
    }
    // Each rule has one action, so rule by rule from the strongest, each claiming what no
    // stronger one has; a rule's own matches do not overlap (each detector searches on from
    // its last match), but are clipped to be sure.
    hits.sort_unstable_by_key(|h| (Reverse(h.action.strength()), h.rule, h.start));
    claimed.clear();
    for rule in hits.chunk_by(|a, b| a.rule == b.rule) {
        merged.clear();
        let (mut j, mut k, mut clip) = (0, 0, 0);
        for h in rule {
            let mut s = h.start.max(clip);
            clip = clip.max(h.end);
            let mut first = true;
            while s < h.end {
                while j < claimed.len() && claimed[j].end <= s {
                    j += 1;
                }
                let (stop, next) = match claimed.get(j) {
                    Some(c) if c.start < h.end => (c.start.max(s), c.end),
                    _ => (h.end, h.end),
                };
                let red = (h.red.0.max(s), h.red.1.min(stop));
                if red.0 < red.1 {
                    while k < claimed.len() && claimed[k].start < s {
                        merged.push(claimed[k]);
                        k += 1;
                    }
                    merged.push(Hit {
                        start: s,
                        end: stop,
                        red,
                        continues: !first,
                        ..*h
                    });
                    first = false;
                }
                s = next;
            }
        }
        merged.extend_from_slice(&claimed[k..]);
        std::mem::swap(claimed, merged);
    }
    std::mem::swap(hits, claimed);
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

#[cfg(test)]
#[path = "detect_tests.rs"]
mod tests;
