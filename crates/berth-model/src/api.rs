//! Request and response bodies of the daemon's REST API (version 1). The CLI and the daemon
//! share these types, so the wire format has one definition.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};

use crate::instance::{ExitStatus, Instance, InstanceKind};
use crate::quantity::{LimitSetting, MilliCpus};

pub const API_VERSION: &str = "v1";

/// Limits as requested: a field that is absent gets the daemon's default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LimitsRequest {
    /// CPUs (a number such as 0.5) or "unlimited".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = cpus_limit_schema)]
    pub cpus: Option<LimitSetting<MilliCpus>>,
    /// Bytes or "unlimited".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = count_limit_schema)]
    pub memory_bytes: Option<LimitSetting<u64>>,
    /// Process count or "unlimited".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = count_limit_schema)]
    pub pids: Option<LimitSetting<u64>>,
    /// CPUs to reserve (the request admission counts); by default the CPU limit if one is
    /// given, else the daemon's default request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<f64>, exclusive_minimum = 0, maximum = 1000000)]
    pub reserve_cpus: Option<MilliCpus>,
    /// Bytes of memory to reserve; by default as `reserve_cpus`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(maximum = 18446744073709551615u64)]
    pub reserve_memory_bytes: Option<u64>,
}

/// A limit as the API takes it: absent (null), a value or "unlimited".
fn limit_schema(value: utoipa::openapi::Object) -> utoipa::openapi::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
    let one_of = OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .item(value)
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(["unlimited"])),
        )
        .build();
    utoipa::openapi::Schema::OneOf(one_of)
}

/// CPUs: what `MilliCpus` deserializes (positive, at most a million).
fn cpus_limit_schema() -> utoipa::openapi::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    limit_schema(
        ObjectBuilder::new()
            .schema_type(Type::Number)
            .exclusive_minimum(Some(0.0))
            .maximum(Some(1e6))
            .build(),
    )
}

/// Bytes or a count.
fn count_limit_schema() -> utoipa::openapi::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    limit_schema(
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::Int64,
            )))
            .minimum(Some(0))
            .maximum(Some(u64::MAX))
            .build(),
    )
}

impl LimitsRequest {
    pub fn is_empty(&self) -> bool {
        self.cpus.is_none()
            && self.memory_bytes.is_none()
            && self.pids.is_none()
            && self.reserve_cpus.is_none()
            && self.reserve_memory_bytes.is_none()
    }
}

