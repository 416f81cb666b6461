//! `dynamic_resources` and `ConfigSource`s (also used by EDS clusters).

use std::path::PathBuf;
use std::time::Duration;

use envoy_types::pb::envoy::config::bootstrap::v3::bootstrap::DynamicResources;
use envoy_types::pb::envoy::config::core::v3::api_config_source::ApiType;
use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
use envoy_types::pb::envoy::config::core::v3::grpc_service::{
    EnvoyGrpc, GoogleGrpc, TargetSpecifier,
};
use envoy_types::pb::envoy::config::core::v3::{
    ApiConfigSource, ApiVersion, ConfigSource, GrpcService, PathConfigSource, WatchedDirectory,
};

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
    let DynamicResources {
        lds_config,
        cds_config,
        ads_config,
        // Refused by the allowlist (xDS-TP).
        lds_resources_locator: _,
        cds_resources_locator: _,
    } = d;
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
    let ads_config = match ads_config {
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
        lds_config,
        "lds_config",
        "type.googleapis.com/envoy.config.listener.v3.Listener",
    )?;
    let cds_config = source(
        cds_config,
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
    let ConfigSource {
        config_source_specifier,
        initial_fetch_timeout,
        resource_api_version,
        // Refused by the allowlist.
        authorities: _,
    } = s;
    check_api_version(*resource_api_version, &p.field("resource_api_version"))?;
    let initial_fetch_timeout = match initial_fetch_timeout {
        Some(d) => duration(d, &p.field("initial_fetch_timeout"))?,
        None => DEFAULT_INITIAL_FETCH_TIMEOUT,
    };
    #[allow(deprecated)]
    let kind = match config_source_specifier {
        Some(ConfigSourceSpecifier::Ads(_)) => model::ConfigSourceKind::Ads,
        Some(ConfigSourceSpecifier::ApiConfigSource(a)) => {
            model::ConfigSourceKind::Api(api_config_source(a, &p.field("api_config_source"))?)
        }
        Some(ConfigSourceSpecifier::PathConfigSource(PathConfigSource {
            path,
            watched_directory,
            // Refused by the allowlist.
            poll_interval: _,
        })) => {
            let pp = p.field("path_config_source");
            if path.is_empty() {
                return Err(ConfigError::invalid(
                    pp.field("path"),
                    "value length must be at least 1 characters",
                ));
            }
            let watched_directory = match watched_directory {
                Some(WatchedDirectory {
                    path,
                    // Refused by the allowlist.
                    watch_modify: _,
                }) => {
                    if path.is_empty() {
                        return Err(ConfigError::invalid(
                            pp.field("watched_directory").field("path"),
                            "value length must be at least 1 characters",
                        ));
                    }
                    Some(PathBuf::from(path))
                }
                None => None,
            };
            model::ConfigSourceKind::Path {
                path: PathBuf::from(path),
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
    let ApiConfigSource {
        api_type,
        transport_api_version,
        grpc_services,
        set_node_on_first_message_only,
        // REST only, and only gRPC is accepted (ignored by the allowlist).
        refresh_delay: _,
        request_timeout: _,
        // Refused by the allowlist.
        cluster_names: _,
        rate_limit_settings: _,
        config_validators: _,
    } = a;
    check_api_version(*transport_api_version, &p.field("transport_api_version"))?;
    let api_type = match ApiType::try_from(*api_type) {
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
    let mut services = grpc_services.iter();
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
    let GrpcService {
        target_specifier,
        // A deadline for unary calls; xDS is one long-lived stream (ignored by the allowlist).
        timeout: _,
        // Refused by the allowlist.
        initial_metadata: _,
        retry_policy: _,
    } = service;
    let grpc_service = match target_specifier {
        Some(TargetSpecifier::EnvoyGrpc(EnvoyGrpc {
            cluster_name,
            // Refused by the allowlist.
            authority: _,
            retry_policy: _,
            max_receive_message_length: _,
            skip_envoy_headers: _,
        })) => {
            if cluster_name.is_empty() {
                return Err(ConfigError::invalid(
                    sp.field("envoy_grpc").field("cluster_name"),
                    "value length must be at least 1 characters",
                ));
            }
            model::GrpcService::EnvoyGrpc {
                cluster_name: cluster_name.clone(),
            }
        }
        Some(TargetSpecifier::GoogleGrpc(GoogleGrpc {
            target_uri,
            // The gRPC client's own stats, which redvoy does not keep (ignored by the
            // allowlist).
            stat_prefix: _,
            // Refused by the allowlist.
            channel_credentials: _,
            channel_credentials_plugin: _,
            call_credentials: _,
            call_credentials_plugin: _,
            credentials_factory_name: _,
            config: _,
            per_stream_buffer_limit_bytes: _,
            channel_args: _,
        })) => {
            if target_uri.is_empty() {
                return Err(ConfigError::invalid(
                    sp.field("google_grpc").field("target_uri"),
                    "value length must be at least 1 characters",
                ));
            }
            model::GrpcService::GoogleGrpc {
                target_uri: target_uri.clone(),
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
        set_node_on_first_message_only: *set_node_on_first_message_only,
    })
}
