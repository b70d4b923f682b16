use std::sync::Arc;

use super::*;

const BUILTIN: [&str; 9] = [
    PRIVATE_KEY,
    CLOUD_KEY,
    JWT,
    BEARER,
    HIGH_ENTROPY,
    EMAIL,
    PHONE,
    CARD,
    IBAN,
];

fn guard_with(rules: &[(&str, Action)], window: usize) -> Arc<Guard> {
    let rules: Vec<(String, Action)> = rules.iter().map(|(r, a)| (r.to_string(), *a)).collect();
    Arc::new(Guard::new(&rules, None, window).unwrap())
}

fn guard(rules: &[(&str, Action)]) -> Arc<Guard> {
    guard_with(rules, DEFAULT_WINDOW)
}

fn all(action: Action) -> Arc<Guard> {
    let rules: Vec<(&str, Action)> = BUILTIN.iter().map(|r| (*r, action)).collect();
    guard(&rules)
}

/// A JSON-RPC tool result whose one text content is `text`.
fn result(text: &str) -> String {
    serde_json::json!({
        "jsonrpc": "2.0",
        "id": 7,
        "result": {"content": [{"type": "text", "text": text}], "isError": false}
    })
    .to_string()
}

fn whole(g: &Arc<Guard>, body: &str) -> (String, Vec<Finding>) {
    let (out, findings) = g.scan_whole(body.as_bytes()).unwrap();
    (String::from_utf8(out.to_vec()).unwrap(), findings)
}

fn text_of(out: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(out).expect("the output is JSON");
    v["result"]["content"][0]["text"]
        .as_str()
        .unwrap()
        .to_string()
}

fn rules_of(findings: &[Finding]) -> Vec<&str> {
    findings.iter().map(|f| f.rule.as_str()).collect()
}

/// Feeds `body` in chunks of `size`; the output, the findings and the most held at once.
fn chunked(
    g: &Arc<Guard>,
    body: &[u8],
    size: usize,
) -> Result<(Vec<u8>, Vec<Finding>, usize), Blocked> {
    let mut scan = g.scan();
    let mut out = Vec::with_capacity(body.len());
    let mut held = 0;
    for chunk in body.chunks(size) {
        let piece = scan.push(chunk)?;
        assert!(piece.len() <= chunk.len() + held + 64 * 20);
        out.extend_from_slice(&piece);
        held = held.max(scan.held());
    }
    out.extend_from_slice(&scan.finish()?);
    Ok((out, scan.findings().to_vec(), held))
}

const PEM: &str = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA3Tz2mr7SZiAMfQyuvBjM9Oi+Z1KvW2NlbGJhc2U2NHN0dWZm\nq1w2e3r4t5y6u7i8o9p0AaSsDdFfGgHhJjKkLlZzXxCcVvBbNnMm1234567890==\n-----END RSA PRIVATE KEY-----";
const JWT_TOKEN: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";

// ---- configuration ----

#[test]
fn actions_are_lowercase_in_config() {
    assert_eq!(
        serde_json::to_string(&Action::Redact).unwrap(),
        "\"redact\""
    );
    let a: Action = serde_json::from_str("\"block\"").unwrap();
    assert_eq!(a, Action::Block);
    assert!(serde_json::from_str::<Action>("\"Block\"").is_err());
}

#[test]
fn unknown_rule_is_named_with_the_valid_ones() {
    let err = Guard::new(&[("ssn".into(), Action::Flag)], None, DEFAULT_WINDOW).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("\"ssn\""), "{msg}");
    for id in BUILTIN.iter().chain([&INJECTION]) {
        assert!(msg.contains(id), "{msg} lacks {id}");
    }
}

