//! The bootstrap path from a binary proto (`-c FILE.pb`): decoding, the supported-field check
//! and the conversion to redvoy's model, on arbitrary Bootstrap protos. Each input is one of
//! the repository's bootstrap fixtures (and Istio's rendered bootstrap), encoded, with the
//! input's bytes appended: protobuf merges appended fields into the message, so the fuzzer
//! changes any field of a realistic config, not only bytes that fail to decode. An input
//! whose first byte is 0 is taken as the whole proto. It must load or be refused, never panic.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use redvoy_config::{load_bootstrap, load_bootstrap_pb, LoadOptions};

/// The fixtures' binary encodings.
fn bases() -> &'static [Vec<u8>] {
    static BASES: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    BASES.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut files: Vec<PathBuf> = Vec::new();
        for dir in [
            root.join("crates/config/tests/fixtures/good"),
            root.join("../shared/fixtures/istio"),
        ] {
            if let Ok(entries) = std::fs::read_dir(&dir) {
                files.extend(entries.flatten().map(|e| e.path()));
            }
        }
        files.sort();
        files
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "json"))
            .filter_map(|p| {
                let opts = LoadOptions {
                    config_path: Some(p.clone()),
                    ..LoadOptions::default()
                };
                load_bootstrap(&opts).ok().map(|b| b.source.to_pb())
            })
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let bases = bases();
    if pick == 0 || bases.is_empty() {
        let _ = load_bootstrap_pb(rest);
        return;
    }
    let mut bytes = bases[usize::from(pick - 1) % bases.len()].clone();
    bytes.extend_from_slice(rest);
    let _ = load_bootstrap_pb(&bytes);
});
