//! Instances (containers and VMs) as berth records them: what was asked for, which limits
//! were applied, and where the instance is in its life cycle.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::quantity::{ByteSize, MilliCpus};

/// Which driver runs an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum InstanceKind {
    Container,
    Vm,
}

impl fmt::Display for InstanceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InstanceKind::Container => "container",
            InstanceKind::Vm => "vm",
        })
    }
}

/// The life-cycle state, the same words for both kinds (Docker's vocabulary).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum InstanceState {
    /// Prepared (rootfs, spec) but never started or stopped since.
    Created,
    Running,
    Paused,
    /// The main process ended; `exit_code` says how.
    Exited,
    /// The supervisor vanished without recording an exit, or clean-up failed.
    Dead,
    /// Its node went down and it has local state (a local volume, a host path, a VM's own
    /// disks) or no restart policy: it is not recreated elsewhere. Its node sets the real
    /// state again when it returns.
    Lost,
}

impl InstanceState {
    /// States in which host processes of the instance exist.
    pub fn is_active(self) -> bool {
        matches!(self, InstanceState::Running | InstanceState::Paused)
    }
}

impl fmt::Display for InstanceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InstanceState::Created => "created",
            InstanceState::Running => "running",
            InstanceState::Paused => "paused",
            InstanceState::Exited => "exited",
            InstanceState::Dead => "dead",
            InstanceState::Lost => "lost",
        })
    }
}

/// Resource limits as applied to a running instance. `None` means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Limits {
    /// CPU quota in CPUs (0.5 = half of one CPU's time).
    #[schema(value_type = Option<f64>)]
    pub cpus: Option<MilliCpus>,
    pub memory_bytes: Option<u64>,
    pub pids: Option<u64>,
    /// Network bandwidth, bits per second (from the instance type or `--bandwidth`).
    #[serde(default)]
    pub network_bits_per_second: Option<u64>,
}

impl Limits {
    pub fn memory(&self) -> Option<ByteSize> {
        self.memory_bytes.map(ByteSize)
    }
}

/// What an instance reserves on its host, its requests as Kubernetes calls them: admission
/// counts these (and the scheduler will place by them), while its limits cap what it may use.
/// Null only in records written before requests existed, which are charged their limits.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Requests {
    /// CPUs reserved (0.1 = a tenth of one CPU's time).
    #[schema(value_type = Option<f64>)]
    pub cpus: Option<MilliCpus>,
    pub memory_bytes: Option<u64>,
}

/// What the main process of an instance runs and how.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProcessSpec {
    /// argv of the main process after the image's Entrypoint/Cmd were applied.
    pub args: Vec<String>,
    /// KEY=VALUE pairs after merging the image's Env with the user's.
    pub env: Vec<String>,
    pub working_dir: String,
    /// The user as given (name, uid, uid:gid); resolved against the rootfs at start.
    pub user: String,
    pub tty: bool,
    /// Keep stdin open for attach (`-i`).
    pub open_stdin: bool,
}

