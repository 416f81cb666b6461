//! Real client libraries through redvoy, with their defaults: redis-py 8 (RESP3 through HELLO 3,
//! pipelines, SCAN, scripts, the WATCH recipe, a db=1 client, asyncio), ioredis 5 and 6,
//! `redis-cli --pipe` / `--scan` and `redis-benchmark`. Each runs against a sharded listener
//! (three redis-servers, RING_HASH, hash tags on) and against a Redis Cluster listener (three
//! primaries with a replica each). The client-side checks live in the scripts under
//! `tests/clients/` (each passes against a plain redis-server too); after a run, every key the
//! client wrote is read directly on the servers: on the primary owning its slot, or on the one
//! server a plain RESP SET through redvoy puts it.
//!
//! redvoy only: Envoy 1.40 refuses HELLO, SCAN, SCRIPT and WATCH, which these clients send.
//! `make test` installs the libraries (`ensure_client_libs` in scripts/lib.sh); a missing one
//! fails the test, saying how to install it. The Python used is `$REDVOY_PYTHON` (default
//! `python3`), Node.js is `node` on `PATH` with the packages of `tests/clients/package.json`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::Duration;

use redvoy_test_util::process::{tail, wait_exit};
use redvoy_test_util::{
    bootstrap, key_slot, redis_cluster_bootstrap, start_servers, Cluster, Proxy, RedisCluster,
    RedisServer, Reply, RespClient, Target,
};

/// Bound on one client run (a script, `redis-cli`, `redis-benchmark`): the slowest takes a few
/// seconds on a loaded 2-core machine; past this it is stuck and gets killed.
const CLIENT_RUN_LIMIT: Duration = Duration::from_secs(150);
/// Bound on probing an installed tool (`--version`, an import).
const PROBE_LIMIT: Duration = Duration::from_secs(30);
/// Commands per pipelined write when reading keys back from the servers.
const BATCH: usize = 500;
/// Lines of a client's output (and of the proxy log) quoted by a failing test.
const OUTPUT_TAIL_LINES: usize = 60;
/// Mismatching keys listed by a failing placement check (the total is always given).
const SHOWN_MISMATCHES: usize = 10;

/// The interpreter with redis-py; scripts/lib.sh exports it.
const PYTHON_ENV: &str = "REDVOY_PYTHON";
/// The redis-py release `ensure_client_libs` installs.
const REDIS_PY_VERSION: &str = "8.2.0";

// Keys the redis-py script writes (mirrors the constants of tests/clients/redis_py_check.py).
const PY_KEYS: usize = 2_000;
const PY_SCRIPT_KEYS: usize = 64;
const PY_DB_KEYS: usize = 50;
const PY_ASYNC_TASKS: usize = 50;
const PY_ASYNC_PAIRS: usize = 100;
const PY_WATCH_TOTAL: usize = 2 * 200;

// Keys the ioredis script writes (mirrors tests/clients/ioredis_check.js).
const IOREDIS_KEYS: usize = 10_000;

/// SETs fed to `redis-cli --pipe`.
const PIPE_KEYS: usize = 20_000;
/// Requests per `redis-benchmark` test, its connections, and its key space (`-r`).
const BENCH_REQUESTS: &str = "2000";
const BENCH_CLIENTS: &str = "10";
const BENCH_KEYSPACE: &str = "1000";
/// The tests `redis-benchmark -t set,get,lpush,lpop,incr,mset` reports, as it names them.
const BENCH_TESTS: [&str; 6] = ["SET", "GET", "LPUSH", "LPOP", "INCR", "MSET (10 keys)"];

/// The redvoy target, or `None` when `REDVOY_TEST_TARGETS` leaves it out.
fn redvoy() -> Option<Target> {
    let found = redvoy_test_util::targets(env!("CARGO_BIN_EXE_redvoy"))
        .into_iter()
        .find(|t| *t == Target::Redvoy);
    if found.is_none() {
        eprintln!("client_libraries: REDVOY_TEST_TARGETS excludes redvoy; nothing to run");
    }
    found
}

fn clients_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

// === Topologies ===

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Topology {
    /// Three standalone redis-servers behind one RING_HASH cluster.
    Sharded,
    /// A Redis Cluster (3 primaries, 1 replica each) behind `envoy.clusters.redis`.
    RedisCluster,
}

