//! `dynamic_resources` and `ConfigSource`s (also used by EDS clusters).

use std::path::PathBuf;
use std::time::Duration;

use envoy_types::pb::envoy::config::bootstrap::v3::bootstrap::DynamicResources;
use envoy_types::pb::envoy::config::core::v3::api_config_source::ApiType;
use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
use envoy_types::pb::envoy::config::core::v3::grpc_service::TargetSpecifier;
use envoy_types::pb::envoy::config::core::v3::{ApiConfigSource, ApiVersion, ConfigSource};

use super::duration;
use crate::error::FieldPath;
use crate::{model, ConfigError};

/// `ConfigSource.initial_fetch_timeout` when unset.
const DEFAULT_INITIAL_FETCH_TIMEOUT: Duration = Duration::from_secs(15);

/// `dynamic_resources`; `static_clusters` are the bootstrap's cluster names, which an
/// `envoy_grpc` reference must name (Envoy's `checkActiveStaticCluster`).
pub(crate) fn dynamic_resources(
    d: &DynamicResources,
    p: &FieldPath,
    static_clusters: &[&str],
    node: &model::Node,
) -> Result<model::DynamicResources, ConfigError> {
    // Envoy's `checkLocalInfo`: a control plane needs to know who is asking.
    let check_node = |what: &str, at: &FieldPath| {
        if node.id.is_empty() || node.cluster.is_empty() {
            return Err(ConfigError::invalid(
                at,
                format!(
                    "{what}: node 'id' and 'cluster' are required. Set it either in 'node' config \
                     or via --service-node and --service-cluster options."
                ),
            ));
        }
        Ok(())
    };
    let ads_config = match &d.ads_config {
        Some(a) => {
            let ap = p.field("ads_config");
            check_node("ads", &ap)?;
            let a = api_config_source(a, &ap)?;
            check_static_cluster(&a, &ap, static_clusters)?;
            Some(a)
        }
        None => None,
    };
    let source = |s: &Option<ConfigSource>, name: &str, type_url: &str| -> Result<_, ConfigError> {
        let Some(s) = s else { return Ok(None) };
        let sp = p.field(name);
        let s = config_source(s, &sp)?;
        match &s.kind {
            model::ConfigSourceKind::Ads if ads_config.is_none() => {
                return Err(ConfigError::invalid(
                    sp.field("ads"),
                    "Cannot create an ADS subscription: ads_config is not set in the bootstrap",
                ));
            }
            model::ConfigSourceKind::Api(a) => {
                check_node(type_url, &sp)?;
                check_static_cluster(a, &sp.field("api_config_source"), static_clusters)?;
            }
            _ => {}
        }
        Ok(Some(s))
    };
    let lds_config = source(
        &d.lds_config,
        "lds_config",
        "type.googleapis.com/envoy.config.listener.v3.Listener",
    )?;
    let cds_config = source(
        &d.cds_config,
        "cds_config",
        "type.googleapis.com/envoy.config.cluster.v3.Cluster",
    )?;
    Ok(model::DynamicResources {
        lds_config,
        cds_config,
        ads_config,
    })
}

fn check_static_cluster(
    a: &model::ApiConfigSource,
    p: &FieldPath,
    static_clusters: &[&str],
) -> Result<(), ConfigError> {
    if let model::GrpcService::EnvoyGrpc { cluster_name } = &a.grpc_service {
        if !static_clusters.contains(&cluster_name.as_str()) {
            return Err(ConfigError::invalid(
                p.field("grpc_services").index(0).field("envoy_grpc"),
                format!("Unknown gRPC client cluster '{cluster_name}'"),
            ));
        }
    }
    Ok(())
}

