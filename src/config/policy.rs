//! Configuration of function-level policy: which principal may see and use which tool, prompt
//! and resource of a virtual server.

use serde::Deserialize;

/// A virtual server's policy: rules in order, first match wins, else `default`.
#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// What happens when no rule matches (`deny` unless set).
    #[serde(default)]
    pub default: Effect,
    /// Rules, tried in order.
    #[serde(default)]
    pub rules: Vec<PolicyRule>,
}

/// Allow or deny.
#[derive(
    Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default, serde::Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// Visible and callable.
    Allow,
    /// Hidden, and answered as if it did not exist.
    #[default]
    Deny,
}

/// One glob or a list of globs.
#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(untagged)]
pub enum Globs {
    /// A single pattern.
    One(String),
    /// Any of these patterns.
    Many(Vec<String>),
}

impl Globs {
    /// The patterns.
    pub fn patterns(&self) -> &[String] {
        match self {
            Globs::One(p) => std::slice::from_ref(p),
            Globs::Many(v) => v,
        }
    }
}

/// One rule. It applies to a function when a target field matches it (no target field: every
/// function), the upstream is listed (if any are), the principal matches one of the listed
/// attributes (if any are), and the CEL conditions hold.
#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyRule {
    /// Shown in explanations, logs and audit records (default `rules[N]`).
    #[serde(default)]
    pub name: Option<String>,
    /// `allow` (default) or `deny`.
    #[serde(default = "allow")]
    pub effect: Effect,
    /// Tool names as clients see them.
    #[serde(default)]
    pub tools: Option<Globs>,
    /// Prompt names.
    #[serde(default)]
    pub prompts: Option<Globs>,
    /// Resource URIs (and resource template URIs in listings).
    #[serde(default)]
    pub resources: Option<Globs>,
    /// Upstream names.
    #[serde(default)]
    pub upstreams: Vec<String>,
    /// Principal subjects.
    #[serde(default)]
    pub subjects: Vec<String>,
    /// OAuth client ids.
    #[serde(default)]
    pub clients: Vec<String>,
    /// Groups.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Roles.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Tenants.
    #[serde(default)]
    pub tenants: Vec<String>,
    /// Scopes.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// A CEL expression over `principal` and `request` that must be true.
    #[serde(default)]
    pub when: Option<String>,
    /// A CEL expression over `principal`, `request` and `args` (the call's arguments); a rule
    /// with it applies to calls only, never to listings.
    #[serde(default)]
    pub arguments: Option<String>,
    /// For `allow`: scopes a call additionally needs (403 `insufficient_scope`, the function
    /// stays visible).
    #[serde(default)]
    pub require_scopes: Vec<String>,
}

fn allow() -> Effect {
    Effect::Allow
}

impl PolicyRule {
    /// The rule's name for explanations.
    pub fn label(&self, index: usize) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("rules[{index}]"))
    }
}

/// Checks of one server's policy; CEL expressions are compiled here so that a bad one is a
/// configuration error with its position.
pub(super) fn check(
    field: &str,
    policy: &Policy,
    upstreams: &[String],
    add: &mut dyn FnMut(String, String),
) {
    let mut names = std::collections::HashSet::new();
    for (i, rule) in policy.rules.iter().enumerate() {
        let f = format!("{field}.rules[{i}]");
        if let Some(n) = &rule.name
            && !names.insert(n.clone())
        {
            add(
                format!("{f}.name"),
                format!("{n:?} is used by another rule; names must be unique"),
            );
        }
        for u in &rule.upstreams {
            if !upstreams.contains(u) {
                add(
                    format!("{f}.upstreams"),
                    format!(
                        "{u:?} is not an upstream of this server (it has: {})",
                        upstreams.join(", ")
                    ),
                );
            }
        }
        for (key, expr) in [("when", &rule.when), ("arguments", &rule.arguments)] {
            if let Some(e) = expr
                && let Err(msg) = crate::policy::compile_cel(e)
            {
                add(format!("{f}.{key}"), msg);
            }
        }
        if rule.effect == Effect::Deny && !rule.require_scopes.is_empty() {
            add(
                format!("{f}.require_scopes"),
                "only an `allow` rule can require scopes".into(),
            );
        }
        for (key, globs) in [
            ("tools", &rule.tools),
            ("prompts", &rule.prompts),
            ("resources", &rule.resources),
        ] {
            if let Some(g) = globs
                && g.patterns().iter().any(String::is_empty)
            {
                add(
                    format!("{f}.{key}"),
                    "an empty pattern matches nothing; use \"*\" for everything".into(),
                );
            }
        }
    }
}
