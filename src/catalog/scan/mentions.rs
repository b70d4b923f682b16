//! Rules that judge a mention by its sentence: whether a URL or e-mail address is a destination
//! data could be sent to or just a link, and whether text naming another tool tries to change
//! how that tool behaves.

use regex::Regex;

use super::ci;
use super::rules::EXFIL_HOSTS;
use super::text::Norm;

/// A byte range `[start, end)`.
type Span = (usize, usize);

/// Compiled regular expressions the special-purpose rules use.
#[derive(Debug, Clone)]
pub(super) struct Special {
    url: Regex,
    email: Regex,
    exfil_host: Regex,
    send_before: Regex,
    fetch_before: Regex,
    markdown_image: Regex,
    email_send: Regex,
    email_contact: Regex,
    email_example: Regex,
    behaviour: Regex,
    passive_call: Regex,
    any_other_tool: Regex,
}

impl Special {
    /// Compiles the patterns (once per scanner).
    pub(super) fn new() -> Self {
        let hosts = EXFIL_HOSTS
            .iter()
            .flat_map(|row| row.split_whitespace())
            .map(regex::escape)
            .collect::<Vec<_>>()
            .join("|");
        Special {
            url: ci(r"\b(?:https?|ftp|wss?)://[^\s<>\x22'`)\]]+"),
            email: ci(r"\b[a-z0-9._%+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}\b"),
            exfil_host: ci(&format!(r"\b(?:[a-z0-9-]+\.)*(?:{hosts})\b")),
            send_before: ci(
                r"\b(?:send|sends|sending|sent|post|posts|posting|upload|uploads|uploading|forward|forwards|forwarding|submit|submits|transmit|transmits|exfiltrate|leak|relay|beacon|mirror|sync|bcc|cc|report|pipe|stream|deliver|log)\b[^.\n]*\b(?:to|at|into)\s+(?:the\s+)?(?:(?:url|endpoint|address|server|webhook|host|link|api|collector|service)\s*)?:?\s*[`'\x22(<]?\s*$",
            ),
            fetch_before: ci(
                r"\b(?:always|first|also|then|must|should|immediately)\s+(?:call|fetch|visit|open|request|load|ping|get|curl|wget|post\s+to|send\s+(?:it|them|this|everything)\s+to)\s+[`'\x22(<]?\s*$",
            ),
            markdown_image: ci(r"!\[[^\]\n]*\]\(\s*$"),
            email_send: ci(
                r"\b(?:bcc|cc|blind|forward|forwards|forwarded|forwarding|copy|copies|mirror|exfiltrate|always|also|secretly|silently|every|all)\b",
            ),
            email_contact: ci(
                r"\b(?:contact|questions?|support|help|feedback|maintained\s+by|maintainers?|author|authors|issues|bugs?)\b",
            ),
            email_example: ci(r"\b(?:e\.g\.|eg\.|for\s+example|for\s+instance|such\s+as|example)"),
            behaviour: ci(
                r"\b(?:always|never|instead|must|should|shall|whenever|when|before|after|also|additionally|first|bcc|cc|redirect(?:s|ed)?|replace[sd]?|override[sd]?|supersedes?|deprecated|prefer|rather\s+than|do\s+not|don'?t|ensure|make\s+sure|required|requires|change[sd]?|modif(?:y|ies|ied)|alter(?:s|ed)?|forward|append|send\s+a\s+copy|copy|important)\b",
            ),
            passive_call: ci(
                r"\b(?:when(?:ever)?|each\s+time|every\s+time|any\s+time|before|after|once|if)\s+(the\s+|a\s+|an\s+|any\s+|every\s+|another\s+|other\s+|all\s+)?([`'\x22])?([a-z0-9_.:/-]+)([`'\x22])?\s+((?:tool|function|command)s?\s+)?(?:is|are|gets|get|has\s+been|have\s+been)\s+(?:being\s+)?(called|used|invoked|run|executed|triggered)\b",
            ),
            any_other_tool: ci(r"\b(?:any|all|every)\s+other\s+(?:tools?|functions?)\b"),
        }
    }

