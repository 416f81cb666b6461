//! Child-process helpers: bounded termination and log tails.

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::net::try_wait_for;

/// Ends `child`: SIGTERM first (Envoy then removes its shared memory), SIGKILL if it is still
/// running after `grace`; a zero grace kills at once. Only this child's PID is signalled.
pub fn kill_child(child: &mut Child, grace: Duration) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    if !grace.is_zero() {
        let termed = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if termed && try_wait_for(grace, || child.try_wait().ok().flatten()).is_some() {
            return;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Waits for `child` to exit within `timeout`; kills it and returns `None` if it does not.
pub fn wait_exit(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let status = try_wait_for(timeout, || child.try_wait().ok().flatten());
    if status.is_none() {
        kill_child(child, Duration::ZERO);
    }
    status
}

/// The sockets process `pid` listens on, as `tcp <ip>:<port>` (IPv4 in dotted form, IPv6 as
/// the kernel's hex) and `unix <path>`, read from `/proc` (Linux only): the process's socket
/// inodes matched against `/proc/net/{tcp,tcp6,unix}` entries in the listening state.
pub fn listening_sockets(pid: u32) -> BTreeSet<String> {
    let mut inodes = BTreeSet::new();
    let fd_dir = format!("/proc/{pid}/fd");
    for entry in std::fs::read_dir(&fd_dir)
        .unwrap_or_else(|e| panic!("{fd_dir}: {e}"))
        .flatten()
    {
        if let Ok(target) = std::fs::read_link(entry.path()) {
            let target = target.display().to_string();
            if let Some(inode) = target
                .strip_prefix("socket:[")
                .and_then(|t| t.strip_suffix(']'))
            {
                inodes.insert(inode.to_string());
            }
        }
    }
    let mut out = BTreeSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let (Some(local), Some(state), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                continue;
            };
            const TCP_LISTEN: &str = "0A";
            if *state == TCP_LISTEN && inodes.contains(*inode) {
                out.insert(format!("tcp {}", proc_tcp_address(local)));
            }
        }
    }
    let text = std::fs::read_to_string("/proc/net/unix").unwrap_or_default();
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // Num RefCount Protocol Flags Type St Inode Path
        let (Some(flags), Some(inode)) = (fields.get(3), fields.get(6)) else {
            continue;
        };
        const SO_ACCEPTCON: u32 = 0x0001_0000;
        let listening = u32::from_str_radix(flags, 16).is_ok_and(|f| f & SO_ACCEPTCON != 0);
        if listening && inodes.contains(*inode) {
            out.insert(format!("unix {}", fields.get(7).copied().unwrap_or("")));
        }
    }
    out
}

/// `0100007F:C5D5` -> `127.0.0.1:50645`; IPv6 addresses are left in hex.
fn proc_tcp_address(hex: &str) -> String {
    let Some((ip, port)) = hex.split_once(':') else {
        return hex.to_string();
    };
    let port = u16::from_str_radix(port, 16).map_or_else(|_| port.to_string(), |p| p.to_string());
    match u32::from_str_radix(ip, 16) {
        Ok(v) if ip.len() == 8 => {
            // The kernel prints the network-order bytes read as a native integer.
            let [a, b, c, d] = v.to_ne_bytes();
            format!("{a}.{b}.{c}.{d}:{port}")
        }
        _ => format!("[{ip}]:{port}"),
    }
}

/// A process's resident memory (`VmRSS`) in KiB; `None` once it is gone.
pub fn rss_kib(pid: Option<u32>) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}
