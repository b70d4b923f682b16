//! Reviewing the catalog: registering an upstream, deciding about it and its definitions, and
//! reading what changed. `gatehouse catalog` and the admin API share these; each operation
//! returns what it changed and the audit records to write, and the caller writes them to its
//! own sink.

use super::lister::list_everything;
use super::pin::pin;
use super::registry::{catalog_audit, describe, other_tools};
use super::scan::Scanner;
use crate::config::Config;
use crate::store::{
    AuditRecord, CatalogDefinition, CatalogUpstream, DefinitionState, Store, StoreError,
    UpstreamState,
};
use crate::upstream::UpstreamClient;
use serde_json::Value;
use std::collections::HashSet;
use std::sync::Arc;

/// Why a review operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// The upstream is not in the configuration.
    #[error("no upstream {name:?} in the configuration (known: {known})")]
    UnknownUpstream {
        /// The name asked for.
        name: String,
        /// The configured names.
        known: String,
    },
    /// Nothing was ever recorded for the upstream.
    #[error(
        "nothing is recorded for upstream {0:?}; register it first (`gatehouse catalog add {0}`)"
    )]
    NotRecorded(String),
    /// No definition has that name.
    #[error("upstream {upstream:?} has no definition named {name:?}")]
    NoSuchDefinition {
        /// The upstream.
        upstream: String,
        /// The name asked for.
        name: String,
    },
    /// Approval would serve definitions with serious findings.
    #[error(
        "not approved: findings of high or critical severity in {0}; read them (`gatehouse catalog show`) and accept them explicitly to approve anyway"
    )]
    RiskyFindings(String),
    /// The decision does not apply in the upstream's current state.
    #[error("upstream {upstream:?} is {from}: {why}")]
    Transition {
        /// The upstream.
        upstream: String,
        /// Its state now.
        from: &'static str,
        /// What to do instead.
        why: &'static str,
    },
    /// The definition changed since the reviewer read it.
    #[error("{upstream}: {name} changed since it was read (its pin differs); read it again")]
    Changed {
        /// The upstream.
        upstream: String,
        /// The definition.
        name: String,
    },
    /// A pin only makes sense for one named definition.
    #[error("a pin applies to one definition: give its name too")]
    PinWithoutName,
    /// The decision names nobody.
    #[error("a decision must name who decides")]
    Anonymous,
    /// The upstream could not be listed.
    #[error("cannot list upstream {upstream:?}: {reason}")]
    Upstream {
        /// The upstream.
        upstream: String,
        /// What went wrong.
        reason: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What an operation changed.
#[derive(Debug, Default)]
pub struct Reviewed {
    /// The upstream's row after the operation, when it has one.
    pub upstream: Option<CatalogUpstream>,
    /// The definitions written.
    pub definitions: Vec<CatalogDefinition>,
    /// Definitions a blanket approval left alone (rejected ones), by name.
    pub skipped: Vec<String>,
    /// The audit records to write.
    pub audit: Vec<AuditRecord>,
}

/// A reviewer's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Serve as it is now; `accept_findings` allows high or critical findings.
    Approve {
        /// Approve despite serious findings.
        accept_findings: bool,
    },
    /// Never serve.
    Reject,
    /// Hold back until approved again.
    Quarantine,
    /// Withdraw the whole upstream.
    Retire,
}

impl Decision {
    /// The decision called `name` (`approve`, `reject`, `quarantine`, `retire`).
    pub fn named(name: &str, accept_findings: bool) -> Option<Decision> {
        Some(match name {
            "approve" => Decision::Approve { accept_findings },
            "reject" => Decision::Reject,
            "quarantine" => Decision::Quarantine,
            "retire" => Decision::Retire,
            _ => return None,
        })
    }

    fn event(self) -> &'static str {
        match self {
            Decision::Approve { .. } => "approve",
            Decision::Reject => "reject",
            Decision::Quarantine => "quarantine",
            Decision::Retire => "retire",
        }
    }
}

