//! The audit trail: one record per decision and per call, handed to a bounded queue so that the
//! request path never waits on disk, and written in batches by [`writer`].

pub mod redact;
mod writer;

pub use crate::store::AuditRecord;
pub use redact::Redactor;

use crate::config::{Audit, OnFull};
use crate::store::Store;
use crate::telemetry::metrics::{METRICS, RequestLabels};
use rand::RngCore;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A result.
    Ok,
    /// A JSON-RPC error (from the upstream or the gateway).
    Error(i64),
    /// The upstream failed or could not be reached.
    UpstreamFailure,
    /// The upstream did not answer in time.
    Timeout,
    /// Refused by authentication or policy (HTTP status or JSON-RPC code).
    Refused(i64),
    /// The client went away or cancelled.
    Cancelled,
}

impl Outcome {
    /// The outcome a JSON-RPC answer represents.
    pub fn of_message(m: &crate::protocol::Message) -> Outcome {
        match m.error_code() {
            None => Outcome::Ok,
            Some(c) if c == crate::protocol::ErrorCode::REQUEST_TIMEOUT.0 => Outcome::Timeout,
            Some(c) if c == crate::protocol::ErrorCode::UPSTREAM_UNAVAILABLE.0 => {
                Outcome::UpstreamFailure
            }
            Some(c) => Outcome::Error(c),
        }
    }

    fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error(_) => "error",
            Outcome::UpstreamFailure => "upstream_failure",
            Outcome::Timeout => "timeout",
            Outcome::Refused(_) => "refused",
            Outcome::Cancelled => "cancelled",
        }
    }

    fn code(self) -> Option<i64> {
        match self {
            Outcome::Error(c) | Outcome::Refused(c) => Some(c),
            // The codes the client was answered with, so that a search by code finds them.
            Outcome::Timeout => Some(crate::protocol::ErrorCode::REQUEST_TIMEOUT.0),
            Outcome::UpstreamFailure => Some(crate::protocol::ErrorCode::UPSTREAM_UNAVAILABLE.0),
            Outcome::Cancelled => None,
            Outcome::Ok => None,
        }
    }
}

/// Records waiting for the writer. A plain buffer rather than a channel: the writer is woken
/// only when a batch is full (or by its timer), not once per record, so auditing costs the
/// request path a lock and a push.
pub(crate) struct Queue {
    records: Mutex<Vec<AuditRecord>>,
    capacity: usize,
    batch_size: usize,
    batch_ready: tokio::sync::Notify,
}

impl Queue {
    /// Adds a record; gives it back when the queue is full.
    fn push(&self, record: AuditRecord) -> Option<AuditRecord> {
        let mut q = self.records.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() >= self.capacity {
            return Some(record);
        }
        q.push(record);
        let len = q.len();
        drop(q);
        METRICS.audit_queue_depth.set(len as i64);
        if len == self.batch_size {
            self.batch_ready.notify_one();
        }
        None
    }

    /// Everything queued so far.
    pub(crate) fn take(&self) -> Vec<AuditRecord> {
        let taken = std::mem::take(&mut *self.records.lock().unwrap_or_else(|e| e.into_inner()));
        METRICS.audit_queue_depth.set(0);
        taken
    }
}

