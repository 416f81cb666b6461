//! The minimal HTTP connection manager (Istio's 15090 and 15021 listeners): static
//! `route_config`, prefix/path routes, the router as the last HTTP filter.

use std::collections::HashSet;
use std::time::Duration;

use envoy_types::pb::envoy::config::route::v3::route::Action;
use envoy_types::pb::envoy::config::route::v3::route_action::ClusterSpecifier;
use envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier;
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::{
    CodecType, RouteSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_filter::ConfigType;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter,
};

use super::{data_source, duration};
use crate::error::FieldPath;
use crate::parse::type_name_of;
use crate::supported::ROUTER;
use crate::{model, ConfigError};

/// `RouteAction.timeout` when unset.
const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(15);
/// `DirectResponseAction.status` proto constraint: `[100, 600)`.
const MIN_STATUS: u32 = 100;
const MAX_STATUS_EXCLUSIVE: u32 = 600;
/// Envoy's name of the router filter.
const ROUTER_NAME: &str = "envoy.filters.http.router";

pub(super) fn hcm(
    h: &HttpConnectionManager,
    p: &FieldPath,
) -> Result<model::HttpConnectionManager, ConfigError> {
    #[allow(deprecated)]
    let HttpConnectionManager {
        stat_prefix,
        codec_type,
        http_filters,
        route_specifier,
        // Access logs never change what is proxied (ignored by the allowlist).
        access_log: _,
        // Refused by the allowlist.
        add_user_agent: _,
        tracing: _,
        common_http_protocol_options: _,
        http1_safe_max_connection_duration: _,
        http_protocol_options: _,
        http2_protocol_options: _,
        http3_protocol_options: _,
        server_name: _,
        server_header_transformation: _,
        scheme_header_transformation: _,
        max_request_headers_kb: _,
        stream_idle_timeout: _,
        stream_flush_timeout: _,
        request_timeout: _,
        request_headers_timeout: _,
        drain_timeout: _,
        drain_timeout_jitter: _,
        delayed_close_timeout: _,
        access_log_flush_interval: _,
        flush_access_log_on_new_request: _,
        access_log_options: _,
        use_remote_address: _,
        xff_num_trusted_hops: _,
        original_ip_detection_extensions: _,
        early_header_mutation_extensions: _,
        internal_address_config: _,
        skip_xff_append: _,
        via: _,
        generate_request_id: _,
        preserve_external_request_id: _,
        always_set_request_id_in_response: _,
        forward_client_cert_details: _,
        set_current_client_cert_details: _,
        forward_client_cert_matcher: _,
        proxy_100_continue: _,
        represent_ipv4_remote_address_as_ipv4_mapped_ipv6: _,
        upgrade_configs: _,
        normalize_path: _,
        merge_slashes: _,
        path_with_escaped_slashes_action: _,
        request_id_extension: _,
        local_reply_config: _,
        strip_matching_host_port: _,
        stream_error_on_invalid_http_message: _,
        path_normalization_options: _,
        strip_trailing_host_dot: _,
        proxy_status_config: _,
        typed_header_validation_config: _,
        append_x_forwarded_port: _,
        append_local_overload: _,
        add_proxy_protocol_connection_state: _,
        forward_proto_config: _,
        strip_port_mode: _,
    } = h;
    if stat_prefix.is_empty() {
        return Err(ConfigError::invalid(
            p.field("stat_prefix"),
            "value length must be at least 1 characters",
        ));
    }
    match CodecType::try_from(*codec_type) {
        Ok(CodecType::Auto | CodecType::Http1) => {}
        Ok(other) => {
            return Err(ConfigError::unsupported_because(
                p.field("codec_type"),
                format!(
                    "codec_type {} is not supported by redvoy's HTTP connection manager (AUTO and \
                     HTTP1 are)",
                    other.as_str_name()
                ),
            ));
        }
        Err(_) => {
            return Err(ConfigError::invalid(
                p.field("codec_type"),
                "value must be one of the defined enum values",
            ));
        }
    }
    self::http_filters(http_filters, &p.field("http_filters"))?;
    let virtual_hosts = match route_specifier {
        Some(RouteSpecifier::RouteConfig(rc)) => route_config(rc, &p.field("route_config"))?,
        // RDS and scoped routes were refused by the allowlist walk.
        _ => {
            return Err(ConfigError::invalid(
                p,
                "route_specifier: value is required",
            ));
        }
    };
    Ok(model::HttpConnectionManager {
        stat_prefix: stat_prefix.clone(),
        virtual_hosts,
    })
}

