//! The catalog at run time: which definitions clients may see and call. A definition is
//! served only when it is approved with the pin it has now; anything new or changed is held
//! back, recorded (pending or quarantined, with the scanner's findings) and audited, until a
//! person approves it (`gatehouse catalog approve`).

use super::pin::{DefinitionKind, pin};
use super::scan::{Scanner, worst};
use crate::audit::Auditor;
use crate::store::{AuditRecord, CatalogDefinition, DefinitionState, Store, UpstreamState};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

/// How often a running gateway re-reads decisions made elsewhere (the CLI, other replicas).
const REFRESH: Duration = Duration::from_secs(2);

type Key = (String, &'static str, String);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Known {
    state: DefinitionState,
    approved_pin: Option<String>,
    seen_pin: String,
}

/// What one listing changed, recorded after the listing is answered.
enum Change {
    /// New or different from what was approved: held back in `state`.
    Held(Value, String, DefinitionState),
    /// No longer offered.
    Removed(String),
    /// Offered again, exactly as approved.
    Restored(String),
}

impl Change {
    fn event(&self) -> &'static str {
        match self {
            Change::Held(_, _, DefinitionState::Quarantined) => "quarantine",
            Change::Held(..) => "hold",
            Change::Removed(_) => "remove",
            Change::Restored(_) => "restore",
        }
    }
}

/// Decisions about upstreams and their definitions, enforced on listings and calls.
pub struct Catalog {
    store: Store,
    scanner: Scanner,
    trusted: HashSet<String>,
    known: RwLock<HashMap<Key, Known>>,
    upstreams: RwLock<HashMap<String, UpstreamState>>,
    /// Changes decided in memory whose rows are still being written: a refresh from the store
    /// must not undo them meanwhile.
    in_flight: std::sync::Mutex<HashMap<Key, Known>>,
    /// The last write of changes: each write waits for the one before, so that rows land in
    /// the order the changes were decided (a definition that left a listing and came back is
    /// written removed, then restored, never the other way round).
    last_write: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Compiled resource templates, by template text.
    templates: RwLock<HashMap<String, Option<super::template::CompiledTemplate>>>,
    auditor: Option<Arc<Auditor>>,
}

fn kind_static(kind: &str) -> &'static str {
    DefinitionKind::parse(kind).map_or("tool", DefinitionKind::as_str)
}

