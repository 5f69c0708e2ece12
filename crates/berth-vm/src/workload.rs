//! A VM under a berth supervisor: the workload is the qemu process. When berth's guest agent
//! runs inside, starting waits until the guest reports the command running (or gives up,
//! with the console's last lines, and stops qemu), and the exit status is the command's.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use berth_model::driver::VirtiofsShare;
use berth_model::ExitStatus;
use berth_shim::{ChildStdio, Workload};

use crate::virtiofs::RunningShares;

pub struct VmWorkload {
    args: Vec<String>,
    status_path: Option<PathBuf>,
    console_path: Option<PathBuf>,
    boot_timeout: Duration,
    stdio: Option<(OwnedFd, OwnedFd, OwnedFd)>,
    child: Option<Child>,
    virtiofs: Vec<VirtiofsShare>,
    /// The virtiofsd processes, from just before qemu starts until it ended.
    shares: RunningShares,
}

impl VmWorkload {
    pub fn new(
        args: Vec<String>,
        status_path: Option<PathBuf>,
        console_path: Option<PathBuf>,
        boot_timeout_secs: u64,
        virtiofs: Vec<VirtiofsShare>,
    ) -> Self {
        VmWorkload {
            args,
            status_path,
            console_path,
            boot_timeout: Duration::from_secs(boot_timeout_secs),
            stdio: None,
            child: None,
            virtiofs,
            shares: RunningShares::default(),
        }
    }

    fn console_tail(&self) -> String {
        let Some(path) = &self.console_path else {
            return String::new();
        };
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }

    /// Lines the guest agent wrote on the status port.
    fn status_lines(&self) -> Vec<serde_json::Value> {
        let Some(path) = &self.status_path else {
            return Vec::new();
        };
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
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
        // The command's status, as the agent reported it; a VM killed from outside keeps qemu's.
        self.status_lines()
            .into_iter()
            .rev()
            .find_map(|line| serde_json::from_value::<ExitStatus>(line).ok())
            .unwrap_or(status)
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
        let mut child = berth_process::command(program)
            .args(args)
            .stdin(Stdio::from(stdin))
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr))
            .spawn()
            .map_err(|e| format!("cannot run {program}: {e}"))?;
        let pid = child.id();
        if self.status_path.is_some() {
            let deadline = Instant::now() + self.boot_timeout;
            loop {
                if self
                    .status_lines()
                    .iter()
                    .any(|l| l.get("event").is_some() || l.get("code").is_some())
                {
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
