//! The minimal `envoy.filters.network.http_connection_manager` redvoy runs: HTTP/1.1 only, a
//! static route table (virtual hosts by `Host`, prefix/path routes), the router forwarding to
//! one host of a cluster, and `direct_response`. This is what Istio's static `0.0.0.0_15090`
//! (`/stats/prometheus` → admin) and `0.0.0.0_15021` (`/healthz/ready` → agent) listeners use.
//!
//! Owns: HTTP/1.1 framing on both sides, routing, Envoy's local replies (byte for byte: status
//! line, header order, bodies) and the `http.<stat_prefix>.*` stats. Depends on `config` (domain
//! types), `stats` and `upstream` (hosts); must not depend on the proxy crate or on protobufs.
//! One task per downstream connection, requests served one at a time (HTTP/1.1 has no
//! multiplexing); upstream connections are opened per request and never pooled.

#![forbid(unsafe_code)]

mod body;
mod date;
mod head;
mod io;
mod route;
mod server;
mod stats;

#[cfg(test)]
mod tests;

pub use server::{serve_connection, Hcm};
pub use stats::HcmStats;

use std::time::Duration;

/// Envoy's `max_request_headers_kb` default (60 KiB): a larger request head gets a 431 and the
/// connection is closed. Also bounds an upstream response head (a larger one is a 503).
pub const MAX_HEADERS_BYTES: usize = 60 * 1024;
/// Envoy's `max_headers_count` default: a request with more headers gets a 431.
pub const MAX_HEADERS_COUNT: usize = 100;
/// Bytes read from a socket at once; with one request in flight per connection this bounds
/// each connection's buffers (a body is streamed through in pieces of at most this size).
pub const READ_CHUNK: usize = 16 * 1024;
/// A chunk-size line (with extensions) or one trailer line longer than this is malformed.
pub const MAX_CHUNK_LINE: usize = 4 * 1024;
/// All trailer lines of one chunked body together; beyond it the body is malformed.
pub const MAX_TRAILERS_BYTES: usize = 60 * 1024;
/// The HCM's `common_http_protocol_options.idle_timeout` default: a connection with no request
/// in progress for this long is closed (`downstream_cx_idle_timeout`).
pub const DOWNSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
