//! Live migration through QMP (QEMU's own pre-copy, auto-converge and post-copy): the
//! source's side (`start`, `progress`, `cancel`) and the target's (`listen`), over TCP
//! between the two nodes' qemu processes. Disks on a share stay where they are; local disks
//! are copied while the guest runs, as libvirt does it: the target serves its empty copies
//! over NBD (`serve_disks`), the source mirrors each disk into them (`blockdev-mirror`,
//! `copy-mode: write-blocking`, so once in step every guest write reaches both), and at the
//! switch-over, with the guest paused before its devices move (`pre-switchover`), the mirrors
//! end (`finish_mirrors`).

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

fn capabilities(options: &MigrationOptions, side: Side, mirrors: bool) -> Value {
    let mut list = vec![json!({ "capability": "postcopy-ram", "state": options.postcopy })];
    if side == Side::Source {
        list.push(json!({ "capability": "auto-converge", "state": options.auto_converge }));
        // With disks mirrored, the source stops in `pre-switchover` (the guest paused, its
        // devices not yet handed over) so the mirrors can end in step (`continue_after_mirrors`).
        list.push(json!({ "capability": "pause-before-switchover", "state": mirrors }));
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
        .execute("migrate-set-capabilities", capabilities(options, Side::Target, false))
        .await?;
    client
        .execute("migrate-incoming", json!({ "uri": format!("tcp:{address}") }))
        .await?;
    Ok(())
}

/// On the source: starts sending the VM to the target listening at `address`; `mirrors`:
/// its local disks are being mirrored (the migration then pauses in `pre-switchover`).
pub async fn start(qmp: &Path, address: &str, options: &MigrationOptions, mirrors: bool) -> Result<(), VmError> {
    let mut client = QmpClient::connect(qmp).await?;
    client
        .execute("migrate-set-capabilities", capabilities(options, Side::Source, mirrors))
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

/// On the source, in `pre-switchover`: the mirrors have ended; the switch-over goes on.
pub async fn continue_after_mirrors(qmp: &Path) -> Result<(), VmError> {
    crate::qmp::execute(qmp, "migrate-continue", json!({ "state": "pre-switchover" }))
        .await
        .map(|_| ())
}

/// The NBD export (and the mirror job on the source) of the VM's disk device `device`.
fn mirror_name(device: &str) -> String {
    format!("berth-mirror-{device}")
}

/// On the target, before the source mirrors: serves the waiting qemu's disks `devices`
/// (`disk0`...) for writing over NBD on `address` (`IP:PORT`), one export each, named as
/// the device. An export activates its disk, as non-shared storage migration needs.
pub async fn serve_disks(qmp: &Path, address: &str, devices: &[String]) -> Result<(), VmError> {
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| VmError::Setup(format!("'{address}' is not IP:PORT")))?;
    let mut client = QmpClient::connect(qmp).await?;
    client
        .execute(
            "nbd-server-start",
            json!({ "addr": { "type": "inet", "data": { "host": host, "port": port } } }),
        )
        .await?;
    let blocks = client.execute("query-block", Value::Null).await?;
    for device in devices {
        let node = blocks
            .as_array()
            .into_iter()
            .flatten()
            .find(|b| b.get("device").and_then(Value::as_str) == Some(device.as_str()))
            .and_then(|b| b.pointer("/inserted/node-name"))
            .and_then(Value::as_str)
            .ok_or_else(|| VmError::Setup(format!("the waiting qemu has no disk {device}")))?
            .to_string();
        client
            .execute(
                "block-export-add",
                json!({ "type": "nbd", "id": mirror_name(device), "node-name": node, "name": device, "writable": true }),
            )
            .await?;
    }
    Ok(())
}

/// On the target, before it runs the guest: no more writes from the source.
pub async fn stop_serving_disks(qmp: &Path) -> Result<(), VmError> {
    crate::qmp::execute(qmp, "nbd-server-stop", Value::Null)
        .await
        .map(|_| ())
}

/// On the source: starts mirroring each of `devices` into the target's export of it at
/// `address` (`IP:PORT`), at most `speed_bytes` per second each (0: no limit).
pub async fn start_mirrors(qmp: &Path, address: &str, devices: &[String], speed_bytes: u64) -> Result<(), VmError> {
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| VmError::Setup(format!("'{address}' is not IP:PORT")))?;
    let mut client = QmpClient::connect(qmp).await?;
    for device in devices {
        let name = mirror_name(device);
        client
            .execute(
                "blockdev-add",
                json!({ "driver": "nbd", "node-name": name,
                        "server": { "type": "inet", "host": host, "port": port }, "export": device }),
            )
            .await?;
        client
            .execute(
                "blockdev-mirror",
                json!({ "job-id": name, "device": device, "target": name, "sync": "full",
                        "copy-mode": "write-blocking", "speed": speed_bytes }),
            )
            .await?;
    }
    Ok(())
}

