//! The keyring's tests: both sealed formats, rotation, tampering, the key rules, and values
//! sealed by the code that came before the keyring (which must keep opening).

use super::*;
use crate::config::Secret;

fn key_text(byte: u8) -> String {
    base64::engine::general_purpose::STANDARD.encode([byte; 32])
}

fn sealer(keys: &[(&str, String)]) -> Keyring {
    let keys: Vec<(String, Secret)> = keys
        .iter()
        .map(|(id, k)| ((*id).to_owned(), Secret::new(k.clone())))
        .collect();
    Keyring::new(&keys).unwrap()
}

fn new_err(keys: &[(&str, &str)]) -> String {
    let keys: Vec<(String, Secret)> = keys
        .iter()
        .map(|(id, k)| ((*id).to_owned(), Secret::new((*k).to_owned())))
        .collect();
    Keyring::new(&keys).unwrap_err().to_string()
}

const AAD: &[u8] = b"binding-0a1b\0github";

#[test]
fn round_trip() {
    let s = sealer(&[("a", key_text(1))]);
    let sealed = s.seal(b"gho_secret-token", AAD);
    assert!(sealed.starts_with("v1.a."), "{sealed}");
    assert_eq!(sealed.split('.').count(), 4);
    assert_eq!(s.open(&sealed, AAD).unwrap(), b"gho_secret-token");
    assert_eq!(s.current_key_id(), "a");
    // Fresh nonces: the same plaintext never seals to the same text.
    assert_ne!(s.seal(b"gho_secret-token", AAD), sealed);
    // An empty plaintext is fine too.
    assert_eq!(s.open(&s.seal(b"", b""), b"").unwrap(), b"");
}

#[test]
fn the_sealed_text_does_not_contain_the_plaintext() {
    let s = sealer(&[("a", key_text(1))]);
    let plain = "ya29.very-recognisable-access-token";
    let sealed = s.seal(plain.as_bytes(), AAD);
    assert!(!sealed.contains(plain));
    assert!(!sealed.contains("recognisable"));
    let encoded = URL_SAFE_NO_PAD.encode(plain);
    assert!(!sealed.contains(&encoded[..16]));
    assert!(sealed.bytes().all(|b| (0x21..=0x7e).contains(&b)));
}

#[test]
fn a_wrong_aad_fails() {
    let s = sealer(&[("a", key_text(1))]);
    let sealed = s.seal(b"token", AAD);
    assert!(matches!(
        s.open(&sealed, b"binding-0a1b\0gitlab"),
        Err(SealError::Rejected)
    ));
    assert!(matches!(s.open(&sealed, b""), Err(SealError::Rejected)));
}

#[test]
fn a_flipped_byte_fails() {
    let s = sealer(&[("a", key_text(1))]);
    let sealed = s.seal(b"token", AAD);
    let parts: Vec<&str> = sealed.split('.').collect();
    // Every byte of the nonce, ciphertext and tag is covered.
    for field in [2, 3] {
        let raw = URL_SAFE_NO_PAD.decode(parts[field]).unwrap();
        for i in 0..raw.len() {
            let mut bad = raw.clone();
            bad[i] ^= 0x01;
            let enc = URL_SAFE_NO_PAD.encode(&bad);
            let mut p = parts.clone();
            p[field] = &enc;
            assert!(
                matches!(s.open(&p.join("."), AAD), Err(SealError::Rejected)),
                "field {field} byte {i}"
            );
        }
    }
    // A flipped character of the text fails too (as malformed or rejected).
    let mut text = sealed.clone().into_bytes();
    let last = text.len() - 2;
    text[last] = if text[last] == b'A' { b'B' } else { b'A' };
    assert!(s.open(std::str::from_utf8(&text).unwrap(), AAD).is_err());
    // A relabelled key id does not open even when both ids hold the same key.
    let twins = sealer(&[("a", key_text(1)), ("b", key_text(1))]);
    let relabelled = sealed.replacen("v1.a.", "v1.b.", 1);
    assert!(matches!(
        twins.open(&relabelled, AAD),
        Err(SealError::Rejected)
    ));
}

#[test]
fn rotation_opens_old_values_and_seals_with_the_new_key() {
    let old = sealer(&[("a", key_text(1))]);
    let before = old.seal(b"old token", AAD);
    let rotated = sealer(&[("b", key_text(2)), ("a", key_text(1))]);
    assert_eq!(rotated.current_key_id(), "b");
    assert_eq!(rotated.open(&before, AAD).unwrap(), b"old token");
    let after = rotated.seal(b"new token", AAD);
    assert!(after.starts_with("v1.b."), "{after}");
    assert_eq!(rotated.open(&after, AAD).unwrap(), b"new token");
    // The old sealer does not know the new key.
    assert!(matches!(old.open(&after, AAD), Err(SealError::UnknownKey(k)) if k == "b"));
}