/// `POST /v1/instances`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateInstanceRequest {
    /// Letters, digits, '_', '.' and '-', starting with a letter or digit; at most 128.
    #[serde(default)]
    #[schema(pattern = "^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")]
    pub name: Option<String>,
    #[serde(default = "default_kind")]
    pub kind: InstanceKind,
    /// A tag, an id or a unique id prefix of an image this daemon has.
    #[schema(min_length = 1)]
    pub image: String,
    /// Replaces the image's Cmd (and, with `entrypoint`, its Entrypoint).
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    /// KEY=VALUE pairs added to (or overriding) the image's Env.
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub tty: bool,
    #[serde(default)]
    pub open_stdin: bool,
    #[serde(default)]
    pub auto_remove: bool,
    /// Letters, digits, '-' and '.'; at most 63. Default: the short id.
    #[serde(default)]
    #[schema(pattern = "^[a-zA-Z0-9.-]{1,63}$")]
    pub hostname: Option<String>,
    #[serde(default)]
    pub limits: LimitsRequest,
    /// An instance type (`berth types ls`); explicit limits override single values of it.
    #[serde(default)]
    pub instance_type: Option<String>,
    /// VM sizing beyond the limits (`kind: vm` only).
    #[serde(default)]
    pub vm: Option<VmRequest>,
    /// Size of the writable layer (containers) or root disk (VMs): 16 MiB to 64 TiB, and
    /// what the state directory's file system can hold.
    #[serde(default)]
    #[schema(minimum = 16777216, maximum = 70368744177664u64)]
    pub disk_bytes: Option<u64>,
    /// `-v` values, as Docker's `Binds`: `NAME:/path[:ro]` attaches a volume (created if
    /// missing), `/host/path:/path[:ro]` binds a host path (created if missing).
    #[serde(default)]
    pub volumes: Vec<String>,
    /// `--mount` values: `type=bind|volume|tmpfs,source=...,target=...[,readonly]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<String>,
    /// `--tmpfs` values: `/path[:size=64m,mode=1777,...]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tmpfs: Vec<String>,
    /// "default" when absent; "none", "host" or a network's name.
    #[serde(default)]
    pub network: Option<String>,
    /// Ports to publish: `[IP:]HOSTPORT:PORT[/tcp|udp]` each.
    #[serde(default)]
    pub ports: Vec<String>,
    /// Network bandwidth, bits per second (overrides the instance type's): 1 kbit to 1 tbit.
    #[serde(default)]
    #[schema(minimum = 1000, maximum = 1000000000000u64)]
    pub bandwidth_bits_per_second: Option<u64>,
    /// Security options (`--security-opt`): `seccomp=unconfined` turns the seccomp filter off.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_opts: Vec<String>,
    /// Log caps (`--log-opt max-size=... max-file=...`); the daemon's defaults fill the rest.
    #[serde(default)]
    pub log: crate::log::LogOptions,
    /// A health check its node runs while it runs (Docker's `Healthcheck`); `["NONE"]`
    /// turns off the image's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<crate::health::HealthCheckRequest>,
    /// In a cluster: the node to run on (`--node`); the scheduler chooses when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$")]
    pub node: Option<String>,
    /// In a cluster: `LABEL==VALUE` or `LABEL!=VALUE` each node must meet (`--constraint`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<String>,
    /// In a cluster: how the scheduler chooses among the nodes that fit (`--placement`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<PlacementStrategy>,
    /// In a cluster: spread over the values of this node label first (`--spread-by zone`):
    /// the value whose nodes run the fewest instances, then `placement` among its nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[^\\s]{1,63}$")]
    pub spread_by: Option<String>,
    /// `no`, `on-failure`, `on-failure:MAX_RETRIES` or `always` (`--restart`).
    #[serde(default)]
    #[schema(value_type = Option<String>, pattern = "^(no|always|unless-stopped|on-failure(:[0-9]{1,9})?)$")]
    pub restart: Option<crate::instance::RestartPolicy>,
    /// Labels kept with the instance (`--label KEY=VALUE`; `berth apply` marks a stack's
    /// instances with them): at most 64, keys up to 128 bytes, values up to 4096.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
}

/// How many labels an instance may carry, and how long their keys and values may be.
pub const MAX_LABELS: usize = 64;
pub const MAX_LABEL_KEY: usize = 128;
pub const MAX_LABEL_VALUE: usize = 4096;

/// How the scheduler chooses among nodes that fit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PlacementStrategy {
    /// The emptiest node (by reserved CPU and memory, then instance count).
    #[default]
    Spread,
    /// The fullest node that fits.
    Binpack,
}

/// `POST /v1/networks`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateNetworkRequest {
    /// Letters, digits, '_', '.' and '-'; at most 64; not "none" or "host".
    #[schema(pattern = "^[a-zA-Z0-9_.-]{1,64}$")]
    pub name: String,
    /// An IPv4 subnet with a prefix of 8 to 29 bits, e.g. 10.90.0.0/24; the next free /24
    /// when absent.
    #[serde(default)]
    #[schema(
        pattern = "^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])/([89]|1[0-9]|2[0-9])$"
    )]
    pub subnet: Option<String>,
    #[serde(default)]
    pub internal: bool,
}

/// `POST /v1/volumes`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateVolumeRequest {
    /// Letters, digits, '_', '.' and '-', starting with a letter or digit; at most 64.
    #[schema(pattern = "^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$")]
    pub name: String,
    /// Default 10 GiB (thin: nothing is used until written); 16 MiB to 64 TiB, and for a
    /// local volume what the state directory's file system can hold.
    #[serde(default)]
    #[schema(minimum = 16777216, maximum = 70368744177664u64)]
    pub size_bytes: Option<u64>,
    /// "local" (the default) or "nfs".
    #[serde(default)]
    #[schema(pattern = "^(local|nfs)$")]
    pub driver: Option<String>,
    /// Driver options (`--opt KEY=VALUE`); nfs: `server`, `share`, `mode` (image|mount).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

/// `POST /v1/volumes/{name}/snapshots` and `/restore`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotRequest {
    /// Letters, digits, '_', '.' and '-', starting with a letter or digit; at most 64.
    #[schema(pattern = "^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$")]
    pub name: String,
}

