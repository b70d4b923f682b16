//! Header rules of Streamable HTTP: Accept, Content-Type, Origin/Host, protocol version.

use super::error::HttpError;
use crate::protocol::ProtocolVersion;
use http::HeaderMap;
use http::header::{ACCEPT, CONTENT_TYPE, HOST, ORIGIN};

/// The `MCP-Protocol-Version` and `Mcp-Session-Id` header names.
pub use crate::protocol::headers::{
    PROTOCOL_VERSION as VERSION_HEADER, SESSION_ID as SESSION_HEADER,
};

fn accepts(headers: &HeaderMap, wanted: &str) -> bool {
    let (kind, _) = wanted.split_once('/').expect("media type");
    headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            // Compared without allocating: this runs twice on every POST.
            let media = item.split(';').next().unwrap_or("").trim();
            media.eq_ignore_ascii_case(wanted)
                || media == "*/*"
                || media
                    .strip_suffix("/*")
                    .is_some_and(|k| k.eq_ignore_ascii_case(kind))
        })
}

/// POST must accept both JSON and SSE, because the gateway decides per response.
pub fn check_post_accept(headers: &HeaderMap) -> Result<(), HttpError> {
    match (
        accepts(headers, "application/json"),
        accepts(headers, "text/event-stream"),
    ) {
        (true, true) => Ok(()),
        (false, true) => Err(HttpError::NotAcceptable {
            need: "application/json (send Accept: application/json, text/event-stream)",
        }),
        (true, false) => Err(HttpError::NotAcceptable {
            need: "text/event-stream (send Accept: application/json, text/event-stream)",
        }),
        (false, false) => Err(HttpError::NotAcceptable {
            need: "both application/json and text/event-stream",
        }),
    }
}

/// GET opens an SSE stream, so it must accept SSE.
pub fn check_get_accept(headers: &HeaderMap) -> Result<(), HttpError> {
    if accepts(headers, "text/event-stream") {
        Ok(())
    } else {
        Err(HttpError::NotAcceptable {
            need: "text/event-stream (send Accept: text/event-stream)",
        })
    }
}

/// The body must be JSON.
pub fn check_content_type(headers: &HeaderMap) -> Result<(), HttpError> {
    let ct = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = ct.split(';').next().unwrap_or("").trim();
    if media.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(HttpError::UnsupportedMediaType)
    }
}

/// DNS-rebinding protection: which browser origins and which Host names may reach the gateway.
#[derive(Debug, Clone, Default)]
pub struct OriginPolicy {
    /// Exact origins allowed; when empty, only loopback origins are.
    pub origins: Vec<String>,
    /// Whether the listener is on loopback, in which case `Host` must name loopback too.
    pub loopback_listener: bool,
}

/// The host of an authority (a `Host` header value): without its port, and an IPv6 address
/// without its brackets.
pub fn host_name(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    authority
        .rsplit_once(':')
        .map(|(h, p)| {
            if p.chars().all(|c| c.is_ascii_digit()) {
                h
            } else {
                authority
            }
        })
        .unwrap_or(authority)
}

fn is_loopback_host(host: &str) -> bool {
    let name = host_name(host);
    let name = name.to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name == "::1"
        || name
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl OriginPolicy {
    /// Checks `Origin` (when a browser sent one) and, on a loopback listener, `Host`.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), HttpError> {
        if let Some(origin) = headers.get(ORIGIN) {
            let origin = origin.to_str().unwrap_or("").trim_end_matches('/');
            let allowed = if self.origins.is_empty() {
                origin.split_once("://").is_some_and(|(scheme, host)| {
                    matches!(scheme, "http" | "https") && is_loopback_host(host)
                })
            } else {
                self.origins.iter().any(|o| o.eq_ignore_ascii_case(origin))
            };
            if !allowed {
                return Err(HttpError::ForbiddenOrigin(
                    origin.chars().take(200).collect(),
                ));
            }
        }
        if self.loopback_listener
            && let Some(host) = headers.get(HOST)
        {
            let host = host.to_str().unwrap_or("");
            if !is_loopback_host(host) {
                return Err(HttpError::ForbiddenHost(host.chars().take(200).collect()));
            }
        }
        Ok(())
    }
}

/// Reads `MCP-Protocol-Version`: `Ok(None)` when absent.
pub fn version_header(headers: &HeaderMap) -> Result<Option<ProtocolVersion>, HttpError> {
    match headers.get(VERSION_HEADER) {
        None => Ok(None),
        Some(v) => {
            let s = v.to_str().unwrap_or("");
            s.parse()
                .map(Some)
                .map_err(|_| HttpError::UnsupportedVersion(s.chars().take(64).collect()))
        }
    }
}

/// A header's value as text, if present and valid.
pub fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, HeaderValue::from_static(v));
        }
        m
    }

    #[test]
    fn host_names_lose_their_port_and_brackets() {
        for (authority, host) in [
            ("acme.localhost:8080", "acme.localhost"),
            ("acme.example", "acme.example"),
            ("127.0.0.1:9", "127.0.0.1"),
            ("[::1]:8080", "::1"),
            ("[::1]", "::1"),
            ("host:notaport", "host:notaport"),
        ] {
            assert_eq!(host_name(authority), host, "{authority}");
        }
    }

    #[test]
    fn accept_needs_both_media_types_or_wildcards() {
        assert!(
            check_post_accept(&h(&[("accept", "application/json, text/event-stream")])).is_ok()
        );
        assert!(check_post_accept(&h(&[("accept", "*/*")])).is_ok());
        assert!(check_post_accept(&h(&[("accept", "application/json")])).is_err());
        assert!(check_post_accept(&h(&[])).is_err());
        assert!(check_get_accept(&h(&[("accept", "text/event-stream;q=1")])).is_ok());
        assert!(check_get_accept(&h(&[("accept", "application/json")])).is_err());
    }

    #[test]
    fn default_origin_policy_allows_only_loopback() {
        let p = OriginPolicy {
            origins: vec![],
            loopback_listener: true,
        };
        assert!(
            p.check(&h(&[
                ("origin", "http://localhost:6274"),
                ("host", "127.0.0.1:8080")
            ]))
            .is_ok()
        );
        assert!(p.check(&h(&[("origin", "http://evil.example")])).is_err());
        assert!(p.check(&h(&[("host", "evil.example:8080")])).is_err());
        assert!(p.check(&h(&[("host", "[::1]:8080")])).is_ok());
        let listed = OriginPolicy {
            origins: vec!["https://app.example".into()],
            loopback_listener: false,
        };
        assert!(
            listed
                .check(&h(&[("origin", "https://app.example")]))
                .is_ok()
        );
        assert!(listed.check(&h(&[("origin", "http://localhost")])).is_err());
    }
}
