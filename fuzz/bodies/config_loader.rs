// The body of the `config_loader` fuzz target (fuzz/fuzz_targets/config_loader.rs), included there and by
// tests/fuzz_seeds.rs, which replays every seed through it in the ordinary test run.

use gatehouse::config::Config;
use std::path::Path;

pub fn fuzz_one(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = Config::from_yaml(text, Path::new("fuzz.yaml")) {
        let _ = e.to_string();
    }
}
