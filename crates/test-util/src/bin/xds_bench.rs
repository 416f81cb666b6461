//! `xds_bench`: how Envoy 1.40 and redvoy take a large xDS push (run by `make bench`, through
//! scripts/bench.sh; a benchmark, not a test: it asserts nothing).
//!
//! For each target, in one run and with the same flags (`--concurrency 1`):
//! 1. a proxy boots from an ADS (SotW) bootstrap pointing at the in-process [`AdsServer`] and
//!    becomes LIVE on an empty config (empty CDS and LDS);
//! 2. CDS pushes N EDS clusters (Istio-style `outbound|6379||…` names) and EDS their load
//!    assignments, then LDS pushes N unbound `<VIP>_6379` redis_proxy listeners (one catch-all
//!    cluster each) plus one bound on a loopback port; the time from each push to its ACK and
//!    the proxy's RSS before, after CDS/EDS and after LDS is measured;
//! 3. while a client loops `GET k` on the bound listener, LDS switches that listener's
//!    catch-all between two clusters whose redis-servers hold different values of `k`; the
//!    time from the push to the first reply from the new cluster is measured on the client's
//!    existing connection and on fresh connections (Envoy keeps an existing connection on the
//!    old filter chain until the drain time closes it; redvoy moves it at once).
//!
//! It exits with status 1 when redvoy misses its mesh-scale targets (see `missed_targets`), after
//! printing the table: a benchmark that fails when the targets do not hold.
//!
//! Knobs (environment): `BENCH_XDS_COUNT` (N, default 1000), `BENCH_XDS_TARGETS` (default
//! `envoy redvoy`), `BENCH_XDS_ROUTE_REPEATS` (default 5), `BENCH_XDS_STEP_TIMEOUT_S` (bound
//! on each push-to-ACK step, default 120), `BENCH_XDS_ROUTE_TIMEOUT_S` (bound on one route
//! push becoming visible, default 30), `BENCH_XDS_DRAIN_S` (`--drain-time-s` of both proxies,
//! default 2), `BENCH_XDS_TRANSPORT` (`unix`, the default: the control plane on a Unix socket,
//! as Istio's agent serves it; or `tcp` on loopback). Binaries: `ENVOY_BIN` (default `envoy` on PATH), `REDVOY_BIN` (default the
//! `redvoy` next to this program).

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::core::v3::TrafficDirection;
use envoy_types::pb::google::protobuf::Any;

use redvoy_test_util::ads::{pack, TYPE_CLUSTER, TYPE_ENDPOINT, TYPE_LISTENER};
use redvoy_test_util::proxy::set_redvoy_bin;
use redvoy_test_util::xds::{
    eds_cluster, load_assignment, redis_listener_with, redis_proxy, without_bind, xds_bootstrap,
    XdsBootstrap,
};
use redvoy_test_util::{
    encode_command, free_port, rss_kib, AdsServer, Proxy, ProxyOptions, ReadOutcome, ReadyCheck,
    RecordedRequest, RedisServer, Reply, RespClient, Stats, Target, Variant,
};

const DEFAULT_COUNT: usize = 1000;
const DEFAULT_ROUTE_REPEATS: usize = 5;
/// Bound on one push-to-ACK step (the brief: give up after 120 s and print "timeout").
const DEFAULT_STEP_TIMEOUT_S: u64 = 120;
/// Bound on one route push becoming visible on both the existing and fresh connections.
const DEFAULT_ROUTE_TIMEOUT_S: u64 = 30;
/// `--drain-time-s` of both proxies: how long Envoy keeps an existing connection on a replaced
/// filter chain (Istio passes 45 s; a short one keeps the bench short).
const DEFAULT_DRAIN_S: u64 = 2;
/// Pause before reading RSS, so allocations of the step just finished have settled.
const SETTLE: Duration = Duration::from_secs(1);
/// Bound on one reply through the proxy.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between polls once only the existing connection is left to switch (on Envoy it waits
/// out the drain time; no need to spin a core meanwhile).
const SLOW_POLL: Duration = Duration::from_millis(1);
/// Pause between two route pushes (the previous one's ACK is already in).
const BETWEEN_PUSHES: Duration = Duration::from_millis(200);
/// The key the route-push client reads; its value names the redis-server holding it.
const KEY: &str = "xds_bench:k";
const CLUSTER_A: &str = "bench_a";
const CLUSTER_B: &str = "bench_b";
const BOUND_LISTENER: &str = "bench_bound";
const REDIS_PORT: u16 = 6379;
/// Stats read (once, after the LDS push) to show the config really is in effect.
const CHECK_STATS: [&str; 2] = [
    "listener_manager.total_listeners_active",
    "cluster_manager.active_clusters",
];

