//! What the daemon and a supervisor say to each other on the supervisor's control socket:
//! one JSON request line, one JSON reply line. After an `attach` reply the connection
//! carries attach-stream frames (`berth_model::stream`) until the workload exits.

use std::path::Path;

use berth_model::ExitStatus;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Start the created workload.
    Start,
    /// Turn this connection into an attach stream.
    Attach { stdin: bool },
    /// Reply once the workload has exited, with its `ExitRecord`.
    Wait,
    /// Send a signal to the main process (or, with `all`, to every process of it).
    Kill { signal: i32, all: bool },
    /// Main process PID and whether it still runs.
    Status,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitRecord>,
}

impl Reply {
    pub fn ok() -> Self {
        Reply {
            ok: true,
            ..Default::default()
        }
    }
    pub fn with_pid(pid: u32) -> Self {
        Reply {
            ok: true,
            pid: Some(pid),
            ..Default::default()
        }
    }
    pub fn error(message: impl Into<String>) -> Self {
        Reply {
            ok: false,
            error: Some(message.into()),
            ..Default::default()
        }
    }
}

/// The first line a supervisor prints on its stdout: did the workload get created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadyLine {
    pub ok: bool,
    #[serde(default)]
    pub error: Option<String>,
    /// The supervisor's own PID (the daemon spawned it, but say it anyway for clarity).
    pub supervisor_pid: u32,
    /// When the supervisor's code began, and when its workload was created (CLOCK_MONOTONIC,
    /// ns; the same clock in every process): the daemon's per-phase start timing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entered_ns: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_ns: Option<u64>,
}

/// Now on CLOCK_MONOTONIC, in ns: comparable between processes of one boot.
pub fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// Written to the exit file when the workload ends; read by the daemon, also after a
/// restart that missed the exit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ExitRecord {
    pub status: ExitStatus,
    pub finished_at: DateTime<Utc>,
}

impl ExitRecord {
    pub fn read(path: &Path) -> Option<ExitRecord> {
        let data = std::fs::read(path).ok()?;
        serde_json::from_slice(&data).ok()
    }

    /// Writes atomically (temp file and rename) so a reader never sees half a record.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let temp = path.with_extension("tmp");
        std::fs::write(&temp, serde_json::to_vec(self).unwrap_or_default())?;
        std::fs::rename(&temp, path)
    }
}

/// One record of an instance's log file (JSON lines, like Docker's json-file driver).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    /// RFC 3339 time the bytes were read.
    pub t: DateTime<Utc>,
    /// "stdout" or "stderr".
    pub s: String,
    /// The bytes, as UTF-8 (lossy): a line with its newline, or a partial line.
    pub d: String,
}
