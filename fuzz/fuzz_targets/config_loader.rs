//! The configuration loader ([`Config::from_yaml`]): parsing into the model and validation.
//! The operator writes the file, so this is not an attack surface; but a typo must give a
//! message naming the field, never a panic, a hang or a runaway allocation (YAML aliases).
#![no_main]

use gatehouse::config::Config;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = Config::from_yaml(text, Path::new("fuzz.yaml")) {
        let _ = e.to_string();
    }
});
