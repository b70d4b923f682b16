//! `gatehouse catalog add|list|show|approve|reject|quarantine|retire|diff`: registering
//! upstreams and deciding which of them, and which of their definitions, clients get.

use crate::catalog::review::{self, Decision, Reviewed};
use crate::config::Config;
use crate::store::{CatalogDefinition, Store};
use serde_json::Value;
use std::path::Path;

/// What to do.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum CatalogAction {
    /// Register an upstream: connect, list its definitions, scan and record them (new ones
    /// pending; the upstream itself pending until approved).
    Add {
        /// The upstream's name in the configuration.
        upstream: String,
        /// Who registers it (recorded in the catalog and the audit trail).
        #[arg(long)]
        by: Option<String>,
    },
    /// The upstreams and their states, then one line per recorded definition.
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
    /// Approve an upstream and its definitions as they are now (or one definition).
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
        /// With --name: the pin you reviewed (`show` prints it); refused if it changed since.
        #[arg(long, requires = "name")]
        pin: Option<String>,
    },
    /// Reject an upstream (or one definition): it stays hidden.
    Reject {
        /// The upstream's name.
        upstream: String,
        /// Only this definition.
        #[arg(long)]
        name: Option<String>,
        /// Who decides.
        #[arg(long)]
        by: String,
        /// Why (recorded with the decision).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Hold back an approved upstream (or one definition) until it is approved again.
    Quarantine {
        /// The upstream's name.
        upstream: String,
        /// Only this definition.
        #[arg(long)]
        name: Option<String>,
        /// Who decides.
        #[arg(long)]
        by: String,
        /// Why.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Withdraw an upstream from service; `add` registers it again.
    Retire {
        /// The upstream's name.
        upstream: String,
        /// Who decides.
        #[arg(long)]
        by: String,
        /// Why.
        #[arg(long)]
        reason: Option<String>,
    },
    /// What changed in quarantined definitions: approved text, then current text.
    Diff {
        /// The upstream's name.
        upstream: String,
    },
}

/// Runs one catalog command; returns what to print. Audit records go to the configured
/// sinks (`config_dir` anchors a relative JSON-lines path).
pub async fn run(
    config: &Config,
    config_dir: &Path,
    store: &Store,
    action: CatalogAction,
) -> Result<String, String> {
    let text = |e: review::ReviewError| match e {
        review::ReviewError::RiskyFindings(_) => format!("{e} (--accept-findings)"),
        e => e.to_string(),
    };
    let reviewed = match action {
        CatalogAction::Add { upstream, by } => {
            review::register(config, store, &upstream, by.as_deref())
                .await
                .map_err(text)?
        }
        CatalogAction::List { upstream } => return list(store, upstream.as_deref()).await,
        CatalogAction::Show { upstream } => {
            let rows = review::recorded(store, &upstream).await.map_err(text)?;
            let shown: Vec<Value> = rows.iter().map(review::definition_json).collect();
            return Ok(serde_json::to_string_pretty(&shown).expect("JSON") + "\n");
        }
        CatalogAction::Diff { upstream } => return diff(store, &upstream).await,
        CatalogAction::Approve {
            upstream,
            name,
            by,
            accept_findings,
            pin,
        } => {
            let decision = Decision::Approve { accept_findings };
            decide(store, &upstream, name, &by, None, decision, pin)
                .await
                .map_err(text)?
        }
        CatalogAction::Reject {
            upstream,
            name,
            by,
            reason,
        } => decide(store, &upstream, name, &by, reason, Decision::Reject, None)
            .await
            .map_err(text)?,
        CatalogAction::Quarantine {
            upstream,
            name,
            by,
            reason,
        } => decide(
            store,
            &upstream,
            name,
            &by,
            reason,
            Decision::Quarantine,
            None,
        )
        .await
        .map_err(text)?,
        CatalogAction::Retire {
            upstream,
            by,
            reason,
        } => decide(store, &upstream, None, &by, reason, Decision::Retire, None)
            .await
            .map_err(text)?,
    };
    write_audit(config, config_dir, store, &reviewed).await;
    Ok(summary(&reviewed))
}

async fn decide(
    store: &Store,
    upstream: &str,
    name: Option<String>,
    by: &str,
    reason: Option<String>,
    decision: Decision,
    pin: Option<String>,
) -> Result<Reviewed, review::ReviewError> {
    review::decide(
        store,
        upstream,
        name.as_deref(),
        by,
        reason.as_deref(),
        decision,
        pin.as_deref(),
    )
    .await
}

/// Writes the operation's audit records through the configured sinks, as a gateway would.
async fn write_audit(config: &Config, config_dir: &Path, store: &Store, reviewed: &Reviewed) {
    let Some(auditor) =
        crate::audit::Auditor::start(&config.audit, Some(store.clone()), config_dir)
    else {
        return;
    };
    for record in &reviewed.audit {
        auditor.submit(record.clone());
    }
    auditor.close().await;
}

fn summary(r: &Reviewed) -> String {
    let mut out = String::new();
    if let Some(u) = &r.upstream {
        out.push_str(&format!("upstream {}: {}\n", u.upstream, u.state.as_str()));
    }
    for d in &r.definitions {
        out.push_str(&line(d));
    }
    if !r.skipped.is_empty() {
        out.push_str(&format!(
            "left as they are, rejected or changed (approve each by --name, after `diff`): {}\n",
            r.skipped.join(", ")
        ));
    }
    out
}

/// Upstream-supplied text made safe for a terminal: control and invisible or bidirectional
/// formatting characters are shown as `\u{…}` escapes.
fn printable(s: &str) -> String {
    let hidden = |c: char| {
        c.is_control()
            || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
    };
    s.chars()
        .map(|c| {
            if hidden(c) {
                format!("\\u{{{:x}}}", c as u32)
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn line(d: &CatalogDefinition) -> String {
    format!(
        "{:<12} {:<18} {:<40} {:<12} {}\n",
        d.state.as_str(),
        d.kind,
        printable(&d.name),
        d.worst.as_deref().unwrap_or("-"),
        &d.pin[..12.min(d.pin.len())]
    )
}

async fn list(store: &Store, upstream: Option<&str>) -> Result<String, String> {
    let upstreams = store.catalog_upstreams().await.map_err(|e| e.to_string())?;
    let rows = store
        .definitions(upstream)
        .await
        .map_err(|e| e.to_string())?;
    let mut out = format!("{:<16} {:<12} decided by\n", "upstream", "state");
    for u in upstreams
        .iter()
        .filter(|u| upstream.is_none_or(|n| u.upstream == n))
    {
        out.push_str(&format!(
            "{:<16} {:<12} {}\n",
            u.upstream,
            u.state.as_str(),
            u.decided_by.as_deref().unwrap_or("-")
        ));
    }
    out.push_str(&format!(
        "\n{:<16} {:<12} {:<18} {:<40} {:<12} pin\n",
        "upstream", "state", "kind", "name", "worst"
    ));
    for d in &rows {
        out.push_str(&format!("{:<16} {}", d.upstream, line(d)));
    }
    Ok(out)
}

async fn diff(store: &Store, upstream: &str) -> Result<String, String> {
    let mut out = String::new();
    for d in review::drift(store, upstream)
        .await
        .map_err(|e| e.to_string())?
    {
        out.push_str(&format!(
            "=== {} {} (approved by {})\n",
            d.kind,
            printable(&d.name),
            d.approved_by.as_deref().map_or("?".into(), printable)
        ));
        for l in &d.removed_lines {
            out.push_str(&format!("- {l}\n"));
        }
        for l in &d.added_lines {
            out.push_str(&format!("+ {l}\n"));
        }
    }
    if out.is_empty() {
        out.push_str("no quarantined definitions\n");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn upstream_supplied_names_cannot_drive_the_terminal() {
        assert_eq!(
            super::printable("echo\u{1b}[2J\u{202E}x"),
            "echo\\u{1b}[2J\\u{202e}x"
        );
        assert_eq!(super::printable("plain_name"), "plain_name");
    }
}