impl fmt::Display for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Topology::Sharded => "sharded listener (3 redis-servers, RING_HASH)",
            Topology::RedisCluster => "Redis Cluster listener (3 primaries + 3 replicas)",
        })
    }
}

enum Upstream {
    Sharded(Vec<RedisServer>),
    Cluster(RedisCluster),
}

/// The servers and redvoy in front of them. The proxy is declared first so it stops first.
struct Setup {
    proxy: Proxy,
    upstream: Upstream,
    topology: Topology,
}

fn sharded_bootstrap(servers: &[RedisServer]) -> String {
    let ports: Vec<u16> = servers.iter().map(RedisServer::port).collect();
    bootstrap(
        r#"
        stat_prefix: redis
        settings: {op_timeout: 5s, enable_hashtagging: true}
        prefix_routes:
          catch_all_route: {cluster: redis}
        "#,
        &[Cluster::new("redis", "RING_HASH", &ports)],
    )
}

fn cluster_bootstrap(seed: u16) -> String {
    redis_cluster_bootstrap(
        "{op_timeout: 5s, enable_redirection: true, enable_hashtagging: true}",
        "{cluster: redis_cluster}",
        "{cluster_refresh_rate: 1s, cluster_refresh_timeout: 1s}",
        &[seed],
        "",
    )
}

/// Where a key was found on one server.
enum Found {
    Absent,
    /// A string value.
    Value(Vec<u8>),
    /// Present with another type (GET said WRONGTYPE).
    OtherType,
}

// === impl Setup ===

impl Setup {
    /// Starts the servers and redvoy in front of them.
    fn start(target: Target, topology: Topology) -> Setup {
        let (upstream, yaml) = match topology {
            Topology::Sharded => {
                let servers = start_servers(3);
                let yaml = sharded_bootstrap(&servers);
                (Upstream::Sharded(servers), yaml)
            }
            Topology::RedisCluster => {
                let cluster = RedisCluster::start(3, 1);
                let seed = cluster.ports().first().copied().unwrap_or_else(|| {
                    panic!("RedisCluster::start(3, 1) returned no nodes");
                });
                (Upstream::Cluster(cluster), cluster_bootstrap(seed))
            }
        };
        let proxy = Proxy::start(target, &yaml, &[]);
        Setup {
            proxy,
            upstream,
            topology,
        }
    }

    fn port(&self) -> u16 {
        self.proxy.port()
    }

    /// The servers holding data: every server, or the cluster's primaries.
    fn data_ports(&mut self) -> Vec<u16> {
        match &mut self.upstream {
            Upstream::Sharded(servers) => servers.iter().map(RedisServer::port).collect(),
            Upstream::Cluster(cluster) => cluster.primaries().iter().map(|n| n.port).collect(),
        }
    }

    /// Panics with `what`, the client's output and the proxy's log.
    fn fail(&self, what: &str, run: Option<&RunOutput>) -> ! {
        let output = run.map(RunOutput::describe).unwrap_or_default();
        panic!(
            "{}: {what}\n{output}\n--- redvoy log (tail) ---\n{}",
            self.topology,
            self.proxy.log_tail()
        );
    }

    /// Every key of `expected` (with its value, when given) must be on exactly one data server,
    /// and on the right one: the primary owning its slot, or, for the sharded listener, the
    /// server a plain RESP SET through redvoy puts it on. The sharded check rewrites the keys
    /// (after FLUSHALL), so it is the last check of a test.
    fn check_keys(&mut self, client: &str, expected: &[(String, Option<String>)]) {
        let ports = self.data_ports();
        let keys: Vec<&str> = expected.iter().map(|(k, _)| k.as_str()).collect();
        let found = locate(&ports, &keys);
        let mut problems = Vec::new();
        let mut holders = Vec::with_capacity(keys.len());
        for ((key, value), on) in expected.iter().zip(found) {
            let holder = match on.as_slice() {
                [(port, found)] => {
                    if let (Some(want), Found::Value(got)) = (value, found) {
                        if got != want.as_bytes() {
                            problems.push(format!(
                                "{key} on :{port} is {:?}, {client} wrote {want:?}",
                                String::from_utf8_lossy(got)
                            ));
                        }
                    }
                    if let (Some(want), Found::OtherType) = (value, found) {
                        problems.push(format!("{key} on :{port} is not the string {want:?}"));
                    }
                    Some(*port)
                }
                [] => {
                    problems.push(format!("{key} is on no server"));
                    None
                }
                several => {
                    let on: Vec<u16> = several.iter().map(|(p, _)| *p).collect();
                    problems.push(format!("{key} is on several servers {on:?}"));
                    None
                }
            };
            holders.push(holder);
        }
        let owners = self.expected_owners(&keys);
        for ((key, holder), owner) in keys.iter().zip(&holders).zip(&owners) {
            if let Some(holder) = holder {
                if holder != owner {
                    problems.push(format!("{key} is on :{holder}, expected on :{owner}"));
                }
            }
        }
        if !problems.is_empty() {
            let total = problems.len();
            problems.truncate(SHOWN_MISMATCHES);
            self.fail(
                &format!(
                    "{total} problems with the {} keys written by {client}, e.g.:\n  {}",
                    keys.len(),
                    problems.join("\n  ")
                ),
                None,
            );
        }
    }

