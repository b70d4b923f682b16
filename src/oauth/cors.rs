//! CORS for the façade's machine-facing endpoints, as OAuth 2.0 for browser-based applications
//! expects of an authorization server: the token, revocation and registration endpoints (and
//! the metadata a browser client reads first) answer preflights and let any origin read their
//! answers. No credentials mode: these endpoints never read cookies, the client authenticates
//! in the request itself. The browser-facing endpoints (`/oauth/authorize`, the callback and the
//! consent form) are navigations and get no CORS at all.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

/// Request headers a browser client may send: client authentication, the body's type, DPoP
/// proofs, and the MCP protocol version some SDKs add to every request.
const ALLOWED_HEADERS: &str = "Authorization, Content-Type, DPoP, MCP-Protocol-Version";
/// How long a browser may cache a preflight answer, in seconds.
const MAX_AGE: &str = "600";

/// `OPTIONS` on a POST endpoint.
pub(super) async fn preflight_post() -> Response {
    preflight("POST, OPTIONS")
}

/// `OPTIONS` on a GET endpoint (metadata, keys).
pub(super) async fn preflight_get() -> Response {
    preflight("GET, OPTIONS")
}

fn preflight(methods: &'static str) -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(methods),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(ALLOWED_HEADERS),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static(MAX_AGE),
    );
    resp
}

/// Lets any origin read an answer (errors included: a browser client must see why it was
/// refused).
pub(super) async fn readable(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("WWW-Authenticate, Retry-After"),
    );
    resp
}
