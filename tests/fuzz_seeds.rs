//! The fuzz targets' smoke run: every seed in `fuzz/seeds/<target>/` (the project's own test
//! inputs and every input a fuzzer once failed on) replayed through the very body of its
//! cargo-fuzz target, in the ordinary test build. The libFuzzer runs themselves take a build
//! of their own and minutes per target: `scripts/fuzz.sh` (see docs/fuzzing.md).

mod config_loader {
    include!("../fuzz/bodies/config_loader.rs");
}
mod jsonrpc_envelope {
    include!("../fuzz/bodies/jsonrpc_envelope.rs");
}
mod jwt_reader {
    include!("../fuzz/bodies/jwt_reader.rs");
}
mod passthrough_rewriter {
    include!("../fuzz/bodies/passthrough_rewriter.rs");
}
mod session_open {
    include!("../fuzz/bodies/session_open.rs");
}
mod sse_parser {
    include!("../fuzz/bodies/sse_parser.rs");
}
mod uri_template {
    include!("../fuzz/bodies/uri_template.rs");
}

type Target = fn(&[u8]);

#[test]
fn every_seed_replays_through_its_fuzz_target() {
    let targets: &[(&str, Target)] = &[
        ("config_loader", config_loader::fuzz_one),
        ("jsonrpc_envelope", jsonrpc_envelope::fuzz_one),
        ("jwt_reader", jwt_reader::fuzz_one),
        ("passthrough_rewriter", passthrough_rewriter::fuzz_one),
        ("session_open", session_open::fuzz_one),
        ("sse_parser", sse_parser::fuzz_one),
        ("uri_template", uri_template::fuzz_one),
    ];
    let seeds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    for (name, run) in targets {
        let dir = seeds.join(name);
        let mut replayed = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(
                outcome.is_ok(),
                "fuzz target {name} fails on seed {}",
                path.display()
            );
            replayed += 1;
        }
        assert!(replayed > 0, "no seeds for fuzz target {name}");
    }
}
