//! The catalog pages: upstreams and their definitions by state, a definition's review (its
//! text, its diff against what was approved, the scanner's findings) and the decision forms.
//! Decisions run [`crate::catalog::review`], as `gatehouse catalog` and the JSON API do.

use super::page::{self, Done, esc, shown, url_part};
use super::session::{actor, viewer};
use crate::catalog::review::{self, Decision, ReviewError};
use crate::store::{CatalogDefinition, DefinitionState, Store};
use crate::web::AppState;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use std::fmt::Write;

fn store(state: &AppState) -> Result<Store, Box<Response>> {
    state.gateway.store.clone().ok_or_else(|| {
        Box::new(page::message(
            StatusCode::SERVICE_UNAVAILABLE,
            "No store",
            "This gateway runs without a store.",
        ))
    })
}

fn failed(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "admin console: catalog page failed");
    page::message(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Something failed",
        "The catalog could not be read; see the gateway's log.",
    )
}

fn badge(state: &str) -> String {
    format!("<span class=\"state state-{s}\">{s}</span>", s = esc(state))
}

/// `GET /admin/upstreams`: every configured upstream with its catalog state and how many of
/// its definitions are in each state.
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(d): Query<Done>,
) -> Response {
    let v = match viewer(&state, &headers).await {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let store = match store(&state) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let (rows, defs) = match (
        store.catalog_upstreams().await,
        store.definitions(None).await,
    ) {
        (Ok(r), Ok(d)) => (r, d),
        (Err(e), _) | (_, Err(e)) => return failed(e),
    };
    let config = state.gateway.runtime().config.clone();
    let mut body = d.html();
    if config.catalog.is_none() {
        body.push_str("<p class=\"notice\">This gateway has no <code>catalog</code> block: every upstream is served as it is.</p>");
    }
    body.push_str("<table><thead><tr><th>Upstream</th><th>State</th><th>Approved</th><th>Waiting for review</th><th>Rejected or removed</th><th>Last decision</th></tr></thead><tbody>");
    for uname in config.upstreams.keys() {
        let row = rows.iter().find(|r| &r.upstream == uname);
        let count = |states: &[DefinitionState]| {
            defs.iter()
                .filter(|x| &x.upstream == uname && states.contains(&x.state))
                .count()
        };
        let last = row
            .and_then(|r| {
                r.decided_at_ms.map(|at| {
                    format!(
                        "{} by {}",
                        page::time(at),
                        shown(r.decided_by.as_deref().unwrap_or("?"))
                    )
                })
            })
            .unwrap_or_default();
        let _ = write!(
            body,
            "<tr><td><a href=\"/admin/upstreams/{link}\">{name}</a></td><td>{st}</td><td class=\"num\">{a}</td>\
             <td class=\"num\">{w}</td><td class=\"num\">{r}</td><td>{last}</td></tr>",
            link = url_part(uname),
            name = esc(uname),
            st = row.map_or_else(|| badge("unregistered"), |r| badge(r.state.as_str())),
            a = count(&[DefinitionState::Approved]),
            w = count(&[DefinitionState::Pending, DefinitionState::Quarantined]),
            r = count(&[DefinitionState::Rejected, DefinitionState::Removed]),
        );
    }
    body.push_str("</tbody></table>");
    page::render(&v, "/admin/upstreams", "Catalog", &body)
}

/// `GET /admin/upstreams/{upstream}`: its definitions, those waiting for review first.
pub async fn upstream(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Query(d): Query<Done>,
) -> Response {
    let v = match viewer(&state, &headers).await {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let store = match store(&state) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let config = state.gateway.runtime().config.clone();
    if !config.upstreams.contains_key(&name) {
        return page::message(
            StatusCode::NOT_FOUND,
            "No such upstream",
            &format!("No upstream is called {name:?} in the configuration."),
        );
    }
    let mut body = d.html();
    let row = match store.catalog_upstreams().await {
        Ok(all) => all.into_iter().find(|u| u.upstream == name),
        Err(e) => return failed(e),
    };
    let _ = write!(
        body,
        "<p>State: {}{}</p>",
        row.as_ref()
            .map_or_else(|| badge("unregistered"), |r| badge(r.state.as_str())),
        row.as_ref()
            .and_then(|r| r.reason.as_deref())
            .map(|r| format!(" — {}", shown(r)))
            .unwrap_or_default()
    );
    if v.is_admin() {
        let _ = write!(
            body,
            "<h2>Upstream decisions</h2><form method=\"post\" action=\"/admin/upstreams/{link}/decide\" class=\"stack\">{csrf}\
             <label>Reason for the whole upstream<textarea name=\"reason\" required></textarea></label>\
             <div class=\"actions\"><button name=\"decision\" value=\"approve\" class=\"primary\">Approve upstream</button>\
             <button name=\"decision\" value=\"quarantine\">Quarantine upstream</button>\
             <button name=\"decision\" value=\"reject\" class=\"danger\">Reject upstream</button>\
             <button name=\"decision\" value=\"retire\" class=\"danger\">Retire upstream</button></div></form>\
             <form method=\"post\" action=\"/admin/upstreams/{link}/register\" class=\"stack\">{csrf}\
             <p class=\"muted\">Registering connects to the upstream, lists and scans what it offers now.</p>\
             <div class=\"actions\"><button type=\"submit\">Register and scan now</button></div></form>",
            link = url_part(&name),
            csrf = page::csrf_field(&v),
        );
    }
    let defs = match store.definitions(Some(&name)).await {
        Ok(d) => d,
        Err(e) => return failed(e),
    };
    body.push_str("<h2>Definitions</h2>");
    if defs.is_empty() {
        body.push_str("<p class=\"muted\">Nothing recorded yet: register the upstream.</p>");
    } else {
        body.push_str("<table><thead><tr><th>Kind</th><th>Name</th><th>State</th><th>Worst finding</th><th>Last decision</th></tr></thead><tbody>");
        let mut sorted: Vec<&CatalogDefinition> = defs.iter().collect();
        sorted.sort_by_key(|d| (order(d.state), d.kind.clone(), d.name.clone()));
        for def in sorted {
            let _ = write!(
                body,
                "<tr><td>{kind}</td><td><a href=\"/admin/upstreams/{up}/review?definition={dn}\">{name}</a></td><td>{st}</td>\
                 <td>{worst}</td><td>{by}</td></tr>",
                kind = esc(&def.kind),
                up = url_part(&name),
                dn = url_part(&def.name),
                name = shown(&def.name),
                st = badge(def.state.as_str()),
                worst = def
                    .worst
                    .as_deref()
                    .map(|w| format!("<span class=\"sev-{w}\">{w}</span>", w = esc(w)))
                    .unwrap_or_else(|| "—".into()),
                by = def.decided_by.as_deref().map(shown).unwrap_or_default(),
            );
        }
        body.push_str("</tbody></table>");
    }
    page::render(&v, "/admin/upstreams", &format!("Upstream {name}"), &body)
}

/// Waiting for review first.
fn order(s: DefinitionState) -> u8 {
    match s {
        DefinitionState::Quarantined => 0,
        DefinitionState::Pending => 1,
        DefinitionState::Approved => 2,
        DefinitionState::Rejected => 3,
        DefinitionState::Removed => 4,
    }
}

/// `?definition=…`.
#[derive(Deserialize)]
pub struct Which {
    definition: String,
    #[serde(flatten)]
    done: Done,
}

/// `GET /admin/upstreams/{upstream}/review?definition=…`: the definition, what changed since
/// it was approved, the findings, and the decision form bound to the pin shown.
pub async fn review(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Query(q): Query<Which>,
) -> Response {
    let v = match viewer(&state, &headers).await {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let store = match store(&state) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let defs = match review::recorded(&store, &name).await {
        Ok(d) => d,
        Err(e) => return page::message(StatusCode::NOT_FOUND, "Not found", &e.to_string()),
    };
    let Some(def) = defs.iter().find(|d| d.name == q.definition) else {
        return page::message(
            StatusCode::NOT_FOUND,
            "Not found",
            &format!("{name} has no definition {:?}.", q.definition),
        );
    };
    let mut body = q.done.html();
    let _ = write!(
        body,
        "<p>{kind} <code>{n}</code> of <a href=\"/admin/upstreams/{up}\">{upn}</a>: {st}</p>",
        kind = esc(&def.kind),
        n = shown(&def.name),
        up = url_part(&name),
        upn = esc(&name),
        st = badge(def.state.as_str()),
    );
    // As stored by the scanner: rule, severity, field, excerpt.
    let findings: Vec<serde_json::Value> = serde_json::from_str(&def.findings).unwrap_or_default();
    body.push_str("<h2>Scanner findings</h2>");
    if findings.is_empty() {
        body.push_str("<p class=\"muted\">None.</p>");
    } else {
        body.push_str("<table><thead><tr><th>Severity</th><th>Rule</th><th>Field</th><th>Excerpt</th></tr></thead><tbody>");
        for f in &findings {
            let text = |k: &str| f[k].as_str().unwrap_or_default().to_owned();
            let sev = text("severity");
            let _ = write!(
                body,
                "<tr><td class=\"sev-{s}\">{s}</td><td>{r}</td><td><code>{fl}</code></td><td><code>{x}</code></td></tr>",
                s = esc(&sev),
                r = esc(&text("rule")),
                fl = shown(&text("field")),
                x = shown(&text("excerpt")),
            );
        }
        body.push_str("</tbody></table>");
    }
    let pretty = |text: &str| {
        serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|j| serde_json::to_string_pretty(&j).ok())
            .unwrap_or_else(|| text.to_owned())
    };
    let current = pretty(&def.definition);
    match def.approved_definition.as_deref() {
        Some(approved) if def.approved_pin.as_deref() != Some(def.pin.as_str()) => {
            body.push_str("<h2>Changes since it was approved</h2><pre class=\"diff\" aria-label=\"Changes since approval\">");
            diff(&pretty(approved), &current, &mut body);
            body.push_str("</pre>");
        }
        _ => {}
    }
    let _ = write!(
        body,
        "<h2>Definition as offered now</h2><pre>{}</pre>",
        shown(&current)
    );
    if v.is_admin() {
        let _ = write!(
            body,
            "<h2>Decision</h2><form method=\"post\" action=\"/admin/upstreams/{up}/decide\" class=\"stack\">{csrf}\
             <input type=\"hidden\" name=\"definition\" value=\"{dn}\"><input type=\"hidden\" name=\"pin\" value=\"{pin}\">\
             <label for=\"reason\">Reason</label><textarea id=\"reason\" name=\"reason\" required></textarea>\
             {accept}<div class=\"actions\"><button name=\"decision\" value=\"approve\" class=\"primary\">Approve</button>\
             <button name=\"decision\" value=\"quarantine\">Quarantine</button>\
             <button name=\"decision\" value=\"reject\" class=\"danger\">Reject</button></div></form>",
            up = url_part(&name),
            csrf = page::csrf_field(&v),
            dn = esc(&def.name),
            pin = esc(&def.pin),
            accept = if def
                .worst
                .as_deref()
                .is_some_and(|w| w == "high" || w == "critical")
            {
                "<label><span><input type=\"checkbox\" name=\"accept_findings\" value=\"true\"> Approve despite high or critical findings</span></label>"
            } else {
                ""
            },
        );
    }
    page::render(&v, "/admin/upstreams", "Review", &body)
}

/// A line diff of two texts as `<del>`/`<ins>` lines (the review's highlight).
fn diff(old: &str, new: &str, out: &mut String) {
    let d = similar::TextDiff::from_lines(old, new);
    for change in d.iter_all_changes() {
        let line = shown(change.value().trim_end_matches('\n'));
        let _ = match change.tag() {
            // Block elements end their own line.
            similar::ChangeTag::Delete => write!(out, "<del>- {line}</del>"),
            similar::ChangeTag::Insert => write!(out, "<ins>+ {line}</ins>"),
            similar::ChangeTag::Equal => writeln!(out, "  {line}"),
        };
    }
}

/// The decision form.
#[derive(Deserialize)]
pub struct DecideForm {
    #[serde(default)]
    csrf: String,
    decision: String,
    #[serde(default)]
    definition: Option<String>,
    #[serde(default)]
    pin: Option<String>,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    accept_findings: Option<String>,
}

/// Largest reason kept.
const MAX_REASON: usize = 2000;

/// `POST /admin/upstreams/{upstream}/decide`.
pub async fn decide(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Form(f): Form<DecideForm>,
) -> Response {
    let v = match actor(&state, &headers, &f.csrf).await {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let store = match store(&state) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let definition = f.definition.filter(|d| !d.is_empty());
    let back = |done: Result<String, String>| {
        let (k, text) = match done {
            Ok(t) => ("done", t),
            Err(t) => ("error", t),
        };
        let to = match &definition {
            Some(d) => format!(
                "/admin/upstreams/{}/review?definition={}&{k}={}",
                url_part(&name),
                url_part(d),
                url_part(&text)
            ),
            None => format!(
                "/admin/upstreams/{}?{k}={}",
                url_part(&name),
                url_part(&text)
            ),
        };
        Redirect::to(&to).into_response()
    };
    let reason = f.reason.trim();
    if reason.is_empty() {
        return back(Err("A reason is required.".into()));
    }
    if reason.len() > MAX_REASON {
        return back(Err(format!(
            "The reason is longer than {MAX_REASON} bytes."
        )));
    }
    let accept = f.accept_findings.as_deref() == Some("true");
    let Some(decision) = Decision::named(&f.decision, accept) else {
        return back(Err(format!("No decision {:?}.", f.decision)));
    };
    let result = review::decide(
        &store,
        &name,
        definition.as_deref(),
        &v.subject,
        Some(reason),
        decision,
        f.pin
            .as_deref()
            .filter(|p| !p.is_empty() && definition.is_some()),
    )
    .await;
    match result {
        Ok(mut reviewed) => {
            let summary = match (&definition, &reviewed.upstream) {
                (None, Some(u)) => format!(
                    "{} is now {} ({} definitions written).",
                    u.upstream,
                    u.state.as_str(),
                    reviewed.definitions.len()
                ),
                _ => {
                    let states: Vec<String> = reviewed
                        .definitions
                        .iter()
                        .take(5)
                        .map(|d| format!("{} is now {}", d.name, d.state.as_str()))
                        .collect();
                    format!("Done: {}.", states.join("; "))
                }
            };
            crate::admin::catalog::enforce(&state, std::mem::take(&mut reviewed.audit)).await;
            back(Ok(summary))
        }
        Err(ReviewError::Store(e)) => failed(e),
        Err(e) => back(Err(e.to_string())),
    }
}

/// The register form.
#[derive(Deserialize)]
pub struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

/// `POST /admin/upstreams/{upstream}/register`: connect, list, scan and record.
pub async fn register(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Form(f): Form<CsrfOnly>,
) -> Response {
    let v = match actor(&state, &headers, &f.csrf).await {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let store = match store(&state) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let config = state.gateway.runtime().config.clone();
    let to = |k: &str, text: &str| {
        Redirect::to(&format!(
            "/admin/upstreams/{}?{k}={}",
            url_part(&name),
            url_part(text)
        ))
        .into_response()
    };
    match review::register(&config, &store, &name, Some(&v.subject)).await {
        Ok(mut r) => {
            let n = r.definitions.len();
            crate::admin::catalog::enforce(&state, std::mem::take(&mut r.audit)).await;
            to("done", &format!("Registered: {n} definitions recorded."))
        }
        Err(ReviewError::Store(e)) => failed(e),
        Err(e) => to("error", &e.to_string()),
    }
}
