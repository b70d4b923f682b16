//! Interceptors: the external hooks a virtual server asks before a request goes upstream and
//! after its result comes back (`servers[].interceptors`). Each hook is a validator (its
//! answer allows or denies) or a mutator (it may also replace the arguments or the result),
//! after the MCP Interceptors working group's split; hooks run in the configured order, each
//! seeing what the one before let through.
//!
//! The payload and answer are documented in `docs/interceptors.md`. A hook sees arguments
//! redacted like the audit trail; a mutator that hands a mask back unchanged keeps the value
//! it hid. Each hook has a concurrency cap (a call waits for a slot within the hook's
//! timeout), a timeout and a fail mode, so a slow or absent hook costs a bounded wait and
//! then the configured answer, never a call held for ever.

use crate::audit::redact::Redactor;
use crate::config::interceptors::{Interceptor, OnHookError, Phase, Role};
use crate::telemetry::metrics::METRICS;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// The payload's `version`.
pub const PAYLOAD_VERSION: &str = "gatehouse.interceptor/v1";

/// Why an interceptor stopped a call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InterceptError {
    /// The hook denied it; `reason` is shown to the client.
    #[error("denied by interceptor {hook:?}: {reason}")]
    Denied {
        /// The hook's name.
        hook: String,
        /// What the hook said.
        reason: String,
    },
    /// The hook failed (and fails closed).
    #[error("interceptor {hook:?} failed: {reason}; the call is refused (on_error: deny)")]
    Failed {
        /// The hook's name.
        hook: String,
        /// What went wrong.
        reason: String,
    },
}

impl InterceptError {
    /// The hook's name.
    pub fn hook(&self) -> &str {
        match self {
            InterceptError::Denied { hook, .. } | InterceptError::Failed { hook, .. } => hook,
        }
    }
}

/// What a call is, as hooks are told.
pub struct Subject<'a> {
    /// The virtual server.
    pub server: &'a str,
    /// Its tenant.
    pub tenant: Option<&'a str>,
    /// The method.
    pub method: &'a str,
    /// The tool or prompt name or resource URI, as the client named it.
    pub target: Option<&'a str>,
    /// The upstream serving it.
    pub upstream: &'a str,
    /// The caller; `None` on an open server.
    pub principal: Option<&'a crate::auth::Principal>,
    /// The request's trace id (the one its audit record and access log line name).
    pub trace_id: Option<&'a str>,
}

struct Hook {
    cfg: Interceptor,
    headers: HeaderMap,
    slots: Arc<Semaphore>,
}

/// One server's hooks.
pub struct Interceptors {
    hooks: Vec<Hook>,
    redactor: Redactor,
    http: reqwest::Client,
    max_answer: usize,
}

/// What a hook's answer means for the call.
#[derive(Debug)]
enum Answer {
    Allow,
    Replace(Value),
}

