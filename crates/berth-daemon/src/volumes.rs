//! Volumes, kept in the state store. Drivers:
//! - `local`: a thin ext4 image under the state directory; snapshots are sparse copies.
//! - `nfs` (mode `image`, the default): a qcow2 image holding ext4 on an NFS share; VMs open
//!   it with QEMU's NFS client, containers through a qemu-storage-daemon FUSE export on a loop
//!   device; snapshots are qcow2 internal snapshots.
//! - `nfs` (mode `mount`): the share's directory mounted by the kernel; containers only.
//!
//! Containers get a volume's filesystem mounted once on the host and bound in; VMs get the
//! image as a disk (the guest agent mounts it where asked).

use std::path::{Path, PathBuf};

use std::collections::BTreeMap;

use berth_model::volume::{NfsLocation, NfsMode, Volume, VolumeMount, VolumeSnapshot};
use berth_model::ByteSize;
use berth_storage::nfs::{FuseExport, NfsShare};
use berth_store::{Store, StoreError};
use berth_vm::snapshot::SnapshotAction;
use chrono::Utc;

use crate::error::{EngineError, EngineResult};

/// Size of a volume created without one (thin: nothing is used until written).
pub const DEFAULT_VOLUME_BYTES: u64 = 10 << 30;

pub struct Volumes {
    root: PathBuf,
    /// This node's own: `local` volumes, whose data is on this node's disk.
    store: Store,
    /// The cluster's (the same store on one host): `nfs` volumes, whose data any node
    /// reaches, so every node knows them.
    shared: Store,
    /// Creations one at a time: two of one name must not both write the share's file.
    creating: tokio::sync::Mutex<()>,
}

fn storage_error(e: berth_storage::StorageError) -> EngineError {
    EngineError::internal(e.to_string())
}

fn validate_name(what: &str, name: &str) -> EngineResult<()> {
    berth_model::instance::validate_object_name(what, name).map_err(|m| EngineError::invalid("name", m))
}

