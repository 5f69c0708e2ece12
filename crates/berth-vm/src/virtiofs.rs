//! Host directories shared with a VM through virtiofs: the VM's supervisor starts one
//! virtiofsd (QEMU's, `/usr/lib/qemu/virtiofsd`) per directory before qemu and ends them
//! with it; qemu gets a `vhost-user-fs-pci` device per share and the guest agent mounts
//! each by its tag. vhost-user needs the guest's memory shared with virtiofsd, so such VMs
//! run on a shared memfd backend (hot-added memory too).

use std::ffi::CString;
use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use berth_model::driver::VirtiofsShare;

pub const VIRTIOFSD: &str = "/usr/lib/qemu/virtiofsd";
/// How long virtiofsd may take to open its socket.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(10);
/// How long virtiofsd may take to end after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(2);

pub fn available() -> bool {
    Path::new(VIRTIOFSD).is_file()
}

/// The tag under which the guest finds share `index`.
pub fn tag(index: usize) -> String {
    format!("berth{index}")
}

/// virtiofsd's `-o` parser splits at commas: a path must have them (and backslashes) escaped.
fn escape_option(value: &str) -> String {
    value.replace('\\', "\\\\").replace(',', "\\,")
}

/// The virtiofsd processes of one VM, ended by `stop` (or when the supervisor dies:
/// they get SIGKILL as their parent-death signal).
#[derive(Default)]
pub struct RunningShares {
    daemons: Vec<(Child, Option<OwnedFd>)>,
}

/// A pidfd for `pid`: signals through it can never reach a recycled pid, even after the
/// supervisor's reaper collected the process.
fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    // SAFETY: a descriptor pidfd_open just returned, owned from here on.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn pidfd_signal(pidfd: &OwnedFd, signal: i32) {
    // SAFETY: pidfd_send_signal on a descriptor we own; no siginfo.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        );
    }
}

/// Whether the process behind `pidfd` ended within `timeout` (a pidfd turns readable then).
fn pidfd_exited(pidfd: &OwnedFd, timeout: Duration) -> bool {
    let mut poll = libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one pollfd we own.
    let ready = unsafe { libc::poll(&mut poll, 1, timeout.as_millis() as i32) };
    ready > 0
}

impl RunningShares {
    /// Starts a virtiofsd per share and waits until each listens on its socket.
    pub fn start(shares: &[VirtiofsShare]) -> Result<RunningShares, String> {
        let mut running = RunningShares::default();
        for share in shares {
            if let Err(e) = running.start_one(share) {
                running.stop();
                return Err(e);
            }
        }
        Ok(running)
    }

    fn start_one(&mut self, share: &VirtiofsShare) -> Result<(), String> {
        let _ = std::fs::remove_file(&share.socket);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&share.log)
            .map_err(|e| format!("opening {}: {e}", share.log.display()))?;
        let source = share
            .source
            .to_str()
            .ok_or("the shared directory's path is not UTF-8")?;
        let mut command = berth_process::command(VIRTIOFSD);
        command
            .arg(format!("--socket-path={}", share.socket.display()))
            .args(["-o", &format!("source={}", escape_option(source))])
            // Metadata and data revalidated about once a second (close-to-open consistency),
            // as Kata Containers runs it; the sandbox keeps it inside the directory.
            .args(["-o", "cache=auto", "-o", "sandbox=namespace", "-o", "log_level=warn"])
            // No device nodes from the guest in a host directory (as nodev does for volumes).
            .args(["-o", "modcaps=-mknod"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        let read_only_view = share
            .read_only
            .then(|| CString::new(share.source.as_os_str().as_bytes()))
            .transpose()
            .map_err(|_| "the shared directory's path contains NUL")?;
        // SAFETY: between fork and exec only raw system calls on memory prepared before.
        unsafe {
            command.pre_exec(move || {
                // Files the guest creates in the host directory get Docker's modes, not the
                // daemon's private umask.
                libc::umask(0o022);
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(path) = &read_only_view {
                    read_only_mount_namespace(path)?;
                }
                Ok(())
            });
        }
        let child = command.spawn().map_err(|e| format!("cannot run {VIRTIOFSD}: {e}"))?;
        let pidfd = pidfd_open(child.id());
        self.daemons.push((child, pidfd));
        let deadline = Instant::now() + SOCKET_TIMEOUT;
        while !share.socket.exists() {
            let (child, _) = self.daemons.last_mut().ok_or("no virtiofsd")?;
            let gone = matches!(child.try_wait(), Ok(Some(_)) | Err(_));
            if gone || Instant::now() >= deadline {
                let messages = std::fs::read_to_string(&share.log).unwrap_or_default();
                let last = messages
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("no message");
                return Err(format!(
                    "virtiofsd for {} did not {}: {last}",
                    share.source.display(),
                    if gone { "start" } else { "open its socket in time" }
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Ends every virtiofsd: SIGTERM, then SIGKILL after a grace period. Idempotent.
    pub fn stop(&mut self) {
        for (child, pidfd) in &self.daemons {
            match pidfd {
                Some(pidfd) => pidfd_signal(pidfd, libc::SIGTERM),
                None => {
                    // SAFETY: kill of our own child, not yet waited for by us.
                    unsafe {
                        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
                    }
                }
            }
        }
        for (mut child, pidfd) in self.daemons.drain(..) {
            let ended = pidfd.as_ref().is_some_and(|fd| pidfd_exited(fd, STOP_GRACE));
            if !ended {
                match &pidfd {
                    Some(fd) => pidfd_signal(fd, libc::SIGKILL),
                    None => {
                        let _ = child.kill();
                    }
                }
            }
            // Reaped here unless the supervisor's reaper got it first (then this fails).
            let _ = child.wait();
        }
    }
}

impl Drop for RunningShares {
    fn drop(&mut self) {
        self.stop();
    }
}

/// In a mount namespace of its own (which the host never sees and which ends with the
/// process), makes `path` a read-only view of itself, submounts included. virtiofsd then
/// serves that view: writes from the guest fail with EROFS whatever it mounts on its side.
/// Runs between fork and exec: raw system calls only.
fn read_only_mount_namespace(path: &CString) -> std::io::Result<()> {
    let last_error = std::io::Error::last_os_error;
    // SAFETY: unshare, mount and mount_setattr with valid NUL-terminated strings and a
    // mount_attr we own.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return Err(last_error());
        }
        let root = c"/";
        if libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            return Err(last_error());
        }
        if libc::mount(
            path.as_ptr(),
            path.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND | libc::MS_REC,
            std::ptr::null(),
        ) != 0
        {
            return Err(last_error());
        }
        let mut attr: libc::mount_attr = std::mem::zeroed();
        attr.attr_set = libc::MOUNT_ATTR_RDONLY;
        if libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::AT_RECURSIVE,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        ) != 0
        {
            return Err(last_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_values_are_escaped() {
        assert_eq!(escape_option("/srv/a,b\\c"), "/srv/a\\,b\\\\c");
    }
}
