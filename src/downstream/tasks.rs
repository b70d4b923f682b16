//! The tasks extension (`io.modelcontextprotocol/tasks`, SEP-2663) through the gateway.
//!
//! An upstream may answer a `tools/call` with a `CreateTaskResult`; the client then polls
//! `tasks/get`, answers `tasks/update` and may `tasks/cancel`. The gateway never shows an
//! upstream's task id: it hands out a sealed id that carries the member, the upstream's id, the
//! tool and the principal, so that a federated server routes every `tasks/*` back to the
//! upstream that made the task, the tool's policy and the catalog apply to its task as to the
//! call, and anyone but the task's owner (or any other virtual server) finds no such task.
//! Sealed ids keep nothing in memory, so there is nothing to bound but their size.

use super::access::Access;
use super::reply::Refusal;
use super::session::Session;
use crate::audit::Ticket;
use crate::config::Effect;
use crate::federation::{Routed, VirtualServer};
use crate::keyring::Keyring;
use crate::policy::{Facts, FunctionKind};
use crate::protocol::jsonrpc::to_raw;
use crate::protocol::{CallHead, ErrorCode, Message};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::sync::Arc;

/// The extension's identifier.
pub const EXTENSION: &str = "io.modelcontextprotocol/tasks";

/// JSON-RPC "missing required client capability" (2026-07-28).
const MISSING_CAPABILITY: ErrorCode = ErrorCode(-32021);

/// Longest upstream task id the gateway wraps; longer ones are refused rather than sealed into
/// ids a client could not send back in a header.
const MAX_UPSTREAM_ID: usize = 1024;

/// Whether the client declared the extension for this request: in its per-request
/// capabilities `declared` (2026-07-28, or any client opting in per request) or at
/// `initialize`.
pub fn declared(declared: Option<&Value>, session: Option<&Session>) -> bool {
    let has = |caps: &Value| {
        caps.pointer("/extensions")
            .and_then(|e| e.get(EXTENSION))
            .is_some()
    };
    declared.is_some_and(has) || session.is_some_and(|s| has(&s.claims.capabilities))
}

/// What a sealed task id carries.
#[derive(Serialize, Deserialize)]
struct TaskClaims {
    /// Member index.
    m: usize,
    /// The member's upstream name (a reordered configuration must not misroute old ids).
    u: String,
    /// The upstream's own task id.
    t: String,
    /// The tool as the client named it (policy decides on this name).
    n: String,
    /// The tool as the upstream names it (the catalog decides on this one).
    i: String,
    /// The owner's principal binding; `None` on an open server.
    o: Option<String>,
}

/// Ids open only at the virtual server that issued them.
fn context(server: &VirtualServer) -> String {
    format!("task:{}", server.path)
}

/// How a relayed answer's `taskId` is shown to the client.
pub enum Rewrite {
    /// A `tools/call`: a `CreateTaskResult`'s upstream id is sealed.
    Create {
        sealer: Arc<Keyring>,
        context: String,
        member: usize,
        upstream: String,
        tool: String,
        inner: String,
        owner: Option<String>,
    },
    /// A `tasks/*` request: the upstream's id is replaced by the one the client sent.
    Echo(String),
}

impl Rewrite {
    /// The rewrite for a `tools/call` of `tool` (as the client named it; `inner` as the
    /// upstream does) routed to `member`, made by a client that declared the extension
    /// (otherwise no upstream may create a task for it, and nothing is rewritten).
    pub fn for_call(
        server: &VirtualServer,
        access: &Access,
        tool: &str,
        inner: String,
        member: usize,
    ) -> Rewrite {
        Rewrite::Create {
            sealer: access.sealer.clone(),
            context: context(server),
            member,
            upstream: server.members[member].upstream.clone(),
            tool: tool.to_owned(),
            inner,
            owner: super::Caller::binding(access.caller.as_ref()),
        }
    }

    /// Rewrites the `taskId` of a result in place.
    pub fn apply(&self, message: &mut Message) {
        let Some(raw) = message.result.as_ref() else {
            return;
        };
        // Most results are not tasks: look before parsing.
        if !raw.get().contains("\"taskId\"") {
            return;
        }
        let Ok(mut result) = serde_json::from_str::<Map<String, Value>>(raw.get()) else {
            return;
        };
        let Some(Value::String(upstream_id)) = result.get("taskId") else {
            return;
        };
        let outward = match self {
            Rewrite::Echo(id) => id.clone(),
            Rewrite::Create { .. } if result.get("resultType") != Some(&Value::from("task")) => {
                return;
            }
            Rewrite::Create { .. } if upstream_id.len() > MAX_UPSTREAM_ID => {
                tracing::warn!(
                    len = upstream_id.len(),
                    "an upstream task id is too long to wrap"
                );
                *message = Message::error_response(
                    message.id.clone(),
                    ErrorCode::INTERNAL_ERROR,
                    "the upstream answered with a task id longer than the gateway relays",
                    None,
                );
                return;
            }
            Rewrite::Create {
                sealer,
                context,
                member,
                upstream,
                tool,
                inner,
                owner,
            } => sealer.seal_value(
                &TaskClaims {
                    m: *member,
                    u: upstream.clone(),
                    t: upstream_id.clone(),
                    n: tool.clone(),
                    i: inner.clone(),
                    o: owner.clone(),
                },
                context,
            ),
        };
        result.insert("taskId".into(), Value::String(outward));
        message.result = Some(to_raw(&result));
    }
}

