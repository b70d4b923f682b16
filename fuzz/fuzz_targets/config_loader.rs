//! The configuration loader ([`Config::from_yaml`]): parsing into the model and validation.
//! The operator writes the file, so this is not an attack surface; but a typo must give a
//! message naming the field, never a panic, a hang or a runaway allocation (YAML aliases).
#![no_main]

mod body {
    include!("../bodies/config_loader.rs");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::fuzz_one(data));
