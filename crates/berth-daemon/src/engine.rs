//! The engine: decides when instances are created, started, stopped and removed, keeps
//! their records in the state store, and leaves the how to the driver of their kind.
//! Every started instance runs under a supervisor process; the engine talks to it over its
//! control socket and learns of exits from it, also after a daemon restart.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use berth_container::ContainerDriver;
use berth_image::ImageStore;
use berth_model::api::{
    CreateInstanceRequest, CreatedResponse, Event, ExecRequest, HostInfo, InstanceCounts, InstanceStats, LimitsRequest,
    TopResponse, TreeEntry, WaitCondition, WaitResponse,
};
use berth_model::driver::{InstanceDriver, SupervisorConfig};
use berth_model::image::ImageRecord;
use berth_model::instance::{generate_name, new_instance_id, short_id, validate_name, ProcessSpec};
use berth_model::log::{LogLimits, LogOptions};
use berth_model::network::{PortMapping, DEFAULT_NETWORK};
use berth_model::quantity::{ByteSize, LimitSetting, MilliCpus};
use berth_model::types::InstanceType;
use berth_model::volume::{NfsMode, Volume, VolumeMount};
use berth_model::{ExitStatus, Instance, InstanceKind, InstanceSpec, InstanceState, Limits, Requests};
use berth_shim::client;
use berth_shim::protocol::{ExitRecord, ReadyLine, Request};
use berth_store::{Store, StoreError};
use berth_vm::VmDriver;
use chrono::Utc;
use tokio::io::AsyncBufReadExt;
use tokio::net::UnixStream;
use tokio::sync::broadcast;

use crate::admission::{self, Admission, Reservation};
use crate::config::{DaemonConfig, MAX_STOP_TIMEOUT_SECS};
use crate::error::{EngineError, EngineResult};
use crate::host::HostFacts;
use crate::mounts::{MountHost, MountPlan};
use crate::networks::Networks;
use crate::procs::ProcessTable;
use crate::volumes::Volumes;

/// The smallest memory limit that lets a runtime start a process at all.
const MIN_MEMORY_BYTES: u64 = 6 << 20;
const MIN_MILLICPUS: u64 = 10;
/// Linux's PID_MAX_LIMIT: no pids limit above it means anything.
const MAX_PIDS: u64 = 4_194_304;
const MIN_BANDWIDTH_BITS: u64 = 1_000;
const MAX_BANDWIDTH_BITS: u64 = 1_000_000_000_000;
/// The largest disk (writable layer, VM disk, volume) berth makes: 64 TiB, the most a
/// cloud block volume offers.
pub(crate) const MAX_DISK_BYTES: u64 = 64 << 40;
/// How long a supervisor may take to create its workload.
const SUPERVISOR_READY_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Engine {
    pub config: DaemonConfig,
    pub node: String,
    pub host: HostFacts,
    /// Instances (and, in a cluster, the cluster's members): etcd with `--cluster`.
    pub store: Store,
    /// What stays on this node whatever the cluster: images, volumes, networks. The same
    /// store as `store` on one host.
    pub local_store: Store,
    /// This node's membership, with `--cluster`.
    pub membership: Option<Arc<crate::cluster::Membership>>,
    pub images: ImageStore,
    pub volumes: Volumes,
    pub networks: Networks,
    pub(crate) admission: Admission,
    containers: Arc<ContainerDriver>,
    vms: Arc<VmDriver>,
    /// Serialises life-cycle changes of one instance.
    locks: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Instances being restarted: their instance storage survives the stop.
    restarting: std::sync::Mutex<std::collections::HashSet<String>>,
    /// What restart policies remember between exits.
    pub(crate) restarts: crate::restarts::Restarts,
    /// This node's drain, while it runs.
    pub(crate) drain: crate::drain::DrainState,
    /// What this node's instances measurably use (sampled in a cluster).
    pub(crate) usage: crate::usage::UsageMeter,
    events: broadcast::Sender<Event>,
    /// Starts each started instance's supervisor (this binary in supervisor mode).
    supervisors: Arc<crate::supervisors::Launcher>,
}

fn supervisor_error(context: &str) -> impl Fn(client::ClientError) -> EngineError + '_ {
    move |e| EngineError::internal(format!("{context}: {e}"))
}

/// What an engine is built from: the daemon wires these up at start.
pub struct EngineParts {
    pub config: DaemonConfig,
    pub node: String,
    pub store: Store,
    pub local_store: Store,
    pub membership: Option<Arc<crate::cluster::Membership>>,
    pub images: ImageStore,
    pub containers: ContainerDriver,
    pub vms: VmDriver,
    pub networks: Networks,
    /// This binary, run in supervisor mode for each started instance.
    pub exe: PathBuf,
}

impl Engine {
    pub fn new(parts: EngineParts) -> Arc<Self> {
        let EngineParts {
            config,
            node,
            store,
            local_store,
            membership,
            images,
            containers,
            vms,
            networks,
            exe,
        } = parts;
        let (events, _) = broadcast::channel(1024);
        let volumes = Volumes::new(config.state_dir.join("volumes"), local_store.clone(), store.clone());
        let host = HostFacts::detect();
        let admission = Admission::new(
            host.cpus,
            host.memory_bytes,
            config.cpu_overcommit,
            config.memory_overcommit,
        );
        let admission = admission.for_node(membership.as_ref().map(|_| node.clone()));
        Arc::new(Engine {
            volumes,
            networks,
            admission,
            config,
            node,
            host,
            store,
            local_store,
            membership,
            images,
            containers: Arc::new(containers),
            vms: Arc::new(vms),
            locks: std::sync::Mutex::new(HashMap::new()),
            restarting: std::sync::Mutex::new(Default::default()),
            restarts: Default::default(),
            drain: Default::default(),
            usage: Default::default(),
            events,
            supervisors: crate::supervisors::Launcher::new(exe),
        })
    }

    pub(crate) fn driver(&self, kind: InstanceKind) -> EngineResult<&dyn InstanceDriver> {
        match kind {
            InstanceKind::Container => Ok(self.containers.as_ref()),
            InstanceKind::Vm => Ok(self.vms.as_ref()),
        }
    }

    pub fn vm_driver(&self) -> &VmDriver {
        &self.vms
    }

    pub fn container_driver(&self) -> &ContainerDriver {
        &self.containers
    }

    pub(crate) fn instance_dir(&self, id: &str) -> PathBuf {
        self.config.state_dir.join("instances").join(short_id(id))
    }

    pub(crate) async fn lock(&self, id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let mutex = {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            locks.entry(id.to_string()).or_default().clone()
        };
        mutex.lock_owned().await
    }

