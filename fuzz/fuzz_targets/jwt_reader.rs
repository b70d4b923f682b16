//! The JWT reader that runs on every bearer credential before any signature is checked: the
//! JWS shape test, the raw `alg` sniffing, the header and the unverified claims. A credential
//! is whatever a client sends, so none of it may panic.
#![no_main]

mod body {
    include!("../bodies/jwt_reader.rs");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::fuzz_one(data));
