//! Where a field is in the YAML text: semantic problems are found on the parsed model, which
//! has no positions, so the text is walked once more to give each problem its line.

use granit_parser::{Event, Parser};
use std::collections::HashMap;

/// The line (1-based) of every mapping key and sequence item, by the dotted path that
/// [`Issue::field`](super::Issue) uses: `servers[0].upstreams[1]`, `upstreams.real.url`.
pub struct Lines(HashMap<String, usize>);

enum Frame {
    /// A mapping: the path of the mapping, and the key whose value comes next.
    Map { path: String, key: Option<String> },
    /// A sequence: its path and the index of the next item.
    Seq { path: String, next: usize },
}

impl Lines {
    /// Walks the first document of `text`; a syntax error only stops the walk (the parse
    /// reports it, with its own position).
    pub fn of(text: &str) -> Lines {
        let mut lines = HashMap::new();
        let mut stack: Vec<Frame> = Vec::new();
        // The path of the node about to start, and records it at `line`.
        fn enter(stack: &mut [Frame], lines: &mut HashMap<String, usize>, line: usize) -> String {
            let path = match stack.last_mut() {
                None => String::new(),
                Some(Frame::Map { path, key }) => {
                    let k = key.take().unwrap_or_default();
                    if path.is_empty() {
                        k
                    } else {
                        format!("{path}.{k}")
                    }
                }
                Some(Frame::Seq { path, next }) => {
                    *next += 1;
                    format!("{path}[{}]", *next - 1)
                }
            };
            lines.entry(path.clone()).or_insert(line);
            path
        }
        for event in Parser::new_from_str(text) {
            let Ok((event, span)) = event else { break };
            let line = span.start.line();
            match event {
                Event::Scalar(value, ..) => {
                    // A scalar in key position names the next value; record the key's line.
                    if let Some(Frame::Map { path, key }) = stack.last_mut()
                        && key.is_none()
                    {
                        let full = if path.is_empty() {
                            value.to_string()
                        } else {
                            format!("{path}.{value}")
                        };
                        lines.entry(full).or_insert(line);
                        *key = Some(value.into_owned());
                    } else {
                        enter(&mut stack, &mut lines, line);
                    }
                }
                Event::Alias(_) => {
                    enter(&mut stack, &mut lines, line);
                }
                Event::MappingStart(..) => {
                    let path = enter(&mut stack, &mut lines, line);
                    stack.push(Frame::Map { path, key: None });
                }
                Event::SequenceStart(..) => {
                    let path = enter(&mut stack, &mut lines, line);
                    stack.push(Frame::Seq { path, next: 0 });
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    stack.pop();
                }
                Event::DocumentEnd => break,
                _ => {}
            }
        }
        Lines(lines)
    }

    /// The line of `field`, or of its nearest ancestor that is in the text (a required field
    /// that is missing is reported at the mapping that lacks it).
    pub fn find(&self, field: &str) -> Option<usize> {
        let mut path = field;
        loop {
            if let Some(line) = self.0.get(path) {
                return Some(*line);
            }
            let cut = path.rfind(['.', '['])?;
            path = &path[..cut];
            if path.is_empty() {
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Lines;

    #[test]
    fn finds_keys_items_and_the_nearest_ancestor() {
        let text = "listen: x\nservers:\n  - name: a\n    upstreams: [u, ghost]\n  - { name: b, path: /b }\nupstreams:\n  real:\n    kind: http\n";
        let l = Lines::of(text);
        assert_eq!(l.find("listen"), Some(1));
        assert_eq!(l.find("servers[0]"), Some(3));
        assert_eq!(l.find("servers[0].upstreams[1]"), Some(4));
        assert_eq!(l.find("servers[1].path"), Some(5));
        assert_eq!(l.find("upstreams.real.kind"), Some(8));
        // Missing: the mapping that should hold it.
        assert_eq!(l.find("upstreams.real.url"), Some(7));
        assert_eq!(l.find("nothing.here"), None);
    }
}
