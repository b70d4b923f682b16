//! Output guardrails: scans what an upstream MCP server returns (the bytes of a JSON-RPC
//! response: tool results, resource contents, prompt messages) as it streams, for secrets,
//! personal data and indirect prompt injection, and redacts, blocks or flags what it finds.
//! This is the interface ([`Guard`], [`Scan`]) and the streaming: when a segment of a string
//! is scanned and what of it is emitted. Reading the strings is `text`'s; what matches is
//! `detect`'s.
//!
//! Only JSON string values and keys are scanned, after their escapes are decoded, so a PEM
//! key written with `\n` escapes or an email written with `\u0040` is still found. Memory
//! stays bounded: a string is scanned in segments of at most two windows, and the last
//! window of decoded text is carried into the next segment so that a match split by a
//! segment or a chunk boundary is still found. Where each segment ends depends only on the
//! text, never on how the body was chunked, so the output is the same for any chunking.
//! The carried text is also capped at one window of raw bytes, so `held()` stays near two
//! windows even for text made only of `\uXXXX` escapes; in such text the largest match found
//! shrinks to what fits in a window of raw bytes.
//!
//! Output fidelity: a string in which nothing is redacted leaves with its original bytes
//! (same escapes). A redaction splices `[REDACTED:<rule>]` into the original bytes in place
//! of the match, which keeps the rest of the string's escapes and the JSON valid.

use std::sync::Arc;

use bytes::Bytes;

use super::detect::{Detectors, Finder, N, R_INJECTION, RULES};
use super::text::{Step, Text, ceil_boundary, floor_boundary};

/// What a rule does when it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Redact,
    Block,
    Flag,
}

impl Action {
    /// Which of two overlapping matches wins.
    pub(super) fn strength(self) -> u8 {
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

/// The compiled rule set: which detectors are on, with which action. Built once per config,
/// shared (Arc) by every call.
pub struct Guard {
    detectors: Detectors,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("rules", &self.detectors.enabled())
            .field("window", &self.detectors.window())
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
        if actions[usize::from(R_INJECTION)].is_some() && injection.is_none() {
            return Err(GuardError::MissingInjectionCheck);
        }
        let detectors = Detectors::new(actions, injection, window)
            .map_err(|e| GuardError::Pattern(e.to_string()))?;
        Ok(Guard { detectors })
    }

    /// Starts scanning one response body.
    pub fn scan(self: &Arc<Self>) -> Scan {
        Scan {
            guard: Arc::clone(self),
            text: Text::new(self.detectors.window()),
            finder: Finder::new(&self.detectors),
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
}

/// The scan of one response body.
pub struct Scan {
    guard: Arc<Guard>,
    text: Text,
    finder: Finder,
    findings: Vec<Finding>,
    injection_rules: Vec<String>,
    blocked: Option<Blocked>,
}

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
        let r = if self.text.in_string() {
            // An unterminated string (a truncated or non-JSON body): what is held goes out,
            // scanned, with any partial escape as it came.
            self.text.flush();
            self.end_segment(&mut out)
                .map(|()| self.text.close(&mut out, false))
        } else {
            Ok(())
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
        self.text.held()
    }

    fn outcome(&mut self, r: Result<(), Blocked>, out: Vec<u8>) -> Result<Bytes, Blocked> {
        match r {
            Ok(()) => Ok(Bytes::from(out)),
            Err(b) => {
                self.blocked = Some(b.clone());
                self.text.discard();
                Err(b)
            }
        }
    }

    fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), Blocked> {
        let mut i = 0;
        while i < chunk.len() {
            let step;
            (i, step) = self.text.read(chunk, i, out);
            match step {
                Step::Nothing => {}
                Step::Grew => self.maybe_scan(out)?,
                Step::Ended => {
                    self.end_segment(out)?;
                    self.text.close(out, true);
                    self.finder.restart();
                }
            }
        }
        Ok(())
    }

    /// Scans and emits a segment while the held text or raw bytes reach two windows. The
    /// segment is at most two windows of both, and what is carried at most one of each, so
    /// where segments end depends only on the text.
    fn maybe_scan(&mut self, out: &mut Vec<u8>) -> Result<(), Blocked> {
        let w = self.guard.detectors.window();
        loop {
            let (t, ctx) = (&self.text, self.text.ctx());
            let len = t.decoded().len();
            if len - ctx < 2 * w && t.held() < 2 * w {
                return Ok(());
            }
            let hi = floor_boundary(t.decoded(), len.min(ctx + 2 * w));
            let l = if t.raw_at(hi) <= 2 * w {
                hi
            } else {
                let over = t.text_at_raw(ctx, hi, 2 * w + 1);
                floor_boundary(t.decoded(), over - 1)
            };
            let mut cut = floor_boundary(t.decoded(), l.saturating_sub(w)).max(ctx);
            let rl = t.raw_at(l);
            if rl > w {
                let at = t.text_at_raw(ctx, l, rl - w);
                cut = cut.max(ceil_boundary(t.decoded(), at));
            }
            if cut <= ctx {
                return Ok(());
            }
            self.segment(out, l, cut)?;
        }
    }

    /// Scans all the held text as final.
    fn end_segment(&mut self, out: &mut Vec<u8>) -> Result<(), Blocked> {
        let l = self.text.decoded().len();
        self.segment(out, l, l)
    }

    /// Scans `text[ctx..l]`; matches that start before `cut` (and any that starts inside one
    /// of those) are final: they are recorded, and the text up to `cut` (or the end of a
    /// final match, if later) is emitted.
    fn segment(&mut self, out: &mut Vec<u8>, l: usize, cut: usize) -> Result<(), Blocked> {
        let text = &self.text.decoded()[..l];
        let (ctx, binary) = (self.text.ctx(), self.text.binary());
        let end = (self.finder).find(&self.guard.detectors, text, ctx, cut, binary);
        for h in self.finder.hits() {
            if !h.continues {
                record(&mut self.findings, h.rule(), h.action);
            }
            if let Some(name) = self.finder.injection_rule(h)
                && !self.injection_rules.iter().any(|r| r == name)
            {
                self.injection_rules.push(name.to_owned());
            }
            if h.action == Action::Block {
                return Err(Blocked {
                    rule: h.rule().to_string(),
                });
            }
        }
        let hits = self.finder.hits().iter();
        let redacted = hits.filter(|h| h.action == Action::Redact);
        let keep = self.text.emit(
            out,
            end,
            redacted.map(|h| (h.red, h.rule())),
            |out, rule| {
                out.extend_from_slice(b"[REDACTED:");
                out.extend_from_slice(rule.as_bytes());
                out.push(b']');
            },
        );
        self.finder.shift(keep);
        Ok(())
    }
}

fn record(findings: &mut Vec<Finding>, rule: &str, action: Action) {
    match findings.iter_mut().find(|f| f.rule == rule) {
        Some(f) => f.count += 1,
        None => findings.push(Finding {
            rule: rule.to_string(),
            action,
            count: 1,
        }),
    }
}

#[cfg(test)]
#[path = "scan_tests.rs"]
mod tests;
