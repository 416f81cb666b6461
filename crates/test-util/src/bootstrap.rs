//! Envoy bootstrap templates for tests.
//!
//! The output is a template: `{{ADMIN_PORT}}` and `{{LISTENER_PORT}}` are filled by
//! [`crate::Proxy::start`], so one template runs unchanged through Envoy and through redvoy.

/// The type URL of the redis_proxy filter config.
pub const REDIS_PROXY_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProxy";
/// The type URL of the upstream protocol options.
pub const REDIS_PROTOCOL_OPTIONS_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProtocolOptions";

/// One upstream cluster.
#[derive(Clone, Debug)]
pub struct Cluster {
    pub name: String,
    /// `STATIC`, `STRICT_DNS`, `LOGICAL_DNS`
    pub kind: String,
    /// `RING_HASH`, `MAGLEV`, `ROUND_ROBIN`, ...
    pub lb_policy: String,
    /// `(address, port)` endpoints.
    pub endpoints: Vec<(String, u16)>,
    pub connect_timeout: String,
    /// Extra YAML lines at the cluster's level (not indented; indented here).
    pub extra: String,
}

// === impl Cluster ===

impl Cluster {
    /// A STATIC cluster over `127.0.0.1:<port>` endpoints.
    pub fn new(name: &str, lb_policy: &str, ports: &[u16]) -> Self {
        Cluster {
            name: name.to_string(),
            kind: "STATIC".to_string(),
            lb_policy: lb_policy.to_string(),
            endpoints: ports
                .iter()
                .map(|p| ("127.0.0.1".to_string(), *p))
                .collect(),
            connect_timeout: "1s".to_string(),
            extra: String::new(),
        }
    }

    /// Sets the cluster discovery type (`STRICT_DNS` with `localhost` endpoints, say).
    pub fn kind(mut self, kind: &str, host: &str) -> Self {
        self.kind = kind.to_string();
        for endpoint in &mut self.endpoints {
            endpoint.0 = host.to_string();
        }
        self
    }

    /// Appends YAML at the cluster's level.
    pub fn extra(mut self, yaml: &str) -> Self {
        self.extra.push_str(&dedent(yaml));
        self.extra.push('\n');
        self
    }

    /// Upstream auth through `typed_extension_protocol_options` (RedisProtocolOptions).
    pub fn upstream_auth(self, username: Option<&str>, password: &str) -> Self {
        let mut yaml = format!(
            "typed_extension_protocol_options:\n  envoy.filters.network.redis_proxy:\n    \"@type\": {REDIS_PROTOCOL_OPTIONS_TYPE}\n    auth_password: {{inline_string: \"{password}\"}}\n"
        );
        if let Some(user) = username {
            yaml.push_str(&format!(
                "    auth_username: {{inline_string: \"{user}\"}}\n"
            ));
        }
        self.extra(&yaml)
    }

    fn render(&self) -> String {
        let mut out = format!(
            "  - name: {}\n    connect_timeout: {}\n    type: {}\n    lb_policy: {}\n    load_assignment:\n      cluster_name: {}\n",
            self.name, self.connect_timeout, self.kind, self.lb_policy, self.name
        );
        out.push_str(if self.endpoints.is_empty() {
            "      endpoints: []\n"
        } else {
            "      endpoints:\n      - lb_endpoints:\n"
        });
        for (address, port) in &self.endpoints {
            out.push_str(&format!(
                "        - endpoint: {{address: {{socket_address: {{address: {address}, port_value: {port}}}}}}}\n"
            ));
        }
        out.push_str(&indent(&self.extra, 4));
        out
    }
}

/// A bootstrap with one listener running redis_proxy with `filter` (the YAML body of
/// `typed_config` without `@type`), and `clusters`.
pub fn bootstrap(filter: &str, clusters: &[Cluster]) -> String {
    let mut out = format!(
        "admin:\n  address: {{socket_address: {{address: 127.0.0.1, port_value: {{{{ADMIN_PORT}}}}}}}}\nstatic_resources:\n  listeners:\n  - name: redis_listener\n    address: {{socket_address: {{address: 127.0.0.1, port_value: {{{{LISTENER_PORT}}}}}}}}\n    filter_chains:\n    - filters:\n      - name: envoy.filters.network.redis_proxy\n        typed_config:\n          \"@type\": {REDIS_PROXY_TYPE}\n"
    );
    out.push_str(&indent(&dedent(filter), 10));
    out.push_str("  clusters:\n");
    for cluster in clusters {
        out.push_str(&cluster.render());
    }
    out
}

/// One item of `static_resources.listeners`: a redis_proxy listener `name` (also its stat
/// prefix) on `127.0.0.1:<port>` (a number or a `{{LISTENER_PORT..}}` placeholder) sending every
/// key to `cluster`, with `extra` lines (`key: value`) at the listener's level.
pub fn redis_listener_yaml(name: &str, port: &str, extra: &[&str], cluster: &str) -> String {
    let extra: String = extra.iter().map(|l| format!("\n    {l}")).collect();
    format!(
        r#"
  - name: {name}
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}{extra}
    filter_chains:
    - filters:
      - name: envoy.filters.network.redis_proxy
        typed_config:
          "@type": {REDIS_PROXY_TYPE}
          stat_prefix: {name}
          settings: {{op_timeout: 5s}}
          prefix_routes: {{catch_all_route: {{cluster: {cluster}}}}}"#
    )
}

