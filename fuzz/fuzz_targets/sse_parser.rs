//! The incremental SSE parser ([`SseParser`]) on an upstream's event stream, cut into chunks
//! where the input says. Checked against a plain reading of the SSE specification (whole
//! input, split into lines): the same events, whatever the cuts, and an event larger than the
//! limit is always refused (the limit bounds what the gateway buffers per event).
#![no_main]

mod body {
    include!("../bodies/sse_parser.rs");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::fuzz_one(data));
