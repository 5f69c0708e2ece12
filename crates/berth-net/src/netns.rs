//! Network namespaces kept as bind-mounted files (as `ip netns` does), so a container can be
//! given one that berth set up beforehand, and work done inside one from a thread of its own.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

use crate::{failed, NetResult};

/// Creates a new network namespace pinned at `path`.
pub fn create(path: &Path) -> NetResult<()> {
    let context = format!("creating network namespace {}", path.display());
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| failed(&context, e))?;
    }
    File::create(path).map_err(|e| failed(&context, e))?;
    let target: PathBuf = path.to_path_buf();
    // unshare moves the calling thread only: do it in a thread that ends right after.
    let result = std::thread::spawn(move || -> Result<(), String> {
        unshare(CloneFlags::CLONE_NEWNET).map_err(|e| e.to_string())?;
        let tid = nix::unistd::gettid();
        let source = format!("/proc/self/task/{tid}/ns/net");
        mount(
            Some(source.as_str()),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| e.to_string())
    })
    .join()
    .map_err(|_| failed(&context, "the namespace thread panicked"))?;
    if let Err(e) = result {
        let _ = std::fs::remove_file(path);
        return Err(failed(&context, e));
    }
    Ok(())
}

/// Unpins and removes a namespace file (the namespace goes when its last user does).
pub fn remove(path: &Path) {
    let _ = umount2(path, MntFlags::MNT_DETACH);
    let _ = std::fs::remove_file(path);
}

/// Runs `work` on a thread that has entered the namespace at `path`.
pub fn run_in<T: Send + 'static>(path: &Path, work: impl FnOnce() -> T + Send + 'static) -> NetResult<T> {
    let context = format!("entering {}", path.display());
    let file = File::open(path).map_err(|e| failed(&context, e))?;
    std::thread::spawn(move || -> Result<T, String> {
        setns(file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| e.to_string())?;
        Ok(work())
    })
    .join()
    .map_err(|_| failed(&context, "the namespace thread panicked"))?
    .map_err(|e| failed(&context, e))
}
