//! Container workloads run inside a supervisor, through libcontainer (youki's runtime
//! library): the init process of a container, and exec sessions joining one. The
//! supervisor is the parent of these processes, so it reaps them directly.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_model::ExitStatus;
use berth_shim::{ChildStdio, Workload};
use caps::{CapSet, Capability};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::oci_spec::runtime::{Capability as SpecCapability, LinuxSeccomp, Process, Spec};
use libcontainer::syscall::syscall::SyscallType;
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};

use crate::cgroups::Cgroups;
use crate::seccomp_program;

/// The last step in the container, after libcontainer's set-up: installs the container's
/// seccomp filter, then runs the user's program (libcontainer's default executor) with the
/// signal state a shell would give it, not the supervisor's (SIGPIPE ignored by the Rust
/// runtime, glibc's internal signals ignored by posix_spawn).
#[derive(Clone, Default)]
struct ProgramExecutor {
    /// The container's seccomp filter, loaded just before execve (`seccomp_program` says why
    /// it is not libcontainer's to load).
    filter: Option<SeccompFilter>,
}

#[derive(Clone)]
struct SeccompFilter {
    source: FilterSource,
    /// Whether CAP_SYS_ADMIN was lent only to install the filter (the container lacks it).
    lent_sys_admin: bool,
}

#[derive(Clone)]
enum FilterSource {
    /// Compiled by the daemon (`bundle/seccomp.bpf`), read before the container's root
    /// replaces the host's.
    Program(Arc<Vec<u8>>),
    /// A container started by an earlier berth, its filter still in the spec: compiled here.
    Spec(LinuxSeccomp),
}

impl SeccompFilter {
    /// The filter of the container whose spec and bundle these are; `None` when it runs
    /// with `seccomp=unconfined`.
    fn of(spec: &Spec, bundle: &Path) -> Result<Option<Self>, String> {
        let program_path = bundle.join(seccomp_program::PROGRAM_FILE);
        match std::fs::read(&program_path) {
            Ok(program) => {
                return Ok(Some(SeccompFilter {
                    source: FilterSource::Program(Arc::new(program)),
                    lent_sys_admin: seccomp_program::lent_sys_admin(spec),
                }))
            }
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(format!("reading {}: {e}", program_path.display()))
            }
            Err(_) => {}
        }
        let Some(seccomp) = spec.linux().as_ref().and_then(|linux| linux.seccomp().clone()) else {
            return Ok(None);
        };
        let holds_sys_admin = spec
            .process()
            .as_ref()
            .and_then(|process| process.capabilities().as_ref())
            .and_then(|capabilities| capabilities.bounding().as_ref())
            .is_some_and(|bounding| bounding.contains(&SpecCapability::SysAdmin));
        Ok(Some(SeccompFilter {
            source: FilterSource::Spec(seccomp),
            lent_sys_admin: !holds_sys_admin,
        }))
    }

    fn apply(&self) -> Result<(), ExecutorError> {
        match &self.source {
            FilterSource::Program(program) => seccomp_program::load(program)
                .map_err(|e| ExecutorError::Other(format!("loading the container's seccomp filter: {e}")))?,
            FilterSource::Spec(seccomp) => {
                libcontainer::seccomp::initialize_seccomp(seccomp)
                    .map_err(|e| ExecutorError::Other(format!("loading the container's seccomp filter: {e}")))?;
            }
        }
        if self.lent_sys_admin {
            // Bounding first (needs CAP_SETPCAP, not this one), effective before permitted.
            for set in [
                CapSet::Bounding,
                CapSet::Effective,
                CapSet::Permitted,
                CapSet::Inheritable,
            ] {
                caps::drop(None, set, Capability::CAP_SYS_ADMIN)
                    .map_err(|e| ExecutorError::Other(format!("dropping CAP_SYS_ADMIN again: {e}")))?;
            }
        }
        Ok(())
    }
}

