//! berth's per-instance supervisor (the role containerd's shim plays): a small
//! single-threaded process that owns an instance's stdio, log and exit status so the
//! daemon can crash or restart without touching running instances.
//!
//! - `supervisor` — the process side: event loop, log, attach clients, reaping
//! - `protocol` — the control socket's request/reply lines and the exit record
//! - `client` — the daemon side of the control socket
//! - `rotating` — log files with a size cap, rotated as Docker's log drivers do
//! - `fence` — the lease heartbeat a supervisor fences its workload by, in a cluster
//! - `standby` — a supervisor started ahead of need, handed the next instance's config

pub mod client;
pub mod fence;
pub mod process;
pub mod protocol;
pub mod rotating;
pub mod standby;
pub mod supervisor;

pub use protocol::{ExitRecord, LogRecord};
pub use supervisor::{run, ChildStdio, Workload};