/// Everything an instance was created with. Immutable after create except limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InstanceSpec {
    pub kind: InstanceKind,
    /// The image reference the user gave.
    pub image: String,
    /// The image's id (config digest) at create time.
    pub image_id: String,
    pub process: ProcessSpec,
    pub hostname: String,
    /// Remove the instance when its main process exits (`--rm`).
    pub auto_remove: bool,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Sizes of the instance's ephemeral instance-store disks (from its type).
    #[serde(default)]
    pub instance_storage_bytes: Vec<u64>,
    /// A container's writable layer size (`--disk`); unbounded when absent.
    #[serde(default)]
    pub disk_bytes: Option<u64>,
    /// Volumes attached (`-v NAME:/path`, `--mount type=volume`).
    #[serde(default)]
    pub volumes: Vec<crate::volume::VolumeMount>,
    /// Host paths and tmpfs mounted in (`-v /host:/path`, `--mount type=bind|tmpfs`, `--tmpfs`).
    #[serde(default)]
    pub mounts: Vec<crate::mount::InstanceMount>,
    /// "default", another network's name, "none" (loopback only) or "host".
    #[serde(default = "default_network")]
    pub network: String,
    /// Published ports (`-p`).
    #[serde(default)]
    pub ports: Vec<crate::network::PortMapping>,
    /// Containers: no seccomp filter (`--security-opt seccomp=unconfined`); berth's default
    /// filter applies otherwise.
    #[serde(default)]
    pub seccomp_unconfined: bool,
    /// Log caps in force (`--log-opt`, else the daemon's defaults when it was created);
    /// records from before them take the daemon's current defaults.
    #[serde(default)]
    pub log: crate::log::LogOptions,
    /// Why the instance is on its node: the scheduler's choice, or `--node`. None on a single
    /// host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<String>,
    /// What happens when the main process ends (`--restart`); in a cluster, instances with a
    /// policy and no local state are moved when their node goes down.
    #[serde(default)]
    #[schema(value_type = String, example = "always")]
    pub restart: RestartPolicy,
    /// In a cluster: the `--constraint`s it was placed by, kept for moving it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<String>,
    /// In a cluster: the `--spread-by` label it was placed by, kept for moving it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread_by: Option<String>,
    /// The health check its node runs while it runs (`--health-cmd`, Compose's
    /// `healthcheck`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<crate::health::HealthCheck>,
}

/// `--restart`: what happens when an instance's main process ends. A stop or kill by the
/// user is never undone by it (as Docker does).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Never started again (the default).
    #[default]
    No,
    /// Started again when it ends with a non-zero code, at most `max_retries` times when set.
    OnFailure { max_retries: Option<u32> },
    /// Started again however it ends.
    Always,
}

impl RestartPolicy {
    /// Whether an instance that ended with `code` after `restarts` automatic restarts is
    /// started again.
    pub fn restarts_after(self, code: Option<i32>, restarts: u32) -> bool {
        match self {
            RestartPolicy::No => false,
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure { max_retries } => code != Some(0) && max_retries.is_none_or(|max| restarts < max),
        }
    }
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestartPolicy::No => f.write_str("no"),
            RestartPolicy::Always => f.write_str("always"),
            RestartPolicy::OnFailure { max_retries: None } => f.write_str("on-failure"),
            RestartPolicy::OnFailure { max_retries: Some(n) } => write!(f, "on-failure:{n}"),
        }
    }
}

impl std::str::FromStr for RestartPolicy {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("--restart {text:?}: use no, on-failure, on-failure:MAX_RETRIES or always");
        match text.split_once(':') {
            None => match text {
                "no" | "" => Ok(RestartPolicy::No),
                "always" | "unless-stopped" => Ok(RestartPolicy::Always),
                "on-failure" => Ok(RestartPolicy::OnFailure { max_retries: None }),
                _ => Err(bad()),
            },
            Some(("on-failure", n)) => n
                .parse::<u32>()
                .map(|n| RestartPolicy::OnFailure { max_retries: Some(n) })
                .map_err(|_| bad()),
            Some(_) => Err(bad()),
        }
    }
}

impl Serialize for RestartPolicy {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RestartPolicy {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// In a cluster: an instance moved off a node (down, draining, or `berth migrate`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Rescheduled {
    /// The node it ran on.
    pub from: String,
    pub at: DateTime<Utc>,
    /// Its new node has made it its own (and started it).
    pub adopted: bool,
    /// `berth migrate` (or drain) moved it: what the move measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<Migration>,
}

/// What a move by `berth migrate` measured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Migration {
    /// A VM moved live (QEMU); false: a container stopped, moved (its writable layer) and
    /// started on the new node.
    pub live: bool,
    /// How long it did not run: a live VM's pause at the switch-over, including berth's
    /// hand-over (the record written, the target resumed); a container's time from the stop
    /// to running again. In milliseconds.
    pub downtime_ms: u64,
    /// QEMU's own downtime (the last memory copy), in milliseconds; 0 for a container.
    pub qemu_downtime_ms: u64,
    /// From the request to the VM running on its new node, in milliseconds.
    pub total_ms: u64,
    /// Guest memory (a VM) or the writable layer's archive (a container) sent, in bytes.
    pub transferred_bytes: u64,
    /// The downtime limit it ran under (`--max-downtime`), in milliseconds.
    pub max_downtime_ms: u64,
    pub auto_converge: bool,
    pub postcopy: bool,
    /// How a VM's guest ran on both nodes: "kvm" or "tcg"; empty for a container.
    pub accelerator: String,
    /// A VM's local disks copied to the new node while it ran (NBD mirror), in bytes; 0 when
    /// its disks are on a share.
    #[serde(default)]
    pub disk_bytes: u64,
}