struct Knobs {
    count: usize,
    targets: Vec<Target>,
    route_repeats: usize,
    step_timeout: Duration,
    route_timeout: Duration,
    drain_s: u64,
    /// The control plane listens on a Unix socket (Istio's agent serves xDS on one) rather
    /// than on loopback TCP.
    unix: bool,
}

fn env_num(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        _ => default,
    }
}

fn knobs() -> Knobs {
    let targets = std::env::var("BENCH_XDS_TARGETS").unwrap_or_else(|_| "envoy redvoy".into());
    let targets = targets
        .split([' ', ','])
        .filter(|s| !s.is_empty())
        .map(|t| match t {
            "envoy" => Target::Envoy,
            "redvoy" => Target::Redvoy,
            other => panic!("BENCH_XDS_TARGETS: unknown target {other:?} (envoy, redvoy)"),
        })
        .collect();
    Knobs {
        count: usize::try_from(env_num("BENCH_XDS_COUNT", DEFAULT_COUNT as u64))
            .unwrap_or(DEFAULT_COUNT),
        targets,
        route_repeats: usize::try_from(env_num(
            "BENCH_XDS_ROUTE_REPEATS",
            DEFAULT_ROUTE_REPEATS as u64,
        ))
        .unwrap_or(DEFAULT_ROUTE_REPEATS),
        step_timeout: Duration::from_secs(env_num(
            "BENCH_XDS_STEP_TIMEOUT_S",
            DEFAULT_STEP_TIMEOUT_S,
        )),
        route_timeout: Duration::from_secs(env_num(
            "BENCH_XDS_ROUTE_TIMEOUT_S",
            DEFAULT_ROUTE_TIMEOUT_S,
        )),
        drain_s: env_num("BENCH_XDS_DRAIN_S", DEFAULT_DRAIN_S),
        unix: match std::env::var("BENCH_XDS_TRANSPORT").as_deref() {
            Err(_) | Ok("") | Ok("unix") => true,
            Ok("tcp") => false,
            Ok(other) => panic!("BENCH_XDS_TRANSPORT={other:?}: use unix or tcp"),
        },
    }
}

/// The i-th service (from 0): Istio names its cluster `outbound|<port>||<host>` and its
/// listener `<VIP>_<port>`.
fn service_cluster(i: usize) -> String {
    format!("outbound|{REDIS_PORT}||redis-{i}.bench.svc.cluster.local")
}

/// A VIP in 10.96.0.0/12 (Kubernetes' default service range), from 10.96.0.1 on.
fn service_vip(i: usize) -> String {
    let n = i + 1;
    format!("10.{}.{}.{}", 96 + (n >> 16) % 16, (n >> 8) & 255, n & 255)
}

fn clusters(count: usize) -> Vec<Any> {
    let mut out: Vec<Any> = (0..count)
        .map(|i| pack(&eds_cluster(&service_cluster(i))))
        .collect();
    out.push(pack(&eds_cluster(CLUSTER_A)));
    out.push(pack(&eds_cluster(CLUSTER_B)));
    out
}

fn assignments(count: usize, a: &RedisServer, b: &RedisServer) -> Vec<Any> {
    let mut out: Vec<Any> = (0..count)
        .map(|i| pack(&load_assignment(&service_cluster(i), &[a.port()])))
        .collect();
    out.push(pack(&load_assignment(CLUSTER_A, &[a.port()])));
    out.push(pack(&load_assignment(CLUSTER_B, &[b.port()])));
    out
}

fn listeners(count: usize, bound_port: u16, bound_cluster: &str) -> Vec<Any> {
    let mut out: Vec<Any> = (0..count)
        .map(|i| {
            let vip = service_vip(i);
            let cluster = service_cluster(i);
            let mut listener = without_bind(redis_listener_with(
                &format!("{vip}_{REDIS_PORT}"),
                &vip,
                REDIS_PORT,
                redis_proxy(&cluster, &[], Some(&cluster)),
            ));
            listener.traffic_direction = TrafficDirection::Outbound as i32;
            pack(&listener)
        })
        .collect();
    out.push(pack(&redis_listener_with(
        BOUND_LISTENER,
        "127.0.0.1",
        bound_port,
        redis_proxy(BOUND_LISTENER, &[], Some(bound_cluster)),
    )));
    out
}

