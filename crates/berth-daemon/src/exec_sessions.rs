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
    for entry in entries.flatten() {
        end_one(&entry.path()).await;
    }
}

async fn end_one(session: &Path) {
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
    // Only a process still running this session's supervisor counts (pids are reused).
    let config = session.join("supervisor.json").display().to_string();
    let is_session = || {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|cmdline| String::from_utf8_lossy(&cmdline).contains(&config))
            .unwrap_or(false)
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while is_session() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if is_session() {
        tracing::warn!(session = %session.display(), pid, "an exec supervisor lingered; killing it");
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
}