/// Sizing of a VM: the limits give the current vCPUs and memory; these the maximums that
/// live resize may grow to, and the root disk.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VmRequest {
    #[serde(default)]
    #[schema(maximum = 4294967295u64)]
    pub max_cpus: Option<u32>,
    #[serde(default)]
    #[schema(maximum = 18446744073709551615u64)]
    pub max_memory_bytes: Option<u64>,
    /// Where the root disk lives (`--disk-on`): absent for the instance's directory, or
    /// `nfs://SERVER/EXPORT`, a share every node reaches: then the VM may restart on
    /// another node when its own goes down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^nfs://[A-Za-z0-9.-]+/[A-Za-z0-9/._-]*$")]
    pub disk_on: Option<String>,
    /// A NoCloud seed for a VM that boots its own disk (a distribution cloud image):
    /// `--cloud-init`, `--ssh-key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_init: Option<crate::instance::CloudInit>,
}

/// `POST /v1/vms/import`: a libvirt domain XML or a VMware .vmx on the daemon's host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VmImportRequest {
    /// An absolute path on the daemon's host.
    #[schema(pattern = "^/")]
    pub path: String,
    /// The instance's name (as for `POST /v1/instances`); default: the domain's own.
    #[serde(default)]
    #[schema(pattern = "^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")]
    pub name: Option<String>,
    /// Let `<disk type='block'>` import a host block device (a physical disk).
    #[serde(default)]
    pub allow_device: bool,
    /// OVF/OVA: import only this `VirtualSystem` (its id or name); default every one.
    #[serde(default)]
    pub vm: Option<String>,
    /// OVF/OVA: the `DeploymentOptionSection` configuration to use; default the package's.
    #[serde(default)]
    pub deployment: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VmImportResponse {
    pub id: String,
    pub name: String,
    /// Settings of the source that berth could not carry over.
    pub not_carried_over: Vec<String>,
    /// Where its network interface was attached (which berth network, and why that one).
    #[serde(default)]
    pub network: Vec<String>,
    /// The package's further machines (an OVF with several `VirtualSystem`s).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub others: Vec<ImportedMachine>,
}

/// What `POST /v1/instances/{id}/export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum VmPackageFormat {
    /// One OVA file (descriptor, manifest, streamOptimized VMDKs).
    Ova,
    /// A directory with the descriptor, manifest and streamOptimized VMDKs.
    Ovf,
    /// A directory with a VMware .vmx and monolithic sparse VMDKs.
    Vmx,
    /// The boot disk as raw bytes, to a file or a block device (V2P).
    Raw,
}

/// `POST /v1/instances/{id}/export`: write a stopped VM out for another hypervisor or a
/// physical machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VmExportRequest {
    pub format: VmPackageFormat,
    /// An absolute path on the daemon's host: the .ova file, the directory (ovf, vmx), or the
    /// file or block device (raw).
    #[schema(pattern = "^/")]
    pub to: String,
    /// raw: overwrite a device's partition table or an existing file.
    #[serde(default)]
    pub force: bool,
    /// ova, ovf: the manifest's digest (default sha256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_digest: Option<ManifestDigest>,
}

/// The digest an OVF package's manifest (`.mf`) lists for each file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ManifestDigest {
    /// What DSP0243 1.x names and every OVF 1.x reader checks (vSphere before 6.5).
    Sha1,
    /// What ovftool 4.2 and later write by default; vSphere 6.5+, VirtualBox 5+ read it.
    #[default]
    Sha256,
    Sha512,
}

impl ManifestDigest {
    /// The name a manifest line starts with (`SHA256(file)= ...`).
    pub fn manifest_name(self) -> &'static str {
        match self {
            ManifestDigest::Sha1 => "SHA1",
            ManifestDigest::Sha256 => "SHA256",
            ManifestDigest::Sha512 => "SHA512",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VmExportResponse {
    /// What was written.
    pub files: Vec<String>,
    /// Settings the format cannot carry.
    #[serde(default)]
    pub not_carried_over: Vec<String>,
}

/// One more machine of a multi-VM OVF package, as `VmImportResponse` describes the first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ImportedMachine {
    pub id: String,
    pub name: String,
    pub not_carried_over: Vec<String>,
    #[serde(default)]
    pub network: Vec<String>,
}

fn default_kind() -> InstanceKind {
    InstanceKind::Container
}

/// `POST /v1/instances/{id}/update`: change limits of a live instance.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateInstanceRequest {
    #[serde(default)]
    pub limits: LimitsRequest,
}

/// `POST /v1/instances/{id}/stop`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StopParams {
    /// Seconds to wait after SIGTERM (or a VM's power button) before SIGKILL: default the
    /// daemon's stop_timeout_secs (10), at most 86400. SIGKILL follows in every case.
    #[serde(default)]
    #[param(maximum = 86400)]
    pub timeout: Option<u64>,
}

