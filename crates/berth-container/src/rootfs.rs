//! A container's root filesystem: the image's shared, read-only layers under a private
//! writable layer, joined by overlayfs. The writable layer survives stop/start; the mount
//! exists only while the container runs.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use berth_model::driver::DriverError;
use nix::mount::{mount, MsFlags};

/// Paths of one container's filesystem under its instance directory. With a size limit
/// the writable layer lives on its own filesystem image (`layer.img`, mounted at `layer/`).
pub struct RootfsPaths {
    pub upper: PathBuf,
    pub work: PathBuf,
    pub mountpoint: PathBuf,
    pub layer_image: PathBuf,
    pub layer_mount: PathBuf,
}

impl RootfsPaths {
    pub fn new(instance_dir: &Path) -> Self {
        let layer_mount = instance_dir.join("layer");
        let (upper, work) = if instance_dir.join("layer.img").exists() {
            (layer_mount.join("upper"), layer_mount.join("work"))
        } else {
            (instance_dir.join("upper"), instance_dir.join("work"))
        };
        RootfsPaths {
            upper,
            work,
            mountpoint: instance_dir.join("bundle/rootfs"),
            layer_image: instance_dir.join("layer.img"),
            layer_mount,
        }
    }
}

/// Gives the writable layer a filesystem of `size` bytes, created on first use.
pub fn mount_sized_layer(instance_dir: &Path, size: u64) -> Result<(), DriverError> {
    let image = instance_dir.join("layer.img");
    if !image.exists() {
        berth_storage::create_ext4_image(&image, size).map_err(|e| DriverError::Other(e.to_string()))?;
    }
    berth_storage::mount_image(&image, &instance_dir.join("layer"), false)
        .map_err(|e| DriverError::Other(e.to_string()))
}

pub use berth_storage::is_mounted;

/// What becomes of a container's writable layer after it ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpperLayer {
    /// Kept across stop/start and host restarts: the kernel syncs it like any filesystem.
    Kept,
    /// Removed with the container at its exit (`--rm`): mounted with overlayfs' `volatile`
    /// option (Linux 5.10+, as podman does for `--rm`), so neither the container's fsyncs
    /// nor the unmount wait for the host filesystem to sync what is about to be deleted.
    /// The unmount was 1 ms of every `run --rm`, on the path of its exit code.
    Throwaway,
}

pub fn mount_overlay(paths: &RootfsPaths, lower_dirs: &[PathBuf], upper_layer: UpperLayer) -> Result<(), DriverError> {
    if !paths.upper.exists() {
        fs::create_dir_all(&paths.upper)
            .map_err(|e| DriverError::host(format!("creating {}", paths.upper.display()), e))?;
        // The upper directory's root is the container's `/`: 0755 as in any image, so a
        // non-root user in the container can use it. Only once: the container may change it.
        fs::set_permissions(&paths.upper, fs::Permissions::from_mode(0o755))
            .map_err(|e| DriverError::host(format!("setting the mode of {}", paths.upper.display()), e))?;
    }
    for dir in [&paths.work, &paths.mountpoint] {
        fs::create_dir_all(dir).map_err(|e| DriverError::host(format!("creating {}", dir.display()), e))?;
    }
    if is_mounted(&paths.mountpoint) {
        return Ok(());
    }
    if lower_dirs.is_empty() {
        return Err(DriverError::invalid("image", "the image has no layers"));
    }
    let lower = lower_dirs
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(":");
    let options = format!(
        "lowerdir={lower},upperdir={},workdir={}",
        paths.upper.display(),
        paths.work.display()
    );
    // The kernel takes mount options in one page.
    if options.len() >= 4096 {
        return Err(DriverError::Other(format!(
            "the image has too many layers ({}) for one overlay mount",
            lower_dirs.len()
        )));
    }
    let mount_with = |options: &str| {
        mount(
            Some("overlay"),
            &paths.mountpoint,
            Some("overlay"),
            MsFlags::empty(),
            Some(options),
        )
    };
    let mounted = match upper_layer {
        // A kernel without the option (before 5.10) refuses it: mounted as a kept layer.
        UpperLayer::Throwaway => match mount_with(&format!("{options},volatile")) {
            Err(nix::errno::Errno::EINVAL) => mount_with(&options),
            other => other,
        },
        UpperLayer::Kept => mount_with(&options),
    };
    mounted.map_err(|e| {
        DriverError::host(
            format!("mounting the overlay rootfs at {}", paths.mountpoint.display()),
            e.into(),
        )
    })
}

/// Unmounts the rootfs, then the writable layer's own filesystem if it has one.
pub fn unmount(paths: &RootfsPaths) -> Result<(), DriverError> {
    for mountpoint in [&paths.mountpoint, &paths.layer_mount] {
        berth_storage::unmount(mountpoint).map_err(|e| DriverError::Other(e.to_string()))?;
    }
    Ok(())
}
