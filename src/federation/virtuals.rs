//! Virtual definitions (`servers[].virtual`): the tools, prompts and resources clients see
//! in place of upstream ones. A listing shows each virtual definition made from the upstream
//! item it names (renamed, its description replaced, fixed arguments removed from the
//! schema, defaults and narrowed values written into it) and hides that item; a call by the
//! virtual name is translated back to the upstream's name and arguments, and a call by the
//! hidden name is refused like one no upstream offers, so fixed arguments cannot be
//! bypassed. What the virtual definition is made from is the item the catalog admitted, so
//! an upstream definition held back for review holds back every virtual one made from it.

use super::items::{Fields, RawItem};
use super::{FederationError, ListKind};
use crate::config::virtual_tools::{Narrow, Virtual};
use crate::protocol::jsonrpc::to_raw;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// One virtual definition, ready to serve.
#[derive(Debug)]
pub(super) struct Def {
    /// The name (or URI) clients see.
    pub name: String,
    /// The member offering what it is made from.
    pub member: usize,
    /// The upstream's own name (or URI).
    pub from: String,
    title: Option<String>,
    description: Option<String>,
    /// A resource's `name` member.
    label: Option<String>,
    fixed: Map<String, Value>,
    defaults: Map<String, Value>,
    narrow: BTreeMap<String, Narrow>,
}

/// A server's virtual definitions.
#[derive(Debug, Default)]
pub(super) struct Virtuals {
    tools: Vec<Def>,
    prompts: Vec<Def>,
    resources: Vec<Def>,
}

impl Virtuals {
    /// Compiles the configured definitions; `upstreams` are the server's members in order
    /// (validation made sure every named upstream is one).
    pub fn new(cfg: &Virtual, upstreams: &[String]) -> Virtuals {
        let member = |u: &Option<String>| {
            u.as_ref()
                .and_then(|u| upstreams.iter().position(|m| m == u))
                .unwrap_or(0)
        };
        Virtuals {
            tools: cfg
                .tools
                .iter()
                .map(|t| Def {
                    name: t.name.clone(),
                    member: member(&t.upstream),
                    from: t.from.clone(),
                    title: t.title.clone(),
                    description: t.description.clone(),
                    label: None,
                    fixed: t.fixed.clone(),
                    defaults: t.defaults.clone(),
                    narrow: t.narrow.clone(),
                })
                .collect(),
            prompts: cfg
                .prompts
                .iter()
                .map(|p| Def {
                    name: p.name.clone(),
                    member: member(&p.upstream),
                    from: p.from.clone(),
                    title: p.title.clone(),
                    description: p.description.clone(),
                    label: None,
                    fixed: p
                        .fixed
                        .iter()
                        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                        .collect(),
                    defaults: Map::new(),
                    narrow: BTreeMap::new(),
                })
                .collect(),
            resources: cfg
                .resources
                .iter()
                .map(|r| Def {
                    name: r.uri.clone(),
                    member: member(&r.upstream),
                    from: r.from.clone(),
                    title: r.title.clone(),
                    description: r.description.clone(),
                    label: r.name.clone(),
                    fixed: Map::new(),
                    defaults: Map::new(),
                    narrow: BTreeMap::new(),
                })
                .collect(),
        }
    }

    fn defs(&self, kind: ListKind) -> &[Def] {
        match kind {
            ListKind::Tools => &self.tools,
            ListKind::Prompts => &self.prompts,
            ListKind::Resources => &self.resources,
            ListKind::Templates => &[],
        }
    }

    /// The virtual definitions made from `id` of `member`.
    pub fn made_from<'a>(
        &'a self,
        kind: ListKind,
        member: usize,
        id: &'a str,
    ) -> impl Iterator<Item = &'a Def> + 'a {
        self.defs(kind)
            .iter()
            .filter(move |d| d.member == member && d.from == id)
    }

    /// Whether `id` of `member` is shown only through virtual definitions.
    pub fn hides(&self, kind: ListKind, member: usize, id: &str) -> bool {
        self.made_from(kind, member, id).next().is_some()
    }

    /// The virtual definition clients call `name`.
    pub fn named(&self, kind: ListKind, name: &str) -> Option<&Def> {
        self.defs(kind).iter().find(|d| d.name == name)
    }
}

