//! What one request may do: its authenticated caller (if the server is protected) and the
//! server's policy, applied to listings (filtering) and to calls (allow, hide, deny, step-up).

use super::Caller;
use super::error::HttpError;
use super::reply::Refusal;
use crate::auth::{AuthError, Principal};
use crate::config::Effect;
use crate::federation::{FederationError, ListKind, VirtualServer};
use crate::policy::{CompiledPolicy, Decision, Facts, FunctionKind};
use crate::protocol::{CallHead, ErrorCode, Message, Method, RequestId};
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
    /// The request's trace id (audit records name it), when the listener gave it one.
    pub trace_id: Option<Arc<str>>,
    /// The quotas the request is counted against, and who it is counted for (the
    /// principal's binding, or the client address on an open server).
    pub quota: Option<(Arc<crate::quota::Quotas>, String)>,
}

impl Access {
    /// What `caller` (authenticated against `route`'s guard, if it has one) may do there;
    /// `headers` hold the token per-user upstream credentials may exchange.
    pub fn new(
        route: &crate::gateway::Route,
        caller: Option<Caller>,
        headers: &http::HeaderMap,
        sealer: Arc<crate::keyring::Keyring>,
        trace_id: Option<Arc<str>>,
    ) -> Access {
        let context =
            crate::context::CallContext::for_user(caller.as_ref().map(|c| c.on_behalf_of(headers)));
        Access {
            caller,
            policy: route.policy.clone(),
            sealer,
            context,
            trace_id,
            quota: None,
        }
    }

    /// Step 1½: admits the request under the quotas, or refuses it (429, or 503 while their
    /// store is unavailable and `on_outage` is `closed`).
    pub async fn admit_quota(
        &self,
        server: &VirtualServer,
        head: &CallHead,
    ) -> Result<crate::quota::Permit, Refusal> {
        let Some((quotas, who)) = &self.quota else {
            return Ok(crate::quota::Permit::default());
        };
        let request = crate::quota::Request {
            who,
            server: &server.name,
            tenant: server.tenant.as_deref(),
            target: head.name.as_deref(),
        };
        quotas.admit(&request).await.map_err(|e| {
            tracing::info!(server = %server.name, reason = %e, "request refused: quota");
            let rule = match &e {
                crate::quota::QuotaError::Exceeded { rule, kind, .. } => {
                    format!("{rule} ({})", kind.as_str())
                }
                crate::quota::QuotaError::Unavailable(_) => "quota store unavailable".into(),
            };
            Refusal::by_quota(HttpError::Quota(e), rule)
        })
    }

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
        head: &CallHead,
        member: usize,
        id: &Option<RequestId>,
    ) -> Result<Option<Decision>, Refusal> {
        let method = head.method.as_str();
        let (Some(kind), Some(name)) = (head.kind, head.name.as_deref()) else {
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
        let args =
            (head.method != Method::CompletionComplete).then(|| head.arguments().unwrap_or(&empty));
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
            return Err(Refusal::by_policy(message, decision.rule));
        }
        if !decision.require_scopes.is_empty()
            && let Some(c) = &self.caller
        {
            let mut required = c.guard.base_scopes().to_vec();
            crate::auth::add_scopes(&mut required, &decision.require_scopes);
            if !c.principal.has_scopes(&required) {
                let error = AuthError::InsufficientScope { required };
                let challenge = c.guard.challenge(&error);
                return Err(Refusal::by_scope(
                    HttpError::Auth { error, challenge },
                    decision.rule.to_string(),
                ));
            }
        }
        Ok(Some(decision))
    }
}
