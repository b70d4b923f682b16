//! The head of a request, read once beside [`Message::parse`]: its [`Method`], the function it
//! targets (name or URI, arguments), the string its `Mcp-Name` header must echo, and the
//! 2026-07-28 `_meta` fields. Every stage of the call path (scope, audit, routing checks,
//! policy, the stateless header rules, the relay) reads these fields instead of parsing
//! `params` again; `params` itself stays raw, for forwarding.

use super::stateless::{CAPABILITIES_META_KEY, LOG_LEVEL_META_KEY, VERSION_META_KEY, log_rank};
use super::{FunctionKind, Message, Method, TargetParam};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::sync::OnceLock;

/// What a request is about, read from its method and params.
#[derive(Debug, Default)]
pub struct CallHead {
    /// The method.
    pub method: Method,
    /// The kind of function targeted (a completion targets its prompt or resource template).
    pub kind: Option<FunctionKind>,
    /// The tool or prompt name or resource URI as the client sent it; `None` when the method
    /// names none or the name is unreadable (not a string, or a member given twice).
    pub name: Option<String>,
    /// The value `Mcp-Name` must carry (`params.name`, `.uri` or `.taskId`), for methods a
    /// 2026-07-28 client may send with one.
    pub name_header: Option<String>,
    /// `params._meta`.
    pub meta: Meta,
    arguments: Option<Box<RawValue>>,
    parsed_arguments: OnceLock<Option<Value>>,
}

/// A request's `params._meta`.
#[derive(Debug, Default)]
pub enum Meta {
    /// No `_meta` (or no params).
    #[default]
    Absent,
    /// Params that are not an object, or a `_meta` that is not one.
    Invalid,
    /// The `_meta` object.
    Present(Map<String, Value>),
}

impl Meta {
    /// The protocol version it declares.
    pub fn version(&self) -> Option<&str> {
        self.get(VERSION_META_KEY)?.as_str()
    }

    /// The client capabilities it declares (`Null` when absent).
    pub fn capabilities(&self) -> Value {
        self.get(CAPABILITIES_META_KEY)
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// The client capabilities it declares, if it declares any.
    pub fn get_capabilities(&self) -> Option<&Value> {
        self.get(CAPABILITIES_META_KEY)
    }

    /// The lowest log rank the request opted in to; `None`: it wants no log messages.
    pub fn log_rank(&self) -> Option<u8> {
        log_rank(self.get(LOG_LEVEL_META_KEY)?.as_str()?)
    }

    /// A member of `_meta`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Meta::Present(m) => m.get(key),
            _ => None,
        }
    }
}

/// The members of `params` the head reads, borrowed from the raw params. A member given twice
/// fails the whole read, so that no check decides on a name an upstream may read differently.
#[derive(Deserialize)]
struct Params<'a> {
    #[serde(borrow, default)]
    name: Option<&'a RawValue>,
    #[serde(borrow, default)]
    uri: Option<&'a RawValue>,
    #[serde(rename = "taskId", borrow, default)]
    task_id: Option<&'a RawValue>,
    #[serde(rename = "ref", borrow, default)]
    reference: Option<&'a RawValue>,
    #[serde(borrow, default)]
    arguments: Option<&'a RawValue>,
    #[serde(rename = "_meta", borrow, default)]
    meta: Option<&'a RawValue>,
}

/// A completion's `ref`: its type says which member the upstream reads.
#[derive(Deserialize)]
struct Reference {
    #[serde(rename = "type")]
    kind: String,
    name: Option<String>,
    uri: Option<String>,
}

fn string(raw: Option<&RawValue>) -> Option<String> {
    let raw = raw?;
    if !raw.get().starts_with('"') {
        return None;
    }
    serde_json::from_str(raw.get()).ok()
}

fn meta_of(raw: Option<&RawValue>) -> Meta {
    match raw {
        None => Meta::Absent,
        Some(r) => match serde_json::from_str::<Map<String, Value>>(r.get()) {
            Ok(m) => Meta::Present(m),
            Err(_) => Meta::Invalid,
        },
    }
}

impl CallHead {
    /// Reads the head of a request or notification (an empty head for responses).
    pub fn of(message: &Message) -> CallHead {
        let method = Method::of(message);
        let raw = message.params.as_deref().map(RawValue::get).unwrap_or("{}");
        let Ok(p) = serde_json::from_str::<Params<'_>>(raw) else {
            // Unreadable members leave the target unknown; `_meta` is still read on its own,
            // so that the stateless rules report what is wrong with it and nothing else.
            #[derive(Deserialize)]
            struct OnlyMeta<'a> {
                #[serde(rename = "_meta", borrow, default)]
                meta: Option<&'a RawValue>,
            }
            let meta = match serde_json::from_str::<OnlyMeta<'_>>(raw) {
                Ok(m) => meta_of(m.meta),
                Err(_) => Meta::Invalid,
            };
            return CallHead {
                kind: method.function_kind(),
                method,
                meta,
                ..CallHead::default()
            };
        };
        let meta = meta_of(p.meta);
        let name_header = match method.name_header_param() {
            Some(_) => string(match method.target() {
                Some(TargetParam::Name) => p.name,
                Some(TargetParam::Uri) => p.uri,
                _ => p.task_id,
            }),
            None => None,
        };
        let (kind, name) = if method == Method::CompletionComplete {
            let r = p
                .reference
                .and_then(|r| serde_json::from_str::<Reference>(r.get()).ok());
            match r.map(|r| (r.kind, r.name, r.uri)) {
                Some((k, Some(name), _)) if k == "ref/prompt" => {
                    (Some(FunctionKind::Prompt), Some(name))
                }
                Some((k, _, Some(uri))) if k == "ref/resource" => {
                    (Some(FunctionKind::Resource), Some(uri))
                }
                _ => (None, None),
            }
        } else {
            match method.function_kind() {
                Some(FunctionKind::Resource) => (Some(FunctionKind::Resource), string(p.uri)),
                Some(k) => (Some(k), string(p.name)),
                None => (None, None),
            }
        };
        let arguments = match kind {
            Some(_) if method != Method::CompletionComplete => p.arguments.map(RawValue::to_owned),
            _ => None,
        };
        CallHead {
            method,
            kind,
            name,
            name_header,
            meta,
            arguments,
            parsed_arguments: OnceLock::new(),
        }
    }

    /// The call's arguments (tools and prompts), parsed on first use: only policy rules on
    /// arguments, argument auditing and mirrored headers need them as values.
    pub fn arguments(&self) -> Option<&Value> {
        self.parsed_arguments
            .get_or_init(|| {
                self.arguments
                    .as_ref()
                    .and_then(|a| serde_json::from_str(a.get()).ok())
            })
            .as_ref()
    }

    /// The name the request targets, when it must have one and it cannot be read: the member
    /// the refusal names.
    pub fn unreadable_target(&self) -> Option<&'static str> {
        if !self.method.names_function() || self.name.is_some() {
            return None;
        }
        Some(match self.method.target() {
            Some(TargetParam::Uri) => "params.uri",
            Some(TargetParam::Ref) => "params.ref",
            _ => "params.name",
        })
    }
}

#[cfg(test)]
#[path = "head_tests.rs"]
mod tests;