/// The chain must end in the router; tolerated filters before it are dropped (the walk refused
/// every other kind).
fn http_filters(filters: &[HttpFilter], p: &FieldPath) -> Result<(), ConfigError> {
    let Some(last) = filters.len().checked_sub(1) else {
        return Err(ConfigError::unsupported_because(
            p,
            "an HTTP connection manager without the router filter is not supported by redvoy",
        ));
    };
    for (i, f) in filters.iter().enumerate() {
        let HttpFilter {
            name,
            config_type,
            // Lets Envoy skip a filter type it does not know; the allowlist refuses every
            // unknown type regardless, and the ones it accepts are all known.
            is_optional: _,
            // Refused by the allowlist.
            disabled: _,
        } = f;
        let is_router = match config_type {
            Some(ConfigType::TypedConfig(any)) => type_name_of(&any.type_url) == ROUTER,
            _ => name == ROUTER_NAME,
        };
        if is_router && i != last {
            return Err(ConfigError::invalid(
                p.index(i),
                format!(
                    "Error: terminal filter named {name} of type {ROUTER_NAME} must be the last \
                     filter in a http filter chain."
                ),
            ));
        }
        if !is_router && i == last {
            return Err(ConfigError::unsupported_because(
                p.index(i),
                format!(
                    "the last HTTP filter is '{name}', not {ROUTER_NAME}: not supported by redvoy"
                ),
            ));
        }
    }
    Ok(())
}

fn route_config(
    rc: &RouteConfiguration,
    p: &FieldPath,
) -> Result<Vec<model::VirtualHost>, ConfigError> {
    let RouteConfiguration {
        name: config_name,
        virtual_hosts,
        // Refused by the allowlist.
        vhds: _,
        internal_only_headers: _,
        response_headers_to_add: _,
        response_headers_to_remove: _,
        request_headers_to_add: _,
        request_headers_to_remove: _,
        most_specific_header_mutations_wins: _,
        validate_clusters: _,
        max_direct_response_body_size_bytes: _,
        cluster_specifier_plugins: _,
        request_mirror_policies: _,
        ignore_port_in_host_matching: _,
        vhost_header: _,
        ignore_path_parameters_in_path_matching: _,
        typed_per_filter_config: _,
        metadata: _,
        route_specifiers: _,
    } = rc;
    let mut names = HashSet::new();
    let mut domains = HashSet::new();
    let mut out = Vec::with_capacity(virtual_hosts.len());
    for (i, vh) in virtual_hosts.iter().enumerate() {
        let vp = p.field("virtual_hosts").index(i);
        if !names.insert(vh.name.as_str()) {
            return Err(ConfigError::invalid(
                vp.field("name"),
                format!(
                    "Only unique values for name are permitted. Duplicate entry of name {}",
                    vh.name
                ),
            ));
        }
        for d in &vh.domains {
            if !domains.insert(d.as_str()) {
                return Err(ConfigError::invalid(
                    vp.field("domains"),
                    format!(
                        "Only unique values for domains are permitted. Duplicate entry of domain \
                         {d} in route {config_name}"
                    ),
                ));
            }
        }
        out.push(virtual_host(vh, &vp)?);
    }
    Ok(out)
}

fn virtual_host(vh: &VirtualHost, p: &FieldPath) -> Result<model::VirtualHost, ConfigError> {
    #[allow(deprecated)]
    let VirtualHost {
        name,
        domains,
        routes,
        // Refused by the allowlist.
        matcher: _,
        require_tls: _,
        virtual_clusters: _,
        rate_limits: _,
        request_headers_to_add: _,
        request_headers_to_remove: _,
        response_headers_to_add: _,
        response_headers_to_remove: _,
        cors: _,
        typed_per_filter_config: _,
        include_request_attempt_count: _,
        include_attempt_count_in_response: _,
        retry_policy: _,
        retry_policy_typed_config: _,
        hedge_policy: _,
        include_is_timeout_retry_header: _,
        per_request_buffer_limit_bytes: _,
        request_body_buffer_limit: _,
        request_mirror_policies: _,
        metadata: _,
        route_specifiers: _,
    } = vh;
    if name.is_empty() {
        return Err(ConfigError::invalid(
            p.field("name"),
            "value length must be at least 1 characters",
        ));
    }
    if domains.is_empty() {
        return Err(ConfigError::invalid(
            p.field("domains"),
            "value must contain at least 1 item(s)",
        ));
    }
    let mut out = Vec::with_capacity(routes.len());
    for (i, r) in routes.iter().enumerate() {
        out.push(route(r, &p.field("routes").index(i))?);
    }
    Ok(model::VirtualHost {
        name: name.clone(),
        domains: domains.clone(),
        routes: out,
    })
}