/// Routes a `tasks/*` request to the upstream that made the task, after the checks that
/// apply to the task's tool; otherwise why not.
pub fn admit(
    server: &VirtualServer,
    session: Option<&Session>,
    access: &Access,
    head: &CallHead,
    message: Message,
    ticket: Option<&Ticket>,
) -> Result<(Routed, Rewrite), Refusal> {
    let id = message.id.clone();
    let stateless = session.is_none();
    let refuse = |code: ErrorCode, text: &str, data: Option<Value>| {
        let msg = Message::error_response(id.clone(), code, text, data);
        // 2026-07-28 carries this protocol error on HTTP 400.
        let status = if stateless && code == MISSING_CAPABILITY {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::OK
        };
        Refusal::exact(status, msg)
    };
    if !declared(head.meta.get_capabilities(), session) {
        return Err(refuse(
            MISSING_CAPABILITY,
            &format!(
                "{} needs the client capability extensions[{EXTENSION:?}]",
                message.method()
            ),
            Some(serde_json::json!({"requiredCapabilities": {"extensions": {EXTENSION: {}}}})),
        ));
    }
    let Ok(mut params) = message.params_as::<Map<String, Value>>() else {
        return Err(refuse(
            ErrorCode::INVALID_PARAMS,
            "params must be an object",
            None,
        ));
    };
    let Some(Value::String(outward)) = params.get("taskId").cloned() else {
        return Err(refuse(
            ErrorCode::INVALID_PARAMS,
            "params.taskId is required: a string",
            None,
        ));
    };
    let unknown = || refuse(ErrorCode::INVALID_PARAMS, "unknown task", None);
    let Ok(claims) = access
        .sealer
        .open_value::<TaskClaims>(&outward, &context(server))
    else {
        return Err(unknown());
    };
    // Another principal's task, or a member that is no longer the one that made it, does not
    // exist for this caller.
    let owner = super::Caller::binding(access.caller.as_ref());
    if claims.o != owner
        || server
            .members
            .get(claims.m)
            .is_none_or(|m| m.upstream != claims.u)
    {
        tracing::info!(server = %server.name, "a task id was presented by another principal or for another upstream");
        return Err(unknown());
    }
    if let Some(t) = ticket {
        t.target(Some(&claims.n), None, true);
    }
    // The tool's policy applies to its task: what the caller may no longer call (or see), it
    // may no longer follow either. Arguments were judged when the call was made.
    if !access.policy.is_open() {
        let facts = Facts {
            server: &server.name,
            method: FunctionKind::Tool.call_method().metric_label(),
            kind: FunctionKind::Tool,
            name: &claims.n,
            upstream: &claims.u,
        };
        let decision = access.policy.decide(access.principal(), &facts, None);
        if decision.effect == Effect::Deny {
            return Err(unknown().denied_by(&decision.rule));
        }
        if let Some(t) = ticket {
            t.decision("allow", Some(&decision.rule));
        }
    }
    if let Some(catalog) = &server.catalog
        && !catalog.callable(
            &claims.u,
            crate::catalog::pin::DefinitionKind::Tool,
            &claims.i,
        )
    {
        return Err(unknown().denied_by("catalog"));
    }
    params.insert("taskId".into(), Value::String(claims.t));
    let mut message = message;
    message.params = Some(to_raw(&params));
    Ok((
        Routed {
            member: claims.m,
            message,
        },
        Rewrite::Echo(outward),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::RequestId;

    fn create(sealer: &Arc<Keyring>) -> Rewrite {
        Rewrite::Create {
            sealer: sealer.clone(),
            context: "task:/mcp".into(),
            member: 1,
            upstream: "b".into(),
            tool: "b__slow".into(),
            inner: "slow".into(),
            owner: Some("alice".into()),
        }
    }

    fn answer(result: Value) -> Message {
        Message::response(RequestId::Number(1), to_raw(&result))
    }

    #[test]
    fn a_created_task_gets_a_sealed_id_that_opens_only_in_its_context() {
        let sealer = Arc::new(Keyring::random());
        let mut m = answer(
            serde_json::json!({"resultType": "task", "taskId": "up-1", "status": "working"}),
        );
        create(&sealer).apply(&mut m);
        let r: Value = serde_json::from_str(m.result.unwrap().get()).unwrap();
        let id = r["taskId"].as_str().unwrap();
        assert_ne!(id, "up-1");
        assert_eq!(r["status"], "working");
        let c: TaskClaims = sealer.open_value(id, "task:/mcp").ok().unwrap();
        assert_eq!(
            (c.m, c.t.as_str(), c.o.as_deref()),
            (1, "up-1", Some("alice"))
        );
        assert!(sealer.open_value::<TaskClaims>(id, "task:/other").is_err());
    }

    #[test]
    fn only_task_results_are_rewritten_and_overlong_ids_are_refused() {
        let sealer = Arc::new(Keyring::random());
        let plain = serde_json::json!({"resultType": "complete", "content": [], "structuredContent": {"taskId": "x"}});
        let mut m = answer(plain.clone());
        create(&sealer).apply(&mut m);
        assert_eq!(
            serde_json::from_str::<Value>(m.result.unwrap().get()).unwrap(),
            plain
        );
        let long = "x".repeat(MAX_UPSTREAM_ID + 1);
        let mut m = answer(serde_json::json!({"resultType": "task", "taskId": long}));
        create(&sealer).apply(&mut m);
        assert!(m.result.is_none());
        assert_eq!(m.error_code(), Some(ErrorCode::INTERNAL_ERROR.0));
    }

    #[test]
    fn an_answer_about_a_task_shows_the_clients_id() {
        let mut m = answer(
            serde_json::json!({"resultType": "complete", "taskId": "up-1", "status": "completed"}),
        );
        Rewrite::Echo("sealed".into()).apply(&mut m);
        let r: Value = serde_json::from_str(m.result.unwrap().get()).unwrap();
        assert_eq!(r["taskId"], "sealed");
    }
}
