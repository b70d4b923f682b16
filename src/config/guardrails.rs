//! `servers[].guardrails`: the built-in output guardrails, per detector what a match does
//! (redact, block, flag or off), and the window the scanner holds.

use crate::guardrail::scan::{self, Action};
use serde::Deserialize;
use std::collections::BTreeMap;

/// `servers[].guardrails`; `guardrails: {}` is the default rule set.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Guardrails {
    /// Detector id → `redact`, `block`, `flag` or `off`, over [`DEFAULT_RULES`].
    #[serde(default)]
    pub rules: BTreeMap<String, RuleAction>,
    /// The longest text a detector can match, in bytes; the scanner holds back about twice
    /// this much of a streamed result.
    #[serde(default)]
    pub window: Option<usize>,
}

/// What one detector does.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RuleAction {
    /// Replaces the match with `[REDACTED:<id>]`.
    Redact,
    /// Refuses the result with an error.
    Block,
    /// Records the finding (audit record, metric) and changes nothing.
    Flag,
    /// Not scanned for.
    Off,
}

/// The default window: room for a 4096-bit RSA key in PEM.
pub const DEFAULT_WINDOW: usize = scan::DEFAULT_WINDOW;

/// What `guardrails: {}` turns on: keys that unlock systems are blocked or redacted; what
/// may be a false positive (personal data in ordinary text, high entropy, injection
/// phrasing) is flagged for review.
pub const DEFAULT_RULES: [(&str, RuleAction); 10] = [
    (scan::PRIVATE_KEY, RuleAction::Block),
    (scan::CLOUD_KEY, RuleAction::Redact),
    (scan::JWT, RuleAction::Redact),
    (scan::BEARER, RuleAction::Redact),
    (scan::HIGH_ENTROPY, RuleAction::Flag),
    (scan::EMAIL, RuleAction::Flag),
    (scan::PHONE, RuleAction::Flag),
    (scan::CARD, RuleAction::Redact),
    (scan::IBAN, RuleAction::Redact),
    (scan::INJECTION, RuleAction::Flag),
];

impl Guardrails {
    /// The detectors that are on, with their actions: the defaults with `rules` over them.
    pub fn effective(&self) -> Vec<(String, Action)> {
        DEFAULT_RULES
            .iter()
            .map(|(id, a)| (*id, *self.rules.get(*id).unwrap_or(a)))
            .filter_map(|(id, a)| {
                let action = match a {
                    RuleAction::Redact => Action::Redact,
                    RuleAction::Block => Action::Block,
                    RuleAction::Flag => Action::Flag,
                    RuleAction::Off => return None,
                };
                Some((id.to_owned(), action))
            })
            .collect()
    }

    /// The window in bytes.
    pub fn window(&self) -> usize {
        self.window.unwrap_or(DEFAULT_WINDOW)
    }
}

/// Checks one server's guardrails; `field` is e.g. `servers[0].guardrails`.
pub fn check(field: &str, g: &Guardrails, add: &mut dyn FnMut(String, String)) {
    for id in g.rules.keys() {
        if !DEFAULT_RULES.iter().any(|(d, _)| d == id) {
            let known: Vec<&str> = DEFAULT_RULES.iter().map(|(d, _)| *d).collect();
            add(
                format!("{field}.rules.{id}"),
                format!("unknown detector; expected one of {}", known.join(", ")),
            );
        }
    }
    if let Some(w) = g.window
        && !(scan::MIN_WINDOW..=scan::MAX_WINDOW).contains(&w)
    {
        add(
            format!("{field}.window"),
            format!(
                "{w} is outside {}–{} bytes",
                scan::MIN_WINDOW,
                scan::MAX_WINDOW
            ),
        );
    }
}