fn default_network() -> String {
    crate::network::DEFAULT_NETWORK.to_string()
}

/// How the main process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ExitStatus {
    /// Exit code, or 128 + signal number when killed by a signal (shell convention).
    pub code: i32,
    pub signal: Option<i32>,
    pub oom_killed: bool,
}

impl ExitStatus {
    pub fn from_code(code: i32) -> Self {
        ExitStatus {
            code,
            signal: None,
            oom_killed: false,
        }
    }
    pub fn from_signal(signal: i32) -> Self {
        ExitStatus {
            code: 128 + signal,
            signal: Some(signal),
            oom_killed: false,
        }
    }
}

/// A VM's disk as `inspect` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VmDisk {
    pub path: String,
    /// qcow2, raw
    pub format: String,
    /// Virtual size.
    pub size_bytes: u64,
    /// The read-only image this copy-on-write disk is based on, if any.
    pub backing: Option<String>,
    /// How the guest sees it: virtio, ide, sata, scsi, nvme.
    pub bus: String,
    /// Instance storage is wiped on stop (EC2 instance-store semantics).
    #[serde(default)]
    pub ephemeral: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VcpuCount {
    pub current: u32,
    pub max: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VmMemory {
    pub current_bytes: u64,
    pub max_bytes: u64,
}

/// How a VM boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VmBoot {
    /// berth's guest kernel and agent run the command of a container image.
    Image,
    /// Firmware (SeaBIOS) boots the first disk, as any hypervisor does.
    Firmware,
}

/// The VM part of an instance record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VmDetails {
    pub boot: VmBoot,
    /// "kvm" or "tcg", decided at start.
    pub accel: String,
    /// QEMU machine type (microvm, q35, pc).
    pub machine: String,
    pub vcpus: VcpuCount,
    /// CPU topology as imported (cores per socket); one core per socket otherwise.
    #[serde(default)]
    pub cores_per_socket: Option<u32>,
    pub memory: VmMemory,
    pub disks: Vec<VmDisk>,
    pub qmp_socket: String,
    /// Network interfaces as imported (model, MAC), carried over when supported.
    #[serde(default)]
    pub interfaces: Vec<VmInterface>,
    /// Where the VM came from (an imported libvirt XML or .vmx file).
    #[serde(default)]
    pub imported_from: Option<String>,
    #[serde(default)]
    pub uuid: Option<String>,
    /// Disk snapshots (qcow2 internal snapshots of every persistent disk), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<VmSnapshot>,
    /// "uefi" when OVMF boots it (a UEFI disk image); SeaBIOS otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<String>,
    /// What the VM's cloud-init seed (a `cidata` disk, made at each start) holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_init: Option<CloudInit>,
    /// A q35 without the chipset's SATA controller, SMBus, PS/2 controller and VMware port
    /// (VMs booted from container images use virtio only; probing the PS/2 controller cost
    /// their boot 40 ms under TCG). Recorded rather than derived: a VM started without them
    /// must find the same devices at a live migration's destination, and one recorded before
    /// this field existed has them all.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub minimal_chipset: bool,
    /// Started with qboot, the minimal firmware QEMU ships, instead of SeaBIOS: for VMs
    /// booted from container images, whose kernel QEMU loads itself (SeaBIOS's POST took
    /// 60-90 ms of their boot under TCG). Recorded for the same reason as `minimal_chipset`:
    /// a live migration's destination must load the same firmware image.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub qboot: bool,
    /// The guest agent answers each exec request that carries a session token with that
    /// token before the session's output, so a host can tell its session's frames from the
    /// late ones of a session whose host left. Recorded at creation, as `minimal_chipset`:
    /// a VM recorded before it existed may still run an agent without it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub agent_acknowledges_sessions: bool,
}

