//! PKCE (RFC 7636) with S256 only: the authorization request's challenge is checked for shape,
//! and the token request's verifier is hashed and compared in constant time.

use super::metadata::shown;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Why an authorization request's PKCE parameters are refused; the text is the
/// `error_description` of an `invalid_request` error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PkceError {
    /// No `code_challenge`.
    #[error("code_challenge is required: this server needs PKCE with code_challenge_method=S256")]
    MissingChallenge,
    /// No `code_challenge_method`, which RFC 7636 §4.3 reads as `plain`.
    #[error(
        "code_challenge_method is missing, which means plain; only S256 is accepted, send code_challenge_method=S256"
    )]
    MissingMethod,
    /// A method other than `S256`.
    #[error("code_challenge_method {0} is not supported; only S256 is accepted")]
    UnsupportedMethod(String),
    /// A challenge that cannot be the S256 of any verifier.
    #[error(
        "code_challenge must be 43 characters of base64url without padding (the SHA-256 of the code_verifier)"
    )]
    MalformedChallenge,
    /// A verifier outside RFC 7636 §4.1's syntax.
    #[error("code_verifier must be 43 to 128 characters of A-Z a-z 0-9 - . _ ~")]
    MalformedVerifier,
}

impl PkceError {
    /// The OAuth error code these errors carry.
    pub fn error_code(&self) -> &'static str {
        match self {
            // A bad verifier at the token endpoint means the grant cannot be redeemed.
            PkceError::MalformedVerifier => "invalid_grant",
            _ => "invalid_request",
        }
    }
}

/// Checks an authorization request's `code_challenge` and `code_challenge_method`.
pub fn check_challenge(challenge: Option<&str>, method: Option<&str>) -> Result<(), PkceError> {
    let challenge = challenge
        .filter(|c| !c.is_empty())
        .ok_or(PkceError::MissingChallenge)?;
    match method {
        None | Some("") => return Err(PkceError::MissingMethod),
        Some("S256") => {}
        Some(other) => return Err(PkceError::UnsupportedMethod(shown(other))),
    }
    // The strict decoder also refuses non-zero trailing bits, so exactly the 2^256 encodings of
    // real digests pass.
    match URL_SAFE_NO_PAD.decode(challenge) {
        Ok(bytes) if challenge.len() == 43 && bytes.len() == 32 => Ok(()),
        _ => Err(PkceError::MalformedChallenge),
    }
}

/// Checks a token request's `code_verifier` syntax (RFC 7636 §4.1).
pub fn check_verifier(verifier: &str) -> Result<(), PkceError> {
    let unreserved = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
    if (43..=128).contains(&verifier.len()) && verifier.bytes().all(unreserved) {
        Ok(())
    } else {
        Err(PkceError::MalformedVerifier)
    }
}

/// Whether `verifier` is well formed and BASE64URL(SHA256(verifier)) equals `challenge`,
/// compared in constant time.
pub fn verify_s256(verifier: &str, challenge: &str) -> bool {
    if check_verifier(verifier).is_err() {
        return false;
    }
    let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    computed.as_bytes().ct_eq(challenge.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7636 Appendix B.
    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    #[test]
    fn oauth_pkce_rfc7636_example_verifies() {
        assert!(verify_s256(VERIFIER, CHALLENGE));
        assert!(!verify_s256(
            VERIFIER,
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cN"
        ));
        assert!(!verify_s256(&VERIFIER[1..], CHALLENGE), "42 characters");
        assert!(!verify_s256(&"a".repeat(129), CHALLENGE));
        assert!(!verify_s256(&format!("{}+", &VERIFIER[1..]), CHALLENGE));
        assert!(!verify_s256(VERIFIER, ""));
        assert!(!verify_s256(VERIFIER, &format!("{CHALLENGE}=")));
        assert!(check_verifier(&"~".repeat(128)).is_ok());
        assert_eq!(check_verifier("short"), Err(PkceError::MalformedVerifier));
        assert_eq!(PkceError::MalformedVerifier.error_code(), "invalid_grant");
    }

    #[test]
    fn oauth_pkce_challenge_rules() {
        assert_eq!(check_challenge(Some(CHALLENGE), Some("S256")), Ok(()));
        assert_eq!(
            check_challenge(None, Some("S256")),
            Err(PkceError::MissingChallenge)
        );
        assert_eq!(
            check_challenge(Some(""), Some("S256")),
            Err(PkceError::MissingChallenge)
        );
        assert_eq!(
            check_challenge(Some(CHALLENGE), None),
            Err(PkceError::MissingMethod)
        );
        assert_eq!(
            check_challenge(Some(CHALLENGE), Some("plain")),
            Err(PkceError::UnsupportedMethod("plain".into()))
        );
        assert_eq!(
            check_challenge(Some(CHALLENGE), Some("s256")),
            Err(PkceError::UnsupportedMethod("s256".into()))
        );
        for bad in [
            &CHALLENGE[1..],
            &format!("{CHALLENGE}A"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw+cM",
            // Last character carries non-zero padding bits: no digest encodes to it.
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cN",
        ] {
            assert_eq!(
                check_challenge(Some(bad), Some("S256")),
                Err(PkceError::MalformedChallenge),
                "{bad}"
            );
        }
        let e = check_challenge(Some(CHALLENGE), Some("x\"y"))
            .unwrap_err()
            .to_string();
        assert!(!e.contains('"'), "{e}");
        assert_eq!(PkceError::MissingMethod.error_code(), "invalid_request");
    }
}