    /// The first suspicious destination and the first plain link in a string (normalized
    /// byte ranges).
    pub(super) fn links(&self, norm: &Norm, example_field: bool) -> (Option<Span>, Option<Span>) {
        let t = norm.text.as_str();
        let sp = self;
        let mut bad = None;
        let mut link = None;
        let mut url_spans = Vec::new();
        for m in sp.url.find_iter(t) {
            let s = m.start();
            let e = s + m
                .as_str()
                .trim_end_matches(['.', ',', ';', ':', '!', '?'])
                .len();
            url_spans.push((s, e));
            let url = &t[s..e];
            let (a, _) = sentence(t, s, e);
            let before = &t[a..s];
            let suspicious = url_host_is_suspicious(url)
                || url_has_placeholder(url)
                || sp.markdown_image.is_match(before)
                || (!example_field
                    && (sp.send_before.is_match(before) || sp.fetch_before.is_match(before)));
            if suspicious {
                bad.get_or_insert((s, e));
            } else {
                link.get_or_insert((s, e));
            }
        }
        let inside = |s: usize, e: usize| url_spans.iter().any(|&(a, z)| s < z && e > a);
        for m in sp.exfil_host.find_iter(t) {
            if !inside(m.start(), m.end()) {
                bad.get_or_insert((m.start(), m.end()));
            }
        }
        for m in sp.email.find_iter(t) {
            let (s, e) = (m.start(), m.end());
            if inside(s, e) || t[e..].starts_with(':') {
                continue; // part of a URL, or an scp-style git remote (git@host:owner/repo)
            }
            let domain = m
                .as_str()
                .rsplit('@')
                .next()
                .unwrap_or("")
                .to_ascii_lowercase();
            let (a, z) = sentence(t, s, e);
            let sent = &t[a..z];
            let sending = sp.email_send.is_match(sent) || sp.send_before.is_match(&t[a..s]);
            let harmless_context = reserved_domain(&domain)
                || example_field
                || sp.email_example.is_match(sent)
                || sp.email_contact.is_match(sent);
            if harmless_context && !sending {
                link.get_or_insert((s, e));
            } else {
                bad.get_or_insert((s, e));
            }
        }
        (bad, link)
    }

    /// The first mention of another upstream's tool (or of tools in general) that comes with
    /// words that change behaviour.
    pub(super) fn shadowing(
        &self,
        norm: &Norm,
        own: &str,
        others: &[&str],
    ) -> Option<(usize, usize)> {
        let t = norm.text.as_str();
        let lower = t.to_ascii_lowercase();
        let bytes = lower.as_bytes();
        let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
        for tool in others {
            let tl = tool.to_ascii_lowercase();
            if tl.len() < 3 {
                continue;
            }
            let plain_word = looks_like_plain_word(tool);
            let mut from = 0;
            while let Some(i) = lower[from..].find(&tl) {
                let (s, e) = (from + i, from + i + tl.len());
                from = e;
                if (s > 0 && is_word(bytes[s - 1])) || (e < bytes.len() && is_word(bytes[e])) {
                    continue;
                }
                if plain_word {
                    let quoted = s > 0
                        && e < bytes.len()
                        && matches!(bytes[s - 1], b'`' | b'\'' | b'"')
                        && bytes[e] == bytes[s - 1];
                    let rest = lower[e..].trim_start_matches(['`', '\'', '"']).trim_start();
                    if !quoted && !rest.starts_with("tool") && !rest.starts_with("function") {
                        continue;
                    }
                }
                let (a, z) = sentence(t, s, e);
                if self.behaviour.is_match(&t[a..z]) {
                    return Some((s, e));
                }
            }
        }
        for c in self.passive_call.captures_iter(t) {
            let whole = c.get(0).expect("group 0");
            let det = c
                .get(1)
                .map_or("", |m| m.as_str())
                .trim()
                .to_ascii_lowercase();
            let quoted = c.get(2).is_some();
            let name = c.get(3).map_or("", |m| m.as_str());
            let suffixed = c.get(5).is_some();
            let generic = matches!(
                name.to_ascii_lowercase().as_str(),
                "this"
                    | "it"
                    | "that"
                    | "tool"
                    | "tools"
                    | "function"
                    | "functions"
                    | "command"
                    | "the"
            );
            let about_others =
                matches!(det.as_str(), "any" | "every" | "another" | "other" | "all");
            if generic {
                if about_others {
                    return Some((whole.start(), whole.end()));
                }
                continue;
            }
            if name.eq_ignore_ascii_case(own) {
                continue;
            }
            // "when `dry_run` is used" describes an option; "when send_money is called" or
            // "when the X tool is used" describes a tool.
            let call_verb = c.get(6).is_some_and(|m| {
                !matches!(m.as_str().to_ascii_lowercase().as_str(), "used" | "run")
            });
            let tool_like = suffixed
                || others.iter().any(|o| o.eq_ignore_ascii_case(name))
                || (call_verb && (quoted || looks_like_identifier(name)));
            if tool_like {
                return Some((whole.start(), whole.end()));
            }
        }
        self.any_other_tool.find(t).map(|m| (m.start(), m.end()))
    }
}