    /// For each key, the port of the server that should hold it.
    fn expected_owners(&mut self, keys: &[&str]) -> Vec<u16> {
        match &mut self.upstream {
            Upstream::Cluster(cluster) => {
                let slots = cluster.slots();
                keys.iter()
                    .map(|key| {
                        let slot = key_slot(key.as_bytes());
                        slots
                            .iter()
                            .find(|r| (r.start..=r.end).contains(&slot))
                            .map(|r| r.primary)
                            .unwrap_or_else(|| panic!("slot {slot} of {key} is not served"))
                    })
                    .collect()
            }
            Upstream::Sharded(servers) => {
                // Where redvoy puts each key with a plain RESP SET, on empty servers.
                for server in servers.iter() {
                    server.flushall();
                }
                let ports: Vec<u16> = servers.iter().map(RedisServer::port).collect();
                let mut client = self.proxy.client();
                for chunk in keys.chunks(BATCH) {
                    let commands: Vec<Vec<&str>> =
                        chunk.iter().map(|k| vec!["SET", k, "probe"]).collect();
                    for (key, reply) in chunk.iter().zip(client.pipeline(&commands)) {
                        assert_eq!(reply, Reply::ok(), "plain SET {key} through redvoy");
                    }
                }
                locate(&ports, keys)
                    .into_iter()
                    .zip(keys)
                    .map(|(on, key)| match on.as_slice() {
                        [(port, _)] => *port,
                        _ => panic!("plain SET {key} through redvoy: on {} servers", on.len()),
                    })
                    .collect()
            }
        }
    }

    /// Every key on the data servers (for clients whose keys are not known beforehand).
    fn keys_on_servers(&mut self) -> Vec<String> {
        let mut all = BTreeSet::new();
        for port in self.data_ports() {
            let reply = RespClient::connect(port).cmd(&["KEYS", "*"]);
            let keys = reply
                .as_array()
                .unwrap_or_else(|| panic!("KEYS * on :{port}: {reply:?}"));
            all.extend(keys.iter().filter_map(Reply::text));
        }
        all.into_iter().collect()
    }

    /// The script `sha` is loaded on every data server (SCRIPT LOAD went to all of them).
    fn check_script_everywhere(&mut self, sha: &str) {
        for port in self.data_ports() {
            let reply = RespClient::connect(port).cmd(&["SCRIPT", "EXISTS", sha]);
            if reply != Reply::Array(vec![Reply::int(1)]) {
                self.fail(
                    &format!("script {sha} is not loaded on :{port} (SCRIPT EXISTS: {reply:?})"),
                    None,
                );
            }
        }
    }

    /// No server has anything in db 1: a client's SELECT never reached a shared connection.
    fn check_db1_empty(&mut self) {
        for port in self.data_ports() {
            let mut c = RespClient::connect(port);
            assert_eq!(c.cmd(&["SELECT", "1"]), Reply::ok(), "SELECT 1 on :{port}");
            let size = c.cmd(&["DBSIZE"]);
            if size != Reply::int(0) {
                self.fail(
                    &format!("db 1 on :{port} has {size:?} keys, expected 0"),
                    None,
                );
            }
        }
    }
}

