//! A VM under a berth supervisor: the workload is the qemu process. When berth's guest agent
//! runs inside, starting waits until the guest reports the command running (or gives up,
//! with the console's last lines, and stops qemu), and the exit status is the command's.
//! What the guest writes outside its stdio (the serial console, the status port) reaches
//! the host through pipes this supervisor drains into capped files: a guest cannot fill
//! the host's disk through them.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use berth_model::driver::VirtiofsShare;
use berth_model::log::LogLimits;
use berth_model::ExitStatus;
use berth_shim::rotating::RotatingFile;
use berth_shim::{ChildStdio, Workload};

use crate::qemu::{CONSOLE_FD, STATUS_FD};
use crate::virtiofs::RunningShares;

/// Caps of `guest-status`: the agent writes two short lines; a guest writing more is hostile.
const STATUS_LIMITS: LogLimits = LogLimits {
    max_size_bytes: 64 << 10,
    max_files: 2,
};
/// Longer status lines are not the agent's and are dropped.
const MAX_STATUS_LINE: usize = 4096;

/// What the guest agent reported on the status port.
#[derive(Debug, Default)]
struct GuestStatus {
    started: bool,
    exit: Option<ExitStatus>,
}

pub struct VmWorkload {
    args: Vec<String>,
    status_path: Option<PathBuf>,
    console_path: Option<PathBuf>,
    boot_timeout: Duration,
    log_limits: LogLimits,
    stdio: Option<(OwnedFd, OwnedFd, OwnedFd)>,
    child: Option<Child>,
    virtiofs: Vec<VirtiofsShare>,
    /// The virtiofsd processes, from just before qemu starts until it ended.
    shares: RunningShares,
    status: Arc<Mutex<GuestStatus>>,
    status_reader: Option<JoinHandle<()>>,
}

/// A pipe whose write end qemu gets as `target_fd` (what its command line names as
/// `/dev/fd/N`), and whose read end a thread of this supervisor drains into a capped file.
struct GuestOutput {
    read: OwnedFd,
    write: OwnedFd,
    target_fd: i32,
}

impl GuestOutput {
    fn new(target_fd: i32) -> Result<GuestOutput, String> {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
        // Above the fds qemu is given, so placing one cannot overwrite another.
        let write = nix::fcntl::fcntl(write.as_raw_fd(), nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(10))
            .map(|fd| {
                // SAFETY: fcntl returned a new descriptor that nothing else owns.
                unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) }
            })
            .map_err(|e| format!("pipe: {e}"))?;
        Ok(GuestOutput { read, write, target_fd })
    }
}

/// Copies the guest's serial console into `console.log`, rotated at the instance's log caps.
fn copy_console(read: OwnedFd, path: PathBuf, limits: LogLimits) {
    let Ok(mut log) = RotatingFile::open(&path, limits) else {
        return;
    };
    let mut pipe = File::from(read);
    let mut buffer = vec![0u8; 16 << 10];
    while let Ok(n) = pipe.read(&mut buffer) {
        if n == 0 {
            break;
        }
        // Flushed at once: a failed boot's error quotes the console's last lines.
        if log.write_stream(&buffer[..n]).and_then(|_| log.flush()).is_err() {
            break;
        }
    }
}

/// Reads the status port's lines into `status`, keeping a capped copy in `guest-status`.
fn read_status(read: OwnedFd, path: PathBuf, status: Arc<Mutex<GuestStatus>>) {
    let mut log = RotatingFile::open(&path, STATUS_LIMITS).ok();
    let mut pipe = File::from(read);
    let mut buffer = vec![0u8; 4096];
    let mut line: Vec<u8> = Vec::new();
    let mut overlong = false;
    while let Ok(n) = pipe.read(&mut buffer) {
        if n == 0 {
            break;
        }
        for byte in &buffer[..n] {
            if *byte != b'\n' {
                if line.len() < MAX_STATUS_LINE {
                    line.push(*byte);
                } else {
                    overlong = true;
                }
                continue;
            }
            if !overlong {
                record_status_line(&line, &status);
                line.push(b'\n');
                if let Some(log) = log.as_mut() {
                    let _ = log.write_record(&line).and_then(|_| log.flush());
                }
            }
            line.clear();
            overlong = false;
        }
    }
}

