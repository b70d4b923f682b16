//! `gatehouse catalog add|list|show|approve|reject|diff`: registering upstreams and deciding
//! which of their definitions clients get.

use crate::catalog::pin::{DefinitionKind, pin};
use crate::catalog::registry::{catalog_audit, describe, other_tools};
use crate::catalog::scan::Scanner;
use crate::config::Config;
use crate::protocol::{Message, RequestId};
use crate::store::{CatalogDefinition, DefinitionState, Store};
use crate::upstream::{ClientIdentity, Delivery, Frame, UpstreamClient};
use serde_json::{Map, Value};
use std::sync::Arc;

/// What to do.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum CatalogAction {
    /// Connect to an upstream, list its definitions, scan them and record them (new ones pending).
    Add {
        /// The upstream's name in the configuration.
        upstream: String,
    },
    /// One line per recorded definition.
    List {
        /// Only this upstream.
        #[arg(long)]
        upstream: Option<String>,
    },
    /// Every definition of an upstream with its findings, as JSON.
    Show {
        /// The upstream's name.
        upstream: String,
    },
    /// Approve an upstream's definitions as they are now (or one of them).
    Approve {
        /// The upstream's name.
        upstream: String,
        /// Only this tool, prompt or resource (its name or URI at the upstream).
        #[arg(long)]
        name: Option<String>,
        /// Who decides (recorded in the catalog and the audit trail).
        #[arg(long)]
        by: String,
        /// Approve even definitions with high or critical findings.
        #[arg(long)]
        accept_findings: bool,
    },
    /// Reject an upstream's definitions (or one of them): they stay hidden.
    Reject {
        /// The upstream's name.
        upstream: String,
        /// Only this definition.
        #[arg(long)]
        name: Option<String>,
        /// Who decides.
        #[arg(long)]
        by: String,
    },
    /// What changed in quarantined definitions: approved text, then current text.
    Diff {
        /// The upstream's name.
        upstream: String,
    },
}

/// Runs one catalog command; returns what to print.
pub async fn run(config: &Config, store: &Store, action: CatalogAction) -> Result<String, String> {
    match action {
        CatalogAction::Add { upstream } => add(config, store, &upstream).await,
        CatalogAction::List { upstream } => list(store, upstream.as_deref()).await,
        CatalogAction::Show { upstream } => {
            let rows = rows(store, &upstream).await?;
            let shown: Vec<Value> = rows.iter().map(show_row).collect();
            Ok(serde_json::to_string_pretty(&shown).expect("JSON") + "\n")
        }
        CatalogAction::Approve {
            upstream,
            name,
            by,
            accept_findings,
        } => {
            decide(
                store,
                &upstream,
                name.as_deref(),
                &by,
                Decision::Approve { accept_findings },
            )
            .await
        }
        CatalogAction::Reject { upstream, name, by } => {
            decide(store, &upstream, name.as_deref(), &by, Decision::Reject).await
        }
        CatalogAction::Diff { upstream } => diff(store, &upstream).await,
    }
}

async fn rows(store: &Store, upstream: &str) -> Result<Vec<CatalogDefinition>, String> {
    let rows = store
        .definitions(Some(upstream))
        .await
        .map_err(|e| e.to_string())?;
    if rows.is_empty() {
        return Err(format!(
            "nothing is recorded for upstream {upstream:?}; run `gatehouse catalog add {upstream}` first"
        ));
    }
    Ok(rows)
}

/// The lists an upstream is asked for, with what each holds.
const LISTS: [(&str, &str, DefinitionKind); 4] = [
    ("tools/list", "tools", DefinitionKind::Tool),
    ("prompts/list", "prompts", DefinitionKind::Prompt),
    ("resources/list", "resources", DefinitionKind::Resource),
    (
        "resources/templates/list",
        "resourceTemplates",
        DefinitionKind::ResourceTemplate,
    ),
];

async fn add(config: &Config, store: &Store, name: &str) -> Result<String, String> {
    let cfg = config.upstreams.get(name).ok_or_else(|| {
        let known: Vec<_> = config.upstreams.keys().map(String::as_str).collect();
        format!(
            "no upstream {name:?} in the configuration (known: {})",
            known.join(", ")
        )
    })?;
    let client = Arc::new(UpstreamClient::new(name, cfg, &config.limits, None)?);
    let (session, info) = client
        .open(&ClientIdentity::gateway())
        .await
        .map_err(|e| e.to_string())?;
    let scanner = Scanner::new(&config.catalog.clone().unwrap_or_default().rules)?;
    let all = store.definitions(None).await.map_err(|e| e.to_string())?;
    let others = other_tools(&all, name);
    let existing: Vec<CatalogDefinition> = all.into_iter().filter(|d| d.upstream == name).collect();
    let mut out = String::new();
    let mut seen = 0;
    for (method, key, kind) in LISTS {
        let capability = match kind {
            DefinitionKind::Tool => "tools",
            DefinitionKind::Prompt => "prompts",
            _ => "resources",
        };
        if info.capabilities.get(capability).is_none() {
            continue;
        }
        let mut cursor: Option<String> = None;
        loop {
            let params = cursor
                .as_ref()
                .map(|c| crate::protocol::jsonrpc::to_raw(&serde_json::json!({ "cursor": c })));
            let request = Message::request(RequestId::Number(1), method, params);
            let mut stream = client
                .call(&session, request, Delivery::Whole)
                .await
                .map_err(|e| e.to_string())?;
            let mut result: Option<Map<String, Value>> = None;
            while let Some(frame) = stream.next().await {
                match frame {
                    Frame::Response(m) => {
                        result = m.result.and_then(|r| serde_json::from_str(r.get()).ok());
                        break;
                    }
                    Frame::Failed(e) => return Err(e.to_string()),
                    _ => {}
                }
            }
            let mut result = result.ok_or_else(|| format!("{method}: no usable answer"))?;
            let items = match result.remove(key) {
                Some(Value::Array(items)) => items,
                _ => Vec::new(),
            };
            for item in items {
                let p = pin(kind, &item);
                let id = item
                    .get(kind.id_member())
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let before = existing
                    .iter()
                    .find(|d| d.kind == kind.as_str() && d.name == id)
                    .cloned();
                let state = match &before {
                    Some(b) if b.approved_pin.as_deref() == Some(&p) => b.state,
                    Some(b) if b.approved_pin.is_some() => DefinitionState::Quarantined,
                    Some(b) if b.state == DefinitionState::Rejected => DefinitionState::Rejected,
                    _ => DefinitionState::Pending,
                };
                let row = describe(&scanner, name, kind, &item, p, state, before, &others);
                store
                    .put_definition(&row)
                    .await
                    .map_err(|e| e.to_string())?;
                out.push_str(&line(&row));
                seen += 1;
            }
            cursor = result
                .remove("nextCursor")
                .and_then(|v| v.as_str().map(str::to_owned));
            if cursor.is_none() {
                break;
            }
        }
    }
    client.close(&session).await;
    client.shutdown().await;
    Ok(format!("{seen} definition(s) recorded for {name}\n{out}"))
}

