//! Unit tests of the cluster manager: static, DNS and EDS clusters, warming, CDS changes.

use redvoy_config::model::{DnsLookupFamily, Endpoint, LbPolicy, SocketAddress};

use super::*;

fn cluster(name: &str, discovery: DiscoveryType, endpoints: &[(&str, u16)]) -> model::Cluster {
    model::Cluster {
        name: name.to_owned(),
        discovery,
        lb_policy: LbPolicy::RoundRobin,
        connect_timeout: Duration::from_secs(1),
        dns_refresh_rate: Duration::from_millis(50),
        dns_lookup_family: DnsLookupFamily::V4Only,
        endpoints: endpoints
            .iter()
            .map(|(a, p)| Endpoint {
                address: SocketAddress {
                    address: (*a).to_owned(),
                    port: *p,
                },
                pipe: None,
                weight: 1,
                hostname: String::new(),
                health_status: Default::default(),
                locality: Default::default(),
                priority: 0,
                transport_socket_labels: Default::default(),
                locality_transport_socket_labels: Default::default(),
            })
            .collect(),
        redis_protocol_options: None,
        use_hostname_for_hashing: false,
        eds: None,
        redis_cluster: None,
        circuit_breakers: Default::default(),
        healthy_panic_threshold: Default::default(),
        tcp_keepalive: None,
        transport_socket_matches: Default::default(),
        health_check: None,
        outlier_detection: None,
        ignore_health_on_host_removal: false,
        upstream_tls: None,
    }
}

#[tokio::test]
async fn static_cluster_hosts_and_stats() {
    let store = Store::new();
    let c = cluster("s", DiscoveryType::Static, &[("127.0.0.1", 1), ("::1", 2)]);
    let cm = ClusterManager::new(&[c], &store).await.unwrap();
    let s = cm.get("s").unwrap();
    let set = s.host_set();
    let addrs: Vec<&str> = set.hosts().iter().map(|h| h.address_string()).collect();
    assert_eq!(addrs, ["127.0.0.1:1", "[::1]:2"]);
    assert_eq!(store.value_of("cluster.s.membership_change"), Some(1));
    assert_eq!(store.value_of("cluster.s.membership_total"), Some(2));
    assert_eq!(store.value_of("cluster.s.membership_healthy"), Some(2));
    assert_eq!(store.value_of("cluster.s.update_attempt"), Some(0));
    // Envoy leaves max_host_weight at 0 for STATIC clusters.
    assert_eq!(store.value_of("cluster.s.max_host_weight"), Some(0));
    assert_eq!(store.value_of("cluster.s.upstream_rq_retry"), Some(0));
    assert_eq!(
        store.value_of("cluster.s.circuit_breakers.default.cx_open"),
        Some(0)
    );
    assert_eq!(store.value_of("cluster_manager.active_clusters"), Some(1));
    assert!(cm.get("nope").is_none());
    assert_eq!(cm.clusters().len(), 1);
}

#[tokio::test]
async fn static_cluster_rejects_names() {
    let c = cluster("s", DiscoveryType::Static, &[("localhost", 1)]);
    let err = ClusterManager::new(&[c], &Store::new()).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "malformed IP address: localhost. Consider setting resolver_name or setting cluster \
         type to 'STRICT_DNS' or 'LOGICAL_DNS'"
    );
}

#[tokio::test]
async fn config_errors() {
    let store = Store::new();
    let a = cluster("a", DiscoveryType::Static, &[]);
    let err = ClusterManager::new(&[a.clone(), a.clone()], &store)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "cluster manager: duplicate cluster 'a'");

    let mut h = cluster("h", DiscoveryType::Static, &[("127.0.0.1", 1)]);
    h.use_hostname_for_hashing = true;
    let err = ClusterManager::new(&[h], &store).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "Cannot use hostname for consistent hashing loadbalancing for cluster of type: \
         'envoy.cluster.static'"
    );

    let l = cluster(
        "l",
        DiscoveryType::LogicalDns,
        &[("localhost", 1), ("localhost", 2)],
    );
    let err = ClusterManager::new(&[l], &store).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "LOGICAL_DNS clusters must have a single locality_lb_endpoint and a single lb_endpoint"
    );

    let mut m = cluster("m", DiscoveryType::Static, &[]);
    m.lb_policy = LbPolicy::Maglev { table_size: 8 };
    let err = ClusterManager::new(&[m], &store).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "The table size of maglev must be prime number"
    );
}