/// Copies a sparse file, keeping its holes.
fn sparse_copy(from: &Path, to: &Path) -> EngineResult<()> {
    let output = berth_process::command("cp")
        .args(["--sparse=always", "--reflink=auto"])
        .arg(from)
        .arg(to)
        .output()
        .map_err(|e| EngineError::internal(format!("copying {}: {e}", from.display())))?;
    if !output.status.success() {
        return Err(EngineError::internal(format!(
            "copying {}: {}",
            from.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}

/// A local volume's ext4 image, in its directory.
pub const IMAGE_FILE: &str = "volume.img";

impl Volumes {
    pub fn new(root: PathBuf, store: Store, shared: Store) -> Volumes {
        Volumes {
            root,
            store,
            shared,
            creating: tokio::sync::Mutex::new(()),
        }
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// The directory holding local volume `name`'s image, `IMAGE_FILE` (what a move sends).
    pub fn image_dir(&self, name: &str) -> PathBuf {
        self.dir(name)
    }

    /// Makes room for local volume `name` arriving from another node: its directory, to
    /// unpack its image into. Refused when this node has a volume of that name.
    pub async fn prepare_receive(&self, name: &str) -> EngineResult<PathBuf> {
        validate_name("volume", name)?;
        let _one_at_a_time = self.creating.lock().await;
        if self.get(name).await.is_ok() {
            return Err(EngineError::conflict(format!(
                "the target node already has a volume {name}; remove or rename one of the two first"
            )));
        }
        let dir = self.dir(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| EngineError::internal(format!("creating {}: {e}", dir.display())))?;
        Ok(dir)
    }

    /// Records local volume `name` whose image arrived in `prepare_receive`'s directory; its
    /// size is the image's. The directory goes when the image is not there.
    pub async fn finish_receive(&self, name: &str) -> EngineResult<Volume> {
        let dir = self.dir(name);
        let image = dir.join(IMAGE_FILE);
        let size = match std::fs::metadata(&image) {
            Ok(meta) if meta.is_file() => meta.len(),
            _ => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(EngineError::invalid(
                    "volume",
                    format!("volume {name} arrived without its image"),
                ));
            }
        };
        let volume = Volume {
            name: name.to_string(),
            driver: "local".into(),
            size_bytes: size,
            path: image.display().to_string(),
            nfs: None,
            created_at: Utc::now(),
            snapshots: Vec::new(),
        };
        if let Err(e) = self.store.put_volume(&volume).await {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e.into());
        }
        Ok(volume)
    }

    /// The host directory where containers find the volume's files.
    pub fn mountpoint(&self, name: &str) -> PathBuf {
        self.dir(name).join("mnt")
    }

    /// The store that keeps `volume`'s record.
    fn store_of(&self, volume: &Volume) -> &Store {
        match volume.nfs {
            Some(_) => &self.shared,
            None => &self.store,
        }
    }

    pub async fn get(&self, name: &str) -> EngineResult<Volume> {
        let found = match self.store.get_volume(name).await {
            Err(StoreError::NotFound { .. }) => self.shared.get_volume(name).await,
            found => found,
        };
        found.map_err(|e| match e {
            StoreError::NotFound { .. } => {
                EngineError::not_found(format!("no such volume: {name}; `berth volume ls` lists them"))
            }
            other => other.into(),
        })
    }

    /// This node's volumes and the cluster's NFS volumes.
    pub async fn list(&self) -> EngineResult<Vec<Volume>> {
        let mut volumes = self.store.list_volumes().await?;
        for volume in self.shared.list_volumes().await? {
            if volume.nfs.is_some() && !volumes.iter().any(|v| v.name == volume.name) {
                volumes.push(volume);
            }
        }
        volumes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(volumes)
    }

    /// The volumes whose data is on this node's disk (what pins instances to it).
    pub async fn list_local(&self) -> EngineResult<Vec<Volume>> {
        Ok(self
            .store
            .list_volumes()
            .await?
            .into_iter()
            .filter(|v| v.nfs.is_none())
            .collect())
    }

    pub async fn create(
        &self,
        name: &str,
        size: Option<u64>,
        driver: Option<&str>,
        options: &BTreeMap<String, String>,
    ) -> EngineResult<Volume> {
        validate_name("volume", name)?;
        let driver = driver.unwrap_or("local");
        let nfs = match driver {
            "local" => {
                if let Some(key) = options.keys().next() {
                    return Err(EngineError::invalid(
                        "options",
                        format!("--opt {key}: the local driver takes no options"),
                    ));
                }
                None
            }
            "nfs" => Some(nfs_location(name, options)?),
            other => {
                return Err(EngineError::invalid(
                    "driver",
                    format!("unknown volume driver '{other}'; this daemon offers 'local' and 'nfs'"),
                ))
            }
        };
        let size = size.unwrap_or(DEFAULT_VOLUME_BYTES);
        if size < 16 << 20 {
            return Err(EngineError::invalid("size", "--size: a volume needs at least 16MiB"));
        }
        if size > crate::engine::MAX_DISK_BYTES {
            return Err(EngineError::invalid(
                "size",
                format!(
                    "--size: a volume holds at most {}",
                    ByteSize(crate::engine::MAX_DISK_BYTES)
                ),
            ));
        }
        if nfs.is_none() {
            berth_storage::check_file_size(&self.root, size)
                .map_err(|e| EngineError::invalid("size", format!("--size {}: {e}", ByteSize(size))))?;
        }
        let _one_at_a_time = self.creating.lock().await;
        if self.get(name).await.is_ok() {
            return Err(EngineError::conflict(format!("volume {name} already exists")));
        }
        let dir = self.dir(name);
        let path = match &nfs {
            None => {
                let image = dir.join(IMAGE_FILE);
                let made = blocking({
                    let image = image.clone();
                    move || berth_storage::create_ext4_image(&image, size)
                })
                .await?;
                if let Err(e) = made {
                    let _ = std::fs::remove_dir_all(&dir);
                    return Err(EngineError::invalid(
                        "size",
                        format!("volume {name} of {}: {e}", ByteSize(size)),
                    ));
                }
                image.display().to_string()
            }
            Some(location) => {
                let share = share_of(location)?;
                std::fs::create_dir_all(&dir)
                    .map_err(|e| EngineError::internal(format!("creating {}: {e}", dir.display())))?;
                let made = match location.mode {
                    NfsMode::Mount if berth_storage::nfs::kernel_client_available() => Ok(()),
                    NfsMode::Mount => Err(nfs_error(name, KERNEL_MODE_UNAVAILABLE)),
                    NfsMode::Image => {
                        let (target, file, scratch) = (share.clone(), location.file.clone(), dir.join("scratch.img"));
                        match blocking(move || create_on_share(&target, &file, size, &scratch)).await? {
                            Ok(()) => Ok(()),
                            Err(ShareFailure::Refused(e)) => Err(nfs_error(name, e)),
                            Err(ShareFailure::Written(e)) => {
                                // A half-written image would block the name on the share.
                                let _ = share.remove(&location.file).await;
                                Err(nfs_error(name, e))
                            }
                        }
                    }
                };
                if let Err(e) = made {
                    let _ = std::fs::remove_dir_all(&dir);
                    return Err(e);
                }
                match location.mode {
                    NfsMode::Image => share.url(&location.file),
                    NfsMode::Mount => format!("{}:{}", share.server, share.export),
                }
            }
        };
        let volume = Volume {
            name: name.to_string(),
            driver: driver.to_string(),
            size_bytes: size,
            path,
            nfs,
            created_at: Utc::now(),
            snapshots: Vec::new(),
        };
        if let Err(e) = self.store_of(&volume).put_volume(&volume).await {
            if let Some(location) = volume.nfs.as_ref().filter(|l| l.mode == NfsMode::Image) {
                if let Ok(share) = share_of(location) {
                    let _ = share.remove(&location.file).await;
                }
            }
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e.into());
        }
        Ok(volume)
    }

    /// Removes a volume no instance refers to; `force` forgets an nfs volume whose image the
    /// share will not delete.
    pub async fn remove(&self, name: &str, users: &[String], force: bool) -> EngineResult<()> {
        let volume = self.get(name).await?;
        if let Some(user) = users.first() {
            return Err(EngineError::conflict(format!(
                "volume {name} is used by instance {user}; remove the instance first"
            )));
        }
        self.unmount(&volume).await?;
        if let Some(location) = volume.nfs.as_ref().filter(|l| l.mode == NfsMode::Image) {
            if let Err(e) = share_of(location)?.remove(&location.file).await {
                if !force {
                    return Err(share_unavailable(
                        name,
                        format!("{e}; `berth volume rm --force {name}` forgets it and leaves the file"),
                    ));
                }
                tracing::warn!(volume = name, error = %e, "forgetting the volume; its image stays on the share");
            }
        }
        let dir = self.dir(name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .map_err(|e| EngineError::internal(format!("removing {}: {e}", dir.display())))?;
        }
        self.store_of(&volume).delete_volume(name).await?;
        Ok(())
    }

    /// How an instance sees the volume: its image and format for VMs, its host directory for
    /// containers.
    pub fn attach_to(&self, volume: &Volume, mount: &mut VolumeMount) {
        mount.source = volume.path.clone();
        mount.format = if volume.nfs.is_some() { "qcow2" } else { "raw" }.to_string();
        mount.host_path = self.mountpoint(&volume.name).display().to_string();
    }

    /// Mounts a volume's filesystem on the host for containers (once, shared by them all).
    pub async fn mount(&self, volume: &Volume) -> EngineResult<()> {
        let mountpoint = self.mountpoint(&volume.name);
        let name = volume.name.clone();
        match volume.nfs.clone() {
            None => {
                let image = PathBuf::from(&volume.path);
                blocking(move || berth_storage::mount_volume_image(&image, &mountpoint))
                    .await?
                    .map_err(storage_error)
            }
            Some(location) => {
                let share = share_of(&location)?;
                let export = FuseExport::in_dir(&self.dir(&volume.name));
                blocking(move || match location.mode {
                    NfsMode::Mount => berth_storage::nfs::kernel_mount(&share, &mountpoint),
                    NfsMode::Image => {
                        let mounted = berth_storage::is_mounted(&mountpoint);
                        if mounted && export.is_running() {
                            return Ok(());
                        }
                        if mounted {
                            // Its storage daemon is gone: the filesystem left has no backing.
                            berth_storage::unmount(&mountpoint)?;
                        }
                        export.start(&share, &location.file)?;
                        let made = berth_storage::mount_volume_image(&export.file, &mountpoint);
                        if made.is_err() {
                            let _ = export.stop();
                        }
                        made
                    }
                })
                .await?
                .map_err(|e| share_unavailable(&name, e))
            }
        }
    }

    /// Takes the volume off the host (no-op when it is not mounted).
    pub async fn unmount(&self, volume: &Volume) -> EngineResult<()> {
        let mountpoint = self.mountpoint(&volume.name);
        let export = volume
            .nfs
            .as_ref()
            .filter(|l| l.mode == NfsMode::Image)
            .map(|_| FuseExport::in_dir(&self.dir(&volume.name)));
        blocking(move || match export {
            None => berth_storage::unmount(&mountpoint),
            // Not lazily: the storage daemon may stop only after the last write reached it.
            Some(export) => {
                berth_storage::unmount_now(&mountpoint)?;
                export.stop()
            }
        })
        .await?
        .map_err(storage_error)
    }

    fn snapshot_path(&self, volume: &str, snapshot: &str) -> PathBuf {
        self.dir(volume).join("snapshots").join(format!("{snapshot}.img"))
    }

    fn refuse_if_running(name: &str, running: &[String], action: &str) -> EngineResult<()> {
        match running.first() {
            Some(user) => Err(EngineError::conflict(format!(
                "volume {name} is in use by running instance {user}; stop it to {action} a consistent copy"
            ))),
            None => Ok(()),
        }
    }

    /// Runs a qcow2 internal-snapshot action on an `nfs` image volume.
    async fn qcow2_snapshot(&self, volume: &Volume, action: SnapshotAction, snapshot: &str) -> EngineResult<()> {
        if volume.nfs.as_ref().is_some_and(|l| l.mode == NfsMode::Mount) {
            return Err(EngineError::invalid(
                "name",
                format!(
                    "volume {} is a directory on an NFS share (mode=mount): snapshot it on the NFS server",
                    volume.name
                ),
            ));
        }
        berth_vm::snapshot::qcow2_snapshot(&volume.path, action, snapshot)
            .await
            .map_err(|e| share_unavailable(&volume.name, e))
    }

    pub async fn snapshot(&self, name: &str, snapshot: &str, running: &[String]) -> EngineResult<Volume> {
        validate_name("snapshot", snapshot)?;
        let mut volume = self.get(name).await?;
        if volume.snapshots.iter().any(|s| s.name == snapshot) {
            return Err(EngineError::conflict(format!(
                "volume {name} already has a snapshot {snapshot}"
            )));
        }
        Self::refuse_if_running(name, running, "take")?;
        let path = if volume.nfs.is_some() {
            self.qcow2_snapshot(&volume, SnapshotAction::Create, snapshot).await?;
            format!("{}#{snapshot}", volume.path)
        } else {
            let path = self.snapshot_path(name, snapshot);
            std::fs::create_dir_all(path.parent().unwrap_or(&self.root))
                .map_err(|e| EngineError::internal(format!("creating the snapshot folder: {e}")))?;
            sparse_copy(Path::new(&volume.path), &path)?;
            path.display().to_string()
        };
        volume.snapshots.push(VolumeSnapshot {
            name: snapshot.to_string(),
            created_at: Utc::now(),
            path,
        });
        self.store_of(&volume).put_volume(&volume).await?;
        Ok(volume)
    }

    pub async fn restore(&self, name: &str, snapshot: &str, running: &[String]) -> EngineResult<Volume> {
        let volume = self.get(name).await?;
        let found = volume
            .snapshots
            .iter()
            .find(|s| s.name == snapshot)
            .ok_or_else(|| EngineError::not_found(format!("volume {name} has no snapshot {snapshot}")))?;
        Self::refuse_if_running(name, running, "restore")?;
        self.unmount(&volume).await?;
        if volume.nfs.is_some() {
            self.qcow2_snapshot(&volume, SnapshotAction::Apply, snapshot).await?;
        } else {
            let temp = Path::new(&volume.path).with_extension("restoring");
            sparse_copy(Path::new(&found.path), &temp)?;
            std::fs::rename(&temp, &volume.path)
                .map_err(|e| EngineError::internal(format!("restoring {name}: {e}")))?;
        }
        Ok(volume)
    }

    pub async fn delete_snapshot(&self, name: &str, snapshot: &str, running: &[String]) -> EngineResult<Volume> {
        let mut volume = self.get(name).await?;
        if !volume.snapshots.iter().any(|s| s.name == snapshot) {
            return Err(EngineError::not_found(format!(
                "volume {name} has no snapshot {snapshot}"
            )));
        }
        // A qcow2 snapshot is deleted by rewriting the image's tables, which an instance
        // writing the image at the same time would corrupt.
        if volume.nfs.is_some() {
            Self::refuse_if_running(name, running, "delete a snapshot of")?;
        }
        if volume.nfs.is_some() {
            self.qcow2_snapshot(&volume, SnapshotAction::Delete, snapshot).await?;
        } else {
            let _ = std::fs::remove_file(self.snapshot_path(name, snapshot));
        }
        volume.snapshots.retain(|s| s.name != snapshot);
        self.store_of(&volume).put_volume(&volume).await?;
        Ok(volume)
    }
}

async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> EngineResult<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| EngineError::internal(e.to_string()))
}

