//! JSON responses: the plain one every error and answer uses, and the public documents
//! (metadata, key sets) that browsers may read and cache.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

/// A JSON response with the given status.
pub fn json(status: StatusCode, body: Vec<u8>) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// A public JSON document (metadata, key sets): readable from browsers, cached 5 minutes.
pub fn document(body: bytes::Bytes) -> Response {
    let mut resp = json(StatusCode::OK, body.to_vec());
    let h = resp.headers_mut();
    // Public information that browser-based clients must be able to read.
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=300"),
    );
    resp
}
