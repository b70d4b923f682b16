//! Opening sealed session ids (`downstream::seal::open` over the `keyring`): the
//! `Mcp-Session-Id` header is whatever a client sends. Two ways in: the bytes as a session id (the realistic attack surface, which
//! stops at AES-GCM), and the bytes as the plaintext of a correctly sealed id (what a holder of
//! the key could make), so that the claims reader behind the cipher is reached too. Neither
//! may panic, and claims that open must seal and open again unchanged.
#![no_main]

mod body {
    include!("../bodies/session_open.rs");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::fuzz_one(data));