/// For each key, the data servers holding it and what each has. Reads each server on one
/// connection in db 0, pipelined; a MOVED reply (a cluster node not owning the slot) counts as
/// absent.
fn locate(ports: &[u16], keys: &[&str]) -> Vec<Vec<(u16, Found)>> {
    let mut out: Vec<Vec<(u16, Found)>> = keys.iter().map(|_| Vec::new()).collect();
    for &port in ports {
        let mut c = RespClient::connect(port);
        assert_eq!(c.cmd(&["SELECT", "0"]), Reply::ok(), "SELECT 0 on :{port}");
        for (chunk_no, chunk) in keys.chunks(BATCH).enumerate() {
            let commands: Vec<Vec<&str>> = chunk.iter().map(|k| vec!["GET", k]).collect();
            for (i, reply) in c.pipeline(&commands).into_iter().enumerate() {
                let index = chunk_no * BATCH + i;
                let found = match reply {
                    Reply::Null => Found::Absent,
                    Reply::Bulk(v) => Found::Value(v),
                    Reply::Error(e) if e.starts_with(b"MOVED ") => Found::Absent,
                    Reply::Error(e) if e.starts_with(b"WRONGTYPE") => Found::OtherType,
                    other => panic!("GET {} on :{port}: {other:?}", keys[index]),
                };
                if !matches!(found, Found::Absent) {
                    out[index].push((port, found));
                }
            }
        }
    }
    out
}

// === Running clients ===

/// What a finished client process printed.
struct RunOutput {
    what: String,
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

// === impl RunOutput ===

impl RunOutput {
    fn success(&self) -> bool {
        self.status.success()
    }

    fn describe(&self) -> String {
        format!(
            "--- {} exited with {} ---\n--- stdout (tail) ---\n{}\n--- stderr (tail) ---\n{}",
            self.what,
            self.status,
            tail(&squeeze(&self.stdout), OUTPUT_TAIL_LINES),
            tail(&squeeze(&self.stderr), OUTPUT_TAIL_LINES)
        )
    }