fn route(r: &Route, p: &FieldPath) -> Result<model::HttpRoute, ConfigError> {
    #[allow(deprecated)]
    let Route {
        r#match,
        action,
        // Only labels the route in stats and dumps (ignored by the allowlist).
        name: _,
        // Refused by the allowlist.
        metadata: _,
        decorator: _,
        typed_per_filter_config: _,
        request_headers_to_add: _,
        request_headers_to_remove: _,
        response_headers_to_add: _,
        response_headers_to_remove: _,
        tracing: _,
        per_request_buffer_limit_bytes: _,
        stat_prefix: _,
        request_body_buffer_limit: _,
        route_specifiers: _,
    } = r;
    let mp = p.field("match");
    let path_match = match r#match.as_ref().map(route_match) {
        Some(Some(PathSpecifier::Prefix(prefix))) => model::PathMatch::Prefix(prefix.clone()),
        Some(Some(PathSpecifier::Path(path))) => model::PathMatch::Path(path.clone()),
        Some(Some(_)) => {
            return Err(ConfigError::unsupported(mp));
        }
        Some(None) | None => return Err(ConfigError::invalid(mp, "value is required")),
    };
    let action = match action {
        Some(Action::Route(a)) => route_action(a, &p.field("route"))?,
        Some(Action::DirectResponse(DirectResponseAction {
            status,
            body,
            // Refused by the allowlist.
            body_format: _,
        })) => {
            let dp = p.field("direct_response");
            if !(MIN_STATUS..MAX_STATUS_EXCLUSIVE).contains(status) {
                return Err(ConfigError::invalid(
                    dp.field("status"),
                    format!("value must be inside range [{MIN_STATUS}, {MAX_STATUS_EXCLUSIVE})"),
                ));
            }
            let status = u16::try_from(*status).unwrap_or(u16::MAX);
            let body = match body {
                Some(b) => {
                    let bytes = data_source(b, &dp.field("body"))?;
                    Some(String::from_utf8_lossy(&bytes).into_owned())
                }
                None => None,
            };
            model::HttpRouteAction::DirectResponse { status, body }
        }
        // Redirects and the rest were refused by the allowlist walk.
        _ => {
            return Err(ConfigError::invalid(p, "action: value is required"));
        }
    };
    Ok(model::HttpRoute { path_match, action })
}

/// `RouteMatch.path_specifier`, the one part of a match redvoy implements.
fn route_match(m: &RouteMatch) -> Option<&PathSpecifier> {
    let RouteMatch {
        path_specifier,
        // Refused by the allowlist.
        case_sensitive: _,
        runtime_fraction: _,
        headers: _,
        query_parameters: _,
        cookies: _,
        grpc: _,
        tls_context: _,
        dynamic_metadata: _,
        filter_state: _,
    } = m;
    path_specifier.as_ref()
}

/// `RouteAction`: a cluster, with an optional prefix rewrite and a timeout.
fn route_action(a: &RouteAction, p: &FieldPath) -> Result<model::HttpRouteAction, ConfigError> {
    #[allow(deprecated)]
    let RouteAction {
        cluster_specifier,
        prefix_rewrite,
        timeout,
        // Refused by the allowlist.
        cluster_not_found_response_code: _,
        metadata_match: _,
        regex_rewrite: _,
        path_rewrite_policy: _,
        path_rewrite: _,
        append_x_forwarded_host: _,
        idle_timeout: _,
        flush_timeout: _,
        early_data_policy: _,
        retry_policy: _,
        retry_policy_typed_config: _,
        request_mirror_policies: _,
        priority: _,
        rate_limits: _,
        include_vh_rate_limits: _,
        hash_policy: _,
        cors: _,
        max_grpc_timeout: _,
        grpc_timeout_offset: _,
        upgrade_configs: _,
        internal_redirect_policy: _,
        internal_redirect_action: _,
        max_internal_redirects: _,
        hedge_policy: _,
        max_stream_duration: _,
        host_rewrite_specifier: _,
    } = a;
    let cluster = match cluster_specifier {
        Some(ClusterSpecifier::Cluster(c)) if !c.is_empty() => c.clone(),
        Some(_) => {
            return Err(ConfigError::invalid(
                p.field("cluster"),
                "value length must be at least 1 characters",
            ));
        }
        None => {
            return Err(ConfigError::invalid(
                p,
                "cluster_specifier: value is required",
            ));
        }
    };
    let timeout = match timeout {
        Some(d) => duration(d, &p.field("timeout"))?,
        None => DEFAULT_ROUTE_TIMEOUT,
    };
    Ok(model::HttpRouteAction::Cluster {
        cluster,
        prefix_rewrite: Some(prefix_rewrite.clone()).filter(|s| !s.is_empty()),
        timeout,
    })
}
