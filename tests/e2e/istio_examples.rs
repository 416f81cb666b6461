//! Every scenario of `istio-examples/` run as `make demo-<scenario>` runs it (its YAML read
//! unchanged, real redis-servers and Redis Clusters, `redvoy-control-plane`, a live edit of the
//! EnvoyFilter), on Envoy 1.40 and on redvoy: every `expect` of its `local.yaml` must hold on
//! both, and both must put the same keys on the same servers and send the same commands to
//! the same servers (replies, key placement and per-server command counts compared line by
//! line).

use std::path::Path;

use redvoy_test_util::scenario::{self, RunOptions};
use redvoy_test_util::Target;

use crate::targets;

/// The lines of a run that must match across targets: replies, where keys are, which server
/// ran which command. Stat values are left out (Envoy lists a per-command counter only once
/// it happened, redvoy from the first use of the command), as are ports and VIPs.
fn comparable(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.contains("  →  ") || l.starts_with("  key ") || l.contains(" ran "))
        .map(str::to_owned)
        .collect()
}

fn run_scenario(name: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("istio-examples")
        .join(name);
    let mut runs = Vec::new();
    for target in targets() {
        let opts = RunOptions {
            target,
            control_plane_bin: env!("CARGO_BIN_EXE_redvoy-control-plane").into(),
            echo: false,
        };
        let report =
            scenario::run(&dir, &opts).unwrap_or_else(|e| panic!("{name} on {target}: {e}"));
        assert!(
            report.failures.is_empty(),
            "{name} on {target}:\n{}\n{}",
            report.failures.join("\n"),
            report.text
        );
        runs.push((target, report));
    }
    if let [(Target::Envoy, envoy), (Target::Redvoy, redvoy)] = runs.as_slice() {
        assert_eq!(
            comparable(&envoy.text),
            comparable(&redvoy.text),
            "{name}: Envoy and redvoy differ\n--- envoy\n{}\n--- redvoy\n{}",
            envoy.text,
            redvoy.text
        );
    }
}

#[test]
fn prefix_sharding() {
    run_scenario("prefix-sharding");
}

#[test]
fn mirroring() {
    run_scenario("mirroring");
}

#[test]
fn write_mirroring() {
    run_scenario("write-mirroring");
}

#[test]
fn redis_cluster() {
    run_scenario("redis-cluster");
}

#[test]
fn read_replica() {
    run_scenario("read-replica");
}
