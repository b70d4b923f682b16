//! The configuration's JSON Schema, generated from the config types themselves so that it
//! cannot describe a field the loader does not take. `gatehouse config schema` prints it;
//! `docs/gatehouse.schema.json` is the committed copy that editors point at.

use super::Config;

/// Where the committed copy is published, for the schema's `$id` and editors' modelines.
pub const SCHEMA_PATH: &str = "docs/gatehouse.schema.json";

/// The JSON Schema (draft 2020-12) of a Gatehouse configuration file.
pub fn json_schema() -> serde_json::Value {
    let mut schema = schemars::schema_for!(Config).to_value();
    if let Some(top) = schema.as_object_mut() {
        top.insert("title".into(), "Gatehouse configuration".into());
        top.insert(
            "description".into(),
            "The YAML file given to `gatehouse serve --config`. Semantic checks (references \
             between fields, secrets that can be read, CEL that compiles) are made by \
             `gatehouse check`, not by this schema."
                .into(),
        );
    }
    schema
}

/// The schema as the committed file holds it: pretty JSON ending in a newline.
pub fn json_schema_text() -> String {
    let mut text = serde_json::to_string_pretty(&json_schema()).expect("a schema is JSON");
    text.push('\n');
    text
}
