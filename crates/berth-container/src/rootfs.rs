//! A container's root filesystem: the image's shared, read-only layers under a private
//! writable layer, joined by overlayfs. The writable layer survives stop/start; the mount
//! exists only while the container runs.

use std::fs;
use std::path::{Path, PathBuf};

use berth_model::driver::DriverError;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// Paths of one container's filesystem under its instance directory.
pub struct RootfsPaths {
    pub upper: PathBuf,
    pub work: PathBuf,
    pub mountpoint: PathBuf,
}

impl RootfsPaths {
    pub fn new(instance_dir: &Path) -> Self {
        RootfsPaths {
            upper: instance_dir.join("upper"),
            work: instance_dir.join("work"),
            mountpoint: instance_dir.join("bundle/rootfs"),
        }
    }
}

/// True if `path` is a mount point: its device differs from its parent's. (Cheaper than
/// reading /proc/self/mountinfo, which grows with every mount on the host.)
pub fn is_mounted(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(own), Some(Ok(parent))) = (fs::metadata(path), path.parent().map(fs::metadata)) else {
        return false;
    };
    own.dev() != parent.dev()
}

pub fn mount_overlay(paths: &RootfsPaths, lower_dirs: &[PathBuf]) -> Result<(), DriverError> {
    for dir in [&paths.upper, &paths.work, &paths.mountpoint] {
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
    mount(
        Some("overlay"),
        &paths.mountpoint,
        Some("overlay"),
        MsFlags::empty(),
        Some(options.as_str()),
    )
    .map_err(|e| {
        DriverError::host(
            format!("mounting the overlay rootfs at {}", paths.mountpoint.display()),
            e.into(),
        )
    })
}

/// Unmounts the rootfs if mounted (EINVAL says it was not); lazily if something still
/// holds it.
pub fn unmount(paths: &RootfsPaths) -> Result<(), DriverError> {
    match umount2(&paths.mountpoint, MntFlags::empty()) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EBUSY) => umount2(&paths.mountpoint, MntFlags::MNT_DETACH)
            .map_err(|e| DriverError::host(format!("unmounting {}", paths.mountpoint.display()), e.into())),
        Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(DriverError::host(
            format!("unmounting {}", paths.mountpoint.display()),
            e.into(),
        )),
    }
}
