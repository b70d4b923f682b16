//! `servers[].interceptors`: external HTTP hooks asked before a request goes upstream and
//! after its result comes back, each a validator (allow or deny) or a mutator (may also
//! replace the arguments or the result), with its own timeout, concurrency cap and fail mode.

use super::duration::HumanDuration;
use super::secret::ValueSource;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// Most hooks one server may have (each is a network round trip on every matching call).
pub const MAX_INTERCEPTORS: usize = 8;

/// One hook.
#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Interceptor {
    /// Names the hook in errors, audit records and metrics; unique within the server.
    pub name: String,
    /// Where the gateway POSTs the payload (http or https).
    pub url: String,
    /// What its answer may do.
    #[serde(default)]
    pub role: Role,
    /// When it is asked: before the request goes upstream, after its result comes back, or both.
    #[serde(default = "default_phases")]
    pub phases: Vec<Phase>,
    /// The methods it is asked about.
    #[serde(default = "default_methods")]
    pub methods: Vec<String>,
    /// Longest wait for its answer (a concurrency slot included).
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// What a call gets when the hook times out, cannot be reached or answers something it
    /// may not: `deny` (refused, the default) or `allow` (goes on as if allowed).
    #[serde(default)]
    pub on_error: OnHookError,
    /// Most calls asking this hook at once; one more waits for a slot within `timeout`.
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent: usize,
    /// Extra request headers (e.g. the hook's own credential); values may come from `env`
    /// or `file`.
    #[serde(default)]
    pub headers: BTreeMap<String, ValueSource>,
}

/// `interceptors[].role`, after the MCP Interceptors working group's split.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Allows or denies; an answer that replaces anything is a hook error.
    #[default]
    Validator,
    /// Allows (possibly with replaced arguments or result) or denies.
    Mutator,
}

impl Role {
    /// The name used in payloads and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Validator => "validator",
            Role::Mutator => "mutator",
        }
    }
}

/// `interceptors[].phases`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Before the request is sent upstream.
    Request,
    /// After the upstream's result, before the client sees it.
    Response,
}

impl Phase {
    /// The name used in payloads and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Request => "request",
            Phase::Response => "response",
        }
    }
}

/// `interceptors[].on_error`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnHookError {
    /// Refuse the call (fail closed).
    #[default]
    Deny,
    /// Go on as if the hook allowed it (fail open).
    Allow,
}

/// The methods a hook may be asked about: those that name one target and carry a result.
pub const HOOKED_METHODS: [&str; 3] = ["tools/call", "prompts/get", "resources/read"];

fn default_phases() -> Vec<Phase> {
    vec![Phase::Request]
}

fn default_methods() -> Vec<String> {
    HOOKED_METHODS.iter().map(|m| (*m).to_owned()).collect()
}

fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(2))
}

fn default_max_concurrent() -> usize {
    32
}

/// Checks one server's hooks; `field` is e.g. `servers[0].interceptors`.
pub fn check(field: &str, hooks: &[Interceptor], add: &mut dyn FnMut(String, String)) {
    if hooks.len() > MAX_INTERCEPTORS {
        add(
            field.to_owned(),
            format!("at most {MAX_INTERCEPTORS} interceptors per server"),
        );
    }
    let mut names = std::collections::HashSet::new();
    for (i, h) in hooks.iter().enumerate() {
        let at = format!("{field}[{i}]");
        if h.name.trim().is_empty() {
            add(format!("{at}.name"), "must not be empty".into());
        } else if !names.insert(h.name.as_str()) {
            add(
                format!("{at}.name"),
                format!("{:?} is used by another interceptor of this server", h.name),
            );
        }
        match reqwest::Url::parse(&h.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                if !u.username().is_empty() || u.password().is_some() {
                    add(
                        format!("{at}.url"),
                        "credentials in the URL would be logged; send them in `headers` from `env` or `file`".into(),
                    );
                }
            }
            _ => add(
                format!("{at}.url"),
                format!(
                    "{:?}: expected an http(s) URL such as http://127.0.0.1:9000/hook",
                    h.url
                ),
            ),
        }
        if h.phases.is_empty() {
            add(
                format!("{at}.phases"),
                "expected one or both of request, response".into(),
            );
        }
        if h.methods.is_empty() {
            add(
                format!("{at}.methods"),
                format!("expected some of {}", HOOKED_METHODS.join(", ")),
            );
        }
        for (j, m) in h.methods.iter().enumerate() {
            if !HOOKED_METHODS.contains(&m.as_str()) {
                add(
                    format!("{at}.methods[{j}]"),
                    format!(
                        "{m:?} cannot be intercepted; expected one of {}",
                        HOOKED_METHODS.join(", ")
                    ),
                );
            }
        }
        let t = h.timeout.0;
        if t < Duration::from_millis(10) || t > Duration::from_secs(60) {
            add(
                format!("{at}.timeout"),
                format!("{} is outside 10ms–60s", h.timeout),
            );
        }
        if h.max_concurrent == 0 || h.max_concurrent > 10_000 {
            add(format!("{at}.max_concurrent"), "expected 1 to 10000".into());
        }
        for name in h.headers.keys() {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                add(
                    format!("{at}.headers.{name}"),
                    "not a valid HTTP header name".into(),
                );
            }
        }
    }
}