/// `POST /v1/instances/{id}/kill`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct KillParams {
    /// Signal name (TERM or SIGTERM, upper case) or number (1-64); default KILL.
    // The pattern is `signal::SIGNAL_PATTERN` (a unit test keeps them equal).
    #[serde(default)]
    #[param(
        pattern = "^((SIG)?(HUP|INT|QUIT|ILL|TRAP|ABRT|BUS|FPE|KILL|USR1|SEGV|USR2|PIPE|ALRM|TERM|STKFLT|CHLD|CONT|STOP|TSTP|TTIN|TTOU|URG|XCPU|XFSZ|VTALRM|PROF|WINCH|IO|PWR|SYS)|[1-9]|[1-5][0-9]|6[0-4])$"
    )]
    pub signal: Option<String>,
}

/// `POST /v1/instances/{id}/start`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StartParams {
    /// Upgrade the connection to an attach stream (see the stream protocol).
    #[serde(default)]
    pub attach: bool,
}

/// `DELETE /v1/instances/{id}`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RemoveParams {
    /// Kill a running instance first.
    #[serde(default)]
    pub force: bool,
}

/// `DELETE /v1/volumes/{name}`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RemoveVolumeParams {
    /// nfs: forget the volume even when its image cannot be deleted from the share (a server
    /// gone for good); the image file is left there.
    #[serde(default)]
    pub force: bool,
}

/// `POST /v1/instances/{id}/wait`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum WaitCondition {
    /// Until the instance is not running (returns at once if it is not).
    #[default]
    NotRunning,
    /// Until the instance record is gone (after `--rm`).
    Removed,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WaitParams {
    #[serde(default)]
    #[param(inline)]
    pub condition: WaitCondition,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WaitResponse {
    pub exit_code: i32,
    pub oom_killed: bool,
}

/// `GET /v1/instances`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Include instances that are not running.
    #[serde(default)]
    pub all: bool,
}

/// `GET /v1/instances/{id}/logs`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogsParams {
    #[serde(default)]
    pub follow: bool,
    /// Only the last N lines.
    #[serde(default)]
    #[param(maximum = 4294967295u64)]
    pub tail: Option<u32>,
    #[serde(default)]
    pub timestamps: bool,
}

/// `POST /v1/instances/{id}/exec`: always upgrades to an attach stream unless detached.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    #[schema(min_items = 1)]
    pub command: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub tty: bool,
    #[serde(default)]
    pub open_stdin: bool,
    #[serde(default)]
    pub detach: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CreatedResponse {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// The error body of every non-2xx response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorResponse {
    /// One line a person can act on.
    pub message: String,
    /// The request field the error is about, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// A host process as `berth top` and `berth ps --tree` show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProcessNode {
    pub pid: u32,
    pub ppid: u32,
    pub user: String,
    /// CPU use over the process's lifetime, percent of one CPU (as `ps` shows it).
    pub cpu_percent: f64,
    pub rss_bytes: u64,
    pub state: String,
    pub command: String,
    /// True for a thread shown under its process (a VM's vCPU threads).
    #[serde(default)]
    pub is_thread: bool,
    #[serde(default)]
    #[schema(no_recursion)]
    pub children: Vec<ProcessNode>,
}

/// `GET /v1/instances/{id}/top`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TopResponse {
    pub id: String,
    pub name: String,
    pub kind: InstanceKind,
    pub processes: Vec<ProcessNode>,
}

/// `GET /v1/tree`: every active instance with its processes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TreeEntry {
    pub instance: Instance,
    pub processes: Vec<ProcessNode>,
}

/// `GET /v1/instances/{id}/stats`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InstanceStats {
    pub id: String,
    pub name: String,
    /// Total CPU time used, nanoseconds.
    pub cpu_usage_ns: u64,
    pub memory_usage_bytes: u64,
    pub memory_limit_bytes: Option<u64>,
    pub pids_current: u64,
    pub pids_limit: Option<u64>,
    /// Milliseconds since the epoch when sampled, for rate computations.
    pub sampled_at_ms: i64,
    /// Bytes read from and written to block devices (the cgroup's I/O accounting; a VM's
    /// qemu process).
    #[serde(default)]
    pub io_read_bytes: u64,
    #[serde(default)]
    pub io_write_bytes: u64,
    /// Bytes the instance received and sent on its network (its host-side device).
    #[serde(default)]
    pub net_rx_bytes: u64,
    #[serde(default)]
    pub net_tx_bytes: u64,
    /// CPU use over the sampling window of `GET /v1/stats?window_ms=`, percent of one CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<f64>,
}

