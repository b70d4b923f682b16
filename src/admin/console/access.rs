//! The access page: API keys (create — shown once — and revoke) and the OAuth clients the
//! façade registered (revoke), through the same functions as `gatehouse keys` and
//! `gatehouse clients`.

use super::page::{self, Done, esc, shown, url_part};
use super::session::{Viewer, actor, cookie, set_cookie, viewer};
use crate::commands::keys::{CreateKey, split_list};
use crate::web::AppState;
use axum::Form;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use http::HeaderMap;
use serde::Deserialize;
use std::fmt::Write;

fn back(k: &str, text: &str) -> Response {
    Redirect::to(&format!("/admin/access?{k}={}", url_part(text))).into_response()
}

/// `GET /admin/access`.
pub async fn page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(d): Query<Done>,
) -> Response {
    let v = match viewer(&state, &headers).await {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let mut body = d.html();
    // A key just created: shown on this one answer, then the cookie carrying it is gone.
    let new_key: Option<NewKey> = cookie(&headers, NEW_KEY_COOKIE)
        .and_then(|c| state.gateway.sealer().open_value(&c, NEW_KEY_PURPOSE).ok())
        .filter(|k: &NewKey| k.sid == v.sid && k.exp_ms > crate::audit::now_ms());
    render_keys_and_clients(
        &state,
        &v,
        new_key
            .as_ref()
            .map(|k| (k.subject.as_str(), k.key.as_str())),
        &mut body,
    )
    .await;
    let mut resp = page::render(&v, "/admin/access", "Access", &body);
    if new_key.is_some()
        && let Some(c) = set_cookie(NEW_KEY_COOKIE, "", 0, "Strict")
    {
        resp.headers_mut().append(http::header::SET_COOKIE, c);
    }
    resp
}

/// Carries a new key from its creation to the page that shows it (POST, redirect, GET: a
/// reload neither creates another key nor shows this one again).
const NEW_KEY_COOKIE: &str = "__Host-gatehouse-console-new-key";
const NEW_KEY_PURPOSE: &str = "admin-console-new-key";

/// What that cookie seals.
#[derive(serde::Serialize, Deserialize)]
struct NewKey {
    sid: String,
    subject: String,
    key: String,
    exp_ms: i64,
}

async fn render_keys_and_clients(
    state: &AppState,
    v: &Viewer,
    new_key: Option<(&str, &str)>,
    body: &mut String,
) {
    let Some(store) = state.gateway.store.clone() else {
        body.push_str("<p class=\"error\">This gateway runs without a store.</p>");
        return;
    };
    sessions(state, v, body);
    body.push_str("<h2>API keys</h2>");
    if let Some((subject, key)) = new_key {
        let _ = write!(
            body,
            "<div class=\"notice\" role=\"status\"><p>Key for {s} created. Copy it now: it is not shown again.</p>\
             <p><code id=\"new-key\" class=\"secret\">{k}</code></p></div>",
            s = shown(subject),
            k = esc(key)
        );
    }
    if v.is_admin() {
        let _ = write!(
            body,
            "<form method=\"post\" action=\"/admin/access/keys\" class=\"stack\">{csrf}\
             <label>Subject<input name=\"subject\" required placeholder=\"who the key acts as\"></label>\
             <label>Scopes<input name=\"scopes\" placeholder=\"space separated\"></label>\
             <label>Groups<input name=\"groups\" placeholder=\"space separated\"></label>\
             <label>Servers<input name=\"servers\" placeholder=\"paths, e.g. /mcp (empty: any that accepts keys)\"></label>\
             <label>Expires<input name=\"expires\" value=\"90d\"></label>\
             <label>Description<input name=\"description\"></label>\
             <div class=\"actions\"><button type=\"submit\" class=\"primary\">Create key</button></div></form>",
            csrf = page::csrf_field(v)
        );
    }
    match store.list_api_keys().await {
        Ok(keys) if keys.is_empty() => body.push_str("<p class=\"muted\">No API keys.</p>"),
        Ok(keys) => {
            body.push_str("<table aria-label=\"API keys\"><thead><tr><th>Id</th><th>Subject</th><th>Scopes</th><th>Servers</th><th>Created</th><th>Expires</th><th>State</th><th></th></tr></thead><tbody>");
            for k in &keys {
                let now = crate::store::now_secs();
                let state_text = if k.revoked_at.is_some() {
                    "revoked"
                } else if k.expires_at.is_some_and(|e| e <= now) {
                    "expired"
                } else {
                    "active"
                };
                let action = if v.is_admin() && k.revoked_at.is_none() {
                    format!(
                        "<form method=\"post\" action=\"/admin/access/keys/revoke\" class=\"inline\">{}\
                         <input type=\"hidden\" name=\"id\" value=\"{}\">\
                         <button type=\"submit\" class=\"danger\" aria-label=\"Revoke key {}\">Revoke</button></form>",
                        page::csrf_field(v),
                        esc(&k.id),
                        esc(&k.id)
                    )
                } else {
                    String::new()
                };
                let _ = write!(
                    body,
                    "<tr><td><code>{id}</code></td><td>{s}</td><td>{sc}</td><td>{sv}</td><td>{c}</td><td>{e}</td>\
                     <td><span class=\"state state-{st}\">{st}</span></td><td>{action}</td></tr>",
                    id = esc(&k.id),
                    s = shown(&k.subject),
                    sc = esc(&k.scopes.join(" ")),
                    sv = esc(&k.servers.join(" ")),
                    c = page::time(k.created_at * 1000),
                    e = k
                        .expires_at
                        .map(|e| page::time(e * 1000))
                        .unwrap_or_else(|| "never".into()),
                    st = state_text,
                );
            }
            body.push_str("</tbody></table>");
        }
        Err(e) => {
            tracing::error!(error = %e, "admin console: cannot list API keys");
            body.push_str("<p class=\"error\">The keys could not be read.</p>");
        }
    }
    connections(state, v, &store, body).await;
    body.push_str("<h2>OAuth clients</h2><p class=\"muted\">Registered with the authorization-server façade (dynamic registration; Client ID Metadata Documents are fetched, not stored).</p>");
    match store.oauth_clients().await {
        Ok(clients) if clients.is_empty() => {
            body.push_str("<p class=\"muted\">No registered clients.</p>")
        }
        Ok(clients) => {
            body.push_str("<table aria-label=\"OAuth clients\"><thead><tr><th>Client id</th><th>Name</th><th>Registered</th><th>Last used</th><th>State</th><th></th></tr></thead><tbody>");
            for c in &clients {
                let name = serde_json::from_str::<serde_json::Value>(&c.metadata)
                    .ok()
                    .and_then(|m| m["client_name"].as_str().map(str::to_owned))
                    .unwrap_or_default();
                let st = if c.revoked_at_ms.is_some() {
                    "revoked"
                } else {
                    "active"
                };
                let action = if v.is_admin() && c.revoked_at_ms.is_none() {
                    format!(
                        "<form method=\"post\" action=\"/admin/access/clients/revoke\" class=\"inline\">{}\
                         <input type=\"hidden\" name=\"client_id\" value=\"{}\">\
                         <button type=\"submit\" class=\"danger\">Revoke</button></form>",
                        page::csrf_field(v),
                        esc(&c.client_id)
                    )
                } else {
                    String::new()
                };
                let _ = write!(
                    body,
                    "<tr><td><code>{id}</code></td><td>{n}</td><td>{r}</td><td>{u}</td><td><span class=\"state state-{st}\">{st}</span></td><td>{action}</td></tr>",
                    id = esc(&c.client_id),
                    n = shown(&name),
                    r = page::time(c.created_at_ms),
                    u = c
                        .last_used_ms
                        .map(page::time)
                        .unwrap_or_else(|| "never".into()),
                );
            }
            body.push_str("</tbody></table>");
        }
        Err(e) => {
            tracing::error!(error = %e, "admin console: cannot list OAuth clients");
            body.push_str("<p class=\"error\">The clients could not be read.</p>");
        }
    }
}

/// Most sessions listed.
const MAX_SESSIONS: usize = 500;

/// The live MCP sessions of this replica, the most recently used first.
fn sessions(state: &AppState, v: &Viewer, body: &mut String) {
    let live = state.gateway.sessions.snapshot(MAX_SESSIONS);
    body.push_str("<h2>MCP sessions</h2><p class=\"muted\">Live 2025-11-25 sessions held by this replica (a principal is shown by the digest sessions are bound to; other replicas list their own).</p>");
    if live.is_empty() {
        body.push_str("<p class=\"muted\">No live sessions.</p>");
        return;
    }
    body.push_str("<table aria-label=\"MCP sessions\"><thead><tr><th>Holder</th><th>Client</th><th>Server</th><th>Version</th><th>Started</th><th class=\"num\">Idle</th><th></th></tr></thead><tbody>");
    for s in &live {
        let action = if v.is_admin() {
            format!(
                "<form method=\"post\" action=\"/admin/access/sessions/end\" class=\"inline\">{}\
                 <input type=\"hidden\" name=\"id\" value=\"{}\"><button type=\"submit\" class=\"danger\">End</button></form>",
                page::csrf_field(v),
                esc(&s.handle)
            )
        } else {
            String::new()
        };
        let _ = write!(
            body,
            "<tr><td><code>{h}</code></td><td>{c}</td><td><code>{p}</code></td><td>{ver}</td><td>{t}</td><td class=\"num\">{i}s</td><td>{action}</td></tr>",
            h = esc(&s.holder),
            c = shown(&s.client),
            p = esc(&s.server_path),
            ver = esc(&s.version),
            t = page::time(s.issued_at as i64 * 1000),
            i = s.idle.as_secs(),
        );
    }
    body.push_str("</tbody></table>");
}

/// `POST /admin/access/sessions/end`: ends a session as its client's DELETE would.
pub async fn end_session(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<RevokeForm>,
) -> Response {
    let v = match actor(&state, &headers, &f.csrf).await {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    match state.gateway.sessions.end_by_handle(&f.id) {
        Some(ended) => {
            crate::downstream::session_registry::close_ended(&state.gateway, vec![ended]).await;
            super::audit_action(
                &state,
                &v.subject,
                "console/end_session",
                &format!("session:{}", f.id),
                "allow",
            );
            back("done", "Session ended.")
        }
        None => back(
            "error",
            "No such live session on this replica (it may have ended already).",
        ),
    }
}

/// Most upstream connections listed.
const MAX_CONNECTIONS: i64 = 500;

/// Users' connections to `user_oauth` upstreams (their tokens stay sealed, never shown).
async fn connections(state: &AppState, v: &Viewer, store: &crate::store::Store, body: &mut String) {
    if state.gateway.runtime().consent.is_none() {
        return;
    }
    body.push_str("<h2>Upstream connections</h2><p class=\"muted\">Users' consents to upstreams with per-user OAuth; disconnecting deletes the stored tokens, and the next call asks for consent again.</p>");
    let rows = match store.all_connections(MAX_CONNECTIONS).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "admin console: cannot list connections");
            body.push_str("<p class=\"error\">The connections could not be read.</p>");
            return;
        }
    };
    if rows.is_empty() {
        body.push_str("<p class=\"muted\">No connections.</p>");
        return;
    }
    body.push_str("<table aria-label=\"Upstream connections\"><thead><tr><th>User</th><th>Upstream</th><th>Scopes</th><th>Connected</th><th>Token expires</th><th></th></tr></thead><tbody>");
    for c in &rows {
        let action = if v.is_admin() {
            format!(
                "<form method=\"post\" action=\"/admin/access/connections/disconnect\" class=\"inline\">{}\
                 <input type=\"hidden\" name=\"id\" value=\"{}\"><input type=\"hidden\" name=\"upstream\" value=\"{}\">\
                 <button type=\"submit\" class=\"danger\">Disconnect</button></form>",
                page::csrf_field(v),
                esc(&c.binding),
                esc(&c.upstream)
            )
        } else {
            String::new()
        };
        let _ = write!(
            body,
            "<tr><td>{s}</td><td>{u}</td><td>{sc}</td><td>{t}</td><td>{e}</td><td>{action}</td></tr>",
            s = shown(&c.subject),
            u = esc(&c.upstream),
            sc = esc(&c.scopes),
            t = page::time(c.created_at_ms),
            e = c
                .expires_at_ms
                .map(page::time)
                .unwrap_or_else(|| "—".into()),
        );
    }
    body.push_str("</tbody></table>");
}

