//! Output guardrails: what an upstream returns (tool results, resource contents, prompt
//! messages) is scanned on its way to the client for secrets, personal data and text
//! addressed to the model, and per detector redacted, blocked or flagged. The scanner
//! ([`scan`]) works on the response's bytes as they stream, holding back a bounded window;
//! this module builds a server's scanner from its configuration, with the catalog scanner's
//! injection rules as the `prompt-injection` detector.

mod detect;
pub mod scan;
mod text;
mod validate;

pub use scan::{Action, Blocked, Finding, Guard, Scan};

use crate::config::guardrails::Guardrails;
use std::sync::Arc;

/// The guard of a server with `guardrails`; `catalog_rules` are the catalog's custom scan
/// rules, applied to results as injection rules too.
pub fn build(
    cfg: &Guardrails,
    catalog_rules: &[crate::catalog::scan::CustomRule],
) -> Result<Arc<Guard>, String> {
    let rules = cfg.effective();
    let injection: Option<scan::InjectionCheck> =
        if rules.iter().any(|(id, _)| id == scan::INJECTION) {
            let scanner = crate::catalog::scan::Scanner::new(catalog_rules)?;
            Some(Arc::new(move |text: &str| scanner.injection(text)))
        } else {
            None
        };
    Guard::new(&rules, injection, cfg.window())
        .map(Arc::new)
        .map_err(|e| e.to_string())
}

/// The name of an action in audit records and metrics.
pub fn action_name(a: Action) -> &'static str {
    match a {
        Action::Redact => "redact",
        Action::Block => "block",
        Action::Flag => "flag",
    }
}

/// Counts findings for `server`.
pub fn count(server: &str, findings: &[Finding]) {
    for f in findings {
        crate::telemetry::metrics::METRICS.guardrail_finding(
            server,
            &f.rule,
            action_name(f.action),
            f.count,
        );
    }
}