/// `GET /v1/stats`
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatsParams {
    /// Read every instance twice this many milliseconds apart and give each its CPU use
    /// over the window (`cpu_percent`); 0 (the default): read once.
    #[serde(default)]
    #[param(maximum = 5000)]
    pub window_ms: u64,
}

/// Facts about the host that berth decided from; `berth info`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HostInfo {
    pub node: String,
    pub version: String,
    pub kernel: String,
    pub os: String,
    pub cgroup_version: String,
    pub oci_runtime: String,
    /// Accelerators usable for VMs ("kvm", "tcg") and why.
    pub accelerators: Vec<String>,
    pub accelerator_note: String,
    /// The kernel VMs made from container images boot (its release), or why there is none.
    #[serde(default)]
    pub guest_kernel: String,
    pub cpus: u64,
    pub memory_bytes: u64,
    pub allocated: AllocationSummary,
    pub state_dir: String,
    pub store: String,
    pub instances: InstanceCounts,
    pub images: usize,
    pub default_limits: LimitsRequest,
    /// With `--cluster`: the cluster this node is a member of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ClusterInfo {
    /// This node's name in the cluster.
    pub node: String,
    /// The etcd members holding the cluster's state ("name at URL").
    pub etcd_members: Vec<String>,
    /// Nodes the cluster knows, and how many of them are ready.
    pub nodes: usize,
    pub ready_nodes: usize,
    /// The node whose scheduler leads (moves the instances of nodes that go down).
    #[serde(default)]
    pub leader: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AllocationSummary {
    /// CPUs reserved by active instances (the sum of their requests): what admission counts.
    pub cpus: f64,
    /// Memory reserved by active instances (the sum of their requests).
    pub memory_bytes: u64,
    /// The sum of active instances' CPU limits: what they may use at most together.
    #[serde(default)]
    pub limit_cpus: f64,
    /// The sum of active instances' memory limits.
    #[serde(default)]
    pub limit_memory_bytes: u64,
    /// Active instances without a CPU or memory limit.
    pub unlimited_instances: usize,
    /// What may be reserved: the host's capacity times the overcommit ratios.
    pub capacity_cpus: f64,
    pub capacity_memory_bytes: u64,
    pub free_cpus: f64,
    pub free_memory_bytes: u64,
    pub cpu_overcommit: f64,
    pub memory_overcommit: f64,
    /// Instance store (the type's `instance_storage` disks) reserved by active instances: the
    /// disks are sparse files, but EC2 dedicates an instance store, so it is counted in full.
    #[serde(default)]
    pub instance_storage_bytes: u64,
    /// The size of the file system holding the node's instance storage (0: not reported);
    /// the scheduler passes over a node whose reserved instance store would exceed it.
    #[serde(default)]
    pub capacity_instance_storage_bytes: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InstanceCounts {
    pub total: usize,
    pub running: usize,
    pub paused: usize,
    pub stopped: usize,
}

/// `POST /v1/images/import`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportImageRequest {
    /// A path on the daemon's host: rootfs tarball, OCI layout (dir or tar) or `docker save`
    /// archive; with `vm`, a disk image (qcow2, raw, vmdk). An absolute path.
    #[schema(pattern = "^/")]
    pub path: String,
    #[serde(default)]
    pub tag: Option<String>,
    /// Import a bootable disk for VMs instead of a container image.
    #[serde(default)]
    pub vm: bool,
    /// With `vm`: the disk's format (qcow2, raw, vmdk); berth reads it from the header when
    /// absent. qemu-img is always told the format, never left to guess it.
    #[serde(default)]
    pub format: Option<String>,
    /// With `vm`: accept a block device (a physical disk) instead of a regular file.
    #[serde(default)]
    pub allow_device: bool,
    /// With `vm`: write compressed qcow2 clusters (smaller, slower to import).
    #[serde(default)]
    pub compress: bool,
    /// With `vm`: "uefi" or "bios", instead of what the disk's partition table says.
    #[serde(default)]
    #[schema(pattern = "^(uefi|bios)$")]
    pub firmware: Option<String>,
}

/// `POST /v1/images/pull` and `/push`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistryRequest {
    pub reference: String,
    /// Use plain HTTP.
    #[serde(default)]
    pub insecure: bool,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
}

