//! Envoy v3 configuration → validated domain types.
//!
//! Owns: the descriptor pool (envoy-types' set plus the TypedStruct protos in `proto/`), YAML and
//! JSON bootstrap loading through `prost-reflect`, `--config-yaml` merging, `Any`/`Struct`/
//! `TypedStruct` unpacking, and refusal of everything redvoy does not implement with the field
//! path in the error. Protobuf types never leave this crate. Must not depend on the data path.

#![forbid(unsafe_code)]

pub mod model;

// API CONTRACT (implemented by the config owner):
// pub struct LoadOptions { pub config_path: Option<PathBuf>, pub config_yaml: Option<String>,
//                          pub service_node: Option<String>, pub service_cluster: Option<String>,
//                          pub service_zone: Option<String> }
// pub fn load_bootstrap(opts: &LoadOptions) -> Result<model::Bootstrap, ConfigError>;
// pub enum ConfigError (thiserror; messages name the field path, e.g.
//   "static_resources.clusters[0].health_checks: not supported by redvoy")