impl Def {
    /// The listed item clients see, made from the upstream's; `Err` says why the upstream's
    /// definition cannot carry it (an argument it does not have, a value it does not accept).
    pub fn item(
        &self,
        kind: ListKind,
        fields: &Fields<'_>,
        meta: Option<RawItem>,
    ) -> Result<RawItem, String> {
        let mut replaced: Vec<(&str, RawItem)> =
            vec![(kind.id_key(), to_raw(&Value::String(self.name.clone())))];
        if let Some(t) = &self.title {
            replaced.push(("title", to_raw(&Value::String(t.clone()))));
        }
        if let Some(d) = &self.description {
            replaced.push(("description", to_raw(&Value::String(d.clone()))));
        }
        if let Some(l) = &self.label {
            replaced.push(("name", to_raw(&Value::String(l.clone()))));
        }
        match kind {
            ListKind::Tools => {
                let schema: Value = fields
                    .raw("inputSchema")
                    .and_then(|s| serde_json::from_str(s.get()).ok())
                    .unwrap_or_else(|| serde_json::json!({"type": "object"}));
                replaced.push(("inputSchema", to_raw(&self.schema(schema)?)));
            }
            ListKind::Prompts if !self.fixed.is_empty() => {
                let args: Vec<Value> = fields
                    .raw("arguments")
                    .and_then(|s| serde_json::from_str(s.get()).ok())
                    .unwrap_or_default();
                let names: Vec<&str> = args
                    .iter()
                    .filter_map(|a| a.get("name").and_then(Value::as_str))
                    .collect();
                if let Some(missing) = self.fixed.keys().find(|k| !names.contains(&k.as_str())) {
                    return Err(format!("the prompt has no argument {missing:?} to fix"));
                }
                let kept: Vec<&Value> = args
                    .iter()
                    .filter(|a| {
                        a.get("name")
                            .and_then(Value::as_str)
                            .is_none_or(|n| !self.fixed.contains_key(n))
                    })
                    .collect();
                replaced.push(("arguments", to_raw(&kept)));
            }
            _ => {}
        }
        if let Some(m) = meta {
            replaced.push(("_meta", m));
        }
        Ok(fields.with(&replaced))
    }

