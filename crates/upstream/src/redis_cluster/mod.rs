//! `envoy.clusters.redis`: topology discovery with `CLUSTER SLOTS`, the slot map the proxy
//! routes by, and Envoy's refresh manager (redirect / failure / degraded triggers).
//!
//! The discovery session is the one place where this crate opens a connection: one
//! `CLUSTER SLOTS` per round to a random known node (a seed while none is known), on
//! connections kept per address and bounded by `cluster_refresh_timeout`.

mod discovery;
mod refresh;
mod slot_map;
mod slots;

pub(crate) use discovery::{Discovery, RoundOutcome};
pub use refresh::RefreshTrigger;
pub use slot_map::{Shard, SlotMap, SLOT_COUNT};

#[cfg(test)]
mod tests;
