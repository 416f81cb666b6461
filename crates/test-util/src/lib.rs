//! Test support for redvoy's end-to-end tests (dev-dependency only).
//!
//! Owns: starting real `redis-server`s on free loopback ports, starting the proxy under test
//! (redvoy) or its oracle (Envoy 1.40) from one bootstrap template, a blocking RESP client with
//! bounded reads, `/stats` parsing, admin endpoints read for comparison (stat kinds, Prometheus
//! text, JSON flattened into rows), and running one scenario through several targets.
//! Must never depend on redvoy's own crates: it is the independent side of every comparison
//! (its RESP parser is its own for that reason).
//!
//! Every wait is bounded (named constants in each module); processes are stopped by PID on drop,
//! and a failing test prints the logs of the processes it started. redvoy's log is checked on
//! drop: a WARN/ERROR the test did not declare fails it (`log_check`).

#![forbid(unsafe_code)]

pub mod admin;
pub mod ads;
pub mod bootstrap;
pub mod client;
pub mod compare;
pub mod httpd;
pub mod log_check;
pub mod net;
pub mod netns;
pub mod process;
pub mod proxy;
pub mod redis;
pub mod redis_cluster;
pub mod resp;
pub mod scenario;
pub mod xds;

pub use admin::{json_leaves, json_shape, normalize_json, Prometheus, Sample, STAT_TYPES};
pub use ads::{AdsServer, Api, ErrorDetail, RecordedRequest, SentResponse, Variant};
pub use bootstrap::{
    bootstrap, catch_all_filter, dedent, redis_cluster_bootstrap, redis_listener_yaml,
    simple_bootstrap, two_cluster_bootstrap, Cluster, REDIS_PROXY_TYPE,
};
pub use client::{ReadOutcome, RespClient};
pub use compare::{abbrev, expectations_apply, same_on_all_targets, Rows};
pub use httpd::HttpStub;
pub use log_check::{Level, LogExpectation};
pub use net::{
    free_port, http, http_unix, port_open, try_wait_for, wait_for, Blackhole, HttpResponse,
};
pub use netns::{NetNs, NsRedis};
pub use process::{listening_sockets, rss_kib};
pub use proxy::{
    targets, validate, wait_port_closed, Proxy, ProxyOptions, ReadyCheck, RunOutput, Stats, Target,
    ADMIN_SOCKET,
};
pub use redis::{start_servers, RedisServer};
pub use redis_cluster::{key_slot, NodeInfo, RedisCluster, Role, SlotRange};
pub use resp::{encode_command, escape, Reply};
// Tests of the root package use temp dirs (control-plane sockets) without their own dependency.
pub use tempfile;
