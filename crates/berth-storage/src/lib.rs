//! Storage that holds a size limit: ext4 filesystems in sparse image files, attached through
//! loop devices. A container's writable layer of `--disk` size and its instance-store disks
//! are such images; thin-provisioned, they cost nothing on the host until written.

use std::fs;
use std::path::Path;
use std::process::Command;

use nix::mount::{umount2, MntFlags};

pub mod discard;
pub mod nfs;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum StorageError {
    #[error("{context}: {message}")]
    Failed { context: String, message: String },
}

fn failed(context: impl Into<String>, message: impl ToString) -> StorageError {
    StorageError::Failed {
        context: context.into(),
        message: message.to_string(),
    }
}

fn run(command: &mut Command, context: &str) -> Result<(), StorageError> {
    let output = command.output().map_err(|e| failed(context, e))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    Err(failed(context, stderr.trim().lines().last().unwrap_or("failed")))
}

/// Creates a sparse file of `size` bytes holding an empty ext4 filesystem.
pub fn create_ext4_image(path: &Path, size: u64) -> Result<(), StorageError> {
    let context = format!("creating {}", path.display());
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| failed(&context, e))?;
    }
    let file = fs::File::create(path).map_err(|e| failed(&context, e))?;
    file.set_len(size)
        .map_err(|e| failed(&context, format!("cannot size it to {size} bytes: {e}")))?;
    drop(file);
    let made = run(
        berth_process::command("mkfs.ext4")
            .args([
                "-q",
                "-F",
                "-m",
                "0",
                "-E",
                "lazy_itable_init=1,lazy_journal_init=1,nodiscard",
            ])
            .arg(path),
        &context,
    );
    if made.is_err() {
        let _ = fs::remove_file(path);
    }
    made
}

/// The size of the file system holding `path` (what a node offers as instance storage).
pub fn file_system_bytes(path: &Path) -> Result<u64, StorageError> {
    let stat =
        nix::sys::statvfs::statvfs(path).map_err(|e| failed(format!("the file system at {}", path.display()), e))?;
    Ok((stat.blocks() as u64).saturating_mul(stat.fragment_size() as u64))
}

/// Checks that the file system holding `dir` can hold a (sparse) file of `size` bytes, by
/// making one and removing it again; thin images are checked before anything is created.
pub fn check_file_size(dir: &Path, size: u64) -> Result<(), StorageError> {
    let probe = dir.join(format!(".size-probe-{}", std::process::id()));
    let context = format!("the file system at {}", dir.display());
    fs::create_dir_all(dir).map_err(|e| failed(&context, e))?;
    let file = fs::File::create(&probe).map_err(|e| failed(&context, e))?;
    let sized = file.set_len(size);
    drop(file);
    let _ = fs::remove_file(&probe);
    sized.map_err(|e| {
        failed(
            context,
            format!("cannot hold a file of {size} bytes ({e}); choose a smaller size"),
        )
    })
}

/// True if `path` is a mount point (its device differs from its parent's).
pub fn is_mounted(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(own), Some(Ok(parent))) = (fs::metadata(path), path.parent().map(fs::metadata)) else {
        return false;
    };
    own.dev() != parent.dev()
}

/// Mounts a filesystem image through a loop device (released again on unmount).
pub fn mount_image(image: &Path, mountpoint: &Path, read_only: bool) -> Result<(), StorageError> {
    mount_image_with(image, mountpoint, if read_only { "loop,ro" } else { "loop" })
}

/// Mount options for filesystems a guest may have written (volumes: a VM gets the raw
/// disk) or another host shares: their setuid files and device nodes mean nothing here.
pub const DATA_MOUNT_OPTIONS: &str = "nosuid,nodev";

/// Mounts a volume's filesystem image, `nosuid,nodev`: it is data, and whatever a VM's
/// guest wrote to it must not become a setuid binary or a device node on the host.
pub fn mount_volume_image(image: &Path, mountpoint: &Path) -> Result<(), StorageError> {
    mount_image_with(image, mountpoint, &format!("loop,{DATA_MOUNT_OPTIONS}"))
}

fn mount_image_with(image: &Path, mountpoint: &Path, options: &str) -> Result<(), StorageError> {
    let context = format!("mounting {} at {}", image.display(), mountpoint.display());
    fs::create_dir_all(mountpoint).map_err(|e| failed(&context, e))?;
    if is_mounted(mountpoint) {
        return Ok(());
    }
    run(
        berth_process::command("mount")
            .args(["-o", options])
            .arg(image)
            .arg(mountpoint),
        &context,
    )?;
    // Direct I/O skips the second copy of every page in the image file's own page cache:
    // measured here, 1 GiB written with fsync took 0.38 s instead of 0.6-2.9 s. `mount -o
    // loop` cannot ask for it, so it is switched on afterwards. Not over FUSE: a
    // qemu-storage-daemon export took direct writes but lost data written through them.
    if !on_fuse(image) {
        if let Some(device) = loop_device_at(mountpoint) {
            let _ = berth_process::command("losetup")
                .arg("--direct-io=on")
                .arg(device)
                .output();
        }
    }
    Ok(())
}

fn on_fuse(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::FUSE_SUPER_MAGIC)
}

/// The loop device mounted at `mountpoint`, from the mount table.
fn loop_device_at(mountpoint: &Path) -> Option<String> {
    let table = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let wanted = mountpoint.to_str()?;
    table.lines().rev().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let separator = fields.iter().position(|f| *f == "-")?;
        let source = fields.get(separator + 2)?;
        (fields.get(4) == Some(&wanted) && source.starts_with("/dev/loop")).then(|| source.to_string())
    })
}

/// Unmounts if mounted; refuses (EBUSY) rather than detach a filesystem in use, for images
/// whose backing must stay until the last write reached it.
pub fn unmount_now(mountpoint: &Path) -> Result<(), StorageError> {
    match umount2(mountpoint, MntFlags::empty()) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(failed(format!("unmounting {}", mountpoint.display()), e)),
    }
}

/// Unmounts if mounted; lazily if busy.
pub fn unmount(mountpoint: &Path) -> Result<(), StorageError> {
    match umount2(mountpoint, MntFlags::empty()) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(nix::errno::Errno::EBUSY) => umount2(mountpoint, MntFlags::MNT_DETACH)
            .map_err(|e| failed(format!("unmounting {}", mountpoint.display()), e)),
        Err(e) => Err(failed(format!("unmounting {}", mountpoint.display()), e)),
    }
}
