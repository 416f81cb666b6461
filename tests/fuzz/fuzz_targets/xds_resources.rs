//! What the xDS client does with each resource of a discovery response: decode the `Any`
//! value as a Listener, Cluster, ClusterLoadAssignment or Secret, check it against what redvoy
//! supports and convert it. Arbitrary bytes must give a value or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use redvoy_config::{
    decode_cluster, decode_cluster_load_assignment, decode_listener, decode_secret, DynamicOptions,
};

fuzz_target!(|data: &[u8]| {
    let Some((&kind, value)) = data.split_first() else {
        return;
    };
    let opts = DynamicOptions {
        reject_unknown_dynamic_fields: kind & 0x80 != 0,
    };
    match kind % 4 {
        0 => drop(decode_listener(value, &opts)),
        1 => drop(decode_cluster(value, &opts)),
        2 => drop(decode_cluster_load_assignment(value)),
        _ => drop(decode_secret(value)),
    }
});
