//! The URI-template matcher ([`CompiledTemplate`]): templates come from upstreams
//! (`resources/templates/list`) and URIs from clients (`resources/read`), so both are hostile.
//! Input: a template, a newline, then bytes used twice: as a URI to match (must not panic),
//! and as the values of an RFC 6570 expansion of the template, which must match (unless it
//! climbs out of a path, which the matcher refuses on purpose).
#![no_main]

mod body {
    include!("../bodies/uri_template.rs");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::fuzz_one(data));
