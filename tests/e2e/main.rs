//! The end-to-end tests, one test binary with a module per area: each starts real
//! `redis-server`s (and a real Redis Cluster) on free loopback ports and runs its scenario
//! through Envoy 1.40 (the oracle) and through redvoy (`REDVOY_TEST_TARGETS` chooses).

mod admin_address;
mod admin_endpoints;
mod admin_mutations;
mod auth;
mod bad_input;
mod circuit_breakers;
mod client_compat;
mod client_libraries;
mod cluster_routing;
mod cluster_under_load;
mod config;
mod config_effects;
mod control_plane;
mod fanout;
mod faults;
mod health_check;
mod istio_examples;
mod istio_mesh;
mod istio_redis_cluster;
mod istio_sidecar;
mod outlier_detection;
mod overload;
mod placement;
mod replies;
mod routing;
mod slow_readers;
mod stats;
mod stats_oracle;
mod tls;
mod tls_listener;
mod tls_sds;
mod transactions;
mod xds_hot_swap;
mod xds_original_dst;
mod xds_sequence;
mod xds_sources;

use redvoy_test_util::Target;

/// The targets a scenario runs on, with this build's `redvoy` binary.
fn targets() -> Vec<Target> {
    redvoy_test_util::targets(env!("CARGO_BIN_EXE_redvoy"))
}
