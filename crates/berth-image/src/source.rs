//! Read access to the members of an image archive — an OCI layout or `docker save` output —
//! whether it is a directory or a tar file, without extracting anything to disk.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::unpack::clean_archive_path;
use crate::ImageError;

/// Named members of an image archive.
pub trait ArchiveSource: Send + Sync {
    fn exists(&self, name: &str) -> bool;
    fn open(&self, name: &str) -> Result<Box<dyn Read + Send + '_>, ImageError>;

    fn read_to_vec(&self, name: &str, limit: u64) -> Result<Vec<u8>, ImageError> {
        let mut data = Vec::new();
        self.open(name)?
            .take(limit + 1)
            .read_to_end(&mut data)
            .map_err(|e| ImageError::Format(format!("reading '{name}' from the archive: {e}")))?;
        if data.len() as u64 > limit {
            return Err(ImageError::Format(format!("'{name}' is larger than {limit} bytes")));
        }
        Ok(data)
    }
}

/// Member names as archives spell them, checked: relative, no `..`.
fn checked_name(name: &str) -> Result<PathBuf, ImageError> {
    clean_archive_path(Path::new(name))
        .map_err(|why| ImageError::Hostile(format!("archive names member by {why}")))?
        .ok_or_else(|| ImageError::Format("empty member name".into()))
}

/// An unpacked OCI layout or docker-save directory.
pub struct DirectorySource {
    root: PathBuf,
}

impl DirectorySource {
    pub fn new(root: &Path) -> Self {
        DirectorySource {
            root: root.to_path_buf(),
        }
    }

    fn member_path(&self, name: &str) -> Result<PathBuf, ImageError> {
        let relative = checked_name(name)?;
        let path = self.root.join(&relative);
        // Members may be symlinks (docker save shares layers that way) but must stay inside.
        let resolved = path
            .canonicalize()
            .map_err(|_| ImageError::Format(format!("the archive has no member '{name}'")))?;
        let root = self.root.canonicalize().map_err(|e| ImageError::Io {
            context: format!("reading {}", self.root.display()),
            source: e,
        })?;
        if !resolved.starts_with(&root) {
            return Err(ImageError::Hostile(format!(
                "member '{name}' resolves outside the archive"
            )));
        }
        Ok(resolved)
    }
}

impl ArchiveSource for DirectorySource {
    fn exists(&self, name: &str) -> bool {
        self.member_path(name).map(|p| p.is_file()).unwrap_or(false)
    }

    fn open(&self, name: &str) -> Result<Box<dyn Read + Send + '_>, ImageError> {
        let path = self.member_path(name)?;
        let file = File::open(&path).map_err(|e| ImageError::Io {
            context: format!("opening {}", path.display()),
            source: e,
        })?;
        Ok(Box::new(file))
    }
}

#[derive(Debug, Clone)]
enum Member {
    File { offset: u64, size: u64 },
    Link { target: PathBuf },
}

/// An uncompressed tar file indexed by member name; members are read in place.
pub struct TarFileSource {
    path: PathBuf,
    members: HashMap<PathBuf, Member>,
}

impl TarFileSource {
    pub fn open(path: &Path) -> Result<Self, ImageError> {
        let file = File::open(path).map_err(|e| ImageError::Io {
            context: format!("opening {}", path.display()),
            source: e,
        })?;
        let mut archive = tar::Archive::new(file);
        let mut members = HashMap::new();
        let entries = archive
            .entries()
            .map_err(|e| ImageError::Format(format!("not a tar archive: {e}")))?;
        for entry in entries {
            let entry = entry.map_err(|e| ImageError::Format(format!("corrupt tar entry: {e}")))?;
            let raw = entry
                .path()
                .map_err(|e| ImageError::Format(format!("bad entry name: {e}")))?
                .into_owned();
            let Some(name) =
                clean_archive_path(&raw).map_err(|why| ImageError::Hostile(format!("refused entry: {why}")))?
            else {
                continue;
            };
            let header = entry.header();
            match header.entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    members.insert(
                        name,
                        Member::File {
                            offset: entry.raw_file_position(),
                            size: header.size().unwrap_or(0),
                        },
                    );
                }
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    let target = entry
                        .link_name()
                        .ok()
                        .flatten()
                        .map(|t| t.into_owned())
                        .ok_or_else(|| ImageError::Format(format!("link '{}' without target", name.display())))?;
                    let resolved = if header.entry_type() == tar::EntryType::Link {
                        target
                    } else {
                        name.parent().unwrap_or(Path::new("")).join(target)
                    };
                    members.insert(name, Member::Link { target: resolved });
                }
                _ => {}
            }
        }
        Ok(TarFileSource {
            path: path.to_path_buf(),
            members,
        })
    }

    fn resolve(&self, name: &str) -> Result<(u64, u64), ImageError> {
        let mut current = checked_name(name)?;
        for _ in 0..16 {
            match self.members.get(&current) {
                Some(Member::File { offset, size }) => return Ok((*offset, *size)),
                Some(Member::Link { target }) => {
                    current = normalize_lexically(target)
                        .ok_or_else(|| ImageError::Hostile(format!("member '{name}' links outside the archive")))?;
                }
                None => return Err(ImageError::Format(format!("the archive has no member '{name}'"))),
            }
        }
        Err(ImageError::Format(format!("member '{name}' has too many links")))
    }
}

