//! The uncompressed kernel inside a bzImage, for PVH boot: QEMU loads an ELF kernel that
//! carries a PVH entry note straight into guest memory and jumps to it, where a bzImage first
//! runs through SeaBIOS, real-mode set-up and its own decompressor. Under TCG those stages
//! took 0.3 s of a 2 s boot (emulated LZ4 decompression of 50 MB).
//!
//! The payload is found from the boot protocol's set-up header (`payload_offset`,
//! `payload_length`, protocol 2.08 and later) and decompressed by the matching crate; a kernel
//! built without `CONFIG_PVH` or compressed some other way is booted as it is.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::assets::GuestKernel;
use crate::le_bytes::{u16_at, u32_at};

/// The ELF kernel for `kernel`, extracted into `cache_dir` once; None when it cannot be booted
/// by PVH (the reason is logged and the bzImage boots as before).
pub fn pvh_kernel(kernel: &GuestKernel, cache_dir: &Path) -> Option<PathBuf> {
    match extract(kernel, cache_dir) {
        Ok(path) => path,
        Err(e) => {
            tracing::warn!(kernel = %kernel.vmlinuz.display(), "booting the compressed kernel: {e}");
            None
        }
    }
}

fn extract(kernel: &GuestKernel, cache_dir: &Path) -> Result<Option<PathBuf>, String> {
    let meta = fs::metadata(&kernel.vmlinuz).map_err(|e| format!("reading {}: {e}", kernel.vmlinuz.display()))?;
    if is_elf(&kernel.vmlinuz) && has_pvh_entry(kernel) {
        // berth's own build (scripts/build-guest-kernel.sh) is installed as the ELF kernel.
        return Ok(Some(kernel.vmlinuz.clone()));
    }
    let key = crate::assets::cache_key("", &kernel.vmlinuz, &meta);
    let path = cache_dir.join(format!("vmlinux-{}-{key}", kernel.version));
    // Extracted only from a kernel that can boot by PVH: a cached file says it can, and the
    // start that finds it reads nothing else.
    if path.exists() {
        return Ok(Some(path));
    }
    static EXTRACTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _extracting = EXTRACTING.lock().unwrap_or_else(|e| e.into_inner());
    if path.exists() {
        return Ok(Some(path));
    }
    if !has_pvh_entry(kernel) {
        return Ok(None);
    }
    let image = fs::read(&kernel.vmlinuz).map_err(|e| format!("reading {}: {e}", kernel.vmlinuz.display()))?;
    let Some(elf) = uncompressed_payload(&image)? else {
        return Ok(None);
    };
    fs::create_dir_all(cache_dir).map_err(|e| format!("creating {}: {e}", cache_dir.display()))?;
    crate::assets::store_cache_file(&path, &elf).map_err(|e| format!("storing {}: {e}", path.display()))?;
    Ok(Some(path))
}

/// Whether the kernel was built with the PVH entry: without it QEMU refuses the ELF. Debian
/// ships the build's config beside the kernel, and so does `scripts/build-guest-kernel.sh`.
fn has_pvh_entry(kernel: &GuestKernel) -> bool {
    let config = kernel.vmlinuz.with_file_name(format!("config-{}", kernel.version));
    fs::read_to_string(config).is_ok_and(|text| text.lines().any(|line| line == "CONFIG_PVH=y"))
}

fn is_elf(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    fs::File::open(path)
        .and_then(|mut file| file.read_exact(&mut magic))
        .is_ok()
        && &magic == b"\x7fELF"
}

/// The ELF kernel a bzImage carries: Ok(None) for a compression berth does not read.
pub fn uncompressed_payload(image: &[u8]) -> Result<Option<Vec<u8>>, String> {
    // Offsets from Documentation/arch/x86/boot.rst.
    if image.get(0x202..0x206) != Some(b"HdrS") {
        return Err("not a bzImage (no HdrS set-up header)".into());
    }
    let protocol = u16_at(image, 0x206).unwrap_or(0);
    if protocol < 0x0208 {
        return Err(format!("boot protocol {protocol:#06x} has no payload fields"));
    }
    let setup_sectors = match image.get(0x1f1).copied().unwrap_or(0) {
        0 => 4,
        n => usize::from(n),
    };
    let protected_mode = (setup_sectors + 1) * 512;
    let offset = u32_at(image, 0x248).ok_or("short set-up header")? as usize;
    let length = u32_at(image, 0x24c).ok_or("short set-up header")? as usize;
    let start = protected_mode
        .checked_add(offset)
        .ok_or("payload offset out of range")?;
    let payload = start
        .checked_add(length)
        .and_then(|end| image.get(start..end))
        .ok_or("the payload lies outside the file")?;
    let elf = match payload {
        [0x02, 0x21, 0x4c, 0x18, ..] => lz4_legacy(&payload[4..])?,
        [0x1f, 0x8b, ..] => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(payload)
                .read_to_end(&mut out)
                .map_err(|e| format!("gzip payload: {e}"))?;
            out
        }
        [0x28, 0xb5, 0x2f, 0xfd, ..] => {
            let mut out = Vec::new();
            // The build appends the uncompressed size after the frame: one frame only.
            zstd::stream::read::Decoder::new(payload)
                .map_err(|e| format!("zstd payload: {e}"))?
                .single_frame()
                .read_to_end(&mut out)
                .map_err(|e| format!("zstd payload: {e}"))?;
            out
        }
        _ => return Ok(None),
    };
    if !elf.starts_with(b"\x7fELF") {
        return Err("the decompressed payload is not an ELF file".into());
    }
    Ok(Some(elf))
}

