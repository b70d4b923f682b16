//! `servers[].virtual`: tools, prompts and resources as the enterprise wants clients to see
//! them — renamed, with approved descriptions, arguments fixed or defaulted, enums and ranges
//! narrowed — each made from one definition of one upstream.

use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashSet};

/// `servers[].virtual`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Virtual {
    /// Virtual tools.
    #[serde(default)]
    pub tools: Vec<VirtualTool>,
    /// Virtual prompts.
    #[serde(default)]
    pub prompts: Vec<VirtualPrompt>,
    /// Virtual resources.
    #[serde(default)]
    pub resources: Vec<VirtualResource>,
}

/// One virtual tool.
#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VirtualTool {
    /// The name clients see and policy rules match.
    pub name: String,
    /// The upstream's own name of the tool it is made from.
    pub from: String,
    /// The upstream offering `from`; needed only when the server has several.
    #[serde(default)]
    pub upstream: Option<String>,
    /// Replaces the tool's title.
    #[serde(default)]
    pub title: Option<String>,
    /// Replaces the tool's description (the approved text is what clients see).
    #[serde(default)]
    pub description: Option<String>,
    /// Arguments always sent with these values, removed from the schema clients see; a
    /// client that sends one is refused.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, serde_json::Value>")]
    pub fixed: Map<String, Value>,
    /// Values sent when the client leaves the argument out (shown as `default`).
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, serde_json::Value>")]
    pub defaults: Map<String, Value>,
    /// Narrower values than the upstream accepts, per argument.
    #[serde(default)]
    pub narrow: BTreeMap<String, Narrow>,
}

/// What one argument may be.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Narrow {
    /// Only these values.
    #[serde(default, rename = "enum")]
    pub one_of: Option<Vec<Value>>,
    /// Numbers at least this.
    #[serde(default)]
    pub minimum: Option<f64>,
    /// Numbers at most this.
    #[serde(default)]
    pub maximum: Option<f64>,
}

impl Narrow {
    /// Why `v` is not allowed, or `None`.
    pub fn refuses(&self, v: &Value) -> Option<String> {
        if let Some(values) = &self.one_of
            && !values.contains(v)
        {
            let list: Vec<String> = values.iter().map(Value::to_string).collect();
            return Some(format!("must be one of {}", list.join(", ")));
        }
        if self.minimum.is_some() || self.maximum.is_some() {
            let Some(n) = v.as_f64() else {
                return Some("must be a number".into());
            };
            if let Some(min) = self.minimum
                && n < min
            {
                return Some(format!("must be at least {min}"));
            }
            if let Some(max) = self.maximum
                && n > max
            {
                return Some(format!("must be at most {max}"));
            }
        }
        None
    }
}

/// One virtual prompt.
#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VirtualPrompt {
    /// The name clients see.
    pub name: String,
    /// The upstream's own name of the prompt.
    pub from: String,
    /// The upstream offering `from`; needed only when the server has several.
    #[serde(default)]
    pub upstream: Option<String>,
    /// Replaces the prompt's title.
    #[serde(default)]
    pub title: Option<String>,
    /// Replaces the prompt's description.
    #[serde(default)]
    pub description: Option<String>,
    /// Arguments always sent with these values, removed from the arguments clients see.
    #[serde(default)]
    pub fixed: BTreeMap<String, String>,
}

/// One virtual resource.
#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VirtualResource {
    /// The URI clients see.
    pub uri: String,
    /// The upstream's own URI.
    pub from: String,
    /// The upstream offering `from`; needed only when the server has several.
    #[serde(default)]
    pub upstream: Option<String>,
    /// Replaces the resource's name.
    #[serde(default)]
    pub name: Option<String>,
    /// Replaces the resource's title.
    #[serde(default)]
    pub title: Option<String>,
    /// Replaces the resource's description.
    #[serde(default)]
    pub description: Option<String>,
}

fn tool_name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./".contains(c))
}