/// Resolves `..` lexically; `None` if the path climbs above its root.
fn normalize_lexically(path: &Path) -> Option<PathBuf> {
    let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
    for component in path.components() {
        match component {
            std::path::Component::Normal(part) => parts.push(part),
            std::path::Component::ParentDir => {
                parts.pop()?;
            }
            std::path::Component::CurDir => {}
            _ => return None,
        }
    }
    Some(parts.iter().collect())
}

impl ArchiveSource for TarFileSource {
    fn exists(&self, name: &str) -> bool {
        self.resolve(name).is_ok()
    }

    fn open(&self, name: &str) -> Result<Box<dyn Read + Send + '_>, ImageError> {
        let (offset, size) = self.resolve(name)?;
        let mut file = File::open(&self.path).map_err(|e| ImageError::Io {
            context: format!("opening {}", self.path.display()),
            source: e,
        })?;
        file.seek(SeekFrom::Start(offset)).map_err(|e| ImageError::Io {
            context: format!("reading {}", self.path.display()),
            source: e,
        })?;
        Ok(Box::new(io::BufReader::new(file.take(size))))
    }
}

/// What a tar archive holds, decided from its member names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveKind {
    OciLayout,
    DockerSave,
    Rootfs,
}

/// Image archives hold only layout files, blobs and per-layer folders; the first member
/// that is anything else marks a rootfs tarball, so a rootfs is not read to its end here.
pub fn classify_archive(reader: impl Read) -> Result<ArchiveKind, ImageError> {
    let (_, stream) =
        crate::unpack::decompressed(reader).map_err(|e| ImageError::Format(format!("reading archive: {e}")))?;
    let mut archive = tar::Archive::new(stream);
    let (mut oci_layout, mut docker_manifest, mut entries) = (false, false, 0usize);
    for entry in archive
        .entries()
        .map_err(|e| ImageError::Format(format!("not a tar archive: {e}")))?
    {
        let entry = entry.map_err(|e| ImageError::Format(format!("corrupt tar entry: {e}")))?;
        entries += 1;
        let Ok(path) = entry.path() else { continue };
        let name = path.to_string_lossy();
        let name = name.trim_start_matches("./");
        let first = name.split('/').next().unwrap_or("");
        let is_hex_name = |s: &str| {
            let stem = s.strip_suffix(".json").or_else(|| s.strip_suffix(".tar")).unwrap_or(s);
            stem.len() == 64 && stem.chars().all(|c| c.is_ascii_hexdigit())
        };
        match first {
            "oci-layout" => oci_layout = true,
            "manifest.json" => docker_manifest = true,
            "" | "index.json" | "repositories" | "blobs" => {}
            other if is_hex_name(other) => {}
            _ => return Ok(ArchiveKind::Rootfs),
        }
    }
    // Zeros read as an empty tar: a disk image or a sparse file is no image, and is refused
    // before anything copies it.
    if entries == 0 {
        return Err(ImageError::Format(
            "the archive holds no files: not a tar archive (or an empty one)".into(),
        ));
    }
    Ok(if oci_layout && !docker_manifest {
        ArchiveKind::OciLayout
    } else if docker_manifest {
        ArchiveKind::DockerSave
    } else if oci_layout {
        ArchiveKind::OciLayout
    } else {
        ArchiveKind::Rootfs
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeros_are_no_archive() {
        // What a sparse file or the start of a disk image reads as: an empty tar.
        let error = classify_archive(&[0u8; 64 * 1024][..]).unwrap_err();
        assert!(error.to_string().contains("holds no files"), "{error}");
    }
}
