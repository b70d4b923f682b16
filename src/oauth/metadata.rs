//! Client metadata (RFC 7591 §2) as Gatehouse keeps it, and the rules every field and redirect
//! URI must pass, whether it came from a registration request or a fetched metadata document.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use url::{Host, Url};

/// Longest redirect URI, client_uri or logo_uri accepted: browsers and logs choke on more.
const MAX_URI_LEN: usize = 2000;
/// Most redirect URIs one client may list; real clients use one to three.
const MAX_REDIRECT_URIS: usize = 20;
/// Longest client_name, in characters, after control characters are removed.
pub const MAX_CLIENT_NAME_CHARS: usize = 200;
/// Longest scope string.
const MAX_SCOPE_LEN: usize = 1000;
/// Longest array of grant or response types.
const MAX_TYPES: usize = 10;

/// Schemes that run code or read local data when a browser is sent to them.
const FORBIDDEN_SCHEMES: &[&str] = &[
    "javascript",
    "data",
    "file",
    "vbscript",
    "blob",
    "about",
    "filesystem",
    "view-source",
    "ftp",
    "ws",
    "wss",
];

/// How a client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// A public client: no secret, PKCE alone binds the code to it.
    None,
    /// The secret in HTTP Basic authentication.
    ClientSecretBasic,
    /// The secret in the form body.
    ClientSecretPost,
}

impl AuthMethod {
    /// The RFC 7591 name.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::None => "none",
            AuthMethod::ClientSecretBasic => "client_secret_basic",
            AuthMethod::ClientSecretPost => "client_secret_post",
        }
    }

    fn parse(s: &str) -> Option<AuthMethod> {
        [
            AuthMethod::None,
            AuthMethod::ClientSecretBasic,
            AuthMethod::ClientSecretPost,
        ]
        .into_iter()
        .find(|m| m.as_str() == s)
    }
}

/// A client's validated metadata; every string in it has passed the rules of this module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientMetadata {
    /// The client's identifier (a URL for metadata documents, `gh_…` for registered clients).
    pub client_id: String,
    /// Where authorization responses may be sent; never empty.
    pub redirect_uris: Vec<String>,
    /// Name to show on the consent page, control characters removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_name: Option<String>,
    /// The client's home page (https).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_uri: Option<String>,
    /// The client's logo (https).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logo_uri: Option<String>,
    /// A subset of `authorization_code`, `refresh_token`; always has `authorization_code`.
    pub grant_types: Vec<String>,
    /// Always `["code"]`.
    pub response_types: Vec<String>,
    /// Scopes the client says it may ask for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// How it authenticates at the token endpoint.
    pub token_endpoint_auth_method: AuthMethod,
}

