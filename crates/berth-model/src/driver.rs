//! The one interface containers and VMs share (after Nomad's task driver): the engine
//! decides *when* to start, stop or update an instance; a driver knows *how* for its kind.
//! Every started instance runs under a supervisor process described by `SupervisorConfig`,
//! so attach, logs, exit status and restart recovery work the same for both kinds.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::api::{ExecRequest, InstanceStats};
use crate::image::ImageRecord;
use crate::instance::{Instance, InstanceKind, Limits};

#[derive(Debug, Error)]
pub enum DriverError {
    /// The request cannot be met; the message names the field and the fix.
    #[error("{message}")]
    Invalid { field: String, message: String },
    /// The host refused (mount failed, cgroup write failed, ...).
    #[error("{context}: {source}")]
    Host {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

impl DriverError {
    pub fn host(context: impl Into<String>, source: std::io::Error) -> Self {
        DriverError::Host {
            context: context.into(),
            source,
        }
    }
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        DriverError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

fn legacy_cgroup_parent() -> String {
    "berth".into()
}

/// What a supervisor runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Workload {
    /// Create an OCI container from `bundle` and start it on request.
    Container {
        container_id: String,
        bundle: PathBuf,
        runtime_root: PathBuf,
        /// The node's cgroup parent (configs written before nodes had their own: `berth`).
        #[serde(default = "legacy_cgroup_parent")]
        cgroup_parent: String,
    },
    /// Run a further process inside a running container (`exec`).
    ContainerExec {
        container_id: String,
        runtime_root: PathBuf,
        args: Vec<String>,
        env: Vec<String>,
        working_dir: Option<String>,
        uid: Option<u32>,
        gid: Option<u32>,
    },
    /// A host process, such as the helper of a VM exec session.
    Process { args: Vec<String>, env: Vec<String> },
    /// A VM's qemu. With `status_path`, berth's guest agent runs the workload: the start
    /// waits until the guest reports it running, and its exit status is the command's.
    Vm {
        args: Vec<String>,
        status_path: Option<PathBuf>,
        console_path: Option<PathBuf>,
        boot_timeout_secs: u64,
        /// Host directories shared with the guest: a virtiofsd each, started before qemu
        /// and ended with it.
        #[serde(default)]
        virtiofs: Vec<VirtiofsShare>,
        /// A live migration's target: qemu waits for the source's state (`-incoming`,
        /// paused with `-S`) and the guest is already up, so the start does not wait for it.
        #[serde(default)]
        incoming: bool,
    },
}

/// One host directory a VM's supervisor serves to qemu through a virtiofsd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtiofsShare {
    /// The host directory (canonical).
    pub source: PathBuf,
    /// The vhost-user socket virtiofsd listens on and qemu connects to.
    pub socket: PathBuf,
    /// virtiofsd's own messages.
    pub log: PathBuf,
    /// Served from a read-only view of the directory, so not even a guest that remounts
    /// its side read-write can change it.
    pub read_only: bool,
}

/// Everything a supervisor needs, written to `supervisor.json` in its directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SupervisorConfig {
    pub workload: Workload,
    pub tty: bool,
    pub open_stdin: bool,
    /// Where output is recorded; `None` keeps no log (exec sessions).
    pub log_path: Option<PathBuf>,
    /// Rotation caps of the log (and of a VM's console); the engine sets them.
    #[serde(default)]
    pub log_limits: crate::log::LogLimits,
    /// Where the exit status is written when the workload ends.
    pub exit_path: PathBuf,
    /// The control socket the daemon and attach clients connect to.
    pub socket_path: PathBuf,
    /// In a cluster, for an instance that would be moved if its node went down: kill the
    /// workload when the daemon's lease heartbeat goes stale (`berth_shim::fence`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence: Option<FenceConfig>,
}

/// When a supervisor fences its workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FenceConfig {
    /// The file the daemon writes the moment of each lease renewal to.
    pub heartbeat_path: PathBuf,
    /// How old that moment may grow before the workload is killed.
    pub stale_after_ms: u64,
}

/// What the host offers a driver; `berth info` shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DriverFingerprint {
    pub kind: Option<InstanceKind>,
    pub available: bool,
    /// Human-readable facts ("cgroup v1 (hybrid)", "accel tcg: kvm_pvm cannot run stock guests").
    pub details: Vec<(String, String)>,
}

#[async_trait]
pub trait InstanceDriver: Send + Sync {
    fn kind(&self) -> InstanceKind;

    fn fingerprint(&self) -> DriverFingerprint;

    /// Makes the instance runnable from `dir` (rootfs or disk, runtime spec, limits) and
    /// says how to supervise it. Called before every start.
    /// `image` is absent for instances that were not made from an image (imported VMs).
    async fn prepare_start(
        &self,
        instance: &Instance,
        image: Option<&ImageRecord>,
        dir: &Path,
    ) -> Result<SupervisorConfig, DriverError>;

    /// Releases what a stopped instance no longer needs (mounts, cgroups) but keeps
    /// what a later start reuses (writable layer, disks). Instance storage is wiped, as on
    /// EC2, unless `keep_instance_storage` (a restart).
    async fn release(&self, instance: &Instance, dir: &Path, keep_instance_storage: bool) -> Result<(), DriverError>;

    /// Cleans up what a supervisor normally removes itself (runtime state, cgroups), for
    /// an instance whose supervisor died without doing so.
    async fn reclaim(&self, instance: &Instance) -> Result<(), DriverError>;

    /// Removes every trace of the instance on this host.
    async fn remove(&self, instance: &Instance, dir: &Path) -> Result<(), DriverError>;

    /// Applies new limits to a running instance.
    async fn update_limits(&self, instance: &Instance, limits: &Limits) -> Result<(), DriverError>;

    /// Asks the instance to shut down gracefully. `Ok(false)` means the driver has no
    /// graceful way and the engine sends SIGTERM to the main process.
    async fn request_stop(&self, instance: &Instance) -> Result<bool, DriverError> {
        let _ = instance;
        Ok(false)
    }

    async fn pause(&self, instance: &Instance) -> Result<(), DriverError>;

    async fn resume(&self, instance: &Instance) -> Result<(), DriverError>;

    async fn stats(&self, instance: &Instance) -> Result<InstanceStats, DriverError>;

    /// How to supervise a further process inside the running instance.
    async fn prepare_exec(
        &self,
        instance: &Instance,
        request: &ExecRequest,
        dir: &Path,
    ) -> Result<SupervisorConfig, DriverError>;
}
