//! The policy page: paste a token's claims, name a tool, prompt or resource, and see what the
//! gateway would decide and which rule decides — `gatehouse policy explain` in a form.

use super::page::{self, esc};
use super::session::viewer;
use crate::commands::policy::{ExplainRequest, explain as run_explain};
use crate::policy::FunctionKind;
use crate::web::AppState;
use axum::Form;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::HeaderMap;
use serde::Deserialize;
use std::fmt::Write;

/// Largest claims document read.
const MAX_CLAIMS: usize = 64 * 1024;

/// The form.
#[derive(Deserialize, Default)]
pub struct ExplainForm {
    #[serde(default)]
    server: String,
    #[serde(default)]
    claims: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    arguments: String,
}

fn form_html(state: &AppState, f: &ExplainForm) -> String {
    let config = state.gateway.runtime().config.clone();
    let mut servers = String::new();
    for s in &config.servers {
        let sel = if s.path == f.server { " selected" } else { "" };
        let _ = write!(
            servers,
            "<option value=\"{p}\"{sel}>{n} ({p})</option>",
            p = esc(&s.path),
            n = esc(&s.name)
        );
    }
    let mut kinds = String::new();
    for k in ["tool", "prompt", "resource"] {
        let sel = if f.kind == k { " selected" } else { "" };
        let _ = write!(kinds, "<option{sel}>{k}</option>");
    }
    let claims = if f.claims.is_empty() {
        "{\n  \"iss\": \"https://idp.example.com\",\n  \"aud\": \"https://gatehouse.example.com/mcp\",\n  \"sub\": \"alice\",\n  \"exp\": 4102444800,\n  \"scope\": \"mcp:tools\",\n  \"groups\": [\"engineering\"]\n}"
    } else {
        &f.claims
    };
    // No CSRF token: explaining changes nothing (the form posts only so that claims stay out
    // of URLs and logs).
    format!(
        "<form method=\"post\" action=\"/admin/policy\" class=\"stack\">\
         <label>Server<select name=\"server\">{servers}</select></label>\
         <label>Token claims (JSON)<textarea name=\"claims\" rows=\"9\" spellcheck=\"false\">{c}</textarea></label>\
         <label>Kind<select name=\"kind\">{kinds}</select></label>\
         <label>Name<input name=\"name\" value=\"{n}\" required placeholder=\"as clients see it\"></label>\
         <label>Arguments (JSON, optional)<input name=\"arguments\" value=\"{a}\"></label>\
         <div class=\"actions\"><button type=\"submit\" class=\"primary\">Explain</button></div></form>",
        c = esc(claims),
        n = esc(&f.name),
        a = esc(&f.arguments),
    )
}

/// `GET /admin/policy`.
pub async fn form(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let v = match viewer(&state, &headers).await {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let body = form_html(&state, &ExplainForm::default());
    page::render(&v, "/admin/policy", "Policy", &body)
}

/// `POST /admin/policy`.
pub async fn explain(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<ExplainForm>,
) -> Response {
    let v = match viewer(&state, &headers).await {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let mut body = form_html(&state, &f);
    let result = (|| {
        if f.claims.len() > MAX_CLAIMS {
            return Err(format!("The claims are larger than {MAX_CLAIMS} bytes."));
        }
        let claims: serde_json::Value = serde_json::from_str(&f.claims)
            .map_err(|e| format!("The claims are not a JSON object: {e}"))?;
        if !claims.is_object() {
            return Err("The claims must be a JSON object.".into());
        }
        let arguments = if f.arguments.trim().is_empty() {
            None
        } else {
            Some(
                serde_json::from_str(&f.arguments)
                    .map_err(|e| format!("The arguments are not JSON: {e}"))?,
            )
        };
        let kind = match f.kind.as_str() {
            "prompt" => FunctionKind::Prompt,
            "resource" => FunctionKind::Resource,
            _ => FunctionKind::Tool,
        };
        let config = state.gateway.runtime().config.clone();
        run_explain(
            &config,
            &ExplainRequest {
                server: Some(f.server.clone()).filter(|s| !s.is_empty()),
                claims,
                kind,
                name: f.name.trim().to_owned(),
                upstream: None,
                arguments,
            },
        )
    })();
    match result {
        Ok(e) => {
            let verdict = if e.allowed { "ALLOWED" } else { "DENIED" };
            let _ = write!(
                body,
                "<h2>Decision: <span class=\"state state-{c}\">{verdict}</span></h2><pre aria-label=\"Explanation\">{t}</pre>",
                c = if e.allowed { "approved" } else { "rejected" },
                t = esc(&e.text)
            );
        }
        Err(e) => {
            let _ = write!(
                body,
                "<p class=\"error\" role=\"alert\">{}</p>",
                esc(&e.replace("--", ""))
            );
        }
    }
    page::render(&v, "/admin/policy", "Policy", &body)
}