/// cloud-init NoCloud input: the user's user-data and SSH keys. meta-data (instance id,
/// hostname, keys) and network-config (the instance's berth address) are made by berth.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloudInit {
    /// `#cloud-config` YAML or a `#!` script, at most 64 KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 65536)]
    pub user_data: Option<String>,
    /// OpenSSH public keys (`ssh-ed25519 AAAA... comment`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ssh_keys: Vec<String>,
}

/// A snapshot of a VM's persistent disks (`berth snapshot create`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VmSnapshot {
    pub name: String,
    pub created_at: DateTime<Utc>,
    /// Taken while the VM ran (crash-consistent), or while it was stopped.
    pub live: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VmInterface {
    pub model: String,
    pub mac: Option<String>,
}

/// The stored record of an instance; `berth inspect` prints it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Instance {
    pub id: String,
    pub name: String,
    pub kind: InstanceKind,
    pub image: String,
    pub state: InstanceState,
    pub exit_code: Option<i32>,
    pub oom_killed: bool,
    /// Host PID of the main process while active.
    pub pid: Option<u32>,
    /// Host PID of the per-instance supervisor while active.
    pub supervisor_pid: Option<u32>,
    pub limits: Limits,
    /// What it reserves against the host's capacity (at most its limits).
    #[serde(default)]
    pub requests: Requests,
    /// The instance type it was sized from, if any.
    #[serde(default)]
    pub instance_type: Option<String>,
    /// Which of `limits` came from the daemon's defaults rather than the user.
    pub default_limits: Vec<String>,
    pub spec: InstanceSpec,
    /// The node this instance lives on (cluster seam; one host has one node).
    pub node: String,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub restart_count: u32,
    /// The last error the daemon met while acting on this instance.
    pub error: Option<String>,
    /// VM details (`kind: vm` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<VmDetails>,
    /// Its address on its network (kept from create to removal).
    #[serde(default)]
    pub address: Option<crate::network::InstanceAddress>,
    /// In a cluster: set when it was moved off a node that went down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rescheduled: Option<Rescheduled>,
    /// With a health check: what its checks found since it last started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<crate::health::Health>,
}

impl Instance {
    pub fn short_id(&self) -> &str {
        short_id(&self.id)
    }

    /// CPU held against the host's capacity while active (`Requests::held_cpus`).
    pub fn reserved_cpus(&self) -> MilliCpus {
        self.requests.held_cpus(&self.limits)
    }

    /// Memory held against the host's capacity while active (`Requests::held_memory_bytes`).
    pub fn reserved_memory_bytes(&self) -> u64 {
        self.requests.held_memory_bytes(&self.limits)
    }
}

impl Requests {
    /// CPU held against the host's capacity while active: the request. Records from before
    /// requests existed are charged their limit, as they were when they were admitted.
    pub fn held_cpus(&self, limits: &Limits) -> MilliCpus {
        self.cpus.or(limits.cpus).unwrap_or(MilliCpus(0))
    }

    /// Memory held against the host's capacity while active; as `held_cpus`.
    pub fn held_memory_bytes(&self, limits: &Limits) -> u64 {
        self.memory_bytes.or(limits.memory_bytes).unwrap_or(0)
    }
}

/// The 12-character form of an id, as Docker shows it.
pub fn short_id(id: &str) -> &str {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    &id[..id.len().min(12)]
}

/// A fresh random instance id: 64 hex digits, like Docker's.
pub fn new_instance_id() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}

