//! A supervisor started ahead of need. Starting one (posix_spawn, exec of the berth binary,
//! the dynamic loader) took about 1 ms of every instance start; the daemon keeps one
//! supervisor waiting, hands it the next instance's config, and starts the next one in the
//! background.
//!
//! The waiting supervisor reads one line, its config's path, from its stdin (a pipe from the
//! daemon), then becomes the supervisor that `berth supervise CONFIG` would have been: stdin
//! from /dev/null, stderr into `supervisor.log` beside the config, and the same command line
//! in `ps` (rewritten in place over a padded argument). End of file on stdin — the daemon
//! stopped or died — ends it.

use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::io::{self, BufRead};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The argument that marks a waiting supervisor: `berth supervise --standby=...`.
const STANDBY_FLAG: &str = "--standby=";

/// Room in the command line for the config's path once one is handed over (paths longer
/// than this show cut short in `ps`; nothing else reads them from there).
const COMMAND_LINE_ROOM: usize = 512;

/// The argument a waiting supervisor is started with.
pub fn standby_argument() -> String {
    format!("{STANDBY_FLAG}{}", "-".repeat(COMMAND_LINE_ROOM))
}

/// Whether `argument` (what follows `supervise`) asks for a waiting supervisor.
pub fn is_standby_argument(argument: &OsStr) -> bool {
    argument.as_bytes().starts_with(STANDBY_FLAG.as_bytes())
}

/// Supervisor side: waits for the daemon to name a config and sets the process up as one
/// started for it. `None` when the daemon closed the pipe (nothing to supervise).
pub fn wait_for_config() -> io::Result<Option<PathBuf>> {
    let mut line = String::new();
    if io::stdin().lock().read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let config = PathBuf::from(line.trim_end_matches('\n'));
    let null = OpenOptions::new().read(true).open("/dev/null")?;
    nix::unistd::dup2(null.as_raw_fd(), 0).map_err(io::Error::from)?;
    let log_path = config
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the config path has no directory"))?
        .join("supervisor.log");
    let log = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&log_path)?;
    nix::unistd::dup2(log.as_raw_fd(), 2).map_err(io::Error::from)?;
    show_config_in_command_line(&config);
    Ok(Some(config))
}

/// Rewrites the command line `ps` shows (/proc/self/cmdline reads the process's own argument
/// area) to `ARGV0 supervise CONFIG`, within the room the padded argument left. Cosmetic:
/// a failure leaves the standby line as it is.
fn show_config_in_command_line(config: &Path) {
    let Some((start, end)) = argument_area() else { return };
    let Some(room) = end.checked_sub(start).filter(|room| *room > 0) else {
        return;
    };
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let mut line = Vec::with_capacity(room);
    for part in [argv0.as_bytes(), b"supervise", config.as_os_str().as_bytes()] {
        line.extend_from_slice(part);
        line.push(0);
    }
    line.truncate(room - 1);
    line.resize(room, 0);
    // SAFETY: [start, end) is this process's own argument area (the kernel's arg_start and
    // arg_end for it), mapped and writable in its stack; `line` is exactly `room` bytes.
    // Nothing reads the arguments after this (the config path was copied out already).
    unsafe { std::ptr::copy_nonoverlapping(line.as_ptr(), start as *mut u8, room) };
}

/// The process's argument area (`arg_start` and `arg_end` of /proc/self/stat).
fn argument_area() -> Option<(usize, usize)> {
    let stat = procfs::process::Process::myself().ok()?.stat().ok()?;
    Some((
        usize::try_from(stat.arg_start?).ok()?,
        usize::try_from(stat.arg_end?).ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standby_argument_is_recognised_and_a_config_path_is_not() {
        assert!(is_standby_argument(OsStr::new(&standby_argument())));
        assert!(!is_standby_argument(OsStr::new(
            "/var/lib/berth/instances/abc/supervisor.json"
        )));
        assert!(standby_argument().len() > COMMAND_LINE_ROOM);
    }

    #[test]
    fn the_argument_area_is_where_the_command_line_is() {
        let (start, end) = argument_area().expect("arg_start and arg_end");
        let cmdline = std::fs::read("/proc/self/cmdline").unwrap();
        assert_eq!(end - start, cmdline.len());
        // SAFETY: reading this process's own argument area, as the kernel reports it.
        let area = unsafe { std::slice::from_raw_parts(start as *const u8, end - start) };
        assert_eq!(area, cmdline.as_slice());
    }
}
