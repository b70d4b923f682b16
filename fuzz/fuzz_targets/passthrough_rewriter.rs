//! The streaming passthrough rewriter ([`ResponseRewriter`]) on an upstream's response body,
//! fed whole and in chunks. It must never panic, give the same answer whatever the chunking,
//! never emit a line break (its output goes into SSE `data:` lines), hold everything back
//! until it decides to stream, and, when it streams a well-formed JSON response, produce that
//! response with only the id replaced (and `resultType` added when asked).
#![no_main]

mod body {
    include!("../bodies/passthrough_rewriter.rs");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::fuzz_one(data));
