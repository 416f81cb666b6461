//! Network namespaces for tests that need the kernel's help (iptables REDIRECT and
//! `SO_ORIGINAL_DST`): created with `ip netns add`, deleted on drop, commands run inside with
//! `ip netns exec`.

use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::net::try_wait_for;
use crate::process::{kill_child, wait_exit};

/// Bound on one short command (`ip`, `iptables`, `redis-cli`) run inside a namespace.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on a redis-server inside a namespace answering PING.
const REDIS_START_TIMEOUT: Duration = Duration::from_secs(15);

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A network namespace owned by the test; deleted (with everything in it) on drop.
pub struct NetNs {
    name: String,
}

// === impl NetNs ===

impl NetNs {
    /// Creates a namespace with `lo` up. `Err` says why it cannot (not root, no
    /// CAP_NET_ADMIN, `ip` missing): callers skip, loudly.
    pub fn create(prefix: &str) -> Result<NetNs, String> {
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run(&["ip", "netns", "add", &name])?;
        let ns = NetNs { name };
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The command prefix that runs a program inside the namespace.
    pub fn wrapper(&self) -> Vec<String> {
        vec![
            "ip".to_string(),
            "netns".to_string(),
            "exec".to_string(),
            self.name.clone(),
        ]
    }

    /// Runs `args` inside the namespace (bounded); `Err` with its output unless it exits 0.
    pub fn exec(&self, args: &[&str]) -> Result<String, String> {
        let mut all: Vec<&str> = vec!["ip", "netns", "exec", &self.name];
        all.extend_from_slice(args);
        run(&all)
    }

    /// Starts `args` inside the namespace in the background (stdout/stderr discarded).
    pub fn spawn(&self, args: &[&str]) -> std::io::Result<Child> {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Err(e) = run(&["ip", "netns", "del", &self.name]) {
            eprintln!("cannot delete network namespace {}: {e}", self.name);
        }
    }
}

/// Runs a command to completion within [`COMMAND_TIMEOUT`]; `Ok(stdout)` if it exited 0.
pub fn run(args: &[&str]) -> Result<String, String> {
    let (program, rest) = args
        .split_first()
        .ok_or_else(|| "empty command".to_string())?;
    let mut child = Command::new(program)
        .args(rest)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if wait_exit(&mut child, COMMAND_TIMEOUT).is_none() {
        kill_child(&mut child, Duration::ZERO);
        return Err(format!(
            "{args:?} did not finish within {COMMAND_TIMEOUT:?}"
        ));
    }
    let Output {
        status,
        stdout,
        stderr,
    } = child
        .wait_with_output()
        .map_err(|e| format!("{args:?}: {e}"))?;
    let out = String::from_utf8_lossy(&stdout).into_owned();
    if status.success() {
        Ok(out)
    } else {
        Err(format!(
            "{args:?} failed ({status}): {}{}",
            out,
            String::from_utf8_lossy(&stderr)
        ))
    }
}

/// A redis-server running inside a namespace on `127.0.0.1:port`, killed on drop.
pub struct NsRedis {
    child: Child,
    port: u16,
    ns: String,
    _dir: tempfile::TempDir,
}

// === impl NsRedis ===

impl NsRedis {
    pub fn start(ns: &NetNs, port: u16) -> NsRedis {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let port_text = port.to_string();
        let dir_text = dir.path().display().to_string();
        let child = ns
            .spawn(&[
                "redis-server",
                "--port",
                &port_text,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
                "--dir",
                &dir_text,
            ])
            .unwrap_or_else(|e| panic!("redis-server in {}: {e}", ns.name()));
        let redis = NsRedis {
            child,
            port,
            ns: ns.name().to_string(),
            _dir: dir,
        };
        let up = try_wait_for(REDIS_START_TIMEOUT, || {
            redis
                .cli(&["-p", &port_text, "PING"])
                .ok()
                .filter(|o| o.trim() == "PONG")
        });
        assert!(
            up.is_some(),
            "redis-server in namespace {} did not answer on port {port}",
            redis.ns
        );
        redis
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Runs `redis-cli <args>` inside the namespace; its output (raw mode) on success.
    pub fn cli(&self, args: &[&str]) -> Result<String, String> {
        let mut all = vec!["ip", "netns", "exec", &self.ns, "redis-cli"];
        all.extend_from_slice(args);
        run(&all)
    }

    /// A command sent directly to this server.
    pub fn cmd(&self, args: &[&str]) -> String {
        let port = self.port.to_string();
        let mut all = vec!["-p", port.as_str()];
        all.extend_from_slice(args);
        self.cli(&all)
            .unwrap_or_else(|e| panic!("redis-cli on 127.0.0.1:{} in {}: {e}", self.port, self.ns))
    }
}

impl Drop for NsRedis {
    fn drop(&mut self) {
        kill_child(&mut self.child, Duration::ZERO);
    }
}
