//! The catalog at run time: which definitions clients may see and call. A definition is
//! served only when it is approved with the pin it has now; anything new or changed is held
//! back, recorded (pending or quarantined, with the scanner's findings) and audited, until a
//! person approves it (`gatehouse catalog approve`).

use super::pin::{DefinitionKind, pin};
use super::scan::{Scanner, worst};
use crate::store::{AuditRecord, CatalogDefinition, DefinitionState, Store};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

/// How often a running gateway re-reads decisions made elsewhere (the CLI, other replicas).
const REFRESH: Duration = Duration::from_secs(2);

type Key = (String, &'static str, String);

#[derive(Debug, Clone)]
struct Known {
    state: DefinitionState,
    approved_pin: Option<String>,
    seen_pin: String,
}

/// Decisions about upstream definitions, enforced on listings and calls.
pub struct Catalog {
    store: Store,
    scanner: Scanner,
    trusted: HashSet<String>,
    known: RwLock<HashMap<Key, Known>>,
}

fn kind_static(kind: &str) -> &'static str {
    DefinitionKind::parse(kind).map_or("tool", DefinitionKind::as_str)
}

impl Catalog {
    /// Loads the decisions (waiting for the store once) and keeps them fresh in the
    /// background. Needs the multi-threaded runtime.
    pub fn start(store: Store, cfg: &crate::config::CatalogConfig) -> Result<Arc<Self>, String> {
        let catalog = Arc::new(Catalog {
            store,
            scanner: Scanner::new(&cfg.rules)?,
            trusted: cfg.trusted.iter().cloned().collect(),
            known: RwLock::new(HashMap::new()),
        });
        let first = catalog.clone();
        tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(first.refresh()))
            .map_err(|e| format!("catalog: cannot read the store: {e}"))?;
        let weak: Weak<Catalog> = Arc::downgrade(&catalog);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(REFRESH).await;
                let Some(c) = weak.upgrade() else { return };
                if let Err(e) = c.refresh().await {
                    tracing::warn!(error = %e, "catalog: cannot re-read decisions");
                }
            }
        });
        Ok(catalog)
    }

    async fn refresh(&self) -> Result<(), crate::store::StoreError> {
        let rows = self.store.definitions(None).await?;
        let mut known = HashMap::with_capacity(rows.len());
        for r in rows {
            known.insert(
                (r.upstream, kind_static(&r.kind), r.name),
                Known {
                    state: r.state,
                    approved_pin: r.approved_pin,
                    seen_pin: r.pin,
                },
            );
        }
        *self.known.write().expect("catalog lock") = known;
        Ok(())
    }

    /// Whether `upstream` is served without review.
    pub fn is_trusted(&self, upstream: &str) -> bool {
        self.trusted.contains(upstream)
    }

    /// The items of one upstream's listing that clients may see. New and changed definitions
    /// are held back, recorded and audited.
    pub fn admit(
        self: &Arc<Self>,
        upstream: &str,
        kind: DefinitionKind,
        items: Vec<Value>,
    ) -> Vec<Value> {
        if self.is_trusted(upstream) {
            return items;
        }
        let mut served = Vec::with_capacity(items.len());
        let mut changed = Vec::new();
        {
            let mut known = self.known.write().expect("catalog lock");
            for item in items {
                let Some(name) = item.get(kind.id_member()).and_then(Value::as_str) else {
                    continue;
                };
                let p = pin(kind, &item);
                let key = (upstream.to_owned(), kind.as_str(), name.to_owned());
                let entry = known.get(&key).cloned();
                match &entry {
                    Some(k)
                        if k.state == DefinitionState::Approved
                            && k.approved_pin.as_deref() == Some(&p) =>
                    {
                        served.push(item);
                        continue;
                    }
                    Some(k) if k.seen_pin == p => continue,
                    _ => {}
                }
                let state = match &entry {
                    Some(k) if k.approved_pin.is_some() => DefinitionState::Quarantined,
                    Some(k) if k.state == DefinitionState::Rejected => DefinitionState::Rejected,
                    _ => DefinitionState::Pending,
                };
                known.insert(
                    key,
                    Known {
                        state,
                        approved_pin: entry.as_ref().and_then(|k| k.approved_pin.clone()),
                        seen_pin: p.clone(),
                    },
                );
                changed.push((item, p, state));
            }
        }
        if !changed.is_empty() {
            let me = self.clone();
            let upstream = upstream.to_owned();
            tokio::spawn(async move {
                // One read of what is recorded serves the whole batch.
                let all = match me.store.definitions(None).await {
                    Ok(all) => all,
                    Err(e) => {
                        tracing::warn!(%upstream, error = %e, "catalog: cannot record definitions");
                        return;
                    }
                };
                let others = other_tools(&all, &upstream);
                for (item, p, state) in changed {
                    let recorded = me
                        .record_change(&upstream, kind, item, p, state, &all, &others)
                        .await;
                    if let Err(e) = recorded {
                        tracing::warn!(%upstream, error = %e, "catalog: cannot record a definition");
                    }
                }
            });
        }
        served
    }

    /// The approved definitions of one kind at `upstream`, as approved (for discovery).
    pub async fn approved(
        &self,
        upstream: &str,
        kind: DefinitionKind,
    ) -> Result<Vec<Value>, crate::store::StoreError> {
        Ok(self
            .store
            .definitions(Some(upstream))
            .await?
            .into_iter()
            .filter(|d| d.kind == kind.as_str() && d.state == DefinitionState::Approved)
            .filter_map(|d| serde_json::from_str(d.approved_definition.as_deref()?).ok())
            .collect())
    }

    /// Whether a call to `name` may go through.
    pub fn callable(&self, upstream: &str, kind: DefinitionKind, name: &str) -> bool {
        if self.is_trusted(upstream) {
            return true;
        }
        let known = self.known.read().expect("catalog lock");
        known
            .get(&(upstream.to_owned(), kind.as_str(), name.to_owned()))
            .is_some_and(|k| k.state == DefinitionState::Approved)
    }

    #[allow(clippy::too_many_arguments)]
    async fn record_change(
        &self,
        upstream: &str,
        kind: DefinitionKind,
        item: Value,
        p: String,
        state: DefinitionState,
        all: &[CatalogDefinition],
        others: &[String],
    ) -> Result<(), crate::store::StoreError> {
        let name = item
            .get(kind.id_member())
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let existing = all
            .iter()
            .find(|d| d.upstream == upstream && d.kind == kind.as_str() && d.name == name)
            .cloned();
        let row = describe(
            &self.scanner,
            upstream,
            kind,
            &item,
            p,
            state,
            existing,
            others,
        );
        self.store.put_definition(&row).await?;
        let event = match state {
            DefinitionState::Quarantined => "quarantine",
            _ => "hold",
        };
        tracing::warn!(%upstream, kind = kind.as_str(), %name, state = state.as_str(), worst = ?row.worst, "catalog: a definition is held back until it is approved");
        crate::telemetry::metrics::METRICS.catalog_event(upstream, event);
        self.store
            .insert_audit(&[catalog_audit(upstream, kind, &name, event, None)])
            .await
    }
}

