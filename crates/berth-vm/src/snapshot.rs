//! Disk snapshots of a VM: qcow2 internal snapshots of each of its persistent disks (instance
//! storage is left out; it is wiped at every stop anyway). While QEMU runs they are taken and
//! deleted through QMP, all disks in one transaction; otherwise with `qemu-img snapshot`.
//! Reverting rewrites the disks, so it needs the VM stopped (as `virsh snapshot-revert` of a
//! disk-only snapshot does).

use std::path::Path;

use berth_model::instance::VmDetails;
use serde_json::json;

use crate::{qmp, VmError};

/// The persistent disks with the QEMU drive ids `qemu::command_line` gave them.
fn persistent_disks(details: &VmDetails) -> Result<Vec<(String, &str)>, VmError> {
    let mut disks = Vec::new();
    for (index, disk) in details.disks.iter().enumerate() {
        if disk.ephemeral {
            continue;
        }
        if disk.format != "qcow2" {
            return Err(VmError::Disk(format!(
                "disk {index} ({}) is {}; snapshots need qcow2 disks",
                disk.path, disk.format
            )));
        }
        // A disk on a share is there once the VM has started; qemu-img says so if not.
        let on_share = crate::shared_disk::on_share(&disk.path).is_some();
        if !on_share && !Path::new(&disk.path).exists() {
            return Err(VmError::Disk(
                "the VM has not started yet; its disks are made at first start".into(),
            ));
        }
        disks.push((format!("disk{index}"), disk.path.as_str()));
    }
    if disks.is_empty() {
        return Err(VmError::Disk("the VM has no persistent disk to snapshot".into()));
    }
    Ok(disks)
}

async fn qemu_img(args: &[&str]) -> Result<String, VmError> {
    let output = berth_process::async_command("qemu-img")
        .args(args)
        .output()
        .await
        .map_err(|e| VmError::Setup(format!("cannot run qemu-img: {e}")))?;
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    Err(VmError::Disk(format!(
        "qemu-img {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
            .trim()
            .lines()
            .last()
            .unwrap_or("failed")
    )))
}

/// What `qemu-img snapshot` does with an internal snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotAction {
    Create,
    Apply,
    Delete,
}

/// `qemu-img snapshot` on one qcow2 image: a path, or a URL such as `nfs://` (NFS volumes use
/// this too).
pub async fn qcow2_snapshot(image: &str, action: SnapshotAction, name: &str) -> Result<(), VmError> {
    let flag = match action {
        SnapshotAction::Create => "-c",
        SnapshotAction::Apply => "-a",
        SnapshotAction::Delete => "-d",
    };
    qemu_img(&["snapshot", flag, name, image]).await.map(|_| ())
}

/// Whether the disk at `path` holds snapshot `name` (`qemu-img snapshot -l`, shared lock).
async fn has_snapshot(path: &str, name: &str) -> Result<bool, VmError> {
    let listing = qemu_img(&["snapshot", "-U", "-l", path]).await?;
    Ok(listing.lines().any(|line| line.split_whitespace().nth(1) == Some(name)))
}

/// Takes snapshot `name` of every persistent disk; `live` when QEMU is running.
pub async fn create(details: &VmDetails, name: &str, live: bool) -> Result<(), VmError> {
    let disks = persistent_disks(details)?;
    if live {
        let actions: Vec<_> = disks
            .iter()
            .map(|(drive, _)| {
                json!({"type": "blockdev-snapshot-internal-sync", "data": {"device": drive, "name": name}})
            })
            .collect();
        qmp::execute(
            Path::new(&details.qmp_socket),
            "transaction",
            json!({ "actions": actions }),
        )
        .await?;
        return Ok(());
    }
    let mut done: Vec<&str> = Vec::new();
    for (_, path) in &disks {
        if let Err(e) = qcow2_snapshot(path, SnapshotAction::Create, name).await {
            // All disks or none: take back the ones already done.
            for path in done {
                let _ = qcow2_snapshot(path, SnapshotAction::Delete, name).await;
            }
            return Err(e);
        }
        done.push(path);
    }
    Ok(())
}

/// Puts every persistent disk back to snapshot `name`; the VM must be stopped. Every disk is
/// checked first, so a missing snapshot changes no disk.
pub async fn revert(details: &VmDetails, name: &str) -> Result<(), VmError> {
    let disks = persistent_disks(details)?;
    for (_, path) in &disks {
        if !has_snapshot(path, name).await? {
            return Err(VmError::Disk(format!("{path} has no snapshot {name}")));
        }
    }
    for (_, path) in &disks {
        qcow2_snapshot(path, SnapshotAction::Apply, name).await?;
    }
    Ok(())
}

/// Deletes snapshot `name` from every persistent disk that has it (so a delete cut short can
/// be repeated); `live` when QEMU is running.
pub async fn delete(details: &VmDetails, name: &str, live: bool) -> Result<(), VmError> {
    for (drive, path) in persistent_disks(details)? {
        if !has_snapshot(path, name).await? {
            continue;
        }
        if live {
            qmp::execute(
                Path::new(&details.qmp_socket),
                "blockdev-snapshot-delete-internal-sync",
                json!({"device": drive, "name": name}),
            )
            .await?;
        } else {
            qcow2_snapshot(path, SnapshotAction::Delete, name).await?;
        }
    }
    Ok(())
}