    fn forget_lock(&self, id: &str) {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.remove(id);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    pub(crate) fn emit(&self, instance: &Instance, action: &str, exit: Option<ExitStatus>) {
        let _ = self.events.send(Event {
            time: Utc::now(),
            subject: "instance".into(),
            id: instance.id.clone(),
            name: instance.name.clone(),
            action: action.into(),
            exit,
        });
    }

    pub fn emit_image(&self, image: &ImageRecord, action: &str) {
        let _ = self.events.send(Event {
            time: Utc::now(),
            subject: "image".into(),
            id: image.id.clone(),
            name: image.tags.first().cloned().unwrap_or_default(),
            action: action.into(),
            exit: None,
        });
    }

    /// An instance by id, id prefix or name, wherever in the cluster it is.
    pub async fn find_anywhere(&self, key: &str) -> EngineResult<Instance> {
        self.store.find_instance(key).await.map_err(|e| match e {
            StoreError::NotFound { .. } => {
                EngineError::not_found(format!("no such instance: {key}; `berth ps -a` lists them"))
            }
            other => other.into(),
        })
    }

    /// An instance this node runs, for everything that acts on it or reads its files. One
    /// on another node is refused with where it is.
    pub async fn find(&self, key: &str) -> EngineResult<Instance> {
        let instance = self.find_anywhere(key).await?;
        if self.membership.is_some() && instance.node != self.node {
            return Err(EngineError::conflict(format!(
                "instance {} runs on node {}, not on this one; send the request through any node's socket, which passes it to {}",
                instance.name, instance.node, instance.node
            )));
        }
        Ok(instance)
    }

    /// Whether `instance` is this node's (on one host, every instance is).
    fn is_here(&self, instance: &Instance) -> bool {
        self.membership.is_none() || instance.node == self.node
    }

    /// The instances assigned to this node: what it runs, recovers, admits against and
    /// allocates addresses among. On one host, every instance.
    pub async fn local_instances(&self) -> EngineResult<Vec<Instance>> {
        let mut instances = self.store.list_instances().await?;
        instances.retain(|i| self.is_here(i));
        Ok(instances)
    }

    /// Records what this node did to one of its instances. In a cluster the write holds only
    /// while the instance is still this node's: one the scheduler moved away while this node
    /// was cut off is refused with where it went, and nothing is written.
    pub(crate) async fn save(&self, instance: &Instance) -> EngineResult<()> {
        if self.membership.is_none() {
            return Ok(self.store.update_instance(instance).await?);
        }
        if self.store.update_instance_on(instance, &self.node).await? {
            return Ok(());
        }
        let now = self.store.get_instance(&instance.id).await?;
        Err(EngineError::conflict(format!(
            "instance {} was moved to node {} while this node ({}) was down or cut off",
            instance.name, now.node, self.node
        )))
    }

    pub async fn list(&self, all: bool) -> EngineResult<Vec<Instance>> {
        let mut instances = self.store.list_instances().await?;
        if !all {
            instances.retain(|i| i.state.is_active());
        }
        Ok(instances)
    }

    // ---- limits -------------------------------------------------------------------------

    /// Applies the instance type, then defaults, to what the user asked for; says which
    /// fields were defaulted. Explicit values override single values of the type.
    fn resolve_limits(&self, requested: &LimitsRequest, instance_type: Option<&InstanceType>) -> (Limits, Vec<String>) {
        let defaults = &self.config.default_limits;
        let mut defaulted = Vec::new();
        let mut pick =
            |field: &str, asked: Option<LimitSetting<u64>>, typed: Option<u64>, default: Option<LimitSetting<u64>>| {
                match (asked, typed) {
                    (Some(setting), _) => setting.value(),
                    (None, Some(value)) => Some(value),
                    (None, None) => {
                        defaulted.push(field.to_string());
                        default.and_then(LimitSetting::value)
                    }
                }
            };
        let as_milli = |s: LimitSetting<MilliCpus>| match s {
            LimitSetting::Unlimited => LimitSetting::Unlimited,
            LimitSetting::Value(v) => LimitSetting::Value(v.0),
        };
        let cpus = pick(
            "cpus",
            requested.cpus.map(as_milli),
            instance_type.map(|t| t.vcpus as u64 * 1000),
            defaults.cpus.map(as_milli),
        )
        .map(MilliCpus);
        let memory_bytes = pick(
            "memory",
            requested.memory_bytes,
            instance_type.map(|t| t.memory_bytes),
            defaults.memory_bytes,
        );
        let pids = pick("pids", requested.pids, None, defaults.pids);
        let network_bits_per_second = instance_type.map(|t| t.network_bits_per_second).filter(|bps| *bps > 0);
        (
            Limits {
                cpus,
                memory_bytes,
                pids,
                network_bits_per_second,
            },
            defaulted,
        )
    }

    /// A create request's instance type and limits (the type, then the defaults; the names
    /// of fields the defaults filled), before they are checked against the host.
    pub(crate) fn sized_limits(
        &self,
        request: &CreateInstanceRequest,
    ) -> EngineResult<(Option<InstanceType>, Limits, Vec<String>)> {
        let instance_type = request
            .instance_type
            .as_deref()
            .map(|name| self.instance_type(name).cloned())
            .transpose()?;
        let (mut limits, defaulted) = self.resolve_limits(&request.limits, instance_type.as_ref());
        if let Some(bits) = request.bandwidth_bits_per_second {
            limits.network_bits_per_second = Some(bits);
        }
        Ok((instance_type, limits, defaulted))
    }

    /// What a create request reserves, given its resolved limits.
    pub(crate) fn resolved_requests(
        &self,
        request: &CreateInstanceRequest,
        limits: &Limits,
        sized_by_type: bool,
    ) -> EngineResult<Requests> {
        admission::resolve_requests(
            &request.limits,
            &self.config.default_limits,
            limits,
            request.kind,
            sized_by_type,
        )
    }

    /// The instance type named `name`, or an error that says where the list is.
    pub fn instance_type(&self, name: &str) -> EngineResult<&InstanceType> {
        self.config.types.iter().find(|t| t.name == name).ok_or_else(|| {
            EngineError::invalid(
                "instance_type",
                format!("unknown instance type '{name}'; `berth types ls` lists them"),
            )
        })
    }

    pub fn types(&self) -> &[InstanceType] {
        &self.config.types
    }

    /// Refuses limits this host cannot honour, naming the field and the fix.
    fn check_limits(&self, limits: &Limits) -> EngineResult<()> {
        if let Some(cpus) = limits.cpus {
            if cpus.0 < MIN_MILLICPUS {
                return Err(EngineError::invalid(
                    "cpus",
                    format!("cpus: {cpus} is below the minimum of 0.01"),
                ));
            }
            if cpus.0 > self.host.cpus * 1000 {
                return Err(EngineError::invalid(
                    "cpus",
                    format!("cpus: {cpus} exceeds this host's {} CPUs; lower --cpus", self.host.cpus),
                ));
            }
        }
        if let Some(memory) = limits.memory_bytes {
            if memory < MIN_MEMORY_BYTES {
                return Err(EngineError::invalid(
                    "memory",
                    format!(
                        "memory: {} is below the minimum of 6MiB; raise --memory",
                        ByteSize(memory)
                    ),
                ));
            }
            if self.host.memory_bytes > 0 && memory > self.host.memory_bytes {
                return Err(EngineError::invalid(
                    "memory",
                    format!(
                        "memory: {} exceeds this host's {}; lower --memory",
                        ByteSize(memory),
                        ByteSize(self.host.memory_bytes)
                    ),
                ));
            }
        }
        if limits.pids == Some(0) {
            return Err(EngineError::invalid("pids", "pids: the limit must be at least 1"));
        }
        if limits.pids.is_some_and(|pids| pids > MAX_PIDS) {
            return Err(EngineError::invalid(
                "pids",
                format!("pids: at most {MAX_PIDS} (the kernel's most processes); lower --pids-limit or use unlimited"),
            ));
        }
        if let Some(bits) = limits.network_bits_per_second {
            if !(MIN_BANDWIDTH_BITS..=MAX_BANDWIDTH_BITS).contains(&bits) {
                return Err(EngineError::invalid(
                    "bandwidth",
                    format!("--bandwidth: {bits} bits/s is outside 1kbit to 1tbit"),
                ));
            }
        }
        Ok(())
    }

    /// Refuses requests no host of this size could ever admit, as `check_limits` does for
    /// limits.
    fn check_requests(&self, requests: &Requests) -> EngineResult<()> {
        if let Some(cpus) = requests.cpus {
            if cpus.0 > self.host.cpus * 1000 {
                return Err(EngineError::invalid(
                    "reserve_cpus",
                    format!(
                        "--reserve-cpus {cpus} exceeds this host's {} CPUs; lower it",
                        self.host.cpus
                    ),
                ));
            }
        }
        if let Some(memory) = requests.memory_bytes {
            if self.host.memory_bytes > 0 && memory > self.host.memory_bytes {
                return Err(EngineError::invalid(
                    "reserve_memory",
                    format!(
                        "--reserve-memory {} exceeds this host's {}; lower it",
                        ByteSize(memory),
                        ByteSize(self.host.memory_bytes)
                    ),
                ));
            }
        }
        Ok(())
    }

    // ---- create -------------------------------------------------------------------------

    /// Creates an instance on this node; `placement` says why it is here (the scheduler's
    /// choice, in a cluster).
    pub async fn create(
        &self,
        request: CreateInstanceRequest,
        placement: Option<String>,
    ) -> EngineResult<CreatedResponse> {
        let began = std::time::Instant::now();
        self.driver(request.kind)?;
        self.check_placement(&request)?;
        let name = match &request.name {
            Some(name) => {
                validate_name(name).map_err(|m| EngineError::invalid("name", m))?;
                name.clone()
            }
            None => generate_name(),
        };
        let image = self.resolve_image(&request.image).await.map_err(|e| {
            let mut error = EngineError::from(e);
            error.field = Some("image".into());
            error
        })?;
        match (request.kind, &image.disk) {
            (InstanceKind::Container, Some(_)) => {
                return Err(EngineError::invalid(
                    "image",
                    format!("{} is a VM disk image; run it with --vm", request.image),
                ))
            }
            (InstanceKind::Container, None) if request.vm.is_some() => {
                return Err(EngineError::invalid(
                    "vm",
                    "--max-cpus, --max-memory and --disk are for VMs; add --vm",
                ))
            }
            _ => {}
        }
        // A disk image boots its own operating system: there is no command to derive.
        let process = if image.disk.is_some() {
            ProcessSpec {
                open_stdin: true,
                ..Default::default()
            }
        } else {
            self.process_spec(&request, &image)?
        };
        let (instance_type, limits, default_limits) = self.sized_limits(&request)?;
        self.check_limits(&limits)?;
        let requests = self.resolved_requests(&request, &limits, instance_type.is_some())?;
        self.check_requests(&requests)?;
        // Held until the instance is recorded (this function's end): see `ProjectLock`.
        let _project_lock = match request.labels.get(berth_model::project::PROJECT_LABEL) {
            Some(project) => {
                let lock = self.lock_project(project).await?;
                let instance_storage: u64 = instance_type
                    .as_ref()
                    .map_or(0, |t| t.instance_storage_bytes.iter().sum());
                self.check_project_quota(
                    project,
                    &limits,
                    request.disk_bytes.unwrap_or(0) + instance_storage,
                    None,
                )
                .await?;
                Some(lock)
            }
            None => None,
        };
        if let Some(max_memory) = request.vm.as_ref().and_then(|vm| vm.max_memory_bytes) {
            if self.host.memory_bytes > 0 && max_memory > self.host.memory_bytes {
                return Err(EngineError::invalid(
                    "max_memory",
                    format!(
                        "--max-memory {} exceeds this host's {}; lower it",
                        ByteSize(max_memory),
                        ByteSize(self.host.memory_bytes)
                    ),
                ));
            }
        }

        // On-disk names use the 12-digit short id; keep it unique on this node.
        let id = loop {
            let id = new_instance_id();
            if !self.instance_dir(&id).exists() {
                break id;
            }
        };
        let hostname = match &request.hostname {
            Some(h)
                if !h.is_empty()
                    && h.len() <= 63
                    && h.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.') =>
            {
                h.clone()
            }
            Some(h) => {
                return Err(EngineError::invalid(
                    "hostname",
                    format!("hostname '{h}' is invalid: use letters, digits, '-' and '.' (at most 63)"),
                ))
            }
            None => short_id(&id).to_string(),
        };
        let dir = self.instance_dir(&id);
        if let Some(size) = request.disk_bytes {
            if size < 16 << 20 {
                return Err(EngineError::invalid("disk", "--disk: at least 16MiB"));
            }
            if size > MAX_DISK_BYTES {
                return Err(EngineError::invalid(
                    "disk",
                    format!("--disk: at most {}", ByteSize(MAX_DISK_BYTES)),
                ));
            }
        }
        let instance_storage: Vec<u64> = instance_type
            .as_ref()
            .map(|t| t.instance_storage_bytes.clone())
            .unwrap_or_default();
        // A container's thin disks are files under the state directory: refuse sizes its file
        // system cannot hold now, not at start.
        if request.kind == InstanceKind::Container {
            let sizes = request.disk_bytes.iter().map(|s| ("disk", *s));
            for (field, size) in sizes.chain(instance_storage.iter().map(|s| ("type", *s))) {
                berth_storage::check_file_size(&self.config.state_dir, size)
                    .map_err(|e| EngineError::invalid(field, format!("--{field}: {} disk: {e}", ByteSize(size))))?;
            }
        }
        check_labels(&request.labels)?;
        let seccomp_unconfined = seccomp_unconfined(&request.security_opts, request.kind)?;
        let mount_host = match (request.kind, &image.disk) {
            (InstanceKind::Container, _) => MountHost::Container,
            (InstanceKind::Vm, None) => MountHost::VmWithAgent,
            (InstanceKind::Vm, Some(_)) => MountHost::VmFirmware,
        };
        let mount_plan = MountPlan::parse(&request, mount_host, instance_storage.len())?;
        let healthcheck = match &request.healthcheck {
            None => None,
            Some(asked) => asked.resolve().map_err(|e| EngineError::invalid(e.field, e.message))?,
        };
        if healthcheck.is_some() && mount_host == MountHost::VmFirmware {
            return Err(EngineError::invalid(
                "healthcheck",
                "a VM booted from its own disk has no berth agent to run a health check in; check it from outside (a published port) instead",
            ));
        }
        let log = request
            .log
            .resolve(self.config.log_defaults)
            .map_err(|e| EngineError::invalid("log", e.to_string()))?;
        let (network, ports) = self.resolve_network(&request).await?;
        // Held until the instance is recorded (below).
        let address_claim = match network.as_str() {
            "none" | "host" => None,
            name => Some(self.networks.allocate(name, &id).await?),
        };
        let address = address_claim.as_ref().map(|claim| claim.address.clone());
        let vm = match request.kind {
            InstanceKind::Container if request.vm.as_ref().is_some_and(|vm| vm.disk_on.is_some()) => {
                return Err(EngineError::invalid("disk_on", "--disk-on is for VMs: add --vm"));
            }
            InstanceKind::Vm => Some(self.vms.plan(
                &limits,
                &request.vm.clone().unwrap_or_default(),
                request.disk_bytes,
                &instance_storage,
                &image,
                &dir,
            )?),
            InstanceKind::Container => None,
        };
        // Last, as they may create host directories and volumes: nothing after refuses the request.
        let kind = request.kind;
        let (volume_requests, mounts) = tokio::task::spawn_blocking(move || mount_plan.realize(kind))
            .await
            .map_err(|e| EngineError::internal(e.to_string()))??;
        let volumes = self.resolve_volumes(volume_requests, request.kind).await?;
        let instance = Instance {
            id: id.clone(),
            name: name.clone(),
            kind: request.kind,
            image: request.image.clone(),
            state: InstanceState::Created,
            exit_code: None,
            oom_killed: false,
            pid: None,
            supervisor_pid: None,
            limits,
            requests,
            instance_type: instance_type.as_ref().map(|t| t.name.clone()),
            default_limits,
            spec: InstanceSpec {
                placement,
                kind: request.kind,
                image: request.image.clone(),
                image_id: image.id.clone(),
                process,
                hostname,
                auto_remove: request.auto_remove,
                labels: request.labels.clone(),
                instance_storage_bytes: instance_storage.clone(),
                volumes,
                mounts,
                network,
                ports,
                seccomp_unconfined,
                log: LogOptions {
                    max_size_bytes: Some(log.max_size_bytes),
                    max_files: Some(log.max_files),
                },
                disk_bytes: match request.kind {
                    InstanceKind::Container => request.disk_bytes,
                    InstanceKind::Vm => None,
                },
                restart: request.restart.unwrap_or_default(),
                constraints: request.constraints.clone(),
                spread_by: request.spread_by.clone(),
                healthcheck,
            },
            node: self.node.clone(),
            created_at: Utc::now(),
            started_at: None,
            finished_at: None,
            restart_count: 0,
            error: None,
            vm,
            address,
            rescheduled: None,
            health: None,
        };
        let instance_kind = instance.kind;
        self.store.insert_instance(&instance).await?;
        drop(address_claim);
        if let Err(e) = std::fs::create_dir_all(&dir) {
            let _ = self.store.delete_instance(&id).await;
            return Err(EngineError::internal(format!("creating {}: {e}", dir.display())));
        }
        self.emit(&instance, "create", None);
        tracing::debug!(id = %id, elapsed = ?began.elapsed(), "created: checked, address claimed, recorded");
        let mut warnings = Vec::new();
        if instance_kind == InstanceKind::Vm && self.host.accelerator.choice() != "kvm" {
            warnings.push(format!(
                "no usable KVM, the VM runs under software emulation ({})",
                self.host.accelerator.note
            ));
        }
        Ok(CreatedResponse { id, name, warnings })
    }

    /// The main process as Docker derives it from image config and request.
    fn process_spec(&self, request: &CreateInstanceRequest, image: &ImageRecord) -> EngineResult<ProcessSpec> {
        let entrypoint = request
            .entrypoint
            .clone()
            .unwrap_or_else(|| image.config.entrypoint.clone());
        let cmd = if !request.command.is_empty() {
            request.command.clone()
        } else if request.entrypoint.is_some() {
            Vec::new()
        } else {
            image.config.cmd.clone()
        };
        let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
        if args.is_empty() || args[0].is_empty() {
            return Err(EngineError::invalid(
                "command",
                format!(
                    "no command: image {} has no Entrypoint or Cmd; give one after the image name",
                    request.image
                ),
            ));
        }
        let mut env = image.config.env.clone();
        for pair in &request.env {
            let (key, _) = pair
                .split_once('=')
                .ok_or_else(|| EngineError::invalid("env", format!("env '{pair}' is not KEY=VALUE")))?;
            if key.is_empty() || key.contains('\0') || pair.contains('\0') {
                return Err(EngineError::invalid(
                    "env",
                    format!("env '{pair}' has an empty or invalid name"),
                ));
            }
            env.retain(|e| e.split_once('=').map(|(k, _)| k) != Some(key));
            env.push(pair.clone());
        }
        let working_dir = request
            .working_dir
            .clone()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| image.config.working_dir.clone());
        if !working_dir.is_empty() && !working_dir.starts_with('/') {
            return Err(EngineError::invalid(
                "working_dir",
                format!("working dir '{working_dir}' must be an absolute path"),
            ));
        }
        Ok(ProcessSpec {
            args,
            env,
            working_dir,
            user: request.user.clone().unwrap_or_else(|| image.config.user.clone()),
            tty: request.tty,
            open_stdin: request.open_stdin,
        })
    }

