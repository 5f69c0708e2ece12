//! Keeps the other containers' mounts out of a starting container's view of the mount table.
//!
//! Every running container's rootfs is a mount in the host's table, under the daemon's
//! `instances` directory, and libcontainer reads `/proc/self/mountinfo` about 14 times while
//! it creates a container (cgroup v1 mount points, rootfs checks): with 1,000 containers
//! running, creating one took 50 ms instead of 10. So the daemon makes `instances` a mount of
//! its own (a bind of the directory onto itself, made while nothing is mounted below it), and
//! a supervisor creates its container in a mount namespace of its own in which that subtree
//! is detached, all but its own instance's mounts, then returns to the host's namespace. The
//! container's namespace, a copy of that small one, is its own as before.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

/// `open_tree(2)` flags (linux/mount.h).
const OPEN_TREE_CLONE: libc::c_uint = 1;
/// `move_mount(2)`: the source is the descriptor itself.
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

/// Daemon side, at start-up: makes `instances` its own mount when nothing is mounted below it
/// (a daemon started over running containers of an older berth leaves it as it is; their
/// supervisors then create in the host's namespace, as before). Returns whether it is one.
pub fn prepare_instances_dir(instances: &Path) -> io::Result<bool> {
    if is_mount_root(instances)? {
        return Ok(true);
    }
    if has_mounts_below(instances)? {
        return Ok(false);
    }
    mount(Some(instances), instances, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(io::Error::from)?;
    Ok(true)
}

/// Undoes `prepare_instances_dir` when nothing is mounted below `instances` (a daemon that
/// failed to start leaves no mount behind); a mount with instances below stays. Returns
/// whether it was released.
pub fn release_instances_dir(instances: &Path) -> io::Result<bool> {
    if !is_mount_root(instances)? || has_mounts_below(instances)? {
        return Ok(false);
    }
    umount2(instances, MntFlags::MNT_DETACH).map_err(io::Error::from)?;
    Ok(true)
}

/// Whether anything is mounted below `dir` in this mount namespace.
fn has_mounts_below(dir: &Path) -> io::Result<bool> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    let prefix = format!("{}/", dir.display());
    Ok(mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .any(|point| point.starts_with(&prefix)))
}

/// A supervisor inside its own mount namespace; `leave` returns it to the host's.
pub struct OwnMountView {
    host_namespace: File,
    working_dir: Option<PathBuf>,
}

/// Supervisor side, before libcontainer creates the container of `instance_dir`: enters a
/// mount namespace where the daemon's `instances` subtree holds only this instance's mounts.
/// `None` when the daemon did not make `instances` a mount (nothing to detach).
pub fn enter(instance_dir: &Path) -> Result<Option<OwnMountView>, String> {
    let Some(instances) = instance_dir.parent() else {
        return Ok(None);
    };
    if !is_mount_root(instances).unwrap_or(false) {
        return Ok(None);
    }
    let failed = |what: &str, e: &dyn std::fmt::Display| format!("a mount namespace for the container: {what}: {e}");
    let host_namespace = File::open("/proc/self/ns/mnt").map_err(|e| failed("opening /proc/self/ns/mnt", &e))?;
    let working_dir = std::env::current_dir().ok();
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| failed("unshare", &e))?;
    let view = OwnMountView {
        host_namespace,
        working_dir,
    };
    // Nothing done in this namespace reaches the host's, nor the other way round.
    let isolate = || -> Result<(), String> {
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .map_err(|e| failed("making it private", &e))?;
        let own = open_tree_clone(instance_dir).map_err(|e| failed("cloning the instance's mounts", &e))?;
        umount2(instances, MntFlags::MNT_DETACH).map_err(|e| failed("detaching the other instances", &e))?;
        move_mount_to(&own, instance_dir).map_err(|e| failed("attaching the instance's mounts", &e))?;
        Ok(())
    };
    if let Err(e) = isolate() {
        let _ = view.leave();
        return Err(e);
    }
    // The working directory pointed into the detached tree: take it by path again.
    if let Some(dir) = &view.working_dir {
        let _ = std::env::set_current_dir(dir);
    }
    Ok(Some(view))
}

impl OwnMountView {
    /// Back to the host's mount namespace (the container keeps its own); the one left goes
    /// with its last user.
    pub fn leave(self) -> Result<(), String> {
        setns(&self.host_namespace, CloneFlags::CLONE_NEWNS)
            .map_err(|e| format!("returning to the host's mount namespace: {e}"))?;
        // setns put the working directory at the namespace's root.
        if let Some(dir) = &self.working_dir {
            let _ = std::env::set_current_dir(dir);
        }
        Ok(())
    }
}

/// Whether `dir` is the root of a mount.
fn is_mount_root(dir: &Path) -> io::Result<bool> {
    let path = c_path(dir)?;
    // SAFETY: an all-zero statx is a valid value for the kernel to fill in.
    let mut stat: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: statx with a valid path and a buffer of the right type.
    let result = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
            libc::STATX_BASIC_STATS,
            &mut stat,
        )
    };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stat.stx_attributes_mask & libc::STATX_ATTR_MOUNT_ROOT as u64 != 0
        && stat.stx_attributes & libc::STATX_ATTR_MOUNT_ROOT as u64 != 0)
}

/// `open_tree(dir, OPEN_TREE_CLONE | AT_RECURSIVE)`: a detached copy of `dir` and every
/// mount below it.
fn open_tree_clone(dir: &Path) -> io::Result<OwnedFd> {
    let path = c_path(dir)?;
    let flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | libc::AT_RECURSIVE as libc::c_uint;
    // SAFETY: open_tree with a valid path; a non-negative result is a new descriptor we own.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `move_mount(tree, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH)`.
fn move_mount_to(tree: &OwnedFd, target: &Path) -> io::Result<()> {
    let target = c_path(target)?;
    let empty = c"";
    // SAFETY: move_mount with a descriptor we own and valid paths.
    let result = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}
