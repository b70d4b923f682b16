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
            ctx.add_variable_from_value("principal", inputs.principal.clone());
            ctx.add_variable_from_value("request", inputs.request.clone());
            ctx.add_variable_from_value("args", inputs.args.clone());
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
    principal: cel::Value,
    request: cel::Value,
    args: cel::Value,
}

fn to_cel(v: &Value) -> cel::Value {
    cel::to_value(v).unwrap_or(cel::Value::Null)
}

impl Inputs {
    pub(super) fn new(
        principal: Option<&Principal>,
        facts: &Facts<'_>,
        args: Option<&Value>,
    ) -> Inputs {
        let principal = match principal {
            Some(p) => p.policy_view(|p| {
                to_cel(&json!({
                    "sub": p.subject(), "iss": p.issuer(), "client_id": p.client_id().unwrap_or_default(),
                    "scopes": p.scopes(), "groups": p.groups(), "roles": p.roles(),
                    "tenant": p.tenant().unwrap_or_default(), "claims": p.claims(),
                    "authenticated": true,
                }))
            }),
            None => to_cel(&json!({
                "sub": "", "iss": "", "client_id": "", "scopes": [], "groups": [], "roles": [],
                "tenant": "", "claims": {}, "authenticated": false,
            })),
        };
        let kind = match facts.kind {
            super::FunctionKind::Tool => "tool",
            super::FunctionKind::Prompt => "prompt",
            super::FunctionKind::Resource => "resource",
        };
        let request: std::collections::HashMap<&str, &str> = [
            ("server", facts.server),
            ("method", facts.method),
            ("kind", kind),
            ("name", facts.name),
            ("upstream", facts.upstream),
        ]
        .into();
        Inputs {
            principal,
            request: request.into(),
            args: args.map(to_cel).unwrap_or_else(|| to_cel(&json!({}))),
        }
    }
}