    /// The last line of stdout: the JSON result of the client scripts.
    fn result_line(&self) -> &str {
        self.stdout.lines().last().unwrap_or("")
    }
}

/// `text` with runs of one repeated line (a warning logged per connection, say) shown once,
/// so the tail quoted by a failure keeps the tracebacks.
fn squeeze(text: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let mut repeats = 0;
        while lines.peek() == Some(&line) {
            lines.next();
            repeats += 1;
        }
        out.push(if repeats == 0 {
            line.to_string()
        } else {
            format!("{line} [{} times]", repeats + 1)
        });
    }
    out.join("\n")
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            // A read error ends the output early; the exit status still tells.
            let _ = pipe.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

fn join_output(handle: thread::JoinHandle<String>) -> String {
    handle
        .join()
        .unwrap_or_else(|_| "<output reader panicked>".to_string())
}

/// Runs `command` with `stdin` fed to it, within `limit`; a process still running then is
/// killed (by PID) and the test fails. `Err` only when it cannot be started.
fn run_bounded(
    what: &str,
    mut command: Command,
    stdin: Option<Vec<u8>>,
    limit: Duration,
) -> std::io::Result<RunOutput> {
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn()?;
    let writer = match (stdin, child.stdin.take()) {
        (Some(bytes), Some(mut pipe)) => Some(thread::spawn(move || {
            // A client that exits early closes its stdin: its exit status tells why.
            let _ = pipe.write_all(&bytes);
        })),
        _ => None,
    };
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let status = wait_exit(&mut child, limit);
    if let Some(writer) = writer {
        let _ = writer.join();
    }
    let (stdout, stderr) = (join_output(stdout), join_output(stderr));
    let Some(status) = status else {
        panic!(
            "{what}: still running after {limit:?}, killed\n--- stdout (tail) ---\n{}\n--- stderr (tail) ---\n{}",
            tail(&stdout, OUTPUT_TAIL_LINES),
            tail(&stderr, OUTPUT_TAIL_LINES)
        );
    };
    Ok(RunOutput {
        what: what.to_string(),
        status,
        stdout,
        stderr,
    })
}

/// The value of `"field": ...` in a flat JSON object (a string without escapes, or a number).
fn json_field(json: &str, field: &str) -> Option<String> {
    let rest = &json[json.find(&format!("\"{field}\""))? + field.len() + 2..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    match rest.strip_prefix('"') {
        Some(s) => s.split('"').next().map(str::to_string),
        None => rest.split([',', '}']).next().map(|v| v.trim().to_string()),
    }
}

// === Installed libraries ===

fn python() -> String {
    std::env::var(PYTHON_ENV).unwrap_or_else(|_| "python3".to_string())
}

const INSTALL_HINT: &str =
    "`make test` installs the client libraries (scripts/lib.sh ensure_client_libs)";

/// Fails unless `$REDVOY_PYTHON` imports redis-py `REDIS_PY_VERSION`.
fn require_redis_py() {
    let py = python();
    let mut probe = Command::new(&py);
    probe.args(["-c", "import redis; print(redis.__version__)"]);
    let run = run_bounded("redis-py import", probe, None, PROBE_LIMIT).unwrap_or_else(|e| {
        panic!("cannot run {py} ({PYTHON_ENV}, default python3): {e}; {INSTALL_HINT}")
    });
    if !run.success() {
        panic!(
            "redis-py is not installed for {py} ({PYTHON_ENV}): {}\n{INSTALL_HINT}, or run `{py} -m pip install redis=={REDIS_PY_VERSION}`",
            tail(&run.stderr, 3)
        );
    }
    let version = run.stdout.trim();
    assert_eq!(
        version, REDIS_PY_VERSION,
        "{py} ({PYTHON_ENV}) has redis-py {version}, these tests pin {REDIS_PY_VERSION}; {INSTALL_HINT}"
    );
}

/// Fails unless `node` runs and `tests/clients/node_modules/<package>` is the version pinned
/// in `tests/clients/package.json`.
fn require_node_package(package: &str) {
    let mut probe = Command::new("node");
    probe.arg("--version");
    let run = run_bounded("node --version", probe, None, PROBE_LIMIT)
        .unwrap_or_else(|e| panic!("cannot run node: {e}; {INSTALL_HINT} (Node.js and npm)"));
    assert!(run.success(), "node --version failed\n{}", run.describe());
    let manifest_path = clients_dir().join("package.json");
    let manifest = std::fs::read_to_string(&manifest_path)
        .unwrap_or_else(|e| panic!("{}: {e}", manifest_path.display()));
    let pinned = json_field(&manifest, package)
        .and_then(|spec| spec.rsplit('@').next().map(str::to_string))
        .unwrap_or_else(|| panic!("{} has no dependency {package}", manifest_path.display()));
    let installed_path = clients_dir()
        .join("node_modules")
        .join(package)
        .join("package.json");
    let installed = std::fs::read_to_string(&installed_path).unwrap_or_else(|e| {
        panic!(
            "{package} (ioredis {pinned}) is not installed ({}: {e}); {INSTALL_HINT}, or run `npm ci` in tests/clients",
            installed_path.display()
        )
    });
    let version = json_field(&installed, "version").unwrap_or_default();
    assert_eq!(
        version, pinned,
        "tests/clients/node_modules/{package} is ioredis {version}, package.json pins {pinned}; run `npm ci` in tests/clients"
    );
}

/// Fails unless `tool` (from redis-tools) runs.
fn require_redis_tool(tool: &str) {
    let mut probe = Command::new(tool);
    probe.arg("--version");
    let run = run_bounded(tool, probe, None, PROBE_LIMIT).unwrap_or_else(|e| {
        panic!("cannot run {tool}: {e}; `make test` installs redis-tools (scripts/lib.sh ensure_redis)")
    });
    assert!(run.success(), "{tool} --version failed\n{}", run.describe());
}

fn with_values(pairs: impl IntoIterator<Item = (String, String)>) -> Vec<(String, Option<String>)> {
    pairs.into_iter().map(|(k, v)| (k, Some(v))).collect()
}

// === Scenarios ===

fn redis_py(topology: Topology) {
    let Some(target) = redvoy() else {
        return;
    };
    require_redis_py();
    let mut setup = Setup::start(target, topology);
    let mut script = Command::new(python());
    script
        .arg(clients_dir().join("redis_py_check.py"))
        .arg("127.0.0.1")
        .arg(setup.port().to_string());
    let run = run_bounded("redis-py", script, None, CLIENT_RUN_LIMIT)
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python()));
    if !run.success() {
        setup.fail("the redis-py checks failed", Some(&run));
    }
    let result = run.result_line().to_string();
    eprintln!("{topology}: redis-py: {result}");
    if json_field(&result, "protocol").as_deref() != Some("3") {
        setup.fail(
            &format!("redis-py did not get RESP3 from HELLO 3: {result}"),
            Some(&run),
        );
    }
    let sha = json_field(&result, "script_sha")
        .unwrap_or_else(|| setup.fail("no script_sha in the result", Some(&run)));
    setup.check_script_everywhere(&sha);
    if topology == Topology::Sharded {
        setup.check_db1_empty();
    }
    let mut keys = with_values((0..PY_KEYS).map(|i| (format!("py:{i}"), format!("value-{i}"))));
    keys.extend(with_values(
        (0..PY_SCRIPT_KEYS).map(|i| (format!("pyscript:{i}"), format!("script-{i}"))),
    ));
    keys.extend(with_values(
        (0..PY_DB_KEYS).map(|i| (format!("pydb0:{i}"), format!("db0-{i}"))),
    ));
    keys.extend(with_values((0..PY_ASYNC_TASKS).flat_map(|t| {
        (0..PY_ASYNC_PAIRS).map(move |j| (format!("pyasync:{t}:{j}"), format!("async-{t}-{j}")))
    })));
    keys.push((
        "pywatch:counter".to_string(),
        Some(PY_WATCH_TOTAL.to_string()),
    ));
    setup.check_keys("redis-py", &keys);
}