/// Connects to `name`, lists everything it offers, scans and records it. New definitions are
/// pending; changed ones quarantined; missing ones removed. A new (or retired) upstream
/// becomes pending.
pub async fn register(
    config: &Config,
    store: &Store,
    name: &str,
    by: Option<&str>,
) -> Result<Reviewed, ReviewError> {
    let cfg = config
        .upstreams
        .get(name)
        .ok_or_else(|| ReviewError::UnknownUpstream {
            name: name.to_owned(),
            known: config
                .upstreams
                .keys()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    let failed = |reason: String| ReviewError::Upstream {
        upstream: name.to_owned(),
        reason,
    };
    let client = Arc::new(UpstreamClient::new(name, cfg, &config.limits, None).map_err(failed)?);
    let listed = list_everything(&client).await;
    client.shutdown().await;
    let (listed, failures) = listed.map_err(failed)?;
    // Registration records the whole upstream or nothing: a partial list would mark the
    // definitions of the failed kinds removed.
    if !failures.is_empty() {
        return Err(failed(failures.join("; ")));
    }
    let scanner =
        Scanner::new(&config.catalog.clone().unwrap_or_default().rules).map_err(failed)?;
    let all = store.definitions(None).await?;
    let others = other_tools(&all, name);
    let existing: Vec<CatalogDefinition> = all.into_iter().filter(|d| d.upstream == name).collect();
    let mut out = Reviewed::default();
    let mut seen = HashSet::new();
    for (kind, items) in listed {
        for item in items {
            let p = pin(kind, &item);
            let Some(id) = item.get(kind.id_member()).and_then(Value::as_str) else {
                continue;
            };
            seen.insert((kind.as_str(), id.to_owned()));
            let before = existing
                .iter()
                .find(|d| d.kind == kind.as_str() && d.name == id)
                .cloned();
            let state = registered_state(before.as_ref(), &p);
            let row = describe(&scanner, name, kind, &item, p, state, before, &others);
            store.put_definition(&row).await?;
            out.definitions.push(row);
        }
    }
    let now = crate::audit::now_ms();
    for mut gone in existing {
        // Rejected and quarantined definitions keep their state (see `registered_state`).
        let removable = matches!(
            gone.state,
            DefinitionState::Approved | DefinitionState::Pending
        );
        if removable && !seen.contains(&(gone.kind.as_str(), gone.name.clone())) {
            gone.state = DefinitionState::Removed;
            gone.updated_at_ms = now;
            store.put_definition(&gone).await?;
            out.audit
                .push(catalog_audit(name, &gone.kind, &gone.name, "remove", by));
            out.definitions.push(gone);
        }
    }
    let mut upstream = find_upstream(store, name).await?;
    if upstream
        .as_ref()
        .is_none_or(|u| u.state == UpstreamState::Retired)
    {
        let row = CatalogUpstream {
            upstream: name.to_owned(),
            state: UpstreamState::Pending,
            registered_by: by.map(str::to_owned),
            registered_at_ms: now,
            decided_by: None,
            decided_at_ms: None,
            reason: None,
        };
        store.put_catalog_upstream(&row).await?;
        upstream = Some(row);
    }
    out.audit
        .push(catalog_audit(name, "upstream", name, "register", by));
    out.upstream = upstream;
    Ok(out)
}

/// The state of a definition seen at registration, given what was recorded before: a decision
/// to reject or hold it back survives; only an approved (or approved-then-removed) definition
/// offered exactly as approved is approved.
fn registered_state(before: Option<&CatalogDefinition>, pin: &str) -> DefinitionState {
    match before {
        None => DefinitionState::Pending,
        Some(b) if b.state == DefinitionState::Rejected => DefinitionState::Rejected,
        Some(b) if b.approved_pin.as_deref() == Some(pin) => match b.state {
            DefinitionState::Approved | DefinitionState::Removed => DefinitionState::Approved,
            other => other,
        },
        Some(b) if b.approved_pin.is_some() => DefinitionState::Quarantined,
        Some(_) => DefinitionState::Pending,
    }
}

async fn find_upstream(store: &Store, name: &str) -> Result<Option<CatalogUpstream>, StoreError> {
    Ok(store
        .catalog_upstreams()
        .await?
        .into_iter()
        .find(|u| u.upstream == name))
}

/// The recorded definitions of `upstream`; an error when there are none.
pub async fn recorded(
    store: &Store,
    upstream: &str,
) -> Result<Vec<CatalogDefinition>, ReviewError> {
    let rows = store.definitions(Some(upstream)).await?;
    if rows.is_empty() && find_upstream(store, upstream).await?.is_none() {
        return Err(ReviewError::NotRecorded(upstream.to_owned()));
    }
    Ok(rows)
}

/// Applies `decision` to one definition (`name`) or, without a name, to the whole upstream.
/// Approving an upstream approves its definitions as they are now, except rejected ones
/// (name those to approve them).
/// With `pin`, the named definition is decided only if its current pin is that one (what the
/// reviewer read), so that a change recorded meanwhile is not approved unseen.
pub async fn decide(
    store: &Store,
    upstream: &str,
    name: Option<&str>,
    by: &str,
    reason: Option<&str>,
    decision: Decision,
    pin: Option<&str>,
) -> Result<Reviewed, ReviewError> {
    if by.trim().is_empty() {
        return Err(ReviewError::Anonymous);
    }
    if pin.is_some() && name.is_none() {
        return Err(ReviewError::PinWithoutName);
    }
    let rows = recorded(store, upstream).await?;
    let mut targets: Vec<CatalogDefinition> = rows
        .into_iter()
        .filter(|d| name.is_none_or(|n| d.name == n))
        .filter(|d| d.state != DefinitionState::Removed)
        .collect();
    if let Some(n) = name {
        if targets.is_empty() {
            return Err(ReviewError::NoSuchDefinition {
                upstream: upstream.to_owned(),
                name: n.to_owned(),
            });
        }
        if let Some(p) = pin {
            // The pin also tells apart definitions of different kinds with the same name.
            targets.retain(|d| d.pin == p);
            if targets.is_empty() {
                return Err(ReviewError::Changed {
                    upstream: upstream.to_owned(),
                    name: n.to_owned(),
                });
            }
        }
        if decision == Decision::Retire {
            return Err(ReviewError::Transition {
                upstream: upstream.to_owned(),
                from: "named",
                why: "retire applies to a whole upstream; leave out the definition's name",
            });
        }
    }
    let mut out = Reviewed::default();
    let now = crate::audit::now_ms();
    let current = find_upstream(store, upstream).await?;
    if name.is_none() {
        let from = current.as_ref().map_or(UpstreamState::Pending, |u| u.state);
        let refused = |why| ReviewError::Transition {
            upstream: upstream.to_owned(),
            from: from.as_str(),
            why,
        };
        let to = match decision {
            Decision::Approve { .. } if from == UpstreamState::Retired => {
                return Err(refused("register it again before approving it"));
            }
            Decision::Approve { .. } => UpstreamState::Approved,
            Decision::Reject if from == UpstreamState::Retired => {
                return Err(refused("it is already withdrawn"));
            }
            Decision::Reject => UpstreamState::Rejected,
            Decision::Quarantine if from != UpstreamState::Approved => {
                return Err(refused("only an approved upstream can be quarantined"));
            }
            Decision::Quarantine => UpstreamState::Quarantined,
            Decision::Retire => UpstreamState::Retired,
        };
        let row = CatalogUpstream {
            upstream: upstream.to_owned(),
            state: to,
            registered_by: current.as_ref().and_then(|u| u.registered_by.clone()),
            registered_at_ms: current.as_ref().map_or(now, |u| u.registered_at_ms),
            decided_by: Some(by.to_owned()),
            decided_at_ms: Some(now),
            reason: reason.map(str::to_owned),
        };
        if let Decision::Approve { .. } = decision {
            // A blanket approval leaves rejected and changed (quarantined) definitions alone:
            // each of those is approved by name, after reading its diff.
            targets.retain(|d| {
                let keep = !matches!(
                    d.state,
                    DefinitionState::Rejected | DefinitionState::Quarantined
                );
                if !keep {
                    out.skipped.push(d.name.clone());
                }
                keep
            });
        } else {
            targets.clear();
        }
        check_findings(&targets, decision)?;
        store.put_catalog_upstream(&row).await?;
        out.audit.push(catalog_audit(
            upstream,
            "upstream",
            upstream,
            decision.event(),
            Some(by),
        ));
        out.upstream = Some(row);
    } else {
        check_findings(&targets, decision)?;
        out.upstream = current;
    }
    for mut d in targets {
        d.state = match decision {
            Decision::Approve { .. } => {
                d.approved_pin = Some(d.pin.clone());
                d.approved_definition = Some(d.definition.clone());
                DefinitionState::Approved
            }
            Decision::Reject => DefinitionState::Rejected,
            Decision::Quarantine | Decision::Retire => DefinitionState::Quarantined,
        };
        d.decided_by = Some(by.to_owned());
        d.decided_at_ms = Some(now);
        d.updated_at_ms = now;
        store.put_definition(&d).await?;
        out.audit.push(catalog_audit(
            upstream,
            &d.kind,
            &d.name,
            decision.event(),
            Some(by),
        ));
        out.definitions.push(d);
    }
    Ok(out)
}

fn check_findings(targets: &[CatalogDefinition], decision: Decision) -> Result<(), ReviewError> {
    if decision
        != (Decision::Approve {
            accept_findings: false,
        })
    {
        return Ok(());
    }
    let risky: Vec<String> = targets
        .iter()
        .filter(|d| matches!(d.worst.as_deref(), Some("high" | "critical")))
        .map(|d| {
            format!(
                "{} {} ({})",
                d.kind,
                d.name,
                d.worst.as_deref().unwrap_or("")
            )
        })
        .collect();
    if risky.is_empty() {
        Ok(())
    } else {
        Err(ReviewError::RiskyFindings(risky.join(", ")))
    }
}

/// A quarantined definition beside what was approved.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Drift {
    /// `tool`, `prompt`, `resource` or `resourceTemplate`.
    pub kind: String,
    /// Its name or URI.
    pub name: String,
    /// Who approved the old text.
    pub approved_by: Option<String>,
    /// The approved definition.
    pub approved: Value,
    /// The definition offered now.
    pub current: Value,
    /// Lines of the approved definition (pretty JSON) missing from the current one.
    pub removed_lines: Vec<String>,
    /// Lines of the current definition not in the approved one.
    pub added_lines: Vec<String>,
}

/// What changed in the quarantined definitions of `upstream`.
pub async fn drift(store: &Store, upstream: &str) -> Result<Vec<Drift>, ReviewError> {
    let parse =
        |text: &str| serde_json::from_str::<Value>(text).unwrap_or(Value::String(text.into()));
    let pretty = |v: &Value| serde_json::to_string_pretty(v).expect("JSON");
    let mut out = Vec::new();
    for d in recorded(store, upstream).await? {
        if d.state != DefinitionState::Quarantined {
            continue;
        }
        let approved = parse(d.approved_definition.as_deref().unwrap_or("{}"));
        let current = parse(&d.definition);
        let (old, new) = (pretty(&approved), pretty(&current));
        let old_lines: Vec<&str> = old.lines().collect();
        let new_lines: Vec<&str> = new.lines().collect();
        let (removed_lines, added_lines) = line_diff(&old_lines, &new_lines);
        out.push(Drift {
            kind: d.kind.clone(),
            name: d.name.clone(),
            approved_by: d.decided_by.clone(),
            removed_lines,
            added_lines,
            approved,
            current,
        });
    }
    Ok(out)
}

/// Most cells of the diff table; larger definitions are compared line by line as sets.
const MAX_DIFF_CELLS: usize = 4_000_000;

/// The lines of `old` not kept in `new`, and the lines of `new` not in `old`, by a longest
/// common subsequence: a moved or repeated line shows as removed and added.
fn line_diff(old: &[&str], new: &[&str]) -> (Vec<String>, Vec<String>) {
    let (n, m) = (old.len(), new.len());
    if n.saturating_mul(m) > MAX_DIFF_CELLS {
        let missing = |from: &[&str], other: &[&str]| {
            from.iter()
                .filter(|l| !other.contains(l))
                .map(|l| (*l).to_owned())
                .collect()
        };
        return (missing(old, new), missing(new, old));
    }
    // lcs[i][j]: the longest common subsequence of old[i..] and new[j..].
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if old[i] == new[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut removed, mut added) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < n && j < m {
        if old[i] == new[j] {
            i += 1;
            j += 1;
        } else if lcs[i + 1][j] >= lcs[i][j + 1] {
            removed.push(old[i].to_owned());
            i += 1;
        } else {
            added.push(new[j].to_owned());
            j += 1;
        }
    }
    removed.extend(old[i..].iter().map(|l| (*l).to_owned()));
    added.extend(new[j..].iter().map(|l| (*l).to_owned()));
    (removed, added)
}

/// A definition's row as JSON (for `show` and the admin API).
pub fn definition_json(d: &CatalogDefinition) -> Value {
    serde_json::json!({
        "upstream": d.upstream,
        "kind": d.kind,
        "name": d.name,
        "state": d.state.as_str(),
        "pin": d.pin,
        "approved_pin": d.approved_pin,
        "decided_by": d.decided_by,
        "decided_at_ms": d.decided_at_ms,
        "worst": d.worst,
        "findings": serde_json::from_str::<Value>(&d.findings).unwrap_or(Value::Null),
        "definition": serde_json::from_str::<Value>(&d.definition).unwrap_or(Value::Null),
    })
}

/// An upstream's row as JSON.
pub fn upstream_json(u: &CatalogUpstream) -> Value {
    serde_json::json!({
        "upstream": u.upstream,
        "state": u.state.as_str(),
        "registered_by": u.registered_by,
        "registered_at_ms": u.registered_at_ms,
        "decided_by": u.decided_by,
        "decided_at_ms": u.decided_at_ms,
        "reason": u.reason,
    })
}

#[cfg(test)]
mod tests {
    use super::line_diff;

    #[test]
    fn moved_and_repeated_lines_show_in_the_diff() {
        let (removed, added) = line_diff(&["a", "b", "c"], &["b", "a", "c"]);
        assert_eq!(
            (removed.len(), added.len()),
            (1, 1),
            "{removed:?} {added:?}"
        );
        let (removed, added) = line_diff(&["a", "b"], &["a", "b", "b"]);
        assert_eq!((removed, added), (vec![], vec!["b".to_owned()]));
        let (removed, added) = line_diff(&["x"], &["y"]);
        assert_eq!(
            (removed, added),
            (vec!["x".to_owned()], vec!["y".to_owned()])
        );
    }
}
