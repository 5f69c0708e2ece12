//! A workload that is a plain host process (a VM's qemu): started on `start`, with the
//! supervisor's pipes as its stdio.

use std::os::fd::OwnedFd;
use std::process::{Child, Stdio};

use crate::supervisor::{ChildStdio, Workload};

pub struct ProcessWorkload {
    args: Vec<String>,
    env: Vec<String>,
    stdio: Option<(OwnedFd, OwnedFd, OwnedFd)>,
    child: Option<Child>,
}

impl ProcessWorkload {
    pub fn new(args: Vec<String>, env: Vec<String>) -> Self {
        ProcessWorkload {
            args,
            env,
            stdio: None,
            child: None,
        }
    }
}

impl Workload for ProcessWorkload {
    fn create(&mut self, stdio: ChildStdio) -> Result<(), String> {
        match stdio {
            ChildStdio::Pipes { stdin, stdout, stderr } => {
                self.stdio = Some((stdin, stdout, stderr));
                Ok(())
            }
            ChildStdio::Terminal { .. } => Err("a process workload has no terminal".into()),
        }
    }

    fn start(&mut self) -> Result<u32, String> {
        let (program, args) = self.args.split_first().ok_or("empty command")?;
        let (stdin, stdout, stderr) = self.stdio.take().ok_or("already started")?;
        let mut command = berth_process::command(program);
        command
            .args(args)
            .stdin(Stdio::from(stdin))
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr));
        for pair in &self.env {
            if let Some((key, value)) = pair.split_once('=') {
                command.env(key, value);
            }
        }
        let child = command.spawn().map_err(|e| format!("cannot run {program}: {e}"))?;
        let pid = child.id();
        self.child = Some(child);
        Ok(pid)
    }
}
