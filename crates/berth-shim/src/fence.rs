//! Self-fencing of a supervised workload in a cluster. The daemon writes, each time it
//! renews its node's lease, the moment it sent that renewal (CLOCK_MONOTONIC, which every
//! process on the machine shares) to a heartbeat file. A supervisor whose instance the
//! cluster would move elsewhere kills its workload once that moment is older than the
//! fencing deadline: a daemon that died or was cut off cannot renew, and by the time etcd
//! lets the lease expire and the scheduler starts a copy elsewhere, this one is gone.

use std::io;
use std::path::Path;
use std::time::Duration;

/// Now, on the clock the heartbeat file is written in.
pub fn monotonic_now() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(Duration::from)
        .unwrap_or_default()
}

/// Records `sent_at` (a `monotonic_now` reading) as the last renewal; atomic (a rename),
/// so a reader sees the old moment or the new one.
pub fn write_heartbeat(path: &Path, sent_at: Duration) -> io::Result<()> {
    let partial = path.with_extension("partial");
    std::fs::write(&partial, sent_at.as_nanos().to_string())?;
    std::fs::rename(&partial, path)
}

/// The last renewal's moment; `None` when the file is missing or unreadable (treated as
/// stale by `is_stale`).
pub fn read_heartbeat(path: &Path) -> Option<Duration> {
    let text = std::fs::read_to_string(path).ok()?;
    text.trim().parse::<u64>().ok().map(Duration::from_nanos)
}

/// Whether the workload must be fenced: no renewal within `deadline`.
pub fn is_stale(path: &Path, deadline: Duration) -> bool {
    match read_heartbeat(path) {
        Some(sent_at) => monotonic_now().saturating_sub(sent_at) > deadline,
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_heartbeat_holds_and_an_old_one_fences() {
        let dir = std::env::temp_dir().join(format!("berth-fence-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("lease-renewed");
        assert!(is_stale(&path, Duration::from_secs(7)), "missing is stale");
        write_heartbeat(&path, monotonic_now()).unwrap();
        assert!(!is_stale(&path, Duration::from_secs(7)));
        write_heartbeat(&path, monotonic_now().saturating_sub(Duration::from_secs(8))).unwrap();
        assert!(is_stale(&path, Duration::from_secs(7)));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
