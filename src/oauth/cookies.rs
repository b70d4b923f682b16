//! The browser cookies that bind a flow to the browser that started it (the façade's login,
//! the per-user consent flow): one name per flow, HttpOnly, SameSite=Lax, and over https
//! `__Host-` and Secure.

use http::{HeaderMap, HeaderValue, header};

/// The prefix that, over https, forbids other hosts and paths to set the cookie.
const HOST_ONLY: &str = "__Host-";

/// The values of the cookies named `base…` (with or without `__Host-`) a request carries, at
/// most `max` of them.
pub(crate) fn values(headers: &HeaderMap, base: &str, max: usize) -> Vec<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .filter(|(k, _)| k.trim_start_matches(HOST_ONLY).starts_with(base))
        .take(max)
        .map(|(_, v)| v.to_owned())
        .collect()
}

/// The `Set-Cookie` value for cookie `base…` holding `value` (`max_age` 0 removes it). The
/// name carries part of the value's digest, so that two flows at once in one browser do not
/// overwrite each other and the removal names the same cookie.
pub(crate) fn set(base: &str, value: &str, max_age: u64, https: bool) -> Option<HeaderValue> {
    let (prefix, secure) = if https {
        (HOST_ONLY, "; Secure")
    } else {
        ("", "")
    };
    let name = format!("{prefix}{base}{}", &super::common::digest(value)[..12]);
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"
    ))
    .ok()
}
