//! Store-level tests: registration, rendering, options, sharded recording.

use super::*;

fn store() -> Store {
    let s = Store::new();
    s.counter("redis.p.command.get.total").add(3);
    s.gauge("redis.p.downstream_cx_active").set(0);
    s.counter("redis.p.downstream_cx_total");
    s.counter("cluster.c.upstream_cx_total").inc();
    s.histogram("a.first.latency", HistogramUnit::Milliseconds);
    s.histogram("redis.p.command.get.latency", HistogramUnit::Milliseconds)
        .record(92);
    s
}

#[test]
fn text_lists_scalars_by_name_then_histograms_by_name() {
    let s = store();
    assert_eq!(
        s.render_text(None, false),
        "cluster.c.upstream_cx_total: 1\n\
         redis.p.command.get.total: 3\n\
         redis.p.downstream_cx_active: 0\n\
         redis.p.downstream_cx_total: 0\n\
         a.first.latency: No recorded values\n\
         redis.p.command.get.latency: No recorded values\n"
    );
}

#[test]
fn histograms_show_quantiles_after_a_flush() {
    let s = store();
    s.flush();
    let text = s.render_text(Some(&Regex::new("latency").unwrap()), false);
    assert_eq!(
        text,
        "a.first.latency: No recorded values\n\
         redis.p.command.get.latency: P0(92.5,92.5) P25(92.5,92.5) P50(92.5,92.5) \
         P75(92.5,92.5) P90(92.5,92.5) P95(92.5,92.5) P99(92.5,92.5) P99.5(92.5,92.5) \
         P99.9(92.5,92.5) P100(92.5,92.5)\n"
    );
    s.flush();
    assert!(s
        .render_text(Some(&Regex::new("get.latency").unwrap()), true)
        .starts_with("redis.p.command.get.latency: P0(nan,92.5) P25(nan,92.5)"));
}

#[test]
fn filter_is_an_unanchored_regex_and_usedonly_skips_untouched_stats() {
    let s = store();
    let re = Regex::new(r"^redis\.p\.(command|downstream)").unwrap();
    assert_eq!(
        s.render_text(Some(&re), true),
        "redis.p.command.get.total: 3\nredis.p.downstream_cx_active: 0\n"
    );
    assert_eq!(
        s.render_text(Some(&Regex::new("cx_total").unwrap()), false),
        "cluster.c.upstream_cx_total: 1\nredis.p.downstream_cx_total: 0\n"
    );
    assert_eq!(
        s.render_text(Some(&Regex::new("nomatch").unwrap()), false),
        ""
    );
    s.flush();
    assert!(s
        .render_text(None, true)
        .ends_with("redis.p.downstream_cx_active: 0\nredis.p.command.get.latency: P0(92.5,92.5) P25(92.5,92.5) P50(92.5,92.5) P75(92.5,92.5) P90(92.5,92.5) P95(92.5,92.5) P99(92.5,92.5) P99.5(92.5,92.5) P99.9(92.5,92.5) P100(92.5,92.5)\n"));
}