/// The filter body most tests use: stat prefix `redis`, a 5 s op timeout and every key on
/// `cluster`, plus `extra` YAML at the filter's level.
/// One redis_proxy listener (stat prefix `redis`) routing `down:*` to cluster `down` (meant to
/// point at a port nothing listens on) and every other key to cluster `redis`, both RING_HASH:
/// the scenario the admin and stats oracle tests share.
pub fn two_cluster_bootstrap(redis_port: u16, down_port: u16) -> String {
    bootstrap(
        r#"
        stat_prefix: redis
        settings: {op_timeout: 5s}
        prefix_routes:
          routes:
          - {prefix: "down:", cluster: down}
          catch_all_route: {cluster: redis}
        "#,
        &[
            Cluster::new("redis", "RING_HASH", &[redis_port]),
            Cluster::new("down", "RING_HASH", &[down_port]),
        ],
    )
}

pub fn catch_all_filter(cluster: &str, extra: &str) -> String {
    format!(
        "stat_prefix: redis\nsettings: {{op_timeout: 5s}}\nprefix_routes:\n  catch_all_route: {{cluster: {cluster}}}\n{}",
        dedent(extra)
    )
}

/// One cluster `redis` over `ports` with `lb_policy`, every key routed to it.
pub fn simple_bootstrap(lb_policy: &str, ports: &[u16]) -> String {
    bootstrap(
        &catch_all_filter("redis", ""),
        &[Cluster::new("redis", lb_policy, ports)],
    )
}

/// Removes the common leading indentation (so tests can indent YAML raw strings naturally)
/// and leading/trailing blank lines.
pub fn dedent(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .position(|l| !l.trim().is_empty())
        .unwrap_or(lines.len());
    let end = lines
        .iter()
        .rposition(|l| !l.trim().is_empty())
        .map_or(start, |e| e + 1);
    let lines = &lines[start..end];
    let margin = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    lines
        .iter()
        .map(|l| l.get(margin..).unwrap_or("").trim_end())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Indents every non-empty line by `n` spaces; the result ends with a newline if non-empty.
pub fn indent(text: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    let mut out = String::new();
    for line in text.lines() {
        if !line.trim().is_empty() {
            out.push_str(&pad);
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// A redis_proxy listener (stat prefix `redis`) whose catch-all `route` goes to an
/// `envoy.clusters.redis` cluster `redis_cluster` discovered from `seeds`. `settings` and `route`
/// are flow mappings (`{op_timeout: 5s, enable_redirection: true}`, `{cluster: redis_cluster}`);
/// `cluster_config` is the RedisClusterConfig as a flow mapping, given as a
/// `google.protobuf.Struct` as Istio writes it; `extra_clusters` is appended after the cluster.
pub fn redis_cluster_bootstrap(
    settings: &str,
    route: &str,
    cluster_config: &str,
    seeds: &[u16],
    extra_clusters: &str,
) -> String {
    let seeds: String = seeds
        .iter()
        .map(|p| {
            format!(
                "        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {p}}}}}}}\n"
            )
        })
        .collect();
    format!(
        r#"admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {{{{ADMIN_PORT}}}}}}}}
static_resources:
  listeners:
  - name: redis_listener
    address: {{socket_address: {{address: 127.0.0.1, port_value: {{{{LISTENER_PORT}}}}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.redis_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProxy
          stat_prefix: redis
          settings: {settings}
          prefix_routes:
            catch_all_route: {route}
  clusters:
  - name: redis_cluster
    connect_timeout: 1s
    lb_policy: CLUSTER_PROVIDED
    cluster_type:
      name: envoy.clusters.redis
      typed_config:
        "@type": type.googleapis.com/google.protobuf.Struct
        value: {cluster_config}
    load_assignment:
      cluster_name: redis_cluster
      endpoints:
      - lb_endpoints:
{seeds}{extra_clusters}"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedent_and_indent() {
        assert_eq!(dedent("\n    a:\n      b: 1\n\n"), "a:\n  b: 1");
        assert_eq!(indent("a:\n  b: 1", 2), "  a:\n    b: 1\n");
    }

    #[test]
    fn renders_clusters() {
        let yaml = bootstrap(
            &catch_all_filter("c", ""),
            &[Cluster::new("c", "MAGLEV", &[1, 2]).upstream_auth(Some("u"), "p")],
        );
        assert!(yaml.contains("port_value: 2}}}\n"), "{yaml}");
        assert!(
            yaml.contains(
                "    typed_extension_protocol_options:\n      envoy.filters.network.redis_proxy:\n"
            ),
            "{yaml}"
        );
        assert!(
            yaml.contains("        auth_username: {inline_string: \"u\"}"),
            "{yaml}"
        );
    }
}