fn record_status_line(line: &[u8], status: &Mutex<GuestStatus>) {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(line) else {
        return;
    };
    let Ok(mut status) = status.lock() else {
        return;
    };
    if value.get("event").is_some() {
        status.started = true;
    } else if let Ok(exit) = serde_json::from_value::<ExitStatus>(value) {
        status.exit = Some(exit);
    }
}

/// The last lines of a file, read from its end.
fn last_lines(path: &Path, count: usize) -> String {
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let length = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(length.saturating_sub(4096)));
    let mut tail = Vec::new();
    let _ = file.take(4096).read_to_end(&mut tail);
    let text = String::from_utf8_lossy(&tail);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(count)..].join(" | ")
}

impl VmWorkload {
    pub fn new(
        args: Vec<String>,
        status_path: Option<PathBuf>,
        console_path: Option<PathBuf>,
        boot_timeout_secs: u64,
        virtiofs: Vec<VirtiofsShare>,
        log_limits: LogLimits,
    ) -> Self {
        VmWorkload {
            args,
            status_path,
            console_path,
            boot_timeout: Duration::from_secs(boot_timeout_secs),
            log_limits,
            stdio: None,
            child: None,
            virtiofs,
            shares: RunningShares::default(),
            status: Arc::default(),
            status_reader: None,
        }
    }

    fn console_tail(&self) -> String {
        match &self.console_path {
            Some(path) => last_lines(path, 5),
            None => String::new(),
        }
    }

    /// True once the agent reported the command started (or already ended).
    fn guest_came_up(&self) -> bool {
        self.status
            .lock()
            .map(|s| s.started || s.exit.is_some())
            .unwrap_or(false)
    }
}

impl Workload for VmWorkload {
    fn create(&mut self, stdio: ChildStdio) -> Result<(), String> {
        match stdio {
            ChildStdio::Pipes { stdin, stdout, stderr } => {
                self.stdio = Some((stdin, stdout, stderr));
                Ok(())
            }
            ChildStdio::Terminal { .. } => Err("VMs take no terminal (-t); use `berth console`".into()),
        }
    }

    fn start(&mut self) -> Result<u32, String> {
        // qemu connects to the virtiofsd sockets as it starts: they must be listening.
        self.shares = RunningShares::start(&self.virtiofs)?;
        let started = self.start_qemu();
        if started.is_err() {
            self.shares.stop();
        }
        started
    }

    fn exit_status(&mut self, status: ExitStatus) -> ExitStatus {
        // qemu is gone: nothing serves the shares any more.
        self.shares.stop();
        if self.status_path.is_none() {
            return status;
        }
        // qemu is gone, so the reader is at the pipe's end; wait for its last line briefly.
        if let Some(reader) = self.status_reader.take() {
            let deadline = Instant::now() + Duration::from_secs(2);
            while !reader.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if reader.is_finished() {
                let _ = reader.join();
            }
        }
        // The command's status, as the agent reported it; a VM killed from outside keeps qemu's.
        self.status.lock().ok().and_then(|s| s.exit).unwrap_or(status)
    }

    fn clean_up(&mut self) {
        self.shares.stop();
    }
}

