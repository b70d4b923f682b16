//! Tests of the request head: what each method's target reads as, and the inputs whose
//! target must stay unknown.

use super::*;
use serde_json::json;

fn head(method: &str, params: Value) -> CallHead {
    let body = json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params });
    CallHead::of(&Message::parse(body.to_string().as_bytes()).unwrap())
}

fn raw_head(body: &str) -> CallHead {
    CallHead::of(&Message::parse(body.as_bytes()).unwrap())
}

#[test]
fn a_tool_call_reads_name_arguments_and_meta_once() {
    let h = head(
        "tools/call",
        json!({ "name": "echo", "arguments": { "text": "hi" }, "_meta": {
            VERSION_META_KEY: "2026-07-28",
            CAPABILITIES_META_KEY: { "sampling": {} },
            LOG_LEVEL_META_KEY: "warning",
        }}),
    );
    assert_eq!(h.method, Method::ToolsCall);
    assert_eq!(h.kind, Some(FunctionKind::Tool));
    assert_eq!(h.name.as_deref(), Some("echo"));
    assert_eq!(h.name_header.as_deref(), Some("echo"));
    assert_eq!(h.arguments(), Some(&json!({ "text": "hi" })));
    assert_eq!(h.meta.version(), Some("2026-07-28"));
    assert_eq!(h.meta.capabilities(), json!({ "sampling": {} }));
    assert_eq!(h.meta.log_rank(), Some(3));
    assert_eq!(h.unreadable_target(), None);
}

#[test]
fn resources_name_their_uri_and_completions_their_reference() {
    let h = head("resources/read", json!({ "uri": "file:///a" }));
    assert_eq!(
        (h.kind, h.name.as_deref(), h.name_header.as_deref()),
        (
            Some(FunctionKind::Resource),
            Some("file:///a"),
            Some("file:///a")
        )
    );
    let h = head(
        "completion/complete",
        json!({ "ref": { "type": "ref/prompt", "name": "greet" }, "argument": {} }),
    );
    assert_eq!(
        (h.kind, h.name.as_deref()),
        (Some(FunctionKind::Prompt), Some("greet"))
    );
    assert_eq!(h.name_header, None);
    let h = head(
        "completion/complete",
        json!({ "ref": { "type": "ref/resource", "uri": "t://{x}", "name": "ignored" } }),
    );
    assert_eq!(
        (h.kind, h.name.as_deref()),
        (Some(FunctionKind::Resource), Some("t://{x}"))
    );
    let h = head(
        "completion/complete",
        json!({ "ref": { "type": "ref/other", "name": "x" } }),
    );
    assert_eq!((h.kind, h.name.as_deref()), (None, None));
    assert_eq!(h.unreadable_target(), Some("params.ref"));
}

#[test]
fn tasks_echo_their_id_in_the_name_header() {
    let h = head("tasks/get", json!({ "taskId": "t-1" }));
    assert_eq!(h.name_header.as_deref(), Some("t-1"));
    assert_eq!(h.name, None);
    assert_eq!(h.unreadable_target(), None);
}

#[test]
fn a_name_that_is_not_one_string_leaves_the_target_unknown() {
    let h = head("tools/call", json!({ "name": 7 }));
    assert_eq!(
        (h.kind, h.name.as_deref()),
        (Some(FunctionKind::Tool), None)
    );
    assert_eq!(h.unreadable_target(), Some("params.name"));
    // Given twice, a name is unreadable: an upstream may read either one.
    let h = raw_head(
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","name":"b","_meta":{"k":1}}}"#,
    );
    assert_eq!(h.name, None);
    assert_eq!(h.unreadable_target(), Some("params.name"));
    // ... while its `_meta` is still read, for the stateless rules.
    assert_eq!(h.meta.get("k"), Some(&json!(1)));
    let h = head("resources/read", json!({ "uri": ["x"] }));
    assert_eq!(h.unreadable_target(), Some("params.uri"));
}

#[test]
fn meta_that_is_not_an_object_is_invalid_and_absent_meta_is_absent() {
    assert!(matches!(
        head("tools/list", json!({ "_meta": 3 })).meta,
        Meta::Invalid
    ));
    assert!(matches!(head("tools/list", json!({})).meta, Meta::Absent));
    let h = raw_head(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#);
    assert!(matches!(h.meta, Meta::Absent));
    assert_eq!(h.meta.capabilities(), Value::Null);
    assert_eq!(h.meta.log_rank(), None);
    let h = raw_head(
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{},"_meta":{}}}"#,
    );
    assert!(matches!(h.meta, Meta::Invalid));
}

#[test]
fn arguments_are_parsed_only_when_asked_for() {
    let h = head(
        "tools/call",
        json!({ "name": "n", "arguments": { "a": [1, 2] } }),
    );
    assert!(h.parsed_arguments.get().is_none());
    assert_eq!(h.arguments(), Some(&json!({ "a": [1, 2] })));
    assert!(h.parsed_arguments.get().is_some());
    assert_eq!(head("tools/call", json!({ "name": "n" })).arguments(), None);
}