#[tokio::test]
async fn strict_dns_localhost() {
    let store = Store::new();
    let mut c = cluster(
        "d",
        DiscoveryType::StrictDns,
        &[("localhost", 7000), ("127.0.0.2", 7001)],
    );
    c.endpoints[1].hostname = "second".to_owned();
    c.endpoints[1].weight = 3;
    let cm = ClusterManager::new(&[c], &store).await.unwrap();
    let d = cm.get("d").unwrap();
    let set = d.host_set();
    let addrs: Vec<&str> = set.hosts().iter().map(|h| h.address_string()).collect();
    assert_eq!(addrs, ["127.0.0.1:7000", "127.0.0.2:7001"]);
    assert_eq!(set.hosts()[0].hostname, "localhost");
    assert_eq!(set.hosts()[1].hostname, "second");
    // Two targets, each one attempt, one success, one membership change (Envoy counts per
    // target).
    assert_eq!(store.value_of("cluster.d.update_attempt"), Some(2));
    assert_eq!(store.value_of("cluster.d.update_success"), Some(2));
    assert_eq!(store.value_of("cluster.d.membership_change"), Some(2));
    assert_eq!(store.value_of("cluster.d.max_host_weight"), Some(3));

    // A refresh with the same answer keeps the same Arc<Host> and does not rebuild.
    set.hosts()[0]
        .stats
        .rq_total
        .fetch_add(5, std::sync::atomic::Ordering::Relaxed);
    cm.spawn_dns_refresh();
    cm.spawn_dns_refresh(); // idempotent
    tokio::time::timeout(Duration::from_secs(10), async {
        while store.value_of("cluster.d.update_attempt") < Some(4) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(store.value_of("cluster.d.update_no_rebuild"), Some(2));
    assert_eq!(store.value_of("cluster.d.membership_change"), Some(2));
    assert!(Arc::ptr_eq(&d.host_set(), &set));
}

#[tokio::test]
async fn failed_resolution_leaves_cluster_empty() {
    let store = Store::new();
    let c = cluster(
        "f",
        DiscoveryType::StrictDns,
        &[("does-not-exist.invalid", 1)],
    );
    let cm = ClusterManager::new(&[c], &store).await.unwrap();
    let f = cm.get("f").unwrap();
    assert!(f.host_set().hosts().is_empty());
    assert_eq!(f.host_set().choose(0), None);
    assert_eq!(store.value_of("cluster.f.update_failure"), Some(1));
    assert_eq!(store.value_of("cluster.f.membership_change"), Some(0));
}

#[tokio::test]
async fn logical_dns_takes_first_address() {
    let store = Store::new();
    let c = cluster("l", DiscoveryType::LogicalDns, &[("localhost", 7002)]);
    let cm = ClusterManager::new(&[c], &store).await.unwrap();
    let hosts = cm.get("l").unwrap().host_set();
    assert_eq!(hosts.hosts().len(), 1);
    assert_eq!(hosts.hosts()[0].address_string(), "127.0.0.1:7002");
    assert_eq!(store.value_of("cluster.l.max_host_weight"), Some(0));
}

#[test]
fn set_hosts_counts_membership_changes() {
    let store = Store::new();
    let c = Cluster::new(cluster("x", DiscoveryType::Static, &[]), &store);
    let h = Arc::new(Host::new("10.0.0.1:1".parse().unwrap(), "", 1));
    c.set_hosts(vec![h.clone()]);
    c.set_hosts(vec![h]);
    assert_eq!(c.stats.membership_change.value(), 1);
    assert_eq!(c.host_set_guard().hosts().len(), 1);
}

fn eds_cluster(name: &str, service: &str) -> model::Cluster {
    let mut c = cluster(name, DiscoveryType::Eds, &[]);
    c.eds = Some(model::EdsConfig {
        service_name: service.to_owned(),
        eds_config: model::ConfigSource {
            kind: model::ConfigSourceKind::Ads,
            initial_fetch_timeout: Duration::ZERO,
        },
    });
    c
}

fn cla(
    service: &str,
    endpoints: &[(&str, u16, model::HealthStatus)],
) -> model::ClusterLoadAssignment {
    model::ClusterLoadAssignment {
        cluster_name: service.to_owned(),
        endpoints: endpoints
            .iter()
            .map(|(a, p, h)| Endpoint {
                address: SocketAddress {
                    address: (*a).to_owned(),
                    port: *p,
                },
                pipe: None,
                weight: 1,
                hostname: String::new(),
                health_status: *h,
                locality: Default::default(),
                priority: 0,
                transport_socket_labels: Default::default(),
                locality_transport_socket_labels: Default::default(),
            })
            .collect(),
    }
}

fn ports(c: &Cluster) -> Vec<u16> {
    c.host_set()
        .hosts()
        .iter()
        .map(|h| h.address.port())
        .collect()
}

#[tokio::test]
async fn eds_cluster_warms_until_its_assignment() {
    use model::HealthStatus::Healthy;
    let store = Store::new();
    let cm = Arc::new(ClusterManager::new(&[], &store).await.unwrap());
    assert_eq!(
        cm.add_or_update(eds_cluster("a", "svc-a")).unwrap(),
        ClusterChange::Added
    );
    assert!(cm.get("a").is_none(), "warming clusters are not visible");
    assert_eq!(store.value_of("cluster_manager.warming_clusters"), Some(1));
    assert_eq!(cm.eds_service_names(), vec!["svc-a".to_owned()]);
    let took = cm.apply_load_assignment(cla("svc-a", &[("127.0.0.1", 7001, Healthy)]));
    assert_eq!(took, vec!["a".to_owned()]);
    let a = cm.get("a").unwrap();
    assert_eq!(ports(&a), vec![7001]);
    assert_eq!(store.value_of("cluster_manager.warming_clusters"), Some(0));
    assert_eq!(store.value_of("cluster_manager.active_clusters"), Some(1));

    // The same config again is no change; a modified one warms from the cached assignment.
    assert_eq!(
        cm.add_or_update(eds_cluster("a", "svc-a")).unwrap(),
        ClusterChange::Unchanged
    );
    let mut modified = eds_cluster("a", "svc-a");
    modified.connect_timeout = Duration::from_secs(3);
    assert_eq!(cm.add_or_update(modified).unwrap(), ClusterChange::Modified);
    let a2 = cm.get("a").unwrap();
    assert!(!Arc::ptr_eq(&a, &a2));
    assert_eq!(ports(&a2), vec![7001]);

    // Endpoint changes reach the active cluster in place.
    cm.apply_load_assignment(cla("svc-a", &[("127.0.0.1", 7002, Healthy)]));
    assert_eq!(ports(&cm.get("a").unwrap()), vec![7002]);

    cm.add_or_update(eds_cluster("a.b", "svc-ab")).unwrap();
    assert!(store.value_of("cluster.a.update_attempt").is_some());
    assert!(cm.remove("a").unwrap());
    assert!(cm.get("a").is_none());
    // Its stats go with it (Envoy destroys the scope); `a.b`'s stay.
    assert!(store.value_of("cluster.a.update_attempt").is_none());
    // A connection closing afterwards does not bring one back.
    a2.stats.upstream_cx_destroy.inc();
    assert!(store.value_of("cluster.a.upstream_cx_destroy").is_none());
    assert!(store.value_of("cluster.a.b.warming_state").is_some());
    assert_eq!(store.value_of("cluster_manager.cluster_removed"), Some(1));
    assert!(!cm.remove("a").unwrap());
}

#[tokio::test]
async fn unhealthy_endpoints_are_not_routed_unless_most_are() {
    use model::HealthStatus::{Healthy, Unhealthy};
    let store = Store::new();
    let cm = Arc::new(ClusterManager::new(&[], &store).await.unwrap());
    cm.add_or_update(eds_cluster("a", "a")).unwrap();
    cm.apply_load_assignment(cla(
        "a",
        &[
            ("127.0.0.1", 1, Healthy),
            ("127.0.0.1", 2, Unhealthy),
            ("127.0.0.1", 3, Healthy),
        ],
    ));
    let a = cm.get("a").unwrap();
    assert_eq!(ports(&a), vec![1, 3]);
    assert_eq!(a.all_hosts().len(), 3);
    // Below 50% healthy: Envoy's panic mode routes to every host.
    cm.apply_load_assignment(cla(
        "a",
        &[
            ("127.0.0.1", 1, Unhealthy),
            ("127.0.0.1", 2, Unhealthy),
            ("127.0.0.1", 3, Healthy),
        ],
    ));
    assert_eq!(ports(&cm.get("a").unwrap()), vec![1, 2, 3]);
}

#[tokio::test]
async fn cds_cannot_touch_static_clusters() {
    let store = Store::new();
    let statics = [cluster("s", DiscoveryType::Static, &[("127.0.0.1", 1)])];
    let cm = Arc::new(ClusterManager::new(&statics, &store).await.unwrap());
    assert!(matches!(
        cm.add_or_update(cluster("s", DiscoveryType::Static, &[("127.0.0.1", 2)])),
        Err(UpstreamError::StaticCluster(_))
    ));
    assert!(cm.remove("s").is_err());
    cm.add_or_update(cluster("d", DiscoveryType::Static, &[("127.0.0.1", 3)]))
        .unwrap();
    let names: Vec<String> = cm.clusters().iter().map(|c| c.name.clone()).collect();
    assert_eq!(names, vec!["s".to_owned(), "d".to_owned()]);
    assert!(cm.is_static("s") && !cm.is_static("d"));
}

#[tokio::test]
async fn dns_cluster_added_by_cds_warms_until_resolved() {
    let store = Store::new();
    let cm = Arc::new(ClusterManager::new(&[], &store).await.unwrap());
    cm.add_or_update(cluster(
        "dns",
        DiscoveryType::StrictDns,
        &[("127.0.0.1", 6379)],
    ))
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while cm.get("dns").is_none() {
        assert!(std::time::Instant::now() < deadline, "never warmed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(ports(&cm.get("dns").unwrap()), vec![6379]);
}

fn health_check() -> model::HealthCheck {
    model::HealthCheck {
        timeout: Duration::from_secs(1),
        interval: Duration::from_secs(1),
        initial_jitter: Duration::ZERO,
        interval_jitter: Duration::ZERO,
        interval_jitter_percent: 0,
        unhealthy_threshold: 2,
        healthy_threshold: 2,
        reuse_connection: true,
        no_traffic_interval: Duration::from_secs(1),
        no_traffic_healthy_interval: Duration::from_secs(1),
        unhealthy_interval: Duration::from_secs(1),
        unhealthy_edge_interval: Duration::from_secs(1),
        healthy_edge_interval: Duration::from_secs(1),
        event_log_path: None,
        always_log_health_check_failures: false,
        always_log_health_check_success: false,
        checker: model::HealthChecker::Redis { key: None },
    }
}

#[tokio::test]
async fn health_checked_cds_cluster_warms_until_its_first_checks() {
    let store = Store::new();
    let cm = Arc::new(ClusterManager::new(&[], &store).await.unwrap());
    let mut changes = cm.warming_changes();
    // Nothing listens on a fresh loopback port taken and released: each check is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut c = cluster("hc", DiscoveryType::Static, &[("127.0.0.1", port)]);
    c.health_check = Some(Box::new(health_check()));
    cm.add_or_update(c).unwrap();
    assert!(cm.get("hc").is_none(), "active before its first check");
    assert_eq!(cm.warming_clusters().len(), 1);
    assert_eq!(store.value_of("cluster_manager.warming_clusters"), Some(1));
    let active = tokio::time::timeout(Duration::from_secs(5), async {
        while cm.get("hc").is_none() {
            changes.changed().await.unwrap();
        }
    })
    .await;
    assert!(active.is_ok(), "never activated");
    assert!(cm.warming_clusters().is_empty());
    let hc = cm.get("hc").unwrap();
    assert!(hc.all_hosts()[0]
        .health
        .has(crate::host::HealthFlag::FailedActiveHc));
    assert_eq!(
        store.value_of("cluster.hc.health_check.network_failure"),
        Some(1)
    );
}

/// An ejected host that an EDS update rebuilds (another weight) stays ejected, and still
/// comes back when its time is up; an ejected host EDS removes is no longer an active
/// ejection.
#[tokio::test]
async fn ejection_follows_a_rebuilt_host_and_ends_with_a_removed_one() {
    use model::HealthStatus::Healthy;
    let store = Store::new();
    let cm = Arc::new(ClusterManager::new(&[], &store).await.unwrap());
    let mut c = eds_cluster("a", "svc-a");
    c.outlier_detection = Some(Box::new(model::OutlierDetection {
        consecutive_5xx: 1,
        consecutive_gateway_failure: 5,
        consecutive_local_origin_failure: 5,
        enforcing_consecutive_5xx: 100,
        enforcing_consecutive_gateway_failure: 0,
        enforcing_consecutive_local_origin_failure: 100,
        interval: Duration::from_secs(3600),
        base_ejection_time: Duration::from_millis(1),
        max_ejection_time: Duration::from_millis(1),
        max_ejection_time_jitter: Duration::ZERO,
        max_ejection_percent: 100,
        split_external_local_origin_errors: false,
        always_eject_one_host: false,
        successful_active_health_check_uneject_host: true,
    }));
    cm.add_or_update(c).unwrap();
    let three = [
        ("127.0.0.1", 7001, Healthy),
        ("127.0.0.1", 7002, Healthy),
        ("127.0.0.1", 7003, Healthy),
    ];
    cm.apply_load_assignment(cla("svc-a", &three));
    let cluster = cm.get("a").unwrap();
    let active = || store.value_of("cluster.a.outlier_detection.ejections_active");
    let host = cluster.all_hosts()[0].clone();
    cluster.put_outlier_result(&host, crate::OutlierResult::LocalOriginConnectFailed);
    assert!(host.health.has(HealthFlag::FailedOutlierCheck));
    assert_eq!(active(), Some(1));

    let mut reweighted = cla("svc-a", &three);
    reweighted.endpoints[0].weight = 2;
    cm.apply_load_assignment(reweighted);
    let rebuilt = cluster.all_hosts()[0].clone();
    assert!(!Arc::ptr_eq(&host, &rebuilt));
    assert!(rebuilt.health.has(HealthFlag::FailedOutlierCheck));
    std::thread::sleep(Duration::from_millis(5));
    let detector = cluster.outlier_detector().unwrap();
    detector.on_interval(&cluster);
    assert!(
        !rebuilt.health.has(HealthFlag::FailedOutlierCheck),
        "never came back"
    );
    assert_eq!(active(), Some(0));

    // Ejected, then removed by EDS (no health checker: removed at once).
    cluster.put_outlier_result(&rebuilt, crate::OutlierResult::LocalOriginConnectFailed);
    assert_eq!(active(), Some(1));
    cm.apply_load_assignment(cla("svc-a", &three[1..]));
    detector.on_interval(&cluster);
    assert_eq!(active(), Some(0));
}
