//! CEL conditions in policy rules: compiled once at configuration load, evaluated against
//! `principal`, `request` and (for calls) `args`.

use super::Facts;
use crate::auth::Principal;
use cel::{Context, Program};
use serde_json::{Value, json};

thread_local! {
    /// The standard library, built once per thread: building it is most of an evaluation's cost.
    static STDLIB: Context<'static, 'static> = Context::default();
}

/// A compiled CEL condition.
pub(super) struct CelProgram {
    program: Program,
}

/// Compiles `source`; the error names the line and column of the first problem.
pub fn compile_cel(source: &str) -> Result<(), String> {
    CelProgram::compile(source).map(|_| ())
}

impl CelProgram {
    pub(super) fn compile(source: &str) -> Result<CelProgram, String> {
        match Program::compile(source) {
            Ok(program) => Ok(CelProgram { program }),
            Err(e) => Err(match e.errors.first() {
                Some(first) => format!(
                    "invalid CEL at line {}, column {}: {}",
                    first.pos.0,
                    first.pos.1,
                    first.msg.lines().next().unwrap_or_default()
                ),
                None => format!("invalid CEL: {e}"),
            }),
        }
    }

    /// Whether the condition holds. An expression that fails or is not a boolean holds for a
    /// deny rule and not for an allow rule (`fails_closed`): a broken rule never opens access.
    pub(super) fn holds(&self, inputs: &Inputs, fails_closed: bool, rule: &str) -> bool {
        let result = STDLIB.with(|root| {
            let mut ctx = root.new_inner_scope();
            for (name, value) in [
                ("principal", &inputs.principal),
                ("request", &inputs.request),
                ("args", &inputs.args),
            ] {
                if let Ok(v) = cel::to_value(value) {
                    ctx.add_variable_from_value(name, v);
                }
            }
            self.program.execute(&ctx)
        });
        match result {
            Ok(cel::Value::Bool(b)) => b,
            Ok(other) => {
                tracing::warn!(rule, value = ?other, "policy condition is not a boolean; treated as failed");
                fails_closed
            }
            Err(e) => {
                tracing::debug!(rule, error = %e, "policy condition could not be evaluated; treated as failed");
                fails_closed
            }
        }
    }
}

/// The variables a condition sees, built once per decision.
pub(super) struct Inputs {
    principal: Value,
    request: Value,
    args: Value,
}

impl Inputs {
    pub(super) fn new(
        principal: Option<&Principal>,
        facts: &Facts<'_>,
        args: Option<&Value>,
    ) -> Inputs {
        let principal = match principal {
            Some(p) => json!({
                "sub": p.subject(), "iss": p.issuer(), "client_id": p.client_id().unwrap_or_default(),
                "scopes": p.scopes(), "groups": p.groups(), "roles": p.roles(),
                "tenant": p.tenant().unwrap_or_default(), "claims": p.claims(),
                "authenticated": true,
            }),
            None => json!({
                "sub": "", "iss": "", "client_id": "", "scopes": [], "groups": [], "roles": [],
                "tenant": "", "claims": {}, "authenticated": false,
            }),
        };
        Inputs {
            principal,
            request: json!({
                "server": facts.server, "method": facts.method, "kind": facts.kind,
                "name": facts.name, "upstream": facts.upstream,
            }),
            args: args.cloned().unwrap_or_else(|| json!({})),
        }
    }
}