impl VmWorkload {
    fn start_qemu(&mut self) -> Result<u32, String> {
        let (program, args) = self.args.split_first().ok_or("empty qemu command")?;
        let (stdin, stdout, stderr) = self.stdio.take().ok_or("already started")?;
        if let Some(path) = &self.status_path {
            let _ = std::fs::write(path, b"");
        }
        let console = self
            .console_path
            .as_ref()
            .map(|_| GuestOutput::new(CONSOLE_FD))
            .transpose()?;
        let status = self
            .status_path
            .as_ref()
            .map(|_| GuestOutput::new(STATUS_FD))
            .transpose()?;
        let targets: Vec<(i32, i32)> = [&console, &status]
            .into_iter()
            .flatten()
            .map(|output| (output.write.as_raw_fd(), output.target_fd))
            .collect();
        let mut command = berth_process::command(program);
        command
            .args(args)
            .stdin(Stdio::from(stdin))
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr));
        // SAFETY: dup2 is async-signal-safe; the sources are open descriptors above 9 and the
        // targets are the numbers qemu's command line names.
        unsafe {
            command.pre_exec(move || {
                for (source, target) in &targets {
                    if libc::dup2(*source, *target) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let mut child = command.spawn().map_err(|e| format!("cannot run {program}: {e}"))?;
        // Only qemu holds the write ends now: the readers see the end when it exits.
        if let (Some(output), Some(path)) = (console, self.console_path.clone()) {
            let limits = self.log_limits;
            let read = output.read;
            drop(output.write);
            std::thread::Builder::new()
                .stack_size(64 << 10)
                .spawn(move || copy_console(read, path, limits))
                .map_err(|e| format!("starting the console reader: {e}"))?;
        }
        if let (Some(output), Some(path)) = (status, self.status_path.clone()) {
            let shared = self.status.clone();
            let read = output.read;
            drop(output.write);
            self.status_reader = Some(
                // The default stack: a status line is JSON from the guest, and serde_json's
                // nesting limit (128) needs more than a small stack holds.
                std::thread::Builder::new()
                    .spawn(move || read_status(read, path, shared))
                    .map_err(|e| format!("starting the status reader: {e}"))?,
            );
        }
        let pid = child.id();
        // A boot timeout of 0: a migration's target, whose guest is already up.
        if self.status_path.is_some() && !self.boot_timeout.is_zero() {
            let deadline = Instant::now() + self.boot_timeout;
            loop {
                if self.guest_came_up() {
                    break;
                }
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!(
                        "qemu exited ({status}) before the guest came up; console: {}",
                        self.console_tail()
                    ));
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "the guest did not come up within {}s; console: {}",
                        self.boot_timeout.as_secs(),
                        self.console_tail()
                    ));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.child = Some(child);
        Ok(pid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_flooded_status_port_stays_capped_and_the_exit_status_is_read() {
        let dir = std::env::temp_dir().join(format!("berth-status-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("guest-status");
        let (read, write) = nix::unistd::pipe().unwrap();
        let status = Arc::new(Mutex::new(GuestStatus::default()));
        let reader = {
            let (path, status) = (path.clone(), status.clone());
            std::thread::spawn(move || read_status(read, path, status))
        };
        let mut guest = File::from(write);
        guest.write_all(b"{\"event\":\"started\"}\n").unwrap();
        let flood = vec![b'x'; 1 << 20];
        for _ in 0..8 {
            guest.write_all(&flood).unwrap();
        }
        guest.write_all(b"\n").unwrap();
        // Nested deeper than serde_json goes: an error, never a blown stack.
        guest.write_all(&[b'['; 3000]).unwrap();
        guest.write_all(b"\n").unwrap();
        for _ in 0..20_000 {
            guest.write_all(b"{\"noise\":1}\n").unwrap();
        }
        guest
            .write_all(b"{\"code\":3,\"signal\":null,\"oom_killed\":false}\n")
            .unwrap();
        drop(guest);
        reader.join().unwrap();
        let status = status.lock().unwrap();
        assert!(status.started);
        assert_eq!(status.exit.map(|e| e.code), Some(3));
        let total: u64 = berth_shim::rotating::log_files_oldest_first(&path)
            .iter()
            .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
            .sum();
        assert!(total <= STATUS_LIMITS.total_bytes(), "guest-status holds {total} bytes");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
