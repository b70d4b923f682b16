//! What one request may do: its authenticated caller (if the server is protected) and the
//! server's policy, applied to listings (filtering) and to calls (allow, hide, deny, step-up).

use super::Caller;
use super::error::HttpError;
use crate::auth::{AuthError, Principal};
use crate::config::Effect;
use crate::federation::{FederationError, ListKind, VirtualServer};
use crate::policy::{CompiledPolicy, Decision, Facts, FunctionKind};
use crate::protocol::{ErrorCode, Message, Method, RequestId};
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;

/// The caller and the rules that apply to it.
#[derive(Clone)]
pub struct Access {
    /// The authenticated caller; `None` on an open server.
    pub caller: Option<Caller>,
    /// The server's policy.
    pub policy: Arc<CompiledPolicy>,
    /// Seals the ids the gateway hands out in place of upstream ones (task ids).
    pub sealer: Arc<crate::keyring::Keyring>,
    /// For whom upstream requests are made (their credentials), derived from `caller`.
    pub context: crate::context::CallContext,
}

/// What a call targets, read from its params.
#[derive(Debug, Default)]
pub struct CallTarget {
    /// The function's kind.
    pub kind: Option<FunctionKind>,
    /// The tool or prompt name or resource URI as the client sent it.
    pub name: Option<String>,
    /// The arguments (tools and prompts).
    pub arguments: Option<Value>,
}

impl CallTarget {
    /// Reads the target of a request (nothing for methods that target no function).
    pub fn of(message: &Message) -> CallTarget {
        let method = Method::of(message);
        if method == Method::CompletionComplete {
            return Self::of_completion(message);
        }
        let Some(kind) = method.function_kind() else {
            return CallTarget::default();
        };
        #[derive(Deserialize)]
        struct Params {
            name: Option<String>,
            uri: Option<String>,
            arguments: Option<Value>,
        }
        let Ok(p) = message.params_as::<Params>() else {
            return CallTarget {
                kind: Some(kind),
                ..Default::default()
            };
        };
        let name = if kind == FunctionKind::Resource {
            p.uri
        } else {
            p.name
        };
        CallTarget {
            kind: Some(kind),
            name,
            arguments: p.arguments,
        }
    }
}

impl CallTarget {
    /// A completion asks about a prompt's or resource template's arguments: the same policy
    /// applies as to the prompt or resource itself.
    fn of_completion(message: &Message) -> CallTarget {
        #[derive(Deserialize)]
        struct Params {
            #[serde(rename = "ref")]
            reference: Option<Reference>,
        }
        #[derive(Deserialize)]
        struct Reference {
            #[serde(rename = "type")]
            kind: String,
            name: Option<String>,
            uri: Option<String>,
        }
        let Some(r) = message.params_as::<Params>().ok().and_then(|p| p.reference) else {
            return CallTarget::default();
        };
        // The reference's type says which member the upstream reads; the other is ignored.
        match (r.kind.as_str(), r.name, r.uri) {
            ("ref/prompt", Some(name), _) => CallTarget {
                kind: Some(FunctionKind::Prompt),
                name: Some(name),
                arguments: None,
            },
            ("ref/resource", _, Some(uri)) => CallTarget {
                kind: Some(FunctionKind::Resource),
                name: Some(uri),
                arguments: None,
            },
            _ => CallTarget::default(),
        }
    }
}

/// Why a call may not proceed, as the client must see it.
pub enum Refusal {
    /// A JSON-RPC error answered with HTTP 200 (hidden function, argument rule), and the
    /// rule that decided.
    Rpc(Message, Arc<str>),
    /// An HTTP-level refusal (403 insufficient_scope), and the rule that required the scopes.
    Http(HttpError, Arc<str>),
}

impl Access {
    /// The caller's principal, if authenticated.
    pub fn principal(&self) -> Option<&Principal> {
        self.caller.as_ref().map(|c| &*c.principal)
    }

    /// Whether listings need filtering at all.
    pub fn filters(&self) -> bool {
        !self.policy.is_open()
    }

    /// Whether an item of a listing is visible to the caller.
    pub fn visible(
        &self,
        server: &VirtualServer,
        kind: ListKind,
        member: usize,
        name: &str,
    ) -> bool {
        let kind = match kind {
            ListKind::Tools => FunctionKind::Tool,
            ListKind::Prompts => FunctionKind::Prompt,
            ListKind::Resources | ListKind::Templates => FunctionKind::Resource,
        };
        let facts = Facts {
            server: &server.name,
            method: "list",
            kind,
            name,
            upstream: &server.members[member].upstream,
        };
        self.policy.decide(self.principal(), &facts, None).allowed()
    }

    /// Decides a call to `target` served by `member`: hidden functions answer as if they did
    /// not exist, argument rules refuse with a policy error, `require_scopes` ask for step-up.
    pub fn check_call(
        &self,
        server: &VirtualServer,
        method: &str,
        member: usize,
        target: &CallTarget,
        id: &Option<RequestId>,
    ) -> Result<Option<Decision>, Refusal> {
        let (Some(kind), Some(name)) = (target.kind, target.name.as_deref()) else {
            return Ok(None);
        };
        if self.policy.is_open() {
            return Ok(None);
        }
        let facts = Facts {
            server: &server.name,
            method,
            kind,
            name,
            upstream: &server.members[member].upstream,
        };
        let principal = self.principal();
        let empty = Value::Object(Default::default());
        // A completion carries no call arguments: it is decided like a listing.
        let args = (method != Method::CompletionComplete.as_str())
            .then(|| target.arguments.as_ref().unwrap_or(&empty));
        let decision = self.policy.decide(principal, &facts, args);
        if decision.effect == Effect::Deny {
            let visible = self.policy.decide(principal, &facts, None).allowed();
            tracing::info!(server = %server.name, name, rule = %decision.rule, visible, "call denied by policy");
            let message = if visible {
                Message::error_response(
                    id.clone(),
                    ErrorCode::POLICY_DENIED,
                    &format!("denied by policy rule {:?}", &*decision.rule),
                    None,
                )
            } else {
                let kind = match kind {
                    FunctionKind::Tool => "tool",
                    FunctionKind::Prompt => "prompt",
                    FunctionKind::Resource => "resource",
                };
                let e = FederationError::Unknown {
                    kind,
                    name: name.to_owned(),
                };
                Message::error_response(id.clone(), e.code(), &e.to_string(), e.data())
            };
            return Err(Refusal::Rpc(message, decision.rule));
        }
        if !decision.require_scopes.is_empty()
            && let Some(c) = &self.caller
        {
            let mut required = c.guard.base_scopes().to_vec();
            crate::auth::add_scopes(&mut required, &decision.require_scopes);
            if !c.principal.has_scopes(&required) {
                let error = AuthError::InsufficientScope { required };
                let challenge = c.guard.challenge(&error);
                return Err(Refusal::Http(
                    HttpError::Auth { error, challenge }.with_id(id.clone()),
                    decision.rule,
                ));
            }
        }
        Ok(Some(decision))
    }
}
