//! The JSON-RPC envelope parser ([`Message::parse`]) on any bytes a client or an upstream
//! sends: it must never panic, and a message it accepts must survive `to_bytes` and a second
//! parse unchanged (the gateway re-serializes every envelope it relays).
#![no_main]

mod body {
    include!("../bodies/jsonrpc_envelope.rs");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::fuzz_one(data));
