//! The descriptor pool: envoy-types' set (comments stripped) plus the TypedStruct protos, built
//! by `build.rs` and decoded once, on first use.

use std::sync::OnceLock;

use prost_reflect::{DescriptorPool, MessageDescriptor};

use crate::ConfigError;

static DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/redvoy_descriptors.bin"));

/// The envoy-types release the descriptors come from.
pub const ENVOY_TYPES_VERSION: &str = env!("REDVOY_ENVOY_TYPES_VERSION");

static POOL: OnceLock<Result<DescriptorPool, String>> = OnceLock::new();

/// The shared pool (decoding takes ~20 ms and ~16 MiB, so it is done once per process).
pub fn pool() -> Result<&'static DescriptorPool, ConfigError> {
    POOL.get_or_init(|| DescriptorPool::decode(DESCRIPTOR_SET).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| ConfigError::Descriptors(e.clone()))
}

/// A message descriptor that must exist in the built-in set.
pub(crate) fn message(full_name: &str) -> Result<MessageDescriptor, ConfigError> {
    pool()?
        .get_message_by_name(full_name)
        .ok_or_else(|| ConfigError::Descriptors(format!("message {full_name} missing")))
}

#[cfg(test)]
pub(crate) const DESCRIPTOR_SET_LEN: usize = DESCRIPTOR_SET.len();