/// A field of client metadata that breaks a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    /// `redirect_uris` is absent or empty.
    #[error("redirect_uris is required: a non-empty array of absolute URIs")]
    MissingRedirectUris,
    /// One redirect URI breaks a rule.
    #[error("redirect_uris[{index}] {reason}")]
    BadRedirectUri {
        /// Its position in the array.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// `token_endpoint_auth_method` names a method this kind of client may not use.
    #[error("token_endpoint_auth_method {found} is not accepted here; use {allowed}")]
    AuthMethod {
        /// The method asked for (sanitised).
        found: String,
        /// The accepted methods, for the message.
        allowed: String,
    },
    /// Any other field breaks a rule.
    #[error("{field} {reason}")]
    BadField {
        /// The field's name.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// What a caller of [`parse_metadata`] accepts beyond the common rules.
#[derive(Debug, Clone, Copy)]
pub struct FieldRules<'a> {
    /// Token endpoint authentication methods this kind of client may use.
    pub auth_methods: &'a [AuthMethod],
    /// The method when the field is absent.
    pub default_auth_method: AuthMethod,
    /// Hosts allowed in https redirect URIs; empty allows any host.
    pub redirect_hosts: &'a [String],
}

/// Validates the fields of a registration request or metadata document (unknown fields are
/// ignored, as RFC 7591 §2 asks); `client_id` is set by the caller.
pub fn parse_metadata(
    obj: &Map<String, Value>,
    client_id: &str,
    rules: &FieldRules<'_>,
) -> Result<ClientMetadata, MetadataError> {
    let redirect_uris = match obj.get("redirect_uris") {
        None | Some(Value::Null) => return Err(MetadataError::MissingRedirectUris),
        Some(Value::Array(a)) if a.is_empty() => return Err(MetadataError::MissingRedirectUris),
        Some(Value::Array(a)) if a.len() > MAX_REDIRECT_URIS => {
            return Err(MetadataError::BadField {
                field: "redirect_uris",
                reason: format!(
                    "lists {} URIs; at most {MAX_REDIRECT_URIS} are accepted",
                    a.len()
                ),
            });
        }
        Some(Value::Array(a)) => {
            let mut out = Vec::with_capacity(a.len());
            for (index, v) in a.iter().enumerate() {
                let Value::String(uri) = v else {
                    return Err(MetadataError::BadRedirectUri {
                        index,
                        reason: "is not a string".into(),
                    });
                };
                check_redirect_uri(uri, rules.redirect_hosts)
                    .map_err(|reason| MetadataError::BadRedirectUri { index, reason })?;
                out.push(uri.clone());
            }
            out
        }
        Some(_) => return Err(MetadataError::MissingRedirectUris),
    };
    let token_endpoint_auth_method = match optional_string(obj, "token_endpoint_auth_method")? {
        None => rules.default_auth_method,
        Some(s) => AuthMethod::parse(s)
            .filter(|m| rules.auth_methods.contains(m))
            .ok_or_else(|| MetadataError::AuthMethod {
                found: shown(s),
                allowed: rules
                    .auth_methods
                    .iter()
                    .map(|m| m.as_str())
                    .collect::<Vec<_>>()
                    .join(" or "),
            })?,
    };
    let grant_types = string_set(
        obj,
        "grant_types",
        &["authorization_code", "refresh_token"],
        "authorization_code",
    )?;
    if !grant_types.iter().any(|g| g == "authorization_code") {
        return Err(MetadataError::BadField {
            field: "grant_types",
            reason: "must include authorization_code, the only flow this gateway runs".into(),
        });
    }
    let response_types = string_set(obj, "response_types", &["code"], "code")?;
    let client_name = match optional_string(obj, "client_name")? {
        None => None,
        Some(raw) => clean_name(raw)?,
    };
    let scope = optional_string(obj, "scope")?
        .map(check_scope)
        .transpose()?
        .filter(|s| !s.is_empty());
    Ok(ClientMetadata {
        client_id: client_id.to_owned(),
        redirect_uris,
        client_name,
        client_uri: optional_https(obj, "client_uri")?,
        logo_uri: optional_https(obj, "logo_uri")?,
        grant_types,
        response_types,
        scope,
        token_endpoint_auth_method,
    })
}

/// Checks one redirect URI: absolute, no fragment, no whitespace, no userinfo, not a scheme that
/// runs code; http only to loopback (RFC 8252 §7.3); https hosts limited by `https_hosts` when
/// it is not empty; other (private-use, RFC 8252 §7.1) schemes pass. Err holds the reason.
pub fn check_redirect_uri(uri: &str, https_hosts: &[String]) -> Result<(), String> {
    if uri.len() > MAX_URI_LEN {
        return Err(format!("is longer than {MAX_URI_LEN} bytes"));
    }
    // The URL parser silently drops tabs and newlines; the stored string must be what is matched.
    if uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("contains whitespace or control characters".into());
    }
    if uri.contains('#') {
        return Err("must not contain a fragment (#)".into());
    }
    let url = Url::parse(uri).map_err(|e| format!("is not an absolute URI ({e})"))?;
    let scheme = url.scheme();
    if FORBIDDEN_SCHEMES.contains(&scheme) {
        return Err(format!("uses the scheme {scheme}:, which is never allowed"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain a user name or password".into());
    }
    match scheme {
        "http" if url.host().is_some_and(|h| is_loopback_host(&h)) => Ok(()),
        "http" => Err(
            "uses http:// on a host other than loopback (127.0.0.1, [::1], localhost); use https://"
                .into(),
        ),
        "https" => {
            let host = url.host_str().unwrap_or_default();
            if https_hosts.is_empty() || https_hosts.iter().any(|h| host_matches(h, host)) {
                Ok(())
            } else {
                Err(format!(
                    "has the host {host}, which is not in this gateway's allowed redirect hosts"
                ))
            }
        }
        _ => Ok(()),
    }
}

/// Whether `requested` may be used as the redirect URI of a client that registered `registered`:
/// the same string, or for an http loopback URI the same URI on another port (RFC 8252 §7.3).
pub fn redirect_matches(registered: &str, requested: &str) -> bool {
    if registered == requested {
        return true;
    }
    let (Ok(reg), Ok(req)) = (Url::parse(registered), Url::parse(requested)) else {
        return false;
    };
    // Only a canonical request may differ, and only in its port: `..`, case or escapes that the
    // parser would normalise must not make two different strings match.
    req.as_str() == requested
        && reg.scheme() == "http"
        && req.scheme() == "http"
        && reg.host().is_some_and(|h| is_loopback_host(&h))
        && reg.host() == req.host()
        && reg.path() == req.path()
        && reg.query() == req.query()
        && reg.fragment().is_none()
        && req.fragment().is_none()
        && req.username().is_empty()
        && req.password().is_none()
}

/// Loopback as RFC 8252 means it: the IPv4 and IPv6 loopback literals and the name localhost.
pub fn is_loopback_host(host: &Host<&str>) -> bool {
    match host {
        Host::Ipv4(ip) => ip.is_loopback(),
        Host::Ipv6(ip) => ip.is_loopback(),
        Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
    }
}

/// `pattern` is a host name, or `*.example.com` for any subdomain (not the apex).
fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => {
            host.len() > suffix.len() + 1 && {
                let (head, tail) = host.split_at(host.len() - suffix.len());
                head.ends_with('.') && tail.eq_ignore_ascii_case(suffix)
            }
        }
        None => pattern.eq_ignore_ascii_case(host),
    }
}