fn line(d: &CatalogDefinition) -> String {
    format!(
        "{:<12} {:<18} {:<40} {:<12} {}\n",
        d.state.as_str(),
        d.kind,
        d.name,
        d.worst.as_deref().unwrap_or("-"),
        &d.pin[..12]
    )
}

async fn list(store: &Store, upstream: Option<&str>) -> Result<String, String> {
    let rows = store
        .definitions(upstream)
        .await
        .map_err(|e| e.to_string())?;
    let mut out = format!(
        "{:<16} {:<12} {:<18} {:<40} {:<12} pin\n",
        "upstream", "state", "kind", "name", "worst"
    );
    for d in &rows {
        out.push_str(&format!("{:<16} {}", d.upstream, line(d)));
    }
    Ok(out)
}

fn show_row(d: &CatalogDefinition) -> Value {
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

enum Decision {
    Approve { accept_findings: bool },
    Reject,
}

async fn decide(
    store: &Store,
    upstream: &str,
    name: Option<&str>,
    by: &str,
    decision: Decision,
) -> Result<String, String> {
    if by.trim().is_empty() {
        return Err("--by must name who decides".into());
    }
    let rows: Vec<CatalogDefinition> = rows(store, upstream)
        .await?
        .into_iter()
        .filter(|d| name.is_none_or(|n| d.name == n))
        .filter(|d| d.state != DefinitionState::Removed)
        .collect();
    if rows.is_empty() {
        return Err(format!(
            "{upstream} has no definition named {:?}",
            name.unwrap_or("")
        ));
    }
    if let Decision::Approve {
        accept_findings: false,
    } = decision
    {
        let risky: Vec<String> = rows
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
        if !risky.is_empty() {
            return Err(format!(
                "not approved: findings of high or critical severity in {}; read them with `gatehouse catalog show {upstream}` and add --accept-findings to approve anyway",
                risky.join(", ")
            ));
        }
    }
    let now = crate::audit::now_ms();
    let mut out = String::new();
    for mut d in rows {
        let (state, event) = match decision {
            Decision::Approve { .. } => {
                d.approved_pin = Some(d.pin.clone());
                d.approved_definition = Some(d.definition.clone());
                (DefinitionState::Approved, "approve")
            }
            Decision::Reject => (DefinitionState::Rejected, "reject"),
        };
        d.state = state;
        d.decided_by = Some(by.to_owned());
        d.decided_at_ms = Some(now);
        d.updated_at_ms = now;
        store.put_definition(&d).await.map_err(|e| e.to_string())?;
        let kind = DefinitionKind::parse(&d.kind).unwrap_or(DefinitionKind::Tool);
        store
            .insert_audit(&[catalog_audit(upstream, kind, &d.name, event, Some(by))])
            .await
            .map_err(|e| e.to_string())?;
        out.push_str(&line(&d));
    }
    Ok(out)
}

async fn diff(store: &Store, upstream: &str) -> Result<String, String> {
    let mut out = String::new();
    for d in rows(store, upstream).await? {
        if d.state != DefinitionState::Quarantined {
            continue;
        }
        let pretty = |text: &str| {
            serde_json::from_str::<Value>(text)
                .map(|v| serde_json::to_string_pretty(&v).expect("JSON"))
                .unwrap_or_else(|_| text.to_owned())
        };
        let old = pretty(d.approved_definition.as_deref().unwrap_or("{}"));
        let new = pretty(&d.definition);
        out.push_str(&format!(
            "=== {} {} (approved by {})\n",
            d.kind,
            d.name,
            d.decided_by.as_deref().unwrap_or("?")
        ));
        let (old_lines, new_lines): (Vec<&str>, Vec<&str>) =
            (old.lines().collect(), new.lines().collect());
        for l in &old_lines {
            if !new_lines.contains(l) {
                out.push_str(&format!("- {l}\n"));
            }
        }
        for l in &new_lines {
            if !old_lines.contains(l) {
                out.push_str(&format!("+ {l}\n"));
            }
        }
    }
    if out.is_empty() {
        out.push_str("no quarantined definitions\n");
    }
    Ok(out)
}
