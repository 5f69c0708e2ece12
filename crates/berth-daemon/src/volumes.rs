//! Volumes: thin ext4 images under the state directory, kept in the state store. Containers
//! get a volume's filesystem mounted on the host and bound in; VMs get the image as a disk
//! (the guest agent mounts it where asked). Snapshots are sparse copies of the image.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_model::volume::{Volume, VolumeSnapshot};
use berth_model::ByteSize;
use berth_store::{StateStore, StoreError};
use chrono::Utc;

use crate::error::{EngineError, EngineResult};

/// Size of a volume created without one (thin: nothing is used until written).
pub const DEFAULT_VOLUME_BYTES: u64 = 10 << 30;

pub struct Volumes {
    root: PathBuf,
    store: Arc<dyn StateStore>,
}

fn storage_error(e: berth_storage::StorageError) -> EngineError {
    EngineError::internal(e.to_string())
}

fn validate_volume_name(name: &str) -> EngineResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(EngineError::invalid(
            "name",
            format!("invalid volume name '{name}': use letters, digits, '_', '.' and '-' (at most 64)"),
        ))
    }
}

/// Copies a sparse file, keeping its holes.
fn sparse_copy(from: &Path, to: &Path) -> EngineResult<()> {
    let output = std::process::Command::new("cp")
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

impl Volumes {
    pub fn new(root: PathBuf, store: Arc<dyn StateStore>) -> Volumes {
        Volumes { root, store }
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    pub async fn get(&self, name: &str) -> EngineResult<Volume> {
        self.store.get_volume(name).await.map_err(|e| match e {
            StoreError::NotFound { .. } => {
                EngineError::not_found(format!("no such volume: {name}; `berth volume ls` lists them"))
            }
            other => other.into(),
        })
    }

    pub async fn list(&self) -> EngineResult<Vec<Volume>> {
        Ok(self.store.list_volumes().await?)
    }

    pub async fn create(&self, name: &str, size: Option<u64>, driver: Option<&str>) -> EngineResult<Volume> {
        validate_volume_name(name)?;
        match driver.unwrap_or("local") {
            "local" => {}
            other => {
                return Err(EngineError::invalid(
                    "driver",
                    format!("unknown volume driver '{other}'; this daemon offers 'local'"),
                ))
            }
        }
        let size = size.unwrap_or(DEFAULT_VOLUME_BYTES);
        if size < 16 << 20 {
            return Err(EngineError::invalid("size", "--size: a volume needs at least 16MiB"));
        }
        if self.store.get_volume(name).await.is_ok() {
            return Err(EngineError::conflict(format!("volume {name} already exists")));
        }
        let dir = self.dir(name);
        let image = dir.join("volume.img");
        let made = tokio::task::spawn_blocking({
            let image = image.clone();
            move || berth_storage::create_ext4_image(&image, size)
        })
        .await
        .map_err(|e| EngineError::internal(e.to_string()))?;
        if let Err(e) = made {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(EngineError::invalid(
                "size",
                format!("volume {name} of {}: {e}", ByteSize(size)),
            ));
        }
        let volume = Volume {
            name: name.to_string(),
            driver: "local".into(),
            size_bytes: size,
            path: image.display().to_string(),
            created_at: Utc::now(),
            snapshots: Vec::new(),
        };
        self.store.put_volume(&volume).await?;
        Ok(volume)
    }

    /// Removes a volume no instance refers to.
    pub async fn remove(&self, name: &str, users: &[String]) -> EngineResult<()> {
        let volume = self.get(name).await?;
        if let Some(user) = users.first() {
            return Err(EngineError::conflict(format!(
                "volume {name} is used by instance {user}; remove the instance first"
            )));
        }
        berth_storage::unmount(&berth_storage::volume_mountpoint(Path::new(&volume.path))).map_err(storage_error)?;
        let dir = self.dir(name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .map_err(|e| EngineError::internal(format!("removing {}: {e}", dir.display())))?;
        }
        self.store.delete_volume(name).await?;
        Ok(())
    }

    /// Mounts a volume's filesystem on the host for containers (once, shared by them all).
    pub fn mount(&self, image: &Path) -> EngineResult<()> {
        berth_storage::mount_image(image, &berth_storage::volume_mountpoint(image), false).map_err(storage_error)
    }

    pub fn unmount(&self, image: &Path) -> EngineResult<()> {
        berth_storage::unmount(&berth_storage::volume_mountpoint(image)).map_err(storage_error)
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

    pub async fn snapshot(&self, name: &str, snapshot: &str, running: &[String]) -> EngineResult<Volume> {
        validate_volume_name(snapshot).map_err(|mut e| {
            e.message = e.message.replace("volume name", "snapshot name");
            e
        })?;
        let mut volume = self.get(name).await?;
        if volume.snapshots.iter().any(|s| s.name == snapshot) {
            return Err(EngineError::conflict(format!(
                "volume {name} already has a snapshot {snapshot}"
            )));
        }
        Self::refuse_if_running(name, running, "take")?;
        let path = self.snapshot_path(name, snapshot);
        std::fs::create_dir_all(path.parent().unwrap_or(&self.root))
            .map_err(|e| EngineError::internal(format!("creating the snapshot folder: {e}")))?;
        sparse_copy(Path::new(&volume.path), &path)?;
        volume.snapshots.push(VolumeSnapshot {
            name: snapshot.to_string(),
            created_at: Utc::now(),
            path: path.display().to_string(),
        });
        self.store.put_volume(&volume).await?;
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
        self.unmount(Path::new(&volume.path))?;
        let temp = Path::new(&volume.path).with_extension("restoring");
        sparse_copy(Path::new(&found.path), &temp)?;
        std::fs::rename(&temp, &volume.path).map_err(|e| EngineError::internal(format!("restoring {name}: {e}")))?;
        Ok(volume)
    }

    pub async fn delete_snapshot(&self, name: &str, snapshot: &str) -> EngineResult<Volume> {
        let mut volume = self.get(name).await?;
        let before = volume.snapshots.len();
        volume.snapshots.retain(|s| s.name != snapshot);
        if volume.snapshots.len() == before {
            return Err(EngineError::not_found(format!(
                "volume {name} has no snapshot {snapshot}"
            )));
        }
        let _ = std::fs::remove_file(self.snapshot_path(name, snapshot));
        self.store.put_volume(&volume).await?;
        Ok(volume)
    }
}