/// A row for a definition as seen now, keeping what was decided before.
#[allow(clippy::too_many_arguments)]
pub fn describe(
    scanner: &Scanner,
    upstream: &str,
    kind: DefinitionKind,
    item: &Value,
    p: String,
    state: DefinitionState,
    existing: Option<CatalogDefinition>,
    other_tools: &[String],
) -> CatalogDefinition {
    let findings = scanner.scan(kind.as_str(), item, other_tools);
    let now = crate::audit::now_ms();
    let name = item
        .get(kind.id_member())
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    CatalogDefinition {
        upstream: upstream.to_owned(),
        kind: kind.as_str().to_owned(),
        name,
        pin: p,
        definition: item.to_string(),
        findings: serde_json::to_string(&findings).unwrap_or_else(|_| "[]".into()),
        worst: worst(&findings).map(|w| format!("{w:?}").to_lowercase()),
        state,
        approved_pin: existing.as_ref().and_then(|e| e.approved_pin.clone()),
        approved_definition: existing
            .as_ref()
            .and_then(|e| e.approved_definition.clone()),
        decided_by: existing.as_ref().and_then(|e| e.decided_by.clone()),
        decided_at_ms: existing.as_ref().and_then(|e| e.decided_at_ms),
        first_seen_ms: existing.as_ref().map_or(now, |e| e.first_seen_ms),
        updated_at_ms: now,
    }
}

/// Tool names other upstreams offer (for the scanner's shadowing rule).
pub fn other_tools(all: &[CatalogDefinition], upstream: &str) -> Vec<String> {
    all.iter()
        .filter(|d| d.upstream != upstream && d.kind == "tool")
        .map(|d| d.name.clone())
        .collect()
}

/// An audit record for a catalog event (`hold`, `quarantine`, `approve`, `reject`).
pub fn catalog_audit(
    upstream: &str,
    kind: DefinitionKind,
    name: &str,
    event: &str,
    by: Option<&str>,
) -> AuditRecord {
    AuditRecord {
        at_ms: crate::audit::now_ms(),
        request_id: String::new(),
        server: String::new(),
        upstream: Some(upstream.to_owned()),
        method: format!("catalog/{event}"),
        target: Some(format!("{}:{name}", kind.as_str())),
        subject: by.map(str::to_owned),
        issuer: None,
        client_id: None,
        decision: event.to_owned(),
        rule: None,
        outcome: "ok".into(),
        error_code: None,
        latency_us: 0,
        bytes_in: 0,
        bytes_out: 0,
        arguments: None,
    }
}