/// Names of volumes, snapshots and the like: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most 64
/// characters (they become file names, so nothing else is let through).
pub fn validate_object_name(what: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid {what} name '{name}': use letters, digits, '_', '.' and '-' (at most 64)"
        ))
    }
}

/// Instance names: Docker's rule, `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most 128 characters.
pub fn validate_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if name.is_empty() || name.len() > 128 || !first_ok || !rest_ok {
        return Err(format!(
            "invalid name '{name}': use letters, digits, '_', '.' and '-', starting with a letter or digit (at most 128)"
        ));
    }
    if name.len() == 64 && name.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("invalid name '{name}': it would be mistaken for an id"));
    }
    Ok(())
}

const ADJECTIVES: &[&str] = &[
    "brave", "calm", "eager", "fond", "gentle", "happy", "jolly", "keen", "lucid", "merry", "nimble", "proud", "quiet",
    "rapid", "steady", "tidy", "vivid", "witty", "young", "zesty",
];
const NOUNS: &[&str] = &[
    "anchor", "barge", "cove", "dock", "ferry", "galley", "harbor", "island", "jetty", "keel", "lagoon", "mast", "non",
    "oar", "pier", "quay", "reef", "sail", "tide", "wharf",
];

/// A readable random name such as `steady_wharf_3f2a`.
pub fn generate_name() -> String {
    let adjective = ADJECTIVES[rand::random::<usize>() % ADJECTIVES.len()];
    let noun = NOUNS[rand::random::<usize>() % NOUNS.len()];
    let suffix: u16 = rand::random();
    format!("{adjective}_{noun}_{suffix:04x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_name("web-1").is_ok());
        assert!(validate_name("a.b_c").is_ok());
        assert!(validate_name("-x").is_err());
        assert!(validate_name("").is_err());
        assert!(validate_name("a/b").is_err());
        assert!(validate_name(&"a".repeat(129)).is_err());
        assert!(validate_name(&generate_name()).is_ok());
    }

    #[test]
    fn records_from_before_requests_load_and_are_charged_their_limits() {
        // An instance record as berth wrote it before requests existed.
        let legacy = serde_json::json!({
            "id": "a".repeat(64), "name": "old", "kind": "container", "image": "busybox",
            "state": "running", "exit_code": null, "oom_killed": false, "pid": 1, "supervisor_pid": 2,
            "limits": {"cpus": 1.0, "memory_bytes": 536870912u64, "pids": 1024},
            "default_limits": ["cpus", "memory", "pids"],
            "spec": {"kind": "container", "image": "busybox", "image_id": "sha256:x",
                     "process": {"args": ["sleep"], "env": [], "working_dir": "", "user": "", "tty": false, "open_stdin": false},
                     "hostname": "old", "auto_remove": false},
            "node": "n", "created_at": "2025-01-01T00:00:00Z", "started_at": null, "finished_at": null,
            "restart_count": 0, "error": null
        });
        let instance: Instance = serde_json::from_value(legacy).unwrap();
        assert_eq!(instance.requests, Requests::default());
        assert_eq!(instance.reserved_cpus(), MilliCpus(1000));
        assert_eq!(instance.reserved_memory_bytes(), 512 << 20);
        let unlimited = Instance {
            limits: Limits::default(),
            ..instance.clone()
        };
        assert_eq!(
            (unlimited.reserved_cpus(), unlimited.reserved_memory_bytes()),
            (MilliCpus(0), 0)
        );
        let requested = Instance {
            requests: Requests {
                cpus: Some(MilliCpus(100)),
                memory_bytes: Some(64 << 20),
            },
            ..instance
        };
        assert_eq!(requested.reserved_cpus(), MilliCpus(100));
        assert_eq!(requested.reserved_memory_bytes(), 64 << 20);
    }

    #[test]
    fn ids() {
        let id = new_instance_id();
        assert_eq!(id.len(), 64);
        assert_eq!(short_id(&id).len(), 12);
        assert_eq!(short_id("sha256:0123456789abcdef"), "0123456789ab");
    }
}