/// `s` safe to put in an error description (RFC 6749 §5.2 forbids `"` and `\`) and a log line:
/// printable ASCII only, at most 80 characters.
pub fn shown(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(80)
        .map(|c| match c {
            ' '..='~' if c != '"' && c != '\\' => c,
            _ => '?',
        })
        .collect();
    if s.chars().count() > 80 {
        out.push('…');
    }
    out
}

/// Removes control and bidirectional-override characters (which let a name spoof another on the
/// consent page) and surrounding spaces; an empty result is treated as no name.
fn clean_name(raw: &str) -> Result<Option<String>, MetadataError> {
    let spoofing = |c: char| matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}');
    let cleaned: String = raw
        .chars()
        .filter(|&c| !c.is_control() && !spoofing(c))
        .collect();
    let cleaned = cleaned.trim();
    if cleaned.chars().count() > MAX_CLIENT_NAME_CHARS {
        return Err(MetadataError::BadField {
            field: "client_name",
            reason: format!("is longer than {MAX_CLIENT_NAME_CHARS} characters"),
        });
    }
    Ok((!cleaned.is_empty()).then(|| cleaned.to_owned()))
}

/// RFC 6749 §3.3: scope tokens of printable ASCII except `"` and `\`, separated by spaces.
fn check_scope(s: &str) -> Result<String, MetadataError> {
    let bad = |reason: String| MetadataError::BadField {
        field: "scope",
        reason,
    };
    if s.len() > MAX_SCOPE_LEN {
        return Err(bad(format!("is longer than {MAX_SCOPE_LEN} bytes")));
    }
    if let Some(c) = s
        .chars()
        .find(|&c| !matches!(c, ' ' | '!' | '#'..='[' | ']'..='~'))
    {
        return Err(bad(format!(
            "contains the character U+{:04X}; scope tokens are printable ASCII without \" or \\",
            c as u32
        )));
    }
    Ok(s.split(' ')
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join(" "))
}

fn optional_string<'a>(
    obj: &'a Map<String, Value>,
    field: &'static str,
) -> Result<Option<&'a str>, MetadataError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(MetadataError::BadField {
            field,
            reason: "must be a string".into(),
        }),
    }
}

/// An optional https URL shown on the consent page: anything else could run script in a link.
fn optional_https(
    obj: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<String>, MetadataError> {
    let Some(s) = optional_string(obj, field)? else {
        return Ok(None);
    };
    let bad = |reason: &str| MetadataError::BadField {
        field,
        reason: reason.into(),
    };
    if s.len() > MAX_URI_LEN {
        return Err(bad("is too long"));
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("contains whitespace or control characters"));
    }
    match Url::parse(s) {
        Ok(u) if u.scheme() == "https" && u.username().is_empty() && u.password().is_none() => {
            Ok(Some(s.to_owned()))
        }
        _ => Err(bad(
            "must be an https:// URL without a user name or password",
        )),
    }
}

/// An optional array of strings, each in `allowed`, without duplicates; `[default]` when absent.
fn string_set(
    obj: &Map<String, Value>,
    field: &'static str,
    allowed: &[&str],
    default: &str,
) -> Result<Vec<String>, MetadataError> {
    let bad = |reason: String| MetadataError::BadField { field, reason };
    let items = match obj.get(field) {
        None | Some(Value::Null) => return Ok(vec![default.to_owned()]),
        Some(Value::Array(a)) if a.is_empty() => return Ok(vec![default.to_owned()]),
        Some(Value::Array(a)) if a.len() > MAX_TYPES => {
            return Err(bad(format!("lists more than {MAX_TYPES} values")));
        }
        Some(Value::Array(a)) => a,
        Some(_) => return Err(bad("must be an array of strings".into())),
    };
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    for v in items {
        let Value::String(s) = v else {
            return Err(bad("must be an array of strings".into()));
        };
        if !allowed.contains(&s.as_str()) {
            return Err(bad(format!(
                "contains {}; only {} supported",
                shown(s),
                allowed.join(" and ")
            )));
        }
        if !out.contains(s) {
            out.push(s.clone());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
