//! The browser side of per-user consent (`/connect/…`: pages, redirects and the cookie that
//! binds a flow to its browser) and the user's list of connections (`/connections`,
//! authenticated with the user's own MCP token).

use crate::credentials::consent::{Answer, CallbackQuery, ConsentService, Page};
use crate::web::AppState;
use crate::web::html::page;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use http::{HeaderMap, StatusCode};
use std::sync::Arc;

/// A value, or the response that ends the request early.
type Early<T> = Result<T, Box<Response>>;

fn service(state: &AppState) -> Early<Arc<ConsentService>> {
    state.gateway.runtime().consent.clone().ok_or_else(|| {
        Box::new(page(
            StatusCode::NOT_FOUND,
            "Not available",
            "This gateway has no consent configuration.",
        ))
    })
}

/// `GET /connect/{id}`: the link handed to the user.
pub async fn open_link(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match service(&state) {
        Ok(s) => answer(&s, s.open_link(&id).await),
        Err(r) => *r,
    }
}

/// `GET /connect/signed-in`: back from the enterprise IdP.
pub async fn signed_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Response {
    match service(&state) {
        Ok(s) => {
            let cookies = ConsentService::browser_cookies(&headers);
            answer(&s, s.signed_in(&q, &cookies).await)
        }
        Err(r) => *r,
    }
}

/// `GET /connect/callback`: back from the upstream's authorization server.
pub async fn callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Response {
    match service(&state) {
        Ok(s) => {
            let cookies = ConsentService::browser_cookies(&headers);
            answer(&s, s.authorized(&q, &cookies).await)
        }
        Err(r) => *r,
    }
}

/// The page, with the cookie change that goes with it.
fn answer(s: &ConsentService, a: Answer) -> Response {
    let mut resp = render(a.page);
    if let Some(v) = a.cookie.as_ref().and_then(|c| s.set_cookie(c)) {
        resp.headers_mut().append(http::header::SET_COOKIE, v);
    }
    resp
}

/// `GET /connections`: the caller's connections, as JSON.
pub async fn list(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let (s, binding) = match caller(&state, &headers).await {
        Ok(found) => found,
        Err(r) => return *r,
    };
    match s.connections(&binding).await {
        Ok(rows) => Json(serde_json::json!({
            "connections": rows.iter().map(|c| serde_json::json!({
                "upstream": c.upstream,
                "scopes": c.scopes,
                "connected_at_ms": c.created_at_ms,
                "updated_at_ms": c.updated_at_ms,
                "expires_at_ms": c.expires_at_ms,
            })).collect::<Vec<_>>()
        }))
        .into_response(),
        Err(e) => problem(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

/// `DELETE /connections/{upstream}`: forgets the caller's tokens for that upstream.
pub async fn revoke(
    State(state): State<AppState>,
    Path(upstream): Path<String>,
    headers: HeaderMap,
) -> Response {
    let (s, binding) = match caller(&state, &headers).await {
        Ok(found) => found,
        Err(r) => return *r,
    };
    match s.revoke(&binding, &upstream).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => problem(StatusCode::NOT_FOUND, "no such connection"),
        Err(e) => problem(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

/// The consent service and the binding of the user whose token any protected virtual
/// server accepts.
async fn caller(state: &AppState, headers: &HeaderMap) -> Early<(Arc<ConsentService>, String)> {
    let s = service(state)?;
    let rt = state.gateway.runtime();
    let mut last = None;
    for guard in rt.guards() {
        match guard.authenticate(headers).await {
            Ok(p) => return Ok((s, p.binding().to_owned())),
            Err(e) => last = Some(e),
        }
    }
    let reason = last.map_or("no virtual server is protected".to_owned(), |e| {
        e.to_string()
    });
    Err(Box::new(problem(StatusCode::UNAUTHORIZED, &reason)))
}

fn problem(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

fn render(p: Page) -> Response {
    match p {
        Page::Redirect(url) => {
            let mut resp = Redirect::to(&url).into_response();
            resp.headers_mut().insert(
                http::header::CACHE_CONTROL,
                http::HeaderValue::from_static("no-store"),
            );
            resp
        }
        Page::Connected {
            upstream,
            account,
            user,
        } => {
            let at = match account {
                Some(a) => format!("Your {upstream} account {a}"),
                None => format!("Your account at {upstream} (the one you just authorized there)"),
            };
            page(
                StatusCode::OK,
                "Connected",
                &format!(
                    "{at} is now connected for {user}, the user of your MCP client. If that is not \
                     what you meant, remove it with DELETE /connections/{upstream}. You can close \
                     this page and return to your client."
                ),
            )
        }
        Page::Refused { status, message } => page(
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            "Not connected",
            &message,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_connected_page_names_both_accounts_escaped() {
        let resp = render(Page::Connected {
            upstream: "crm".into(),
            account: Some("<img src=x onerror=alert(1)>".into()),
            user: "alice & bob".into(),
        });
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["cache-control"], "no-store");
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        let body = String::from_utf8(body.to_vec()).unwrap();
        assert!(!body.contains("<img"), "{body}");
        assert!(
            body.contains("Your crm account &lt;img src=x onerror=alert(1)&gt; is now connected for alice &amp; bob,"),
            "{body}"
        );
    }
}