/// `POST /admin/access/connections/disconnect` (`id` the user's binding).
pub async fn disconnect(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<RevokeForm>,
) -> Response {
    let v = match actor(&state, &headers, &f.csrf).await {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let Some(consent) = state.gateway.runtime().consent.clone() else {
        return back("error", "No upstream uses per-user OAuth.");
    };
    match consent.revoke(&f.id, &f.upstream).await {
        Ok(true) => {
            super::audit_action(
                &state,
                &v.subject,
                "console/disconnect",
                &format!("connection:{}:{}", f.upstream, f.id),
                "allow",
            );
            back("done", &format!("Disconnected from {}.", f.upstream))
        }
        Ok(false) => back(
            "error",
            "No such connection (it may have been removed already).",
        ),
        Err(e) => back("error", &e.to_string()),
    }
}

/// The key creation form.
#[derive(Deserialize)]
pub struct KeyForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    subject: String,
    #[serde(default)]
    scopes: String,
    #[serde(default)]
    groups: String,
    #[serde(default)]
    servers: String,
    #[serde(default)]
    expires: String,
    #[serde(default)]
    description: String,
}

/// `POST /admin/access/keys`: creates a key and shows it once (in this answer, never stored).
pub async fn create_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<KeyForm>,
) -> Response {
    let v = match actor(&state, &headers, &f.csrf).await {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let Some(store) = state.gateway.store.clone() else {
        return back("error", "This gateway runs without a store.");
    };
    let req = CreateKey {
        subject: f.subject.trim().to_owned(),
        scopes: split_list(&[f.scopes]),
        groups: split_list(&[f.groups]),
        servers: split_list(&[f.servers]),
        expires: if f.expires.trim().is_empty() {
            "90d".into()
        } else {
            f.expires.trim().to_owned()
        },
        description: f.description,
    };
    let config = state.gateway.runtime().config.clone();
    match crate::commands::keys::create(&config, &store, &req).await {
        Ok(key) => {
            let flash = NewKey {
                sid: v.sid.clone(),
                subject: req.subject.clone(),
                key,
                exp_ms: crate::audit::now_ms() + 60_000,
            };
            super::audit_action(
                &state,
                &v.subject,
                "console/create_key",
                &format!("key:{}", req.subject),
                "allow",
            );
            let sealed = state.gateway.sealer().seal_value(&flash, NEW_KEY_PURPOSE);
            let mut resp = Redirect::to("/admin/access").into_response();
            if let Some(c) = set_cookie(NEW_KEY_COOKIE, &sealed, 60, "Strict") {
                resp.headers_mut().append(http::header::SET_COOKIE, c);
            }
            resp
        }
        Err(e) => back("error", &e.replace("--", "")),
    }
}

/// The revoke forms.
#[derive(Deserialize)]
pub struct RevokeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    id: String,
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    upstream: String,
}

