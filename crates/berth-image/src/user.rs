//! Resolves `--user` (`name`, `uid`, `name:group`, `uid:gid`) against the container's own
//! /etc/passwd and /etc/group, as Docker does. Those files belong to the workload and are
//! hostile: they are opened inside the rootfs (symlinks resolve as the container sees them,
//! never to the host's files), read only when they are regular files of bounded size, and
//! the lookup runs off the async runtime with a timeout.

use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pathrs::error::ErrorKind;
use pathrs::flags::OpenFlags;
use pathrs::Root;

/// Larger account files are refused: real ones are kilobytes, and the daemon holds them in memory.
pub const MAX_ACCOUNT_FILE_BYTES: u64 = 4 << 20;

/// How long a lookup may take before start or exec gives up on it.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// The identity a container process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub home: String,
}

/// What a non-regular file is, for the error message.
fn describe_file_type(file_type: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else {
        "not a regular file"
    }
}

/// Reads `/<relative>` of the rootfs as the container would see it: resolved inside `root`
/// (openat2 `RESOLVE_IN_ROOT`, or libpathrs' checked emulation on older kernels), refused
/// unless it is a regular file of at most `MAX_ACCOUNT_FILE_BYTES`, opened non-blocking.
/// `Ok(None)`: the image has no such file.
fn read_account_file(root: Option<&Root>, relative: &str) -> Result<Option<String>, String> {
    let Some(root) = root else {
        return Ok(None);
    };
    let handle = match root.resolve(relative) {
        Ok(handle) => handle,
        Err(e) if matches!(e.kind(), ErrorKind::OsError(Some(libc::ENOENT | libc::ENOTDIR))) => return Ok(None),
        Err(e) => {
            return Err(format!(
                "/{relative} of the instance cannot be opened inside its root ({e})"
            ))
        }
    };
    // An O_PATH handle: stat it before anything could block on opening it (a FIFO would).
    let examine_failed = |e: &dyn std::fmt::Display| format!("/{relative} of the instance cannot be examined ({e})");
    let path_handle = File::from(OwnedFd::from(handle.try_clone().map_err(|e| examine_failed(&e))?));
    let metadata = path_handle.metadata().map_err(|e| examine_failed(&e))?;
    if !metadata.is_file() {
        return Err(format!(
            "/{relative} of the instance is {}, not a regular file",
            describe_file_type(metadata.file_type())
        ));
    }
    let too_large = || {
        format!(
            "/{relative} of the instance is larger than {} MiB",
            MAX_ACCOUNT_FILE_BYTES >> 20
        )
    };
    if metadata.len() > MAX_ACCOUNT_FILE_BYTES {
        return Err(too_large());
    }
    // Reopening the handle opens the same inode; O_NONBLOCK in case it is anything but a file.
    let file = handle
        .reopen(OpenFlags::O_RDONLY | OpenFlags::O_NONBLOCK)
        .map_err(|e| format!("/{relative} of the instance cannot be read ({e})"))?;
    let mut data = Vec::new();
    file.take(MAX_ACCOUNT_FILE_BYTES + 1)
        .read_to_end(&mut data)
        .map_err(|e| format!("/{relative} of the instance cannot be read ({e})"))?;
    if data.len() as u64 > MAX_ACCOUNT_FILE_BYTES {
        return Err(too_large());
    }
    Ok(Some(String::from_utf8_lossy(&data).into_owned()))
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

fn passwd_entries(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() < 6 {
                return None;
            }
            Some(PasswdEntry {
                name: fields[0].to_string(),
                uid: fields[2].parse().ok()?,
                gid: fields[3].parse().ok()?,
                home: fields[5].to_string(),
            })
        })
        .collect()
}

/// (name, gid, members) of /etc/group.
fn group_entries(text: &str) -> Vec<(String, u32, Vec<String>)> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() < 3 {
                return None;
            }
            let members = fields
                .get(3)
                .map(|m| m.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect())
                .unwrap_or_default();
            Some((fields[0].to_string(), fields[2].parse().ok()?, members))
        })
        .collect()
}

/// An account file's text. A file that cannot be used only matters when a name must be
/// looked up in it (`needed`); numeric ids and root work without it, as with no file at all.
fn account_text(root: Option<&Root>, relative: &str, needed: bool) -> Result<String, String> {
    match read_account_file(root, relative) {
        Ok(text) => Ok(text.unwrap_or_default()),
        Err(why) if needed => Err(format!(
            "user: {why}; berth does not look names up in it, use a numeric uid:gid"
        )),
        Err(why) => {
            tracing::warn!(file = relative, "ignoring the image's account file: {why}");
            Ok(String::new())
        }
    }
}

