//! Disk files that come from outside (`image import --vm`, the disks of an imported machine):
//! berth reads their format itself and names it to qemu-img (never lets it probe), and every
//! file a disk pulls in — qcow2 backing files and external data files, VMDK extents and
//! parents — must be a regular file inside the imported file's own directory, so a crafted
//! header cannot copy a host file (`/etc/shadow`) into a disk its supplier's guest reads.

use std::fmt;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;

use crate::VmError;

/// The disk formats berth imports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskFormat {
    Qcow2,
    Raw,
    Vmdk,
}

impl DiskFormat {
    /// The name qemu-img's `-f` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Raw => "raw",
            DiskFormat::Vmdk => "vmdk",
        }
    }
}

impl fmt::Display for DiskFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DiskFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.to_ascii_lowercase().as_str() {
            "qcow2" => Ok(DiskFormat::Qcow2),
            "raw" | "img" => Ok(DiskFormat::Raw),
            "vmdk" => Ok(DiskFormat::Vmdk),
            other => Err(format!(
                "'{other}' is not a disk format berth imports (qcow2, raw, vmdk)"
            )),
        }
    }
}

/// A disk file that passed inspection: what to hand to `convert`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSource {
    /// The canonical path (qemu-img resolves relative names against it).
    pub path: PathBuf,
    pub format: DiskFormat,
    pub virtual_size: u64,
    /// A block device (`--allow-device`), not a file.
    pub is_device: bool,
}

/// Backing chains deeper than this are refused (qemu's own limit is far higher, but an
/// imported disk with more than a few layers is unusual and each layer is inspected).
const MAX_CHAIN_DEPTH: usize = 8;
/// qemu reads at most 1 MiB of a VMDK descriptor; anything larger is not one.
const MAX_DESCRIPTOR_BYTES: u64 = 1 << 20;
/// `qemu-img info` reads headers only; a minute is ample even on a slow share.
const INFO_TIMEOUT_SECS: &str = "60";

fn refused(message: impl Into<String>) -> VmError {
    VmError::Import(message.into())
}

/// Checks `path` and everything it references; `declared` is the format the caller knows
/// (a `--format` flag, a libvirt `<driver type>`), else berth reads it from the header.
pub fn inspect(path: &Path, declared: Option<DiskFormat>, allow_device: bool) -> Result<DiskSource, VmError> {
    let path = fs::canonicalize(path).map_err(|e| refused(format!("{}: {e}", path.display())))?;
    let root = path
        .parent()
        .ok_or_else(|| refused(format!("{}: not a disk file", path.display())))?
        .to_path_buf();
    let is_device = check_top_level(&path, allow_device)?;
    let format = match declared {
        Some(format) => format,
        None => sniff(&path)?,
    };
    let virtual_size = inspect_layer(&path, format, &root, 0)?;
    Ok(DiskSource {
        path,
        format,
        virtual_size,
        is_device,
    })
}

/// The imported file itself: a regular file, or a block device when the caller allows it.
/// Returns whether it is a device. FIFOs, character devices, sockets and directories are
/// refused before anything opens them (opening a FIFO blocks; opening some devices acts).
fn check_top_level(path: &Path, allow_device: bool) -> Result<bool, VmError> {
    let metadata = fs::metadata(path).map_err(|e| refused(format!("{}: {e}", path.display())))?;
    let kind = metadata.file_type();
    if kind.is_file() {
        return Ok(false);
    }
    if kind.is_block_device() {
        if allow_device {
            return Ok(true);
        }
        return Err(refused(format!(
            "{} is a block device, not a disk image file; pass --allow-device to import a physical disk",
            path.display()
        )));
    }
    Err(refused(format!(
        "{} is {}, not a disk image file; give the path of a regular file",
        path.display(),
        describe(kind)
    )))
}

fn describe(kind: fs::FileType) -> &'static str {
    if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    }
}

/// Opens a file for reading headers without blocking on a FIFO that replaced it since the
/// check, and confirms it is still what the check saw.
fn open_for_header(path: &Path) -> Result<fs::File, VmError> {
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| refused(format!("{}: {e}", path.display())))?;
    let kind = file
        .metadata()
        .map_err(|e| refused(format!("{}: {e}", path.display())))?
        .file_type();
    if !(kind.is_file() || kind.is_block_device()) {
        return Err(refused(format!(
            "{} is {}, not a disk image file",
            path.display(),
            describe(kind)
        )));
    }
    Ok(file)
}

