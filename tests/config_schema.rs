//! The configuration's JSON Schema: the committed copy is the one the code generates, it accepts
//! every shipped example, and it refuses what the loader refuses (a misspelt field, a wrong
//! type), so that an editor pointed at it tells the truth.

use gatehouse::config::schema::{SCHEMA_PATH, json_schema, json_schema_text};
use serde_json::Value;
use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn validator() -> jsonschema::Validator {
    jsonschema::validator_for(&json_schema()).expect("the generated schema compiles")
}

fn yaml(text: &str) -> Value {
    serde_saphyr::from_str(text).expect("valid YAML")
}

#[test]
fn the_committed_schema_is_the_generated_one() {
    let committed = std::fs::read_to_string(root().join(SCHEMA_PATH)).unwrap_or_default();
    assert!(
        committed == json_schema_text(),
        "{SCHEMA_PATH} is stale: regenerate it with `cargo run -- config schema > {SCHEMA_PATH}`"
    );
}

#[test]
fn every_example_validates_against_the_schema() {
    let v = validator();
    let mut seen = 0;
    for entry in std::fs::read_dir(root().join("examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let doc = yaml(&std::fs::read_to_string(&path).unwrap());
        let errors: Vec<String> = v
            .iter_errors(&doc)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
        seen += 1;
    }
    assert!(seen > 0, "no examples found");
}

#[test]
fn the_schema_refuses_what_the_loader_refuses() {
    let v = validator();
    let good = "servers:\n  - { name: a, path: /mcp, upstreams: [u] }\nupstreams:\n  u: { kind: http, url: http://127.0.0.1:1/mcp }\n";
    assert!(v.is_valid(&yaml(good)));
    for bad in [
        // A misspelt top-level field.
        format!("{good}listne: 127.0.0.1:8080\n"),
        // A misspelt nested field.
        good.replace("upstreams: [u] }", "upstreams: [u], pathh: /x }"),
        // A duration without a unit.
        format!("{good}ops: {{ drain: \"5\" }}\n"),
        // A list where a string is expected.
        good.replace("path: /mcp", "path: [/mcp]"),
    ] {
        assert!(!v.is_valid(&yaml(&bad)), "the schema accepted:\n{bad}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.yaml");
        std::fs::write(&file, &bad).unwrap();
        assert!(
            gatehouse::config::Config::load(&file).is_err(),
            "the loader accepted:\n{bad}"
        );
    }
}
