//! Which firmware boots a disk: SeaBIOS (BIOS) or OVMF (UEFI, from Debian's `ovmf` package),
//! read from the disk's partition table as a physical machine's firmware would find it: a GPT
//! with an EFI System Partition and no BIOS boot partition is a UEFI disk; anything else
//! (MBR, GPT with a BIOS boot partition for GRUB) boots with BIOS.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::VmError;

/// OVMF's code (read-only) and the template of its variable store, copied per VM.
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// GPT partition type GUIDs as stored on disk (mixed-endian).
const EFI_SYSTEM: [u8; 16] = guid(
    0xC12A7328,
    0xF81F,
    0x11D2,
    [0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E, 0xC9, 0x3B],
);
const BIOS_BOOT: [u8; 16] = guid(
    0x21686148,
    0x6449,
    0x6E6F,
    [0x74, 0x4E, 0x65, 0x65, 0x64, 0x45, 0x46, 0x49],
);

const fn guid(a: u32, b: u16, c: u16, d: [u8; 8]) -> [u8; 16] {
    let a = a.to_le_bytes();
    let b = b.to_le_bytes();
    let c = c.to_le_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7],
    ]
}

/// How many bytes of a disk `detect` reads: the protective MBR, the GPT header and 128
/// entries of 128 bytes (512-byte sectors).
pub const HEAD_BYTES: usize = 34 * 512;

/// "uefi" or "bios" for a disk whose first `HEAD_BYTES` are `head`.
pub fn detect(head: &[u8]) -> &'static str {
    let u32_at = |o: usize| head.get(o..o + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let u64_at = |o: usize| {
        head.get(o..o + 8)
            .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
    };
    if head.get(512..520) != Some(b"EFI PART".as_slice()) {
        return "bios";
    }
    let (Some(entries_lba), Some(count), Some(size)) = (u64_at(512 + 72), u32_at(512 + 80), u32_at(512 + 84)) else {
        return "bios";
    };
    if size < 128 || entries_lba == 0 {
        return "bios";
    }
    let mut esp = false;
    for index in 0..count.min(128) as usize {
        let start = entries_lba as usize * 512 + index * size as usize;
        let Some(kind) = head.get(start..start + 16) else {
            break;
        };
        if kind == BIOS_BOOT {
            return "bios";
        }
        esp |= kind == EFI_SYSTEM;
    }
    if esp {
        "uefi"
    } else {
        "bios"
    }
}

/// The first `HEAD_BYTES` of a disk in `format` (raw read directly, others through
/// `qemu-img dd`, with the format named).
pub fn read_head(path: &Path, format: &str, scratch: &Path) -> Result<Vec<u8>, VmError> {
    let failed = |e: std::io::Error| VmError::Disk(format!("reading the partition table of {}: {e}", path.display()));
    let mut head = Vec::new();
    if format == "raw" {
        std::fs::File::open(path)
            .map_err(failed)?
            .take(HEAD_BYTES as u64)
            .read_to_end(&mut head)
            .map_err(failed)?;
        return Ok(head);
    }
    let output = berth_process::command("qemu-img")
        .args(["dd", "-f", format, "-O", "raw", "bs=512", "count=34"])
        .arg(format!("if={}", path.display()))
        .arg(format!("of={}", scratch.display()))
        .output()
        .map_err(failed)?;
    if !output.status.success() {
        return Err(VmError::Disk(format!(
            "reading the partition table of {}: {}",
            path.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    let head = std::fs::read(scratch).map_err(failed);
    let _ = std::fs::remove_file(scratch);
    head
}

/// The VM's own copy of OVMF's variable store (boot entries it writes), made on first start.
pub fn ensure_vars(dir: &Path) -> Result<PathBuf, VmError> {
    let vars = dir.join("OVMF_VARS.fd");
    if !vars.exists() {
        std::fs::copy(OVMF_VARS, &vars).map_err(|e| {
            VmError::Setup(format!(
                "copying {OVMF_VARS}: {e} (UEFI VMs need Debian's ovmf package: scripts/install-deps.sh)"
            ))
        })?;
    }
    Ok(vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpt_with(kind: [u8; 16]) -> Vec<u8> {
        let mut head = vec![0u8; HEAD_BYTES];
        head[512..520].copy_from_slice(b"EFI PART");
        head[512 + 72..512 + 80].copy_from_slice(&2u64.to_le_bytes());
        head[512 + 80..512 + 84].copy_from_slice(&128u32.to_le_bytes());
        head[512 + 84..512 + 88].copy_from_slice(&128u32.to_le_bytes());
        head[1024..1040].copy_from_slice(&kind);
        head
    }

    #[test]
    fn the_partition_table_chooses_the_firmware() {
        assert_eq!(detect(&gpt_with(EFI_SYSTEM)), "uefi");
        assert_eq!(detect(&gpt_with(BIOS_BOOT)), "bios");
        let mut mbr = vec![0u8; HEAD_BYTES];
        mbr[510] = 0x55;
        mbr[511] = 0xaa;
        assert_eq!(detect(&mbr), "bios");
        assert_eq!(detect(&[]), "bios");
    }
}