impl Interceptors {
    /// The hooks of a server; `None` when it has none. The error names the hook and the
    /// header whose value could not be read.
    pub fn new(
        hooks: &[Interceptor],
        redact: &crate::config::Redact,
        max_answer: usize,
    ) -> Result<Option<Interceptors>, String> {
        if hooks.is_empty() {
            return Ok(None);
        }
        let mut built = Vec::with_capacity(hooks.len());
        for h in hooks {
            let mut headers = HeaderMap::new();
            for (k, v) in &h.headers {
                let value = v
                    .resolve()
                    .map_err(|e| format!("interceptor {:?}: headers.{k}: {e}", h.name))?;
                let mut hv = HeaderValue::from_str(value.expose())
                    .map_err(|_| format!("interceptor {:?}: headers.{k}: invalid value", h.name))?;
                hv.set_sensitive(true);
                let name = HeaderName::from_bytes(k.as_bytes()).map_err(|e| e.to_string())?;
                headers.insert(name, hv);
            }
            built.push(Hook {
                cfg: h.clone(),
                headers,
                slots: Arc::new(Semaphore::new(h.max_concurrent)),
            });
        }
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| format!("interceptors: HTTP client: {e}"))?;
        Ok(Some(Interceptors {
            hooks: built,
            redactor: Redactor::new(redact),
            http,
            max_answer,
        }))
    }

    /// Whether some hook is asked about `method` in `phase`.
    pub fn asks(&self, phase: Phase, method: &str) -> bool {
        self.hooks.iter().any(|h| applies(&h.cfg, phase, method))
    }

    /// The request phase: `Ok(Some(args))` when a mutator replaced the arguments.
    pub async fn before(
        &self,
        subject: &Subject<'_>,
        arguments: Option<&Value>,
    ) -> Result<Option<Value>, InterceptError> {
        let mut current: Option<Value> = None;
        for h in &self.hooks {
            if !applies(&h.cfg, Phase::Request, subject.method) {
                continue;
            }
            let args = current.as_ref().or(arguments);
            let payload = self.payload(h, Phase::Request, subject, args, None);
            if let Answer::Replace(new) = self.ask(h, Phase::Request, subject, payload).await? {
                let restored = match args {
                    Some(original) => restore(&self.redactor, original, new),
                    None => new,
                };
                current = Some(restored);
            }
        }
        Ok(current)
    }

    /// The response phase: the result the client gets.
    pub async fn after(
        &self,
        subject: &Subject<'_>,
        arguments: Option<&Value>,
        mut result: Value,
    ) -> Result<Value, InterceptError> {
        for h in &self.hooks {
            if !applies(&h.cfg, Phase::Response, subject.method) {
                continue;
            }
            let payload = self.payload(h, Phase::Response, subject, arguments, Some(&result));
            if let Answer::Replace(new) = self.ask(h, Phase::Response, subject, payload).await? {
                result = new;
            }
        }
        Ok(result)
    }

    fn payload(
        &self,
        h: &Hook,
        phase: Phase,
        s: &Subject<'_>,
        arguments: Option<&Value>,
        result: Option<&Value>,
    ) -> Value {
        let principal = s.principal.map(|p| {
            json!({
                "subject": p.subject(), "issuer": p.issuer(), "client": p.client_id(),
                "groups": p.groups(), "roles": p.roles(), "scopes": p.scopes(),
            })
        });
        let (arguments, digest) = match arguments {
            None => (Value::Null, None),
            Some(a) => match self.redactor.digest(s.target, a) {
                Some(d) => (Value::Null, Some(d)),
                None => (self.redactor.masked(a), None),
            },
        };
        let mut p = json!({
            "version": PAYLOAD_VERSION,
            "phase": phase.as_str(),
            "role": h.cfg.role.as_str(),
            "interceptor": h.cfg.name,
            "server": s.server,
            "tenant": s.tenant,
            "method": s.method,
            "target": s.target,
            "upstream": s.upstream,
            "arguments": arguments,
            "principal": principal,
            "traceId": s.trace_id,
            "result": result,
        });
        if let Some(d) = digest {
            p["argumentsDigest"] = Value::String(d);
        }
        p
    }

    /// Asks one hook, applying its fail mode to anything but a valid answer.
    async fn ask(
        &self,
        h: &Hook,
        phase: Phase,
        s: &Subject<'_>,
        payload: Value,
    ) -> Result<Answer, InterceptError> {
        let started = Instant::now();
        let asked = tokio::time::timeout(h.cfg.timeout.0, self.exchange(h, phase, payload)).await;
        let answer = match asked {
            Ok(a) => a,
            Err(_) => Err(format!("timed out after {}", h.cfg.timeout)),
        };
        let seconds = started.elapsed().as_secs_f64();
        let outcome =
            |o: &str| METRICS.interceptor_answer(s.server, &h.cfg.name, phase.as_str(), o, seconds);
        match answer {
            Ok(Ok(a)) => {
                outcome(match a {
                    Answer::Allow => "allow",
                    Answer::Replace(_) => "mutate",
                });
                Ok(a)
            }
            Ok(Err(reason)) => {
                outcome("deny");
                tracing::info!(server = %s.server, interceptor = %h.cfg.name, phase = phase.as_str(), %reason, "call denied by an interceptor");
                Err(InterceptError::Denied {
                    hook: h.cfg.name.clone(),
                    reason,
                })
            }
            Err(reason) => {
                outcome("error");
                tracing::warn!(server = %s.server, interceptor = %h.cfg.name, phase = phase.as_str(), %reason, on_error = ?h.cfg.on_error, "interceptor failed");
                match h.cfg.on_error {
                    OnHookError::Allow => Ok(Answer::Allow),
                    OnHookError::Deny => Err(InterceptError::Failed {
                        hook: h.cfg.name.clone(),
                        reason,
                    }),
                }
            }
        }
    }

    /// One exchange: the outer error is a failure of the hook, the inner one its denial.
    async fn exchange(
        &self,
        h: &Hook,
        phase: Phase,
        payload: Value,
    ) -> Result<Result<Answer, String>, String> {
        let _slot = h.slots.acquire().await.map_err(|_| "closed".to_owned())?;
        let resp = self
            .http
            .post(&h.cfg.url)
            .headers(h.headers.clone())
            .json(&payload)
            .send()
            .await
            .map_err(|e| format!("could not be reached: {}", error_chain(&e)))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("answered HTTP {status}"));
        }
        let mut body = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| format!("answer broke off: {e}"))?;
            if body.len() + chunk.len() > self.max_answer {
                return Err(format!("answer is larger than {} bytes", self.max_answer));
            }
            body.extend_from_slice(&chunk);
        }
        let answer: Value =
            serde_json::from_slice(&body).map_err(|e| format!("answer is not JSON: {e}"))?;
        read_answer(&answer, h.cfg.role, phase)
    }
}

