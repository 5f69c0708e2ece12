//! Unpacks one layer tar (plain, gzip or zstd) into a directory that overlayfs can use as a
//! lower layer, refusing anything that could write outside that directory.
//!
//! Refused: absolute paths, `..` components, entries whose parent is a symlink, symlinks
//! whose relative target climbs out of the root, hard links that point outside or through
//! a symlink, and archives that try to set overlayfs' own xattrs. Device nodes are skipped
//! with a warning. OCI whiteouts become overlayfs whiteouts (0:0 character devices) and
//! opaque directories get `trusted.overlay.opaque=y`, as the image spec describes.

use std::ffi::CString;
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};
use tar::EntryType;

use crate::ImageError;

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// The outcome of unpacking a layer.
#[derive(Debug, Default)]
pub struct UnpackReport {
    /// `sha256:` digest of the uncompressed tar stream (the layer's diff_id).
    pub diff_id: String,
    /// Bytes of regular file content written.
    pub content_bytes: u64,
    pub warnings: Vec<String>,
}

/// Compression detected from a stream's first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn detect(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    pub fn oci_layer_media_type(self) -> &'static str {
        match self {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }
}

/// Wraps a possibly compressed stream in the right decoder.
pub fn decompressed<'a>(reader: impl Read + 'a) -> io::Result<(Compression, Box<dyn Read + 'a>)> {
    let mut buffered = BufReader::with_capacity(256 * 1024, reader);
    let compression = Compression::detect(buffered.fill_buf()?);
    let stream: Box<dyn Read> = match compression {
        Compression::None => Box::new(buffered),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(buffered)?),
    };
    Ok((compression, stream))
}

/// A reader that fails once more than `limit` bytes have passed: what a compressed stream
/// may unpack to. `exceeded` tells the caller why reading stopped.
pub struct SizeLimited<R> {
    inner: R,
    remaining: u64,
    exceeded: bool,
}

impl<R: Read> SizeLimited<R> {
    pub fn new(inner: R, limit: u64) -> Self {
        SizeLimited {
            inner,
            remaining: limit,
            exceeded: false,
        }
    }

    pub fn exceeded(&self) -> bool {
        self.exceeded
    }
}

impl<R: Read> Read for SizeLimited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // One byte beyond the limit is asked for, so a stream of exactly `limit` bytes passes.
        let wanted = buf
            .len()
            .min(usize::try_from(self.remaining.saturating_add(1)).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..wanted])?;
        if n as u64 > self.remaining {
            self.exceeded = true;
            return Err(io::Error::other("size limit exceeded"));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// A reader that hashes what passes through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// Reads whatever is left (tar stops at its end marker, padding may follow), so that
    /// `digest` covers the whole stream.
    pub fn drain(&mut self) -> io::Result<()> {
        io::copy(self, &mut io::sink()).map(|_| ())
    }

    /// The digest of what passed so far, as `sha256:<hex>`.
    pub fn digest(&self) -> String {
        format!("sha256:{}", hex::encode(self.hasher.clone().finalize()))
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Turns an archive path into a clean relative path, or says why it is refused.
/// `Ok(None)` for the archive root itself (".", "./").
pub fn clean_archive_path(raw: &Path) -> Result<Option<PathBuf>, String> {
    let mut clean = PathBuf::new();
    for component in raw.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return Err(format!("absolute path '{}'", raw.display())),
            Component::ParentDir => return Err(format!("path '{}' contains '..'", raw.display())),
        }
    }
    Ok(if clean.as_os_str().is_empty() {
        None
    } else {
        Some(clean)
    })
}

/// True if a symlink at `link` (relative to the root) with `target` would resolve above
/// the root. Absolute targets are resolved inside the container's root, so they are safe.
fn symlink_escapes(link: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut depth: i64 = link.parent().map(|p| p.components().count() as i64).unwrap_or(0);
    for component in target.components() {
        match component {
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return true;
                }
            }
            Component::Normal(_) => depth += 1,
            _ => {}
        }
    }
    false
}

struct LayerWriter<'a> {
    root: &'a Path,
    report: UnpackReport,
}