impl Catalog {
    /// Loads the decisions (waiting for the store once) and keeps them fresh in the
    /// background. Events go to `auditor`. Needs the multi-threaded runtime.
    pub fn start(
        store: Store,
        cfg: &crate::config::CatalogConfig,
        auditor: Option<Arc<Auditor>>,
    ) -> Result<Arc<Self>, String> {
        let catalog = Arc::new(Catalog {
            store,
            scanner: Scanner::new(&cfg.rules)?,
            trusted: cfg.trusted.iter().cloned().collect(),
            known: RwLock::new(HashMap::new()),
            upstreams: RwLock::new(HashMap::new()),
            in_flight: Default::default(),
            last_write: Default::default(),
            templates: Default::default(),
            auditor,
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

    /// Re-reads the decisions now (after this process made one), instead of within 2 s.
    pub async fn reload_decisions(&self) -> Result<(), crate::store::StoreError> {
        self.refresh().await
    }

    async fn refresh(&self) -> Result<(), crate::store::StoreError> {
        let rows = self.store.definitions(None).await?;
        let upstreams = self.store.catalog_upstreams().await?;
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
        for (key, entry) in self.in_flight.lock().expect("catalog lock").iter() {
            known.insert(key.clone(), entry.clone());
        }
        *self.known.write().expect("catalog lock") = known;
        *self.upstreams.write().expect("catalog lock") = upstreams
            .into_iter()
            .map(|u| (u.upstream, u.state))
            .collect();
        Ok(())
    }

    /// Whether `upstream` is served without review.
    pub fn is_trusted(&self, upstream: &str) -> bool {
        self.trusted.contains(upstream)
    }

    /// Whether `upstream` as a whole may be used (trusted, or approved in the catalog).
    pub fn upstream_served(&self, upstream: &str) -> bool {
        self.is_trusted(upstream)
            || self.upstreams.read().expect("catalog lock").get(upstream)
                == Some(&UpstreamState::Approved)
    }

    /// The items of one upstream's listing that clients may see. New and changed definitions
    /// are held back, recorded and audited. `complete` says the listing is the upstream's whole
    /// list (one page, no cursor): definitions missing from it are recorded as removed.
    pub fn admit(
        self: &Arc<Self>,
        upstream: &str,
        kind: DefinitionKind,
        items: Vec<Value>,
        complete: bool,
    ) -> Vec<Value> {
        if self.is_trusted(upstream) {
            return items;
        }
        let serve = self.upstream_served(upstream);
        let mut served = Vec::with_capacity(items.len());
        let mut changes = Vec::new();
        let mut touched: Vec<Key> = Vec::new();
        let flight: Vec<(Key, Known)>;
        let chain;
        {
            let mut known = self.known.write().expect("catalog lock");
            let mut listed = HashSet::with_capacity(items.len());
            for item in items {
                let Some(name) = item.get(kind.id_member()).and_then(Value::as_str) else {
                    continue;
                };
                let p = pin(kind, &item);
                let key = (upstream.to_owned(), kind.as_str(), name.to_owned());
                if complete {
                    listed.insert(name.to_owned());
                }
                let entry = known.get_mut(&key);
                let as_approved = entry
                    .as_ref()
                    .is_some_and(|k| k.approved_pin.as_deref() == Some(&p));
                match entry {
                    Some(k) if as_approved && k.state == DefinitionState::Approved => {
                        if serve {
                            served.push(item);
                        }
                        continue;
                    }
                    Some(k) if as_approved && k.state == DefinitionState::Removed => {
                        k.state = DefinitionState::Approved;
                        k.seen_pin = p;
                        changes.push(Change::Restored(name.to_owned()));
                        touched.push(key);
                        if serve {
                            served.push(item);
                        }
                        continue;
                    }
                    Some(k) if k.seen_pin == p && k.state != DefinitionState::Removed => continue,
                    _ => {}
                }
                let entry = known.get(&key).cloned();
                let state = match &entry {
                    Some(k) if k.state == DefinitionState::Rejected => DefinitionState::Rejected,
                    Some(k) if k.approved_pin.is_some() => DefinitionState::Quarantined,
                    _ => DefinitionState::Pending,
                };
                known.insert(
                    key.clone(),
                    Known {
                        state,
                        approved_pin: entry.and_then(|k| k.approved_pin),
                        seen_pin: p.clone(),
                    },
                );
                changes.push(Change::Held(item, p, state));
                touched.push(key);
            }
            if complete {
                for ((u, k, name), entry) in known.iter_mut() {
                    // Rejected and quarantined definitions keep their state: coming back must
                    // never look like coming back approved.
                    if u == upstream
                        && *k == kind.as_str()
                        && matches!(
                            entry.state,
                            DefinitionState::Approved | DefinitionState::Pending
                        )
                        && !listed.contains(name)
                    {
                        entry.state = DefinitionState::Removed;
                        changes.push(Change::Removed(name.clone()));
                        touched.push((u.clone(), *k, name.clone()));
                    }
                }
            }
            flight = touched
                .into_iter()
                .filter_map(|k| known.get(&k).cloned().map(|v| (k, v)))
                .collect();
            let mut in_flight = self.in_flight.lock().expect("catalog lock");
            for (k, v) in &flight {
                in_flight.insert(k.clone(), v.clone());
            }
            // Taken while the decisions are: writes queue in the order they were decided.
            chain = Some(self.last_write.lock().expect("catalog lock"));
        }
        if let Some(mut last) = chain.filter(|_| !changes.is_empty()) {
            let me = self.clone();
            let upstream = upstream.to_owned();
            let before = last.take();
            *last = Some(tokio::spawn(async move {
                if let Some(b) = before {
                    let _ = b.await;
                }
                if let Err(e) = me.record_changes(&upstream, kind, changes).await {
                    tracing::warn!(%upstream, error = %e, "catalog: cannot record definitions");
                }
                // Written (or failed for good): the store is the truth again, unless a later
                // change of the same definition is still being written.
                let mut in_flight = me.in_flight.lock().expect("catalog lock");
                for (k, v) in flight {
                    if in_flight.get(&k) == Some(&v) {
                        in_flight.remove(&k);
                    }
                }
            }));
        }
        served
    }

    /// The approved definitions of one kind at `upstream`, as approved (for discovery); none
    /// while the upstream itself is not approved.
    pub async fn approved(
        &self,
        upstream: &str,
        kind: DefinitionKind,
    ) -> Result<Vec<Value>, crate::store::StoreError> {
        if !self.upstream_served(upstream) {
            return Ok(Vec::new());
        }
        Ok(self
            .store
            .definitions(Some(upstream))
            .await?
            .into_iter()
            .filter(|d| d.kind == kind.as_str() && d.state == DefinitionState::Approved)
            .filter_map(|d| serde_json::from_str(d.approved_definition.as_deref()?).ok())
            .collect())
    }

    /// Whether a call to `name` (a resource's URI for resources) may go through. A resource
    /// may also be read when an approved template of its upstream produces its URI.
    pub fn callable(&self, upstream: &str, kind: DefinitionKind, name: &str) -> bool {
        if self.is_trusted(upstream) {
            return true;
        }
        if !self.upstream_served(upstream) {
            return false;
        }
        let known = self.known.read().expect("catalog lock");
        let approved = |k: &Known| k.state == DefinitionState::Approved;
        // A URI the catalog knows is decided by its own row: a rejected or held resource stays
        // refused even when an approved template would produce its URI.
        if let Some(entry) = known.get(&(upstream.to_owned(), kind.as_str(), name.to_owned())) {
            return approved(entry);
        }
        if kind != DefinitionKind::Resource || name.len() > super::template::MAX_URI_BYTES {
            return false;
        }
        let candidates: Vec<String> = known
            .iter()
            .filter(|((u, k, _), entry)| {
                u == upstream && *k == DefinitionKind::ResourceTemplate.as_str() && approved(entry)
            })
            .map(|((_, _, template), _)| template.clone())
            .collect();
        drop(known);
        candidates.iter().any(|t| self.template_matches(t, name))
    }

    /// Matches `uri` against `template`, compiling each template once.
    fn template_matches(&self, template: &str, uri: &str) -> bool {
        if let Some(compiled) = self.templates.read().expect("catalog lock").get(template) {
            return compiled.as_ref().is_some_and(|c| c.matches(uri));
        }
        let compiled = super::template::CompiledTemplate::new(template);
        let found = compiled.as_ref().is_some_and(|c| c.matches(uri));
        let mut cache = self.templates.write().expect("catalog lock");
        // Templates come from upstreams: keep the cache bounded.
        if cache.len() >= 4096 {
            cache.clear();
        }
        cache.insert(template.to_owned(), compiled);
        found
    }

    async fn record_changes(
        &self,
        upstream: &str,
        kind: DefinitionKind,
        changes: Vec<Change>,
    ) -> Result<(), crate::store::StoreError> {
        // One read of what is recorded serves the whole batch.
        let all = self.store.definitions(None).await?;
        let others = other_tools(&all, upstream);
        let existing = |name: &str| {
            all.iter()
                .find(|d| d.upstream == upstream && d.kind == kind.as_str() && d.name == name)
                .cloned()
        };
        let mut audit = Vec::with_capacity(changes.len());
        for change in changes {
            let event = change.event();
            let (name, row, read_at) = match change {
                Change::Held(item, p, state) => {
                    let name = item
                        .get(kind.id_member())
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned();
                    let before = existing(&name);
                    let read_at = before.as_ref().map(|b| b.updated_at_ms);
                    let row = describe(
                        &self.scanner,
                        upstream,
                        kind,
                        &item,
                        p,
                        state,
                        before,
                        &others,
                    );
                    tracing::warn!(%upstream, kind = kind.as_str(), %name, state = state.as_str(), worst = ?row.worst, "catalog: a definition is held back until it is approved");
                    (name, Some(row), read_at)
                }
                Change::Removed(name) | Change::Restored(name) => {
                    let before = existing(&name);
                    let read_at = before.as_ref().map(|b| b.updated_at_ms);
                    let row = before.map(|mut d| {
                        d.state = if event == "remove" {
                            DefinitionState::Removed
                        } else {
                            DefinitionState::Approved
                        };
                        d.updated_at_ms = crate::audit::now_ms();
                        d
                    });
                    tracing::info!(%upstream, kind = kind.as_str(), %name, event, "catalog: a definition is no longer offered, or offered again as approved");
                    (name, row, read_at)
                }
            };
            let Some(row) = row else { continue };
            // A decision (or another replica) that wrote the row since it was read wins: this
            // change was judged on what was known before it, and the next listing judges again.
            if !self
                .store
                .put_definition_if_unchanged(&row, read_at)
                .await?
            {
                tracing::debug!(%upstream, %name, event, "catalog: the definition changed meanwhile; not recorded");
                continue;
            }
            crate::telemetry::metrics::METRICS.catalog_event(upstream, event);
            audit.push(catalog_audit(upstream, kind.as_str(), &name, event, None));
        }
        if let Some(auditor) = &self.auditor {
            for record in audit {
                auditor.submit(record);
            }
        }
        Ok(())
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

/// An audit record for a catalog event (`hold`, `quarantine`, `remove`, `approve`, …) about a
/// definition (`kind` is its kind) or the whole upstream (`kind` is `upstream`).
pub fn catalog_audit(
    upstream: &str,
    kind: &str,
    name: &str,
    event: &str,
    by: Option<&str>,
) -> AuditRecord {
    let mut record = AuditRecord::event(
        &format!("catalog/{event}"),
        &format!("{kind}:{name}"),
        by,
        event,
        "ok",
    );
    record.upstream = Some(upstream.to_owned());
    record
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::CatalogUpstream;
    use serde_json::json;

    fn row(kind: DefinitionKind, item: &Value, state: DefinitionState) -> CatalogDefinition {
        let p = pin(kind, item);
        CatalogDefinition {
            upstream: "u".into(),
            kind: kind.as_str().into(),
            name: item[kind.id_member()].as_str().unwrap().into(),
            pin: p.clone(),
            definition: item.to_string(),
            findings: "[]".into(),
            worst: None,
            state,
            approved_pin: (state != DefinitionState::Pending).then_some(p),
            approved_definition: Some(item.to_string()),
            decided_by: Some("r".into()),
            decided_at_ms: Some(1),
            first_seen_ms: 1,
            updated_at_ms: 1,
        }
    }

    async fn catalog_with(rows: &[CatalogDefinition]) -> Arc<Catalog> {
        let store = Store::open("sqlite::memory:", std::path::Path::new("."), 1)
            .await
            .unwrap();
        store
            .put_catalog_upstream(&CatalogUpstream {
                upstream: "u".into(),
                state: UpstreamState::Approved,
                registered_by: None,
                registered_at_ms: 1,
                decided_by: Some("r".into()),
                decided_at_ms: Some(1),
                reason: None,
            })
            .await
            .unwrap();
        for r in rows {
            store.put_definition(r).await.unwrap();
        }
        Catalog::start(store, &crate::config::CatalogConfig::default(), None).unwrap()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_rejected_resource_stays_refused_even_when_an_approved_template_produces_it() {
        let secret = json!({"uri": "file:///data/secret", "name": "secret"});
        let template = json!({"uriTemplate": "file:///data/{name}", "name": "data"});
        let c = catalog_with(&[
            row(DefinitionKind::Resource, &secret, DefinitionState::Rejected),
            row(
                DefinitionKind::ResourceTemplate,
                &template,
                DefinitionState::Approved,
            ),
        ])
        .await;
        assert!(!c.callable("u", DefinitionKind::Resource, "file:///data/secret"));
        assert!(c.callable("u", DefinitionKind::Resource, "file:///data/other"));
        assert!(!c.callable("u", DefinitionKind::Resource, "file:///data/..%2Fetc"));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn leaving_a_listing_and_coming_back_never_revives_a_rejected_or_held_definition() {
        let rejected = json!({"name": "rejected", "description": "r"});
        let held = json!({"name": "held", "description": "h"});
        let fine = json!({"name": "fine", "description": "f"});
        let c = catalog_with(&[
            row(DefinitionKind::Tool, &rejected, DefinitionState::Rejected),
            row(DefinitionKind::Tool, &held, DefinitionState::Quarantined),
            row(DefinitionKind::Tool, &fine, DefinitionState::Approved),
        ])
        .await;
        // A complete listing without them, then one with them again, unchanged.
        let served = c.admit("u", DefinitionKind::Tool, vec![fine.clone()], true);
        assert_eq!(served, vec![fine.clone()]);
        let served = c.admit(
            "u",
            DefinitionKind::Tool,
            vec![rejected.clone(), held.clone(), fine.clone()],
            true,
        );
        assert_eq!(served, vec![fine.clone()]);
        assert!(!c.callable("u", DefinitionKind::Tool, "rejected"));
        assert!(!c.callable("u", DefinitionKind::Tool, "held"));
        // An approved one that leaves and comes back unchanged is served again.
        assert!(c.admit("u", DefinitionKind::Tool, vec![], true).is_empty());
        assert!(!c.callable("u", DefinitionKind::Tool, "fine"));
        assert_eq!(
            c.admit("u", DefinitionKind::Tool, vec![fine.clone()], true),
            vec![fine]
        );
        // The decisions written meanwhile do not undo what memory holds (refresh keeps the
        // changes still being written, then the store has them).
        c.reload_decisions().await.unwrap();
        assert!(!c.callable("u", DefinitionKind::Tool, "rejected"));
        assert!(c.callable("u", DefinitionKind::Tool, "fine"));
    }
}
