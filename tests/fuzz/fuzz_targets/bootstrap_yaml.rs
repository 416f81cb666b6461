//! The bootstrap path from `--config-yaml`: YAML parsing, the merge, the supported-field check
//! and the conversion to redvoy's model. Arbitrary text must load or be refused, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use redvoy_config::{load_bootstrap, LoadOptions};

fuzz_target!(|data: &[u8]| {
    let Ok(yaml) = std::str::from_utf8(data) else {
        return;
    };
    let opts = LoadOptions {
        config_yaml: Some(yaml.to_owned()),
        ..LoadOptions::default()
    };
    let _ = load_bootstrap(&opts);
});
