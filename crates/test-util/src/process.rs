//! Child-process helpers: bounded termination and log tails.

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