/// The format from the file's first bytes, as OpenStack's format inspector does: qcow2 and
/// VMDK by their magic, formats berth does not import named, everything else raw.
pub fn sniff(path: &Path) -> Result<DiskFormat, VmError> {
    let mut header = Vec::with_capacity(512);
    open_for_header(path)?
        .take(512)
        .read_to_end(&mut header)
        .map_err(|e| refused(format!("reading {}: {e}", path.display())))?;
    Ok(match &header {
        h if h.starts_with(b"QFI\xfb") => DiskFormat::Qcow2,
        h if h.starts_with(b"KDMV") || h.starts_with(b"COWD") || h.starts_with(b"# Disk DescriptorFile") => {
            DiskFormat::Vmdk
        }
        h => {
            let other = [
                (&b"conectix"[..], "a VHD (vpc)"),
                (b"vhdxfile", "a VHDX"),
                (b"QED\0", "a QED"),
                (b"LUKS\xba\xbe", "a LUKS-encrypted"),
                (b"<<< ", "a VirtualBox VDI"),
                (b"WithoutFreeSpace", "a Parallels"),
            ];
            if let Some((_, what)) = other.iter().find(|(magic, _)| h.starts_with(magic)) {
                return Err(refused(format!(
                    "{} is {what} disk, which berth does not import; convert it to qcow2 first (qemu-img convert -O qcow2), or pass --format raw if it really is raw",
                    path.display()
                )));
            }
            DiskFormat::Raw
        }
    })
}

/// What `qemu-img info` reports that matters here.
#[derive(Debug, Deserialize)]
struct QemuImgInfo {
    format: String,
    #[serde(rename = "virtual-size")]
    virtual_size: u64,
    #[serde(rename = "backing-filename", default)]
    backing_filename: Option<String>,
    #[serde(rename = "full-backing-filename", default)]
    full_backing_filename: Option<String>,
    #[serde(rename = "backing-filename-format", default)]
    backing_format: Option<String>,
    #[serde(rename = "format-specific", default)]
    format_specific: Option<FormatSpecific>,
}

#[derive(Debug, Deserialize)]
struct FormatSpecific {
    #[serde(default)]
    data: FormatSpecificData,
}

#[derive(Debug, Default, Deserialize)]
struct FormatSpecificData {
    #[serde(rename = "data-file", default)]
    data_file: Option<String>,
    #[serde(default)]
    extents: Vec<VmdkExtentInfo>,
}

#[derive(Debug, Deserialize)]
struct VmdkExtentInfo {
    filename: String,
}

/// Inspects one layer of the chain and, below it, its backing file; returns its virtual size.
fn inspect_layer(path: &Path, format: DiskFormat, root: &Path, depth: usize) -> Result<u64, VmError> {
    if format == DiskFormat::Vmdk {
        // qemu-img info opens a descriptor's extents, so check them before it runs.
        for extent in descriptor_extents(path)? {
            check_referenced(path, &extent, root, "VMDK extent")?;
        }
    }
    let info = qemu_img_info(path, format)?;
    if info.format != format.as_str() {
        return Err(refused(format!(
            "{}: qemu-img read it as {}, not {format}",
            path.display(),
            info.format
        )));
    }
    let data = info.format_specific.map(|s| s.data).unwrap_or_default();
    if let Some(data_file) = &data.data_file {
        check_referenced(path, data_file, root, "qcow2 external data file")?;
    }
    for extent in &data.extents {
        check_referenced(path, &extent.filename, root, "VMDK extent")?;
    }
    if let Some(backing) = info.backing_filename.as_deref() {
        let what = "backing file";
        let backing_path = check_referenced(path, backing, root, what)?;
        if let Some(full) = info.full_backing_filename.as_deref() {
            // qemu's own resolution must agree with ours.
            check_referenced(path, full, root, what)?;
        }
        let backing_format: DiskFormat = info
            .backing_format
            .as_deref()
            .ok_or_else(|| {
                refused(format!(
                    "{}: its backing file {backing} has no declared format, which qemu would have to guess; record it with `qemu-img rebase -u -F <format> -b {backing}`",
                    path.display()
                ))
            })?
            .parse()
            .map_err(|e| refused(format!("{}: backing file {backing}: {e}", path.display())))?;
        if depth + 1 >= MAX_CHAIN_DEPTH {
            return Err(refused(format!(
                "{}: its backing chain is longer than {MAX_CHAIN_DEPTH} files; flatten it first (qemu-img convert)",
                path.display()
            )));
        }
        inspect_layer(&backing_path, backing_format, root, depth + 1)?;
    }
    Ok(info.virtual_size)
}

