//! Tests of the method table: names round-trip, unknown methods stay `Other`, and each table
//! answers what the modules that used to spell it out answered.

use super::*;

#[test]
fn known_methods_label_as_themselves_and_the_rest_as_other() {
    assert_eq!(metric_label("tools/call"), "tools/call");
    assert_eq!(metric_label("server/discover"), "server/discover");
    assert_eq!(metric_label("tools/call2"), "other");
    assert_eq!(metric_label(""), "other");
    assert_eq!(metric_label(&"x".repeat(10_000)), "other");
}

#[test]
fn every_known_method_round_trips_through_its_name() {
    let mut seen = std::collections::HashSet::new();
    for m in Method::ALL {
        assert!(m.is_known(), "{m:?}");
        assert!(seen.insert(m.as_str()), "{} twice", m.as_str());
        assert_eq!(&Method::parse(m.as_str()), m);
        assert_eq!(Method::known(m.as_str()).as_ref(), Some(m));
        assert_eq!(m.metric_label(), m.as_str());
        assert_eq!(m.to_string(), m.as_str());
        assert_eq!(&Method::from(m.as_str()), m);
        assert!(*m == *m.as_str() && *m == m.as_str());
    }
    // Both revisions' methods, the tasks extension and the notifications are all there.
    for name in [
        "initialize",
        "ping",
        "server/discover",
        "subscriptions/listen",
        "logging/setLevel",
        "tasks/get",
        "tasks/update",
        "tasks/cancel",
        "notifications/initialized",
        "notifications/tasks/status",
        "notifications/subscriptions/acknowledged",
    ] {
        assert!(Method::parse(name).is_known(), "{name}");
    }
}

#[test]
fn unknown_methods_are_other_and_keep_their_spelling() {
    for name in [
        "tools/call2",
        "Tools/Call",
        "",
        "tools/call ",
        "x/y",
        "notifications/x",
    ] {
        let m = Method::parse(name);
        assert_eq!(m, Method::Other(name.to_owned()));
        assert_eq!(m.as_str(), name);
        assert_eq!(m.metric_label(), "other");
        assert!(Method::known(name).is_none());
        assert_eq!(m.list(), None);
        assert_eq!(m.function_kind(), None);
        assert_eq!(m.target(), None);
        assert!(!m.allowed_stateless());
        assert!(!m.removed_in_2026());
        assert!(!m.cacheable());
    }
}

/// The known methods for which `pick` holds, by name.
fn which(pick: impl Fn(&Method) -> bool) -> Vec<&'static str> {
    let mut names: Vec<_> = Method::ALL
        .iter()
        .filter(|m| pick(m))
        .map(Method::metric_label)
        .collect();
    names.sort_unstable();
    names
}

#[test]
fn lists_name_their_kind_and_back() {
    for kind in ListKind::ALL {
        assert_eq!(kind.list_method().list(), Some(kind));
        assert_eq!(Method::parse(kind.method()).list(), Some(kind));
    }
    assert_eq!(
        which(|m| m.list().is_some()),
        [
            "prompts/list",
            "resources/list",
            "resources/templates/list",
            "tools/list"
        ]
    );
    assert_eq!(ListKind::Templates.items_key(), "resourceTemplates");
    assert_eq!(ListKind::Templates.id_key(), "uriTemplate");
    assert_eq!(ListKind::Templates.capability(), "resources");
    assert!(ListKind::Resources.is_uri() && !ListKind::Prompts.is_uri());
}

#[test]
fn function_kinds_cover_calls_gets_and_resource_access() {
    assert_eq!(
        which(|m| m.function_kind() == Some(FunctionKind::Resource)),
        [
            "resources/read",
            "resources/subscribe",
            "resources/unsubscribe"
        ]
    );
    assert_eq!(
        which(|m| m.function_kind() == Some(FunctionKind::Tool)),
        ["tools/call"]
    );
    assert_eq!(
        which(|m| m.function_kind() == Some(FunctionKind::Prompt)),
        ["prompts/get"]
    );
    for kind in [
        FunctionKind::Tool,
        FunctionKind::Prompt,
        FunctionKind::Resource,
    ] {
        assert_eq!(kind.call_method().function_kind(), Some(kind));
        assert_eq!(
            Method::parse(kind.call_method().as_str()).function_kind(),
            Some(kind)
        );
    }
    assert_eq!(
        which(Method::names_function),
        [
            "completion/complete",
            "prompts/get",
            "resources/read",
            "resources/subscribe",
            "resources/unsubscribe",
            "tools/call"
        ]
    );
    assert_eq!(which(Method::labels_target), ["prompts/get", "tools/call"]);
}

#[test]
fn targets_and_the_name_header() {
    let key = |m: &str| Method::parse(m).target().map(TargetParam::key);
    assert_eq!(key("tools/call"), Some("name"));
    assert_eq!(key("prompts/get"), Some("name"));
    assert_eq!(key("resources/unsubscribe"), Some("uri"));
    assert_eq!(key("tasks/update"), Some("taskId"));
    assert_eq!(key("completion/complete"), Some("ref"));
    assert_eq!(key("tools/list"), None);
    assert_eq!(
        which(Method::names_task),
        ["tasks/cancel", "tasks/get", "tasks/update"]
    );
    // `Mcp-Name` only for what a 2026-07-28 client sends, and never for the `ref` object.
    let header = |m: &str| Method::parse(m).name_header_param();
    assert_eq!(header("tools/call"), Some("name"));
    assert_eq!(header("prompts/get"), Some("name"));
    assert_eq!(header("resources/read"), Some("uri"));
    assert_eq!(header("tasks/get"), Some("taskId"));
    assert_eq!(
        which(|m| m.name_header_param().is_some()),
        [
            "prompts/get",
            "resources/read",
            "tasks/cancel",
            "tasks/get",
            "tasks/update",
            "tools/call"
        ]
    );
}

#[test]
fn the_stateless_revision_allows_thirteen_requests_and_removes_others() {
    assert_eq!(
        which(Method::allowed_stateless),
        [
            "completion/complete",
            "prompts/get",
            "prompts/list",
            "resources/list",
            "resources/read",
            "resources/templates/list",
            "server/discover",
            "subscriptions/listen",
            "tasks/cancel",
            "tasks/get",
            "tasks/update",
            "tools/call",
            "tools/list"
        ]
    );
    assert_eq!(
        which(Method::removed_in_2026),
        [
            "initialize",
            "logging/setLevel",
            "notifications/initialized",
            "ping",
            "resources/subscribe",
            "resources/unsubscribe",
            "tasks/list",
            "tasks/result"
        ]
    );
    assert!(
        Method::ALL
            .iter()
            .all(|m| !(m.removed_in_2026() && m.allowed_stateless()))
    );
    assert_eq!(
        which(Method::cacheable),
        [
            "prompts/list",
            "resources/list",
            "resources/read",
            "resources/templates/list",
            "tools/list"
        ]
    );
}

#[test]
fn server_to_client_requests_need_their_capability() {
    assert_eq!(
        Method::SamplingCreateMessage.client_capability(),
        Some("sampling")
    );
    assert_eq!(
        Method::ElicitationCreate.client_capability(),
        Some("elicitation")
    );
    assert_eq!(Method::RootsList.client_capability(), Some("roots"));
    assert_eq!(
        which(|m| m.client_capability().is_some()),
        ["elicitation/create", "roots/list", "sampling/createMessage"]
    );
}