/// LZ4's legacy frame as `lz4 -l` writes it (what the kernel's build uses): blocks of at most
/// 8 MiB, each after its compressed length; the build appends the total size after the last.
fn lz4_legacy(mut data: &[u8]) -> Result<Vec<u8>, String> {
    const BLOCK: usize = 8 << 20;
    let mut out = Vec::new();
    let mut buffer = vec![0u8; BLOCK];
    while data.len() >= 4 {
        let length = u32_at(data, 0).unwrap_or(0) as usize;
        let Some(block) = data.get(4..4 + length) else {
            // The end of the frame is the appended size, and nothing else: a short or damaged
            // payload must not become a short kernel in the cache.
            if data.len() == 4 && length == out.len() {
                return Ok(out);
            }
            return Err(format!(
                "lz4 payload: {} bytes after block data, which is not the size of the {} bytes decompressed",
                data.len(),
                out.len()
            ));
        };
        let n = lz4_flex::block::decompress_into(block, &mut buffer).map_err(|e| format!("lz4 payload: {e}"))?;
        out.extend_from_slice(&buffer[..n]);
        data = &data[4 + length..];
    }
    Err("lz4 payload: it ends without the appended size".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bzImage-shaped file around `payload`: set-up sectors, header magic, protocol, fields.
    fn bz_image(payload: &[u8]) -> Vec<u8> {
        let mut image = vec![0u8; 5 * 512];
        image[0x1f1] = 4;
        image[0x202..0x206].copy_from_slice(b"HdrS");
        image[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        image[0x248..0x24c].copy_from_slice(&16u32.to_le_bytes());
        image[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        image.extend_from_slice(&[0u8; 16]);
        image.extend_from_slice(payload);
        image.extend_from_slice(b"trailing set-up data");
        image
    }

    fn elf_like() -> Vec<u8> {
        let mut elf = b"\x7fELF".to_vec();
        elf.extend((0..100_000u32).flat_map(|i| (i % 251).to_le_bytes()));
        elf
    }

    /// `lz4 -l` output as the kernel's build makes it: magic, blocks, the size appended.
    fn lz4_payload(elf: &[u8]) -> Vec<u8> {
        let mut payload = vec![0x02, 0x21, 0x4c, 0x18];
        for chunk in elf.chunks(150_000) {
            let block = lz4_flex::block::compress(chunk);
            payload.extend_from_slice(&(block.len() as u32).to_le_bytes());
            payload.extend_from_slice(&block);
        }
        payload.extend_from_slice(&(elf.len() as u32).to_le_bytes());
        payload
    }

    #[test]
    fn reads_an_lz4_legacy_payload_with_its_appended_size() {
        let elf = elf_like();
        let payload = lz4_payload(&elf);
        assert_eq!(uncompressed_payload(&bz_image(&payload)).unwrap(), Some(elf));
    }

    #[test]
    fn refuses_a_cut_lz4_payload() {
        let elf = elf_like();
        let payload = lz4_payload(&elf);
        // The last block cut short: what remains is not the appended size.
        let cut = &payload[..payload.len() - 100];
        assert!(uncompressed_payload(&bz_image(cut)).is_err());
        // A wrong appended size.
        let mut wrong = payload.clone();
        let at = wrong.len() - 4;
        wrong[at..].copy_from_slice(&1u32.to_le_bytes());
        assert!(uncompressed_payload(&bz_image(&wrong)).is_err());
    }

    #[test]
    fn reads_a_gzip_payload_and_skips_unknown_ones() {
        use std::io::Write;
        let elf = elf_like();
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(&elf).unwrap();
        let payload = encoder.finish().unwrap();
        assert_eq!(uncompressed_payload(&bz_image(&payload)).unwrap(), Some(elf));
        // xz: not read, the bzImage boots as it is.
        assert_eq!(
            uncompressed_payload(&bz_image(&[0xfd, b'7', b'z', b'X', b'Z', 0])).unwrap(),
            None
        );
    }

    #[test]
    fn refuses_what_is_not_a_bzimage_or_points_outside_it() {
        assert!(uncompressed_payload(b"\x7fELF not a bzImage").is_err());
        let mut image = bz_image(&[0x1f, 0x8b]);
        image[0x24c..0x250].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(uncompressed_payload(&image).unwrap_err().contains("outside"));
    }
}
