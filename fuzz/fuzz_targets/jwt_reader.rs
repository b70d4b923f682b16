//! The JWT reader that runs on every bearer credential before any signature is checked: the
//! JWS shape test, the raw `alg` sniffing, the header and the unverified claims. A credential
//! is whatever a client sends, so none of it may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Two ways in: the bytes as a token, and (to get past base64 quickly) as the JSON of a
    // header and claims separated by the first newline, encoded into a token here.
    if let Ok(token) = std::str::from_utf8(data) {
        let _ = gatehouse::fuzzing::jwt_read_unverified(token);
    }
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (header, claims) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b"{}"[..]),
    };
    let token = format!("{}.{}.c2ln", b64.encode(header), b64.encode(claims));
    if let Ok((alg, claims)) = gatehouse::fuzzing::jwt_read_unverified(&token) {
        assert!(
            !alg.starts_with("HS"),
            "HMAC tokens are refused before any claim is read"
        );
        let _ = claims.get("iss");
    }
});