fn ioredis(package: &str, topology: Topology) {
    let Some(target) = redvoy() else {
        return;
    };
    require_node_package(package);
    let mut setup = Setup::start(target, topology);
    let mut script = Command::new("node");
    script
        .arg(clients_dir().join("ioredis_check.js"))
        .arg(package)
        .arg("127.0.0.1")
        .arg(setup.port().to_string());
    let run = run_bounded(package, script, None, CLIENT_RUN_LIMIT)
        .unwrap_or_else(|e| panic!("cannot run node: {e}"));
    if !run.success() {
        setup.fail(&format!("the {package} checks failed"), Some(&run));
    }
    let result = run.result_line().to_string();
    eprintln!("{topology}: {package}: {result}");
    // ioredis 6 asks for RESP3 (HELLO 3) by default and would quietly fall back to RESP2.
    let protocol = json_field(&result, "protocol");
    if package == "ioredis6" && protocol.as_deref() != Some("3") {
        setup.fail(
            &format!("{package} did not get RESP3 from HELLO 3: {result}"),
            Some(&run),
        );
    }
    let mut keys = with_values(
        (0..IOREDIS_KEYS).map(|i| (format!("{package}:{i}"), format!("{package}-v{i}"))),
    );
    keys.push((format!("{{{package}:tx}}:k"), Some("tx-value".to_string())));
    keys.push((format!("{{{package}:tx}}:c"), Some("1".to_string())));
    setup.check_keys(package, &keys);
}

fn redis_cli_pipe_and_scan(topology: Topology) {
    let Some(target) = redvoy() else {
        return;
    };
    require_redis_tool("redis-cli");
    let mut setup = Setup::start(target, topology);
    let port = setup.port().to_string();
    let mut input = Vec::new();
    for i in 0..PIPE_KEYS {
        input.extend(redvoy_test_util::encode_command(&[
            "SET".to_string(),
            format!("pipe:{i}"),
            format!("v{i}"),
        ]));
    }
    let mut pipe = Command::new("redis-cli");
    pipe.args(["-h", "127.0.0.1", "-p", &port, "--pipe"]);
    let run = run_bounded("redis-cli --pipe", pipe, Some(input), CLIENT_RUN_LIMIT)
        .unwrap_or_else(|e| panic!("cannot run redis-cli: {e}"));
    let summary = format!("errors: 0, replies: {PIPE_KEYS}");
    if !run.success() || !run.stdout.contains(&summary) {
        setup.fail(
            &format!("redis-cli --pipe: expected exit 0 and `{summary}`"),
            Some(&run),
        );
    }

    let mut scan = Command::new("redis-cli");
    scan.args([
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "--scan",
        "--pattern",
        "pipe:*",
    ]);
    let run = run_bounded("redis-cli --scan", scan, None, CLIENT_RUN_LIMIT)
        .unwrap_or_else(|e| panic!("cannot run redis-cli: {e}"));
    if !run.success() {
        setup.fail("redis-cli --scan failed", Some(&run));
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for line in run.stdout.lines().filter(|l| !l.is_empty()) {
        *counts.entry(line).or_default() += 1;
    }
    let expected: BTreeSet<String> = (0..PIPE_KEYS).map(|i| format!("pipe:{i}")).collect();
    let repeated: Vec<&str> = counts
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(k, _)| *k)
        .collect();
    let missing: Vec<&String> = expected
        .iter()
        .filter(|k| !counts.contains_key(k.as_str()))
        .collect();
    let unexpected: Vec<&str> = counts
        .keys()
        .filter(|k| !expected.contains(**k))
        .copied()
        .collect();
    if !repeated.is_empty() || !missing.is_empty() || !unexpected.is_empty() {
        setup.fail(
            &format!(
                "redis-cli --scan --pattern 'pipe:*': {} keys repeated (e.g. {:?}), {} missing (e.g. {:?}), {} unexpected (e.g. {:?})",
                repeated.len(),
                &repeated[..repeated.len().min(3)],
                missing.len(),
                &missing[..missing.len().min(3)],
                unexpected.len(),
                &unexpected[..unexpected.len().min(3)]
            ),
            Some(&run),
        );
    }
    let keys = with_values((0..PIPE_KEYS).map(|i| (format!("pipe:{i}"), format!("v{i}"))));
    setup.check_keys("redis-cli --pipe", &keys);
}

