// The body of the `uri_template` fuzz target (fuzz/fuzz_targets/uri_template.rs), included there and by
// tests/fuzz_seeds.rs, which replays every seed through it in the ordinary test run.

use gatehouse::catalog::template::{CompiledTemplate, MAX_URI_BYTES};

const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// Whether `name` is an RFC 6570 varspec: varname (ALPHA / DIGIT / "_" / "."), optionally
/// followed by `*` or `:` and a length.
fn valid_varspec(name: &str) -> bool {
    let base = match name.split_once(':') {
        Some((base, len)) => {
            if len.is_empty() || len.len() > 4 || !len.bytes().all(|b| b.is_ascii_digit()) {
                return false;
            }
            base
        }
        None => name.strip_suffix('*').unwrap_or(name),
    };
    !base.is_empty()
        && !base.starts_with('.')
        && base
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
}

/// The expansion of `template` with short alphanumeric values drawn from `seed`; `None` when
/// the template is not one RFC 6570 defines.
fn expand(template: &str, seed: &[u8]) -> Option<String> {
    let mut next = 0usize;
    let mut value = || {
        let at = |i: usize| seed.get(i % seed.len().max(1)).copied().unwrap_or(0);
        let len = 1 + usize::from(at(next) % 4);
        let v: String = (1..=len)
            .map(|k| char::from(ALNUM[usize::from(at(next + k)) % ALNUM.len()]))
            .collect();
        next += len + 1;
        v
    };
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}')? + open;
        let expr = &rest[open + 1..close];
        rest = &rest[close + 1..];
        let (op, vars) = match expr.chars().next()? {
            c @ ('+' | '#' | '.' | '/' | ';' | '?' | '&') => (Some(c), &expr[1..]),
            _ => (None, expr),
        };
        let names: Vec<&str> = vars.split(',').collect();
        if !names.iter().all(|n| valid_varspec(n)) {
            return None;
        }
        let bare = |n: &str| {
            n.split(':')
                .next()
                .unwrap()
                .trim_end_matches('*')
                .to_owned()
        };
        let values: Vec<(String, String)> = names.iter().map(|n| (bare(n), value())).collect();
        let plain = |sep: &str| {
            values
                .iter()
                .map(|(_, v)| v.as_str())
                .collect::<Vec<_>>()
                .join(sep)
        };
        let named = |sep: &str| {
            values
                .iter()
                .map(|(n, v)| format!("{n}={v}"))
                .collect::<Vec<_>>()
                .join(sep)
        };
        match op {
            None | Some('+') => out.push_str(&plain(",")),
            Some('#') => out.push_str(&format!("#{}", plain(","))),
            Some('.') => out.push_str(&format!(".{}", plain("."))),
            Some('/') => out.push_str(&format!("/{}", plain("/"))),
            Some(';') => out.push_str(&format!(";{}", named(";"))),
            Some('?') => out.push_str(&format!("?{}", named("&"))),
            Some('&') => out.push_str(&format!("&{}", named("&"))),
            Some(_) => unreachable!(),
        }
    }
    if rest.contains('}') {
        return None;
    }
    out.push_str(rest);
    Some(out)
}

/// The matcher's own refusal of URIs that climb out of a path (dot segments, encoded or
/// backslash separators), restated.
fn climbs(uri: &str) -> bool {
    let lower = uri.to_ascii_lowercase();
    if ["%2f", "%5c", "%2e", "\\"]
        .iter()
        .any(|s| lower.contains(s))
    {
        return true;
    }
    let path = lower.split(['?', '#']).next().unwrap_or_default();
    path.split('/').any(|seg| seg == "." || seg == "..")
}

pub fn fuzz_one(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (template, rest) = text.split_once('\n').unwrap_or((text, ""));
    let Some(compiled) = CompiledTemplate::new(template) else {
        return;
    };
    let matched = compiled.matches(rest);
    if climbs(rest) || rest.len() > MAX_URI_BYTES {
        assert!(
            !matched,
            "{rest:?} climbs or is too long, yet matches {template:?}"
        );
    }
    if let Some(uri) = expand(template, rest.as_bytes())
        && !climbs(&uri)
        && uri.len() <= MAX_URI_BYTES
    {
        assert!(
            compiled.matches(&uri),
            "{template:?} expands to {uri:?}, which does not match"
        );
    }
}
