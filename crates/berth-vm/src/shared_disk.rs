//! Root disks on an NFS share (`--disk-on nfs://SERVER/EXPORT`), so that any node reaching
//! the share can run the VM. QEMU opens them with its own NFS client (libnfs, NFSv3), so no
//! node needs the kernel's. The disk is a qcow2 overlay whose backing file is the image's
//! base, published once on the share under the image's id: a node's own base is built from
//! the image's layers by mkfs, so two nodes' bases differ byte for byte, and an overlay must
//! always meet the base it was made on. The first node to publish wins (a hard link, which
//! never replaces); the others use its copy.

use std::path::Path;

use berth_storage::nfs::NfsShare;

use crate::{disk, VmError};

/// The file name berth gives a VM's root disk on a share.
fn root_file(instance_id: &str) -> String {
    format!("berth-vm-{instance_id}-root.qcow2")
}

/// The file name of an image's published base.
fn base_file(image_id: &str) -> String {
    let hex = image_id.trim_start_matches("sha256:");
    format!("berth-base-{}.qcow2", &hex[..hex.len().min(32)])
}

/// The URL of the root disk of instance `instance_id` kept on `share_url`.
pub fn root_disk_url(share_url: &str, instance_id: &str) -> Result<String, String> {
    let share = NfsShare::from_url(share_url).map_err(|e| format!("--disk-on: {e}"))?;
    Ok(share.url(&root_file(instance_id)))
}

/// The share and file name of a disk path, when it is on a share.
pub fn on_share(path: &str) -> Option<(NfsShare, String)> {
    let rest = path.strip_prefix("nfs://")?;
    let (server, export_and_file) = rest.split_once('/')?;
    let (export, file) = export_and_file.rsplit_once('/')?;
    let share = NfsShare::new(server, &format!("/{export}")).ok()?;
    Some((share, file.to_string()))
}

fn storage_error(e: berth_storage::StorageError) -> VmError {
    VmError::Setup(e.to_string())
}

fn share_and_file(url: &str) -> Result<(NfsShare, String), VmError> {
    on_share(url).ok_or_else(|| VmError::Setup(format!("{url} is not a disk on an NFS share")))
}

/// Whether the disk at `url` is on its share.
pub async fn exists(url: &str) -> Result<bool, VmError> {
    let (share, file) = share_and_file(url)?;
    share.exists(&file).await.map_err(storage_error)
}

/// Makes the root disk at `url`: an overlay of `image_id`'s base on the share, published
/// from `local_base` first if the share lacks it.
pub async fn create_root(url: &str, image_id: &str, local_base: &Path, size: u64) -> Result<(), VmError> {
    let (share, _) = share_and_file(url)?;
    let base = base_file(image_id);
    if !share.exists(&base).await.map_err(storage_error)? {
        // Written whole under a name of this process's own, then linked to the shared name.
        let partial = format!("{base}.part-{}", std::process::id());
        let (local, target) = (local_base.to_path_buf(), share.url(&partial));
        let written = tokio::task::spawn_blocking(move || disk::convert_to_qcow2_at(&local, "qcow2", &target))
            .await
            .map_err(|e| VmError::Setup(e.to_string()))?;
        let linked = match written {
            Ok(()) => share.link_new(&partial, &base).await.map_err(storage_error),
            Err(e) => Err(e),
        };
        let _ = share.remove(&partial).await;
        linked?;
    }
    let (backing, target) = (share.url(&base), url.to_string());
    tokio::task::spawn_blocking(move || disk::create_overlay_at(&backing, &target, Some(size)))
        .await
        .map_err(|e| VmError::Setup(e.to_string()))?
}

/// Deletes the root disk at `url` from its share (nothing if it is not on one). The base
/// stays: other VMs of the image may use it.
pub async fn remove(url: &str) -> Result<(), VmError> {
    match on_share(url) {
        Some((share, file)) => share.remove(&file).await.map_err(storage_error),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_names() {
        let url = root_disk_url("nfs://198.51.100.1/srv/nfs", "abc").unwrap();
        assert_eq!(url, "nfs://198.51.100.1/srv/nfs/berth-vm-abc-root.qcow2");
        let (share, file) = on_share(&url).unwrap();
        assert_eq!(
            (share.server.as_str(), share.export.as_str()),
            ("198.51.100.1", "/srv/nfs")
        );
        assert_eq!(file, "berth-vm-abc-root.qcow2");
        assert_eq!(
            base_file("sha256:0123456789abcdef0123456789abcdef0123"),
            "berth-base-0123456789abcdef0123456789abcdef.qcow2"
        );
        assert!(root_disk_url("nfs://198.51.100.1", "x")
            .unwrap_err()
            .contains("names no export"));
        assert!(root_disk_url("http://x/y", "x").is_err());
        let refused = root_disk_url("nfs://a,b/srv", "x").unwrap_err();
        assert!(
            refused.contains("server 'a,b'") && refused.ends_with("give nfs://SERVER/EXPORT"),
            "{refused}"
        );
        assert!(on_share("/var/lib/berth/disk.qcow2").is_none());
    }
}
