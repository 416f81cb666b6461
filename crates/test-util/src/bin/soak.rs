//! `soak`: redvoy under mixed load for a long time while its control plane and its upstreams
//! change (run by `make soak`, through scripts/soak.sh; not part of `make test`).
//!
//! - Three redis-servers behind one redis_proxy listener that redvoy takes over ADS (SotW)
//!   from the in-process [`AdsServer`]; keys are spread over them by a RING_HASH cluster.
//! - Load: `redis-benchmark` in a loop (SET, GET, INCR, LPUSH, LPOP, MSET; 16 connections,
//!   pipelined), redis-py (`tests/clients/soak_client.py`) and ioredis 6
//!   (`tests/clients/soak_client.js`), both with their defaults, checking every reply.
//! - Every second the control plane pushes a change, alternately LDS (the listener's op
//!   timeout, and which of two identical clusters its route names) and CDS (one cluster's
//!   connect timeout), and waits for the ACK.
//! - Every few minutes one redis-server is killed (SIGKILL) and started again on its port a few
//!   seconds later.
//! - Every few seconds redvoy's RSS, heap (jemalloc) and open descriptors are sampled.
//!
//! The report: errors by kind, inside a kill window (the outage plus a grace period, where
//! `upstream failure` and lost writes are expected) and outside it (none expected); memory and
//! descriptors over time; pushes and NACKs. The exit status is 1 when something outside the
//! kill windows failed, a push was NACKed, or memory or descriptors grew.
//!
//! Knobs (environment): `SOAK_SECONDS` (default 1800), `SOAK_KILL_EVERY_S` (180),
//! `SOAK_DOWN_S` (5), `SOAK_GRACE_S` (10), `SOAK_SAMPLE_S` (10), `SOAK_PUSH_MS` (1000),
//! `SOAK_REPORT` (a file the report is also written to), `REDVOY_BIN`, `REDVOY_PYTHON`
//! (default `python3`), `SOAK_NODE_DIR` (tests/clients, where ioredis is installed).

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::google::protobuf::Duration as PbDuration;
use redvoy_test_util::proxy::set_redvoy_bin;
use redvoy_test_util::xds::{
    redis_listener_with, redis_proxy, static_cluster, xds_bootstrap, XdsBootstrap,
};
use redvoy_test_util::{
    free_port, rss_kib, AdsServer, Proxy, ProxyOptions, ReadyCheck, RedisServer, RespClient,
    Target, Variant,
};

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn epoch_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn listener(port: u16, version: u64) -> Listener {
    let cluster = if (version / 2).is_multiple_of(2) {
        "shards_a"
    } else {
        "shards_b"
    };
    let mut proxy = redis_proxy("soak", &[("soak:", cluster)], Some("shards_a"));
    if let Some(settings) = proxy.settings.as_mut() {
        settings.op_timeout = Some(PbDuration {
            seconds: 4 + (version / 2 % 2) as i64,
            nanos: 0,
        });
    }
    redis_listener_with("soak_listener", "127.0.0.1", port, proxy)
}

/// Two clusters over the same servers (so a key lands on the same server through either);
/// the second's connect timeout moves with every CDS push.
fn clusters(ports: &[u16], version: u64) -> Vec<Cluster> {
    let a = static_cluster("shards_a", ports);
    let mut b = static_cluster("shards_b", ports);
    b.connect_timeout = Some(PbDuration {
        seconds: 1 + (version / 2 % 3) as i64,
        nanos: 0,
    });
    vec![a, b]
}

#[derive(Default)]
struct Sample {
    at_s: u64,
    rss_kib: u64,
    heap_kib: u64,
    fds: usize,
    clients: u64,
}

