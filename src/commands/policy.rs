//! `gatehouse policy explain`: would this principal be allowed this call, and by which rule?

use crate::auth::{Authenticator, Principal, ServerGuard};
use crate::config::{ClaimPaths, Config, Effect};
use crate::federation::Naming;
use crate::policy::{CompiledPolicy, Facts, FunctionKind};
use serde_json::Value;

/// What to explain.
pub struct ExplainRequest {
    /// The virtual server's path (default: the only or first server).
    pub server: Option<String>,
    /// The token's claims (JSON object), as an IdP would issue them.
    pub claims: Value,
    /// The function's kind and name (as clients see it).
    pub kind: FunctionKind,
    /// Its name or URI.
    pub name: String,
    /// The upstream, when the name does not tell.
    pub upstream: Option<String>,
    /// The call's arguments, for argument rules.
    pub arguments: Option<Value>,
}

/// The explanation, and whether the call would be allowed.
pub struct Explanation {
    /// Human-readable lines.
    pub text: String,
    /// Whether the call would go through.
    pub allowed: bool,
}

/// Evaluates the configured policy for a hypothetical principal.
pub fn explain(config: &Config, req: &ExplainRequest) -> Result<Explanation, String> {
    let server = match &req.server {
        Some(path) => config
            .servers
            .iter()
            .find(|s| &s.path == path || &s.name == path)
            .ok_or_else(|| format!("--server {path}: no virtual server has this path or name"))?,
        None => config
            .servers
            .first()
            .ok_or("the configuration has no servers")?,
    };
    let naming = Naming::for_server(server, &config.upstreams);
    let upstream = match &req.upstream {
        Some(u) if server.upstreams.contains(u) => u.clone(),
        Some(u) => {
            return Err(format!(
                "--upstream {u}: not an upstream of {}",
                server.path
            ));
        }
        None if server.upstreams.len() == 1 => server.upstreams[0].clone(),
        None => {
            let inward = match req.kind {
                FunctionKind::Resource => naming.inward_uri(&req.name).map(|(i, _)| i),
                _ => naming.inward_name(&req.name).map(|(i, _)| i),
            };
            match inward {
                Some(i) => server.upstreams[i].clone(),
                None => {
                    return Err(
                        "cannot tell which upstream offers this name; pass --upstream".into(),
                    );
                }
            }
        }
    };
    // A protected server judges the claims as the gateway judges a token's (issuer, times,
    // audience): a token the gateway answers with 401 is DENIED here too, for the same reason.
    let principal = match &server.auth {
        Some(_) => {
            let auth = std::sync::Arc::new(Authenticator::new(&config.auth, None, None));
            let guard = ServerGuard::new(config, server, auth).expect("the server has auth");
            match guard.judge_unverified(req.claims.clone()) {
                Ok(p) => p,
                Err(e) => {
                    let text = format!(
                        "server     {} ({})\ntoken      refused: {e}\nresult     the client would get 401 invalid_token\nverdict    DENIED\n",
                        server.name, server.path
                    );
                    return Ok(Explanation {
                        text,
                        allowed: false,
                    });
                }
            }
        }
        // Nobody is authenticated on an open server; the claims still drive the rules.
        None => {
            let iss = req
                .claims
                .get("iss")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let paths = config
                .auth
                .issuers
                .values()
                .find(|i| i.issuer == iss)
                .map(|i| i.claims.clone())
                .unwrap_or_else(ClaimPaths::default);
            std::sync::Arc::new(Principal::hypothetical(req.claims.clone(), &paths)?)
        }
    };
    let policy = match &server.policy {
        Some(p) => CompiledPolicy::compile(p)?,
        None => CompiledPolicy::open(),
    };
    let method = req.kind.call_method().metric_label();
    let facts = Facts {
        server: &server.name,
        method,
        kind: req.kind,
        name: &req.name,
        upstream: &upstream,
    };
    let listing = policy.decide(Some(&principal), &facts, None);
    let empty = Value::Object(Default::default());
    let call = policy.decide(
        Some(&principal),
        &facts,
        Some(req.arguments.as_ref().unwrap_or(&empty)),
    );
    let mut lines = vec![
        format!("server     {} ({})", server.name, server.path),
        format!(
            "principal  sub={} groups={:?} roles={:?} scopes={:?} tenant={:?}",
            principal.subject(),
            principal.groups(),
            principal.roles(),
            principal.scopes(),
            principal.tenant().unwrap_or_default()
        ),
        format!("target     {method} {} (upstream {upstream})", req.name),
        format!(
            "listing    {} by rule {:?}",
            word(listing.effect),
            &*listing.rule
        ),
        format!("call       {} by rule {:?}", word(call.effect), &*call.rule),
    ];
    let mut allowed = call.allowed();
    if allowed {
        let mut needed = match &server.auth {
            Some(a) => crate::auth::required_scopes(&a.scopes, &a.require, method, Some(&req.name)),
            None => Vec::new(),
        };
        crate::auth::add_scopes(&mut needed, &call.require_scopes);
        if !needed.is_empty() {
            let missing: Vec<_> = needed
                .iter()
                .filter(|s| !principal.scopes().contains(s))
                .cloned()
                .collect();
            if missing.is_empty() {
                lines.push(format!("scopes     needs {} — present", needed.join(" ")));
            } else {
                allowed = false;
                lines.push(format!(
                    "scopes     needs {} — missing {} (the client would get 403 insufficient_scope and step up)",
                    needed.join(" "),
                    missing.join(" ")
                ));
            }
        }
    } else if listing.allowed() {
        lines.push("result     visible, but this call is refused (-32006)".into());
    } else {
        lines.push(
            "result     hidden: the call is answered as if the function did not exist".into(),
        );
    }
    lines.push(format!(
        "verdict    {}",
        if allowed { "ALLOWED" } else { "DENIED" }
    ));
    Ok(Explanation {
        text: lines.join("\n") + "\n",
        allowed,
    })
}

fn word(e: Effect) -> &'static str {
    match e {
        Effect::Allow => "allowed",
        Effect::Deny => "denied",
    }
}