    // ---- supervisors --------------------------------------------------------------------

    /// Starts a supervisor to wait for the next start (`crate::supervisors`), so that the
    /// first start after the daemon's own is as quick as the ones after it.
    pub(crate) fn keep_a_supervisor_waiting(&self) {
        self.supervisors.keep_one_waiting();
    }

    /// Runs a supervisor for `config` and waits until it has created the workload.
    pub(crate) async fn spawn_supervisor(&self, dir: &Path, config: &SupervisorConfig) -> EngineResult<u32> {
        let config_path = dir.join("supervisor.json");
        let document = serde_json::to_vec(config).map_err(|e| EngineError::internal(e.to_string()))?;
        std::fs::write(&config_path, document)
            .map_err(|e| EngineError::internal(format!("writing {}: {e}", config_path.display())))?;
        let spawned_ns = berth_shim::protocol::monotonic_ns();
        let crate::supervisors::Launched { mut child, stdout } = self
            .supervisors
            .launch(&config_path)
            .await
            .map_err(|e| EngineError::internal(e.to_string()))?;
        let mut line = String::new();
        let read = tokio::time::timeout(
            SUPERVISOR_READY_TIMEOUT,
            tokio::io::BufReader::new(stdout).read_line(&mut line),
        )
        .await;
        // The supervisor lives on after this; reap it when it ends while we run.
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        let ready: ReadyLine = match read {
            Ok(Ok(n)) if n > 0 => serde_json::from_str(&line)
                .map_err(|e| EngineError::internal(format!("bad supervisor ready line: {e}")))?,
            Ok(_) => {
                let log = std::fs::read_to_string(dir.join("supervisor.log")).unwrap_or_default();
                return Err(EngineError::internal(format!(
                    "the supervisor exited before it was ready: {}",
                    log.lines().last().unwrap_or("no output")
                )));
            }
            Err(_) => return Err(EngineError::internal("the supervisor did not get ready within 60s")),
        };
        if !ready.ok {
            return Err(EngineError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ready.error.unwrap_or_else(|| "the supervisor failed".into()),
            ));
        }
        if let (Some(entered), Some(created)) = (ready.entered_ns, ready.created_ns) {
            let ms = |from: u64, to: u64| to.saturating_sub(from) as f64 / 1e6;
            tracing::debug!(
                dir = %dir.display(),
                exec_ms = ms(spawned_ns, entered),
                create_ms = ms(entered, created),
                report_ms = ms(created, berth_shim::protocol::monotonic_ns()),
                "supervisor phases: spawn and exec of the supervisor (or the hand-over to the one waiting), workload created (for a container: libcontainer's processes, namespaces, cgroups, rootfs), ready line read"
            );
        }
        Ok(ready.supervisor_pid)
    }

    /// Learns how a started instance ends, in a task of its own.
    pub(crate) fn watch_exit(self: &Arc<Self>, id: String, socket: PathBuf, exit_path: PathBuf) {
        let engine = self.clone();
        let task = async move {
            let health = engine.watch_health(&id);
            let record = match client::wait(&socket).await {
                Ok(record) => Some(record),
                Err(_) => ExitRecord::read(&exit_path),
            };
            health.abort();
            // Boxed: the exit's handling is a large future, and this task waits for the
            // whole life of the instance (a thousand instances held 6 KiB each for it).
            Box::pin(engine.on_exit(&id, record)).await;
        };
        tokio::spawn(task);
    }

    pub(crate) async fn on_exit(self: &Arc<Self>, id: &str, record: Option<ExitRecord>) {
        let began = std::time::Instant::now();
        let guard = self.lock(id).await;
        let Ok(mut instance) = self.store.get_instance(id).await else {
            return;
        };
        // Moved to another node while this one was cut off: `clear_moved_away` cleans up.
        if !instance.state.is_active() || (self.membership.is_some() && instance.node != self.node) {
            return;
        }
        let dir = self.instance_dir(id);
        match record {
            Some(record) => {
                instance.state = InstanceState::Exited;
                instance.exit_code = Some(record.status.code);
                instance.oom_killed = record.status.oom_killed;
                instance.finished_at = Some(record.finished_at);
            }
            None => {
                instance.state = InstanceState::Dead;
                instance.finished_at = Some(Utc::now());
                instance.error = Some("the supervisor ended without recording an exit status".into());
                if let Ok(driver) = self.driver(instance.kind) {
                    if let Err(e) = driver.reclaim(&instance).await {
                        tracing::warn!(id = %instance.id, error = %e, "reclaiming after a lost supervisor");
                    }
                }
            }
        }
        instance.pid = None;
        instance.supervisor_pid = None;
        // An instance removed right away is released by its removal.
        if !instance.spec.auto_remove {
            if let Ok(driver) = self.driver(instance.kind) {
                let keep = self
                    .restarting
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains(&instance.id);
                if let Err(e) = driver.release(&instance, &dir, keep).await {
                    tracing::warn!(id = %instance.id, error = %e, "releasing instance resources");
                    instance.error = Some(e.to_string());
                }
            }
            self.end_exec_sessions(&instance).await;
            let _ = std::fs::remove_dir_all(dir.join("execs"));
            self.detach_volumes(&instance).await;
            self.networks.detach(&instance).await;
        }
        if let Err(e) = self.save(&instance).await {
            tracing::error!(id = %instance.id, error = %e, "recording exit");
        }
        let status = record.map(|r| r.status);
        if status.is_some_and(|s| s.oom_killed) {
            self.emit(&instance, "oom", status);
        }
        self.emit(&instance, "die", status);
        tracing::debug!(id = %instance.id, elapsed = ?began.elapsed(), "exit recorded");
        self.apply_restart_policy(&instance);
        if instance.spec.auto_remove {
            if let Err(e) = self.remove_locked(&instance).await {
                tracing::warn!(id = %instance.id, error = %e.message, "auto-remove");
            }
            tracing::debug!(id = %instance.id, elapsed = ?began.elapsed(), "exit recorded and instance removed");
            drop(guard);
            self.forget_lock(id);
        }
    }

    // ---- start / stop -------------------------------------------------------------------

    /// Starts an instance. With `attach`, returns the attach stream, connected before the
    /// workload runs so no output is missed.
    pub async fn start(self: &Arc<Self>, key: &str, attach: bool) -> EngineResult<(Instance, Option<UnixStream>)> {
        let found = self.find(key).await?;
        let _guard = self.lock(&found.id).await;
        let mut instance = self.store.get_instance(&found.id).await?;
        match instance.state {
            InstanceState::Running => {
                return Err(EngineError::conflict(format!(
                    "instance {} is already running",
                    instance.name
                )))
            }
            InstanceState::Paused => {
                return Err(EngineError::conflict(format!(
                    "instance {} is paused; unpause it instead",
                    instance.name
                )))
            }
            _ => {}
        }
        let began = std::time::Instant::now();
        let ms = |at: Duration| at.as_secs_f64() * 1e3;
        // Held until the store shows the instance running, so no other start takes its room.
        let _claim = self
            .admission
            .claim(&self.store, &instance, Reservation::of(&instance), "start")
            .await?;
        self.attach_volumes(&instance).await?;
        self.check_ports(&instance).await?;
        if let Err(e) = self.networks.attach(&instance).await {
            self.detach_volumes(&instance).await;
            if instance.spec.auto_remove {
                let _ = self.remove_locked(&instance).await;
            }
            return Err(e);
        }
        let networked = began.elapsed();
        let driver = self.driver(instance.kind)?;
        let image = if instance.spec.image_id.is_empty() {
            None
        } else {
            Some(self.local_store.get_image(&instance.spec.image_id).await.map_err(|_| {
                EngineError::conflict(format!(
                    "the image of instance {} ({}) was removed; create the instance again",
                    instance.name, instance.spec.image
                ))
            })?)
        };
        let dir = self.instance_dir(&instance.id);
        let mut config = driver.prepare_start(&instance, image.as_ref(), &dir).await?;
        config.log_limits = self.log_limits(&instance);
        if let Some(membership) = &self.membership {
            if crate::failover::local_state(&instance).is_none() {
                config.fence = Some(berth_model::driver::FenceConfig {
                    heartbeat_path: membership.heartbeat_path().to_path_buf(),
                    stale_after_ms: crate::cluster::FENCE_AFTER.as_millis() as u64,
                });
            }
        }
        let prepared = began.elapsed();
        let mut supervised = Duration::ZERO;
        let started = async {
            let supervisor_pid = self.spawn_supervisor(&dir, &config).await?;
            supervised = began.elapsed();
            let stream = if attach {
                Some(
                    client::attach(&config.socket_path, instance.spec.process.open_stdin)
                        .await
                        .map_err(supervisor_error("attaching"))?,
                )
            } else {
                None
            };
            // A VM's start waits for its guest to boot, which the supervisor bounds.
            let start_timeout = match &config.workload {
                berth_model::driver::Workload::Vm { boot_timeout_secs, .. } => {
                    Duration::from_secs(boot_timeout_secs + 30)
                }
                _ => client::REPLY_TIMEOUT,
            };
            let reply = client::call_within(&config.socket_path, &Request::Start, start_timeout)
                .await
                .map_err(|e| EngineError::new(StatusCode::BAD_REQUEST, format!("starting {}: {e}", instance.name)))?;
            Ok::<_, EngineError>((supervisor_pid, reply.pid, stream))
        }
        .await;
        let running = began.elapsed();
        let (supervisor_pid, pid, stream) = match started {
            Ok(started) => started,
            Err(e) => {
                let _ = driver.release(&instance, &dir, false).await;
                self.detach_volumes(&instance).await;
                self.networks.detach(&instance).await;
                if instance.spec.auto_remove {
                    let _ = self.remove_locked(&instance).await;
                } else {
                    instance.error = Some(e.message.clone());
                    let _ = self.save(&instance).await;
                }
                return Err(e);
            }
        };
        if instance.started_at.is_some() {
            instance.restart_count += 1;
        }
        instance.state = InstanceState::Running;
        instance.pid = pid;
        instance.supervisor_pid = Some(supervisor_pid);
        instance.started_at = Some(Utc::now());
        instance.finished_at = None;
        instance.exit_code = None;
        instance.oom_killed = false;
        instance.error = None;
        // A new run: its checks start over (`watch_exit` starts them).
        instance.health = None;
        self.save(&instance).await?;
        self.restarts.started(&instance.id);
        if self.membership.is_some() {
            // What this node knows of it if the cluster moves it away while it is cut off.
            let copy = serde_json::to_vec(&instance).map_err(|e| EngineError::internal(e.to_string()))?;
            if let Err(e) = std::fs::write(dir.join("instance.json"), copy) {
                tracing::warn!(id = %instance.id, error = %e, "keeping a local copy of the instance");
            }
        }
        self.emit(&instance, "start", None);
        tracing::debug!(
            id = %instance.id,
            network_ms = ms(networked),
            prepare_ms = ms(prepared - networked),
            supervisor_ms = ms(supervised - prepared),
            run_ms = ms(running - supervised),
            record_ms = ms(began.elapsed() - running),
            total_ms = ms(began.elapsed()),
            "start phases: admission, volumes and network; rootfs and spec; supervisor ready; workload running; recorded"
        );
        self.watch_exit(
            instance.id.clone(),
            config.socket_path.clone(),
            config.exit_path.clone(),
        );
        Ok((instance, stream))
    }

    fn socket_of(&self, instance: &Instance) -> PathBuf {
        self.instance_dir(&instance.id).join("supervisor.sock")
    }

    async fn signal(&self, instance: &Instance, signal: i32, all: bool) -> EngineResult<()> {
        client::call(&self.socket_of(instance), &Request::Kill { signal, all })
            .await
            .map(|_| ())
            .map_err(|e| match e {
                client::ClientError::Refused(message) if message == "not running" => {
                    EngineError::conflict(format!("instance {} is not running", instance.name))
                }
                // The supervisor ends with its instance: the exit is being recorded.
                client::ClientError::Unreachable(_) | client::ClientError::Closed => {
                    EngineError::conflict(format!("instance {} is not running (it has just ended)", instance.name))
                }
                other => EngineError::internal(format!("signalling {}: {other}", instance.name)),
            })
    }

    /// Waits until the instance is no longer running (or gone); false on timeout.
    async fn wait_inactive(&self, id: &str, timeout: Duration) -> bool {
        self.wait_inactive_until(id, tokio::time::Instant::now() + timeout)
            .await
    }

    async fn wait_inactive_until(&self, id: &str, deadline: tokio::time::Instant) -> bool {
        let mut events = self.subscribe();
        loop {
            match self.store.get_instance(id).await {
                Ok(instance) if instance.state.is_active() => {}
                _ => return true,
            }
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Err(_) => return false,
                Ok(Err(broadcast::error::RecvError::Closed)) => return false,
                Ok(_) => {}
            }
        }
    }

    /// Stops an instance: the driver's graceful way (a VM's power button or its agent's
    /// SIGTERM) or SIGTERM, and after the grace period SIGKILL, in every case — a guest that
    /// does not answer, or an agent busy with an exec session, does not hold the stop.
    pub async fn stop(self: &Arc<Self>, key: &str, timeout_secs: Option<u64>) -> EngineResult<Instance> {
        let grace_secs = timeout_secs.unwrap_or(self.config.stop_timeout_secs);
        if grace_secs > MAX_STOP_TIMEOUT_SECS {
            return Err(EngineError::invalid(
                "timeout",
                format!("timeout: {grace_secs} seconds is more than a day ({MAX_STOP_TIMEOUT_SECS}); give a shorter grace period"),
            ));
        }
        let instance = self.find(key).await?;
        self.restarts.stopped_by_user(&instance.id);
        if !instance.state.is_active() {
            return Ok(instance);
        }
        if instance.state == InstanceState::Paused {
            self.unpause(key).await?;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(grace_secs);
        // A process that ends between our look and the signal is fine: it is stopping anyway.
        let graceful = match tokio::time::timeout_at(deadline, self.driver(instance.kind)?.request_stop(&instance))
            .await
        {
            Ok(Ok(graceful)) => graceful,
            Ok(Err(e)) => {
                tracing::warn!(id = %instance.id, error = %e, "graceful stop failed; sending SIGTERM");
                false
            }
            Err(_) => {
                // The grace period is over: no SIGTERM, straight to SIGKILL below.
                tracing::warn!(id = %instance.id, "the instance did not take the stop request within the grace period");
                true
            }
        };
        if !graceful {
            let _ = self.signal(&instance, libc::SIGTERM, false).await;
        }
        if !self.wait_inactive_until(&instance.id, deadline).await {
            self.kill_and_wait(&instance).await?;
        }
        self.end_exec_sessions(&instance).await;
        self.find(&instance.id).await.or(Ok(instance))
    }

    /// SIGKILL to every process of the instance, then waits for the exit to be recorded. A
    /// supervisor that is there but does not answer has its main process killed directly:
    /// not reaped yet, that pid cannot have been reused.
    async fn kill_and_wait(&self, instance: &Instance) -> EngineResult<()> {
        let kill = Request::Kill {
            signal: libc::SIGKILL,
            all: true,
        };
        let asked = client::call_within(&self.socket_of(instance), &kill, Duration::from_secs(5)).await;
        if let (Err(e @ client::ClientError::Timeout(_)), Some(pid)) = (asked, instance.pid) {
            tracing::warn!(id = %instance.id, pid, error = %e, "the supervisor did not take SIGKILL; killing the main process");
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if self.wait_inactive(&instance.id, Duration::from_secs(10)).await {
            return Ok(());
        }
        Err(EngineError::internal(format!(
            "instance {} did not stop after SIGKILL",
            instance.name
        )))
    }

    /// Ends the exec sessions of an instance (see `exec_sessions`).
    async fn end_exec_sessions(&self, instance: &Instance) {
        crate::exec_sessions::end_all(&self.instance_dir(&instance.id).join("execs")).await;
    }

    pub async fn restart(self: &Arc<Self>, key: &str, timeout_secs: Option<u64>) -> EngineResult<Instance> {
        let found = self.find(key).await?;
        self.restarting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(found.id.clone());
        let restarted = async {
            let instance = self.stop(key, timeout_secs).await?;
            Ok(self.start(&instance.id, false).await?.0)
        }
        .await;
        self.restarting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&found.id);
        restarted
    }

    pub async fn kill(&self, key: &str, signal: &str) -> EngineResult<()> {
        let number = berth_model::signal::parse_signal(signal).map_err(|m| EngineError::invalid("signal", m))?;
        let instance = self.find(key).await?;
        if !instance.state.is_active() {
            return Err(EngineError::conflict(format!(
                "instance {} is not running",
                instance.name
            )));
        }
        if [libc::SIGKILL, libc::SIGTERM, libc::SIGINT, libc::SIGQUIT].contains(&number) {
            self.restarts.stopped_by_user(&instance.id);
        }
        // SIGKILL reaches every process so nothing outlives the main one.
        self.signal(&instance, number, number == libc::SIGKILL).await
    }

    pub async fn pause(&self, key: &str) -> EngineResult<Instance> {
        let found = self.find(key).await?;
        let _guard = self.lock(&found.id).await;
        let mut instance = self.store.get_instance(&found.id).await?;
        if instance.state != InstanceState::Running {
            return Err(EngineError::conflict(format!(
                "instance {} is not running",
                instance.name
            )));
        }
        self.driver(instance.kind)?.pause(&instance).await?;
        instance.state = InstanceState::Paused;
        self.save(&instance).await?;
        self.emit(&instance, "pause", None);
        Ok(instance)
    }

    pub async fn unpause(&self, key: &str) -> EngineResult<Instance> {
        let found = self.find(key).await?;
        let _guard = self.lock(&found.id).await;
        let mut instance = self.store.get_instance(&found.id).await?;
        if instance.state != InstanceState::Paused {
            return Err(EngineError::conflict(format!(
                "instance {} is not paused",
                instance.name
            )));
        }
        self.driver(instance.kind)?.resume(&instance).await?;
        instance.state = InstanceState::Running;
        self.save(&instance).await?;
        self.emit(&instance, "unpause", None);
        Ok(instance)
    }

    pub async fn remove(self: &Arc<Self>, key: &str, force: bool) -> EngineResult<()> {
        if let Some(membership) = &self.membership {
            let found = self.find_anywhere(key).await?;
            if found.node != self.node
                && membership.node(&found.node).await?.state == berth_model::node::NodeState::Down
            {
                return self.remove_on_down_node(&found, force).await;
            }
        }
        let instance = self.find(key).await?;
        self.restarts.stopped_by_user(&instance.id);
        if instance.state.is_active() {
            if !force {
                return Err(EngineError::conflict(format!(
                    "instance {} is {}; stop it first or use --force",
                    instance.name, instance.state
                )));
            }
            if instance.state == InstanceState::Paused {
                let _ = self.unpause(&instance.id).await;
            }
            self.kill_and_wait(&instance).await?;
            // The exit is recorded before the supervisor has cleaned up after its workload;
            // `rm` returns once it is gone, so nothing of the instance outlives it.
            if let Some(pid) = instance.supervisor_pid {
                let config = self.instance_dir(&instance.id).join("supervisor.json");
                let _ = crate::exec_sessions::supervisor_gone(pid as i32, &config, Duration::from_secs(5)).await;
            }
        }
        let guard = self.lock(&instance.id).await;
        let current = match self.store.get_instance(&instance.id).await {
            Ok(current) => current,
            // Removed meanwhile (auto-remove): done.
            Err(StoreError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        self.remove_locked(&current).await?;
        drop(guard);
        self.forget_lock(&instance.id);
        self.restarts.forget(&instance.id);
        Ok(())
    }

    /// `rm` of an instance whose node is down: with `--force` its record goes now, and its
    /// node clears what it left when it is back (`clear_moved_away`).
    async fn remove_on_down_node(&self, instance: &Instance, force: bool) -> EngineResult<()> {
        if !force && (instance.state.is_active() || instance.state == InstanceState::Lost) {
            return Err(EngineError::conflict(format!(
                "instance {} is on node {}, which is down; `berth rm -f {}` removes its record now, and {} clears what is left of it when it is back",
                instance.name, instance.node, instance.name, instance.node
            )));
        }
        let current = self.store.instance(&instance.id).await?;
        self.store.remove_instance(&instance.id, current.spec_revision).await?;
        tracing::info!(id = %instance.id, node = %instance.node, "removed the record of an instance on a down node");
        self.emit(instance, "destroy", None);
        Ok(())
    }

    /// Removes what this node holds of an instance whose record is no longer its own (moved
    /// while it was cut off), from its local copy; the record is not touched.
    pub(crate) async fn release_local(&self, local: &Instance, dir: &Path) {
        let _guard = self.lock(&local.id).await;
        // A VM's disks on a share are the instance's, not this node's: the node it moved to
        // runs on them. Only what is under `dir` goes.
        let mut local = local.clone();
        if let Some(vm) = local.vm.as_mut() {
            vm.disks.retain(|d| berth_vm::shared_disk::on_share(&d.path).is_none());
        }
        let local = &local;
        if let Ok(driver) = self.driver(local.kind) {
            if let Err(e) = driver.release(local, dir, false).await {
                tracing::warn!(id = %local.id, error = %e, "releasing a moved instance");
            }
            if let Err(e) = driver.remove(local, dir).await {
                tracing::warn!(id = %local.id, error = %e, "removing a moved instance");
            }
        }
        self.networks.detach(local).await;
        let _ = std::fs::remove_dir_all(dir);
    }

    async fn remove_locked(&self, instance: &Instance) -> EngineResult<()> {
        let began = std::time::Instant::now();
        let dir = self.instance_dir(&instance.id);
        // Also for `--rm` instances, whose exit skipped it: their session pid files go
        // with the directory.
        self.end_exec_sessions(instance).await;
        self.driver(instance.kind)?.remove(instance, &dir).await?;
        let host_cleaned = began.elapsed();
        // Everything on the host goes before the record: "removed" (what `run --rm` waits
        // for) then means nothing is left, and a crash in between leaves a record to retry.
        self.detach_volumes(instance).await;
        self.networks.detach(instance).await;
        let detached = began.elapsed();
        self.store.delete_instance(&instance.id).await?;
        self.emit(instance, "destroy", None);
        tracing::debug!(
            id = %instance.id,
            driver_ms = host_cleaned.as_secs_f64() * 1e3,
            detach_ms = (detached - host_cleaned).as_secs_f64() * 1e3,
            record_ms = (began.elapsed() - detached).as_secs_f64() * 1e3,
            "removal phases: rootfs, storage and directory; volumes and network; record"
        );
        Ok(())
    }

    pub async fn wait(&self, key: &str, condition: WaitCondition) -> EngineResult<WaitResponse> {
        let instance = self.find(key).await?;
        let mut events = self.subscribe();
        let mut last = instance;
        // The exit status as the `die` event carried it: an instance removed right after its
        // exit (`--rm`) may be gone before a read of the store sees it exited.
        let mut died: Option<ExitStatus> = None;
        let mut note = |event: &Event, id: &str| {
            if event.id == id && event.action == "die" && event.exit.is_some() {
                died = event.exit;
            }
        };
        loop {
            match self.store.get_instance(&last.id).await {
                Ok(current) => {
                    let done = match condition {
                        WaitCondition::NotRunning => !current.state.is_active(),
                        WaitCondition::Removed => false,
                    };
                    last = current;
                    if done {
                        break;
                    }
                }
                Err(StoreError::NotFound { .. }) => break,
                Err(e) => return Err(e.into()),
            }
            match events.recv().await {
                Ok(event) => note(&event, &last.id),
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => {
                    return Err(EngineError::internal("the daemon is shutting down"))
                }
            }
        }
        while let Ok(event) = events.try_recv() {
            note(&event, &last.id);
        }
        if let Some(status) = died {
            return Ok(WaitResponse {
                exit_code: status.code,
                oom_killed: status.oom_killed,
            });
        }
        Ok(WaitResponse {
            exit_code: last
                .exit_code
                .unwrap_or(if last.state == InstanceState::Dead { 255 } else { 0 }),
            oom_killed: last.oom_killed,
        })
    }

    // ---- exec, update, stats ------------------------------------------------------------

    /// Runs a further process in a running instance; returns its attach stream unless
    /// detached.
    pub async fn exec(self: &Arc<Self>, key: &str, request: ExecRequest) -> EngineResult<Option<UnixStream>> {
        self.exec_session(key, request).await.map(|(stream, _)| stream)
    }

    /// An exec and its session's directory (what `exec_sessions::end_one` ends it by).
    pub(crate) async fn exec_session(
        self: &Arc<Self>,
        key: &str,
        request: ExecRequest,
    ) -> EngineResult<(Option<UnixStream>, PathBuf)> {
        if request.command.is_empty() || request.command[0].is_empty() {
            return Err(EngineError::invalid("command", "exec needs a command to run"));
        }
        let instance = self.find(key).await?;
        if instance.state != InstanceState::Running {
            return Err(EngineError::conflict(format!(
                "instance {} is {}; exec needs it running",
                instance.name, instance.state
            )));
        }
        let driver = self.driver(instance.kind)?;
        let exec_id = format!("{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff);
        let dir = self.instance_dir(&instance.id).join("execs").join(&exec_id);
        let config = driver.prepare_exec(&instance, &request, &dir).await?;
        let cleanup = |dir: PathBuf| {
            let _ = std::fs::remove_dir_all(dir);
        };
        let result = async {
            let supervisor_pid = self.spawn_supervisor(&dir, &config).await?;
            // `stop` and `rm -f` end the session by it, also after a daemon restart.
            std::fs::write(
                dir.join(crate::exec_sessions::SUPERVISOR_PID_FILE),
                supervisor_pid.to_string(),
            )
            .map_err(|e| EngineError::internal(format!("recording the exec supervisor: {e}")))?;
            let stream = if request.detach {
                None
            } else {
                Some(
                    client::attach(&config.socket_path, request.open_stdin)
                        .await
                        .map_err(supervisor_error("attaching"))?,
                )
            };
            client::call(&config.socket_path, &Request::Start)
                .await
                .map_err(|e| EngineError::new(StatusCode::BAD_REQUEST, format!("exec in {}: {e}", instance.name)))?;
            Ok::<_, EngineError>(stream)
        }
        .await;
        match result {
            Ok(stream) => {
                let socket = config.socket_path.clone();
                let session = dir.clone();
                tokio::spawn(async move {
                    let _ = client::wait(&socket).await;
                    cleanup(dir);
                });
                Ok((stream, session))
            }
            Err(e) => {
                cleanup(dir);
                Err(e)
            }
        }
    }

    pub async fn update(&self, key: &str, requested: &LimitsRequest) -> EngineResult<Instance> {
        if requested.is_empty() {
            return Err(EngineError::invalid(
                "limits",
                "nothing to update; give --cpus, --memory, --pids-limit, --reserve-cpus or --reserve-memory",
            ));
        }
        let found = self.find(key).await?;
        let _guard = self.lock(&found.id).await;
        let mut instance = self.store.get_instance(&found.id).await?;
        let mut limits = instance.limits.clone();
        if let Some(cpus) = requested.cpus {
            limits.cpus = cpus.value();
            instance.default_limits.retain(|f| f != "cpus");
        }
        if let Some(memory) = requested.memory_bytes {
            limits.memory_bytes = memory.value();
            instance.default_limits.retain(|f| f != "memory");
        }
        if let Some(pids) = requested.pids {
            limits.pids = pids.value();
            instance.default_limits.retain(|f| f != "pids");
        }
        self.check_limits(&limits)?;
        let _project_lock = match instance.spec.labels.get(berth_model::project::PROJECT_LABEL) {
            Some(project) => {
                let lock = self.lock_project(project).await?;
                let disk = crate::projects::disk_of(&instance);
                self.check_project_quota(project, &limits, disk, Some(&instance.id))
                    .await?;
                Some(lock)
            }
            None => None,
        };
        let requests = admission::updated_requests(&instance, requested, &limits)?;
        self.check_requests(&requests)?;
        let mut claim = None;
        if instance.state.is_active() {
            let needed = Reservation {
                millicpus: requests.cpus.map_or(0, |c| c.0),
                memory_bytes: requests.memory_bytes.unwrap_or(0),
                instance_storage_bytes: instance.spec.instance_storage_bytes.iter().sum(),
            };
            // Growing a running instance's reservation needs room like a start does.
            if needed.millicpus > instance.reserved_cpus().0 || needed.memory_bytes > instance.reserved_memory_bytes() {
                claim = Some(self.admission.claim(&self.store, &instance, needed, "grow").await?);
            }
            self.driver(instance.kind)?.update_limits(&instance, &limits).await?;
        }
        instance.limits = limits;
        instance.requests = requests;
        self.save(&instance).await?;
        drop(claim);
        self.emit(&instance, "update", None);
        Ok(instance)
    }

    pub async fn stats(&self, key: &str) -> EngineResult<InstanceStats> {
        let instance = self.find(key).await?;
        if !instance.state.is_active() {
            return Err(EngineError::conflict(format!(
                "instance {} is not running",
                instance.name
            )));
        }
        self.stats_of(&instance).await
    }

    /// The stats of every running instance on this node, read all at once (not one request
    /// each); with a window, read twice that far apart, each with its CPU use over it.
    pub async fn stats_all(&self, window: std::time::Duration) -> EngineResult<Vec<InstanceStats>> {
        let mut instances = self.local_instances().await?;
        instances.retain(|i| i.state.is_active());
        let read = || futures_util::future::join_all(instances.iter().map(|i| self.stats_of(i)));
        let first = read().await;
        if window.is_zero() {
            // One that stopped meanwhile is left out, as it would be from `ps`.
            return Ok(first.into_iter().filter_map(Result::ok).collect());
        }
        tokio::time::sleep(window).await;
        let second = read().await;
        Ok(first
            .into_iter()
            .zip(second)
            .filter_map(|pair| match pair {
                (Ok(before), Ok(mut after)) => {
                    let elapsed_ns = ((after.sampled_at_ms - before.sampled_at_ms).max(1) as f64) * 1e6;
                    let used = after.cpu_usage_ns.saturating_sub(before.cpu_usage_ns) as f64;
                    after.cpu_percent = Some(used / elapsed_ns * 100.0);
                    Some(after)
                }
                _ => None,
            })
            .collect())
    }

    async fn stats_of(&self, instance: &Instance) -> EngineResult<InstanceStats> {
        let mut stats = self.driver(instance.kind)?.stats(instance).await?;
        // The host's end of its link: what the host sends is what the instance receives.
        if instance.address.is_some() {
            let device = crate::networks::device_name(instance);
            let counter = |name: &str| -> u64 {
                std::fs::read_to_string(format!("/sys/class/net/{device}/statistics/{name}"))
                    .ok()
                    .and_then(|text| text.trim().parse().ok())
                    .unwrap_or(0)
            };
            stats.net_rx_bytes = counter("tx_bytes");
            stats.net_tx_bytes = counter("rx_bytes");
        }
        Ok(stats)
    }

    // ---- seeing inside ------------------------------------------------------------------

    /// The host process trees of `instances` (each under its supervisor; a VM's with qemu's
    /// threads), in their order, from one snapshot of the host's processes. Reading them
    /// blocks, so it runs off the async runtime.
    async fn process_trees(
        instances: Vec<(Option<u32>, InstanceKind)>,
    ) -> EngineResult<Vec<Vec<berth_model::api::ProcessNode>>> {
        tokio::task::spawn_blocking(move || {
            let table = ProcessTable::snapshot();
            instances
                .into_iter()
                .map(|(supervisor_pid, kind)| {
                    supervisor_pid
                        .and_then(|pid| table.tree(pid, kind == InstanceKind::Vm))
                        .into_iter()
                        .collect()
                })
                .collect()
        })
        .await
        .map_err(|e| EngineError::internal(e.to_string()))
    }

    pub async fn top(&self, key: &str) -> EngineResult<TopResponse> {
        let instance = self.find(key).await?;
        if !instance.state.is_active() {
            return Err(EngineError::conflict(format!(
                "instance {} is not running",
                instance.name
            )));
        }
        let processes = Self::process_trees(vec![(instance.supervisor_pid, instance.kind)])
            .await?
            .into_iter()
            .flatten()
            .collect();
        Ok(TopResponse {
            processes,
            id: instance.id,
            name: instance.name,
            kind: instance.kind,
        })
    }

    pub async fn tree(&self) -> EngineResult<Vec<TreeEntry>> {
        // This host's processes: only this node's instances can be found among them.
        let mut instances = self.local_instances().await?;
        instances.retain(|i| i.state.is_active());
        let roots = instances.iter().map(|i| (i.supervisor_pid, i.kind)).collect();
        let trees = Self::process_trees(roots).await?;
        Ok(instances
            .into_iter()
            .zip(trees)
            .map(|(instance, processes)| TreeEntry { processes, instance })
            .collect())
    }

    pub async fn info(&self) -> EngineResult<HostInfo> {
        let instances = self.local_instances().await?;
        let images = self.local_store.list_images().await?;
        let mut counts = InstanceCounts {
            total: instances.len(),
            ..Default::default()
        };
        for instance in &instances {
            match instance.state {
                InstanceState::Running => counts.running += 1,
                InstanceState::Paused => counts.paused += 1,
                _ => counts.stopped += 1,
            }
        }
        let allocated = self.allocation(&instances);
        let cluster = match &self.membership {
            None => None,
            Some(membership) => {
                let nodes = membership.nodes().await?;
                Some(berth_model::api::ClusterInfo {
                    node: membership.name().to_string(),
                    etcd_members: self.store.kv().members().await?,
                    ready_nodes: nodes
                        .iter()
                        .filter(|n| n.state == berth_model::node::NodeState::Ready)
                        .count(),
                    nodes: nodes.len(),
                    leader: membership.leader().await?,
                })
            }
        };
        let containers = self.containers.fingerprint();
        let vms = self.vm_driver().fingerprint();
        let detail = |fingerprint: &berth_model::driver::DriverFingerprint, key: &str| {
            fingerprint
                .details
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        Ok(HostInfo {
            node: self.node.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            kernel: self.host.kernel.clone(),
            os: self.host.os.clone(),
            cgroup_version: detail(&containers, "cgroup"),
            oci_runtime: detail(&containers, "runtime"),
            accelerators: self.host.accelerator.usable.clone(),
            accelerator_note: self.host.accelerator.note.clone(),
            guest_kernel: detail(&vms, "guest kernel"),
            cpus: self.host.cpus,
            memory_bytes: self.host.memory_bytes,
            allocated,
            state_dir: self.config.state_dir.display().to_string(),
            store: self.store.describe(),
            instances: counts,
            images: images.len(),
            default_limits: self.config.default_limits.clone(),
            cluster,
        })
    }

    /// What `instances` reserve and may use, against this host's capacity.
    pub(crate) fn allocation(&self, instances: &[Instance]) -> berth_model::api::AllocationSummary {
        let footprints: Vec<berth_store::InstanceFootprint> = instances.iter().map(Into::into).collect();
        let mut summary = self.admission.summary(&footprints, None);
        // Instance stores are files under the state directory.
        summary.capacity_instance_storage_bytes = berth_storage::file_system_bytes(&self.config.state_dir).unwrap_or(0);
        summary
    }

    /// The log file of an instance.
    pub fn log_path(&self, instance: &Instance) -> PathBuf {
        self.instance_dir(&instance.id).join("container.log")
    }

    /// The log caps of an instance: its own, or the daemon's defaults for records older
    /// than log caps (or values no longer allowed).
    pub fn log_limits(&self, instance: &Instance) -> LogLimits {
        instance
            .spec
            .log
            .resolve(self.config.log_defaults)
            .unwrap_or(self.config.log_defaults)
    }

    /// Names an instance that uses image `id`, if any.
    pub async fn image_user(&self, image_id: &str) -> EngineResult<Option<String>> {
        Ok(self
            .local_instances()
            .await?
            .into_iter()
            .find(|i| i.spec.image_id == image_id)
            .map(|i| i.name))
    }

    // ---- recovery -----------------------------------------------------------------------

    /// After a (re)start of the daemon: re-attach to supervisors that still run, record
    /// exits that happened meanwhile, and mark instances whose supervisor vanished dead.
    pub async fn recover(self: &Arc<Self>) -> EngineResult<()> {
        let instances = self.local_instances().await?;
        // Network namespaces of instances that are gone or not running (a crash between
        // steps): removing one also ends the veth pair inside it.
        let running: Vec<&Instance> = instances
            .iter()
            .filter(|i| i.state.is_active() || i.state == InstanceState::Lost)
            .collect();
        self.networks.sweep_namespaces(&running);
        if self.membership.is_some() && !self.clear_moved_away().await {
            tracing::warn!(
                "could not read the cluster's instances to clear what moved away; the failover round tries again"
            );
        }
        for mut instance in instances {
            let dir = self.instance_dir(&instance.id);
            let socket = dir.join("supervisor.sock");
            let exit_path = dir.join("exit.json");
            if instance.state == InstanceState::Lost {
                // Reported lost while this node was away; it is here to say what it is.
                instance.state = InstanceState::Running;
                instance.error = None;
                if let Err(e) = self.save(&instance).await {
                    tracing::warn!(id = %instance.id, error = %e.message, "recording a lost instance back");
                    continue;
                }
            }
            if instance.state.is_active() {
                if let Some(record) = ExitRecord::read(&exit_path) {
                    if instance.started_at.is_none_or(|started| record.finished_at >= started) {
                        tracing::info!(id = %instance.id, code = record.status.code, "instance exited while the daemon was away");
                        self.on_exit(&instance.id, Some(record)).await;
                        continue;
                    }
                }
                match client::call(&socket, &Request::Status).await {
                    Ok(_) => {
                        tracing::info!(id = %instance.id, name = %instance.name, "re-attached to running instance");
                        self.networks.restore(&instance);
                        self.watch_exit(instance.id.clone(), socket, exit_path);
                    }
                    Err(e) => {
                        tracing::warn!(id = %instance.id, error = %e, "supervisor is gone; marking the instance dead");
                        self.on_exit(&instance.id, None).await;
                    }
                }
            } else if let Ok(driver) = self.driver(instance.kind) {
                // A crash during start can leave a mount behind.
                if let Err(e) = driver.release(&instance, &dir, true).await {
                    tracing::warn!(id = %instance.id, error = %e, "cleaning up a stopped instance");
                }
            }
        }
        Ok(())
    }
}

/// Attaching to a running instance's console (VM imports and exports are in `vm_files`).
impl Engine {
    /// An attach session to a running instance (`berth attach`, `berth console`).
    pub async fn attach(&self, key: &str, stdin: bool) -> EngineResult<UnixStream> {
        let instance = self.find(key).await?;
        if !instance.state.is_active() {
            return Err(EngineError::conflict(format!(
                "instance {} is not running",
                instance.name
            )));
        }
        let stdin = stdin && instance.spec.process.open_stdin;
        client::attach(&self.socket_of(&instance), stdin)
            .await
            .map_err(supervisor_error("attaching"))
    }
}

/// `--security-opt` values: only `seccomp=unconfined` (and `seccomp=default`) exist so far.
fn seccomp_unconfined(options: &[String], kind: InstanceKind) -> EngineResult<bool> {
    let mut unconfined = false;
    for option in options {
        match option.as_str() {
            "seccomp=unconfined" if kind == InstanceKind::Container => unconfined = true,
            "seccomp=unconfined" => {
                return Err(EngineError::invalid(
                    "security_opts",
                    "--security-opt seccomp=unconfined: a VM has no seccomp filter of berth's to turn off",
                ))
            }
            "seccomp=default" => unconfined = false,
            other => {
                return Err(EngineError::invalid(
                    "security_opts",
                    format!("--security-opt {other}: berth knows seccomp=unconfined and seccomp=default"),
                ))
            }
        }
    }
    Ok(unconfined)
}

/// Volumes of instances: resolving `-v` at create, attaching at start, detaching after.
impl Engine {
    /// Volume mounts (parsed by `MountPlan`, targets unique) to attachments; a volume that
    /// does not exist yet is created (as Docker does for named volumes).
    async fn resolve_volumes(
        &self,
        mut mounts: Vec<VolumeMount>,
        kind: InstanceKind,
    ) -> EngineResult<Vec<VolumeMount>> {
        // Every existing volume is checked before a missing one is created, so a refusal
        // leaves nothing behind.
        for mount in &mounts {
            let volume = match self.volumes.get(&mount.volume).await {
                Ok(volume) => volume,
                Err(e) if e.status == StatusCode::NOT_FOUND => continue,
                Err(e) => return Err(e),
            };
            if kind == InstanceKind::Vm && volume.nfs.as_ref().is_some_and(|l| l.mode == NfsMode::Mount) {
                return Err(EngineError::invalid(
                    "volumes",
                    format!(
                        "-v {}: volume {} is a directory on an NFS share (mode=mount), which only containers can use; a VM needs an nfs volume of mode=image",
                        mount.volume, volume.name
                    ),
                ));
            }
        }
        for mount in &mut mounts {
            let volume = match self.volumes.get(&mount.volume).await {
                Ok(volume) => volume,
                Err(e) if e.status == StatusCode::NOT_FOUND => {
                    self.volumes
                        .create(&mount.volume, None, None, &Default::default())
                        .await?
                }
                Err(e) => return Err(e),
            };
            self.volumes.attach_to(&volume, mount);
        }
        Ok(mounts)
    }

    /// Running instances other than `except` that use volume `name`: this node's, and for
    /// an NFS volume (which every node reaches) any node's.
    async fn volume_users(&self, name: &str, except: Option<&str>, running_only: bool) -> EngineResult<Vec<Instance>> {
        Ok(self
            .store
            .list_instances()
            .await?
            .into_iter()
            .filter(|i| Some(i.id.as_str()) != except)
            .filter(|i| !running_only || i.state.is_active())
            .filter(|i| {
                i.spec
                    .volumes
                    .iter()
                    .any(|v| v.volume == name && (self.is_here(i) || v.source.starts_with("nfs://")))
            })
            .collect())
    }

    /// A VM needs its volumes alone (they are block devices to it); containers share theirs
    /// through one host mount. An NFS volume is used on one node at a time: two nodes'
    /// mounts of one filesystem would corrupt it.
    async fn attach_volumes(&self, instance: &Instance) -> EngineResult<()> {
        for volume in &instance.spec.volumes {
            let users = self.volume_users(&volume.volume, Some(&instance.id), true).await?;
            if let Some(other) = users.iter().find(|other| !self.is_here(other)) {
                return Err(EngineError::conflict(format!(
                    "volume {} is in use on node {} by {} {}; an NFS volume is used on one node at a time: stop it there first",
                    volume.volume, other.node, other.kind, other.name
                )));
            }
            let conflict = users
                .iter()
                .find(|other| instance.kind == InstanceKind::Vm || other.kind == InstanceKind::Vm);
            if let Some(other) = conflict {
                return Err(EngineError::conflict(format!(
                    "volume {} is in use by running {} {}; a VM needs its volumes to itself",
                    volume.volume, other.kind, other.name
                )));
            }
            if instance.kind == InstanceKind::Container {
                let found = self.volumes.get(&volume.volume).await?;
                self.volumes.mount(&found).await?;
            }
        }
        Ok(())
    }

    /// Unmounts volumes no running container uses any more.
    async fn detach_volumes(&self, instance: &Instance) {
        if instance.kind != InstanceKind::Container {
            return;
        }
        for volume in &instance.spec.volumes {
            match self.volume_users(&volume.volume, Some(&instance.id), true).await {
                Ok(users) if users.is_empty() => {
                    let unmounted = match self.volumes.get(&volume.volume).await {
                        Ok(found) => self.volumes.unmount(&found).await,
                        Err(e) => Err(e),
                    };
                    if let Err(e) = unmounted {
                        tracing::warn!(volume = %volume.volume, error = %e.message, "unmounting a volume");
                    }
                }
                _ => {}
            }
        }
    }

    pub async fn remove_volume(&self, name: &str, force: bool) -> EngineResult<()> {
        let users = self.volume_user_names(name, false).await?;
        self.volumes.remove(name, &users, force).await?;
        self.forget_owners(berth_model::project::ResourceKind::Volume, name)
            .await
    }

    /// Names of the instances (running ones only, if asked) that use volume `name`.
    async fn volume_user_names(&self, name: &str, running_only: bool) -> EngineResult<Vec<String>> {
        Ok(self
            .volume_users(name, None, running_only)
            .await?
            .into_iter()
            .map(|i| i.name)
            .collect())
    }

    pub async fn snapshot_volume(&self, name: &str, snapshot: &str) -> EngineResult<Volume> {
        let running = self.volume_user_names(name, true).await?;
        self.volumes.snapshot(name, snapshot, &running).await
    }

    pub async fn delete_volume_snapshot(&self, name: &str, snapshot: &str) -> EngineResult<Volume> {
        let running = self.volume_user_names(name, true).await?;
        self.volumes.delete_snapshot(name, snapshot, &running).await
    }

    pub async fn restore_volume(&self, name: &str, snapshot: &str) -> EngineResult<Volume> {
        let running = self.volume_user_names(name, true).await?;
        self.volumes.restore(name, snapshot, &running).await
    }
}

/// Networks of instances: which one at create, port clashes at start.
impl Engine {
    /// The network (checked) and ports (parsed) a create request asks for.
    async fn resolve_network(&self, request: &CreateInstanceRequest) -> EngineResult<(String, Vec<PortMapping>)> {
        let network = request.network.clone().unwrap_or_else(|| DEFAULT_NETWORK.to_string());
        match network.as_str() {
            "host" if request.kind == InstanceKind::Vm => {
                return Err(EngineError::invalid(
                    "network",
                    "--network host is for containers; a VM joins a network (default or another)",
                ))
            }
            "none" | "host" => {}
            name => {
                self.networks.get(name).await.map_err(|mut e| {
                    e.field = Some("network".into());
                    e
                })?;
            }
        }
        let mut ports: Vec<PortMapping> = Vec::new();
        for text in &request.ports {
            let port = PortMapping::parse(text).map_err(|m| EngineError::invalid("ports", format!("-p {m}")))?;
            if matches!(network.as_str(), "none" | "host") {
                return Err(EngineError::invalid(
                    "ports",
                    format!("-p {text}: ports are published from a network; not with --network {network}"),
                ));
            }
            if ports.iter().any(|p| p.clashes_with(&port)) {
                return Err(EngineError::invalid("ports", format!("-p {text} is given twice")));
            }
            ports.push(port);
        }
        Ok((network, ports))
    }

    /// Refuses to start an instance whose published port another running instance holds.
    async fn check_ports(&self, instance: &Instance) -> EngineResult<()> {
        if instance.spec.ports.is_empty() {
            return Ok(());
        }
        for other in self.local_instances().await? {
            if other.id == instance.id || !other.state.is_active() {
                continue;
            }
            for port in &instance.spec.ports {
                if other.spec.ports.iter().any(|p| p.clashes_with(port)) {
                    return Err(EngineError::conflict(format!(
                        "port {}/{} is already published by {}; choose another host port",
                        port.host_port, port.protocol, other.name
                    )));
                }
            }
        }
        Ok(())
    }

    pub async fn remove_network(&self, name: &str) -> EngineResult<()> {
        let users: Vec<String> = self
            .local_instances()
            .await?
            .into_iter()
            .filter(|i| i.spec.network == name)
            .map(|i| i.name)
            .collect();
        self.networks.remove(name, &users).await?;
        self.forget_owners(berth_model::project::ResourceKind::Network, name)
            .await
    }
}

/// Labels are the client's: bounded in number and size, keys printable without spaces.
fn check_labels(labels: &std::collections::BTreeMap<String, String>) -> EngineResult<()> {
    use berth_model::api::{MAX_LABELS, MAX_LABEL_KEY, MAX_LABEL_VALUE};
    if labels.len() > MAX_LABELS {
        return Err(EngineError::invalid(
            "labels",
            format!("--label: at most {MAX_LABELS} labels"),
        ));
    }
    for (key, value) in labels {
        if key.is_empty()
            || key.len() > MAX_LABEL_KEY
            || key.chars().any(|c| c.is_whitespace() || c.is_control() || c == '=')
        {
            return Err(EngineError::invalid(
                "labels",
                format!(
                    "--label '{}': a key is 1-{MAX_LABEL_KEY} bytes without spaces, '=' or control characters",
                    key.escape_default()
                ),
            ));
        }
        if value.len() > MAX_LABEL_VALUE || value.chars().any(char::is_control) {
            return Err(EngineError::invalid(
                "labels",
                format!("--label {key}: a value is at most {MAX_LABEL_VALUE} bytes without control characters"),
            ));
        }
    }
    Ok(())
}
