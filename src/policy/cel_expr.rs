//! CEL conditions in policy rules: compiled once at configuration load, evaluated against
//! `principal`, `request` and (for calls) `args`.

use super::Facts;
use crate::auth::Principal;
use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;
use cel::{Context, Env, Program};
use serde_json::{Value, json};
use std::sync::Arc;

thread_local! {
    /// The standard library, built once per thread: building it is most of an evaluation's cost.
    static STDLIB: Arc<Env> = Arc::new(Env::stdlib());
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
        // The variables are lent to the evaluation as they are: binding them with
        // `add_variable_from_value` converted each (the principal with all its claims) into
        // CEL's value objects again on every evaluation, most of a decision's cost (issue 16).
        let result = STDLIB.with(|env| {
            let mut ctx = Context::with_env(env.clone());
            ctx.set_variable_resolver(inputs);
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

/// The variables a condition sees, built once per decision (the principal's once per
/// principal), in the form CEL evaluates.
pub(super) struct Inputs {
    principal: Arc<dyn Val>,
    request: Box<dyn Val>,
    args: Box<dyn Val>,
}

impl VariableResolver for Inputs {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        let v: &dyn Val = match variable {
            "principal" => &*self.principal,
            "request" => &*self.request,
            "args" => &*self.args,
            _ => return None,
        };
        Some(CowVal::Borrowed(v))
    }
}

fn to_cel(v: &Value) -> cel::Value {
    cel::to_value(v).unwrap_or(cel::Value::Null)
}

/// A value as CEL evaluates it (what binding it with `add_variable_from_value` did).
fn to_val(v: cel::Value) -> Box<dyn Val> {
    v.try_into()
        .unwrap_or_else(|_| cel::Value::Null.try_into().expect("null converts"))
}

impl Inputs {
    pub(super) fn new(
        principal: Option<&Principal>,
        facts: &Facts<'_>,
        args: Option<&Value>,
    ) -> Inputs {
        let principal = match principal {
            Some(p) => p.policy_view(|p| {
                Arc::from(to_val(to_cel(&json!({
                    "sub": p.subject(), "iss": p.issuer(), "client_id": p.client_id().unwrap_or_default(),
                    "scopes": p.scopes(), "groups": p.groups(), "roles": p.roles(),
                    "tenant": p.tenant().unwrap_or_default(), "claims": p.claims(),
                    "authenticated": true,
                }))))
            }),
            None => Arc::from(to_val(to_cel(&json!({
                "sub": "", "iss": "", "client_id": "", "scopes": [], "groups": [], "roles": [],
                "tenant": "", "claims": {}, "authenticated": false,
            })))),
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
            request: to_val(request.into()),
            args: to_val(args.map(to_cel).unwrap_or_else(|| to_cel(&json!({})))),
        }
    }
}