/// A file named inside a disk (`name`, relative to `referrer`'s directory as qemu resolves
/// it) must be a plain path to a regular file under `root`. Returns its canonical path.
fn check_referenced(referrer: &Path, name: &str, root: &Path, what: &str) -> Result<PathBuf, VmError> {
    let refuse = |why: String| refused(format!("{}: its {what} '{name}' {why}", referrer.display()));
    // qemu reads "json:{...}", "nbd://host/x", "file:/etc/shadow" as protocol specifications,
    // not file names: a colon before the first slash is never a plain path here.
    let before_slash = name.split('/').next().unwrap_or("");
    if name.is_empty() || before_slash.contains(':') {
        return Err(refuse(format!(
            "is a qemu protocol specification, not a file name; a disk may reference only files in its own directory ({})",
            root.display()
        )));
    }
    let base = referrer.parent().unwrap_or(root);
    let joined = if Path::new(name).is_absolute() {
        PathBuf::from(name)
    } else {
        base.join(name)
    };
    let canonical = fs::canonicalize(&joined).map_err(|e| refuse(format!("cannot be opened ({e})")))?;
    if !canonical.starts_with(root) {
        return Err(refuse(format!(
            "is outside the disk's own directory {}; a disk may reference only files there",
            root.display()
        )));
    }
    // qemu resolves the next file's names from the path as written, berth would from the
    // link's target: a symbolic link (or `..`) on the way would let the two read different
    // files, so the chain must name its files directly.
    if canonical != joined {
        return Err(refuse(
            "is reached through a symbolic link or '..'; name the file itself".to_string(),
        ));
    }
    let kind = fs::metadata(&canonical)
        .map_err(|e| refuse(format!("cannot be read ({e})")))?
        .file_type();
    if !kind.is_file() {
        return Err(refuse(format!(
            "is {}; a disk may reference only regular files",
            describe(kind)
        )));
    }
    Ok(canonical)
}

/// The file names of a text VMDK descriptor's extent lines (`RW 2048 FLAT "disk-flat.vmdk" 0`).
/// Sparse VMDKs (`KDMV`, `COWD`) are their own single extent and name no other file.
fn descriptor_extents(path: &Path) -> Result<Vec<String>, VmError> {
    let mut text = Vec::new();
    open_for_header(path)?
        .take(MAX_DESCRIPTOR_BYTES + 1)
        .read_to_end(&mut text)
        .map_err(|e| refused(format!("reading {}: {e}", path.display())))?;
    if text.starts_with(b"KDMV") || text.starts_with(b"COWD") {
        return Ok(Vec::new());
    }
    if text.len() as u64 > MAX_DESCRIPTOR_BYTES {
        return Err(refused(format!(
            "{} is neither a sparse VMDK nor a VMDK descriptor (over 1 MiB of text)",
            path.display()
        )));
    }
    let text = String::from_utf8_lossy(&text);
    Ok(parse_descriptor_extents(&text))
}

/// Every line that starts with an access mode and quotes a name counts, whatever its type:
/// stricter than qemu, which skips some, never looser.
fn parse_descriptor_extents(text: &str) -> Vec<String> {
    text.lines()
        .filter(|line| {
            let access = line.split_whitespace().next().unwrap_or("");
            matches!(access, "RW" | "RDONLY" | "NOACCESS")
        })
        .filter_map(|line| {
            let (_, rest) = line.split_once('"')?;
            let (name, _) = rest.split_once('"')?;
            Some(name.to_string())
        })
        .collect()
}

fn qemu_img_info(path: &Path, format: DiskFormat) -> Result<QemuImgInfo, VmError> {
    let output = berth_process::command("timeout")
        .args([
            "-k",
            "5",
            INFO_TIMEOUT_SECS,
            "qemu-img",
            "info",
            "--output=json",
            "-U",
            "-f",
        ])
        .arg(format.as_str())
        .arg(path)
        .output()
        .map_err(|e| VmError::Setup(format!("cannot run qemu-img: {e}")))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let reason = match output.status.code() {
            Some(124) | Some(137) => "qemu-img did not answer within a minute".to_string(),
            _ => stderr
                .trim()
                .lines()
                .last()
                .unwrap_or("qemu-img info failed")
                .to_string(),
        };
        return Err(refused(format!("{} as {format}: {reason}", path.display())));
    }
    serde_json::from_slice(&output.stdout)
        .map_err(|e| VmError::Disk(format!("qemu-img info of {}: {e}", path.display())))
}

/// Converts an inspected disk to a standalone qcow2 (its chain flattened), format named.
pub fn convert_to_qcow2(source: &DiskSource, destination: &Path) -> Result<(), VmError> {
    crate::disk::convert_to_qcow2(&source.path, source.format.as_str(), destination)
}

