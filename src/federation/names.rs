//! How names and URIs of several upstreams share one namespace.

/// What a list returns and which member of each item identifies it (the protocol's table).
pub use crate::protocol::ListKind;

impl ListKind {
    /// The catalog's name for what this list holds.
    pub fn definition(self) -> crate::catalog::pin::DefinitionKind {
        use crate::catalog::pin::DefinitionKind;
        match self {
            ListKind::Tools => DefinitionKind::Tool,
            ListKind::Prompts => DefinitionKind::Prompt,
            ListKind::Resources => DefinitionKind::Resource,
            ListKind::Templates => DefinitionKind::ResourceTemplate,
        }
    }

    /// What one listed item is called in errors ("Unknown tool: …").
    pub fn singular(self) -> &'static str {
        match self {
            ListKind::Tools => "tool",
            ListKind::Prompts => "prompt",
            ListKind::Resources | ListKind::Templates => "resource",
        }
    }
}

/// The scheme of MCP Apps UI resources (`io.modelcontextprotocol/ui`).
const UI_SCHEME: &str = "ui://";

/// The naming scheme of one virtual server.
#[derive(Debug, Clone)]
pub struct Naming {
    /// Prefix per member, `None` when names are not prefixed.
    pub prefixes: Vec<Option<String>>,
    /// Between prefix and name.
    pub separator: String,
}

impl Naming {
    /// The naming scheme a configured virtual server uses.
    pub fn for_server(
        cfg: &crate::config::VirtualServer,
        upstreams: &std::collections::BTreeMap<String, crate::config::Upstream>,
    ) -> Naming {
        use crate::config::PrefixMode;
        let prefixing = match cfg.prefix {
            PrefixMode::Always => true,
            PrefixMode::Auto => cfg.upstreams.len() > 1,
            PrefixMode::Never => false,
        };
        let prefixes = cfg
            .upstreams
            .iter()
            .map(|u| prefixing.then(|| upstreams[u].prefix.clone().unwrap_or_else(|| u.clone())))
            .collect();
        Naming {
            prefixes,
            separator: cfg.separator.clone(),
        }
    }

    /// The name clients see for `name` of member `i`.
    pub fn outward_name(&self, i: usize, name: &str) -> String {
        match &self.prefixes[i] {
            Some(p) => format!("{p}{}{name}", self.separator),
            None => name.to_owned(),
        }
    }

    /// The URI clients see for `uri` of member `i`: `prefix+uri`, itself a valid URI whose scheme
    /// names the upstream. MCP Apps hosts recognise UI resources by their `ui://` scheme, so
    /// those keep it and carry the prefix in the authority: `ui://prefix+rest`.
    pub fn outward_uri(&self, i: usize, uri: &str) -> String {
        match (&self.prefixes[i], uri.strip_prefix(UI_SCHEME)) {
            (Some(p), Some(rest)) => format!("{UI_SCHEME}{p}+{rest}"),
            (Some(p), None) => format!("{p}+{uri}"),
            (None, _) => uri.to_owned(),
        }
    }

    /// Rewrites a tool's links to its MCP Apps UI resource (`_meta.ui.resourceUri`, and the
    /// older flat `_meta["ui/resourceUri"]`) to the URI clients see, so that the host reads
    /// the UI from the upstream that offers the tool.
    pub fn outward_ui_links(&self, i: usize, tool: &mut serde_json::Value) {
        if self.prefixes[i].is_none() {
            return;
        }
        let Some(meta) = tool.get_mut("_meta") else {
            return;
        };
        let nested = meta.get_mut("ui").and_then(|u| u.get_mut("resourceUri"));
        if let Some(serde_json::Value::String(uri)) = nested {
            *uri = self.outward_uri(i, uri);
        }
        if let Some(serde_json::Value::String(uri)) = meta.get_mut("ui/resourceUri") {
            *uri = self.outward_uri(i, uri);
        }
    }