impl LayerWriter<'_> {
    /// Makes sure every parent of `relative` is a real directory inside the root, creating
    /// missing ones; refuses to go through a symlink.
    fn prepare_parents(&self, relative: &Path) -> Result<(), ImageError> {
        let mut current = self.root.to_path_buf();
        let Some(parent) = relative.parent() else {
            return Ok(());
        };
        for component in parent.components() {
            current.push(component);
            match fs::symlink_metadata(&current) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Err(ImageError::Hostile(format!(
                        "entry '{}' goes through the symlink '{}'",
                        relative.display(),
                        current.strip_prefix(self.root).unwrap_or(&current).display()
                    )));
                }
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => {
                    return Err(ImageError::Hostile(format!(
                        "entry '{}' needs '{}' to be a directory but it is a file",
                        relative.display(),
                        current.strip_prefix(self.root).unwrap_or(&current).display()
                    )));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    // A directory the archive implies but does not list: 0755, as Docker
                    // makes them (not the daemon's private umask).
                    fs::create_dir(&current).map_err(|e| io_error(&current, e))?;
                    fs::set_permissions(&current, fs::Permissions::from_mode(0o755))
                        .map_err(|e| io_error(&current, e))?;
                }
                Err(e) => return Err(io_error(&current, e)),
            }
        }
        Ok(())
    }

    /// Removes whatever is at `path` unless it is a directory we may merge into.
    fn clear_destination(&self, path: &Path, keep_directory: bool) -> Result<(), ImageError> {
        match fs::symlink_metadata(path) {
            Ok(meta) if meta.is_dir() && keep_directory => Ok(()),
            Ok(meta) if meta.is_dir() => fs::remove_dir_all(path).map_err(|e| io_error(path, e)),
            Ok(_) => fs::remove_file(path).map_err(|e| io_error(path, e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(path, e)),
        }
    }

    fn whiteout(&mut self, relative: &Path, name: &str) -> Result<(), ImageError> {
        self.prepare_parents(relative)?;
        let dir = self.root.join(relative.parent().unwrap_or(Path::new("")));
        if name == OPAQUE_MARKER {
            set_xattr(&dir, "trusted.overlay.opaque", b"y")?;
            return Ok(());
        }
        let hidden = &name[WHITEOUT_PREFIX.len()..];
        if hidden.is_empty() || hidden == "." || hidden == ".." || hidden.contains('/') {
            return Err(ImageError::Hostile(format!("bad whiteout '{}'", relative.display())));
        }
        let target = dir.join(hidden);
        self.clear_destination(&target, false)?;
        make_whiteout(&target)
    }

    fn hard_link(&mut self, relative: &Path, target: &Path) -> Result<(), ImageError> {
        let clean_target = clean_archive_path(target)
            .map_err(|why| ImageError::Hostile(format!("hard link '{}' to {why}", relative.display())))?
            .ok_or_else(|| ImageError::Hostile(format!("hard link '{}' has no target", relative.display())))?;
        // The target must be reachable without symlinks, so it is inside the root.
        self.prepare_parents(&clean_target)?;
        let source = self.root.join(&clean_target);
        let meta = fs::symlink_metadata(&source).map_err(|_| {
            ImageError::Hostile(format!(
                "hard link '{}' points at '{}', which is not in the layer",
                relative.display(),
                clean_target.display()
            ))
        })?;
        if meta.is_dir() {
            return Err(ImageError::Hostile(format!(
                "hard link '{}' points at a directory",
                relative.display()
            )));
        }
        let destination = self.root.join(relative);
        if destination == source {
            return Ok(());
        }
        self.clear_destination(&destination, false)?;
        fs::hard_link(&source, &destination).map_err(|e| io_error(&destination, e))
    }
}