/// `POST /v1/images/tag`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TagImageRequest {
    pub source: String,
    pub target: String,
}

/// `POST /v1/instances/{id}/migrate`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MigrateRequest {
    /// The node to move to; the scheduler chooses when absent.
    #[serde(default)]
    pub to: Option<String>,
    /// The longest pause allowed at the switch-over, in milliseconds (QEMU's default, 300,
    /// when absent).
    #[serde(default)]
    pub max_downtime_ms: Option<u64>,
    /// The most the migration may send, in MiB/s (virsh migrate's `--bandwidth`); the
    /// link's speed when absent.
    #[serde(default)]
    pub bandwidth_mib: Option<u64>,
    /// Slow a guest's vCPUs down while it dirties memory faster than it is sent.
    #[serde(default)]
    pub auto_converge: bool,
    /// Switch to post-copy (the guest runs on the target, fetching missing pages) once a
    /// pre-copy pass is done.
    #[serde(default)]
    pub postcopy: bool,
    /// A container: `yes` checkpoints it with CRIU and restores it there (refused where
    /// `criu check` fails), `auto` falls back to stop, move and start; absent: stop, move
    /// and start. VMs always move live.
    #[serde(default)]
    pub live: Option<LiveChoice>,
    /// Why it moves, as its placement will say (a rebalance sets it); the target's choice
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 512)]
    pub reason: Option<String>,
}

/// What `berth cluster rebalance` found and did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RebalanceReport {
    /// Nothing was moved: the plan only.
    pub dry_run: bool,
    /// The mean of the nodes' loads, in percent.
    pub mean_load_percent: f64,
    /// A node whose load is more than this many points above the mean is relieved.
    pub threshold_percent: f64,
    /// Each node's measured load: the larger of its instances' CPU and memory use against
    /// its capacity, in percent.
    pub nodes: Vec<NodeLoad>,
    pub moves: Vec<RebalanceMove>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeLoad {
    pub name: String,
    pub load_percent: f64,
    pub cpus: f64,
    pub memory_bytes: u64,
}

/// One move of a rebalance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RebalanceMove {
    pub instance: String,
    pub from: String,
    pub to: String,
    pub why: String,
    /// Whether it moved (absent on a dry run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The move's downtime, when it moved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downtime_ms: Option<u64>,
}

/// `--live` / `--live=auto` of `berth migrate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LiveChoice {
    Yes,
    Auto,
}

/// One line of `POST /v1/instances/{id}/migrate`'s streamed answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum MigrationEvent {
    /// Where the target and why.
    Target { node: String, reason: String },
    /// QEMU's figures so far (every 200 ms).
    Progress {
        /// QEMU's state: setup, active, postcopy-active, device, completed.
        status: String,
        transferred_bytes: u64,
        remaining_bytes: u64,
        total_bytes: u64,
        /// Pages the guest dirties per second.
        dirty_pages_rate: u64,
        expected_downtime_ms: u64,
        /// Auto-converge's current vCPU throttle, in percent.
        cpu_throttle_percent: u64,
    },
    /// It runs on `to` now; the last line.
    Finished {
        from: String,
        to: String,
        result: crate::instance::Migration,
    },
    /// It still runs where it was; the last line.
    Failed { message: String },
}

/// One line of a streamed progress response (pull, push, import).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ProgressEvent {
    /// A blob transfer began.
    Started { id: String, total_bytes: Option<u64> },
    /// Bytes so far for `id`.
    Progress { id: String, current_bytes: u64 },
    /// `id` is complete (or already present).
    Done { id: String, note: String },
    /// A message for the user.
    Message { text: String },
    /// The whole job succeeded.
    Finished { image_id: String, reference: String },
    /// The whole job failed; the last line of the stream.
    Failed { message: String },
}

/// An event in the daemon's event stream (`berth events`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Event {
    pub time: chrono::DateTime<chrono::Utc>,
    /// "instance" or "image".
    pub subject: String,
    pub id: String,
    pub name: String,
    /// create, start, die, oom, pause, unpause, update, destroy, pull, import, remove...
    pub action: String,
    #[serde(default)]
    pub exit: Option<ExitStatus>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kill_signal_is_described_by_the_pattern_the_daemon_checks() {
        let params = KillParams::into_params(|| None);
        let schema = serde_json::to_value(&params[0].schema).unwrap();
        assert_eq!(schema["pattern"], crate::signal::SIGNAL_PATTERN);
    }
}
