//! The audit writer: drains the queue into batches, writes each batch to the store in one
//! transaction and to the JSON-lines sink, and applies retention. A record waits at most
//! `flush_interval` before it is written, which bounds what a crash can lose.

use super::{AuditRecord, Auditor, Queue};
use crate::config::Audit;
use crate::store::Store;
use crate::telemetry::metrics::METRICS;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

/// How often old records are deleted.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// The writer's settings.
pub(super) struct Settings {
    batch_size: usize,
    flush_interval: Duration,
    retention: Duration,
    jsonl: Option<String>,
}

impl Settings {
    /// Makes a relative JSON-lines path relative to `base`.
    pub(super) fn resolve_paths(&mut self, base: &std::path::Path) {
        if let Some(p) = &self.jsonl
            && p != "stdout"
            && std::path::Path::new(p).is_relative()
        {
            self.jsonl = Some(base.join(p).display().to_string());
        }
    }
}

impl From<&Audit> for Settings {
    fn from(a: &Audit) -> Self {
        Settings {
            batch_size: a.batch_size,
            flush_interval: a.flush_interval.0,
            retention: a.retention.0,
            jsonl: a.jsonl.clone(),
        }
    }
}

/// Where JSON lines go.
enum Sink {
    None,
    Stdout,
    File(std::fs::File),
}

impl Sink {
    fn open(target: Option<&str>) -> Sink {
        match target {
            None => Sink::None,
            Some("stdout") => Sink::Stdout,
            Some(path) => match std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
            {
                Ok(f) => Sink::File(f),
                Err(e) => {
                    tracing::error!(path, error = %e, "cannot open the audit JSON-lines file; lines are not written");
                    Sink::None
                }
            },
        }
    }

    fn write(&mut self, batch: &[AuditRecord]) {
        let mut text = String::new();
        for r in batch {
            if let Ok(line) = serde_json::to_string(r) {
                text.push_str(&line);
                text.push('\n');
            }
        }
        let result = match self {
            Sink::None => Ok(()),
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(text.as_bytes()).and_then(|_| out.flush())
            }
            Sink::File(f) => f.write_all(text.as_bytes()).and_then(|_| f.flush()),
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "writing audit JSON lines failed");
        }
    }
}

/// Runs until the auditor is closed, then writes what is left.
pub(super) async fn run(
    settings: Settings,
    store: Option<Store>,
    queue: Arc<Queue>,
    auditor: Arc<Auditor>,
) {
    let mut sink = Sink::open(settings.jsonl.as_deref());
    let mut tick = tokio::time::interval(settings.flush_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut retention = tokio::time::interval(RETENTION_EVERY);
    loop {
        tokio::select! {
            _ = queue.batch_ready.notified() => drain(&queue, settings.batch_size, &store, &mut sink).await,
            _ = tick.tick() => drain(&queue, settings.batch_size, &store, &mut sink).await,
            _ = retention.tick() => {
                if let Some(s) = &store {
                    let before = super::now_ms() - settings.retention.as_millis() as i64;
                    match s.delete_audit_before(before).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(deleted = n, "audit retention applied"),
                        Err(e) => tracing::warn!(error = %e, "audit retention failed"),
                    }
                }
            }
            _ = auditor.stop.notified() => break,
        }
    }
    drain(&queue, settings.batch_size, &store, &mut sink).await;
}

/// Writes everything queued, `batch_size` records per transaction.
async fn drain(queue: &Queue, batch_size: usize, store: &Option<Store>, sink: &mut Sink) {
    let mut records = queue.take();
    while !records.is_empty() {
        let rest = records.split_off(records.len().min(batch_size));
        flush(store, sink, &mut records).await;
        records = rest;
    }
}

async fn flush(store: &Option<Store>, sink: &mut Sink, batch: &mut Vec<AuditRecord>) {
    if batch.is_empty() {
        return;
    }
    sink.write(batch);
    if let Some(s) = store {
        // One retry: a busy SQLite file or a PostgreSQL failover should not lose the batch.
        let mut result = s.insert_audit(batch).await;
        if result.is_err() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            result = s.insert_audit(batch).await;
        }
        if let Err(e) = result {
            tracing::error!(records = batch.len(), error = %e, "audit records could not be stored");
            METRICS.audit_dropped.inc_by(batch.len() as u64);
            batch.clear();
            return;
        }
    }
    METRICS.audit_written.inc_by(batch.len() as u64);
    batch.clear();
}
