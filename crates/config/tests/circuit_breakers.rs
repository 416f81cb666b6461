//! `circuit_breakers`: the thresholds of both priorities, Envoy's defaults applied (observed on
//! Envoy 1.40 through `/clusters` and the `remaining_*` gauges).

use redvoy_config::model::{CircuitBreakers, Cluster, RedisLimits, RetryBudget, Thresholds};
use redvoy_config::{load_bootstrap, LoadOptions};

/// The clusters of a bootstrap holding `clusters` (YAML items of `static_resources.clusters`).
fn clusters(clusters: &str) -> Vec<Cluster> {
    let yaml = format!("static_resources:\n  clusters:\n{clusters}");
    let options = LoadOptions {
        config_yaml: Some(yaml.clone()),
        ..LoadOptions::default()
    };
    load_bootstrap(&options)
        .unwrap_or_else(|e| panic!("{yaml}\n{e}"))
        .clusters
}

/// A STATIC cluster `name` with `extra` YAML at its level.
fn cluster(name: &str, extra: &str) -> String {
    format!(
        "  - name: {name}\n    type: STATIC\n    connect_timeout: 1s\n{extra}    load_assignment:\n      cluster_name: {name}\n      endpoints:\n      - lb_endpoints:\n        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: 6379}}}}}}\n"
    )
}

fn breakers_of(extra: &str) -> CircuitBreakers {
    let all = clusters(&cluster("c", extra));
    match all.as_slice() {
        [c] => c.circuit_breakers,
        other => panic!("{} clusters", other.len()),
    }
}

#[test]
fn envoy_defaults_without_circuit_breakers() {
    let envoy = Thresholds {
        max_connections: 1024,
        max_pending_requests: 1024,
        max_requests: 1024,
        max_retries: 3,
        max_connection_pools: None,
        retry_budget: None,
        track_remaining: false,
    };
    for extra in ["", "    circuit_breakers: {}\n"] {
        assert_eq!(
            breakers_of(extra),
            CircuitBreakers {
                default: envoy,
                high: envoy,
                redis_enforced: RedisLimits::default(),
            },
            "{extra:?}"
        );
    }
}

#[test]
fn both_priorities_every_field() {
    let got = breakers_of(
        "    circuit_breakers:
      thresholds:
      - {priority: HIGH, max_connections: 21, max_pending_requests: 22, max_requests: 23, max_retries: 24, max_connection_pools: 25}
      - {priority: DEFAULT, max_connections: 11, max_pending_requests: 12, max_requests: 13, max_retries: 14, max_connection_pools: 15, track_remaining: true}
",
    );
    assert_eq!(
        got,
        CircuitBreakers {
            default: Thresholds {
                max_connections: 11,
                max_pending_requests: 12,
                max_requests: 13,
                max_retries: 14,
                max_connection_pools: Some(15),
                retry_budget: None,
                track_remaining: true,
            },
            high: Thresholds {
                max_connections: 21,
                max_pending_requests: 22,
                max_requests: 23,
                max_retries: 24,
                max_connection_pools: Some(25),
                retry_budget: None,
                track_remaining: false,
            },
            // Beyond Envoy: the DEFAULT limits set explicitly are enforced on redis_proxy.
            redis_enforced: RedisLimits {
                max_connections: Some(11),
                max_pending_requests: Some(12),
                max_requests: Some(13),
            },
        }
    );
}

#[test]
fn first_entry_of_a_priority_counts_and_unset_fields_default() {
    let got = breakers_of(
        "    circuit_breakers:
      thresholds:
      - {max_requests: 7, track_remaining: true, retry_budget: {budget_percent: {value: 50}, min_retry_concurrency: 5, budget_interval: 1s}}
      - {priority: HIGH, max_connections: 0, retry_budget: {}}
      - {priority: HIGH, max_connections: 99}
",
    );
    let d = Thresholds::default();
    assert_eq!(
        got.default,
        Thresholds {
            max_requests: 7,
            track_remaining: true,
            retry_budget: Some(RetryBudget {
                budget_percent: 50.0,
                min_retry_concurrency: 5,
            }),
            ..d
        }
    );
    assert_eq!(
        got.high,
        Thresholds {
            max_connections: 0,
            // An empty budget: Envoy's 20 % and 3.
            retry_budget: Some(RetryBudget {
                budget_percent: 20.0,
                min_retry_concurrency: 3,
            }),
            ..d
        }
    );
}
