//! Disks through `qemu-img`: conversion to qcow2, copy-on-write overlays on read-only bases,
//! and the ext4 base disk made from a container image's layers. Every call names the format
//! (`-f`): qemu never guesses one (disks from outside are checked in `disk_source` first).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

use crate::VmError;

/// What `qemu-img info` says about a disk.
#[derive(Debug, Clone, Deserialize)]
pub struct DiskInfo {
    pub format: String,
    #[serde(rename = "virtual-size")]
    pub virtual_size: u64,
    #[serde(rename = "backing-filename", default)]
    pub backing: Option<String>,
}

fn run(command: &mut Command, what: &str) -> Result<Vec<u8>, VmError> {
    let output = command
        .output()
        .map_err(|e| VmError::Setup(format!("{what}: cannot run {:?}: {e}", command.get_program())))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(VmError::Disk(format!(
            "{what}: {}",
            stderr.trim().lines().last().unwrap_or("failed")
        )));
    }
    Ok(output.stdout)
}

/// `qemu-img info` of one of berth's own disks, whose format berth knows.
pub fn info(path: &Path, format: &str) -> Result<DiskInfo, VmError> {
    let output = run(
        berth_process::command("qemu-img")
            .args(["info", "--output=json", "-U", "-f", format])
            .arg(path),
        &format!("reading disk {}", path.display()),
    )?;
    serde_json::from_slice(&output).map_err(|e| VmError::Disk(format!("qemu-img info of {}: {e}", path.display())))
}

/// Converts `source`, of the given format, to a standalone qcow2.
pub fn convert_to_qcow2(source: &Path, format: &str, destination: &Path) -> Result<(), VmError> {
    convert_to_qcow2_at(source, format, &destination.display().to_string())
}

/// As `convert_to_qcow2`, to a path or a URL qemu-img opens (`nfs://...`).
pub fn convert_to_qcow2_at(source: &Path, format: &str, destination: &str) -> Result<(), VmError> {
    run(
        berth_process::command("qemu-img")
            .args(["convert", "-f", format, "-O", "qcow2"])
            .arg(source)
            .arg(destination),
        &format!("converting {}", source.display()),
    )
    .map(|_| ())
}

/// A qcow2 overlay of `base`; `size` grows the virtual disk beyond the base's.
pub fn create_overlay(base: &Path, destination: &Path, size: Option<u64>) -> Result<(), VmError> {
    create_overlay_at(&base.display().to_string(), &destination.display().to_string(), size)
}

/// As `create_overlay`, for paths or URLs qemu-img opens (`nfs://...`).
pub fn create_overlay_at(base: &str, destination: &str, size: Option<u64>) -> Result<(), VmError> {
    let mut command = berth_process::command("qemu-img");
    command
        .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
        .arg(base)
        .arg(destination);
    if let Some(size) = size {
        command.arg(size.to_string());
    }
    run(&mut command, &format!("creating disk {destination}")).map(|_| ())
}

/// A blank, thin-provisioned qcow2 disk.
pub fn create_blank(destination: &Path, size: u64) -> Result<(), VmError> {
    run(
        berth_process::command("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(destination)
            .arg(size.to_string()),
        &format!("creating disk {}", destination.display()),
    )
    .map(|_| ())
}

/// Builds a qcow2 disk holding an ext4 filesystem of `size` bytes (sparse) populated from
/// the image's merged layers. `lower_dirs` are the image's layers, top first.
pub fn build_base_from_layers(
    lower_dirs: &[PathBuf],
    destination: &Path,
    size: u64,
    work: &Path,
) -> Result<(), VmError> {
    std::fs::create_dir_all(work).map_err(|e| VmError::Setup(format!("creating {}: {e}", work.display())))?;
    let merged = work.join("merged");
    let raw = work.join("base.raw");
    std::fs::create_dir_all(&merged).map_err(|e| VmError::Setup(format!("creating {}: {e}", merged.display())))?;
    // overlayfs merges two or more lower layers read-only; a single layer is used as is.
    let source = if lower_dirs.len() > 1 {
        let lower = lower_dirs
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        nix::mount::mount(
            Some("overlay"),
            &merged,
            Some("overlay"),
            nix::mount::MsFlags::MS_RDONLY,
            Some(format!("lowerdir={lower}").as_str()),
        )
        .map_err(|e| VmError::Setup(format!("merging the image layers: {e}")))?;
        merged.clone()
    } else {
        lower_dirs
            .first()
            .cloned()
            .ok_or_else(|| VmError::Disk("the image has no layers".into()))?
    };
    let built = (|| {
        let file =
            std::fs::File::create(&raw).map_err(|e| VmError::Setup(format!("creating {}: {e}", raw.display())))?;
        file.set_len(size)
            .map_err(|e| VmError::Setup(format!("sizing {}: {e}", raw.display())))?;
        drop(file);
        run(
            berth_process::command("mkfs.ext4")
                .args([
                    "-q",
                    "-F",
                    "-L",
                    "berth-root",
                    "-E",
                    "lazy_itable_init=1,lazy_journal_init=1",
                    "-d",
                ])
                .arg(&source)
                .arg(&raw),
            "making the root filesystem",
        )?;
        convert_to_qcow2(&raw, "raw", destination)
    })();
    if lower_dirs.len() > 1 {
        let _ = nix::mount::umount2(&merged, nix::mount::MntFlags::MNT_DETACH);
    }
    let _ = std::fs::remove_dir_all(work);
    built
}