impl Executor for ProgramExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        berth_process::reset_signal_state()
            .map_err(|e| ExecutorError::Other(format!("resetting signal dispositions: {e}")))?;
        if let Some(filter) = &self.filter {
            filter.apply()?;
        }
        DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }
}

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
    executor: ProgramExecutor,
) -> Result<ContainerBuilder, String> {
    let builder = ContainerBuilder::new(container_id.to_string(), SyscallType::default())
        .with_executor(executor)
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
        let spec_path = self.bundle.join("config.json");
        let spec = Spec::load(&spec_path).map_err(|e| format!("reading {}: {e}", spec_path.display()))?;
        let executor = ProgramExecutor {
            filter: SeccompFilter::of(&spec, &self.bundle)?,
        };
        let builder = builder_with_stdio(&self.container_id, &self.runtime_root, stdio, executor)?;
        // Created where the other containers' mounts are out of sight (see mount_view).
        let view = match self.bundle.parent() {
            Some(instance_dir) => crate::mount_view::enter(instance_dir)?,
            None => None,
        };
        let created = with_container_umask(|| {
            builder
                .as_init(&self.bundle)
                .with_systemd(false)
                .with_detach(true)
                .build()
        });
        if let Some(view) = view {
            // The container is created (its init waits for `start`): failing the start here
            // would leave it behind. The supervisor can do its work from the namespace it is
            // in (its instance's mounts are there, only the other instances' are not).
            if let Err(e) = view.leave() {
                tracing::error!(error = %e, "staying in the mount namespace the container was created from");
            }
        }
        let container = created.map_err(|e| format!("creating the container: {e}"))?;
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
        if all {
            if let Some(container) = self.container.as_mut() {
                // libcontainer signals every process of the cgroup; it takes only the
                // signals nix names (the daemon asks this for SIGKILL).
                let named = nix::sys::signal::Signal::try_from(signal).map_err(|e| e.to_string())?;
                return container.kill(named, true).map_err(|e| format!("kill: {e}"));
            }
        }
        berth_shim::supervisor::send_signal(pid, signal)
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

    /// The spec the container was created with, and its bundle.
    fn container_spec(&self) -> Result<(Spec, PathBuf), String> {
        let container = Container::load(self.runtime_root.join(&self.container_id))
            .map_err(|e| format!("exec: loading the container's state: {e}"))?;
        let bundle = container.bundle().to_path_buf();
        let spec_path = bundle.join("config.json");
        let spec = Spec::load(&spec_path).map_err(|e| format!("exec: reading {}: {e}", spec_path.display()))?;
        Ok((spec, bundle))
    }

    /// The session's process: the container's own definition (capabilities, rlimits,
    /// no_new_privileges) with this session's command, environment, directory, user and
    /// terminal — as `docker exec` does. Handing libcontainer a whole process keeps its
    /// tenant defaults out (no_new_privileges on, RLIMIT_NOFILE 1024, cwd /).
    fn process(&self, container: &Spec, terminal: bool, lend_sys_admin: bool) -> Result<Process, String> {
        let mut process = container
            .process()
            .clone()
            .ok_or("exec: the container's spec has no process")?;
        process.set_args(Some(self.args.clone()));
        process.set_env(Some(self.env.clone()));
        if let Some(working_dir) = &self.working_dir {
            process.set_cwd(working_dir.into());
        }
        let mut user = process.user().clone();
        if let Some(uid) = self.uid {
            user.set_uid(uid);
        }
        if let Some(gid) = self.gid {
            user.set_gid(gid);
        }
        // The container's supplementary groups belong to its own user.
        if self.uid.is_some() || self.gid.is_some() {
            user.set_additional_gids(None);
        }
        process.set_user(user);
        process.set_terminal(Some(terminal));
        process.set_no_new_privileges(Some(process.no_new_privileges().unwrap_or(false)));
        if lend_sys_admin {
            seccomp_program::lend_sys_admin(&mut process);
        }
        Ok(process)
    }
}

impl Workload for ExecWorkload {
    fn create(&mut self, stdio: ChildStdio) -> Result<(), String> {
        self.stdio = Some(stdio);
        Ok(())
    }

    fn start(&mut self) -> Result<u32, String> {
        let stdio = self.stdio.take().ok_or("already started")?;
        let (container, bundle) = self.container_spec()?;
        let filter = SeccompFilter::of(&container, &bundle).map_err(|e| format!("exec: {e}"))?;
        let lend_sys_admin = filter.as_ref().is_some_and(|f| f.lent_sys_admin);
        let terminal = matches!(stdio, ChildStdio::Terminal { .. });
        let process = self.process(&container, terminal, lend_sys_admin)?;
        // The supervisor runs in its session's own directory, which goes when the session ends.
        let process_path = std::env::current_dir()
            .map_err(|e| format!("exec: the session directory: {e}"))?
            .join("process.json");
        let document = serde_json::to_vec(&process).map_err(|e| format!("exec: encoding the process: {e}"))?;
        std::fs::write(&process_path, document)
            .map_err(|e| format!("exec: writing {}: {e}", process_path.display()))?;
        let executor = ProgramExecutor { filter };
        let builder = builder_with_stdio(&self.container_id, &self.runtime_root, stdio, executor)?;
        let pid = with_container_umask(|| {
            builder
                .as_tenant()
                .with_process(Some(&process_path))
                .with_detach(true)
                .build()
        })
        .map_err(|e| format!("exec: {e}"))?;
        make_runtime_state_private(&self.runtime_root.join(&self.container_id));
        Ok(pid.as_raw() as u32)
    }
}