/// A request the share cannot take (options, names): the user's to fix.
fn nfs_error(name: &str, e: impl std::fmt::Display) -> EngineError {
    EngineError::invalid("options", format!("nfs volume {name}: {e}"))
}

/// The share or its storage daemon failing at run time: not the request's fault.
fn share_unavailable(name: &str, e: impl std::fmt::Display) -> EngineError {
    EngineError::new(axum::http::StatusCode::BAD_GATEWAY, format!("nfs volume {name}: {e}"))
}

/// Why an image could not be made on the share: refused before anything was written, or
/// failed after writing began (the partial file must go).
enum ShareFailure {
    Refused(String),
    Written(String),
}

const KERNEL_MODE_UNAVAILABLE: &str = "mode=mount needs the kernel's NFS client, which this host lacks \
     (no 'nfs' in /proc/filesystems); load the nfs module or use --opt mode=image";

fn share_of(location: &NfsLocation) -> EngineResult<NfsShare> {
    NfsShare::new(&location.server, &location.share).map_err(|m| EngineError::invalid("options", m))
}

/// `--opt server=HOST --opt share=/EXPORT [--opt mode=image|mount]`.
fn nfs_location(name: &str, options: &BTreeMap<String, String>) -> EngineResult<NfsLocation> {
    for key in options.keys() {
        if !matches!(key.as_str(), "server" | "share" | "mode") {
            return Err(EngineError::invalid(
                "options",
                format!("--opt {key}: the nfs driver knows server, share and mode"),
            ));
        }
    }
    let required = |key: &str| {
        options.get(key).cloned().ok_or_else(|| {
            EngineError::invalid(
                "options",
                format!("the nfs driver needs --opt {key}=...; for example --opt server=10.0.0.5 --opt share=/srv/nfs"),
            )
        })
    };
    let mode = match options.get("mode").map(String::as_str) {
        None | Some("image") => NfsMode::Image,
        Some("mount") => NfsMode::Mount,
        Some(other) => {
            return Err(EngineError::invalid(
                "options",
                format!("--opt mode={other}: use image (a qcow2 file on the share) or mount (kernel NFS)"),
            ))
        }
    };
    let share =
        NfsShare::new(&required("server")?, &required("share")?).map_err(|m| EngineError::invalid("options", m))?;
    Ok(NfsLocation {
        server: share.server,
        share: share.export,
        mode,
        file: format!("berth-volume-{name}.qcow2"),
    })
}

/// Creates the volume's image on the share unless a file of that name is there already
/// (another host's volume, say), which it must never overwrite.
fn create_on_share(share: &NfsShare, file: &str, size: u64, scratch: &Path) -> Result<(), ShareFailure> {
    let probe = berth_process::command("qemu-img")
        .args(["info", "--output=json"])
        .arg(share.url(file))
        .output()
        .map_err(|e| ShareFailure::Refused(format!("running qemu-img: {e}")))?;
    if probe.status.success() {
        return Err(ShareFailure::Refused(format!(
            "{} already holds {file}; remove it there or pick another volume name",
            share.url("")
        )));
    }
    let stderr = String::from_utf8_lossy(&probe.stderr);
    if !stderr.contains("NOENT") && !stderr.contains("No such file") {
        return Err(ShareFailure::Refused(format!(
            "cannot reach {}: {}",
            share.url(""),
            stderr.trim().lines().last().unwrap_or("qemu-img info failed")
        )));
    }
    berth_storage::nfs::create_ext4_qcow2(share, file, size, scratch).map_err(|e| ShareFailure::Written(e.to_string()))
}
