//! Small helpers the façade's modules share: time, random secrets, digests, claim paths.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Milliseconds since the epoch, the time unit of the façade's tables.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// 256 random bits as base64url (43 characters), for codes, tokens, nonces and verifiers.
pub(crate) fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    // ThreadRng is a CSPRNG seeded from the operating system.
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Hex SHA-256 of a secret: what the store keeps instead of the secret.
pub(crate) fn digest(secret: &str) -> String {
    crate::hex::encode(&Sha256::digest(secret.as_bytes()))
}

/// Compares two strings without leaking where they differ.
pub(crate) fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// The RFC 7636 S256 challenge of a verifier.
pub(crate) fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// The first non-empty string found at one of `paths` (dotted claim paths, as for tokens).
pub(crate) fn string_at(claims: &Value, paths: &[String]) -> Option<String> {
    paths
        .iter()
        .find_map(|p| crate::auth::claim_string(claims, p))
}

/// The first list found at one of `paths`: an array of strings, or a space-separated string.
pub(crate) fn strings_at(claims: &Value, paths: &[String]) -> Vec<String> {
    paths
        .iter()
        .find_map(|p| crate::auth::claim_strings(claims, p))
        .unwrap_or_default()
}

/// Whether `url` may be used to reach an IdP: https, or http to a loopback host (tests, local
/// development). Endpoints come from discovery documents, which are not trusted blindly.
pub(crate) fn acceptable_endpoint(url: &str) -> bool {
    let Ok(u) = url::Url::parse(url) else {
        return false;
    };
    match u.scheme() {
        "https" => u.host().is_some(),
        "http" => match u.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(d)) => d == "localhost",
            None => false,
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn s256_matches_rfc7636_appendix_b() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert_eq!(
            s256(verifier),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn claim_paths_and_endpoints() {
        let c = json!({"https://ns.example/roles": ["a"], "realm_access": {"roles": ["r"]}, "scp": "x y"});
        assert_eq!(strings_at(&c, &["https://ns.example/roles".into()]), ["a"]);
        assert_eq!(strings_at(&c, &["realm_access.roles".into()]), ["r"]);
        assert_eq!(strings_at(&c, &["scope".into(), "scp".into()]), ["x", "y"]);
        assert!(strings_at(&c, &["none".into()]).is_empty());
        assert!(acceptable_endpoint("https://idp.example/token"));
        assert!(acceptable_endpoint("http://127.0.0.1:8080/token"));
        assert!(!acceptable_endpoint("http://idp.example/token"));
        assert!(!acceptable_endpoint("file:///etc/passwd"));
        assert_eq!(random_secret().len(), 43);
        assert_ne!(random_secret(), random_secret());
    }
}
