//! What one upstream's tools mirror into `Mcp-Param-*` headers, learned from its listings:
//! the headers the gateway sends it on the 2026-07-28 wire, and the ones it checks on calls
//! from 2026-07-28 clients. Keyed by the upstream's own tool names; bounded.

use crate::protocol::param_headers::ToolHeaders;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// Most tools with mirrored parameters remembered per upstream.
pub const MAX_TOOLS: usize = 4096;
/// How long after a listing that could not be read whole the gateway waits before it lists
/// again on a call's behalf.
const RELEARN_AFTER: Duration = Duration::from_secs(30);

/// What is known of one tool.
#[derive(Debug, Clone, PartialEq)]
pub enum Known {
    /// It mirrors these parameters.
    Mirrors(Arc<ToolHeaders>),
    /// It mirrors none (the last whole listing says so).
    Nothing,
    /// No whole listing was read yet: the caller may list first.
    Unlearned,
}

#[derive(Default)]
struct State {
    tools: HashMap<String, Arc<ToolHeaders>>,
    /// A listing was read from its first page to its last.
    whole: bool,
    /// The pass under way started at its first page.
    passing: bool,
    last_attempt: Option<Instant>,
}

/// The table; one per upstream client.
pub struct MirroredParams {
    state: RwLock<State>,
    cap: usize,
}

impl Default for MirroredParams {
    fn default() -> Self {
        MirroredParams::with_cap(MAX_TOOLS)
    }
}

impl MirroredParams {
    /// A table holding at most `cap` tools.
    pub fn with_cap(cap: usize) -> Self {
        MirroredParams {
            state: RwLock::new(State::default()),
            cap,
        }
    }

    /// Learns one page of `tools/list`: `first` when it was asked for without a cursor (the
    /// page replaces what was known), `last` when it had no `nextCursor`.
    pub fn learn(&self, page: Vec<(String, Arc<ToolHeaders>)>, first: bool, last: bool) {
        let mut s = self.state.write().expect("mirrored lock");
        if first {
            s.tools.clear();
            s.passing = true;
        }
        for (name, headers) in page {
            if s.tools.len() >= self.cap && !s.tools.contains_key(&name) {
                tracing::warn!(
                    cap = self.cap,
                    tool = %crate::audit::clipped(&name),
                    "too many tools with mirrored parameters: this one's headers are not sent"
                );
                continue;
            }
            s.tools.insert(name, headers);
        }
        if last && s.passing {
            s.whole = true;
            s.passing = false;
        }
    }

    /// What is known of `tool`.
    pub fn get(&self, tool: &str) -> Known {
        let s = self.state.read().expect("mirrored lock");
        match s.tools.get(tool) {
            Some(h) => Known::Mirrors(h.clone()),
            None if s.whole => Known::Nothing,
            None => Known::Unlearned,
        }
    }

    /// The parameters `tool` is known to mirror, if any (no listing is triggered).
    pub fn mirrors(&self, tool: &str) -> Option<Arc<ToolHeaders>> {
        match self.get(tool) {
            Known::Mirrors(h) => Some(h),
            _ => None,
        }
    }

    /// Whether a whole listing was read: what is not in the table mirrors nothing.
    pub fn learned(&self) -> bool {
        self.state.read().expect("mirrored lock").whole
    }

    /// Whether a call may list on its own behalf now; at most once per [`RELEARN_AFTER`]
    /// while no whole listing was read, so that a failing listing is not repeated per call.
    pub fn may_learn(&self) -> bool {
        let mut s = self.state.write().expect("mirrored lock");
        if s.whole {
            return false;
        }
        let now = Instant::now();
        if s.last_attempt
            .is_some_and(|t| now.duration_since(t) < RELEARN_AFTER)
        {
            return false;
        }
        s.last_attempt = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tool(header: &str) -> Arc<ToolHeaders> {
        Arc::new(
            ToolHeaders::of(Some(&json!({"properties": {
                "p": {"type": "string", "x-mcp-header": header}
            }})))
            .unwrap()
            .unwrap(),
        )
    }

    #[test]
    fn a_whole_listing_makes_absence_mean_nothing_to_mirror() {
        let t = MirroredParams::default();
        assert_eq!(t.get("a"), Known::Unlearned);
        t.learn(vec![("a".into(), tool("A"))], true, false);
        assert_eq!(t.get("b"), Known::Unlearned, "more pages to come");
        t.learn(vec![("b".into(), tool("B"))], false, true);
        assert!(matches!(t.get("b"), Known::Mirrors(_)));
        assert_eq!(t.get("c"), Known::Nothing);
        // A new first page replaces the table: annotations removed upstream are forgotten.
        t.learn(vec![], true, true);
        assert_eq!(t.get("a"), Known::Nothing);
        assert_eq!(t.get("b"), Known::Nothing);
        assert!(t.learned());
    }

    #[test]
    fn the_table_is_capped() {
        let t = MirroredParams::with_cap(3);
        let page = (0..10).map(|i| (format!("t{i}"), tool("P"))).collect();
        t.learn(page, true, true);
        let known = (0..10)
            .filter(|i| t.mirrors(&format!("t{i}")).is_some())
            .count();
        assert_eq!(known, 3);
    }

    #[test]
    fn learning_on_a_call_is_rate_limited_until_a_listing_succeeds() {
        let t = MirroredParams::default();
        assert!(t.may_learn());
        assert!(
            !t.may_learn(),
            "a second call right after does not list again"
        );
        t.learn(vec![], true, true);
        assert!(!t.may_learn(), "nothing left to learn");
    }
}