    /// The input schema clients see: fixed arguments removed, defaults and narrowed values
    /// written in. Every argument the definition names must be one the upstream declares,
    /// and narrowing may only narrow.
    fn schema(&self, mut schema: Value) -> Result<Value, String> {
        let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) else {
            return match self
                .fixed
                .keys()
                .chain(self.defaults.keys())
                .chain(self.narrow.keys())
                .next()
            {
                Some(arg) => Err(format!(
                    "the tool's input schema has no properties, so no argument {arg:?}"
                )),
                None => Ok(schema),
            };
        };
        let named = self
            .fixed
            .keys()
            .chain(self.defaults.keys())
            .chain(self.narrow.keys());
        for arg in named {
            if !props.contains_key(arg) {
                return Err(format!("the tool has no argument {arg:?}"));
            }
        }
        for (arg, n) in &self.narrow {
            let p = props.get_mut(arg).expect("checked above");
            narrow_into(arg, p, n)?;
        }
        for (arg, v) in &self.fixed {
            if let Some(why) = refused_by_upstream(&props[arg], v) {
                return Err(format!("fixed {arg:?}: {why}"));
            }
            props.remove(arg);
        }
        for (arg, v) in &self.defaults {
            if let Some(why) = refused_by_upstream(&props[arg], v) {
                return Err(format!("default of {arg:?}: {why}"));
            }
            if let Some(p) = props[arg].as_object().cloned() {
                let mut p = p;
                p.insert("default".into(), v.clone());
                props.insert(arg.clone(), Value::Object(p));
            }
        }
        if let Some(Value::Array(required)) = schema.get_mut("required") {
            // What the gateway always or otherwise fills in, the client need not send.
            required.retain(|r| {
                r.as_str()
                    .is_none_or(|r| !self.fixed.contains_key(r) && !self.defaults.contains_key(r))
            });
        }
        Ok(schema)
    }

    /// The arguments sent upstream for a client's `arguments` (absent: none): refused when
    /// the client sends a fixed argument or a value outside a narrowed one; then defaults
    /// for what it left out, and the fixed values.
    pub fn arguments(&self, sent: Option<&RawValue>) -> Result<Box<RawValue>, FederationError> {
        let mut args: Map<String, Value> = match sent {
            None => Map::new(),
            Some(raw) => match serde_json::from_str::<Value>(raw.get()) {
                Ok(Value::Object(m)) => m,
                Ok(Value::Null) => Map::new(),
                _ => {
                    return Err(FederationError::InvalidParams(
                        "`arguments` must be an object".into(),
                    ));
                }
            },
        };
        for k in self.fixed.keys() {
            if args.contains_key(k) {
                return Err(FederationError::InvalidParams(format!(
                    "argument {k:?} of {:?} is fixed by the gateway and cannot be sent",
                    self.name
                )));
            }
        }
        for (k, n) in &self.narrow {
            if let Some(v) = args.get(k)
                && let Some(why) = n.refuses(v)
            {
                return Err(FederationError::InvalidParams(format!(
                    "argument {k:?} of {:?} {why}",
                    self.name
                )));
            }
        }
        for (k, v) in &self.defaults {
            args.entry(k.clone()).or_insert_with(|| v.clone());
        }
        for (k, v) in &self.fixed {
            args.insert(k.clone(), v.clone());
        }
        Ok(to_raw(&args))
    }
}

/// Writes `n` into the schema of argument `arg`, refusing to widen what the upstream allows.
fn narrow_into(arg: &str, p: &mut Value, n: &Narrow) -> Result<(), String> {
    let Some(p) = p.as_object_mut() else {
        return Err(format!("the schema of {arg:?} is not an object"));
    };
    if let Some(values) = &n.one_of {
        if let Some(Value::Array(theirs)) = p.get("enum")
            && let Some(v) = values.iter().find(|v| !theirs.contains(v))
        {
            return Err(format!(
                "narrowed enum of {arg:?} has {v}, which the upstream does not accept"
            ));
        }
        p.insert("enum".into(), Value::Array(values.clone()));
    }
    let numeric = matches!(
        p.get("type").and_then(Value::as_str),
        Some("number" | "integer") | None
    );
    if (n.minimum.is_some() || n.maximum.is_some()) && !numeric {
        return Err(format!(
            "{arg:?} is not a number, so it has no range to narrow"
        ));
    }
    if let Some(min) = n.minimum {
        let theirs = p.get("minimum").and_then(Value::as_f64);
        p.insert("minimum".into(), number(theirs.map_or(min, |t| t.max(min))));
    }
    if let Some(max) = n.maximum {
        let theirs = p.get("maximum").and_then(Value::as_f64);
        p.insert("maximum".into(), number(theirs.map_or(max, |t| t.min(max))));
    }
    Ok(())
}

/// A bound as JSON: an integer when it is one (`10`, not `10.0`, for integer arguments).
fn number(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 9.0e15 {
        Value::from(x as i64)
    } else {
        Value::from(x)
    }
}