/// Where the mirrors are: bytes copied and to copy in all, and whether every one of them is
/// in step (`ready`: from now on each write reaches both copies). An error names a mirror
/// that failed or is gone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MirrorProgress {
    pub copied_bytes: u64,
    pub total_bytes: u64,
    pub ready: bool,
}

pub async fn mirror_progress(qmp: &Path, devices: &[String]) -> Result<MirrorProgress, VmError> {
    let jobs = crate::qmp::execute(qmp, "query-block-jobs", Value::Null).await?;
    parse_mirrors(&jobs, devices)
}

fn parse_mirrors(jobs: &Value, devices: &[String]) -> Result<MirrorProgress, VmError> {
    let mut progress = MirrorProgress {
        ready: true,
        ..Default::default()
    };
    for device in devices {
        let name = mirror_name(device);
        let job = jobs
            .as_array()
            .into_iter()
            .flatten()
            .find(|j| j.get("device").and_then(Value::as_str) == Some(name.as_str()))
            .ok_or_else(|| VmError::Setup(format!("the copy of disk {device} stopped")))?;
        if let Some(error) = job.get("error").and_then(Value::as_str) {
            return Err(VmError::Setup(format!("copying disk {device}: {error}")));
        }
        progress.copied_bytes += job.get("offset").and_then(Value::as_u64).unwrap_or(0);
        progress.total_bytes += job.get("len").and_then(Value::as_u64).unwrap_or(0);
        progress.ready &= job.get("ready").and_then(Value::as_bool).unwrap_or(false);
    }
    Ok(progress)
}

/// On the source, the guest paused: ends each mirror in step (a ready mirror's cancel
/// completes its last copy) and lets go of the target's exports. `force`: the migration
/// failed; the copies are abandoned.
pub async fn finish_mirrors(qmp: &Path, devices: &[String], force: bool) -> Result<(), VmError> {
    let mut client = QmpClient::connect(qmp).await?;
    for device in devices {
        let _ = client
            .execute(
                "block-job-cancel",
                json!({ "device": mirror_name(device), "force": force }),
            )
            .await;
    }
    // A cancelled job is gone from the list once it ended (QEMU's auto-dismiss).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let jobs = client.execute("query-block-jobs", Value::Null).await?;
        let running = jobs
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|j| j.get("device").and_then(Value::as_str))
            .any(|name| devices.iter().any(|d| mirror_name(d) == name));
        if !running {
            break;
        }
        if std::time::Instant::now() >= deadline {
            return Err(VmError::Setup("the disk copies did not end within 30 s".into()));
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for device in devices {
        let _ = client
            .execute("blockdev-del", json!({ "node-name": mirror_name(device) }))
            .await;
    }
    Ok(())
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

    #[test]
    fn mirrors_are_ready_when_every_one_is_in_step() {
        let devices = ["disk0".to_string(), "disk1".to_string()];
        let jobs = json!([
            {"device": "berth-mirror-disk0", "offset": 100, "len": 200, "ready": true},
            {"device": "berth-mirror-disk1", "offset": 50, "len": 50, "ready": false},
            {"device": "other", "offset": 1, "len": 1, "ready": false}
        ]);
        let progress = parse_mirrors(&jobs, &devices).unwrap();
        assert_eq!(
            (progress.copied_bytes, progress.total_bytes, progress.ready),
            (150, 250, false)
        );
        let gone = parse_mirrors(&json!([]), &devices).unwrap_err();
        assert!(gone.to_string().contains("disk0"), "{gone}");
    }
}
