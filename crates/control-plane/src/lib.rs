//! redvoy's local control plane: a directory of Kubernetes YAML (Services, EndpointSlices or
//! Endpoints, Istio `EnvoyFilter`s) → what istiod would send each sidecar (outbound listeners,
//! clusters, endpoints, with the EnvoyFilters applied with Istio's semantics) → served over ADS
//! (State-of-the-World and Delta, TCP and a Unix socket) to Envoy and redvoy alike.
//!
//! Data flows one way: [`k8s`] reads the inputs, [`istio`] generates, [`envoyfilter`] selects
//! and patches per proxy, [`snapshot`] validates and versions what each proxy gets, [`server`]
//! streams it, [`watch`] swaps in a new world when the directory changes (the last good one
//! stays when the new one fails). Owns no data-path code; depends on `redvoy-config` only for
//! the descriptor pool and the resource checks redvoy itself applies.

#![forbid(unsafe_code)]

pub mod envoyfilter;
pub mod istio;
pub mod k8s;
pub mod merge;
pub mod proxy;
