//! Whether a resource URI is one an approved RFC 6570 URI template can produce, so that a
//! `resources/read` of a templated resource is allowed exactly when its template is approved.

/// One piece of a template: literal text, or an expression (`{…}`) with its operator.
enum Piece<'a> {
    Literal(&'a str),
    /// Simple and label/path-style expressions: the value stops at a `/`, `?` or `#`.
    Segment,
    /// `{+…}` and `{#…}`: reserved expansion, may contain `/`.
    Reserved,
    /// `{?…}` and `{&…}`: a query part, runs to the end or to a `#`.
    Query,
}

fn pieces(template: &str) -> Option<Vec<Piece<'_>>> {
    let mut out = Vec::new();
    let mut rest = template;
    while !rest.is_empty() {
        match rest.find('{') {
            Some(0) => {
                let end = rest.find('}')?;
                let expr = &rest[1..end];
                out.push(match expr.chars().next() {
                    Some('+' | '#') => Piece::Reserved,
                    Some('?' | '&') => Piece::Query,
                    Some(_) => Piece::Segment,
                    None => return None,
                });
                rest = &rest[end + 1..];
            }
            Some(i) => {
                out.push(Piece::Literal(&rest[..i]));
                rest = &rest[i..];
            }
            None => {
                out.push(Piece::Literal(rest));
                rest = "";
            }
        }
    }
    Some(out)
}

/// Whether `uri` matches `template`. A malformed template matches nothing.
pub fn matches(template: &str, uri: &str) -> bool {
    pieces(template).is_some_and(|p| match_from(&p, uri))
}

fn match_from(pieces: &[Piece<'_>], uri: &str) -> bool {
    let Some((first, rest)) = pieces.split_first() else {
        return uri.is_empty();
    };
    match first {
        Piece::Literal(l) => uri
            .strip_prefix(l)
            .is_some_and(|after| match_from(rest, after)),
        Piece::Query => {
            // A query expansion may expand to nothing, or to `?…` up to a fragment.
            let end = uri.find('#').unwrap_or(uri.len());
            let candidates = [0, end];
            candidates
                .iter()
                .any(|&n| (n == 0 || uri.starts_with(['?', '&'])) && match_from(rest, &uri[n..]))
        }
        Piece::Segment | Piece::Reserved => {
            let stop = |c: char| matches!(first, Piece::Segment) && matches!(c, '/' | '?' | '#');
            let limit = uri.find(stop).unwrap_or(uri.len());
            // Longest first, so that a trailing expression takes the rest.
            (0..=limit)
                .rev()
                .filter(|&n| uri.is_char_boundary(n))
                .any(|n| match_from(rest, &uri[n..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::matches;

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
    fn reserved_expansion_spans_slashes_and_queries_are_optional() {
        assert!(matches("file:///{+path}", "file:///etc/hosts"));
        assert!(matches("api://items{?page,size}", "api://items"));
        assert!(matches(
            "api://items{?page,size}",
            "api://items?page=2&size=3"
        ));
        assert!(!matches("api://items{?page}", "api://itemsX"));
    }

    #[test]
    fn malformed_templates_match_nothing() {
        assert!(!matches("a://{x", "a://{x"));
        assert!(!matches("a://{}", "a://"));
    }
}
