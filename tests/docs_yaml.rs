//! Every ```yaml block in README.md and docs/*.md is real configuration: it parses as YAML, and a
//! block of configuration keys deserializes into `gatehouse::config::Config` (whose structs deny
//! unknown fields), so a misspelt or misplaced field in the documentation fails here.
//!
//! A block is read as:
//! - a Kubernetes manifest (it has `apiVersion`): YAML only, each `---` document;
//! - a whole configuration (any top-level key is one of `Config`'s): a block without `servers` or
//!   `upstreams` is completed with an empty skeleton, since many examples show one part only
//!   (references between parts are validation's business, not the shape's);
//! - a fragment, named by its only key: `idp` (an `oauth_server.idp`), `policy` (a
//!   `servers[].policy`). Any other block fails, so that every block stays checked.

use std::path::{Path, PathBuf};

use gatehouse::config::oauth_server::IdpConfig;
use gatehouse::config::{Config, Policy};
use serde::Deserialize;

/// Top-level keys of `Config` (docs/configuration.md, "Top level").
/// The configuration's top-level keys, from the schema the config types generate (so that a
/// new section is known here without a list to keep in step).
fn config_keys() -> Vec<String> {
    gatehouse::config::schema::json_schema()["properties"]
        .as_object()
        .expect("the schema lists the top-level properties")
        .keys()
        .cloned()
        .collect()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // only the shape is checked
struct IdpFragment {
    idp: IdpConfig,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct PolicyFragment {
    policy: Policy,
}

/// One fenced block: the markdown file, the line of its opening fence, its text.
struct Block {
    file: PathBuf,
    line: usize,
    text: String,
}

impl Block {
    /// `FILE:LINE` of the block's opening fence, for every message.
    fn at(&self) -> String {
        format!("{}:{}", self.file.display(), self.line)
    }
}

fn yaml_blocks(file: &Path) -> Vec<Block> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file))
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    let mut indent = 0;
    for (i, line) in text.lines().enumerate() {
        let fence = line.trim_start();
        match open.as_mut() {
            None if fence.starts_with("```yaml") || fence.starts_with("```yml") => {
                indent = line.len() - fence.len();
                open = Some(Block {
                    file: file.to_owned(),
                    line: i + 1,
                    text: String::new(),
                });
            }
            Some(_) if fence.starts_with("```") => blocks.extend(open.take()),
            Some(b) => {
                // A block inside a list item is indented like its fence: take that off.
                let cut = line.len() - line.trim_start().len();
                b.text.push_str(&line[cut.min(indent)..]);
                b.text.push('\n');
            }
            None => {}
        }
    }
    assert!(
        open.is_none(),
        "{}: a ```yaml block is never closed",
        file.display()
    );
    blocks
}

fn documents() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![PathBuf::from("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .map(|e| e.expect("docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .map(|p| p.strip_prefix(root).map(Path::to_owned).unwrap_or(p))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// What is wrong with one block, or `None`. serde-saphyr's line numbers count from the block's
/// first line, which is the fence's line + 1 in the markdown.
fn check(block: &Block) -> Option<String> {
    let fail = |e: &dyn std::fmt::Display| {
        Some(format!(
            "{} (yaml line 1 = markdown line {}): {e}",
            block.at(),
            block.line + 1
        ))
    };
    if block.text.contains("apiVersion:") {
        for doc in block.text.split("\n---\n") {
            if let Err(e) = serde_saphyr::from_str::<serde_json::Value>(doc) {
                return fail(&e);
            }
        }
        return None;
    }
    let value = match serde_saphyr::from_str::<serde_json::Value>(&block.text) {
        Ok(v) => v,
        Err(e) => return fail(&e),
    };
    let Some(map) = value.as_object() else {
        return fail(&"not a mapping at the top level");
    };
    if map.keys().any(|k| config_keys().contains(k)) {
        let mut text = block.text.clone();
        if !map.contains_key("servers") {
            text.push_str("servers: []\n");
        }
        if !map.contains_key("upstreams") {
            text.push_str("upstreams: {}\n");
        }
        return serde_saphyr::from_str::<Config>(&text)
            .err()
            .and_then(|e| fail(&e));
    }
    let keys: Vec<&str> = map.keys().map(String::as_str).collect();
    let result = match keys.as_slice() {
        ["idp"] => serde_saphyr::from_str::<IdpFragment>(&block.text).map(|_| ()),
        ["policy"] => serde_saphyr::from_str::<PolicyFragment>(&block.text).map(|_| ()),
        _ => {
            return fail(&format!(
                "top-level keys {keys:?} are neither configuration keys nor a known fragment \
                 (idp, policy): add the fragment to tests/docs_yaml.rs"
            ));
        }
    };
    result.err().and_then(|e| fail(&e))
}

#[test]
fn every_yaml_block_in_the_docs_is_valid_configuration() {
    let blocks: Vec<Block> = documents().iter().flat_map(|f| yaml_blocks(f)).collect();
    assert!(
        blocks.len() >= 20,
        "found only {} yaml blocks: is the extraction broken?",
        blocks.len()
    );
    let problems: Vec<String> = blocks.iter().filter_map(check).collect();
    assert!(
        problems.is_empty(),
        "{} of {} documentation blocks are broken:\n{}",
        problems.len(),
        blocks.len(),
        problems.join("\n")
    );
}

#[test]
fn a_misspelt_field_is_caught_with_its_place() {
    let block = Block {
        file: PathBuf::from("docs/example.md"),
        line: 7,
        text: "servers:\n  - { name: a, path: /mcp, upstreams: [u], prefx: never }\n".into(),
    };
    let problem = check(&block).expect("a misspelt field must fail");
    assert!(problem.starts_with("docs/example.md:7"), "{problem}");
    assert!(problem.contains("prefx"), "{problem}");
    let misplaced = Block {
        file: PathBuf::from("docs/example.md"),
        line: 9,
        text: "idp: { flavor: entra, issuer: https://x.example, client_id: a, scopes: [openid], audiences: [b] }\n"
            .into(),
    };
    assert!(check(&misplaced).is_some_and(|p| p.contains("audiences")));
    let duplicate = Block {
        file: PathBuf::from("docs/example.md"),
        line: 11,
        text: "idp: { flavor: entra, issuer: https://x.example, client_id: a }\nidp: { flavor: google, issuer: https://y.example, client_id: b }\n".into(),
    };
    assert!(check(&duplicate).is_some(), "a repeated key must fail");
}
