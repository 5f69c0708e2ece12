//! Directories deleted off the path of the request that removes them. One `rename` into a
//! `.discarded` directory beside them takes a directory out of its place at once; a blocking
//! task deletes it after. Deleting a container's instance directory (its writable layer,
//! bundle, logs: a few dozen unlinks on the host's filesystem, each a journal update) took
//! about 1 ms of every `run --rm` before its exit code came back.
//!
//! What is discarded is already nobody's: no record names it and nothing is mounted in it.
//! A daemon that stops before a deletion ends leaves it in `.discarded`, which `sweep`
//! empties at the next start.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Where discarded directories wait for deletion, beside the directories they were.
pub const DISCARDED: &str = ".discarded";

/// Makes the discarded names unique within the daemon's life (a directory's own name may
/// come back: instance ids are, short ids may be).
static NEXT: AtomicU64 = AtomicU64::new(0);

/// Takes `dir` out of its place now and deletes it in the background; deletes it in place
/// when it cannot be moved (its parent is read-only, or another filesystem). A `dir` that
/// does not exist is fine. Needs a tokio runtime.
pub fn remove_dir_soon(dir: &Path) -> io::Result<()> {
    match discard(dir) {
        Ok(Some(discarded)) => {
            tokio::task::spawn_blocking(move || delete(&discarded));
            Ok(())
        }
        Ok(None) => Ok(()),
        Err(e) => {
            tracing::debug!(dir = %dir.display(), error = %e, "not moved aside; deleting in place");
            remove_dir_all_if_any(dir)
        }
    }
}

/// Empties `.discarded` under `parent` (at start-up: what a stopped daemon left to delete).
pub fn sweep(parent: &Path) -> io::Result<()> {
    remove_dir_all_if_any(&parent.join(DISCARDED))
}

/// Moves `dir` into `.discarded`; `None` when there is no `dir`.
fn discard(dir: &Path) -> io::Result<Option<PathBuf>> {
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "no parent directory"));
    };
    if !dir.exists() {
        return Ok(None);
    }
    let bin = parent.join(DISCARDED);
    match fs::create_dir(&bin) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let mut discarded_name = name.to_os_string();
    discarded_name.push(format!(
        ".{}.{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let discarded = bin.join(discarded_name);
    // Fails with ENOENT when a finished deletion removed the empty `.discarded` in between:
    // the caller deletes in place.
    fs::rename(dir, &discarded)?;
    Ok(Some(discarded))
}

/// Deletes a discarded directory, then `.discarded` itself once it is empty (another
/// deletion still under way keeps it).
fn delete(discarded: &Path) {
    if let Err(e) = remove_dir_all_if_any(discarded) {
        tracing::warn!(dir = %discarded.display(), error = %e, "deleting a removed directory");
        return;
    }
    if let Some(bin) = discarded.parent() {
        let _ = fs::remove_dir(bin);
    }
}

fn remove_dir_all_if_any(dir: &Path) -> io::Result<()> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(label: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("berth-discard-{label}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[tokio::test]
    async fn a_discarded_directory_leaves_at_once_and_is_deleted_after() {
        let parent = scratch("soon");
        let dir = parent.join("abc");
        fs::create_dir_all(dir.join("upper/etc")).unwrap();
        fs::write(dir.join("upper/etc/hosts"), "x").unwrap();
        remove_dir_soon(&dir).unwrap();
        assert!(!dir.exists());
        // The same name is free again right away.
        fs::create_dir(&dir).unwrap();
        remove_dir_soon(&dir).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while parent.join(DISCARDED).exists() && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(
            fs::read_dir(&parent).unwrap().count(),
            0,
            "left in {}",
            parent.display()
        );
        remove_dir_soon(&parent.join("never-was")).unwrap();
        fs::remove_dir_all(&parent).unwrap();
    }

    #[test]
    fn sweep_empties_what_a_stopped_daemon_left() {
        let parent = scratch("sweep");
        fs::create_dir_all(parent.join(DISCARDED).join("abc.1.0/upper")).unwrap();
        fs::create_dir(parent.join("kept")).unwrap();
        sweep(&parent).unwrap();
        sweep(&parent).unwrap();
        let left: Vec<_> = fs::read_dir(&parent)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("kept")]);
        fs::remove_dir_all(&parent).unwrap();
    }
}