/// An error with its sources ("error sending request: connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

fn applies(h: &Interceptor, phase: Phase, method: &str) -> bool {
    h.phases.contains(&phase) && h.methods.iter().any(|m| m == method)
}

/// Reads a hook's answer: `Ok(Ok(_))` allows (maybe replacing), `Ok(Err(reason))` denies,
/// `Err` is an answer the hook may not give.
fn read_answer(answer: &Value, role: Role, phase: Phase) -> Result<Result<Answer, String>, String> {
    let decision = answer.get("decision").and_then(Value::as_str);
    let replaced_key = match phase {
        Phase::Request => "arguments",
        Phase::Response => "result",
    };
    match decision {
        Some("deny") => {
            let reason = answer
                .get("reason")
                .and_then(Value::as_str)
                .unwrap_or("no reason given");
            Ok(Err(crate::audit::clipped(reason)))
        }
        Some("allow") => match (answer.get(replaced_key), role) {
            (None | Some(Value::Null), _) => Ok(Ok(Answer::Allow)),
            (Some(_), Role::Validator) => Err(format!(
                "a validator may not replace `{replaced_key}` (make it a mutator)"
            )),
            (Some(v), Role::Mutator) => {
                if phase == Phase::Request && !v.is_object() {
                    return Err("`arguments` must be an object".into());
                }
                if phase == Phase::Response && !v.is_object() {
                    return Err("`result` must be an object".into());
                }
                Ok(Ok(Answer::Replace(v.clone())))
            }
        },
        _ => Err("answer has no `decision` of \"allow\" or \"deny\"".into()),
    }
}

/// The mutator's arguments with each mask it handed back unchanged replaced by the value it
/// hid, so that redaction costs a mutator nothing it did not mean to change.
fn restore(redactor: &Redactor, original: &Value, returned: Value) -> Value {
    match (original, returned) {
        (Value::Object(o), Value::Object(mut r)) => {
            for (k, v) in r.iter_mut() {
                if let Some(orig) = o.get(k) {
                    let taken = std::mem::take(v);
                    *v = if redactor.is_mask(k, &taken) {
                        orig.clone()
                    } else {
                        restore(redactor, orig, taken)
                    };
                }
            }
            Value::Object(r)
        }
        (Value::Array(o), Value::Array(r)) => Value::Array(
            r.into_iter()
                .enumerate()
                .map(|(i, v)| match o.get(i) {
                    Some(orig) => restore(redactor, orig, v),
                    None => v,
                })
                .collect(),
        ),
        (_, r) => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_by_role_and_phase() {
        let ok = |a: Value, role, phase| read_answer(&a, role, phase);
        assert!(matches!(
            ok(
                json!({"decision": "allow"}),
                Role::Validator,
                Phase::Request
            ),
            Ok(Ok(Answer::Allow))
        ));
        assert!(matches!(
            ok(json!({"decision": "deny", "reason": "no"}), Role::Validator, Phase::Request),
            Ok(Err(r)) if r == "no"
        ));
        let e = ok(
            json!({"decision": "allow", "arguments": {}}),
            Role::Validator,
            Phase::Request,
        );
        assert!(e.unwrap_err().contains("validator"));
        assert!(matches!(
            ok(
                json!({"decision": "allow", "result": {"content": []}}),
                Role::Mutator,
                Phase::Response
            ),
            Ok(Ok(Answer::Replace(_)))
        ));
        assert!(
            ok(
                json!({"decision": "allow", "arguments": 3}),
                Role::Mutator,
                Phase::Request
            )
            .is_err()
        );
        assert!(ok(json!({"verdict": "yes"}), Role::Mutator, Phase::Request).is_err());
    }

    #[test]
    fn a_mask_handed_back_keeps_the_value_it_hid() {
        let r = Redactor::new(&crate::config::Redact::default());
        let original = json!({"text": "hi", "api_token": "s3cr3t", "nested": [{"password": "p"}]});
        let masked = r.masked(&original);
        assert_eq!(masked["api_token"], crate::audit::redact::MASK);
        assert_eq!(masked["nested"][0]["password"], crate::audit::redact::MASK);
        let mut returned = masked.clone();
        returned["text"] = json!("changed");
        let out = restore(&r, &original, returned);
        assert_eq!(
            out,
            json!({"text": "changed", "api_token": "s3cr3t", "nested": [{"password": "p"}]})
        );
        // A value the mutator did change is kept as it set it.
        let mut returned = masked;
        returned["api_token"] = json!("other");
        assert_eq!(restore(&r, &original, returned)["api_token"], "other");
    }
}