#[test]
fn configuration_errors() {
    let rule = |id: &str| vec![(id.to_string(), Action::Flag)];
    assert_eq!(
        Guard::new(&rule(INJECTION), None, DEFAULT_WINDOW).unwrap_err(),
        GuardError::MissingInjectionCheck
    );
    let twice = vec![
        (EMAIL.to_string(), Action::Flag),
        (EMAIL.to_string(), Action::Redact),
    ];
    assert_eq!(
        Guard::new(&twice, None, DEFAULT_WINDOW).unwrap_err(),
        GuardError::DuplicateRule(EMAIL.into())
    );
    for w in [0, 1023, MAX_WINDOW + 1] {
        let err = Guard::new(&rule(EMAIL), None, w).unwrap_err();
        assert_eq!(err, GuardError::Window(w));
        assert!(err.to_string().contains("between 1024 and 1048576"));
    }
    assert!(Guard::new(&rule(EMAIL), None, MIN_WINDOW).is_ok());
    assert!(Guard::new(&rule(EMAIL), None, MAX_WINDOW).is_ok());
    // A check supplied while the rule is off is simply unused.
    let check: InjectionCheck = Arc::new(|_| Some(("x".into(), 0, 1)));
    let g = Arc::new(Guard::new(&rule(EMAIL), Some(check), DEFAULT_WINDOW).unwrap());
    assert!(whole(&g, &result("hello")).1.is_empty());
}

// ---- detectors ----

fn finds(rule: &str, text: &str) -> bool {
    let g = guard(&[(rule, Action::Flag)]);
    let (out, findings) = whole(&g, &result(text));
    assert_eq!(out, result(text), "flag changes nothing");
    findings.iter().any(|f| f.rule == rule)
}

#[test]
fn private_keys() {
    assert!(finds(PRIVATE_KEY, PEM));
    for kind in ["", "EC ", "OPENSSH ", "DSA ", "ENCRYPTED "] {
        let key = format!(
            "-----BEGIN {kind}PRIVATE KEY-----\nMIIBVgIBADANBg\n-----END {kind}PRIVATE KEY-----"
        );
        assert!(finds(PRIVATE_KEY, &key), "{kind}");
    }
    assert!(!finds(
        PRIVATE_KEY,
        "-----BEGIN PUBLIC KEY-----\nMIIBIjAN\n-----END PUBLIC KEY-----"
    ));
    assert!(!finds(
        PRIVATE_KEY,
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"
    ));

    let g = guard(&[(PRIVATE_KEY, Action::Redact)]);
    let (out, _) = whole(&g, &result(&format!("key:\n{PEM}\nthat was it")));
    assert_eq!(text_of(&out), "key:\n[REDACTED:private-key]\nthat was it");
    // No END marker: the BEGIN line and the body that follows.
    let (out, _) = whole(
        &g,
        &result("x -----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nAbc+/=;rest"),
    );
    assert_eq!(text_of(&out), "x [REDACTED:private-key];rest");
}

#[test]
fn cloud_keys() {
    for key in [
        "AKIAIOSFODNN7EXAMPLE",
        "ASIAY34FZKBOKMUTVV7A",
        "AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe",
        "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",
        "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
        "xoxb-1234567890-abcdefghijklmnop",
        "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
        "rk_live_4eC39HqLyjWDarjtT1zdp7dc",
    ] {
        assert!(finds(CLOUD_KEY, &format!("token {key} here")), "{key}");
    }
    assert!(!finds(
        CLOUD_KEY,
        "AKIA is a prefix; sk_test_4eC39HqLyjWDarjtT1zdp7dc"
    ));
    let g = guard(&[(CLOUD_KEY, Action::Redact)]);
    let (out, _) = whole(
        &g,
        &result("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\nnext"),
    );
    assert_eq!(
        text_of(&out),
        "aws_secret_access_key = [REDACTED:cloud-key]\nnext"
    );
    let (out, _) = whole(
        &g,
        &result(
            "DefaultEndpointsProtocol=https;AccountName=x;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;EndpointSuffix=core.windows.net",
        ),
    );
    assert_eq!(
        text_of(&out),
        "DefaultEndpointsProtocol=https;AccountName=x;AccountKey=[REDACTED:cloud-key];EndpointSuffix=core.windows.net"
    );
}

#[test]
fn jwts() {
    assert!(finds(JWT, &format!("session={JWT_TOKEN};")));
    assert!(!finds(JWT, "eyJhbGciOiJIUzI1NiJ9 alone"));
}