/// A `ConfigSource` (bootstrap `lds_config`/`cds_config`, a cluster's `eds_config`).
pub(crate) fn config_source(
    s: &ConfigSource,
    p: &FieldPath,
) -> Result<model::ConfigSource, ConfigError> {
    check_api_version(s.resource_api_version, &p.field("resource_api_version"))?;
    let initial_fetch_timeout = match &s.initial_fetch_timeout {
        Some(d) => duration(d, &p.field("initial_fetch_timeout"))?,
        None => DEFAULT_INITIAL_FETCH_TIMEOUT,
    };
    #[allow(deprecated)]
    let kind = match &s.config_source_specifier {
        Some(ConfigSourceSpecifier::Ads(_)) => model::ConfigSourceKind::Ads,
        Some(ConfigSourceSpecifier::ApiConfigSource(a)) => {
            model::ConfigSourceKind::Api(api_config_source(a, &p.field("api_config_source"))?)
        }
        Some(ConfigSourceSpecifier::PathConfigSource(pc)) => {
            let pp = p.field("path_config_source");
            if pc.path.is_empty() {
                return Err(ConfigError::invalid(
                    pp.field("path"),
                    "value length must be at least 1 characters",
                ));
            }
            let watched_directory = match &pc.watched_directory {
                Some(w) if w.path.is_empty() => {
                    return Err(ConfigError::invalid(
                        pp.field("watched_directory").field("path"),
                        "value length must be at least 1 characters",
                    ));
                }
                Some(w) => Some(PathBuf::from(&w.path)),
                None => None,
            };
            model::ConfigSourceKind::Path {
                path: PathBuf::from(&pc.path),
                watched_directory,
            }
        }
        Some(ConfigSourceSpecifier::Path(path)) => {
            if path.is_empty() {
                return Err(ConfigError::invalid(
                    p.field("path"),
                    "value length must be at least 1 characters",
                ));
            }
            model::ConfigSourceKind::Path {
                path: PathBuf::from(path),
                watched_directory: None,
            }
        }
        // `self` was refused by the allowlist.
        Some(ConfigSourceSpecifier::Self_(_)) | None => {
            return Err(ConfigError::invalid(
                p,
                "value is required: one of ads, api_config_source, path_config_source",
            ));
        }
    };
    Ok(model::ConfigSource {
        kind,
        initial_fetch_timeout,
    })
}

/// `resource_api_version` / `transport_api_version`: AUTO and V3 mean v3; V2 is gone.
fn check_api_version(v: i32, p: &FieldPath) -> Result<(), ConfigError> {
    match ApiVersion::try_from(v) {
        Ok(ApiVersion::Auto | ApiVersion::V3) => Ok(()),
        Ok(_) => Err(ConfigError::invalid(
            p,
            "V2 (and AUTO) xDS transport protocol versions are deprecated",
        )),
        Err(_) => Err(ConfigError::invalid(
            p,
            "value must be one of the defined enum values",
        )),
    }
}

/// `ApiConfigSource` with a gRPC `api_type` and exactly one gRPC service (Envoy's
/// `checkApiConfigSourceNames` wording).
pub(crate) fn api_config_source(
    a: &ApiConfigSource,
    p: &FieldPath,
) -> Result<model::ApiConfigSource, ConfigError> {
    check_api_version(a.transport_api_version, &p.field("transport_api_version"))?;
    let api_type = match ApiType::try_from(a.api_type) {
        Ok(ApiType::Grpc) => model::ApiType::Grpc,
        Ok(ApiType::DeltaGrpc) => model::ApiType::DeltaGrpc,
        Ok(other) => {
            return Err(ConfigError::unsupported_because(
                p.field("api_type"),
                format!(
                    "api_type {} is not supported by redvoy (GRPC and DELTA_GRPC are)",
                    other.as_str_name()
                ),
            ));
        }
        Err(_) => {
            return Err(ConfigError::invalid(
                p.field("api_type"),
                "value must be one of the defined enum values",
            ));
        }
    };
    let gp = p.field("grpc_services");
    let mut services = a.grpc_services.iter();
    let Some(service) = services.next() else {
        return Err(ConfigError::invalid(
            &gp,
            "API configs must have either a gRPC service or a cluster name defined",
        ));
    };
    if services.next().is_some() {
        return Err(ConfigError::invalid(
            &gp,
            "envoy.config.core.v3.ApiConfigSource::(DELTA_)GRPC must have a single gRPC service \
             specified",
        ));
    }
    let sp = gp.index(0);
    let grpc_service = match &service.target_specifier {
        Some(TargetSpecifier::EnvoyGrpc(e)) => {
            if e.cluster_name.is_empty() {
                return Err(ConfigError::invalid(
                    sp.field("envoy_grpc").field("cluster_name"),
                    "value length must be at least 1 characters",
                ));
            }
            model::GrpcService::EnvoyGrpc {
                cluster_name: e.cluster_name.clone(),
            }
        }
        Some(TargetSpecifier::GoogleGrpc(g)) => {
            if g.target_uri.is_empty() {
                return Err(ConfigError::invalid(
                    sp.field("google_grpc").field("target_uri"),
                    "value length must be at least 1 characters",
                ));
            }
            model::GrpcService::GoogleGrpc {
                target_uri: g.target_uri.clone(),
            }
        }
        None => {
            return Err(ConfigError::invalid(
                sp,
                "value is required: one of envoy_grpc, google_grpc",
            ));
        }
    };
    Ok(model::ApiConfigSource {
        api_type,
        grpc_service,
        set_node_on_first_message_only: a.set_node_on_first_message_only,
    })
}