/// How one push-to-ACK step ended.
#[derive(Clone, Debug)]
enum Step {
    Acked(Duration),
    Nacked(String),
    Timeout,
    /// Not run: an earlier step failed.
    Skipped,
}

impl Step {
    fn ms(&self) -> Option<f64> {
        match self {
            Step::Acked(d) => Some(ms(*d)),
            _ => None,
        }
    }

    /// The cell text plus, for a NACK, its message.
    fn detail(&self) -> String {
        match self {
            Step::Nacked(message) => format!("NACK: {message}"),
            other => other.show(),
        }
    }

    fn show(&self) -> String {
        match self {
            Step::Acked(d) => format!("{:.1}", ms(*d)),
            Step::Nacked(_) => "NACK".into(),
            Step::Timeout => "timeout".into(),
            Step::Skipped => "-".into(),
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One route push: push → ACK, push → first reply from the new cluster on the client's
/// existing connection (reconnecting when the proxy closed it) and on a fresh connection.
#[derive(Clone, Debug, Default)]
struct RoutePush {
    ack: Option<Duration>,
    existing: Option<Duration>,
    fresh: Option<Duration>,
    reconnects: usize,
}

struct Row {
    target: Target,
    cds: Step,
    eds: Step,
    lds: Step,
    total: Step,
    rss_before_kib: Option<u64>,
    rss_after_cds_kib: Option<u64>,
    rss_after_kib: Option<u64>,
    routes: Vec<RoutePush>,
    notes: Vec<String>,
}

impl Row {
    fn new(target: Target) -> Row {
        Row {
            target,
            cds: Step::Skipped,
            eds: Step::Skipped,
            lds: Step::Skipped,
            total: Step::Skipped,
            rss_before_kib: None,
            rss_after_cds_kib: None,
            rss_after_kib: None,
            routes: Vec::new(),
            notes: Vec::new(),
        }
    }
}

fn comm(pid: Option<u32>) -> String {
    pid.and_then(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "?".into())
}

type Pred<'a> = &'a (dyn Fn(&RecordedRequest) -> bool + Sync);

/// Waits (until `deadline`) for a request matching each of `preds`, received at index `from`
/// or later; returns, per predicate, the request and when it was seen (time since `start`).
fn watch(
    server: &AdsServer,
    from: usize,
    start: Instant,
    deadline: Instant,
    preds: &[Pred<'_>],
) -> Vec<Option<(Duration, RecordedRequest)>> {
    let mut found: Vec<Option<(Duration, RecordedRequest)>> = vec![None; preds.len()];
    let mut seen = from;
    let mut requests = server.requests();
    loop {
        let now = start.elapsed();
        for request in requests.iter().skip(seen) {
            for (slot, pred) in found.iter_mut().zip(preds) {
                if slot.is_none() && pred(request) {
                    *slot = Some((now, request.clone()));
                }
            }
        }
        seen = seen.max(requests.len());
        if found.iter().all(Option::is_some) {
            return found;
        }
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            return found;
        };
        match server.try_wait_for_requests(seen + 1, left) {
            Some(all) => requests = all,
            None => return found,
        }
    }
}

fn step_of(found: &Option<(Duration, RecordedRequest)>) -> Step {
    match found {
        Some((_, r)) if r.is_nack() => Step::Nacked(
            r.error_detail
                .as_ref()
                .map(|e| e.message.clone())
                .unwrap_or_default(),
        ),
        Some((d, _)) => Step::Acked(*d),
        None => Step::Timeout,
    }
}

/// The last few requests, for a timeout note.
fn recent(server: &AdsServer) -> String {
    let all = server.summaries();
    let tail: Vec<String> = all
        .iter()
        .skip(all.len().saturating_sub(4))
        .map(|s| {
            if s.len() > 160 {
                format!("{}…", s.chars().take(160).collect::<String>())
            } else {
                s.clone()
            }
        })
        .collect();
    tail.join(" ; ")
}

fn get(client: &mut RespClient) -> Result<Reply, String> {
    client
        .try_send_raw(&encode_command(&["GET", KEY]))
        .map_err(|e| format!("send: {e}"))?;
    match client.read_outcome(REPLY_TIMEOUT) {
        ReadOutcome::Frame { reply, .. } => Ok(reply),
        ReadOutcome::Closed { .. } => Err("closed".into()),
        ReadOutcome::Timeout { .. } => Err("timeout".into()),
    }
}

fn value_of(cluster: &str) -> &'static str {
    if cluster == CLUSTER_A {
        "A"
    } else {
        "B"
    }
}

/// Polls until both the existing connection and a fresh one read `want` (or `timeout`).
fn poll_switch(
    port: u16,
    existing: &mut Option<RespClient>,
    want: &Reply,
    start: Instant,
    timeout: Duration,
) -> RoutePush {
    let mut out = RoutePush::default();
    while start.elapsed() < timeout {
        if out.existing.is_none() {
            let reply = match existing.as_mut() {
                Some(client) => get(client),
                None => Err("not connected".into()),
            };
            match reply {
                Ok(r) if &r == want => out.existing = Some(start.elapsed()),
                Ok(_) => {}
                Err(_) => {
                    // Closed by the proxy (Envoy, when a drained listener's time is up): a
                    // real client reconnects, and lands on the new listener.
                    *existing = RespClient::try_connect(port).ok();
                    out.reconnects += 1;
                }
            }
        }
        if out.fresh.is_none() {
            if let Ok(mut client) = RespClient::try_connect(port) {
                if get(&mut client).is_ok_and(|r| &r == want) {
                    out.fresh = Some(start.elapsed());
                }
            }
        }
        if out.existing.is_some() && out.fresh.is_some() {
            break;
        }
        if out.fresh.is_some() {
            thread::sleep(SLOW_POLL);
        }
    }
    out
}

fn proxy_args(knobs: &Knobs) -> Vec<String> {
    [
        "--concurrency",
        "1",
        "-l",
        "warning",
        "--disable-hot-restart",
        "--use-dynamic-base-id",
        "--drain-time-s",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([knobs.drain_s.to_string()])
    .collect()
}

fn run_target(target: Target, knobs: &Knobs, a: &RedisServer, b: &RedisServer) -> Row {
    let mut row = Row::new(target);
    let n = knobs.count;
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            row.notes.push(format!("temp dir: {e}"));
            return row;
        }
    };
    let started = if knobs.unix {
        AdsServer::start_unix(dir.path().join("xds.sock"))
    } else {
        AdsServer::start_tcp()
    };
    let server = match started {
        Ok(s) => s,
        Err(e) => {
            row.notes.push(format!("ADS server: {e}"));
            return row;
        }
    };
    // Step 1: LIVE on an empty config.
    server.set_resources(TYPE_CLUSTER, "c0", Vec::new());
    server.set_resources(TYPE_LISTENER, "l0", Vec::new());
    let options = ProxyOptions {
        concurrency: 1,
        args: proxy_args(knobs),
        ready_check: ReadyCheck::Admin,
        no_default_args: true,
        wrapper: Vec::new(),
        // A benchmark, not a test: its knobs may make a proxy warn.
        log: Vec::new(),
        check_log: false,
    };
    let bootstrap = xds_bootstrap(&server, &XdsBootstrap::new(Variant::Sotw));
    let proxy = match Proxy::try_start(target, &bootstrap, &options) {
        Ok(p) => p,
        Err(e) => {
            row.notes.push(format!("did not start: {e}"));
            return row;
        }
    };
    let pid = proxy.pid();
    eprintln!(
        "  {target}: LIVE on an empty config (pid {}, process {:?}, binary {})",
        pid.unwrap_or(0),
        comm(pid),
        target.binary().display()
    );
    thread::sleep(SETTLE);
    row.rss_before_kib = rss_kib(pid);
    heap_line(&proxy, "before");

    // Step 2: CDS (+ EDS) then LDS.
    let bound_port = free_port();
    let cds = clusters(n);
    let lds = listeners(n, bound_port, CLUSTER_A);
    // EDS is answered as soon as the proxy asks for the new clusters' assignments.
    server.set_resources(TYPE_ENDPOINT, "e1", assignments(n, a, b));
    let mark = server.request_count();
    let t_cds = Instant::now();
    let nonce = server
        .set_resources(TYPE_CLUSTER, "c1", cds)
        .into_iter()
        .next()
        .unwrap_or_default();
    let cds_ack = |r: &RecordedRequest| r.type_url == TYPE_CLUSTER && r.response_nonce == nonce;
    let eds_ack = |r: &RecordedRequest| {
        r.type_url == TYPE_ENDPOINT
            && r.version_info == "e1"
            && !r.response_nonce.is_empty()
            && !r.is_nack()
            && r.resource_names.len() == n + 2
    };
    let found = watch(
        &server,
        mark,
        t_cds,
        t_cds + knobs.step_timeout,
        &[&cds_ack, &eds_ack],
    );
    row.cds = step_of(&found[0]);
    row.eds = step_of(&found[1]);
    eprintln!(
        "  {target}: CDS→ACK {} ms, CDS→EDS ACK {} ms",
        row.cds.show(),
        row.eds.show()
    );
    if !matches!((&row.cds, &row.eds), (Step::Acked(_), Step::Acked(_))) {
        row.notes.push(format!(
            "CDS: {}, EDS: {}; last requests: {}",
            row.cds.detail(),
            row.eds.detail(),
            recent(&server)
        ));
        return row;
    }

    thread::sleep(SETTLE);
    row.rss_after_cds_kib = rss_kib(pid);
    heap_line(&proxy, "after CDS/EDS");
    let mark = server.request_count();
    let t_lds = Instant::now();
    let nonce = server
        .set_resources(TYPE_LISTENER, "l1", lds)
        .into_iter()
        .next()
        .unwrap_or_default();
    let lds_ack = |r: &RecordedRequest| r.type_url == TYPE_LISTENER && r.response_nonce == nonce;
    let found = watch(
        &server,
        mark,
        t_lds,
        t_lds + knobs.step_timeout,
        &[&lds_ack],
    );
    row.lds = step_of(&found[0]);
    // The settle pause between the pushes is left out: total = CDS→EDS ACK + LDS→ACK.
    if let (Step::Acked(eds), Step::Acked(lds)) = (&row.eds, &row.lds) {
        row.total = Step::Acked(*eds + *lds);
    }
    eprintln!(
        "  {target}: LDS→ACK {} ms, total (CDS→EDS ACK + LDS→ACK) {} ms",
        row.lds.show(),
        row.total.show()
    );
    if !matches!(row.lds, Step::Acked(_)) {
        row.notes.push(format!(
            "LDS: {}; last requests: {}",
            row.lds.detail(),
            recent(&server)
        ));
        return row;
    }
    thread::sleep(SETTLE);
    row.rss_after_kib = rss_kib(pid);
    heap_line(&proxy, "after LDS");
    let mut shown = Vec::new();
    for name in CHECK_STATS {
        let value = proxy
            .try_admin("GET", &format!("/stats?filter={name}"))
            .ok()
            .and_then(|resp| Stats::parse(&resp.body).get_int(name));
        shown.push(format!(
            "{name}={}",
            value.map_or_else(|| "?".to_string(), |v| v.to_string())
        ));
    }
    eprintln!("  {target}: {}", shown.join(", "));

    // Step 3: route pushes.
    let mut existing = RespClient::try_connect(bound_port).ok();
    let first = existing.as_mut().map(get);
    if first != Some(Ok(Reply::bulk(value_of(CLUSTER_A)))) {
        row.notes.push(format!(
            "the bound listener does not serve {KEY} from {CLUSTER_A}: {first:?}"
        ));
        return row;
    }
    let mut current = CLUSTER_A;
    for rep in 0..knobs.route_repeats {
        let next = if current == CLUSTER_A {
            CLUSTER_B
        } else {
            CLUSTER_A
        };
        let want = Reply::bulk(value_of(next));
        let anys = listeners(n, bound_port, next);
        let version = format!("l{}", rep + 2);
        let mark = server.request_count();
        let push = thread::scope(|s| {
            let t0 = Instant::now();
            let nonce = server
                .set_resources(TYPE_LISTENER, &version, anys)
                .into_iter()
                .next()
                .unwrap_or_default();
            let server = &server;
            let step_timeout = knobs.step_timeout;
            let acker = s.spawn(move || {
                let ack =
                    |r: &RecordedRequest| r.type_url == TYPE_LISTENER && r.response_nonce == nonce;
                watch(server, mark, t0, t0 + step_timeout, &[&ack])
            });
            let mut push = poll_switch(bound_port, &mut existing, &want, t0, knobs.route_timeout);
            let found = acker.join().unwrap_or_default();
            push.ack = found
                .first()
                .and_then(|f| f.as_ref())
                .filter(|(_, r)| !r.is_nack())
                .map(|(d, _)| *d);
            push
        });
        let show = |d: Option<Duration>| d.map_or("timeout".into(), |d| format!("{:.1}", ms(d)));
        eprintln!(
            "  {target}: route push {}: {current}→{next}: ACK {} ms, first use: existing connection {} ms ({} reconnects), fresh connection {} ms",
            rep + 1,
            show(push.ack),
            show(push.existing),
            push.reconnects,
            show(push.fresh)
        );
        row.routes.push(push);
        current = next;
        thread::sleep(BETWEEN_PUSHES);
    }
    drop(proxy);
    row
}

fn median(values: &[Option<Duration>]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().flatten().map(|d| ms(*d)).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// A median cell: the value, with the count of timeouts when some repeats never switched.
fn median_cell(values: &[Option<Duration>]) -> (String, Option<f64>) {
    let timeouts = values.iter().filter(|v| v.is_none()).count();
    match median(values) {
        None if values.is_empty() => ("-".into(), None),
        None => ("timeout".into(), None),
        Some(m) if timeouts > 0 => (format!("{m:.1} ({timeouts} t/o)"), Some(m)),
        Some(m) => (format!("{m:.1}"), Some(m)),
    }
}

fn mib(kib: Option<u64>) -> (String, Option<f64>) {
    match kib {
        Some(k) => {
            let m = k as f64 / 1024.0;
            (format!("{m:.1}"), Some(m))
        }
        None => ("-".into(), None),
    }
}

fn print_table(rows: &[Row], knobs: &Knobs) {
    let headers = [
        "target",
        "CDS→ACK ms",
        "CDS→EDS ACK ms",
        "LDS→ACK ms",
        "total ms (EDS ACK + LDS ACK)",
        "RSS before MiB",
        "RSS after CDS MiB",
        "RSS after MiB",
        "route push→ACK ms",
        "route push→first use ms (existing conn)",
        "route push→first use ms (new conn)",
    ];
    let mut cells: Vec<Vec<(String, Option<f64>)>> = Vec::new();
    for row in rows {
        let step = |s: &Step| (s.show(), s.ms());
        let routes = |f: fn(&RoutePush) -> Option<Duration>| {
            median_cell(&row.routes.iter().map(f).collect::<Vec<_>>())
        };
        cells.push(vec![
            (row.target.name().to_string(), None),
            step(&row.cds),
            step(&row.eds),
            step(&row.lds),
            step(&row.total),
            mib(row.rss_before_kib),
            mib(row.rss_after_cds_kib),
            mib(row.rss_after_kib),
            routes(|r| r.ack),
            routes(|r| r.existing),
            routes(|r| r.fresh),
        ]);
    }
    let by_target: BTreeMap<&str, &Vec<(String, Option<f64>)>> = rows
        .iter()
        .zip(&cells)
        .map(|(r, c)| (r.target.name(), c))
        .collect();
    if let (Some(envoy), Some(redvoy)) = (by_target.get("envoy"), by_target.get("redvoy")) {
        let ratio: Vec<(String, Option<f64>)> = std::iter::once(("redvoy/envoy".to_string(), None))
            .chain(
                redvoy
                    .iter()
                    .zip(envoy.iter())
                    .skip(1)
                    .map(|(r, e)| match (r.1, e.1) {
                        (Some(r), Some(e)) if e > 0.0 => (format!("{:.2}", r / e), None),
                        _ => ("-".into(), None),
                    }),
            )
            .collect();
        cells.push(ratio);
    }
    let widths: Vec<usize> = headers
        .iter()
        .enumerate()
        .map(|(i, h)| {
            cells
                .iter()
                .map(|row| row[i].0.chars().count())
                .chain([h.chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |values: Vec<&str>| {
        let parts: Vec<String> = values
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:>w$}"))
            .collect();
        format!("| {} |", parts.join(" | "))
    };
    println!(
        "xDS push (SotW ADS over {}, --concurrency 1): {} EDS clusters + 2, {} listeners (bind_to_port: false) + 1 bound; route push medians of {} pushes (--drain-time-s {})",
        if knobs.unix { "a Unix socket" } else { "TCP" },
        knobs.count, knobs.count, knobs.route_repeats, knobs.drain_s
    );
    println!("{}", line(headers.to_vec()));
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    println!("|-{}-|", rule.join("-|-"));
    for row in &cells {
        println!("{}", line(row.iter().map(|c| c.0.as_str()).collect()));
    }
    for row in rows {
        let reconnects: usize = row.routes.iter().map(|r| r.reconnects).sum();
        if reconnects > 0 {
            println!(
                "{}: the existing client connection was closed by the proxy and reopened {reconnects} times over the route pushes",
                row.target
            );
        }
        for note in &row.notes {
            println!("{}: {note}", row.target);
        }
    }
}

/// redvoy's `/memory` (jemalloc): what is allocated and what is resident, beside the RSS the
/// table shows (the gap is allocator-held pages and non-heap memory).
fn heap_line(proxy: &Proxy, when: &str) {
    if proxy.target() != Target::Redvoy {
        return;
    }
    let Ok(body) = proxy.try_admin("GET", "/memory").map(|r| r.body) else {
        return;
    };
    let Ok(json) = serde_json::from_str::<serde_json::Value>(&body) else {
        return;
    };
    let mib = |key: &str| {
        json[key]
            .as_str()
            .and_then(|v| v.parse::<f64>().ok())
            .map_or("?".to_owned(), |b| format!("{:.1}", b / 1048576.0))
    };
    eprintln!(
        "  redvoy: {when}: heap allocated {} MiB, resident {} MiB, mapped {} MiB",
        mib("allocated"),
        mib("total_physical_bytes"),
        mib("heap_size")
    );
}

fn redvoy_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("REDVOY_BIN") {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    let candidate = exe.parent()?.join("redvoy");
    candidate.is_file().then_some(candidate)
}

fn main() {
    let knobs = knobs();
    if let Some(bin) = redvoy_bin() {
        set_redvoy_bin(bin);
    }
    let a = RedisServer::start();
    let b = RedisServer::start();
    for (server, cluster) in [(&a, CLUSTER_A), (&b, CLUSTER_B)] {
        let reply = server.cmd(&["SET", KEY, value_of(cluster)]);
        assert_eq!(reply, Reply::ok(), "SET {KEY} on {}", server.addr());
    }
    let mut rows = Vec::new();
    for target in &knobs.targets {
        eprintln!("xds bench: {target}");
        rows.push(run_target(*target, &knobs, &a, &b));
    }
    print_table(&rows, &knobs);
    let missed: Vec<String> = rows
        .iter()
        .filter(|r| r.target == Target::Redvoy)
        .flat_map(|r| missed_targets(r, knobs.count))
        .collect();
    if !missed.is_empty() {
        eprintln!("redvoy missed its mesh-scale targets (issue 16):");
        for m in &missed {
            eprintln!("  {m}");
        }
        std::process::exit(1);
    }
}

/// redvoy's mesh-scale targets: with 1,000 of each, CDS and LDS each ACKed in under a second;
/// at most 16 KiB of RSS per EDS cluster (with its assignment) and 64 KiB per redis_proxy
/// listener. Returns what was missed.
fn missed_targets(row: &Row, count: usize) -> Vec<String> {
    const MAX_PUSH: Duration = Duration::from_secs(1);
    const MAX_CLUSTER_KIB: u64 = 16;
    const MAX_LISTENER_KIB: u64 = 64;
    let mut missed = Vec::new();
    if count >= DEFAULT_COUNT {
        for (what, step) in [("CDS→ACK", &row.cds), ("LDS→ACK", &row.lds)] {
            match step {
                Step::Acked(t) if *t < MAX_PUSH => {}
                other => missed.push(format!("{what}: {} (bound {MAX_PUSH:?})", other.detail())),
            }
        }
    }
    let per =
        |from: Option<u64>, to: Option<u64>| Some(to?.saturating_sub(from?) / count.max(1) as u64);
    let per_cluster = per(row.rss_before_kib, row.rss_after_cds_kib);
    let per_listener = per(row.rss_after_cds_kib, row.rss_after_kib);
    for (what, kib, bound) in [
        ("RSS per cluster", per_cluster, MAX_CLUSTER_KIB),
        ("RSS per listener", per_listener, MAX_LISTENER_KIB),
    ] {
        match kib {
            Some(k) if k <= bound => {}
            Some(k) => missed.push(format!("{what}: {k} KiB (bound {bound} KiB)")),
            None => missed.push(format!("{what}: not measured")),
        }
    }
    missed
}
