//! `redvoy-control-plane`: Kubernetes YAML (Services, EndpointSlices, Istio EnvoyFilters) in a
//! directory → xDS for Envoy and redvoy sidecars, live as the files change. See
//! `crates/control-plane` and `istio-examples/`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use redvoy_control_plane::{ListenerBind, Options, Settings};

#[derive(Debug, Parser)]
#[command(
    name = "redvoy-control-plane",
    version,
    about = "A local xDS control plane applying Istio EnvoyFilters"
)]
struct Flags {
    /// A directory of Kubernetes YAML (repeatable); read recursively, watched for changes.
    #[arg(long = "config-dir", required_unless_present = "kube")]
    config_dirs: Vec<PathBuf>,
    /// Read Services, EndpointSlices and EnvoyFilters from the Kubernetes API (in-cluster
    /// service account or kubeconfig) instead of directories. Needs a build with
    /// `--features kube`.
    #[arg(long, conflicts_with = "config_dirs")]
    kube: bool,
    /// ADS over gRPC on this TCP address (e.g. 127.0.0.1:15010).
    #[arg(long)]
    xds_address: Option<SocketAddr>,
    /// ADS over gRPC on this Unix socket.
    #[arg(long)]
    xds_uds: Option<PathBuf>,
    /// HTTP: /stats, /stats/prometheus, /debug/config, /debug/status, /ready.
    #[arg(long)]
    admin_address: Option<SocketAddr>,
    /// Istio's root namespace: its EnvoyFilters apply to every proxy.
    #[arg(long, default_value = "istio-system")]
    root_namespace: String,
    /// The Kubernetes cluster domain.
    #[arg(long, default_value = "cluster.local")]
    domain: String,
    /// direct: service listeners bind their VIP (local runs); sidecar: Istio's bind_to_port
    /// false plus virtualOutbound on 15001 (iptables capture).
    #[arg(long, default_value = "direct")]
    listener_bind: String,
    /// The port of `virtualOutbound` with --listener-bind sidecar (MeshConfig proxyListenPort).
    #[arg(long, default_value_t = 15001)]
    virtual_outbound_port: u32,
    /// VIPs for Services without clusterIP (CIDR).
    #[arg(long, default_value = "127.10.0.0/16")]
    vip_range: String,
    /// Rewrite <svc>.<ns>.svc.<domain> addresses in clusters to the Services' endpoints (what
    /// cluster DNS and kube-proxy do in a cluster).
    #[arg(long)]
    resolve_cluster_local: bool,
    /// istiod's PILOT_ENABLE_REDIS_FILTER: redis_proxy instead of tcp_proxy on Redis ports
    /// (also set by that environment variable).
    #[arg(long)]
    redis_filter: bool,
    /// Quiet time after a file change before the directory is read, in milliseconds.
    #[arg(long, default_value_t = 100)]
    debounce_ms: u64,
    /// Log level (trace, debug, info, warn, error).
    #[arg(long, short = 'l', default_value = "info")]
    log_level: String,
}

fn parse_cidr(s: &str) -> anyhow::Result<(Ipv4Addr, u8)> {
    let (ip, len) = s
        .split_once('/')
        .context("--vip-range: expected a.b.c.d/len")?;
    let ip: Ipv4Addr = ip.parse().context("--vip-range: not an IPv4 address")?;
    let len: u8 = len.parse().context("--vip-range: bad prefix length")?;
    if !(8..=30).contains(&len) {
        bail!("--vip-range: prefix length must be 8..=30");
    }
    Ok((ip, len))
}

fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&flags.log_level))
        .with_writer(std::io::stderr)
        .init();
    let listener_bind = match flags.listener_bind.as_str() {
        "direct" => ListenerBind::Direct,
        "sidecar" => ListenerBind::Sidecar,
        other => bail!("--listener-bind: {other:?} is not direct or sidecar"),
    };
    let redis_filter = flags.redis_filter
        || std::env::var("PILOT_ENABLE_REDIS_FILTER").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    let opts = Options {
        config_dirs: flags.config_dirs,
        xds_address: flags.xds_address,
        xds_uds: flags.xds_uds,
        admin_address: flags.admin_address,
        root_namespace: flags.root_namespace,
        settings: Settings {
            domain: flags.domain,
            listener_bind,
            redis_filter,
            vip_range: parse_cidr(&flags.vip_range)?,
            resolve_cluster_local: flags.resolve_cluster_local,
            virtual_outbound_port: flags.virtual_outbound_port,
        },
        debounce: Duration::from_millis(flags.debounce_ms),
        kube: flags.kube,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(redvoy_control_plane::run(opts))?;
    Ok(())
}