/// Why the upstream's schema of one argument refuses `v` (its type and enum only: enough to
/// catch a mistyped fixed value at the first listing rather than at every call).
fn refused_by_upstream(schema: &Value, v: &Value) -> Option<String> {
    if let Some(Value::Array(values)) = schema.get("enum")
        && !values.contains(v)
    {
        return Some(format!("{v} is not in the upstream's enum"));
    }
    let ok = match schema.get("type").and_then(Value::as_str) {
        Some("string") => v.is_string(),
        Some("integer") => v.is_i64() || v.is_u64(),
        Some("number") => v.is_number(),
        Some("boolean") => v.is_boolean(),
        Some("array") => v.is_array(),
        Some("object") => v.is_object(),
        _ => true,
    };
    (!ok).then(|| format!("{v} is not of the upstream's type {}", schema["type"]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::virtual_tools::VirtualTool;
    use serde_json::json;

    fn def(extra: Value) -> Def {
        let mut t = json!({"name": "say", "from": "echo"});
        t.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let tool: VirtualTool = serde_json::from_value(t).unwrap();
        let cfg = Virtual {
            tools: vec![tool],
            ..Virtual::default()
        };
        Virtuals::new(&cfg, &["fx".into()]).tools.remove(0)
    }

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "text": {"type": "string"}, "repo": {"type": "string"},
            "mode": {"type": "string", "enum": ["a", "b", "c"]}, "n": {"type": "integer", "maximum": 100}},
            "required": ["text", "repo"]})
    }

    #[test]
    fn the_schema_hides_fixed_arguments_and_shows_defaults_and_narrowed_values() {
        let d = def(
            json!({"fixed": {"repo": "acme/app"}, "defaults": {"text": "hi"},
            "narrow": {"mode": {"enum": ["a", "b"]}, "n": {"minimum": 1, "maximum": 500}}}),
        );
        let s = d.schema(schema()).unwrap();
        assert!(s["properties"].get("repo").is_none(), "{s}");
        assert_eq!(s["properties"]["text"]["default"], "hi");
        assert_eq!(s["properties"]["mode"]["enum"], json!(["a", "b"]));
        // Narrowing never widens: the upstream's maximum of 100 stays.
        assert_eq!(s["properties"]["n"]["minimum"], 1);
        assert_eq!(s["properties"]["n"]["maximum"], 100);
        assert_eq!(s["required"], json!([]));
    }

    #[test]
    fn a_definition_the_upstream_cannot_carry_is_refused_with_the_reason() {
        let d = def(json!({"fixed": {"nope": 1}}));
        assert!(
            d.schema(schema())
                .unwrap_err()
                .contains("no argument \"nope\"")
        );
        let d = def(json!({"narrow": {"mode": {"enum": ["a", "z"]}}}));
        assert!(d.schema(schema()).unwrap_err().contains("\"z\""));
        let d = def(json!({"fixed": {"n": "ten"}}));
        assert!(d.schema(schema()).unwrap_err().contains("type"));
        let d = def(json!({"narrow": {"text": {"maximum": 3}}}));
        assert!(d.schema(schema()).unwrap_err().contains("not a number"));
    }

    #[test]
    fn calls_are_translated_back_exactly() {
        let d = def(
            json!({"fixed": {"repo": "acme/app"}, "defaults": {"text": "hi"},
            "narrow": {"mode": {"enum": ["a", "b"]}, "n": {"minimum": 1, "maximum": 5}}}),
        );
        let args = |v: Value| d.arguments(Some(&to_raw(&v)));
        let out: Value = serde_json::from_str(args(json!({"mode": "a"})).unwrap().get()).unwrap();
        assert_eq!(out, json!({"mode": "a", "text": "hi", "repo": "acme/app"}));
        let out: Value = serde_json::from_str(d.arguments(None).unwrap().get()).unwrap();
        assert_eq!(out, json!({"text": "hi", "repo": "acme/app"}));
        let out: Value = serde_json::from_str(args(json!({"text": "yo"})).unwrap().get()).unwrap();
        assert_eq!(out["text"], "yo");
        let e = args(json!({"repo": "evil/x"})).unwrap_err().to_string();
        assert!(e.contains("\"repo\"") && e.contains("fixed"), "{e}");
        let e = args(json!({"mode": "c"})).unwrap_err().to_string();
        assert!(e.contains("one of \"a\", \"b\""), "{e}");
        let e = args(json!({"n": 6})).unwrap_err().to_string();
        assert!(e.contains("at most 5"), "{e}");
        assert!(
            args(json!({"n": "6"}))
                .unwrap_err()
                .to_string()
                .contains("number")
        );
        assert!(args(json!([1])).is_err());
    }
}
