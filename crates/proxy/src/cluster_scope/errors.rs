//! Envoy's error replies for cluster-scope aggregation, byte for byte.

use bytes::Bytes;
use redvoy_resp::RespValue;

// Envoy's aggregation error texts, byte for byte.
pub(super) const ALL_RESPONSES_NOT_SAME: &str = "all responses not same";
pub(super) const NON_ARRAY_RESPONSE: &str = "non-array response received from shard";
pub(super) const NON_INTEGER_RESPONSE: &str = "non-integer response received from shard";
pub(super) const NEGATIVE_VALUE: &str = "negative value received from upstream";
pub(super) const UNEXPECTED_RESPONSE_TYPE: &str = "unexpected response type received from shard";
/// Only reachable with zero shards, which the splitter answers before broadcasting (Envoy
/// asserts instead); kept so that an empty input still gets a well-formed reply.
pub(super) const NO_UPSTREAM_HOST: &str = "no upstream host";

pub(super) fn error(text: &'static str) -> RespValue {
    RespValue::Error(Bytes::from_static(text.as_bytes()))
}