#[test]
fn an_unknown_key_id_or_a_different_key_fails() {
    let s = sealer(&[("a", key_text(1))]);
    let sealed = s.seal(b"token", AAD);
    let other = sealer(&[("z", key_text(1))]);
    match other.open(&sealed, AAD) {
        Err(SealError::UnknownKey(id)) => assert_eq!(id, "a"),
        other => panic!("{other:?}"),
    }
    // Same id, different key material.
    let impostor = sealer(&[("a", key_text(9))]);
    assert!(matches!(
        impostor.open(&sealed, AAD),
        Err(SealError::Rejected)
    ));
}

#[test]
fn malformed_values_fail() {
    let s = sealer(&[("a", key_text(1))]);
    let good = s.seal(b"token", AAD);
    let parts: Vec<&str> = good.split('.').collect();
    let short_body = format!("v1.a.{}.AAAA", parts[2]);
    let long_nonce = format!("v1.a.{}AAAA.{}", parts[2], parts[3]);
    for junk in [
        "",
        "v1",
        "v1.a",
        "v1.a.",
        "v1.a..",
        "v2.a.AAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAA",
        &good.replacen("v1.", "v2.", 1),
        &format!("{good}.x"),
        &good.replacen("v1.a.", "v1.a!.", 1),
        &good.replacen("v1.a.", "v1..", 1),
        "v1.a.!!!!.!!!!",
        &short_body,
        &long_nonce,
    ] {
        assert!(
            matches!(s.open(junk, AAD), Err(SealError::Malformed)),
            "{junk:?}: {:?}",
            s.open(junk, AAD)
        );
    }
}

#[test]
fn keys_are_checked_and_never_shown() {
    // Wrong length: the id and the length are named, the key is not.
    let short = base64::engine::general_purpose::STANDARD.encode([7u8; 16]);
    let e = new_err(&[("k1", &short)]);
    assert!(e.contains("\"k1\"") && e.contains("16 bytes"), "{e}");
    assert!(!e.contains(&short), "{e}");
    let long = base64::engine::general_purpose::STANDARD.encode([7u8; 33]);
    assert!(new_err(&[("k1", &long)]).contains("33 bytes"));
    let e = new_err(&[("k1", "not base64 at all!")]);
    assert!(e.contains("\"k1\"") && e.contains("base64"), "{e}");
    assert!(!e.contains("not base64 at all!"), "{e}");
    // Ids: non-empty, a restricted alphabet, unique.
    assert!(new_err(&[("", &key_text(1))]).contains("key id"));
    assert!(new_err(&[("a.b", &key_text(1))]).contains("key id"));
    assert!(new_err(&[("é", &key_text(1))]).contains("key id"));
    let e = new_err(&[("a", &key_text(1)), ("a", &key_text(2))]);
    assert!(e.contains("more than once"), "{e}");
    assert!(new_err(&[]).contains("at least one"));
    // Second key's problems are found as well.
    assert!(new_err(&[("a", &key_text(1)), ("b", "AAAA")]).contains("\"b\""));
}

#[test]
fn keys_are_accepted_in_either_alphabet_with_or_without_padding() {
    // Bytes chosen so that the two alphabets differ (`+`/`/` against `-`/`_`).
    let bytes = [0xfb_u8; 32];
    let encodings = [
        base64::engine::general_purpose::STANDARD.encode(bytes),
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes),
        base64::engine::general_purpose::URL_SAFE.encode(bytes),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes),
        format!(
            "{}\n",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        ),
    ];
    assert!(encodings[0].contains('+') || encodings[0].contains('/'));
    let reference = sealer(&[("k", encodings[0].clone())]);
    let sealed = reference.seal(b"token", AAD);
    for text in encodings {
        let s = sealer(&[("k", text.clone())]);
        assert_eq!(s.open(&sealed, AAD).unwrap(), b"token", "{text:?}");
    }
}

#[test]
fn debug_shows_key_ids_only() {
    let text = key_text(3);
    let s = sealer(&[("current", text.clone()), ("old-1", key_text(4))]);
    let d = format!("{s:?}");
    assert!(d.contains("current") && d.contains("old-1"), "{d}");
    assert!(!d.contains(&text[..8]), "{d}");
    assert!(!d.contains("cipher"), "{d}");
}

