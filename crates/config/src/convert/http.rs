//! The minimal HTTP connection manager (Istio's 15090 and 15021 listeners): static
//! `route_config`, prefix/path routes, the router as the last HTTP filter.

use std::collections::HashSet;
use std::time::Duration;

use envoy_types::pb::envoy::config::route::v3::route::Action;
use envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier;
use envoy_types::pb::envoy::config::route::v3::{Route, RouteConfiguration, VirtualHost};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::{
    CodecType, RouteSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_filter::ConfigType;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;

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
    if h.stat_prefix.is_empty() {
        return Err(ConfigError::invalid(
            p.field("stat_prefix"),
            "value length must be at least 1 characters",
        ));
    }
    match CodecType::try_from(h.codec_type) {
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
    http_filters(h, &p.field("http_filters"))?;
    let virtual_hosts = match &h.route_specifier {
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
        stat_prefix: h.stat_prefix.clone(),
        virtual_hosts,
    })
}

/// The chain must end in the router; tolerated filters before it are dropped (the walk refused
/// every other kind).
fn http_filters(h: &HttpConnectionManager, p: &FieldPath) -> Result<(), ConfigError> {
    let Some(last) = h.http_filters.len().checked_sub(1) else {
        return Err(ConfigError::unsupported_because(
            p,
            "an HTTP connection manager without the router filter is not supported by redvoy",
        ));
    };
    for (i, f) in h.http_filters.iter().enumerate() {
        let is_router = match &f.config_type {
            Some(ConfigType::TypedConfig(any)) => type_name_of(&any.type_url) == ROUTER,
            _ => f.name == ROUTER_NAME,
        };
        if is_router && i != last {
            return Err(ConfigError::invalid(
                p.index(i),
                format!(
                    "Error: terminal filter named {} of type {ROUTER_NAME} must be the last filter \
                     in a http filter chain.",
                    f.name
                ),
            ));
        }
        if !is_router && i == last {
            return Err(ConfigError::unsupported_because(
                p.index(i),
                format!(
                    "the last HTTP filter is '{}', not {ROUTER_NAME}: not supported by redvoy",
                    f.name
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
    let mut names = HashSet::new();
    let mut domains = HashSet::new();
    let mut out = Vec::with_capacity(rc.virtual_hosts.len());
    for (i, vh) in rc.virtual_hosts.iter().enumerate() {
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
                         {d} in route {}",
                        rc.name
                    ),
                ));
            }
        }
        out.push(virtual_host(vh, &vp)?);
    }
    Ok(out)
}

fn virtual_host(vh: &VirtualHost, p: &FieldPath) -> Result<model::VirtualHost, ConfigError> {
    if vh.name.is_empty() {
        return Err(ConfigError::invalid(
            p.field("name"),
            "value length must be at least 1 characters",
        ));
    }
    if vh.domains.is_empty() {
        return Err(ConfigError::invalid(
            p.field("domains"),
            "value must contain at least 1 item(s)",
        ));
    }
    let mut routes = Vec::with_capacity(vh.routes.len());
    for (i, r) in vh.routes.iter().enumerate() {
        routes.push(route(r, &p.field("routes").index(i))?);
    }
    Ok(model::VirtualHost {
        name: vh.name.clone(),
        domains: vh.domains.clone(),
        routes,
    })
}

fn route(r: &Route, p: &FieldPath) -> Result<model::HttpRoute, ConfigError> {
    let mp = p.field("match");
    let path_match = match r.r#match.as_ref().and_then(|m| m.path_specifier.as_ref()) {
        Some(PathSpecifier::Prefix(prefix)) => model::PathMatch::Prefix(prefix.clone()),
        Some(PathSpecifier::Path(path)) => model::PathMatch::Path(path.clone()),
        Some(_) => {
            return Err(ConfigError::unsupported(mp));
        }
        None => return Err(ConfigError::invalid(mp, "value is required")),
    };
    let action = match &r.action {
        Some(Action::Route(a)) => {
            let ap = p.field("route");
            let cluster = match &a.cluster_specifier {
                Some(
                    envoy_types::pb::envoy::config::route::v3::route_action::ClusterSpecifier::Cluster(
                        c,
                    ),
                ) if !c.is_empty() => c.clone(),
                Some(_) => {
                    return Err(ConfigError::invalid(
                        ap.field("cluster"),
                        "value length must be at least 1 characters",
                    ));
                }
                None => {
                    return Err(ConfigError::invalid(
                        ap,
                        "cluster_specifier: value is required",
                    ));
                }
            };
            let timeout = match &a.timeout {
                Some(d) => duration(d, &ap.field("timeout"))?,
                None => DEFAULT_ROUTE_TIMEOUT,
            };
            model::HttpRouteAction::Cluster {
                cluster,
                prefix_rewrite: Some(a.prefix_rewrite.clone()).filter(|s| !s.is_empty()),
                timeout,
            }
        }
        Some(Action::DirectResponse(d)) => {
            let dp = p.field("direct_response");
            if !(MIN_STATUS..MAX_STATUS_EXCLUSIVE).contains(&d.status) {
                return Err(ConfigError::invalid(
                    dp.field("status"),
                    format!("value must be inside range [{MIN_STATUS}, {MAX_STATUS_EXCLUSIVE})"),
                ));
            }
            let status = u16::try_from(d.status).unwrap_or(u16::MAX);
            let body = match &d.body {
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