/// The process's audit queue.
pub struct Auditor {
    queue: Arc<Queue>,
    on_full: OnFull,
    redactor: Redactor,
    record_arguments: bool,
    /// Each upstream's tenant: records about an upstream (catalog events) carry it.
    tenants: arc_swap::ArcSwap<crate::config::tenants::Owners>,
    stop: tokio::sync::Notify,
    stopped: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Auditor {
    /// Starts the writer; `None` when auditing is disabled.
    /// A relative `jsonl` path is taken relative to `base_dir` (the configuration's folder).
    pub fn start(
        config: &Audit,
        store: Option<Store>,
        base_dir: &std::path::Path,
    ) -> Option<Arc<Auditor>> {
        if !config.enabled {
            return None;
        }
        let queue = Arc::new(Queue {
            records: Mutex::new(Vec::new()),
            capacity: config.queue_capacity,
            batch_size: config.batch_size,
            batch_ready: tokio::sync::Notify::new(),
        });
        let store = if config.store { store } else { None };
        let auditor = Arc::new(Auditor {
            queue: queue.clone(),
            on_full: config.on_full,
            redactor: Redactor::new(&config.redact),
            record_arguments: config.record_arguments,
            tenants: Default::default(),
            stop: tokio::sync::Notify::new(),
            stopped: tokio::sync::Mutex::new(None),
        });
        let mut settings = writer::Settings::from(config);
        settings.resolve_paths(base_dir);
        let task = tokio::spawn(writer::run(settings, store, queue, auditor.clone()));
        *auditor.stopped.try_lock().expect("new mutex") = Some(task);
        Some(auditor)
    }

    /// Queues a record without waiting; a full queue drops it (`drop`) or lets it wait in a
    /// task for room (`block`).
    pub fn submit(&self, mut record: AuditRecord) {
        if record.tenant.is_none()
            && let Some(u) = &record.upstream
        {
            record.tenant = self.tenants.load().of_upstream(u).map(str::to_owned);
        }
        let Some(record) = self.queue.push(record) else {
            return;
        };
        match self.on_full {
            OnFull::Drop => {
                METRICS.audit_dropped.inc();
            }
            OnFull::Block => {
                let queue = self.queue.clone();
                queue.batch_ready.notify_one();
                tokio::spawn(async move {
                    let mut record = record;
                    loop {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        match queue.push(record) {
                            None => return,
                            Some(r) => record = r,
                        }
                    }
                });
            }
        }
    }

    /// Sets each upstream's tenant (from the configuration being served).
    pub fn set_tenants(&self, tenants: Arc<crate::config::tenants::Owners>) {
        self.tenants.store(tenants);
    }

    /// Writes everything queued and stops the writer (at shutdown).
    pub async fn close(&self) {
        self.stop.notify_one();
        if let Some(task) = self.stopped.lock().await.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }

    /// Whether records keep call arguments (otherwise nobody need parse them for the trail).
    pub fn records_arguments(&self) -> bool {
        self.record_arguments
    }

    /// The arguments as they may be recorded.
    pub fn arguments(
        &self,
        tool: Option<&str>,
        args: Option<&serde_json::Value>,
    ) -> Option<String> {
        if !self.record_arguments {
            return None;
        }
        args.map(|a| self.redactor.apply(tool, a))
    }
}

/// A request being audited: filled in as the request proceeds, written once when it ends
/// (or, if it is dropped unfinished, as cancelled).
pub struct Ticket {
    auditor: Option<Arc<Auditor>>,
    started: Instant,
    upstream_started: Mutex<Option<Instant>>,
    record: Mutex<AuditRecord>,
    bytes_out: AtomicU64,
    /// Whether the target name was found at an upstream (it may then label metrics).
    routed: AtomicBool,
    done: AtomicBool,
}

/// Who a record is about.
pub struct Who<'a> {
    /// Subject, issuer and client of the principal, if authenticated.
    pub principal: Option<&'a crate::auth::Principal>,
    /// The tenant of the server addressed.
    pub tenant: Option<&'a str>,
}

/// Most bytes of a caller-chosen name (method, target) an audit record keeps: a name is
/// the caller's to choose up to the body limit, and every record is queued, stored and
/// exported.
const MAX_NAME_BYTES: usize = 512;

/// `name`, or its first [`MAX_NAME_BYTES`] (at a character boundary) and how long it was.
pub fn clipped(name: &str) -> String {
    if name.len() <= MAX_NAME_BYTES {
        return name.to_owned();
    }
    let mut end = MAX_NAME_BYTES;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &name[..end], name.len())
}

impl Ticket {
    /// A ticket for a request to `server`.
    pub fn new(
        auditor: Option<Arc<Auditor>>,
        server: &str,
        method: &str,
        who: Who<'_>,
        bytes_in: usize,
        trace_id: Option<&str>,
    ) -> Ticket {
        let p = who.principal;
        let mut id = [0u8; 8];
        rand::rng().fill_bytes(&mut id);
        Ticket {
            auditor,
            started: Instant::now(),
            upstream_started: Mutex::new(None),
            record: Mutex::new(AuditRecord {
                at_ms: now_ms(),
                request_id: crate::hex::encode(&id),
                server: server.into(),
                upstream: None,
                method: clipped(method),
                target: None,
                subject: p.map(|p| p.subject().to_owned()),
                issuer: p.map(|p| p.issuer().to_owned()),
                client_id: p.and_then(|p| p.client_id().map(str::to_owned)),
                decision: "allow".into(),
                rule: None,
                outcome: String::new(),
                error_code: None,
                latency_us: 0,
                bytes_in: bytes_in as i64,
                bytes_out: 0,
                arguments: None,
                trace_id: trace_id.map(str::to_owned),
                tenant: who.tenant.map(str::to_owned),
                guardrails: None,
            }),
            bytes_out: AtomicU64::new(0),
            routed: AtomicBool::new(false),
            done: AtomicBool::new(false),
        }
    }

