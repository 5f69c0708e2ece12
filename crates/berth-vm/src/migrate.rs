//! Live migration through QMP (QEMU's own pre-copy, auto-converge and post-copy): the
//! source's side (`start`, `progress`, `cancel`) and the target's (`listen`), over TCP
//! between the two nodes' qemu processes. Disks stay where they are: a VM migrates live
//! when its disks are on a share both nodes open.

use std::path::Path;

use serde_json::{json, Value};

use crate::qmp::QmpClient;
use crate::VmError;

/// QEMU 7.2 sends at 32 MiB/s unless told otherwise: a 1 GiB guest would take 32 s. berth
/// lets it use the link unless asked to hold back.
pub const LINK_SPEED_BYTES: u64 = 8 << 30;

/// How a migration runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MigrationOptions {
    pub max_downtime_ms: u64,
    /// Bytes per second at most.
    pub max_bandwidth_bytes: u64,
    pub auto_converge: bool,
    pub postcopy: bool,
}

/// QEMU's `query-migrate`, the parts berth reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationStatus {
    /// none, setup, active, postcopy-active, device, completed, failed, cancelled...
    pub status: String,
    pub transferred_bytes: u64,
    pub remaining_bytes: u64,
    pub total_bytes: u64,
    pub dirty_pages_rate: u64,
    /// Completed passes over guest memory.
    pub dirty_sync_count: u64,
    pub expected_downtime_ms: u64,
    /// When completed: QEMU's downtime and total time.
    pub downtime_ms: u64,
    pub total_ms: u64,
    pub cpu_throttle_percent: u64,
    /// When failed: why.
    pub error: Option<String>,
}

fn capabilities(options: &MigrationOptions, side: Side) -> Value {
    let mut list = vec![json!({ "capability": "postcopy-ram", "state": options.postcopy })];
    if side == Side::Source {
        list.push(json!({ "capability": "auto-converge", "state": options.auto_converge }));
    }
    json!({ "capabilities": list })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Source,
    Target,
}

/// On the target (qemu started with `-incoming defer` and `-S`): accept the source's
/// state on `address` (`IP:PORT`).
pub async fn listen(qmp: &Path, address: &str, options: &MigrationOptions) -> Result<(), VmError> {
    let mut client = QmpClient::connect(qmp).await?;
    client
        .execute("migrate-set-capabilities", capabilities(options, Side::Target))
        .await?;
    client
        .execute("migrate-incoming", json!({ "uri": format!("tcp:{address}") }))
        .await?;
    Ok(())
}

/// On the source: starts sending the VM to the target listening at `address`.
pub async fn start(qmp: &Path, address: &str, options: &MigrationOptions) -> Result<(), VmError> {
    let mut client = QmpClient::connect(qmp).await?;
    client
        .execute("migrate-set-capabilities", capabilities(options, Side::Source))
        .await?;
    client
        .execute(
            "migrate-set-parameters",
            json!({ "downtime-limit": options.max_downtime_ms, "max-bandwidth": options.max_bandwidth_bytes }),
        )
        .await?;
    client
        .execute("migrate", json!({ "uri": format!("tcp:{address}") }))
        .await?;
    Ok(())
}

/// The migration's state on this qemu.
pub async fn progress(qmp: &Path) -> Result<MigrationStatus, VmError> {
    let value = crate::qmp::execute(qmp, "query-migrate", Value::Null).await?;
    Ok(parse_status(&value))
}

fn parse_status(value: &Value) -> MigrationStatus {
    let number = |v: &Value, key: &str| v.get(key).and_then(Value::as_u64).unwrap_or(0);
    let ram = value.get("ram").cloned().unwrap_or(Value::Null);
    MigrationStatus {
        status: value
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("none")
            .to_string(),
        transferred_bytes: number(&ram, "transferred"),
        remaining_bytes: number(&ram, "remaining"),
        total_bytes: number(&ram, "total"),
        dirty_pages_rate: number(&ram, "dirty-pages-rate"),
        dirty_sync_count: number(&ram, "dirty-sync-count"),
        expected_downtime_ms: number(value, "expected-downtime"),
        downtime_ms: number(value, "downtime"),
        total_ms: number(value, "total-time"),
        cpu_throttle_percent: number(value, "cpu-throttle-percentage"),
        error: value.get("error-desc").and_then(Value::as_str).map(str::to_string),
    }
}

/// Switches a pre-copy migration to post-copy (the target runs the guest from now on).
pub async fn start_postcopy(qmp: &Path) -> Result<(), VmError> {
    crate::qmp::execute(qmp, "migrate-start-postcopy", Value::Null)
        .await
        .map(|_| ())
}

/// Ends a migration in progress; the source keeps running the guest.
pub async fn cancel(qmp: &Path) -> Result<(), VmError> {
    crate::qmp::execute(qmp, "migrate_cancel", Value::Null)
        .await
        .map(|_| ())
}

/// Runs a paused guest: the target after the hand-over, or the source again after a
/// hand-over that failed.
pub async fn resume(qmp: &Path) -> Result<(), VmError> {
    crate::qmp::execute(qmp, "cont", Value::Null).await.map(|_| ())
}

/// QEMU's run state (`running`, `paused`, `postmigrate`, `inmigrate`...).
pub async fn run_state(qmp: &Path) -> Result<String, VmError> {
    let value = crate::qmp::execute(qmp, "query-status", Value::Null).await?;
    Ok(value
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_migrate_is_read_while_active_and_when_completed() {
        let active = json!({
            "status": "active", "expected-downtime": 120, "cpu-throttle-percentage": 20,
            "ram": {"transferred": 1000, "remaining": 500, "total": 268435456, "dirty-pages-rate": 42,
                    "dirty-sync-count": 2}
        });
        let status = parse_status(&active);
        assert_eq!(status.status, "active");
        assert_eq!(status.remaining_bytes, 500);
        assert_eq!(status.dirty_sync_count, 2);
        assert_eq!(status.cpu_throttle_percent, 20);
        let done = parse_status(&json!({"status": "completed", "downtime": 35, "total-time": 2100}));
        assert_eq!((done.downtime_ms, done.total_ms), (35, 2100));
        let failed = parse_status(&json!({"status": "failed", "error-desc": "Unable to write"}));
        assert_eq!(failed.error.as_deref(), Some("Unable to write"));
    }
}