#[test]
fn bearer_keeps_the_scheme() {
    let g = guard(&[(BEARER, Action::Redact)]);
    let (out, f) = whole(
        &g,
        &result("curl -H 'Authorization: Bearer abc123DEF456ghi789' x"),
    );
    assert_eq!(
        text_of(&out),
        "curl -H 'Authorization: Bearer [REDACTED:bearer-token]' x"
    );
    assert_eq!(
        f,
        vec![Finding {
            rule: BEARER.into(),
            action: Action::Redact,
            count: 1
        }]
    );
    let (out, _) = whole(&g, &result("Authorization: Basic dXNlcjpwYXNzd29yZA=="));
    assert_eq!(
        text_of(&out),
        "Authorization: Basic [REDACTED:bearer-token]"
    );
    let (out, _) = whole(&g, &result("use bearer 9f8e7d6c5b4a39281706 then"));
    assert_eq!(text_of(&out), "use bearer [REDACTED:bearer-token] then");
    for prose in [
        "the bearer of bad news",
        "a Bearer instrumentalities clause",
        "Authorization: Bearer <token>",
    ] {
        assert!(!finds(BEARER, prose), "{prose}");
    }
}

#[test]
fn high_entropy() {
    assert!(finds(
        HIGH_ENTROPY,
        "secret: 8Zk3qLw9Vx2Rt5Yp7Nb4Mc6Hd1Jf0Gs3Ka8"
    ));
    for ordinary in [
        "commit 3f786850e387550fdab836ed7e6dc881de23001b",
        "digest 2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae",
        "id 123e4567-e89b-12d3-a456-426614174000",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1",
        "https://example.com/docs/getting-started/installation-guide-v2",
        "get_user_account_settings_by_id_v2_handler",
    ] {
        assert!(!finds(HIGH_ENTROPY, ordinary), "{ordinary}");
    }
}