/// Checks a server's virtual definitions; `field` is e.g. `servers[0].virtual`.
pub fn check(field: &str, v: &Virtual, upstreams: &[String], add: &mut dyn FnMut(String, String)) {
    let upstream_of = |at: &str, u: &Option<String>, add: &mut dyn FnMut(String, String)| match u {
        Some(u) if !upstreams.contains(u) => add(
            format!("{at}.upstream"),
            format!(
                "{u:?} is not an upstream of this server; expected one of {}",
                upstreams.join(", ")
            ),
        ),
        None if upstreams.len() > 1 => add(
            format!("{at}.upstream"),
            "required: the server has several upstreams".into(),
        ),
        _ => {}
    };
    let mut names = HashSet::new();
    for (i, t) in v.tools.iter().enumerate() {
        let at = format!("{field}.tools[{i}]");
        if !tool_name_ok(&t.name) {
            add(
                format!("{at}.name"),
                format!("{:?}: expected 1–128 of A-Z a-z 0-9 _ - . /", t.name),
            );
        } else if !names.insert(t.name.as_str()) {
            add(
                format!("{at}.name"),
                format!("{:?} is the name of another virtual tool", t.name),
            );
        }
        if t.from.is_empty() {
            add(format!("{at}.from"), "must name the upstream's tool".into());
        }
        upstream_of(&at, &t.upstream, add);
        for (arg, value) in &t.fixed {
            if t.defaults.contains_key(arg) {
                add(
                    format!("{at}.defaults.{arg}"),
                    "is also fixed; an argument is either fixed or defaulted".into(),
                );
            }
            if t.narrow.contains_key(arg) {
                add(
                    format!("{at}.narrow.{arg}"),
                    "is fixed; a fixed argument has no values left to narrow".into(),
                );
            }
            if value.is_null() {
                add(
                    format!("{at}.fixed.{arg}"),
                    "null would send nothing; remove the argument instead".into(),
                );
            }
        }
        for (arg, n) in &t.narrow {
            let na = format!("{at}.narrow.{arg}");
            if n.one_of.is_none() && n.minimum.is_none() && n.maximum.is_none() {
                add(na.clone(), "expected `enum`, `minimum` or `maximum`".into());
            }
            if n.one_of.as_ref().is_some_and(Vec::is_empty) {
                add(
                    format!("{na}.enum"),
                    "an empty enum allows no value at all".into(),
                );
            }
            if let (Some(min), Some(max)) = (n.minimum, n.maximum)
                && min > max
            {
                add(
                    na.clone(),
                    format!("minimum {min} is greater than maximum {max}"),
                );
            }
            if let Some(d) = t.defaults.get(arg)
                && let Some(why) = n.refuses(d)
            {
                add(
                    format!("{at}.defaults.{arg}"),
                    format!("{d} is outside the narrowed values: {why}"),
                );
            }
        }
    }
    for (i, p) in v.prompts.iter().enumerate() {
        let at = format!("{field}.prompts[{i}]");
        if !tool_name_ok(&p.name) {
            add(
                format!("{at}.name"),
                format!("{:?}: expected 1–128 of A-Z a-z 0-9 _ - . /", p.name),
            );
        } else if v.prompts[..i].iter().any(|o| o.name == p.name) {
            add(
                format!("{at}.name"),
                format!("{:?} is the name of another virtual prompt", p.name),
            );
        }
        if p.from.is_empty() {
            add(
                format!("{at}.from"),
                "must name the upstream's prompt".into(),
            );
        }
        upstream_of(&at, &p.upstream, add);
    }
    for (i, r) in v.resources.iter().enumerate() {
        let at = format!("{field}.resources[{i}]");
        if !r.uri.contains(':') || r.uri.chars().any(char::is_whitespace) {
            add(
                format!("{at}.uri"),
                format!("{:?}: expected a URI such as docs://handbook", r.uri),
            );
        } else if v.resources[..i].iter().any(|o| o.uri == r.uri) {
            add(
                format!("{at}.uri"),
                format!("{:?} is the URI of another virtual resource", r.uri),
            );
        }
        if r.from.is_empty() {
            add(format!("{at}.from"), "must name the upstream's URI".into());
        }
        upstream_of(&at, &r.upstream, add);
    }
}
