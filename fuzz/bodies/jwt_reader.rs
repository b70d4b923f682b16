// The body of the `jwt_reader` fuzz target (fuzz/fuzz_targets/jwt_reader.rs), included there and by
// tests/fuzz_seeds.rs, which replays every seed through it in the ordinary test run.

pub fn fuzz_one(data: &[u8]) {
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
}
