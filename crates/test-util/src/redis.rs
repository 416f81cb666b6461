//! Real `redis-server` processes on free loopback ports.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::client::RespClient;
use crate::net::{free_port, try_wait_for};
use crate::process::{kill_child, tail};
use crate::resp::Reply;

/// Bound on a redis-server answering its first PING.
const REDIS_START_TIMEOUT: Duration = Duration::from_secs(15);
/// Start attempts: a port picked free may be taken by someone else before redis binds it.
const REDIS_START_ATTEMPTS: usize = 3;
/// Lines of a redis-server log printed when a test fails (its start-up banner is long).
const REDIS_LOG_TAIL_LINES: usize = 5;
/// Bound on one PING while probing start-up.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// A real redis-server, killed (by PID) on drop.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    password: Option<String>,
    extra_args: Vec<String>,
    dir: TempDir,
}

// === impl RedisServer ===

impl RedisServer {
    /// Starts a redis-server with no persistence on a free port and waits until it answers.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a redis-server requiring `password` (`--requirepass`).
    pub fn start_with_password(password: &str) -> Self {
        let mut server = Self::start_with(&["--requirepass", password]);
        server.password = Some(password.to_string());
        server
    }

    /// Starts a redis-server with extra command-line arguments (e.g. `["--maxclients", "10"]`).
    pub fn start_with(extra_args: &[&str]) -> Self {
        let extra_args: Vec<String> = extra_args.iter().map(|s| s.to_string()).collect();
        let mut last_log = String::new();
        for _ in 0..REDIS_START_ATTEMPTS {
            let dir = tempfile::Builder::new()
                .prefix("redvoy-redis-")
                .tempdir()
                .unwrap_or_else(|e| panic!("temp dir for redis-server: {e}"));
            let mut server = RedisServer {
                child: None,
                port: free_port(),
                password: None,
                extra_args: extra_args.clone(),
                dir,
            };
            if server.spawn_and_wait() {
                return server;
            }
            last_log = server.log();
        }
        panic!(
            "redis-server did not start after {REDIS_START_ATTEMPTS} attempts; last log:\n{last_log}"
        );
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// A direct client (authenticated if the server has a password).
    pub fn client(&self) -> RespClient {
        let mut client = RespClient::connect(self.port);
        if let Some(password) = &self.password {
            let reply = client.cmd(&["AUTH", password]);
            assert_eq!(reply, Reply::ok(), "AUTH on {}", self.addr());
        }
        client
    }

    /// Sends `signal` (`-STOP`, `-CONT`, ...) to the server process: a hung server without
    /// killing it.
    pub fn signal(&self, signal: &str) {
        let Some(pid) = self.pid() else {
            panic!("redis-server on port {} is not running", self.port);
        };
        let status = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status();
        assert!(
            status.as_ref().is_ok_and(|s| s.success()),
            "kill {signal} {pid}: {status:?}"
        );
    }

    /// Sends one command directly to this server.
    pub fn cmd(&self, args: &[&str]) -> Reply {
        self.client().cmd(args)
    }

    pub fn flushall(&self) {
        assert_eq!(
            self.cmd(&["FLUSHALL"]),
            Reply::ok(),
            "FLUSHALL on {}",
            self.addr()
        );
    }

    /// All keys on this server, sorted.
    pub fn keys(&self) -> Vec<String> {
        let reply = self.cmd(&["KEYS", "*"]);
        let mut keys: Vec<String> = reply
            .as_array()
            .unwrap_or_else(|| panic!("KEYS * on {}: {reply:?}", self.addr()))
            .iter()
            .filter_map(Reply::text)
            .collect();
        keys.sort();
        keys
    }

    /// Number of calls of `command` (lowercase) this server has executed, from
    /// `INFO commandstats`; 0 if it never ran.
    pub fn command_calls(&self, command: &str) -> u64 {
        let info = self
            .cmd(&["INFO", "commandstats"])
            .text()
            .unwrap_or_default();
        let prefix = format!("cmdstat_{command}:calls=");
        info.lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Kills the server now (keeps its port and directory so it can be restarted).
    pub fn stop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            kill_child(child, Duration::ZERO);
        }
        self.child = None;
    }

    /// Starts the server again on the same port (after [`RedisServer::stop`]).
    pub fn restart(&mut self) {
        self.stop();
        if !self.spawn_and_wait() {
            panic!(
                "redis-server did not restart on port {}:\n{}",
                self.port,
                self.log()
            );
        }
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The server's log file.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// Spawns on `self.port` and waits for a reply to PING. False if it exited or never
    /// answered (the child is then killed).
    fn spawn_and_wait(&mut self) -> bool {
        let mut command = Command::new("redis-server");
        command
            .arg("--port")
            .arg(self.port.to_string())
            // `-::1` binds IPv6 loopback when available: STRICT_DNS `localhost` may resolve to it.
            .args(["--bind", "127.0.0.1 -::1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--protected-mode", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.log_path())
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = command.spawn().unwrap_or_else(|e| {
            panic!("cannot run redis-server (is it installed? `make test` installs it): {e}")
        });
        self.child = Some(child);
        let port = self.port;
        let answered = try_wait_for(REDIS_START_TIMEOUT, || {
            if !self.is_running() {
                return Some(false);
            }
            let mut client = RespClient::try_connect(port).ok()?;
            client.set_timeout(PROBE_TIMEOUT);
            client.try_send_raw(b"*1\r\n$4\r\nPING\r\n").ok()?;
            match client.read_outcome(PROBE_TIMEOUT) {
                // PONG, or NOAUTH with --requirepass: either way it is serving.
                crate::client::ReadOutcome::Frame { .. } => Some(true),
                _ => None,
            }
        });
        if answered == Some(true) {
            return true;
        }
        self.stop();
        false
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- redis-server 127.0.0.1:{} log tail ---\n{}",
                self.port,
                tail(&self.log(), REDIS_LOG_TAIL_LINES)
            );
        }
        self.stop();
    }
}

/// Starts `n` redis-servers.
pub fn start_servers(n: usize) -> Vec<RedisServer> {
    (0..n).map(|_| RedisServer::start()).collect()
}
