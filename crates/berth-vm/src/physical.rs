//! Writing a VM's disk back to a physical disk (V2P) or a raw image file, so that a real
//! machine boots it. A block device is the host's to lose: it is refused while it or one of
//! its partitions is mounted, used as swap or held by another device (LVM, RAID), when it is
//! smaller than the VM's disk, and, unless forced, while it holds a partition table.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use crate::VmError;

fn target_error(message: impl Into<String>) -> VmError {
    VmError::Disk(message.into())
}

/// Where the disk goes, as checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawTarget {
    /// A block device of at least the disk's size (qemu-img writes into it as it is).
    Device,
    /// A new (or, forced, replaced) sparse file.
    File,
}

/// The kernel's name of a block device (`sdb`, `loop3`) and its partitions' names.
fn device_and_partitions(rdev: u64) -> (String, Vec<String>) {
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    let sys = std::fs::canonicalize(format!("/sys/dev/block/{major}:{minor}")).unwrap_or_default();
    let name = sys
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let partitions = std::fs::read_dir(&sys)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().join("partition").exists())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    (name, partitions)
}

/// Device numbers ("8:17") of what is mounted, from /proc/self/mountinfo.
fn mounted_devices() -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split_whitespace().nth(2).map(str::to_string))
        .collect()
}

fn device_number(name: &str) -> Option<String> {
    std::fs::read_to_string(format!("/sys/class/block/{name}/dev"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// Whether the first sectors hold an MBR signature or a GPT header.
fn has_partition_table(file: &mut std::fs::File) -> bool {
    let mut head = [0u8; 1024];
    if file.seek(SeekFrom::Start(0)).is_err() || file.read_exact(&mut head).is_err() {
        return false;
    }
    head[510] == 0x55 && head[511] == 0xaa || &head[512..520] == b"EFI PART"
}

/// Checks `to` for a disk of `disk_bytes`; `force` allows replacing a partition table or an
/// existing file.
pub fn check_target(to: &Path, disk_bytes: u64, force: bool) -> Result<RawTarget, VmError> {
    if !to.is_absolute() {
        return Err(target_error(format!("--to {}: give an absolute path", to.display())));
    }
    let metadata = match std::fs::metadata(to) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(RawTarget::File),
        Err(e) => return Err(target_error(format!("--to {}: {e}", to.display()))),
    };
    if metadata.file_type().is_block_device() {
        let (name, partitions) = device_and_partitions(metadata.rdev());
        let mounted = mounted_devices();
        let swaps = std::fs::read_to_string("/proc/swaps").unwrap_or_default();
        for part in std::iter::once(&name).chain(partitions.iter()) {
            if device_number(part).is_some_and(|n| mounted.contains(&n)) {
                return Err(target_error(format!(
                    "--to {}: /dev/{part} is mounted (or the host's own root); unmount it, or choose another disk",
                    to.display()
                )));
            }
            if swaps
                .lines()
                .any(|l| l.split_whitespace().next() == Some(&format!("/dev/{part}")))
            {
                return Err(target_error(format!(
                    "--to {}: /dev/{part} is in use as swap; swapoff it first",
                    to.display()
                )));
            }
            let holders = std::fs::read_dir(format!("/sys/class/block/{part}/holders"))
                .map(|d| d.count())
                .unwrap_or(0);
            if holders > 0 {
                return Err(target_error(format!(
                    "--to {}: /dev/{part} is held by another device (LVM, RAID or device-mapper); release it first",
                    to.display()
                )));
            }
        }
        let mut file = std::fs::File::open(to).map_err(|e| target_error(format!("--to {}: {e}", to.display())))?;
        let size = file
            .seek(SeekFrom::End(0))
            .map_err(|e| target_error(format!("--to {}: {e}", to.display())))?;
        if size < disk_bytes {
            return Err(target_error(format!(
                "--to {}: the device holds {}, the VM's disk is {}; choose a device at least as large",
                to.display(),
                berth_model::ByteSize(size),
                berth_model::ByteSize(disk_bytes)
            )));
        }
        if has_partition_table(&mut file) && !force {
            return Err(target_error(format!(
                "--to {}: the device holds a partition table; add --force to overwrite everything on it",
                to.display()
            )));
        }
        return Ok(RawTarget::Device);
    }
    if metadata.is_file() {
        if !force {
            return Err(target_error(format!(
                "--to {} exists; add --force to replace it, or give a new file name",
                to.display()
            )));
        }
        return Ok(RawTarget::File);
    }
    Err(target_error(format!(
        "--to {} is neither a block device nor a regular file",
        to.display()
    )))
}

/// Writes `disk` (of `format`) to the checked target as raw bytes.
pub fn write_raw(disk: &Path, format: &str, to: &Path, target: &RawTarget) -> Result<(), VmError> {
    let mut command = berth_process::command("qemu-img");
    command.args(["convert", "-f", format, "-O", "raw"]);
    if *target == RawTarget::Device {
        // Into the device as it is (no creation); zero areas are written as zeros.
        command.arg("-n");
    } else {
        let _ = std::fs::remove_file(to);
    }
    let output = command
        .arg(disk)
        .arg(to)
        .output()
        .map_err(|e| target_error(format!("running qemu-img: {e}")))?;
    if !output.status.success() {
        return Err(target_error(format!(
            "writing {}: {}",
            to.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    // Done means on the disk, not in the page cache: the machine it goes into may be
    // switched on as soon as this returns.
    std::fs::OpenOptions::new()
        .write(true)
        .open(to)
        .and_then(|f| f.sync_all())
        .map_err(|e| target_error(format!("flushing {}: {e}", to.display())))
}
