//! Ending an instance's exec sessions. Each `berth exec` runs under a supervisor of its own
//! (`<instance>/execs/<id>/`), which normally ends with the instance's processes; `stop`,
//! `rm -f` and an exit make sure of it, also for a session whose process outlived the
//! instance or a supervisor that lingers, and also after a daemon restart.

use std::path::Path;
use std::time::Duration;

use berth_shim::client;
use berth_shim::protocol::Request;

/// The file in a session's directory that holds its supervisor's pid.
pub const SUPERVISOR_PID_FILE: &str = "supervisor.pid";

/// SIGKILL to every session's processes through its supervisor, then, if the supervisor is
/// still there after a few seconds, to the supervisor itself.
pub async fn end_all(execs: &Path) {
    let Ok(entries) = std::fs::read_dir(execs) else {
        return;
    };
    // All at once, against one deadline: a stop's grace period must not grow with the
    // number of sessions.
    let sessions: Vec<_> = entries.flatten().map(|entry| entry.path()).collect();
    futures_util::future::join_all(sessions.iter().map(|session| end_one(session))).await;
}

pub(crate) async fn end_one(session: &Path) {
    let kill = Request::Kill {
        signal: libc::SIGKILL,
        all: true,
    };
    let _ = client::call_within(&session.join("supervisor.sock"), &kill, Duration::from_secs(2)).await;
    let Some(pid) = std::fs::read_to_string(session.join(SUPERVISOR_PID_FILE))
        .ok()
        .and_then(|text| text.trim().parse::<i32>().ok())
    else {
        return;
    };
    let config = session.join("supervisor.json");
    if !supervisor_gone(pid, &config, Duration::from_secs(5)).await {
        tracing::warn!(session = %session.display(), pid, "an exec supervisor lingered; killing it");
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
}

/// Waits up to `timeout` for the supervisor `pid` started with `config` to end. Only a
/// process still running that supervisor counts (pids are reused).
pub async fn supervisor_gone(pid: i32, config: &Path, timeout: Duration) -> bool {
    let config = config.display().to_string();
    let running = || {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|cmdline| String::from_utf8_lossy(&cmdline).contains(&config))
            .unwrap_or(false)
    };
    let deadline = tokio::time::Instant::now() + timeout;
    while running() {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}