/// Resolves `spec` ("" means root) in the rootfs at `rootfs`, blocking: call it through
/// `resolve_user` from async code. The error names what could not be found.
pub fn resolve_user_blocking(rootfs: &Path, spec: &str) -> Result<ResolvedUser, String> {
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let group_part = group_part.filter(|g| !g.is_empty());
    // A rootfs that cannot be opened has no account files (an image without layers).
    let root = Root::open(rootfs).ok();
    let name_given = !user_part.is_empty() && user_part.parse::<u32>().is_err();
    let passwd = passwd_entries(&account_text(root.as_ref(), "etc/passwd", name_given)?);
    let (uid, mut gid, home, name) = if user_part.is_empty() {
        (0, 0, "/root".to_string(), Some("root".to_string()))
    } else if let Ok(uid) = user_part.parse::<u32>() {
        match passwd.iter().find(|e| e.uid == uid) {
            Some(entry) => (uid, entry.gid, entry.home.clone(), Some(entry.name.clone())),
            None => (uid, 0, "/".to_string(), None),
        }
    } else {
        let entry = passwd.iter().find(|e| e.name == user_part).ok_or_else(|| {
            format!(
                "user: no user '{user_part}' in the image's /etc/passwd; use a numeric uid or a name the image defines"
            )
        })?;
        (entry.uid, entry.gid, entry.home.clone(), Some(entry.name.clone()))
    };
    let group_name_given = group_part.is_some_and(|g| g.parse::<u32>().is_err());
    let groups = group_entries(&account_text(root.as_ref(), "etc/group", group_name_given)?);
    if let Some(group) = group_part {
        gid = match group.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => groups
                .iter()
                .find(|(n, _, _)| n == group)
                .map(|(_, gid, _)| *gid)
                .ok_or_else(|| format!("user: no group '{group}' in the image's /etc/group"))?,
        };
    }
    let additional_gids = match &name {
        Some(name) => groups
            .iter()
            .filter(|(_, g, members)| *g != gid && members.iter().any(|m| m == name))
            .map(|(_, g, _)| *g)
            .collect(),
        None => Vec::new(),
    };
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
        home,
    })
}

/// Resolves `spec` in the rootfs at `rootfs` on a blocking thread, giving up after
/// `LOOKUP_TIMEOUT`: a hostile rootfs can slow its own start or exec, never the daemon.
pub async fn resolve_user(rootfs: &Path, spec: &str) -> Result<ResolvedUser, String> {
    let (rootfs, spec): (PathBuf, String) = (rootfs.to_path_buf(), spec.to_string());
    let lookup = tokio::task::spawn_blocking(move || resolve_user_blocking(&rootfs, &spec));
    match tokio::time::timeout(LOOKUP_TIMEOUT, lookup).await {
        Ok(Ok(result)) => result,
        Ok(Err(e)) => Err(format!("user: the lookup in the instance's /etc/passwd failed: {e}")),
        Err(_) => Err(format!(
            "user: reading the instance's /etc/passwd and /etc/group took more than {}s; use a numeric uid:gid",
            LOOKUP_TIMEOUT.as_secs()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn rootfs_with_etc() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("etc")).unwrap();
        dir
    }

    #[test]
    fn resolves_users() {
        let root = rootfs_with_etc();
        let dir = root.path();
        fs::write(
            dir.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33:www:/var/www:/bin/false\n",
        )
        .unwrap();
        fs::write(dir.join("etc/group"), "root:x:0:\nwww:x:33:\nadm:x:4:www\n").unwrap();
        let www = resolve_user_blocking(dir, "www").unwrap();
        assert_eq!((www.uid, www.gid, www.additional_gids.clone()), (33, 33, vec![4]));
        assert_eq!(resolve_user_blocking(dir, "1000:adm").unwrap().gid, 4);
        assert_eq!(resolve_user_blocking(dir, "").unwrap().uid, 0);
        assert!(resolve_user_blocking(dir, "nobody").is_err());
        assert!(resolve_user_blocking(dir, "www:nogroup").is_err());
    }

    #[test]
    fn symlinks_resolve_inside_the_rootfs() {
        let host = tempfile::tempdir().unwrap();
        let host_file = host.path().join("passwd");
        fs::write(&host_file, "hostonly:x:4242:4242::/:/bin/sh\n").unwrap();
        let root = rootfs_with_etc();
        // Absolute and climbing links both stay inside the rootfs, as in the container.
        std::os::unix::fs::symlink(&host_file, root.path().join("etc/passwd")).unwrap();
        assert!(resolve_user_blocking(root.path(), "hostonly").is_err());
        fs::remove_file(root.path().join("etc/passwd")).unwrap();
        let climbing = format!("../../../../../../..{}", host_file.display());
        std::os::unix::fs::symlink(&climbing, root.path().join("etc/passwd")).unwrap();
        assert!(resolve_user_blocking(root.path(), "hostonly").is_err());
        // A link within the rootfs is followed there.
        fs::remove_file(root.path().join("etc/passwd")).unwrap();
        fs::write(root.path().join("etc/passwd.real"), "app:x:77:77::/app:/bin/sh\n").unwrap();
        std::os::unix::fs::symlink("/etc/passwd.real", root.path().join("etc/passwd")).unwrap();
        assert_eq!(resolve_user_blocking(root.path(), "app").unwrap().uid, 77);
    }

    #[test]
    fn fifos_and_huge_files_are_refused_without_blocking() {
        let root = rootfs_with_etc();
        let passwd = root.path().join("etc/passwd");
        nix_mkfifo(&passwd);
        let error = resolve_user_blocking(root.path(), "someone").unwrap_err();
        assert!(error.contains("is a FIFO"), "{error}");
        // Numeric ids do not need the file.
        assert_eq!(resolve_user_blocking(root.path(), "1000:1000").unwrap().uid, 1000);
        fs::remove_file(&passwd).unwrap();
        let file = fs::File::create(&passwd).unwrap();
        file.set_len(MAX_ACCOUNT_FILE_BYTES + 1).unwrap();
        let error = resolve_user_blocking(root.path(), "someone").unwrap_err();
        assert!(error.contains("larger than"), "{error}");
    }

    fn nix_mkfifo(path: &Path) {
        use std::os::unix::ffi::OsStrExt;
        let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) }, 0);
    }
}