fn io_error(path: &Path, source: io::Error) -> ImageError {
    ImageError::Io {
        context: format!("writing {}", path.display()),
        source,
    }
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) -> Result<(), ImageError> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| ImageError::Hostile(format!("path with NUL byte: {}", path.display())))?;
    let c_name = CString::new(name).map_err(|_| ImageError::Format("xattr name".into()))?;
    // SAFETY: both strings are NUL-terminated and live for the call; value is a valid slice.
    let rc = unsafe { libc::lsetxattr(c_path.as_ptr(), c_name.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    if rc != 0 {
        return Err(io_error(path, io::Error::last_os_error()));
    }
    Ok(())
}

fn make_whiteout(path: &Path) -> Result<(), ImageError> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| ImageError::Hostile(format!("path with NUL byte: {}", path.display())))?;
    // SAFETY: c_path is a valid NUL-terminated string; a 0:0 char device is overlayfs' whiteout.
    let rc = unsafe { libc::mknod(c_path.as_ptr(), libc::S_IFCHR, libc::makedev(0, 0)) };
    if rc != 0 {
        return Err(io_error(path, io::Error::last_os_error()));
    }
    Ok(())
}

/// Unpacks the (possibly compressed) layer tar from `reader` into `root`, which must exist
/// and be empty. The uncompressed stream may hold at most `max_bytes`. On error the caller
/// discards `root`.
pub fn unpack_layer(reader: impl Read, root: &Path, max_bytes: u64) -> Result<UnpackReport, ImageError> {
    let (_, stream) = decompressed(reader).map_err(|e| ImageError::Format(format!("reading layer: {e}")))?;
    let mut hashing = HashingReader::new(SizeLimited::new(stream, max_bytes));
    let mut writer = LayerWriter {
        root,
        report: UnpackReport::default(),
    };
    let unpacked = (|| {
        let mut archive = tar::Archive::new(&mut hashing);
        archive.set_preserve_permissions(true);
        archive.set_preserve_ownerships(true);
        archive.set_preserve_mtime(true);
        archive.set_unpack_xattrs(true);
        archive.set_overwrite(true);
        let entries = archive
            .entries()
            .map_err(|e| ImageError::Format(format!("not a tar archive: {e}")))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| ImageError::Format(format!("corrupt tar entry: {e}")))?;
            unpack_entry(&mut writer, &mut entry)?;
        }
        Ok(())
    })();
    let finished = unpacked.and_then(|()| {
        hashing
            .drain()
            .map_err(|e| ImageError::Format(format!("reading layer: {e}")))
    });
    if hashing.get_ref().exceeded() {
        return Err(layer_too_large(max_bytes));
    }
    finished?;
    writer.report.diff_id = hashing.digest();
    Ok(writer.report)
}

/// The one error for a layer beyond the configured bound.
pub fn layer_too_large(max_bytes: u64) -> ImageError {
    ImageError::TooLarge(format!(
        "a layer unpacks to more than {} (a decompression bomb?); raise [images] max_layer_size in the daemon config if the image is genuine",
        berth_model::ByteSize(max_bytes)
    ))
}

