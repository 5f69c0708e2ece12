//! How berth starts other programs. A Rust program ignores SIGPIPE, glibc's posix_spawn leaves
//! its two internal signals ignored in the child, and whoever started the daemon may have
//! ignored or blocked more; ignored dispositions and the mask survive execve. Every program
//! berth starts — host helpers (qemu, iptables, mkfs, ...), container and exec processes,
//! commands in a VM guest — begins instead as a shell would start it: every signal at its
//! default disposition, none blocked.

use std::ffi::OsStr;
use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// A `Command` for `program` whose child starts with clean signal state (see the module).
/// Use it instead of `Command::new` everywhere berth runs another program.
pub fn command(program: impl AsRef<OsStr>) -> Command {
    let mut command = Command::new(program);
    // A pre_exec hook also makes std fork and exec instead of using posix_spawn, which is
    // what leaves glibc's internal signals ignored.
    // SAFETY: `reset_signal_state` only makes async-signal-safe system calls.
    unsafe {
        command.pre_exec(reset_signal_state);
    }
    command
}

/// A `Command` for one of berth's own programs (the supervisor) that resets its signal state
/// itself, first thing (`reset_signal_state`, then its own choices): without a pre_exec hook
/// std starts it with posix_spawn (vfork-like), which does not copy the daemon's page tables
/// as fork does — about 0.7 ms of every container start here.
pub fn async_command_resetting_itself(program: impl AsRef<OsStr>) -> tokio::process::Command {
    tokio::process::Command::new(program)
}

/// `command` for async code.
pub fn async_command(program: impl AsRef<OsStr>) -> tokio::process::Command {
    tokio::process::Command::from(command(program))
}

/// The kernel's `struct sigaction` (x86-64 and the generic layout aarch64 and riscv64 use).
#[repr(C)]
struct KernelSigaction {
    handler: libc::sighandler_t,
    flags: libc::c_ulong,
    restorer: usize,
    mask: u64,
}

/// Sets every signal's disposition to SIG_DFL and unblocks all signals in the calling thread.
/// Meant for the moment between fork and exec: async-signal-safe (raw system calls only, no
/// allocation). Raw `rt_sigaction` because glibc refuses to touch its internal signals (32
/// and 33), which are exactly the ones its posix_spawn leaves ignored.
pub fn reset_signal_state() -> io::Result<()> {
    let default = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    let kernel_set_size = std::mem::size_of::<u64>();
    // The kernel's signals are 1..=64 on every architecture berth runs on.
    for signal in 1..=64 {
        if signal == libc::SIGKILL || signal == libc::SIGSTOP {
            continue;
        }
        // SAFETY: rt_sigaction reads a valid struct and writes nothing (old action is null).
        let result = unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                signal,
                &default as *const KernelSigaction,
                std::ptr::null_mut::<KernelSigaction>(),
                kernel_set_size,
            )
        };
        if result != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let empty: u64 = 0;
    // SAFETY: rt_sigprocmask reads a valid 8-byte set and writes nothing.
    let result = unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &empty as *const u64,
            std::ptr::null_mut::<u64>(),
            kernel_set_size,
        )
    };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_field(status: &str, field: &str) -> String {
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .map(|value| value.trim().to_string())
            .unwrap_or_default()
    }

    #[test]
    fn children_start_with_default_dispositions_and_no_blocked_signals() {
        // This test's process ignores SIGPIPE (the Rust runtime); ignore SIGQUIT and block
        // SIGUSR1 on this thread too, as a daemon's parent might have.
        // SAFETY: changing this test thread's signal state only.
        unsafe {
            libc::signal(libc::SIGQUIT, libc::SIG_IGN);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGUSR1);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        }
        let output = command("/bin/cat").arg("/proc/self/status").output().unwrap();
        let status = String::from_utf8_lossy(&output.stdout);
        assert_eq!(status_field(&status, "SigIgn:"), "0000000000000000", "{status}");
        assert_eq!(status_field(&status, "SigBlk:"), "0000000000000000", "{status}");

        // What a plain Command gives, for contrast: the reason this crate exists.
        let plain = Command::new("/bin/cat").arg("/proc/self/status").output().unwrap();
        let plain = String::from_utf8_lossy(&plain.stdout);
        assert_ne!(status_field(&plain, "SigIgn:"), "0000000000000000", "{plain}");
        // SAFETY: restoring this test thread's signal state.
        unsafe {
            libc::signal(libc::SIGQUIT, libc::SIG_DFL);
        }
    }

    /// Every program berth starts goes through `command` or `async_command`: a
    /// `Command::new` elsewhere in the workspace's sources would start one with SIGPIPE
    /// ignored again.
    #[test]
    fn no_other_crate_builds_commands_itself() {
        let this_crate = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let crates = this_crate.parent().unwrap().to_path_buf();
        let mut offenders = Vec::new();
        let mut pending = vec![crates];
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    pending.push(path);
                    continue;
                }
                if path.extension().is_none_or(|e| e != "rs") || path.starts_with(this_crate) {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                for (number, line) in text.lines().enumerate() {
                    if line.contains("Command::new(") && !line.trim_start().starts_with("//") {
                        offenders.push(format!("{}:{}: {}", path.display(), number + 1, line.trim()));
                    }
                }
            }
        }
        assert!(
            offenders.is_empty(),
            "use berth_process::command instead of Command::new:\n{}",
            offenders.join("\n")
        );
    }
}