    /// Splits a prefixed name into (member, upstream name). Longest prefix first, so that
    /// `a` and `a_b` can coexist.
    pub fn inward_name<'a>(&self, name: &'a str) -> Option<(usize, &'a str)> {
        self.best(|p| {
            name.strip_prefix(p)
                .and_then(|r| r.strip_prefix(self.separator.as_str()))
        })
    }

    /// Splits a prefixed URI into (member, upstream URI); see [`outward_uri`](Self::outward_uri).
    pub fn inward_uri(&self, uri: &str) -> Option<(usize, String)> {
        if let Some(rest) = uri.strip_prefix(UI_SCHEME)
            && let Some((i, inner)) =
                self.best(|p| rest.strip_prefix(p).and_then(|r| r.strip_prefix('+')))
        {
            return Some((i, format!("{UI_SCHEME}{inner}")));
        }
        self.best(|p| uri.strip_prefix(p).and_then(|r| r.strip_prefix('+')))
            .map(|(i, inner)| (i, inner.to_owned()))
    }

    fn best<'a>(&self, strip: impl Fn(&str) -> Option<&'a str>) -> Option<(usize, &'a str)> {
        self.prefixes
            .iter()
            .enumerate()
            .filter_map(|(i, p)| Some((i, p.as_deref()?)))
            .filter_map(|(i, p)| strip(p).map(|rest| (i, p.len(), rest)))
            .filter(|(_, _, rest)| !rest.is_empty())
            .max_by_key(|(_, len, _)| *len)
            .map(|(i, _, rest)| (i, rest))
    }

    /// Whether names are prefixed at all.
    pub fn prefixed(&self) -> bool {
        self.prefixes.iter().any(Option::is_some)
    }
}

/// The extensions the gateway relays faithfully: tasks (ids sealed and routed back, see
/// `downstream::tasks`) and MCP Apps (`ui://` resources, routed like any resource URI).
/// Others are not advertised, since their methods or ids might not survive federation.
pub const RELAYED_EXTENSIONS: [&str; 2] = [
    "io.modelcontextprotocol/tasks",
    "io.modelcontextprotocol/ui",
];

/// The relayed extensions some member offers, with the first offering member's settings.
pub fn relayed_extensions<'a>(
    capabilities: impl Iterator<Item = &'a serde_json::Value>,
) -> serde_json::Map<String, serde_json::Value> {
    let mut out = serde_json::Map::new();
    for caps in capabilities {
        let Some(offered) = caps
            .get("extensions")
            .and_then(serde_json::Value::as_object)
        else {
            continue;
        };
        for (k, v) in offered {
            if RELAYED_EXTENSIONS.contains(&k.as_str()) && !out.contains_key(k) {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naming() -> Naming {
        Naming {
            prefixes: vec![Some("a".into()), Some("a_b".into())],
            separator: "__".into(),
        }
    }

    #[test]
    fn names_round_trip_and_longest_prefix_wins() {
        let n = naming();
        assert_eq!(n.outward_name(1, "echo"), "a_b__echo");
        assert_eq!(n.inward_name("a_b__echo"), Some((1, "echo")));
        assert_eq!(n.inward_name("a__b__echo"), Some((0, "b__echo")));
        assert_eq!(n.inward_name("c__echo"), None);
        assert_eq!(n.inward_name("a__"), None);
    }

    #[test]
    fn only_relayed_extensions_offered_by_a_member_are_advertised() {
        let a = serde_json::json!({"extensions": {"io.modelcontextprotocol/tasks": {}, "com.example/other": {}}});
        let b = serde_json::json!({"tools": {}});
        let got = relayed_extensions([&a, &b].into_iter());
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            ["io.modelcontextprotocol/tasks"]
        );
        assert!(relayed_extensions([&b].into_iter()).is_empty());
    }

    #[test]
    fn uris_round_trip() {
        let n = naming();
        let out = n.outward_uri(0, "test://static-text");
        assert_eq!(out, "a+test://static-text");
        assert_eq!(n.inward_uri(&out), Some((0, "test://static-text".into())));
        assert_eq!(n.inward_uri("test://static-text"), None);
    }

    #[test]
    fn ui_resources_keep_their_scheme_and_tool_links_follow() {
        let n = naming();
        let out = n.outward_uri(1, "ui://weather/view.html");
        assert_eq!(out, "ui://a_b+weather/view.html");
        assert_eq!(
            n.inward_uri(&out),
            Some((1, "ui://weather/view.html".into()))
        );
        assert_eq!(n.inward_uri("ui://a+x"), Some((0, "ui://x".into())));
        // An unprefixed ui:// URI is no member's.
        assert_eq!(n.inward_uri("ui://weather/view.html"), None);
        let mut tool = serde_json::json!({"name": "w", "_meta": {"ui": {"resourceUri": "ui://w/app"}, "ui/resourceUri": "ui://w/app"}});
        n.outward_ui_links(0, &mut tool);
        assert_eq!(tool["_meta"]["ui"]["resourceUri"], "ui://a+w/app");
        assert_eq!(tool["_meta"]["ui/resourceUri"], "ui://a+w/app");
    }
}