/// The sentence around `[s, e)`: bounded by a newline or by `.`, `!`, `?` followed by
/// whitespace (so URLs and file names stay whole).
fn sentence(t: &str, s: usize, e: usize) -> (usize, usize) {
    let b = t.as_bytes();
    let mut a = s;
    while a > 0 {
        let c = b[a - 1];
        if c == b'\n'
            || (matches!(c, b'.' | b'!' | b'?') && a < b.len() && b[a].is_ascii_whitespace())
        {
            break;
        }
        a -= 1;
    }
    let mut z = e;
    while z < b.len() {
        let c = b[z];
        if c == b'\n' {
            break;
        }
        z += 1;
        if matches!(c, b'.' | b'!' | b'?') && (z == b.len() || b[z].is_ascii_whitespace()) {
            break;
        }
    }
    (a, z)
}

/// A single lowercase word such as `search`: too common to count as a tool mention unless it
/// is quoted or followed by "tool".
fn looks_like_plain_word(name: &str) -> bool {
    name.chars().all(|c| c.is_ascii_lowercase())
}

/// `send_email`, `github.create-issue`, `getUser`, `fetch2`.
fn looks_like_identifier(name: &str) -> bool {
    name.chars()
        .any(|c| matches!(c, '_' | '-' | '.' | ':' | '/') || c.is_ascii_digit())
        || name
            .as_bytes()
            .windows(2)
            .any(|w| w[0].is_ascii_lowercase() && w[1].is_ascii_uppercase())
}

// ---------------------------------------------------------------------------------------------
// Links

fn reserved_domain(domain: &str) -> bool {
    let d = domain.trim_end_matches('.');
    ["example.com", "example.org", "example.net"]
        .iter()
        .any(|r| d == *r || d.ends_with(&format!(".{r}")))
        || [".example", ".test", ".invalid", ".localhost"]
            .iter()
            .any(|s| d.ends_with(s))
        || d == "localhost"
}

fn url_host_is_suspicious(url: &str) -> bool {
    let Ok(parsed) = url::Url::parse(url) else {
        return false;
    };
    let path = parsed.path().to_ascii_lowercase();
    match parsed.host() {
        Some(url::Host::Domain(d)) => {
            let d = d.to_ascii_lowercase();
            EXFIL_HOSTS
                .iter()
                .flat_map(|row| row.split_whitespace())
                .any(|h| d == h || d.ends_with(&format!(".{h}")))
                || d.ends_with(".onion")
                || ((d == "discord.com" || d == "discordapp.com")
                    && path.starts_with("/api/webhooks"))
        }
        Some(url::Host::Ipv4(ip)) => !ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => !ip.is_loopback(),
        None => false,
    }
}

/// A query that expects data to be filled in: `?data={…}`, `?q=<…>`, `?d=$X`, or ending in `=`.
fn url_has_placeholder(url: &str) -> bool {
    let Some((_, query)) = url.split_once('?') else {
        return false;
    };
    query.ends_with('=') || query.contains(['{', '<', '$', '[']) || query.contains("%s")
}