/// One stat's value from `/stats`; 0 when the admin port does not answer (the samples then
/// show it, and the end of the run reports it).
fn try_stat(proxy: &Proxy, name: &str) -> u64 {
    proxy
        .try_admin("GET", &format!("/stats?filter=^{name}$"))
        .ok()
        .and_then(|r| {
            r.body.lines().find_map(|l| {
                l.strip_prefix(name)?
                    .strip_prefix(": ")?
                    .trim()
                    .parse()
                    .ok()
            })
        })
        .unwrap_or(0)
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// jemalloc's allocated bytes from redvoy's `/memory` admin endpoint, in KiB.
fn heap_kib(proxy: &Proxy) -> u64 {
    let body = proxy
        .try_admin("GET", "/memory")
        .map(|r| r.body)
        .unwrap_or_default();
    body.split("\"allocated\"")
        .nth(1)
        .and_then(|rest| {
            let digits: String = rest
                .chars()
                .skip_while(|c| !c.is_ascii_digit())
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse::<u64>().ok()
        })
        .map_or(0, |b| b / 1024)
}

/// One client library's run: its JSON line parsed into (ops, errors with their times).
struct ClientRun {
    name: String,
    ops: u64,
    errors: Vec<(f64, String)>,
    failed: Option<String>,
}

/// An error's kind without the keys and numbers that make each occurrence unique.
fn normalize(kind: &str) -> String {
    let kind = kind
        .split_once("caused error: ")
        .map_or(kind, |(_, cause)| cause);
    let mut out = String::new();
    let mut in_number = false;
    for c in kind.chars() {
        if c.is_ascii_digit() {
            if !in_number {
                out.push('N');
            }
            in_number = true;
        } else {
            in_number = false;
            out.push(c);
        }
    }
    out
}

fn parse_client(name: &str, out: std::io::Result<std::process::Output>) -> ClientRun {
    let mut run = ClientRun {
        name: name.to_owned(),
        ops: 0,
        errors: Vec::new(),
        failed: None,
    };
    let out = match out {
        Ok(out) => out,
        Err(e) => {
            run.failed = Some(format!("could not run: {e}"));
            return run;
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(line) = text.lines().rev().find(|l| l.starts_with('{')) else {
        run.failed = Some(format!(
            "no result (exit {:?}): {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
                .chars()
                .take(400)
                .collect::<String>()
        ));
        return run;
    };
    let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else {
        run.failed = Some(format!("unreadable result: {line}"));
        return run;
    };
    run.ops = value["ops"].as_u64().unwrap_or(0);
    for item in value["errors"].as_array().into_iter().flatten() {
        if let (Some(t), Some(kind)) = (item[0].as_f64(), item[1].as_str()) {
            run.errors.push((t, normalize(kind)));
        }
    }
    run
}

fn main() {
    let total = Duration::from_secs(knob("SOAK_SECONDS", 1800));
    let kill_every = Duration::from_secs(knob("SOAK_KILL_EVERY_S", 180).max(1));
    let down = Duration::from_secs(knob("SOAK_DOWN_S", 5));
    let grace = knob("SOAK_GRACE_S", 10) as f64;
    let sample_every = Duration::from_secs(knob("SOAK_SAMPLE_S", 10).max(1));
    let push_every = Duration::from_millis(knob("SOAK_PUSH_MS", 1000).max(10));
    if let Some(bin) = std::env::var_os("REDVOY_BIN") {
        set_redvoy_bin(PathBuf::from(bin));
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = std::env::var("REDVOY_PYTHON").unwrap_or_else(|_| "python3".into());
    let node_dir =
        std::env::var_os("SOAK_NODE_DIR").map_or_else(|| root.join("tests/clients"), PathBuf::from);

    let mut servers: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let ports: Vec<u16> = servers.iter().map(RedisServer::port).collect();
    let ads = AdsServer::start_tcp().unwrap_or_else(|e| panic!("ADS server: {e}"));
    let port = free_port();
    ads.set_messages("c0", &clusters(&ports, 0));
    ads.set_messages("l0", &[listener(port, 0)]);
    let options = ProxyOptions {
        ready_check: ReadyCheck::Admin,
        // A soak, not a test: a killed upstream makes redvoy warn, as it should.
        check_log: false,
        ..ProxyOptions::default()
    };
    let proxy = Proxy::start_with(
        Target::Redvoy,
        &xds_bootstrap(&ads, &XdsBootstrap::new(Variant::Sotw)),
        &options,
    );
    let pid = proxy.pid().unwrap_or(0);
    let started = Instant::now();
    while RespClient::try_connect(port).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the listener never came up"
        );
        thread::sleep(Duration::from_millis(50));
    }
    let deadline = Instant::now() + total;
    let stop = Arc::new(AtomicBool::new(false));
    eprintln!(
        "soak: redvoy pid {pid}, listener 127.0.0.1:{port}, servers {ports:?}, {} s",
        total.as_secs()
    );

    // redis-benchmark, run after run until the deadline.
    let bench = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let (mut runs, mut failed) = (0u64, Vec::<(f64, String)>::new());
            while !stop.load(Ordering::SeqCst) {
                let child = Command::new("redis-benchmark")
                    .args(["-h", "127.0.0.1", "-p", &port.to_string()])
                    .args(["-c", "16", "-n", "100000", "-r", "100000", "-P", "4", "-q"])
                    .args(["-t", "set,get,incr,lpush,lpop,mset"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn();
                let Ok(child) = child else {
                    failed.push((epoch_now(), "redis-benchmark did not start".to_owned()));
                    break;
                };
                let out = wait_bounded(child, Duration::from_secs(300));
                runs += 1;
                match out {
                    Some((true, _)) => {}
                    Some((false, err)) => {
                        failed.push((epoch_now(), normalize(&err)));
                        // It stops at its first error reply: do not spin while a server is down.
                        thread::sleep(Duration::from_millis(500));
                    }
                    None => failed.push((epoch_now(), "a run took over 300 s".to_owned())),
                }
            }
            (runs, failed)
        })
    };
    let seconds = total.as_secs().to_string();
    // The clients stop themselves at the deadline; past this they are stuck.
    let limit = total + Duration::from_secs(120);
    let py = {
        let (python, script, seconds) = (
            python.clone(),
            root.join("tests/clients/soak_client.py"),
            seconds.clone(),
        );
        thread::spawn(move || {
            parse_client(
                "redis-py",
                Command::new(python)
                    .arg(script)
                    .args([&port.to_string(), &seconds, "4"])
                    .run_bounded(limit),
            )
        })
    };
    let js = {
        let (dir, seconds) = (node_dir.clone(), seconds.clone());
        thread::spawn(move || {
            parse_client(
                "ioredis6",
                Command::new("node")
                    .current_dir(&dir)
                    .arg(dir.join("soak_client.js"))
                    .args(["ioredis6", &port.to_string(), &seconds, "8"])
                    .run_bounded(limit),
            )
        })
    };

    // The control plane's pushes, the kills and the samples, on this thread.
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let (mut pushes, mut nacks, mut slowest_ack) = (0u64, Vec::new(), Duration::ZERO);
    let mut kills: Vec<(f64, f64)> = Vec::new();
    let mut control_failures: Vec<String> = Vec::new();
    let mut next_push = Instant::now() + push_every;
    let mut next_kill = Instant::now() + kill_every;
    let mut next_sample = Instant::now();
    let mut version = 0u64;
    let mut victim = 0usize;
    while Instant::now() < deadline {
        let now = Instant::now();
        if now >= next_sample {
            next_sample += sample_every;
            samples
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Sample {
                    at_s: started.elapsed().as_secs(),
                    rss_kib: rss_kib(Some(pid)).unwrap_or(0),
                    heap_kib: heap_kib(&proxy),
                    fds: fd_count(pid),
                    clients: try_stat(&proxy, "redis.soak.downstream_cx_active"),
                });
        }
        if now >= next_kill && now + down + Duration::from_secs(30) < deadline {
            next_kill += kill_every;
            let from = epoch_now();
            servers[victim].signal("-KILL");
            thread::sleep(down);
            let server = &mut servers[victim];
            let restarted =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| server.restart()));
            kills.push((from, epoch_now()));
            if restarted.is_err() {
                control_failures.push(format!("redis-server {victim} did not restart"));
                break;
            }
            eprintln!(
                "soak: killed and restarted redis-server {} ({})",
                victim, ports[victim]
            );
            victim = (victim + 1) % servers.len();
        }
        if now >= next_push {
            next_push += push_every;
            version += 1;
            let pushed = Instant::now();
            let nonces = if version.is_multiple_of(2) {
                ads.set_messages(&format!("l{version}"), &[listener(port, version)])
            } else {
                ads.set_messages(&format!("c{version}"), &clusters(&ports, version))
            };
            pushes += 1;
            if nonces.is_empty() {
                control_failures.push(format!("push {version}: no ADS stream was subscribed"));
            }
            for nonce in &nonces {
                match ads.try_wait_for_reply_to(nonce, Duration::from_secs(30)) {
                    Some(r) if r.is_nack() => nacks.push(r.summary()),
                    Some(_) => {}
                    None => control_failures.push(format!("push {version}: no ACK within 30 s")),
                }
            }
            slowest_ack = slowest_ack.max(pushed.elapsed());
        }
        thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::SeqCst);
    let (bench_runs, bench_failed) = bench.join().unwrap_or_default();
    let clients = [py, js].map(|t| {
        t.join().unwrap_or_else(|_| ClientRun {
            name: "?".into(),
            ops: 0,
            errors: Vec::new(),
            failed: Some("panicked".into()),
        })
    });
    let final_sample = Sample {
        at_s: started.elapsed().as_secs(),
        rss_kib: rss_kib(Some(pid)).unwrap_or(0),
        heap_kib: heap_kib(&proxy),
        fds: fd_count(pid),
        clients: try_stat(&proxy, "redis.soak.downstream_cx_active"),
    };
    let samples = std::mem::take(&mut *samples.lock().unwrap_or_else(|e| e.into_inner()));
    let stats_text = proxy
        .try_admin("GET", "/stats")
        .map(|r| r.body)
        .unwrap_or_default();

    // The report.
    let mut report = String::new();
    let mut failures: Vec<String> = Vec::new();
    if stats_text.is_empty() {
        failures.push("redvoy's /stats did not answer at the end".to_owned());
    }
    let in_window = |t: f64| {
        kills
            .iter()
            .any(|(from, to)| t >= from - 1.0 && t <= to + grace)
    };
    report += &format!(
        "# redvoy soak: {} s, {} config pushes, {} redis-server kills\n\n",
        total.as_secs(),
        pushes,
        kills.len()
    );
    report += "## Load\n\n| client | operations | errors in kill windows | errors outside |\n|---|---|---|---|\n";
    let mut kinds: BTreeMap<(String, bool), u64> = BTreeMap::new();
    for c in &clients {
        let inside = c.errors.iter().filter(|(t, _)| in_window(*t)).count();
        report += &format!(
            "| {} | {} | {} | {} |\n",
            c.name,
            c.ops,
            inside,
            c.errors.len() - inside
        );
        for (t, kind) in &c.errors {
            *kinds
                .entry((format!("{}: {kind}", c.name), in_window(*t)))
                .or_default() += 1;
        }
        if let Some(f) = &c.failed {
            failures.push(format!("{}: {f}", c.name));
        }
        if c.ops == 0 {
            failures.push(format!("{}: no operation completed", c.name));
        }
    }
    report += &format!(
        "| redis-benchmark | {bench_runs} runs (each stops at its first error reply) | {} failed runs | {} failed runs |\n\n",
        bench_failed.iter().filter(|(t, _)| in_window(*t)).count(),
        bench_failed.iter().filter(|(t, _)| !in_window(*t)).count(),
    );
    for (t, kind) in &bench_failed {
        *kinds
            .entry((format!("redis-benchmark: {kind}"), in_window(*t)))
            .or_default() += 1;
    }
    report += "## Errors by kind\n\n| kind | in a kill window | count |\n|---|---|---|\n";
    for ((kind, inside), n) in &kinds {
        report += &format!(
            "| {kind} | {} | {n} |\n",
            if *inside { "yes" } else { "no" }
        );
        if !inside {
            failures.push(format!("{n} × {kind} outside the kill windows"));
        }
    }
    report += &format!(
        "\n## Control plane\n\n{pushes} pushes (LDS and CDS alternately), {} NACKed, slowest ACK {} ms.\n",
        nacks.len(),
        slowest_ack.as_millis()
    );
    for n in &nacks {
        failures.push(format!("NACK: {n}"));
    }
    failures.extend(control_failures.iter().take(20).cloned());
    report += "\n## redvoy over time\n\n| s | RSS MiB | heap MiB | fds | client connections |\n|---|---|---|---|---|\n";
    let every = (samples.len() / 30).max(1);
    for (i, s) in samples.iter().enumerate() {
        if i % every == 0 || i + 1 == samples.len() {
            report += &format!(
                "| {} | {:.1} | {:.1} | {} | {} |\n",
                s.at_s,
                s.rss_kib as f64 / 1024.0,
                s.heap_kib as f64 / 1024.0,
                s.fds,
                s.clients
            );
        }
    }
    report += &format!(
        "| end | {:.1} | {:.1} | {} | {} |\n",
        final_sample.rss_kib as f64 / 1024.0,
        final_sample.heap_kib as f64 / 1024.0,
        final_sample.fds,
        final_sample.clients
    );
    // Growth: the last fifth of the run against the second fifth (past the warm-up).
    if samples.len() >= 10 {
        let fifth = samples.len() / 5;
        let max_of =
            |range: &[Sample], f: fn(&Sample) -> u64| range.iter().map(f).max().unwrap_or(0);
        let early = &samples[fifth..2 * fifth];
        let late = &samples[samples.len() - fifth..];
        for (what, f, slack) in [
            (
                "RSS",
                (|s: &Sample| s.rss_kib) as fn(&Sample) -> u64,
                8 * 1024,
            ),
            ("heap", |s: &Sample| s.heap_kib, 4 * 1024),
            ("descriptors", |s: &Sample| s.fds as u64, 8),
        ] {
            let (a, b) = (max_of(early, f), max_of(late, f));
            let grew = b > a + a / 10 + slack;
            report += &format!(
                "\n{what}: highest {a} in the second fifth of the run, {b} in the last{}",
                if grew { " — GREW" } else { " (no growth)" }
            );
            if grew {
                failures.push(format!("{what} grew from {a} to {b}"));
            }
        }
        report += "\n";
    }
    let counter = |name: &str| {
        stats_text
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(": ").map(str::to_owned))
            .unwrap_or_else(|| "–".to_owned())
    };
    report += &format!(
        "\nredvoy counters: downstream_rq_total {}, upstream_rq_total (shards_a) {}, \
         upstream_cx_connect_fail (shards_a) {}, listener updates {}, cluster updates {}\n",
        counter("redis.soak.downstream_rq_total"),
        counter("cluster.shards_a.upstream_rq_total"),
        counter("cluster.shards_a.upstream_cx_connect_fail"),
        counter("listener_manager.listener_modified"),
        counter("cluster_manager.cluster_modified"),
    );
    report += &format!(
        "\n## Verdict\n\n{}\n",
        if failures.is_empty() {
            "PASS: nothing failed outside the kill windows, no NACK, no growth.".to_owned()
        } else {
            format!(
                "FAIL:\n{}",
                failures
                    .iter()
                    .map(|f| format!("- {f}\n"))
                    .collect::<String>()
            )
        }
    );
    print!("{report}");
    if let Some(path) = std::env::var_os("SOAK_REPORT") {
        if let Ok(mut f) = std::fs::File::create(&path) {
            let _ = f.write_all(report.as_bytes());
        }
    }
    drop(proxy);
    drop(servers);
    std::process::exit(if failures.is_empty() { 0 } else { 1 });
}

