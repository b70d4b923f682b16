//! The MCP method names the gateway knows, across every protocol generation it speaks. Anything
//! that must come from a closed set (metrics labels) derives from this one table.

/// Every JSON-RPC method of MCP 2025-03-26 … 2026-07-28 (requests and notifications, either
/// direction), plus the tasks extension.
pub const KNOWN: &[&str] = &[
    "initialize",
    "ping",
    "server/discover",
    "tools/list",
    "tools/call",
    "prompts/list",
    "prompts/get",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "subscriptions/listen",
    "completion/complete",
    "logging/setLevel",
    "sampling/createMessage",
    "elicitation/create",
    "roots/list",
    "tasks/get",
    "tasks/update",
    "tasks/list",
    "tasks/result",
    "tasks/cancel",
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    "notifications/message",
    "notifications/tools/list_changed",
    "notifications/prompts/list_changed",
    "notifications/resources/list_changed",
    "notifications/resources/updated",
    "notifications/roots/list_changed",
    "notifications/elicitation/complete",
    "notifications/tasks/status",
];

/// The label a method is counted under: itself when it is an MCP method, else `other`, so that
/// callers cannot mint label values.
pub fn metric_label(method: &str) -> &'static str {
    KNOWN
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_methods_label_as_themselves_and_the_rest_as_other() {
        assert_eq!(metric_label("tools/call"), "tools/call");
        assert_eq!(metric_label("server/discover"), "server/discover");
        assert_eq!(metric_label("tools/call2"), "other");
        assert_eq!(metric_label(""), "other");
        assert_eq!(metric_label(&"x".repeat(10_000)), "other");
    }
}
