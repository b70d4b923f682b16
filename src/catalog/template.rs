//! Whether a resource URI is one an approved RFC 6570 URI template can produce, so that a
//! `resources/read` of a templated resource is allowed exactly when its template is approved.
//! Templates become anchored regular expressions (linear-time matching, whatever the input),
//! and URIs that climb out of a path (`..`, encoded slashes) never match.

use regex::Regex;

/// Longest URI matched against templates; longer ones match nothing.
pub const MAX_URI_BYTES: usize = 4096;
/// Most expressions in one template; a template with more matches nothing.
const MAX_EXPRESSIONS: usize = 32;

/// A template compiled for matching.
#[derive(Debug, Clone)]
pub struct CompiledTemplate(Regex);

impl CompiledTemplate {
    /// Compiles `template`; `None` when it is malformed or too complex.
    pub fn new(template: &str) -> Option<CompiledTemplate> {
        let mut pattern = String::from("^");
        let mut rest = template;
        let mut expressions = 0;
        while !rest.is_empty() {
            match rest.find('{') {
                Some(0) => {
                    let end = rest.find('}')?;
                    let expr = &rest[1..end];
                    expressions += 1;
                    if expressions > MAX_EXPRESSIONS || expr.is_empty() {
                        return None;
                    }
                    pattern.push_str(match expr.as_bytes()[0] {
                        // Reserved expansion: may hold `/` (and `?`), never a fragment.
                        b'+' => "[^#]*",
                        b'#' => "(?:#.*)?",
                        b'.' => r"(?:\.[^/?#]*)*",
                        b'/' => "(?:/[^/?#]*)*",
                        b';' => "(?:;[^/?#]*)*",
                        b'?' => r"(?:\?[^#]*)?",
                        b'&' => "(?:&[^#]*)?",
                        _ => "[^/?#]*",
                    });
                    rest = &rest[end + 1..];
                }
                Some(i) => {
                    pattern.push_str(&regex::escape(&rest[..i]));
                    rest = &rest[i..];
                }
                None => {
                    if rest.contains('}') {
                        return None;
                    }
                    pattern.push_str(&regex::escape(rest));
                    rest = "";
                }
            }
        }
        pattern.push('$');
        Regex::new(&pattern).ok().map(CompiledTemplate)
    }

    /// Whether `uri` is one this template produces (and does not climb out of a path).
    pub fn matches(&self, uri: &str) -> bool {
        uri.len() <= MAX_URI_BYTES && !climbs(uri) && self.0.is_match(uri)
    }
}

/// Whether `uri` holds a dot segment or an encoded separator, which an upstream might resolve
/// to somewhere its template never meant.
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

#[cfg(test)]
mod tests {
    use super::CompiledTemplate;

    fn matches(template: &str, uri: &str) -> bool {
        CompiledTemplate::new(template).is_some_and(|t| t.matches(uri))
    }

    #[test]
    fn simple_expressions_match_one_segment() {
        assert!(matches(
            "test://static/resource/{id}",
            "test://static/resource/7"
        ));
        assert!(!matches(
            "test://static/resource/{id}",
            "test://static/resource/7/x"
        ));
        assert!(!matches("test://static/resource/{id}", "test://other/7"));
        assert!(matches("file:///{a}/{b}.txt", "file:///x/y.txt"));
    }

    #[test]
    fn reserved_expansion_spans_slashes_and_operators_need_their_prefix() {
        assert!(matches("file:///{+path}", "file:///etc/hosts"));
        assert!(matches("api://items{?page,size}", "api://items"));
        assert!(matches(
            "api://items{?page,size}",
            "api://items?page=2&size=3"
        ));
        assert!(!matches("api://items{?page}", "api://itemsX"));
        assert!(matches("doc://guide{#s}", "doc://guide#intro"));
        assert!(!matches("doc://guide{#s}", "doc://guide/admin"));
        assert!(matches("doc://a{/p}", "doc://a/b/c"));
        assert!(!matches("doc://a{/p}", "doc://ab"));
    }

    #[test]
    fn uris_climbing_out_of_a_path_never_match() {
        assert!(!matches("doc://guide{#s}", "doc://guide/../admin"));
        assert!(!matches(
            "file:///data/{n}",
            "file:///data/..%2F..%2Fetc%2Fpasswd"
        ));
        assert!(!matches("file:///{+path}", "file:///data/../../etc/passwd"));
        assert!(!matches("file:///{+path}", "file:///data/%2e%2e/x"));
    }

    #[test]
    fn malformed_or_hostile_templates_match_nothing_and_stay_fast() {
        assert!(!matches("a://{x", "a://{x"));
        assert!(!matches("a://{}", "a://"));
        let many = "{+a}".repeat(40);
        assert!(!matches(&many, "x"));
        // A long URI against several wide expressions: regex matching is linear in the input
        // (a backtracking matcher would take ages here).
        let uri = format!("x://{}", "a/".repeat(2000));
        assert!(!matches("x://{+a}/x/{+b}/y/{+c}/z", &uri));
        assert!(!matches("x://{+a}", &"a".repeat(super::MAX_URI_BYTES + 1)));
    }
}