/// `Command::output` with a bound: a client stuck on a reply that never comes is killed at
/// `limit` (and reported as giving no result) instead of hanging the soak.
trait RunBounded {
    fn run_bounded(&mut self, limit: Duration) -> std::io::Result<std::process::Output>;
}

impl RunBounded for Command {
    fn run_bounded(&mut self, limit: Duration) -> std::io::Result<std::process::Output> {
        let mut child = self.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
        // Read while it runs: a long error list would fill the pipe and block the child.
        let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
            thread::spawn(move || {
                let mut bytes = Vec::new();
                if let Some(mut pipe) = pipe {
                    let _ = pipe.read_to_end(&mut bytes);
                }
                bytes
            })
        };
        let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
        let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                break child.wait()?;
            }
            thread::sleep(Duration::from_millis(100));
        };
        Ok(std::process::Output {
            status,
            stdout: stdout.join().unwrap_or_default(),
            stderr: stderr.join().unwrap_or_default(),
        })
    }
}

/// Waits for `child` up to `limit` (then kills it): whether it exited 0, and its stderr.
fn wait_bounded(mut child: Child, limit: Duration) -> Option<(bool, String)> {
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let mut err = String::new();
                if let Some(mut stderr) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut stderr, &mut err);
                }
                // A proxy answers no CONFIG GET: redis-benchmark warns and goes on.
                let err: Vec<&str> = err
                    .lines()
                    .filter(|l| {
                        !l.contains("Could not fetch server CONFIG") && !l.trim().is_empty()
                    })
                    .collect();
                return Some((status.success(), err.join(" / ")));
            }
            Ok(None) if started.elapsed() < limit => thread::sleep(Duration::from_millis(100)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}
