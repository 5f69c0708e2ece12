//! Container workloads run inside a supervisor, through libcontainer (youki's runtime
//! library): the init process of a container, and exec sessions joining one. The
//! supervisor is the parent of these processes, so it reaps them directly.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use berth_model::ExitStatus;
use berth_shim::{ChildStdio, Workload};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::syscall::syscall::SyscallType;

use crate::cgroups::Cgroups;

/// Runs `f` under Docker's umask (0022): a container's processes start with it, and the
/// mount points libcontainer makes in the rootfs get their modes from it. The supervisor
/// itself keeps the daemon's private umask for its own files.
fn with_container_umask<T>(f: impl FnOnce() -> T) -> T {
    use nix::sys::stat::{umask, Mode};
    let previous = umask(Mode::from_bits_truncate(0o022));
    let result = f();
    umask(previous);
    result
}

/// Takes group and other access off the runtime's own state of a container (made under the
/// container umask above): its directory and the files and sockets in it.
fn make_runtime_state_private(state_dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let restrict = |path: &Path| {
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_symlink() {
                let mode = meta.permissions().mode() & 0o7777 & !0o077;
                let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
            }
        }
    };
    restrict(state_dir);
    if let Ok(entries) = std::fs::read_dir(state_dir) {
        for entry in entries.flatten() {
            restrict(&entry.path());
        }
    }
}

fn builder_with_stdio(
    container_id: &str,
    runtime_root: &PathBuf,
    stdio: ChildStdio,
) -> Result<ContainerBuilder, String> {
    let builder = ContainerBuilder::new(container_id.to_string(), SyscallType::default())
        .with_root_path(runtime_root)
        .map_err(|e| format!("runtime root: {e}"))?;
    Ok(match stdio {
        ChildStdio::Pipes { stdin, stdout, stderr } => {
            builder.with_stdin(stdin).with_stdout(stdout).with_stderr(stderr)
        }
        ChildStdio::Terminal { console_socket } => builder.with_console_socket(Some(console_socket)),
    })
}

/// The init process of a container: created when the supervisor starts, run on `start`.
pub struct ContainerWorkload {
    pub container_id: String,
    pub bundle: PathBuf,
    pub runtime_root: PathBuf,
    pub cgroups: Option<Cgroups>,
    container: Option<Container>,
}

impl ContainerWorkload {
    pub fn new(container_id: String, bundle: PathBuf, runtime_root: PathBuf, cgroups: Option<Cgroups>) -> Self {
        ContainerWorkload {
            container_id,
            bundle,
            runtime_root,
            cgroups,
            container: None,
        }
    }
}

impl Workload for ContainerWorkload {
    fn create(&mut self, stdio: ChildStdio) -> Result<(), String> {
        // State of an earlier run blocks the id: its supervisor may still be cleaning up
        // (it reports the exit first), or it died without doing so.
        let stale = self.runtime_root.join(&self.container_id);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while stale.exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        if stale.exists() {
            if let Ok(mut old) = Container::load(stale.clone()) {
                let _ = old.delete(true);
            }
            let _ = std::fs::remove_dir_all(&stale);
        }
        let builder = builder_with_stdio(&self.container_id, &self.runtime_root, stdio)?;
        let container = with_container_umask(|| {
            builder
                .as_init(&self.bundle)
                .with_systemd(false)
                .with_detach(true)
                .build()
        })
        .map_err(|e| format!("creating the container: {e}"))?;
        make_runtime_state_private(&self.runtime_root.join(&self.container_id));
        self.container = Some(container);
        Ok(())
    }

    fn start(&mut self) -> Result<u32, String> {
        let container = self.container.as_mut().ok_or("the container was not created")?;
        container.start().map_err(|e| format!("starting the container: {e}"))?;
        container
            .pid()
            .map(|pid| pid.as_raw() as u32)
            .ok_or_else(|| "the container has no pid".to_string())
    }

    fn signal(&mut self, pid: u32, signal: i32, all: bool) -> Result<(), String> {
        let signal = nix::sys::signal::Signal::try_from(signal).map_err(|e| e.to_string())?;
        if all {
            if let Some(container) = self.container.as_mut() {
                return container.kill(signal, true).map_err(|e| format!("kill: {e}"));
            }
        }
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).map_err(|e| format!("kill: {e}"))
    }

    fn exit_status(&mut self, mut status: ExitStatus) -> ExitStatus {
        if let Some(cgroups) = &self.cgroups {
            status.oom_killed = cgroups.oom_kills(&self.container_id) > 0;
        }
        status
    }

    fn clean_up(&mut self) {
        let container = self
            .container
            .take()
            .or_else(|| Container::load(self.runtime_root.join(&self.container_id)).ok());
        let deleted = match container {
            Some(mut container) => container.delete(true).map_err(|e| {
                eprintln!("berth supervisor: removing runtime state: {e}");
            }),
            None => Err(()),
        };
        if deleted.is_err() {
            if let Some(cgroups) = &self.cgroups {
                cgroups.remove(&self.container_id);
            }
        }
    }
}

/// A further process in a running container (`berth exec`), started on `start`.
pub struct ExecWorkload {
    pub container_id: String,
    pub runtime_root: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    stdio: Option<ChildStdio>,
}

impl ExecWorkload {
    pub fn new(
        container_id: String,
        runtime_root: PathBuf,
        args: Vec<String>,
        env: Vec<String>,
        working_dir: Option<String>,
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> Self {
        ExecWorkload {
            container_id,
            runtime_root,
            args,
            env,
            working_dir,
            uid,
            gid,
            stdio: None,
        }
    }
}

impl Workload for ExecWorkload {
    fn create(&mut self, stdio: ChildStdio) -> Result<(), String> {
        self.stdio = Some(stdio);
        Ok(())
    }

    fn start(&mut self) -> Result<u32, String> {
        let stdio = self.stdio.take().ok_or("already started")?;
        let env: HashMap<String, String> = self
            .env
            .iter()
            .filter_map(|pair| pair.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
            .collect();
        let builder = builder_with_stdio(&self.container_id, &self.runtime_root, stdio)?;
        let pid = with_container_umask(|| {
            builder
                .as_tenant()
                .with_container_args(self.args.clone())
                .with_env(env)
                .with_cwd(self.working_dir.as_ref())
                .with_user(self.uid)
                .with_group(self.gid)
                .with_detach(true)
                .build()
        })
        .map_err(|e| format!("exec: {e}"))?;
        make_runtime_state_private(&self.runtime_root.join(&self.container_id));
        Ok(pid.as_raw() as u32)
    }
}