#[test]
fn emails_even_when_escaped() {
    let g = guard(&[(EMAIL, Action::Redact)]);
    let body = r#"{"text":"write to jane.doe\u0040example.co.uk today"}"#;
    let (out, f) = whole(&g, body);
    assert_eq!(out, r#"{"text":"write to [REDACTED:email] today"}"#);
    assert_eq!(f[0].count, 1);
    assert!(!finds(EMAIL, "user@localhost and @mentions"));
}

#[test]
fn phones() {
    for phone in [
        "+14155552671",
        "+1 (415) 555-2671",
        "+44 20 7946 0958",
        "+49 30 1234 5678",
        "(415) 555-2671",
        "415-555-2671",
        "415.555.2671",
        "020 7946 0958",
        "01 23 45 67 89",
    ] {
        assert!(finds(PHONE, &format!("call {phone} now")), "{phone}");
    }
}

#[test]
fn cards() {
    for card in [
        "4111 1111 1111 1111",
        "5500-0000-0000-0004",
        "378282246310005",
        "6011111111111117",
    ] {
        assert!(finds(CARD, &format!("card {card}.")), "{card}");
    }
    assert!(!finds(CARD, "card 4111111111111112"));
    assert!(!finds(CARD, "id 14111111111111111"));
}

#[test]
fn ibans() {
    assert!(finds(IBAN, "pay GB82WEST12345698765432 now"));
    assert!(finds(IBAN, "pay DE89 3704 0044 0532 0130 00 now"));
    assert!(!finds(IBAN, "pay GB83WEST12345698765432 now"));
}

#[test]
fn ordinary_text_is_not_flagged() {
    let g = all(Action::Flag);
    for text in [
        "version 1.2.3",
        "call me at the office",
        "due 2026-12-03",
        "at 2026-12-03T10:20:30Z and 2026-12-03 10:20:30.123+01:00",
        "commit 3f786850e387550fdab836ed7e6dc881de23001b",
        "request 123e4567-e89b-12d3-a456-426614174000",
        "order 12345678",
        "order 1234567890123",
        "server 192.168.100.200 port 8080",
        "between 100 200 300 and 400",
        "released 03/12/2026 as v10.12.13",
        "took 1733212800000 ms",
    ] {
        let (_, f) = whole(&g, &result(text));
        assert!(f.is_empty(), "{text}: {f:?}");
    }
}

#[test]
fn binary_content_skips_only_high_entropy() {
    let g = all(Action::Flag);
    let png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";
    let body = format!(
        r#"{{"result":{{"content":[{{"type":"image","data":"{png}","mimeType":"image/png"}},{{"type":"resource","resource":{{"uri":"file:///x","blob":"{png}"}}}}]}}}}"#
    );
    let (out, f) = whole(&g, &body);
    assert_eq!(out, body);
    assert!(f.is_empty(), "{f:?}");
    // Elsewhere the same token is high-entropy.
    let (_, f) = whole(&g, &format!(r#"{{"text":"{png}"}}"#));
    assert_eq!(rules_of(&f), [HIGH_ENTROPY]);
    // Other detectors still look at data values, and "data" as a value is no key.
    let (_, f) = whole(&g, r#"{"data":"AKIAIOSFODNN7EXAMPLE"}"#);
    assert_eq!(rules_of(&f), [CLOUD_KEY]);
    let (_, f) = whole(&g, &format!(r#"{{"type":"data","x":"{png}"}}"#));
    assert_eq!(rules_of(&f), [HIGH_ENTROPY]);
}

// ---- actions and overlaps ----

#[test]
fn redaction_keeps_json_valid_and_other_escapes() {
    let g = all(Action::Redact);
    let body = r#"{"a":"caf\u00e9 \"quoted\" \ud83d\ude00 mail x@example.com\ttab\\ end","b":"keep \u00e9 \/ as is"}"#;
    let (out, f) = whole(&g, body);
    assert_eq!(
        out,
        r#"{"a":"caf\u00e9 \"quoted\" \ud83d\ude00 mail [REDACTED:email]\ttab\\ end","b":"keep \u00e9 \/ as is"}"#
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["a"],
        "café \"quoted\" 😀 mail [REDACTED:email]\ttab\\ end"
    );
    assert_eq!(
        f,
        vec![Finding {
            rule: EMAIL.into(),
            action: Action::Redact,
            count: 1
        }]
    );
}

#[test]
fn unmatched_output_is_byte_identical() {
    let g = all(Action::Redact);
    let body = "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"text\":\"caf\\u00E9 \\ud83d\\ude00 line\\nnext \\/ é 漢字\"} }\n";
    assert_eq!(whole(&g, body).0, body);
}

#[test]
fn pem_with_escaped_newlines() {
    let g = all(Action::Redact);
    let body = result(&format!("here: {PEM} bye, mail me at a@b.io"));
    assert!(body.contains("\\n"));
    let (out, f) = whole(&g, &body);
    assert_eq!(
        text_of(&out),
        "here: [REDACTED:private-key] bye, mail me at [REDACTED:email]"
    );
    assert_eq!(rules_of(&f), [PRIVATE_KEY, EMAIL]);
}

#[test]
fn block_sticks() {
    let g = guard(&[(EMAIL, Action::Redact), (CARD, Action::Block)]);
    let body = result("mail a@b.io card 4111 1111 1111 1111");
    let mut scan = g.scan();
    let err = scan.push(body.as_bytes()).unwrap_err();
    assert_eq!(err, Blocked { rule: CARD.into() });
    assert_eq!(
        err.to_string(),
        "the response was blocked by the output guardrail \"payment-card\""
    );
    assert_eq!(scan.push(b"more").unwrap_err(), err);
    assert_eq!(scan.finish().unwrap_err(), err);
    assert_eq!(g.scan_whole(body.as_bytes()).unwrap_err(), err);
    assert!(
        scan.findings()
            .iter()
            .any(|f| f.rule == CARD && f.action == Action::Block)
    );
}

#[test]
fn flag_counts_without_changing() {
    let g = guard(&[(EMAIL, Action::Flag)]);
    let body = r#"{"a":"x@example.com","b":["y@example.com and z@example.org"],"x@example.net":1}"#;
    let (out, f) = whole(&g, body);
    assert_eq!(out, body);
    assert_eq!(
        f,
        vec![Finding {
            rule: EMAIL.into(),
            action: Action::Flag,
            count: 4
        }]
    );
}

#[test]
fn card_beats_phone_and_secrets_hide_what_they_contain() {
    let g = all(Action::Redact);
    let (out, f) = whole(&g, &result("card 4111 1111 1111 1111 ok"));
    assert_eq!(text_of(&out), "card [REDACTED:payment-card] ok");
    assert_eq!(rules_of(&f), [CARD]);
    // A token whose payload decodes to an email: counted once, as the JWT.
    let (out, f) = whole(&g, &result(&format!("Bearer {JWT_TOKEN}")));
    assert_eq!(text_of(&out), "Bearer [REDACTED:jwt]");
    assert_eq!(
        f,
        vec![Finding {
            rule: JWT.into(),
            action: Action::Redact,
            count: 1
        }]
    );
    // The strongest action wins an overlap.
    let g = guard(&[(JWT, Action::Flag), (HIGH_ENTROPY, Action::Block)]);
    let body = result("t eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.x");
    assert_eq!(
        g.scan_whole(body.as_bytes()).unwrap_err().rule,
        HIGH_ENTROPY
    );
}

#[test]
fn what_sticks_out_of_a_weaker_match_is_still_redacted() {
    let g = all(Action::Redact);
    // A JWT's signature runs on into a longer token: the JWT, then the rest of the token.
    let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.abc";
    let (out, f) = whole(
        &g,
        &result(&format!("t {jwt}/8Zk3qLw9Vx2Rt5Yp7Nb4Mc6Hd1Jf0Gs3Ka8 end")),
    );
    assert_eq!(text_of(&out), "t [REDACTED:jwt][REDACTED:high-entropy] end");
    assert_eq!(rules_of(&f), [JWT, HIGH_ENTROPY]);
    // A key inside a token: both sides of it, counted once.
    let token = "8Zk3qLw9Vx2Rt5Yp7Nb4-AKIAIOSFODNN7EXAMPLE-Mc6Hd1Jf0Gs3Ka8qZ";
    let (out, f) = whole(&g, &result(&format!("t {token} end")));
    assert_eq!(
        text_of(&out),
        "t [REDACTED:high-entropy][REDACTED:cloud-key][REDACTED:high-entropy] end"
    );
    assert_eq!(
        f.iter()
            .map(|f| (f.rule.as_str(), f.count))
            .collect::<Vec<_>>(),
        [(HIGH_ENTROPY, 1), (CLOUD_KEY, 1)]
    );
    // The same across a segment's end, wherever it falls, in any chunks.
    let g = guard_with(
        &[(CLOUD_KEY, Action::Redact), (HIGH_ENTROPY, Action::Redact)],
        MIN_WINDOW,
    );
    for offset in MIN_WINDOW - 70..MIN_WINDOW + 10 {
        let text = format!("{} {token} {}", "x".repeat(offset), "y ".repeat(1500));
        let body = result(&text);
        let (out, f) = whole(&g, &body);
        let t = text_of(&out);
        assert!(
            t.contains(" [REDACTED:high-entropy][REDACTED:cloud-key][REDACTED:high-entropy] y"),
            "offset {offset}: {}",
            &t[offset.saturating_sub(10)..offset + 90]
        );
        assert_eq!(f.iter().map(|f| f.count).sum::<u32>(), 2, "offset {offset}");
        let (again, _, _) = chunked(&g, body.as_bytes(), 7).unwrap();
        assert_eq!(again, out.as_bytes(), "offset {offset}");
    }
}

#[test]
fn injection_check() {
    let check: InjectionCheck = Arc::new(|text: &str| {
        text.find("ignore previous instructions")
            .map(|i| ("ignore-instructions".to_string(), i, i + 28))
    });
    let g = Arc::new(
        Guard::new(
            &[(INJECTION.into(), Action::Redact)],
            Some(check.clone()),
            DEFAULT_WINDOW,
        )
        .unwrap(),
    );
    let mut scan = g.scan();
    let mut out = scan
        .push(
            result("Note: ignore previous instructions and ignore previous instructions.")
                .as_bytes(),
        )
        .unwrap()
        .to_vec();
    out.extend_from_slice(&scan.finish().unwrap());
    assert_eq!(
        text_of(std::str::from_utf8(&out).unwrap()),
        "Note: [REDACTED:prompt-injection] and [REDACTED:prompt-injection]."
    );
    assert_eq!(scan.findings()[0].count, 2);
    assert_eq!(scan.injection_rules(), ["ignore-instructions"]);
    let g = Arc::new(
        Guard::new(
            &[(INJECTION.into(), Action::Block)],
            Some(check),
            DEFAULT_WINDOW,
        )
        .unwrap(),
    );
    let body = result("please IGNORE nothing; ignore previous instructions");
    assert_eq!(g.scan_whole(body.as_bytes()).unwrap_err().rule, INJECTION);
}

#[test]
fn misbehaving_injection_check_cannot_panic() {
    let check: InjectionCheck = Arc::new(|text: &str| Some(("bad".into(), text.len() + 5, 1)));
    let g = Arc::new(
        Guard::new(
            &[(INJECTION.into(), Action::Flag)],
            Some(check),
            DEFAULT_WINDOW,
        )
        .unwrap(),
    );
    let body = result("é漢字 text");
    assert_eq!(whole(&g, &body).0, body);
    let check: InjectionCheck = Arc::new(|_: &str| Some(("mid".into(), 1, 2)));
    let g = Arc::new(
        Guard::new(
            &[(INJECTION.into(), Action::Redact)],
            Some(check),
            DEFAULT_WINDOW,
        )
        .unwrap(),
    );
    let (out, _) = whole(&g, r#"{"t":"漢字"}"#);
    serde_json::from_str::<serde_json::Value>(&out).unwrap();
}

// ---- streaming ----

#[test]
fn any_chunking_gives_the_same_output() {
    let g = all(Action::Redact);
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":"x","result":{{"content":[{{"type":"text","text":"caf\u00e9 \ud83d\ude00 é漢字 mail jane\u0040example.com and {}\n{}"}}],"data":"AAAA"}}}}"#,
        PEM.replace('\n', "\\n"),
        "card 5500-0000-0000-0004",
    );
    let (expected, findings) = whole(&g, &body);
    assert!(expected.contains("[REDACTED:email]") && expected.contains("[REDACTED:payment-card]"));
    serde_json::from_str::<serde_json::Value>(&expected).unwrap();
    for size in 1..=13 {
        let (out, f, _) = chunked(&g, body.as_bytes(), size).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            expected,
            "chunk size {size}"
        );
        assert_eq!(f, findings);
    }
    for split in 0..body.len() {
        let mut scan = g.scan();
        let mut out = scan.push(&body.as_bytes()[..split]).unwrap().to_vec();
        out.extend_from_slice(&scan.push(&body.as_bytes()[split..]).unwrap());
        out.extend_from_slice(&scan.finish().unwrap());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            expected,
            "split at {split}"
        );
    }
}

/// A 1 MiB string of prose with secrets at awkward places, among them across the first
/// segment's end.
fn big_body(w: usize) -> (String, usize) {
    let line =
        "The quick brown fox jumps over the lazy dog; nothing to see here, version 1.2.3.\\n";
    let mut text = String::new();
    let mut planted = 0;
    let mut next = w - 7;
    while text.len() < 1 << 20 {
        if text.len() >= next {
            text.push_str(
                [
                    "mail jane@example.com ",
                    "key AKIAIOSFODNN7EXAMPLE ",
                    "card 4111 1111 1111 1111 ",
                ][planted % 3],
            );
            planted += 1;
            next += w + 1001;
        }
        text.push_str(line);
    }
    (
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"result":{{"content":[{{"type":"text","text":"{text}"}}]}}}}"#
        ),
        planted,
    )
}

#[test]
fn megabyte_string_in_any_chunks() {
    let g = all(Action::Redact);
    let w = DEFAULT_WINDOW;
    let (body, planted) = big_body(w);
    let (expected, findings) = whole(&g, &body);
    let v: serde_json::Value = serde_json::from_str(&expected).unwrap();
    let text = v["result"]["content"][0]["text"].as_str().unwrap();
    let redacted = text.matches("[REDACTED:").count();
    assert_eq!(redacted, planted);
    assert_eq!(
        findings.iter().map(|f| f.count as usize).sum::<usize>(),
        planted
    );
    for size in [1, 7, 64 * 1024] {
        let (out, f, held) = chunked(&g, body.as_bytes(), size).unwrap();
        assert!(out == expected.as_bytes(), "chunk size {size}");
        assert_eq!(f, findings);
        assert!(held <= 2 * w + 16, "held {held} with chunk size {size}");
    }
}

#[test]
fn match_across_segments_with_small_window() {
    let g = guard_with(
        &[(EMAIL, Action::Redact), (PRIVATE_KEY, Action::Redact)],
        MIN_WINDOW,
    );
    for offset in (MIN_WINDOW - 40..MIN_WINDOW + 40).chain(2 * MIN_WINDOW - 30..2 * MIN_WINDOW + 10)
    {
        let text = format!(
            "{}someone.else@example.org {}",
            "x ".repeat(offset / 2),
            "y ".repeat(1500)
        );
        let body = result(&text);
        let (out, f) = whole(&g, &body);
        assert!(
            text_of(&out).contains(" [REDACTED:email] "),
            "offset {offset}"
        );
        assert_eq!(f[0].count, 1);
        let (again, _, held) = chunked(&g, body.as_bytes(), 5).unwrap();
        assert_eq!(again, out.as_bytes());
        assert!(held <= 2 * MIN_WINDOW + 16);
    }
    // A key longer than the window: redacted up to the window; high-entropy takes the rest.
    let line = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2\n";
    let key = format!(
        "-----BEGIN PRIVATE KEY-----\n{}-----END PRIVATE KEY-----",
        line.repeat(60)
    );
    let body = result(&format!("k {key} done"));
    let (out, f) = whole(&g, &body);
    let t = text_of(&out);
    assert!(t.starts_with("k [REDACTED:private-key]"), "{t}");
    assert_eq!(rules_of(&f), [PRIVATE_KEY]);
    let g = guard_with(
        &[
            (PRIVATE_KEY, Action::Redact),
            (HIGH_ENTROPY, Action::Redact),
        ],
        MIN_WINDOW,
    );
    let t = text_of(&whole(&g, &body).0);
    assert!(!t.contains("mNkZWZnaGlqa2xt"), "{t}");
}

#[test]
fn escape_dense_text_stays_bounded() {
    let g = guard_with(&[(EMAIL, Action::Redact)], MIN_WINDOW);
    let mut text = "\\u0041".repeat(5000);
    text.push_str("\\u0061\\u0040example.com ");
    text.push_str(&"\\u00e9".repeat(5000));
    let body = format!(r#"{{"t":"{text}"}}"#);
    let (out, f, held) = chunked(&g, body.as_bytes(), 3).unwrap();
    assert!(held <= 2 * MIN_WINDOW + 12, "held {held}");
    assert_eq!(f[0].count, 1);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let t = v["t"].as_str().unwrap();
    assert!(t.contains("A[REDACTED:email] é"));
}

#[test]
fn not_json_passes_through() {
    let g = all(Action::Redact);
    let mut scan = g.scan();
    let mut out = scan
        .push(b"plain text with a@b.io outside strings\n")
        .unwrap()
        .to_vec();
    out.extend_from_slice(
        &scan
            .push(b"then \"an unterminated string with x@example.com")
            .unwrap(),
    );
    out.extend_from_slice(&scan.finish().unwrap());
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "plain text with a@b.io outside strings\nthen \"an unterminated string with [REDACTED:email]"
    );
    // A dangling escape is emitted as it came.
    assert_eq!(whole(&g, "\"abc\\u00").0, "\"abc\\u00");
    assert_eq!(whole(&g, "\"abc\\").0, "\"abc\\");
}

#[test]
fn garbage_never_panics_and_flags_change_nothing() {
    let g = all(Action::Flag);
    let mut state = 0x2545F4914F6CDD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let alphabet = b"\"\\u0dD8eE9fF{}[]:, \n\x00\xc3\xa9\xe6\xbc\xa2\xff\xf0\x9f@.+-4";
    for round in 0..300 {
        let len = (next() % 600) as usize;
        let body: Vec<u8> = (0..len)
            .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
            .collect();
        let size = 1 + (next() % 17) as usize;
        let (out, _, _) = chunked(&g, &body, size).unwrap();
        assert_eq!(out, body, "round {round}");
    }
    // Long garbage through a small window, so that segments are cut inside it.
    let rules: Vec<(&str, Action)> = BUILTIN.iter().map(|r| (*r, Action::Flag)).collect();
    let small = guard_with(&rules, MIN_WINDOW);
    for round in 0..40 {
        let len = 2000 + (next() % 6000) as usize;
        let body: Vec<u8> = (0..len)
            .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
            .collect();
        let (out, _, held) = chunked(&small, &body, 1 + (next() % 300) as usize).unwrap();
        assert_eq!(out, body, "long round {round}");
        assert!(held <= 2 * MIN_WINDOW + 12, "held {held}");
    }
    let g = all(Action::Redact);
    for _ in 0..300 {
        let len = (next() % 600) as usize;
        let body: Vec<u8> = (0..len)
            .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
            .collect();
        let _ = chunked(&g, &body, 1 + (next() % 9) as usize);
    }
}

#[test]
fn surrogates() {
    let g = guard(&[(EMAIL, Action::Redact)]);
    // A lone surrogate stays as it came; the email after it is still found.
    let (out, _) = whole(&g, r#"{"t":"\ud83d x@example.com \ude00"}"#);
    assert_eq!(out, r#"{"t":"\ud83d [REDACTED:email] \ude00"}"#);
    // An email spelled with escapes, split between chunks at every byte.
    let body = r#"{"t":"\u0078\u0040\u0065xample.com\ud83d\ude00"}"#;
    let (out, _, _) = chunked(&g, body.as_bytes(), 1).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        r#"{"t":"[REDACTED:email]\ud83d\ude00"}"#
    );
}

#[test]
fn shareable_across_tasks() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Guard>();
    send::<Scan>();
}

#[test]
fn generated_json_stays_valid_when_redacted() {
    let g = guard_with(
        &BUILTIN
            .iter()
            .map(|r| (*r, Action::Redact))
            .collect::<Vec<_>>(),
        MIN_WINDOW,
    );
    let mut state = 0x9E3779B97F4A7C15u64;
    let mut next = move |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let pieces = [
        "plain words ",
        "é漢😀",
        "\n",
        "\"",
        "\\",
        "x@example.com",
        "AKIAIOSFODNN7EXAMPLE",
        "4111 1111 1111 1111",
        "+44 20 7946 0958",
        JWT_TOKEN,
        PEM,
        "Bearer abc123def456ghi789jkl",
        "8Zk3qLw9Vx2Rt5Yp7Nb4Mc6Hd1Jf0Gs3Ka8",
        "\u{1}",
    ];
    for round in 0..60 {
        let mut text = String::new();
        for _ in 0..next(400) {
            text.push_str(pieces[next(pieces.len())]);
            text.push(' ');
        }
        // serde_json escapes quotes, backslashes and controls; \u-escape some letters too.
        let body = result(&text).replace("plain", "pl\\u0061in");
        let (expected, _) = whole(&g, &body);
        let v: serde_json::Value = serde_json::from_str(&expected).expect("valid JSON out");
        let out_text = v["result"]["content"][0]["text"].as_str().unwrap();
        for secret in [
            "x@example.com",
            "AKIAIOSFODNN7EXAMPLE",
            "4111 1111",
            "7946 0958",
            "MIIEpAIBAAKCAQEA",
            "abc123def456",
        ] {
            if let Some(at) = out_text.find(secret) {
                let lo = at.saturating_sub(60);
                let ctx: String = out_text
                    .chars()
                    .skip(out_text[..lo].chars().count())
                    .take(140)
                    .collect();
                panic!("round {round}: {secret} leaked in {ctx:?}");
            }
        }
        let size = 1 + next(100);
        let (out, _, held) = chunked(&g, body.as_bytes(), size).unwrap();
        assert!(
            out == expected.as_bytes(),
            "round {round}, chunks of {size}"
        );
        assert!(held <= 2 * MIN_WINDOW + 12);
    }
}