/// Values sealed before the keyring existed, by `downstream::seal::Sealer` (session ids and
/// relayed request ids) and `credentials::sealed::TokenSealer` (stored tokens, façade signing
/// keys), all under key id `k1` = 32 bytes of 1: the formats did not change, so they open.
mod sealed_by_the_old_code {
    use super::*;
    use crate::downstream::seal::SessionClaims;

    const SESSION_ID: &str = "k1.QtWgPu1Ukk3MMQl3uNFPWSOV8QM1mG0ce28DrYjpT6-LWnjIndHk9aak0HUJ2jbx1llglhoB0NXqzvmqFZ_XPKb3zzjgRTMy2eEi5_XMqE8ZBTEJ3iFdZ72t8WEgZEnkKddKx0z-o04Hv3JSei1UdTbGnYrkjnyCGiV7iqS3TwH1QPFIfPDeLv4eqYklPQdOZFemfXcbHw";
    const ANSWER_ROUTE: &str = "k1.tU_uOqJabrhezanX9bgTNxJylqKXOosktgACuSb1";
    const STORED_TOKEN: &str = "v1.k1.jMjR_MmgVSBBQZV1.t1IZLlYZw6ZjLbp6rj3MjCqRGGwHRjKlwlGgB1KLhO8";
    const FACADE_KEY: &str = "v1.k1.8H-PZYAprb16e5it.a88U3Ayl1M1YVwGzI9o1nMBpvVgJeoRGlBVX";

    /// The keyring as `sessions.keys` / `consent.keys` / `oauth_server.keys` configure it.
    fn configured() -> Keyring {
        let yaml =
            "{ id: k1, secret: { value: \"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\" } }";
        let key: KeyConfig = serde_saphyr::from_str(yaml).unwrap();
        Keyring::from_config(&[key]).unwrap()
    }

    #[test]
    fn a_session_id_sealed_by_the_old_sealer_opens() {
        let ring = configured();
        let claims: SessionClaims = ring.open_value(SESSION_ID, "").unwrap();
        assert_eq!(claims.server_path, "/mcp");
        assert_eq!(claims.version, "2025-11-25");
        assert_eq!(claims.principal.as_deref(), Some("0a1b2c"));
        assert_eq!(
            claims.upstreams,
            [(
                "a".to_owned(),
                Some("upstream-secret-session".to_owned()),
                "2025-11-25".to_owned()
            )]
        );
        assert_eq!(claims.issued_at, 1);
        assert_eq!(
            crate::downstream::seal::open(&ring, SESSION_ID).unwrap(),
            claims
        );
        assert_eq!(
            ring.open_value::<u32>(ANSWER_ROUTE, "answer:session-a"),
            Ok(42)
        );
        assert_eq!(
            ring.open_value::<u32>(ANSWER_ROUTE, "answer:session-b"),
            Err(NotOurs)
        );
    }

    #[test]
    fn a_token_and_a_facade_key_sealed_by_the_old_token_sealer_open() {
        let ring = configured();
        assert_eq!(
            ring.open(STORED_TOKEN, b"binding-0a1b\0github").unwrap(),
            b"gho_secret-token"
        );
        assert_eq!(
            ring.open(FACADE_KEY, b"gatehouse-oauth-signing-key\0kid-1")
                .unwrap(),
            b"pkcs8-bytes"
        );
        assert!(matches!(
            ring.open(STORED_TOKEN, b"binding-0a1b\0gitlab"),
            Err(SealError::Rejected)
        ));
        // The two formats never stand in for each other.
        assert_eq!(ring.open_value::<String>(STORED_TOKEN, ""), Err(NotOurs));
        assert!(matches!(
            ring.open(SESSION_ID, b""),
            Err(SealError::Malformed)
        ));
    }
}

#[test]
fn a_value_opens_only_in_the_context_it_was_sealed_for() {
    let s = Keyring::from_bytes(&[("k1", [1; 32])]).unwrap();
    let sealed = s.seal_value(&42u32, "answer:session-a");
    assert!(sealed.starts_with("k1."), "{sealed}");
    assert_eq!(s.open_value::<u32>(&sealed, "answer:session-a"), Ok(42));
    assert_eq!(
        s.open_value::<u32>(&sealed, "answer:session-b"),
        Err(NotOurs)
    );
    for junk in ["", "k1", "k1.", "k1.!!!", "zz.AAAA", &"x".repeat(10_000)] {
        assert_eq!(s.open_value::<u32>(junk, ""), Err(NotOurs));
    }
    assert_eq!(Keyring::random().current_key_id(), "local");
}

