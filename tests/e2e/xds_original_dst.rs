//! The original-destination hand-off for real, as in an Istio sidecar (spec §3.4): inside a
//! network namespace the test creates, an iptables `nat OUTPUT REDIRECT` sends TCP for a fake
//! service VIP to port 15001, where xDS put Istio's `virtualOutbound` listener
//! (`use_original_dst`, catch-all tcp_proxy to `BlackHoleCluster`). The proxy reads
//! `SO_ORIGINAL_DST` and hands the connection to the `<VIP>_6379` listener (`bind_to_port:
//! false`, redis_proxy to a redis-server in the namespace), so a plain client connecting to
//! VIP:6379 gets its GET/SET answered by redis_proxy. A connection to a VIP nobody declared
//! ends in the black hole.
//!
//! Needs root (CAP_NET_ADMIN), `ip` and `iptables` (`make test` installs iptables); when the
//! machine cannot create the namespace the test prints a SKIPPED line and passes.

use std::time::Duration;

use redvoy_test_util::xds::{
    redis_listener_with, redis_proxy, static_cluster, virtual_outbound_listener, without_bind,
    xds_bootstrap, XdsBootstrap,
};
use redvoy_test_util::{
    free_port, wait_for, AdsServer, NetNs, NsRedis, Proxy, ProxyOptions, Variant,
};

use crate::targets;

/// The fake service VIP (Kubernetes' default service range) and its port.
pub(crate) const VIP: &str = "10.96.0.10";
/// A VIP in the redirected range that no listener declares.
const UNKNOWN_VIP: &str = "10.96.0.11";
const VIP_RANGE: &str = "10.96.0.0/16";
const SERVICE_PORT: u16 = 6379;
/// Istio's outbound capture port; the namespace is the test's own, so no clash.
const OUTBOUND_CAPTURE_PORT: u16 = 15001;
/// Bound on the listeners answering after the proxy is ready.
const WAIT: Duration = Duration::from_secs(15);

/// A namespace with a veth (its own address and a route to the VIP range) and the REDIRECT
/// rule; `Err` explains why the machine cannot do it.
pub(crate) fn namespace() -> Result<NetNs, String> {
    redvoy_test_util::netns::run(&["iptables", "--version"])
        .map_err(|e| format!("iptables unavailable: {e}"))?;
    let ns = NetNs::create("redvoy-odst")?;
    let capture = OUTBOUND_CAPTURE_PORT.to_string();
    for command in [
        vec![
            "ip", "link", "add", "veth0", "type", "veth", "peer", "name", "veth1",
        ],
        vec!["ip", "addr", "add", "10.0.0.2/24", "dev", "veth0"],
        vec!["ip", "link", "set", "veth0", "up"],
        vec!["ip", "link", "set", "veth1", "up"],
        vec![
            "ip", "route", "add", VIP_RANGE, "via", "10.0.0.1", "dev", "veth0",
        ],
        vec![
            "iptables",
            "-t",
            "nat",
            "-A",
            "OUTPUT",
            "-p",
            "tcp",
            "-d",
            VIP_RANGE,
            "-j",
            "REDIRECT",
            "--to-ports",
            &capture,
        ],
    ] {
        ns.exec(&command)?;
    }
    Ok(ns)
}

#[test]
fn vip_connection_is_handed_to_the_vip_listener() {
    for target in targets() {
        eprintln!("--- running on {target}");
        let ns = match namespace() {
            Ok(ns) => ns,
            Err(reason) => {
                eprintln!(
                    "SKIPPED xds_original_dst: cannot set up a network namespace with an iptables REDIRECT ({reason}); the SO_ORIGINAL_DST hand-off was NOT tested"
                );
                return;
            }
        };
        let redis = NsRedis::start(&ns, free_port());
        let dir = redvoy_test_util::tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let server = AdsServer::start_unix(dir.path().join("xds.sock"))
            .unwrap_or_else(|e| panic!("ADS: {e}"));
        let vip_listener = format!("{VIP}_{SERVICE_PORT}");
        server.set_messages(
            "c1",
            &[
                static_cluster("BlackHoleCluster", &[]),
                static_cluster(
                    "outbound|6379||redis.default.svc.cluster.local",
                    &[redis.port()],
                ),
            ],
        );
        server.set_messages(
            "l1",
            &[
                virtual_outbound_listener(OUTBOUND_CAPTURE_PORT, "BlackHoleCluster"),
                without_bind(redis_listener_with(
                    &vip_listener,
                    VIP,
                    SERVICE_PORT,
                    redis_proxy(
                        "outbound|6379||redis.default.svc.cluster.local",
                        &[],
                        Some("outbound|6379||redis.default.svc.cluster.local"),
                    ),
                )),
            ],
        );
        let mut options = XdsBootstrap::new(Variant::Delta);
        options.admin_socket = true;
        let proxy = Proxy::start_with(
            target,
            &xds_bootstrap(&server, &options),
            &ProxyOptions {
                wrapper: ns.wrapper(),
                ..ProxyOptions::default()
            },
        );
        let vip_port = SERVICE_PORT.to_string();
        let via_vip = |args: &[&str]| {
            let mut all = vec!["-h", VIP, "-p", vip_port.as_str()];
            all.extend_from_slice(args);
            redis.cli(&all)
        };
        wait_for(WAIT, "PING through the VIP", || {
            via_vip(&["PING"]).ok().filter(|o| o.trim() == "PONG")
        });
        assert_eq!(
            via_vip(&["SET", "vip-key", "hello"]).map(|o| o.trim().to_string()),
            Ok("OK".into()),
            "{target}: SET via VIP"
        );
        assert_eq!(
            via_vip(&["GET", "vip-key"]).map(|o| o.trim().to_string()),
            Ok("hello".into()),
            "{target}: GET via VIP"
        );
        assert_eq!(
            redis.cmd(&["GET", "vip-key"]).trim(),
            "hello",
            "{target}: the key is on the redis-server"
        );
        let stats = proxy.stats();
        let prefix = "redis.outbound|6379||redis.default.svc.cluster.local.command.set.total";
        assert_eq!(
            stats.get_int(prefix),
            Some(1),
            "{target}: redis_proxy served the SET:\n{}",
            stats.matching("redis.")
        );

        // A VIP with no listener: the virtualOutbound chain itself takes it (black hole).
        let unknown = redis.cli(&["-h", UNKNOWN_VIP, "-p", vip_port.as_str(), "PING"]);
        assert!(
            unknown.as_deref().map(str::trim) != Ok("PONG"),
            "{target}: an undeclared VIP must not reach redis: {unknown:?}"
        );
        eprintln!("{target}: undeclared VIP -> {unknown:?}");
        drop(proxy);
        drop(redis);
    }
}