fn redis_benchmark(topology: Topology) {
    let Some(target) = redvoy() else {
        return;
    };
    require_redis_tool("redis-benchmark");
    let mut setup = Setup::start(target, topology);
    let port = setup.port().to_string();
    let mut bench = Command::new("redis-benchmark");
    bench.args([
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-t",
        "set,get,lpush,lpop,incr,mset",
        "-n",
        BENCH_REQUESTS,
        "-c",
        BENCH_CLIENTS,
        "-r",
        BENCH_KEYSPACE,
        "-q",
        "--csv",
    ]);
    let run = run_bounded("redis-benchmark", bench, None, CLIENT_RUN_LIMIT)
        .unwrap_or_else(|e| panic!("cannot run redis-benchmark: {e}"));
    if !run.success() {
        setup.fail("redis-benchmark failed", Some(&run));
    }
    // CSV rows: "TEST","rps","avg_latency_ms",...
    for test in BENCH_TESTS {
        let prefix = format!("\"{test}\",\"");
        let rate = run
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|rest| rest.split('"').next())
            .and_then(|rps| rps.parse::<f64>().ok());
        match rate {
            Some(rps) if rps > 0.0 => {}
            other => setup.fail(
                &format!("redis-benchmark test {test}: rate {other:?}, expected a positive one"),
                Some(&run),
            ),
        }
    }
    let keys = setup.keys_on_servers();
    if !keys.iter().any(|k| k.starts_with("key:")) {
        setup.fail(
            &format!("redis-benchmark left no key:* on the servers (keys: {keys:?})"),
            Some(&run),
        );
    }
    let keys: Vec<(String, Option<String>)> = keys.into_iter().map(|k| (k, None)).collect();
    setup.check_keys("redis-benchmark", &keys);
}

// === Tests ===

#[test]
fn redis_py_through_a_sharded_listener() {
    redis_py(Topology::Sharded);
}

#[test]
fn redis_py_through_a_redis_cluster_listener() {
    redis_py(Topology::RedisCluster);
}

#[test]
fn ioredis5_through_a_sharded_listener() {
    ioredis("ioredis5", Topology::Sharded);
}

#[test]
fn ioredis5_through_a_redis_cluster_listener() {
    ioredis("ioredis5", Topology::RedisCluster);
}

#[test]
fn ioredis6_through_a_sharded_listener() {
    ioredis("ioredis6", Topology::Sharded);
}

#[test]
fn ioredis6_through_a_redis_cluster_listener() {
    ioredis("ioredis6", Topology::RedisCluster);
}

#[test]
fn redis_cli_pipe_and_scan_through_a_sharded_listener() {
    redis_cli_pipe_and_scan(Topology::Sharded);
}

#[test]
fn redis_cli_pipe_and_scan_through_a_redis_cluster_listener() {
    redis_cli_pipe_and_scan(Topology::RedisCluster);
}

#[test]
fn redis_benchmark_through_a_sharded_listener() {
    redis_benchmark(Topology::Sharded);
}

#[test]
fn redis_benchmark_through_a_redis_cluster_listener() {
    redis_benchmark(Topology::RedisCluster);
}