#[test]
fn one_key_id_rule() {
    for good in [
        "k1",
        "a",
        "current",
        "old-1",
        "key_2026",
        &"k".repeat(MAX_KEY_ID_LEN),
    ] {
        assert!(valid_key_id(good), "{good:?}");
    }
    for bad in ["", "a.b", "é", "a b", &"k".repeat(MAX_KEY_ID_LEN + 1)] {
        assert!(!valid_key_id(bad), "{bad:?}");
    }
    let e = Keyring::from_bytes(&[("k1", [1; 32]), ("a.b", [2; 32])]).unwrap_err();
    assert_eq!(
        e,
        KeyringError::BadId {
            index: 2,
            id: "a.b".into()
        }
    );
}

mod configuration {
    use super::*;

    fn keys(yaml: &str) -> Vec<KeyConfig> {
        serde_saphyr::from_str(yaml).unwrap()
    }

    fn problems(keys: &[KeyConfig], rules: KeyRules) -> Vec<String> {
        let mut out = Vec::new();
        check_keys(keys, "x.keys", rules, &mut |f, m| {
            out.push(format!("{f}: {m}"))
        });
        out
    }

    const AT_REST: KeyRules = KEYS_AT_REST;
    const SESSIONS: KeyRules = SESSION_KEYS;

    #[test]
    fn key_and_secret_name_the_same_field() {
        let a = keys("[{ id: k1, key: { env: SOME_VAR } }]");
        let b = keys("[{ id: k1, secret: { env: SOME_VAR } }]");
        assert_eq!(a, b);
        assert!(serde_saphyr::from_str::<Vec<KeyConfig>>("[{ id: k1, kee: x }]").is_err());
    }

    #[test]
    fn every_problem_is_reported_with_its_field_and_no_key() {
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short");
        std::fs::write(&short, "c2hvcnQ=\n").unwrap();
        let good = dir.path().join("good");
        std::fs::write(&good, "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\n").unwrap();
        let yaml = format!(
            "[{{ id: k1, key: {{ file: \"{g}\" }} }}, {{ id: k1, key: {{ file: \"{g}\" }} }}, \
             {{ id: \"a.b\", key: {{ file: \"{s}\" }} }}, {{ id: k3, key: \"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\" }}, \
             {{ id: k4, key: {{ env: GATEHOUSE_TEST_SURELY_UNSET }} }}]",
            g = good.display(),
            s = short.display()
        );
        let got = problems(&keys(&yaml), AT_REST);
        let has = |field: &str, words: &str| {
            got.iter()
                .any(|i| i.starts_with(&format!("{field}:")) && i.contains(words))
        };
        assert!(has("x.keys[1].id", "duplicate key id"), "{got:?}");
        assert!(has("x.keys[2].id", "letters, digits"), "{got:?}");
        assert!(has("x.keys[2].key", "decodes to 5 bytes"), "{got:?}");
        assert!(
            has("x.keys[3].key", "must not be written in the YAML"),
            "{got:?}"
        );
        assert!(
            has("x.keys[4].key", "GATEHOUSE_TEST_SURELY_UNSET"),
            "{got:?}"
        );
        assert_eq!(got.len(), 5, "{got:?}");
        assert!(got.iter().all(|i| !i.contains("AQEBAQ")), "{got:?}");
        // Sessions may write the key in the YAML and need none.
        let got = problems(
            &keys("[{ id: k3, secret: \"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\" }]"),
            SESSIONS,
        );
        assert_eq!(got, Vec::<String>::new());
        assert_eq!(problems(&[], SESSIONS), Vec::<String>::new());
        assert!(problems(&[], AT_REST)[0].starts_with("x.keys: at least one"));
    }
}

#[test]
fn the_shipped_example_loads_with_and_without_its_session_key() {
    let path = std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/gatehouse.yaml"
    ));
    let text = std::fs::read_to_string(path).unwrap();
    crate::config::Config::from_yaml(&text, path).unwrap();
    // The commented key, as the example spells it (`secret`) and as the other blocks do (`key`).
    let key = "{ value: \"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\" }";
    for name in ["secret", "key"] {
        let with_key = text.replacen(
            "  keys: []",
            &format!("  keys:\n    - id: k1\n      {name}: {key}"),
            1,
        );
        assert_ne!(with_key, text);
        let config = crate::config::Config::from_yaml(&with_key, path).unwrap();
        assert_eq!(config.sessions.keys[0].id, "k1");
        Keyring::from_config(&config.sessions.keys).unwrap();
    }
}
