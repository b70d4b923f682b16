//! Runs the tool-poisoning scanner over a corpus of poisoned and benign definitions
//! (`tests/catalog_corpus/`): every expected (rule, severity) must be found in each poisoned
//! entry, and no benign entry may produce a finding above Info.

use gatehouse::catalog::scan::{Finding, Scanner, Severity, worst};
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    kind: String,
    definition: serde_json::Value,
    #[serde(default)]
    other_tools: Vec<String>,
    #[serde(default)]
    expect: Vec<Expected>,
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct Expected {
    rule: String,
    severity: Severity,
}

fn load(file: &str) -> Vec<Entry> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/catalog_corpus")
        .join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

fn describe(findings: &[Finding]) -> String {
    findings
        .iter()
        .map(|f| {
            format!(
                "    {} ({:?}) at {}: {}",
                f.rule, f.severity, f.field, f.excerpt
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn check_kinds(entries: &[Entry], file: &str) {
    for e in entries {
        assert!(
            matches!(
                e.kind.as_str(),
                "tool" | "prompt" | "resource" | "resourceTemplate"
            ),
            "{file}: entry {:?} has unknown kind {:?}",
            e.name,
            e.kind
        );
    }
    let mut names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    names.sort_unstable();
    let before = names.len();
    names.dedup();
    assert_eq!(before, names.len(), "{file}: entry names must be unique");
}

#[test]
fn poisoned_definitions_are_caught() {
    let scanner = Scanner::new(&[]).expect("built-in rules compile");
    let corpus = load("poisoned.json");
    assert!(
        corpus.len() >= 35,
        "poisoned corpus has only {} entries",
        corpus.len()
    );
    check_kinds(&corpus, "poisoned.json");
    let mut failures = Vec::new();
    for entry in &corpus {
        assert!(
            !entry.expect.is_empty(),
            "poisoned entry {:?} expects nothing",
            entry.name
        );
        let findings = scanner.scan(&entry.kind, &entry.definition, &entry.other_tools);
        let missing: Vec<String> = entry
            .expect
            .iter()
            .filter(|x| {
                !findings
                    .iter()
                    .any(|f| f.rule == x.rule && f.severity == x.severity)
            })
            .map(|x| format!("{} ({:?})", x.rule, x.severity))
            .collect();
        if !missing.is_empty() {
            failures.push(format!(
                "{}: missing {}\n  found:\n{}",
                entry.name,
                missing.join(", "),
                describe(&findings)
            ));
        }
    }
    if !failures.is_empty() {
        for f in &failures {
            eprintln!("FAIL {f}");
        }
        panic!(
            "{} of {} poisoned entries were not caught as expected",
            failures.len(),
            corpus.len()
        );
    }
}

#[test]
fn benign_definitions_stay_quiet() {
    let scanner = Scanner::new(&[]).expect("built-in rules compile");
    let corpus = load("benign.json");
    assert!(
        corpus.len() >= 35,
        "benign corpus has only {} entries",
        corpus.len()
    );
    check_kinds(&corpus, "benign.json");
    let mut failures = Vec::new();
    for entry in &corpus {
        assert!(
            entry.expect.is_empty(),
            "benign entry {:?} has expectations",
            entry.name
        );
        let findings = scanner.scan(&entry.kind, &entry.definition, &entry.other_tools);
        if worst(&findings).is_some_and(|s| s > Severity::Info) {
            failures.push(format!("{}:\n{}", entry.name, describe(&findings)));
        }
    }
    if !failures.is_empty() {
        for f in &failures {
            eprintln!("FAIL {f}");
        }
        panic!(
            "{} of {} benign entries were flagged above Info",
            failures.len(),
            corpus.len()
        );
    }
}