/// As `convert_to_qcow2` for a P2V import: zero areas stay unallocated (sparse), `compress`
/// writes compressed clusters, and `progress` hears the bytes of the source done so far
/// (from `qemu-img convert -p`'s percentages).
pub fn convert_with_progress(
    source: &DiskSource,
    destination: &Path,
    compress: bool,
    progress: &mut dyn FnMut(u64),
) -> Result<(), VmError> {
    use std::io::Read;
    let mut command = berth_process::command("qemu-img");
    command.args(["convert", "-p", "-f", source.format.as_str(), "-O", "qcow2"]);
    if compress {
        command.arg("-c");
    }
    let mut child = command
        .arg(&source.path)
        .arg(destination)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| VmError::Setup(format!("running qemu-img: {e}")))?;
    let mut stderr = child.stderr.take();
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(stderr) = stderr.as_mut() {
            let _ = stderr.read_to_string(&mut text);
        }
        text
    });
    // "    (42.17/100%)\r": one report per percent or so.
    if let Some(mut stdout) = child.stdout.take() {
        let mut pending = Vec::new();
        let mut buffer = [0u8; 256];
        while let Ok(read) = stdout.read(&mut buffer) {
            if read == 0 {
                break;
            }
            for &byte in &buffer[..read] {
                if byte == b'\r' || byte == b'\n' {
                    let line = String::from_utf8_lossy(&pending).into_owned();
                    pending.clear();
                    let percent = line
                        .trim()
                        .trim_start_matches('(')
                        .split('/')
                        .next()
                        .and_then(|p| p.parse::<f64>().ok());
                    if let Some(percent) = percent {
                        progress((source.virtual_size as f64 * percent.clamp(0.0, 100.0) / 100.0) as u64);
                    }
                } else {
                    pending.push(byte);
                }
            }
        }
    }
    let status = child
        .wait()
        .map_err(|e| VmError::Setup(format!("waiting for qemu-img: {e}")))?;
    let errors = errors.join().unwrap_or_default();
    if !status.success() {
        return Err(VmError::Disk(format!(
            "converting {}: {}",
            source.path.display(),
            errors.trim()
        )));
    }
    progress(source.virtual_size);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_extent_lines_of_a_descriptor() {
        let text = "# Disk DescriptorFile\nversion=1\ncreateType=\"monolithicFlat\"\nRW 2048 FLAT \"disk-flat.vmdk\" 0\nRDONLY 10 SPARSE \"/etc/shadow\"\nRW 100 ZERO\n# RW 1 FLAT \"comment.vmdk\" 0\nddb.adapterType = \"ide\"\n";
        assert_eq!(parse_descriptor_extents(text), vec!["disk-flat.vmdk", "/etc/shadow"]);
    }

    #[test]
    fn formats_parse_and_print() {
        assert_eq!("QCOW2".parse::<DiskFormat>(), Ok(DiskFormat::Qcow2));
        assert_eq!(DiskFormat::Vmdk.to_string(), "vmdk");
        assert!("vpc".parse::<DiskFormat>().unwrap_err().contains("qcow2, raw, vmdk"));
    }

    #[test]
    fn protocol_names_are_not_paths() {
        let dir = std::env::temp_dir();
        let referrer = dir.join("x.qcow2");
        for name in [
            "json:{\"driver\":\"file\",\"filename\":\"/etc/shadow\"}",
            "nbd://h/x",
            "file:/etc/shadow",
        ] {
            let error = check_referenced(&referrer, name, &dir, "backing file").unwrap_err();
            assert!(error.to_string().contains("not a file name"), "{error}");
        }
        let outside = check_referenced(&referrer, "/etc/hostname", &dir, "backing file").unwrap_err();
        assert!(outside.to_string().contains("outside"), "{outside}");
    }

    #[test]
    fn a_chain_through_a_symlink_is_refused() {
        // top.qcow2 -> link.qcow2 (a symlink to sub/b.qcow2) -> c.qcow2: qemu would open
        // ./c.qcow2, berth would have checked sub/c.qcow2.
        let dir = std::env::temp_dir().join(format!("berth-chain-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/b.qcow2"), b"x").unwrap();
        std::os::unix::fs::symlink("sub/b.qcow2", dir.join("link.qcow2")).unwrap();
        let root = std::fs::canonicalize(&dir).unwrap();
        let referrer = root.join("top.qcow2");
        let error = check_referenced(&referrer, "link.qcow2", &root, "backing file").unwrap_err();
        assert!(error.to_string().contains("symbolic link"), "{error}");
        let error = check_referenced(&referrer, "sub/../sub/b.qcow2", &root, "backing file").unwrap_err();
        assert!(error.to_string().contains("symbolic link or '..'"), "{error}");
        assert!(check_referenced(&referrer, "sub/b.qcow2", &root, "backing file").is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
