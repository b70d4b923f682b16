//! Configuration of the audit trail.

use super::duration::HumanDuration;
use serde::Deserialize;
use std::time::Duration;

/// Where and how audit records are kept.
#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Audit {
    /// Record decisions and calls at all.
    pub enabled: bool,
    /// Write records to the store.
    pub store: bool,
    /// Also write each record as a JSON line: `stdout` or a file path (appended).
    pub jsonl: Option<String>,
    /// Records waiting for the writer; beyond this `on_full` applies.
    pub queue_capacity: usize,
    /// Most records written in one transaction.
    pub batch_size: usize,
    /// Longest a record waits before it is written: what a crash can lose.
    pub flush_interval: HumanDuration,
    /// `block` (a record waits for room; none is lost) or `drop` (counted in a metric).
    pub on_full: OnFull,
    /// Records older than this are deleted (hourly).
    pub retention: HumanDuration,
    /// Keep tool arguments in records (redacted).
    pub record_arguments: bool,
    /// Redaction of arguments.
    pub redact: Redact,
}

impl Default for Audit {
    fn default() -> Self {
        Audit {
            enabled: true,
            store: true,
            jsonl: None,
            queue_capacity: 10_000,
            batch_size: 500,
            flush_interval: HumanDuration(Duration::from_secs(1)),
            on_full: OnFull::Block,
            retention: HumanDuration(Duration::from_secs(90 * 86_400)),
            record_arguments: true,
            redact: Redact::default(),
        }
    }
}

/// What happens when the audit queue is full.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnFull {
    /// The record waits for room (the request does not); nothing is lost.
    Block,
    /// The record is dropped and counted (`gatehouse_audit_dropped_total`).
    Drop,
}

/// How arguments are redacted before they are recorded.
#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Redact {
    /// Object keys whose values are masked, compared case-insensitively as substrings
    /// (`token` masks `access_token` and `X-Token`).
    pub keys: Vec<String>,
    /// Tools (globs, as clients see them) whose arguments are kept only as a SHA-256 digest.
    pub digest_tools: Vec<String>,
}

impl Default for Redact {
    fn default() -> Self {
        Redact {
            keys: [
                "password",
                "passwd",
                "secret",
                "token",
                "authorization",
                "api_key",
                "apikey",
                "cookie",
                "credential",
                "private_key",
            ]
            .map(String::from)
            .to_vec(),
            digest_tools: Vec::new(),
        }
    }
}

/// Checks of the audit settings.
pub(super) fn check(a: &Audit, add: &mut dyn FnMut(String, String)) {
    if a.queue_capacity == 0 {
        add("audit.queue_capacity".into(), "must be at least 1".into());
    }
    if a.batch_size == 0 {
        add("audit.batch_size".into(), "must be at least 1".into());
    }
    if a.flush_interval.0 < Duration::from_millis(10)
        || a.flush_interval.0 > Duration::from_secs(60)
    {
        add(
            "audit.flush_interval".into(),
            "expected between 10ms and 60s".into(),
        );
    }
    if a.retention.0 < Duration::from_secs(3600) {
        add("audit.retention".into(), "at least 1h".into());
    }
    if let Some(j) = &a.jsonl
        && j.is_empty()
    {
        add(
            "audit.jsonl".into(),
            "expected `stdout` or a file path".into(),
        );
    }
    if a.redact.keys.iter().any(String::is_empty) {
        add(
            "audit.redact.keys".into(),
            "an empty key would mask everything".into(),
        );
    }
}