fn unpack_entry<R: Read>(writer: &mut LayerWriter<'_>, entry: &mut tar::Entry<'_, R>) -> Result<(), ImageError> {
    let raw_path = entry
        .path()
        .map_err(|e| ImageError::Format(format!("bad entry name: {e}")))?
        .into_owned();
    let relative = match clean_archive_path(&raw_path) {
        Ok(Some(path)) => path,
        Ok(None) => return Ok(()),
        Err(why) => return Err(ImageError::Hostile(format!("refused entry: {why}"))),
    };
    if let Some(extensions) = entry
        .pax_extensions()
        .map_err(|e| ImageError::Format(format!("bad pax header: {e}")))?
    {
        for extension in extensions.flatten() {
            let key = extension.key_bytes();
            if key.starts_with(b"SCHILY.xattr.trusted.overlay") {
                return Err(ImageError::Hostile(format!(
                    "entry '{}' sets an overlayfs xattr",
                    relative.display()
                )));
            }
        }
    }

    let file_name = relative
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if file_name.starts_with(WHITEOUT_PREFIX) {
        return writer.whiteout(&relative, &file_name);
    }

    let destination = writer.root.join(&relative);
    let kind = entry.header().entry_type();
    match kind {
        EntryType::Directory => {
            writer.prepare_parents(&relative)?;
            writer.clear_destination(&destination, true)?;
        }
        EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse | EntryType::Fifo => {
            writer.prepare_parents(&relative)?;
            writer.clear_destination(&destination, false)?;
            writer.report.content_bytes += entry.header().size().unwrap_or(0);
        }
        EntryType::Symlink => {
            let target = entry
                .link_name()
                .map_err(|e| ImageError::Format(format!("bad symlink target: {e}")))?
                .ok_or_else(|| ImageError::Hostile(format!("symlink '{}' has no target", relative.display())))?
                .into_owned();
            if symlink_escapes(&relative, &target) {
                return Err(ImageError::Hostile(format!(
                    "symlink '{}' -> '{}' points outside the image root",
                    relative.display(),
                    target.display()
                )));
            }
            writer.prepare_parents(&relative)?;
            writer.clear_destination(&destination, false)?;
        }
        EntryType::Link => {
            let target = entry
                .link_name()
                .map_err(|e| ImageError::Format(format!("bad hard link target: {e}")))?
                .ok_or_else(|| ImageError::Hostile(format!("hard link '{}' has no target", relative.display())))?
                .into_owned();
            writer.prepare_parents(&relative)?;
            return writer.hard_link(&relative, &target);
        }
        EntryType::Char | EntryType::Block => {
            writer.report.warnings.push(format!(
                "skipped device node '{}' (devices come from the runtime, not the image)",
                relative.display()
            ));
            return Ok(());
        }
        EntryType::XGlobalHeader | EntryType::XHeader | EntryType::GNULongName | EntryType::GNULongLink => {
            return Ok(());
        }
        other => {
            writer.report.warnings.push(format!(
                "skipped '{}' of unsupported tar type {:?}",
                relative.display(),
                other
            ));
            return Ok(());
        }
    }
    entry.unpack(&destination).map_err(|e| io_error(&destination, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A gzip'd tar holding one file of `size` zero bytes: a few KiB that unpack to `size`.
    fn zeros_layer(size: u64) -> Vec<u8> {
        let gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let mut builder = tar::Builder::new(gzip);
        let mut header = tar::Header::new_gnu();
        header.set_size(size);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        builder
            .append_data(&mut header, "zeros", io::repeat(0).take(size))
            .unwrap();
        builder.into_inner().unwrap().finish().unwrap()
    }

    #[test]
    fn a_layer_beyond_the_limit_is_refused_as_too_large() {
        let layer = zeros_layer(4 << 20);
        assert!(layer.len() < 64 << 10, "the bomb is small: {}", layer.len());
        let root = tempfile::tempdir().unwrap();
        let error = unpack_layer(&layer[..], root.path(), 1 << 20).unwrap_err();
        assert!(matches!(error, ImageError::TooLarge(_)), "{error}");
        assert!(error.to_string().contains("max_layer_size"), "{error}");
        let fits = tempfile::tempdir().unwrap();
        unpack_layer(&layer[..], fits.path(), 8 << 20).unwrap();
        assert_eq!(fs::metadata(fits.path().join("zeros")).unwrap().len(), 4 << 20);
    }

    #[test]
    fn size_limited_passes_exactly_the_limit() {
        let mut exact = SizeLimited::new(&[7u8; 10][..], 10);
        let mut out = Vec::new();
        exact.read_to_end(&mut out).unwrap();
        assert_eq!(out.len(), 10);
        let mut over = SizeLimited::new(&[7u8; 11][..], 10);
        assert!(over.read_to_end(&mut Vec::new()).is_err());
        assert!(over.exceeded());
    }

    #[test]
    fn cleans_paths() {
        assert_eq!(
            clean_archive_path(Path::new("./a/b")).unwrap(),
            Some(PathBuf::from("a/b"))
        );
        assert_eq!(clean_archive_path(Path::new("./")).unwrap(), None);
        assert!(clean_archive_path(Path::new("/etc/passwd")).is_err());
        assert!(clean_archive_path(Path::new("a/../../b")).is_err());
    }

    #[test]
    fn detects_escaping_symlinks() {
        assert!(!symlink_escapes(Path::new("bin/sh"), Path::new("/bin/busybox")));
        assert!(!symlink_escapes(Path::new("bin/sh"), Path::new("busybox")));
        assert!(!symlink_escapes(Path::new("usr/bin/x"), Path::new("../../bin/y")));
        assert!(symlink_escapes(Path::new("usr/bin/x"), Path::new("../../../etc")));
        assert!(symlink_escapes(Path::new("x"), Path::new("..")));
    }
}