    fn edit(&self, f: impl FnOnce(&mut AuditRecord)) {
        f(&mut self.record.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// The function called and its arguments (redacted as configured).
    pub fn target(&self, name: Option<&str>, args: Option<&serde_json::Value>, is_tool: bool) {
        let arguments = self
            .auditor
            .as_ref()
            .and_then(|a| a.arguments(if is_tool { name } else { None }, args));
        self.edit(|r| {
            r.target = name.map(clipped);
            r.arguments = arguments;
        });
    }

    /// The target name was found at one of the server's upstreams.
    pub fn routed(&self) {
        self.routed.store(true, Ordering::Relaxed);
    }

    /// The upstream serving the call; starts its clock.
    pub fn upstream(&self, name: &str) {
        self.edit(|r| r.upstream = Some(name.to_owned()));
        *self
            .upstream_started
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    /// What the output guardrails found in the result (rules and counts, never the text).
    pub fn guardrails(&self, findings: &[crate::guardrail::Finding]) {
        let json = serde_json::to_string(findings).ok();
        self.edit(|r| r.guardrails = json);
    }

    /// The policy decision: `decision` is allow/deny/…, `rule` what decided.
    pub fn decision(&self, decision: &str, rule: Option<&str>) {
        self.edit(|r| {
            r.decision = decision.into();
            r.rule = rule.map(str::to_owned);
        });
    }

    /// Counts response bytes.
    pub fn sent(&self, bytes: usize) {
        self.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Ends the ticket; only the first call counts.
    pub fn complete(&self, outcome: Outcome) {
        if self.done.swap(true, Ordering::AcqRel) {
            return;
        }
        let total = self.started.elapsed();
        let upstream = self
            .upstream_started
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map(|t| t.elapsed());
        // Completed once (see `done`), so the record can be moved out rather than copied.
        let mut record =
            std::mem::take(&mut *self.record.lock().unwrap_or_else(|e| e.into_inner()));
        record.outcome = outcome.label().into();
        record.error_code = outcome.code();
        record.latency_us = total.as_micros() as i64;
        record.bytes_out = self.bytes_out.load(Ordering::Relaxed) as i64;
        // Label values come from closed sets (see `telemetry::metrics`): known methods, and
        // tool or prompt names routed to an upstream that once answered them with a result.
        // Resource URIs never label.
        let parsed = crate::protocol::Method::parse(&record.method);
        let method = parsed.metric_label();
        let routed = self.routed.load(Ordering::Relaxed);
        let tool = match (parsed.labels_target(), routed, &record.target) {
            (true, true, Some(name)) => {
                METRICS.tool_label(&record.server, name, outcome == Outcome::Ok)
            }
            (true, _, _) => crate::telemetry::metrics::UNKNOWN.into(),
            _ => String::new(),
        };
        let labels = RequestLabels {
            server: record.server.clone(),
            upstream: record.upstream.clone().unwrap_or_default(),
            method: method.to_owned(),
            tool,
            outcome: record.outcome.clone(),
            tenant: record.tenant.clone().unwrap_or_default(),
        };
        METRICS.request_done(labels, total, upstream);
        if let Some(a) = &self.auditor {
            a.submit(record);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.complete(Outcome::Cancelled);
    }
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_chosen_names_are_clipped_at_a_character_boundary() {
        assert_eq!(clipped("tools/call"), "tools/call");
        let long = format!("a{}", "é".repeat(MAX_NAME_BYTES));
        let c = clipped(&long);
        assert!(c.len() < MAX_NAME_BYTES + 32, "{}", c.len());
        assert!(c.ends_with(&format!("… ({} bytes)", long.len())), "{c}");
        assert!(long.starts_with(c.split('…').next().unwrap()));
    }
}