/// `POST /admin/access/keys/revoke`.
pub async fn revoke_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<RevokeForm>,
) -> Response {
    let v = match actor(&state, &headers, &f.csrf).await {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let Some(store) = state.gateway.store.clone() else {
        return back("error", "This gateway runs without a store.");
    };
    match crate::commands::keys::revoke(&store, &f.id).await {
        Ok(()) => {
            state.gateway.runtime().auth.forget_api_key(&f.id);
            super::audit_action(
                &state,
                &v.subject,
                "console/revoke_key",
                &format!("key:{}", f.id),
                "allow",
            );
            back("done", &format!("Key {} revoked.", f.id))
        }
        Err(e) => back("error", &e),
    }
}

/// `POST /admin/access/clients/revoke`.
pub async fn revoke_client(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<RevokeForm>,
) -> Response {
    let v = match actor(&state, &headers, &f.csrf).await {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let Some(store) = state.gateway.store.clone() else {
        return back("error", "This gateway runs without a store.");
    };
    let action = crate::commands::clients::ClientsAction::Revoke {
        client_id: f.client_id.clone(),
    };
    match crate::commands::clients::run(&store, action).await {
        Ok(_) => {
            super::audit_action(
                &state,
                &v.subject,
                "console/revoke_client",
                &format!("client:{}", f.client_id),
                "allow",
            );
            back("done", &format!("Client {} revoked.", f.client_id))
        }
        Err(e) => back("error", &e),
    }
}
