//! The console's page frame and its HTML rules: one layout (navigation, who is signed in,
//! sign-out), one stylesheet embedded in the binary, a strict CSP, and the two ways text gets
//! into a page — [`esc`] for the gateway's own text and [`shown`] for anything an upstream or a
//! client wrote, which also makes control and bidirectional characters visible.

use super::session::Viewer;
use axum::response::{Html, IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use std::fmt::Write;

/// No script at all, styles only from our own stylesheet, forms only to ourselves, never framed.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
                       frame-ancestors 'none'; base-uri 'none'";

/// The stylesheet, served at [`STYLESHEET`].
pub const CSS: &str = include_str!("console.css");
/// Where the stylesheet is (its name changes with its content, so it can be cached forever).
pub const STYLESHEET: &str = "/admin/assets/console-1.css";

/// The navigation: path, label.
const NAV: [(&str, &str); 5] = [
    ("/admin/", "Overview"),
    ("/admin/upstreams", "Catalog"),
    ("/admin/audit", "Audit"),
    ("/admin/access", "Access"),
    ("/admin/policy", "Policy"),
];

/// `s` safe in HTML text and attribute values.
pub fn esc(s: &str) -> String {
    crate::web::html::escape(s)
}

/// Text written by someone else (an upstream's names and descriptions, a client's name),
/// escaped, with every control, format or bidirectional character replaced by a visible
/// `U+XXXX` mark, so that a reviewer sees what the model will read, not what it renders as.
pub fn shown(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == '\n' || c == '\t' {
            out.push(c);
        } else if is_hidden(c) {
            let _ = write!(
                out,
                "<span class=\"hidden-char\" title=\"invisible or direction-changing character\">U+{:04X}</span>",
                c as u32
            );
        } else {
            match c {
                '<' => out.push_str("&lt;"),
                '>' => out.push_str("&gt;"),
                '&' => out.push_str("&amp;"),
                '"' => out.push_str("&quot;"),
                '\'' => out.push_str("&#39;"),
                c => out.push(c),
            }
        }
    }
    out
}

/// Characters that render as nothing, or reorder what follows.
fn is_hidden(c: char) -> bool {
    c.is_control()
        || matches!(c as u32,
            0x061C | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x2064 | 0x2066..=0x206F
            | 0xFEFF | 0xFFF9..=0xFFFB | 0xE0000..=0xE007F)
}

/// Headers every console answer carries.
pub fn secure_headers(resp: &mut Response) {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
}

/// A whole page: `current` is the navigation entry to mark, `body` already-escaped HTML.
pub fn render(viewer: &Viewer, current: &str, title: &str, body: &str) -> Response {
    let mut nav = String::new();
    for (path, label) in NAV {
        let here = if path == current {
            " aria-current=\"page\""
        } else {
            ""
        };
        let _ = write!(nav, "<a href=\"{path}\"{here}>{label}</a>");
    }
    let role = if viewer.is_admin() {
        "administrator"
    } else {
        "read-only"
    };
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{t} — Gatehouse</title><link rel=\"stylesheet\" href=\"{STYLESHEET}\"></head>\
         <body><header><span class=\"brand\">Gatehouse</span><nav aria-label=\"Console\">{nav}</nav>\
         <form method=\"post\" action=\"/admin/logout\" class=\"who\"><span>{who} ({role})</span>\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><button type=\"submit\">Sign out</button></form>\
         </header><main><h1>{t}</h1>{body}</main></body></html>",
        t = esc(title),
        who = shown(&viewer.display),
        csrf = esc(&viewer.csrf),
    );
    let mut resp = Html(html).into_response();
    secure_headers(&mut resp);
    resp
}

/// A page outside the frame (sign-in errors, refusals, signed out).
pub fn message(status: StatusCode, title: &str, text: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t} — Gatehouse</title>\
         <link rel=\"stylesheet\" href=\"{STYLESHEET}\"></head><body><main class=\"narrow\"><h1>{t}</h1>\
         <p>{m}</p><p><a href=\"/admin/login\">Sign in</a></p></main></body></html>",
        t = esc(title),
        m = esc(text)
    );
    let mut resp = (status, Html(html)).into_response();
    secure_headers(&mut resp);
    resp
}

/// What an action redirects back with (`?done=…` or `?error=…`), shown at the top of the page.
#[derive(serde::Deserialize, Default)]
pub struct Done {
    #[serde(default)]
    done: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

impl Done {
    /// The notices, as HTML.
    pub fn html(&self) -> String {
        let mut out = String::new();
        if let Some(t) = self.done.as_deref().filter(|t| !t.is_empty()) {
            let _ = write!(out, "<p class=\"notice\" role=\"status\">{}</p>", esc(t));
        }
        if let Some(e) = self.error.as_deref().filter(|e| !e.is_empty()) {
            let _ = write!(out, "<p class=\"error\" role=\"alert\">{}</p>", esc(e));
        }
        out
    }
}

/// The hidden CSRF field every form carries.
pub fn csrf_field(viewer: &Viewer) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(&viewer.csrf)
    )
}

/// Percent-encodes `s` for a path segment or query value.
pub fn url_part(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A time (ms since the epoch) as UTC text.
pub fn time(ms: i64) -> String {
    crate::commands::keys::format_time_ms(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_text_is_inert_and_its_hidden_characters_visible() {
        let s = shown("<script>alert(1)</script>\u{202E}cod.exe\u{200B}");
        assert!(!s.contains("<script>"), "{s}");
        assert!(s.contains("&lt;script&gt;"));
        assert!(s.contains("U+202E") && s.contains("U+200B"), "{s}");
        assert!(!s.contains('\u{202E}'));
        assert_eq!(shown("plain é"), "plain é");
    }
}