#[test]
fn json_has_envoys_shape() {
    let s = store();
    assert_eq!(
        s.render_json(Some(&Regex::new("nomatch").unwrap()), false),
        r#"{"stats":[]}"#
    );
    assert_eq!(
        s.render_json(Some(&Regex::new("^cluster").unwrap()), false),
        r#"{"stats":[{"name":"cluster.c.upstream_cx_total","value":1}]}"#
    );
    s.flush();
    let nulls = [r#"{"cumulative":null,"interval":null}"#; QUANTILE_COUNT].join(",");
    let halves = [r#"{"cumulative":92.5,"interval":92.5}"#; QUANTILE_COUNT].join(",");
    assert_eq!(
        s.render_json(Some(&Regex::new("get.total|latency").unwrap()), false),
        format!(
            r#"{{"stats":[{{"name":"redis.p.command.get.total","value":3}},{{"histograms":{{"supported_quantiles":[0,25,50,75,90,95,99,99.5,99.9,100],"computed_quantiles":[{{"name":"a.first.latency","values":[{nulls}]}},{{"name":"redis.p.command.get.latency","values":[{halves}]}}]}}}}]}}"#
        )
    );
}

#[test]
fn reset_counters_zeroes_counters_only() {
    let s = store();
    s.gauge("redis.p.downstream_cx_active").set(7);
    s.reset_counters();
    assert_eq!(s.value_of("redis.p.command.get.total"), Some(0));
    assert_eq!(s.value_of("cluster.c.upstream_cx_total"), Some(0));
    assert_eq!(s.value_of("redis.p.downstream_cx_active"), Some(7));
    assert!(s
        .render_text(None, true)
        .contains("redis.p.command.get.total: 0\n"));
}

#[tokio::test]
async fn spawn_flush_latches_periodically() {
    let s = store();
    let task = spawn_flush(s.clone(), Duration::from_millis(20));
    let h = s.histogram("redis.p.command.get.latency", HistogramUnit::Milliseconds);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !h.used() {
        assert!(tokio::time::Instant::now() < deadline, "no flush happened");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    task.abort();
}

#[test]
fn counters_sum_every_threads_shard() {
    let s = Store::new();
    let c = s.counter("redis.p.downstream_rq_total");
    assert!(!c.used());
    let threads: Vec<_> = (0..2 * STAT_SHARDS)
        .map(|_| {
            let c = c.clone();
            std::thread::spawn(move || {
                for _ in 0..1000 {
                    c.inc();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(c.value(), 2000 * STAT_SHARDS as u64);
    assert_eq!(s.value_of("redis.p.downstream_rq_total"), Some(c.value()));
    c.reset();
    assert_eq!(c.value(), 0);
    assert!(c.used(), "reset keeps the used mark");
    let fresh = Counter::default();
    fresh.add(0);
    assert!(fresh.used(), "Envoy marks a counter used on any add");
}

#[test]
fn gauges_stay_exact_under_concurrent_inc_dec_and_set() {
    let g = Store::new().gauge("redis.p.downstream_rq_active");
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let g = g.clone();
            std::thread::spawn(move || {
                for _ in 0..1000 {
                    g.inc();
                    g.dec();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(g.value(), 0);
    g.set(7);
    assert_eq!(g.value(), 7);
    g.sub(10);
    assert_eq!(g.value(), 0, "saturates");
}

#[test]
fn text_readouts_render_first() {
    let s = store();
    s.text_readout("control_plane.identifier").set("istiod-1");
    s.text_readout("unset.readout");
    assert!(s
        .render_text(None, false)
        .starts_with("control_plane.identifier: \"istiod-1\"\nunset.readout: \"\"\ncluster.c"));
    assert!(s
        .render_text(None, true)
        .starts_with("control_plane.identifier: \"istiod-1\"\ncluster.c.upstream_cx_total: 1\n"));
    assert_eq!(
        s.render_json(Some(&Regex::new("^control").unwrap()), false),
        r#"{"stats":[{"name":"control_plane.identifier","value":"istiod-1"}]}"#
    );
    assert_eq!(
        s.text_readouts(),
        vec![
            ("control_plane.identifier".to_owned(), "istiod-1".to_owned()),
            ("unset.readout".to_owned(), String::new())
        ]
    );
}

// Observed on Envoy 1.40 with `/stats?type=...`.
#[test]
fn stats_type_selects_like_envoy() {
    let s = store();
    s.text_readout("control_plane.identifier").set("x");
    let q = |t: &str, filter: &str| {
        let re = Regex::new(filter).unwrap();
        s.render_text_query(&StatsQuery {
            filter: Some(&re),
            used_only: false,
            stats_type: t.parse().unwrap(),
        })
    };
    assert_eq!(
        q("Counters", "^redis.p.(downstream|command)"),
        "redis.p.command.get.total: 3\nredis.p.downstream_cx_total: 0\n"
    );
    assert_eq!(q("Gauges", "^redis.p"), "redis.p.downstream_cx_active: 0\n");
    assert_eq!(
        q("Histograms", "get"),
        "redis.p.command.get.latency: No recorded values\n"
    );
    assert_eq!(q("TextReadouts", ""), "control_plane.identifier: \"x\"\n");
    assert_eq!(
        q("All", "^redis.p.downstream"),
        "redis.p.downstream_cx_active: 0\nredis.p.downstream_cx_total: 0\n"
    );
    assert_eq!("counters".parse::<StatsType>(), Err(InvalidStatsType));
    assert_eq!(InvalidStatsType.to_string(), "invalid &type= param");
    let json = s.render_json_query(&StatsQuery {
        filter: None,
        used_only: false,
        stats_type: StatsType::Histograms,
    });
    assert!(json.starts_with(r#"{"stats":[{"histograms":"#), "{json}");
    assert_eq!(
        s.render_json_query(&StatsQuery {
            filter: Some(&Regex::new("nomatch").unwrap()),
            used_only: false,
            stats_type: StatsType::Histograms,
        }),
        r#"{"stats":[]}"#
    );
}

fn istio_stats_config() -> StatsConfig {
    // The tag list and inclusion list of Istio's default sidecar bootstrap
    // (shared/fixtures/istio/default_golden.json), verbatim.
    let tag = |name: &str, re: &str| TagSpecifier {
        tag_name: name.into(),
        regex: Some(re.into()),
        fixed_value: None,
    };
    let prefix = |p: &str| StringMatcher::new(StringMatchKind::Prefix, p);
    let suffix = |s: &str| StringMatcher::new(StringMatchKind::Suffix, s);
    StatsConfig {
        use_all_default_tags: false,
        stats_tags: vec![
            tag("cluster_name", r"^cluster(\.(.+);)"),
            tag(
                "http_conn_manager_prefix",
                r"^http\.(((?:[_.[:digit:]\w]*|[_\[\]aAbBcCdDeEfF[:digit:]\w\:]*));\.)",
            ),
            tag("thread_name", r"^server(\.(.+))\.watchdog"),
            tag("tcp_prefix", r"^tcp\.((.*?)\.)\w+?$"),
            tag("response_code", r"_rq(_(\d{3}))$"),
            tag("response_code_class", r"_rq(_(\dxx))$"),
            tag(
                "http_conn_manager_listener_prefix",
                r"^listener(?=\.).*?\.http\.(((?:[_.[:digit:]]*|[_\[\]aAbBcCdDeEfF[:digit:]]*))\.)",
            ),
            tag(
                "listener_address",
                r"^listener\.(((?:[_.[:digit:]]*|[_\[\]aAbBcCdDeEfF[:digit:]]*))\.)",
            ),
            tag(
                "mongo_prefix",
                r"^mongo\.(.+?)\.(collection|cmd|cx_|op_|delays_|decoding_)(.*?)$",
            ),
            tag("cache", r"(cache\.(.+?)\.)"),
            tag("component", r"(component\.(.+?)\.)"),
            tag("tag", r"(tag\.(.+?);\.)"),
            tag("wasm_filter", r"(wasm_filter\.(.+?)\.)"),
            tag("authz_enforce_result", r"rbac(\.(allowed|denied))"),
            tag("authz_dry_run_action", r"(\.istio_dry_run_(allow|deny)_)"),
            tag("authz_dry_run_result", r"(\.shadow_(allowed|denied))"),
        ],
        matcher: StatsMatcher::Inclusion(vec![
            prefix("reporter="),
            prefix("cluster_manager"),
            prefix("listener_manager"),
            prefix("server"),
            prefix("cluster.xds-grpc"),
            prefix("wasm"),
            suffix("rbac.allowed"),
            suffix("rbac.denied"),
            suffix("shadow_allowed"),
            suffix("shadow_denied"),
            StringMatcher::new(StringMatchKind::SafeRegex, r"vhost\..*\.route\..*"),
            prefix("component"),
            prefix("istio"),
            // Added for this test, as `sidecar.istio.io/statsInclusionPrefixes` would.
            prefix("redis."),
            prefix("cluster.outbound"),
            prefix("listener."),
        ]),
        histogram_bucket_settings: Vec::new(),
    }
}

// Expected names and labels as Envoy 1.40 rendered them with this stats_config (the Istio
// bootstrap's, with `redis.`, `cluster.outbound` and `listener.` added to the inclusion list).
#[test]
fn istio_stats_config_tags_and_matcher_like_envoy() {
    let s = Store::with_config(&istio_stats_config()).unwrap();
    let c = "cluster.outbound|6379||redis.ns.svc.cluster.local;";
    s.counter(&format!("{c}.upstream_cx_total")).add(2);
    s.counter("cluster.xds-grpc;.upstream_cx_total").inc();
    s.counter("redis.egress.redis_x.command.get.total").inc();
    s.counter("listener.127.0.0.1_33513.downstream_cx_total");
    s.counter("listener.127.0.0.1_33513.worker_0.downstream_cx_total");
    s.counter("listener.admin.http.admin.downstream_rq_2xx");
    s.counter("listener_manager.listener_added").inc();
    s.gauge("server.live").set(1);
    s.counter("server.worker_0.watchdog_miss");
    // Rejected by the inclusion list: never registered, but the handle works.
    let rejected = s.counter("cluster.other.upstream_cx_total");
    rejected.inc();
    assert_eq!(rejected.value(), 1);
    assert_eq!(s.value_of("cluster.other.upstream_cx_total"), None);
    assert!(!s.accepts("http.admin.downstream_rq_2xx"));
    s.histogram("http.admin.downstream_rq_time", HistogramUnit::Milliseconds);
    assert!(s.histograms().is_empty());

    let prom = s.render_prometheus(false, None);
    for line in [
        "# TYPE envoy_cluster_upstream_cx_total counter\n\
         envoy_cluster_upstream_cx_total{cluster_name=\"outbound|6379||redis.ns.svc.cluster.local\"} 2\n\
         envoy_cluster_upstream_cx_total{cluster_name=\"xds-grpc\"} 1\n",
        "envoy_redis_egress_redis_x_command_get_total{} 1\n",
        "envoy_listener_downstream_cx_total{listener_address=\"127.0.0.1_33513\"} 0\n",
        "envoy_listener_worker_0_downstream_cx_total{listener_address=\"127.0.0.1_33513\"} 0\n",
        "envoy_listener_admin_http_admin_downstream_rq{response_code_class=\"2xx\"} 0\n",
        "envoy_listener_manager_listener_added{} 1\n",
        "# TYPE envoy_server_live gauge\nenvoy_server_live{} 1\n",
        "envoy_server_watchdog_miss{thread_name=\"worker_0\"} 0\n",
    ] {
        assert!(prom.contains(line), "missing {line:?} in\n{prom}");
    }
    assert!(!prom.contains("other"), "{prom}");
    assert_eq!(
        s.tags_of(&format!("{c}.upstream_cx_total")),
        Some((
            "cluster.upstream_cx_total".to_owned(),
            vec![Tag {
                name: "cluster_name".into(),
                value: "outbound|6379||redis.ns.svc.cluster.local".into()
            }]
        ))
    );
}

#[test]
fn bad_options_are_refused() {
    let err = Store::with_config(&StatsConfig {
        stats_tags: vec![TagSpecifier {
            tag_name: "x".into(),
            regex: Some("(unclosed".into()),
            fixed_value: None,
        }],
        ..StatsConfig::default()
    })
    .err()
    .unwrap();
    assert!(matches!(err, StatsError::InvalidTagRegex { .. }), "{err}");
    assert!(Store::with_config(&StatsConfig {
        matcher: StatsMatcher::RejectAll,
        ..StatsConfig::default()
    })
    .unwrap()
    .render_text(None, false)
    .is_empty());
}

/// `name_bucket{labels,le=..} n` lines for every default bound, each with the given count.
fn flat_buckets(metric: &str, labels: &str, n: u64) -> String {
    let mut out = String::new();
    for le in [
        "0.5", "1", "5", "10", "25", "50", "100", "250", "500", "1000", "2500", "5000", "10000",
        "30000", "60000", "300000", "600000", "1800000", "3600000", "+Inf",
    ] {
        out.push_str(&format!("{metric}_bucket{{{labels},le=\"{le}\"}} {n}\n"));
    }
    out
}

// Every line below is verbatim from Envoy 1.40's /stats/prometheus for a redis_proxy listener
// (stat_prefix egress_redis, 2 workers) and clusters `redis_cluster` and `down-cluster`, after
// the same values were recorded.
#[test]
fn prometheus_matches_envoy_1_40_for_a_redis_sidecar() {
    let s = Store::new();
    s.counter("cluster.redis_cluster.upstream_cx_total").add(2);
    s.counter("cluster.down-cluster.upstream_cx_total").add(1);
    s.counter("http.admin.downstream_rq_4xx").add(1);
    s.counter("http.admin.downstream_rq_2xx").add(18);
    s.counter("listener.127.0.0.1_43981.worker_0.downstream_cx_total")
        .add(7);
    s.counter("listener.127.0.0.1_43981.worker_1.downstream_cx_total")
        .add(3);
    s.counter("redis.egress_redis.downstream_cx_total").add(10);
    s.counter("server.worker_1.watchdog_miss");
    s.counter("server.worker_0.watchdog_miss");
    s.gauge("server.live").set(1);
    s.gauge("redis.egress_redis.downstream_cx_active");
    let set = s.histogram(
        "cluster.redis_cluster.redis_cluster.upstream_commands.set.latency",
        HistogramUnit::Microseconds,
    );
    for us in [112, 185, 225] {
        set.record(us);
    }
    let get = s.histogram(
        "redis.egress_redis.command.get.latency",
        HistogramUnit::Milliseconds,
    );
    for _ in 0..5 {
        get.record(0);
    }
    s.histogram(
        "redis.egress_redis.command.getset.latency",
        HistogramUnit::Milliseconds,
    );
    s.flush();

    let set_metric = "envoy_cluster_redis_cluster_upstream_commands_set_latency";
    let set_labels = "envoy_cluster_name=\"redis_cluster\"";
    let mut set_lines = String::new();
    for (le, n) in [
        ("0.5", 0),
        ("1", 0),
        ("5", 0),
        ("10", 0),
        ("25", 0),
        ("50", 0),
        ("100", 0),
        ("250", 3),
        ("500", 3),
        ("1000", 3),
        ("2500", 3),
        ("5000", 3),
        ("10000", 3),
        ("30000", 3),
        ("60000", 3),
        ("300000", 3),
        ("600000", 3),
        ("1800000", 3),
        ("3600000", 3),
        ("+Inf", 3),
    ] {
        set_lines.push_str(&format!(
            "{set_metric}_bucket{{{set_labels},le=\"{le}\"}} {n}\n"
        ));
    }
    let get_labels = "envoy_redis_prefix=\"egress_redis\"";
    let want = [
        "# TYPE envoy_cluster_upstream_cx_total counter\n\
         envoy_cluster_upstream_cx_total{envoy_cluster_name=\"down-cluster\"} 1\n\
         envoy_cluster_upstream_cx_total{envoy_cluster_name=\"redis_cluster\"} 2\n\
         # TYPE envoy_http_downstream_rq_xx counter\n\
         envoy_http_downstream_rq_xx{envoy_response_code_class=\"2\",envoy_http_conn_manager_prefix=\"admin\"} 18\n\
         envoy_http_downstream_rq_xx{envoy_response_code_class=\"4\",envoy_http_conn_manager_prefix=\"admin\"} 1\n\
         # TYPE envoy_listener_worker_downstream_cx_total counter\n\
         envoy_listener_worker_downstream_cx_total{envoy_worker_id=\"0\",envoy_listener_address=\"127.0.0.1_43981\"} 7\n\
         envoy_listener_worker_downstream_cx_total{envoy_worker_id=\"1\",envoy_listener_address=\"127.0.0.1_43981\"} 3\n\
         # TYPE envoy_redis_downstream_cx_total counter\n\
         envoy_redis_downstream_cx_total{envoy_redis_prefix=\"egress_redis\"} 10\n\
         # TYPE envoy_server_worker_watchdog_miss counter\n\
         envoy_server_worker_watchdog_miss{envoy_worker_id=\"0\"} 0\n\
         envoy_server_worker_watchdog_miss{envoy_worker_id=\"1\"} 0\n\
         # TYPE envoy_redis_downstream_cx_active gauge\n\
         envoy_redis_downstream_cx_active{envoy_redis_prefix=\"egress_redis\"} 0\n\
         # TYPE envoy_server_live gauge\n\
         envoy_server_live{} 1\n",
        &format!("# TYPE {set_metric} histogram\n"),
        &set_lines,
        &format!(
            "{set_metric}_sum{{{set_labels}}} 524.53636244940594224317464977503\n\
             {set_metric}_count{{{set_labels}}} 3\n"
        ),
        "# TYPE envoy_redis_command_get_latency histogram\n",
        &flat_buckets("envoy_redis_command_get_latency", get_labels, 5),
        &format!(
            "envoy_redis_command_get_latency_sum{{{get_labels}}} 0\n\
             envoy_redis_command_get_latency_count{{{get_labels}}} 5\n"
        ),
        "# TYPE envoy_redis_command_getset_latency histogram\n",
        &flat_buckets("envoy_redis_command_getset_latency", get_labels, 0),
        &format!(
            "envoy_redis_command_getset_latency_sum{{{get_labels}}} 0\n\
             envoy_redis_command_getset_latency_count{{{get_labels}}} 0\n"
        ),
    ]
    .concat();
    assert_eq!(s.render_prometheus(false, None), want);

    // usedonly drops never-written stats and never-flushed histograms; filter is on full names.
    let used = s.render_prometheus(true, None);
    assert!(!used.contains("watchdog_miss"), "{used}");
    assert!(!used.contains("downstream_cx_active"), "{used}");
    assert!(!used.contains("getset"), "{used}");
    assert!(used.contains("envoy_server_live{} 1\n"));
    assert_eq!(
        s.render_prometheus(false, Some(&Regex::new("^cluster\\.down").unwrap())),
        "# TYPE envoy_cluster_upstream_cx_total counter\n\
         envoy_cluster_upstream_cx_total{envoy_cluster_name=\"down-cluster\"} 1\n"
    );
}

#[test]
fn prometheus_text_readouts_are_gauges_with_a_text_value_label() {
    let s = Store::new();
    s.text_readout("control_plane.identifier")
        .set("istiod-7d\"x");
    assert_eq!(s.render_prometheus(false, None), "");
    assert_eq!(
        s.render_prometheus_with(false, None, true),
        "# TYPE envoy_control_plane_identifier gauge\n\
         envoy_control_plane_identifier{text_value=\"istiod-7d\\\"x\"} 0\n"
    );
}

#[test]
fn prometheus_families_sort_by_segments() {
    let s = Store::new();
    // `down` sorts before `down-cluster` token-wise although `-` < `.` byte-wise.
    s.counter("cluster.down-cluster.upstream_cx_total");
    s.counter("cluster.down.upstream_cx_total");
    let prom = s.render_prometheus(false, None);
    let down = prom.find("\"down\"").unwrap();
    let down_cluster = prom.find("\"down-cluster\"").unwrap();
    assert!(down < down_cluster, "{prom}");
}

/// A deferred family renders exactly as the same stats created eagerly and never touched, in
/// every format and selection; a member created later shows once, with its value.
#[test]
fn deferred_stats_render_like_untouched_eager_ones() {
    const COUNTERS: [&str; 2] = ["total", "error"];
    const HISTOGRAMS: [&str; 1] = ["latency"];
    const GAUGES: [&str; 1] = ["lb_subsets_active"];
    let eager = Store::new();
    let deferred = Store::new();
    for s in [&eager, &deferred] {
        s.counter("redis.p.downstream_cx_total").inc();
        s.gauge("cluster.c.upstream_cx_active").set(2);
    }
    for cmd in ["get", "set"] {
        for c in COUNTERS {
            eager.counter(&format!("redis.p.command.{cmd}.{c}"));
        }
        eager.histogram(
            &format!("redis.p.command.{cmd}.latency"),
            HistogramUnit::Milliseconds,
        );
    }
    eager.counter("cluster.c.bind_errors");
    eager.gauge("cluster.c.lb_subsets_active");
    deferred.defer(DeferredFamily {
        prefix: "redis.p.command.".into(),
        members: vec!["get".to_string(), "set".to_string()].into(),
        counters: &COUNTERS,
        gauges: &[],
        histograms: &HISTOGRAMS,
    });
    deferred.defer(DeferredFamily::flat(
        "cluster.c.".into(),
        &["bind_errors"],
        &GAUGES,
    ));
    // One member used on both: created on first use in the deferred store.
    for s in [&eager, &deferred] {
        s.counter("redis.p.command.get.total").add(4);
        s.histogram("redis.p.command.get.latency", HistogramUnit::Milliseconds)
            .record(3);
        s.flush();
    }
    let get = Regex::new("get").unwrap();
    for used_only in [false, true] {
        assert_eq!(
            deferred.render_text(None, used_only),
            eager.render_text(None, used_only)
        );
        assert_eq!(
            deferred.render_json(Some(&get), used_only),
            eager.render_json(Some(&get), used_only)
        );
        assert_eq!(
            deferred.render_prometheus(used_only, None),
            eager.render_prometheus(used_only, None)
        );
    }
    for t in ["Counters", "Gauges", "Histograms"] {
        let q = StatsQuery {
            filter: None,
            used_only: false,
            stats_type: t.parse().unwrap(),
        };
        assert_eq!(deferred.render_text_query(&q), eager.render_text_query(&q));
    }
    assert_eq!(deferred.counters_and_gauges(), eager.counters_and_gauges());
    assert_eq!(deferred.value_of("redis.p.command.set.error"), Some(0));
    assert_eq!(deferred.value_of("cluster.c.lb_subsets_active"), Some(0));
    assert_eq!(deferred.value_of("redis.p.command.del.error"), None);
    assert_eq!(
        deferred.tags_of("cluster.c.bind_errors"),
        eager.tags_of("cluster.c.bind_errors")
    );
    // A removed scope takes its deferred stats with it.
    deferred.remove_prefix("cluster.c.", &[]);
    assert_eq!(deferred.value_of("cluster.c.bind_errors"), None);
    assert!(!deferred.render_text(None, false).contains("cluster.c."));
}

/// The stats matcher applies to deferred names as to created ones.
#[test]
fn deferred_stats_obey_the_stats_matcher() {
    let config = StatsConfig {
        matcher: StatsMatcher::RejectAll,
        ..StatsConfig::default()
    };
    let s = Store::with_config(&config).unwrap();
    s.defer(DeferredFamily::flat(
        "cluster.c.".into(),
        &["bind_errors"],
        &[],
    ));
    assert_eq!(s.render_text(None, false), "");
    assert_eq!(s.render_prometheus(false, None), "");
}
