use super::*;
use crate::config::{ClaimPaths, Config};
use serde_json::json;
use std::path::Path;

fn principal(claims: Value) -> Principal {
    Principal::hypothetical(claims, &ClaimPaths::default()).unwrap()
}

fn policy(yaml_rules: &str) -> CompiledPolicy {
    let yaml = format!(
        "servers:\n  - name: s\n    path: /mcp\n    upstreams: [crm, files]\n    auth: {{ api_keys: true }}\n    policy:\n{yaml_rules}\nupstreams:\n  crm: {{ kind: http, url: \"http://127.0.0.1:9/\" }}\n  files: {{ kind: http, url: \"http://127.0.0.1:9/\" }}\n"
    );
    let config = Config::from_yaml(&yaml, Path::new("t.yaml")).unwrap_or_else(|e| panic!("{e}"));
    CompiledPolicy::compile(config.servers[0].policy.as_ref().unwrap()).unwrap()
}

fn tool<'a>(name: &'a str, upstream: &'a str) -> Facts<'a> {
    Facts {
        server: "s",
        method: "tools/call",
        kind: FunctionKind::Tool,
        name,
        upstream,
    }
}

const RULES: &str = r#"      default: deny
      rules:
        - name: no-contractors
          effect: deny
          groups: [contractors]
        - name: crm-readers
          tools: "crm__*"
          scopes: [crm:read]
          groups: [sales]
        - name: big-transfers
          effect: deny
          tools: crm__transfer
          arguments: "args.amount > 1000"
        - name: transfers-need-write
          tools: crm__transfer
          require_scopes: [crm:write]
        - name: files-for-engineers
          upstreams: [files]
          when: 'principal.groups.exists(g, g == "engineering") && request.name.startsWith("files__")'
"#;

#[test]
fn first_matching_rule_decides_and_is_named() {
    let p = policy(RULES);
    let sales = principal(json!({"sub": "s1", "groups": ["sales"]}));
    let reader = principal(json!({"sub": "r1", "scope": "crm:read"}));
    let engineer = principal(json!({"sub": "e1", "groups": ["engineering"]}));
    let contractor = principal(json!({"sub": "c1", "groups": ["contractors", "sales"]}));

    let d = p.decide(Some(&sales), &tool("crm__lookup", "crm"), None);
    assert_eq!((d.effect, &*d.rule), (Effect::Allow, "crm-readers"));
    assert!(
        p.decide(Some(&reader), &tool("crm__lookup", "crm"), None)
            .allowed()
    );
    let d = p.decide(Some(&contractor), &tool("crm__lookup", "crm"), None);
    assert_eq!((d.effect, &*d.rule), (Effect::Deny, "no-contractors"));
    let d = p.decide(Some(&engineer), &tool("crm__lookup", "crm"), None);
    assert_eq!((d.effect, &*d.rule), (Effect::Deny, "default"));
    let d = p.decide(Some(&engineer), &tool("files__read", "files"), None);
    assert_eq!((d.effect, &*d.rule), (Effect::Allow, "files-for-engineers"));
    assert!(
        !p.decide(Some(&sales), &tool("files__read", "files"), None)
            .allowed()
    );
    assert!(
        !p.decide(None, &tool("crm__lookup", "crm"), None).allowed(),
        "anonymous matches no principal list"
    );
}

#[test]
fn argument_rules_apply_to_calls_only() {
    let p = policy(RULES);
    let writer = principal(json!({"sub": "w", "groups": ["sales"], "scope": "crm:write"}));
    // crm-readers matches first for a sales member, so the transfer rules below it never apply.
    let d = p.decide(
        Some(&writer),
        &tool("crm__transfer", "crm"),
        Some(&json!({"amount": 5000})),
    );
    assert_eq!(&*d.rule, "crm-readers");
    let p = policy(
        &RULES
            .replace(
                "          groups: [sales]\n",
                "          groups: [sales]\n          effect: allow\n",
            )
            .replace(
                "        - name: crm-readers\n          tools: \"crm__*\"",
                "        - name: crm-readers\n          tools: \"crm__look*\"",
            ),
    );
    let listing = p.decide(Some(&writer), &tool("crm__transfer", "crm"), None);
    assert_eq!(
        (&*listing.rule, listing.require_scopes.clone()),
        ("transfers-need-write", vec!["crm:write".to_owned()])
    );
    let big = p.decide(
        Some(&writer),
        &tool("crm__transfer", "crm"),
        Some(&json!({"amount": 5000})),
    );
    assert_eq!((big.effect, &*big.rule), (Effect::Deny, "big-transfers"));
    let small = p.decide(
        Some(&writer),
        &tool("crm__transfer", "crm"),
        Some(&json!({"amount": 50})),
    );
    assert_eq!(
        (small.effect, &*small.rule),
        (Effect::Allow, "transfers-need-write")
    );
    // A condition that cannot be evaluated (no `amount`) fails closed for a deny rule.
    let odd = p.decide(
        Some(&writer),
        &tool("crm__transfer", "crm"),
        Some(&json!({"currency": "EUR"})),
    );
    assert_eq!((odd.effect, &*odd.rule), (Effect::Deny, "big-transfers"));
}

#[test]
fn a_broken_allow_condition_never_opens_access() {
    let p = policy(
        "      default: deny\n      rules:\n        - name: weird\n          when: 'principal.claims.level > 3'\n",
    );
    let d = p.decide(
        Some(&principal(json!({"sub": "x"}))),
        &tool("a", "crm"),
        None,
    );
    assert_eq!((d.effect, &*d.rule), (Effect::Deny, "default"));
    let d = p.decide(
        Some(&principal(json!({"sub": "x", "level": 5}))),
        &tool("a", "crm"),
        None,
    );
    assert_eq!((d.effect, &*d.rule), (Effect::Allow, "weird"));
}

#[test]
fn bad_rules_are_config_errors_with_positions() {
    let yaml = "servers:\n  - name: s\n    path: /mcp\n    upstreams: [crm]\n    policy:\n      rules:\n        - { name: a, when: 'principal.groups.exists(g, ' }\n        - { name: a, upstreams: [nope], effect: deny, require_scopes: [x] }\nupstreams:\n  crm: { kind: http, url: \"http://127.0.0.1:9/\" }\n";
    let err = Config::from_yaml(yaml, Path::new("t.yaml"))
        .unwrap_err()
        .to_string();
    for expected in [
        "servers[0].policy.rules[0].when: invalid CEL at line 1, column 28",
        "servers[0].policy.rules[1].name: \"a\" is used by another rule",
        "servers[0].policy.rules[1].upstreams: \"nope\" is not an upstream",
        "servers[0].policy.rules[1].require_scopes: only an `allow` rule",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in {err}");
    }
}

#[test]
fn no_policy_allows_everything() {
    let p = CompiledPolicy::open();
    assert!(p.is_open());
    assert!(p.decide(None, &tool("anything", "crm"), None).allowed());
}
