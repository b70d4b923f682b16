//! Function-level policy: a compiled, ordered rule list per virtual server deciding which
//! principal may see and call which tool, prompt and resource. First matching rule wins; the
//! decision names the rule, so every outcome can be explained and audited.

mod cel_expr;

pub use cel_expr::compile_cel;

use crate::auth::Principal;
use crate::auth::glob_match;
use crate::config::{Effect, Policy, PolicyRule};
use cel_expr::CelProgram;
use serde_json::Value;
use std::sync::Arc;

/// What kind of function a request targets (which methods act on which kind is
/// `protocol::Method`'s to say).
pub use crate::protocol::FunctionKind;

/// The facts about a request that rules look at.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// The virtual server's name.
    pub server: &'a str,
    /// The JSON-RPC method (`tools/call`, or `tools/list` when filtering a listing).
    pub method: &'a str,
    /// What kind of function.
    pub kind: FunctionKind,
    /// Its name (tool, prompt) or URI (resource) as clients see it.
    pub name: &'a str,
    /// The upstream that offers it.
    pub upstream: &'a str,
}

/// The outcome of a policy evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Allow or deny.
    pub effect: Effect,
    /// The rule that decided (`default` when none matched, `open` without a policy).
    pub rule: Arc<str>,
    /// Scopes the call needs besides the server's own (allow only).
    pub require_scopes: Vec<String>,
}

impl Decision {
    /// Whether the function may be used.
    pub fn allowed(&self) -> bool {
        self.effect == Effect::Allow
    }
}

struct CompiledRule {
    label: Arc<str>,
    effect: Effect,
    tools: Option<Vec<String>>,
    prompts: Option<Vec<String>>,
    resources: Option<Vec<String>>,
    upstreams: Vec<String>,
    subjects: Vec<String>,
    clients: Vec<String>,
    groups: Vec<String>,
    roles: Vec<String>,
    tenants: Vec<String>,
    scopes: Vec<String>,
    when: Option<CelProgram>,
    arguments: Option<CelProgram>,
    require_scopes: Vec<String>,
}

/// A virtual server's policy, ready to evaluate.
pub struct CompiledPolicy {
    default: Effect,
    default_label: Arc<str>,
    rules: Vec<CompiledRule>,
}

impl CompiledPolicy {
    /// Everything allowed: a server without a `policy` block.
    pub fn open() -> CompiledPolicy {
        CompiledPolicy {
            default: Effect::Allow,
            default_label: "open".into(),
            rules: Vec::new(),
        }
    }

    /// Compiles a configured policy (CEL programs are compiled once, here).
    pub fn compile(policy: &Policy) -> Result<CompiledPolicy, String> {
        let rules = policy
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| compile_rule(i, r))
            .collect::<Result<_, _>>()?;
        Ok(CompiledPolicy {
            default: policy.default,
            default_label: "default".into(),
            rules,
        })
    }

    /// Whether the policy lets everything through (no evaluation needed).
    pub fn is_open(&self) -> bool {
        self.rules.is_empty() && self.default == Effect::Allow
    }

    /// Decides whether `principal` may see (`args: None`) or call (`args: Some`) a function.
    pub fn decide(
        &self,
        principal: Option<&Principal>,
        facts: &Facts<'_>,
        args: Option<&Value>,
    ) -> Decision {
        let mut cel_context = None;
        for rule in &self.rules {
            if rule.arguments.is_some() && args.is_none() {
                continue;
            }
            if !rule.targets(facts) || !rule.matches_principal(principal) {
                continue;
            }
            let fails_closed = rule.effect == Effect::Deny;
            let holds = |program: &CelProgram, ctx: &mut Option<cel_expr::Inputs>| {
                let inputs =
                    ctx.get_or_insert_with(|| cel_expr::Inputs::new(principal, facts, args));
                program.holds(inputs, fails_closed, &rule.label)
            };
            if let Some(p) = &rule.when
                && !holds(p, &mut cel_context)
            {
                continue;
            }
            if let Some(p) = &rule.arguments
                && !holds(p, &mut cel_context)
            {
                continue;
            }
            return Decision {
                effect: rule.effect,
                rule: rule.label.clone(),
                require_scopes: if rule.effect == Effect::Allow {
                    rule.require_scopes.clone()
                } else {
                    Vec::new()
                },
            };
        }
        Decision {
            effect: self.default,
            rule: self.default_label.clone(),
            require_scopes: Vec::new(),
        }
    }
}

fn compile_rule(index: usize, r: &PolicyRule) -> Result<CompiledRule, String> {
    let label: Arc<str> = r.label(index).into();
    let program = |key: &str, e: &Option<String>| {
        e.as_deref()
            .map(|src| CelProgram::compile(src).map_err(|m| format!("rules[{index}].{key}: {m}")))
            .transpose()
    };
    Ok(CompiledRule {
        when: program("when", &r.when)?,
        arguments: program("arguments", &r.arguments)?,
        label,
        effect: r.effect,
        tools: r.tools.as_ref().map(|g| g.patterns().to_vec()),
        prompts: r.prompts.as_ref().map(|g| g.patterns().to_vec()),
        resources: r.resources.as_ref().map(|g| g.patterns().to_vec()),
        upstreams: r.upstreams.clone(),
        subjects: r.subjects.clone(),
        clients: r.clients.clone(),
        groups: r.groups.clone(),
        roles: r.roles.clone(),
        tenants: r.tenants.clone(),
        scopes: r.scopes.clone(),
        require_scopes: r.require_scopes.clone(),
    })
}

impl CompiledRule {
    /// Whether the rule is about this function (a rule naming no function is about all).
    fn targets(&self, facts: &Facts<'_>) -> bool {
        if !self.upstreams.is_empty() && !self.upstreams.iter().any(|u| u == facts.upstream) {
            return false;
        }
        if self.tools.is_none() && self.prompts.is_none() && self.resources.is_none() {
            return true;
        }
        let patterns = match facts.kind {
            FunctionKind::Tool => &self.tools,
            FunctionKind::Prompt => &self.prompts,
            FunctionKind::Resource => &self.resources,
        };
        patterns
            .as_ref()
            .is_some_and(|ps| ps.iter().any(|p| glob_match(p, facts.name)))
    }

    /// Whether the principal has one of the listed attributes (none listed: everyone).
    fn matches_principal(&self, principal: Option<&Principal>) -> bool {
        let lists = [
            &self.subjects,
            &self.clients,
            &self.groups,
            &self.roles,
            &self.tenants,
            &self.scopes,
        ];
        if lists.iter().all(|l| l.is_empty()) {
            return true;
        }
        let Some(p) = principal else {
            return false;
        };
        let has = |list: &[String], value: &str| list.iter().any(|v| v == value);
        has(&self.subjects, p.subject())
            || p.client_id().is_some_and(|c| has(&self.clients, c))
            || p.groups().iter().any(|g| has(&self.groups, g))
            || p.roles().iter().any(|r| has(&self.roles, r))
            || p.tenant().is_some_and(|t| has(&self.tenants, t))
            || p.scopes().iter().any(|s| has(&self.scopes, s))
    }
}

#[cfg(test)]
mod tests;
