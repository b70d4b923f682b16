//! The access log of the MCP listener: one `gatehouse::access` line per HTTP request (client
//! address through trusted proxies, method, path without query, status, latency to the
//! response head, principal, user agent, trace id), and the request's span carrying that trace
//! id so that every log line of the request names it.

use crate::config::Cidr;
use crate::gateway::Gateway;
use http::HeaderMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// Longest user agent logged; the rest is cut.
const USER_AGENT_MAX: usize = 200;

/// The request's trace id, as a request extension set by the listener: handlers take it from
/// the request and hand it on in signatures (the audit ticket), not through task-locals.
#[derive(Clone, Debug)]
pub struct TraceId(pub Arc<str>);

impl TraceId {
    /// The trace id a request carries, when the access log gave it one.
    pub fn of(extensions: &http::Extensions) -> Option<Arc<str>> {
        extensions.get::<TraceId>().map(|t| t.0.clone())
    }
}

/// Where the principal's subject is left for the access line, as a request extension.
#[derive(Clone, Debug, Default)]
pub struct AccessSubject(Arc<OnceLock<String>>);

impl AccessSubject {
    /// Records who the request was authenticated as.
    pub fn set(&self, subject: &str) {
        let _ = self.0.set(subject.to_owned());
    }
}

/// Records the subject in the request's access line, if the request carries the slot.
pub fn record_subject(extensions: &http::Extensions, subject: &str) {
    if let Some(slot) = extensions.get::<AccessSubject>() {
        slot.set(subject);
    }
}

/// The trace id of a request: the one of a valid W3C `traceparent`, else a new one.
pub fn trace_id(headers: &HeaderMap) -> String {
    if let Some(id) = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_traceparent)
    {
        return id.to_owned();
    }
    let bytes: [u8; 16] = rand::random();
    crate::hex::encode(&bytes)
}

/// The trace-id field of `00-<32 hex>-<16 hex>-<2 hex>`; all-zero ids are invalid.
fn parse_traceparent(v: &str) -> Option<&str> {
    let mut parts = v.trim().split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let ok = hex(version, 2)
        && version != "ff"
        && hex(trace, 32)
        && trace.bytes().any(|b| b != b'0')
        && hex(parent, 16)
        && hex(flags, 2);
    ok.then_some(trace)
}

/// The client's address: the connection's peer, or, when the peer is a trusted proxy, the
/// nearest address in `X-Forwarded-For` (or `Forwarded: for=`) that is not a trusted proxy.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let mut hops: Vec<IpAddr> = Vec::new();
    for v in headers.get_all("forwarded") {
        let Ok(v) = v.to_str() else { continue };
        for element in v.split(',') {
            for pair in element.split(';') {
                let Some((k, val)) = pair.trim().split_once('=') else {
                    continue;
                };
                if k.trim().eq_ignore_ascii_case("for")
                    && let Some(ip) = forwarded_ip(val)
                {
                    hops.push(ip);
                }
            }
        }
    }
    if hops.is_empty() {
        for v in headers.get_all("x-forwarded-for") {
            let Ok(v) = v.to_str() else { continue };
            hops.extend(v.split(',').filter_map(|s| forwarded_ip(s.trim())));
        }
    }
    // Right to left: each trusted proxy vouches for the hop before it.
    let mut client = peer;
    for ip in hops.into_iter().rev() {
        client = ip;
        if !is_trusted(ip) {
            break;
        }
    }
    client
}

/// An address from a forwarding header: `1.2.3.4`, `1.2.3.4:80`, `"[2001:db8::1]:80"`.
fn forwarded_ip(v: &str) -> Option<IpAddr> {
    let v = v.trim().trim_matches('"');
    if let Ok(ip) = v.parse() {
        return Some(ip);
    }
    if let Ok(sa) = v.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    v.strip_prefix('[')
        .and_then(|r| r.split_once(']'))
        .and_then(|(ip, _)| ip.parse().ok())
}

/// A header value fit for a log line: cut to `max` characters, control characters escaped.
fn printable(v: &str, max: usize) -> String {
    let mut out = String::with_capacity(v.len().min(max));
    for (i, c) in v.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// What the access line needs from the request, taken before it is handled.
pub struct Pending {
    started: Instant,
    client: IpAddr,
    method: http::Method,
    path: String,
    user_agent: String,
    /// The request's trace id.
    pub trace_id: String,
    subject: AccessSubject,
}

/// Starts the line of a request on the MCP listener; `None` when the access log is off.
pub fn start(
    gateway: &Gateway,
    peer: SocketAddr,
    req: &mut http::Request<hyper::body::Incoming>,
) -> Option<Pending> {
    let rt = gateway.runtime();
    if !rt.config.log.access.enabled {
        return None;
    }
    let headers = req.headers();
    let subject = AccessSubject::default();
    let pending = Pending {
        started: Instant::now(),
        client: client_address(peer.ip(), headers, &rt.trusted_proxies),
        method: req.method().clone(),
        path: printable(req.uri().path(), 512),
        user_agent: headers
            .get(http::header::USER_AGENT)
            .map(|v| printable(&String::from_utf8_lossy(v.as_bytes()), USER_AGENT_MAX))
            .unwrap_or_default(),
        trace_id: trace_id(headers),
        subject: subject.clone(),
    };
    req.extensions_mut().insert(subject);
    Some(pending)
}

impl Pending {
    /// Writes the line, once the response head is known.
    pub fn finish(self, status: http::StatusCode) {
        tracing::info!(
            target: "gatehouse::access",
            client = %self.client,
            method = %self.method,
            path = %self.path,
            status = status.as_u16(),
            latency_ms = self.started.elapsed().as_secs_f64() * 1000.0,
            subject = self.subject.0.get().map(String::as_str).unwrap_or("-"),
            user_agent = %self.user_agent,
            trace_id = %self.trace_id,
            "request"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn forwarding_headers_count_only_from_trusted_proxies() {
        let trusted = [Cidr::parse("10.0.0.0/8").unwrap()];
        let xff = headers(&[("x-forwarded-for", "6.6.6.6, 203.0.113.9, 10.0.0.2")]);
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let stranger: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(
            client_address(proxy, &xff, &trusted),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_address(stranger, &xff, &trusted), stranger);
        assert_eq!(client_address(proxy, &xff, &[]), proxy);
        let fwd = headers(&[("forwarded", "for=\"[2001:db8::7]:4711\";proto=https")]);
        assert_eq!(
            client_address(proxy, &fwd, &trusted),
            "2001:db8::7".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn a_valid_traceparent_gives_its_trace_id_and_anything_else_a_new_one() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        let h = headers(&[("traceparent", &format!("00-{id}-00f067aa0ba902b7-01"))]);
        assert_eq!(trace_id(&h), id);
        let zero = headers(&[(
            "traceparent",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        )]);
        let fresh = trace_id(&zero);
        assert_eq!(fresh.len(), 32);
        assert_ne!(fresh, "0".repeat(32));
    }

    #[test]
    fn user_agents_are_cut_and_control_characters_escaped() {
        assert_eq!(printable("a\nb\u{1b}[31m", 100), "a\\nb\\u{1b}[31m");
        assert_eq!(printable(&"x".repeat(300), 200).chars().count(), 201);
    }
}
