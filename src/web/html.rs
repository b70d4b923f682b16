//! The gateway's few HTML pages (consent, the façade's sign-in and errors): one template,
//! never cached or framed, with every interpolated value escaped.

use axum::response::{Html, IntoResponse, Response};
use http::StatusCode;

/// A page with a title and one paragraph.
pub fn page(status: StatusCode, title: &str, message: &str) -> Response {
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t} — Gatehouse</title></head>\
         <body><h1>{t}</h1><p>{m}</p></body></html>",
        t = escape(title),
        m = escape(message)
    );
    let mut resp = (status, Html(body)).into_response();
    let h = resp.headers_mut();
    h.insert("cache-control", http::HeaderValue::from_static("no-store"));
    h.insert(
        "content-security-policy",
        http::HeaderValue::from_static("default-src 'none'"),
    );
    h.insert("x-frame-options", http::HeaderValue::from_static("DENY"));
    resp
}

/// `s` safe inside HTML text and attribute values.
pub fn escape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '&' => "&amp;".to_owned(),
            '"' => "&quot;".to_owned(),
            '\'' => "&#39;".to_owned(),
            c => c.to_string(),
        })
        .collect()
}
