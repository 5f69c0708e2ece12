//! Daemon settings: where state lives, where the API listens, the default limits and
//! requests applied where a user sets none (like a Kubernetes LimitRange) and the default log
//! caps. Read once at start-up from an optional TOML file.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use berth_image::ImageLimits;
use berth_model::api::LimitsRequest;
use berth_model::log::{LogLimits, MAX_LOG_FILES};
use berth_model::quantity::{parse_bandwidth, parse_count, ByteSize, LimitSetting, MilliCpus};
use berth_model::types::{builtin_types, InstanceType};
pub use berth_store::{EtcdConfig, EtcdTls};
use serde::Deserialize;

pub const DEFAULT_STATE_DIR: &str = "/var/lib/berth";
pub const DEFAULT_SOCKET: &str = "/run/berth/berth.sock";
pub const DEFAULT_CONFIG: &str = "/etc/berth/config.toml";

#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    /// Limits, and requests (`reserve_*`), for fields a create request leaves out.
    pub default_limits: LimitsRequest,
    /// Seconds `stop` waits after SIGTERM when the request does not say.
    pub stop_timeout_secs: u64,
    /// Where the guest kernel for VMs made from container images is.
    pub guest_dir: PathBuf,
    /// Which of the kernels there VMs made from container images boot (`guest_kernel`:
    /// `auto`, berth's own build when there is one, or `debian`).
    pub guest_kernel: berth_vm::assets::KernelChoice,
    /// The instance-type catalog: built-in types, then the config file's.
    pub types: Vec<InstanceType>,
    /// The config file read (named in messages about its keys).
    pub config_file: PathBuf,
    /// Subnet and bridge of the default network; where the config says nothing, they derive
    /// from the node's identity (`bb-default` and 10.89.0.0/24 for the default state dir).
    pub default_subnet: Option<String>,
    pub default_bridge: Option<String>,
    /// Where DNS responders forward names that are not the network's own; `None`: the
    /// nameservers of /etc/resolv.conf. Internal networks never forward.
    pub dns_upstreams: Option<Vec<SocketAddr>>,
    /// Admission: how far allocations may exceed the host's CPUs and memory.
    pub cpu_overcommit: f64,
    pub memory_overcommit: f64,
    /// Bounds on manifests, configs and layers from registries and archives.
    pub image_limits: ImageLimits,
    /// Log caps of instances that do not set their own (`[logs]`).
    pub log_defaults: LogLimits,
    /// Where the state lives: `None` is the embedded SQLite database in the state directory
    /// (the default); etcd with the experimental `--store etcd://...`.
    pub etcd: Option<EtcdConfig>,
    /// `--cluster`: this node is a member of a cluster whose instances and members live in
    /// etcd (`etcd` is then its store).
    pub cluster: Option<crate::cluster::ClusterConfig>,
    /// `--metrics-listen`: a plain-HTTP TCP address serving only `GET /metrics`, for
    /// Prometheus (which does not scrape unix sockets), like dockerd's `metrics-addr`.
    pub metrics_listen: Option<SocketAddr>,
    /// `--listen`: where the API is served over HTTPS to trusted client certificates.
    pub listen: Option<SocketAddr>,
    /// `--docker-socket`: where the Docker Engine API gateway listens, if anywhere.
    pub docker_socket: Option<PathBuf>,
    /// `--dashboard-assets`: where the dashboard's xterm.js is.
    pub dashboard_assets: PathBuf,
    /// `cgroup_favor_dynmods` (default true): turn on the kernel's `favordynmods` on the
    /// cgroup2 mount at start-up (see `berth_container::cgroups::favor_dynamic_modifications`).
    pub cgroup_favor_dynmods: bool,
}

/// `--cluster` (or the experimental `--store`) `etcd://HOST:PORT[,...]` and its TLS files,
/// as one config; `flag` names the option in messages.
pub fn etcd_store(
    flag: &str,
    url: &str,
    cacert: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
) -> Result<EtcdConfig, String> {
    let mut config = EtcdConfig::from_url(url).map_err(|e| format!("{flag}: {e}"))?;
    config.tls = match (cacert, cert, key) {
        (None, None, None) => None,
        (Some(ca_cert), cert, key) => {
            if cert.is_some() != key.is_some() {
                return Err("--etcd-cert and --etcd-key go together: give both or neither".into());
            }
            Some(EtcdTls { ca_cert, cert, key })
        }
        (None, _, _) => {
            return Err(
                "--etcd-cert/--etcd-key need --etcd-cacert (the CA that signed the etcd members' certificates)".into(),
            )
        }
    };
    Ok(config)
}

/// The longest grace period `stop` accepts: a day. Longer waits are a mistake, and the
/// bound keeps deadline arithmetic far from overflowing.
pub const MAX_STOP_TIMEOUT_SECS: u64 = 24 * 60 * 60;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    defaults: DefaultsSection,
    #[serde(default)]
    stop_timeout_secs: Option<u64>,
    #[serde(default)]
    guest_dir: Option<PathBuf>,
    #[serde(default)]
    guest_kernel: berth_vm::assets::KernelChoice,
    #[serde(default)]
    types: Vec<TypeSection>,
    #[serde(default)]
    admission: AdmissionSection,
    #[serde(default)]
    images: ImagesSection,
    #[serde(default)]
    default_subnet: Option<String>,
    #[serde(default)]
    default_bridge: Option<String>,
    #[serde(default)]
    dns: DnsSection,
    #[serde(default)]
    logs: LogsSection,
    #[serde(default)]
    cgroup_favor_dynmods: Option<bool>,
}

/// `[dns]`: the upstream resolvers of the networks' DNS responders.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DnsSection {
    #[serde(default)]
    upstreams: Option<Vec<String>>,
}

impl DnsSection {
    fn parse(&self) -> Result<Option<Vec<SocketAddr>>> {
        let Some(upstreams) = &self.upstreams else {
            return Ok(None);
        };
        upstreams
            .iter()
            .map(|text| {
                text.parse::<SocketAddr>()
                    .or_else(|_| text.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                    .map_err(|_| {
                        anyhow::anyhow!(
                            "dns.upstreams: '{text}' is not a resolver address like 192.0.2.53 or 127.0.0.1:5353"
                        )
                    })
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }
}

/// `[logs]`: the caps of instance logs without `--log-opt`, as Docker's `log-opts`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogsSection {
    #[serde(default)]
    max_size: Option<String>,
    #[serde(default)]
    max_file: Option<u32>,
}

impl LogsSection {
    fn parse(&self) -> Result<LogLimits> {
        let defaults = LogLimits::default();
        let max_size_bytes = match &self.max_size {
            Some(text) => text
                .parse::<ByteSize>()
                .map_err(|e| anyhow::anyhow!("logs.max_size: {e}"))?
                .bytes(),
            None => defaults.max_size_bytes,
        };
        let limits = LogLimits {
            max_size_bytes,
            max_files: self.max_file.unwrap_or(defaults.max_files),
        };
        limits
            .check()
            .map_err(|e| anyhow::anyhow!("logs: {e} (max_size at least 128k, max_file from 1 to {MAX_LOG_FILES})"))?;
        Ok(limits)
    }
}

/// `[[types]]`: an operator's own instance type.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TypeSection {
    name: String,
    vcpus: u32,
    memory: String,
    #[serde(default)]
    instance_storage: Vec<String>,
    #[serde(default)]
    network: Option<String>,
}

impl TypeSection {
    fn parse(&self) -> Result<InstanceType> {
        let field = |what: &str| format!("types '{}': {what}", self.name);
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        {
            bail!(
                "types: '{}' is not a valid type name (letters, digits, '.', '-', '_')",
                self.name
            );
        }
        if self.vcpus == 0 {
            bail!("{}", field("vcpus must be at least 1"));
        }
        let memory: ByteSize = self
            .memory
            .parse()
            .map_err(|e| anyhow::anyhow!("{}: {e}", field("memory")))?;
        let disks: Vec<u64> = self
            .instance_storage
            .iter()
            .map(|d| d.parse::<ByteSize>().map(|b| b.bytes()))
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow::anyhow!("{}: {e}", field("instance_storage")))?;
        let network = self
            .network
            .as_deref()
            .map(parse_bandwidth)
            .transpose()
            .map_err(|e| anyhow::anyhow!("{}: {e}", field("network")))?;
        Ok(InstanceType {
            name: self.name.clone(),
            vcpus: self.vcpus,
            memory_bytes: memory.bytes(),
            memory_gib: memory.bytes() as f64 / (1u64 << 30) as f64,
            instance_storage: if disks.is_empty() {
                "none".into()
            } else {
                disks
                    .iter()
                    .map(|d| ByteSize(*d).to_string())
                    .collect::<Vec<_>>()
                    .join(" + ")
            },
            instance_storage_bytes: disks,
            network_bits_per_second: network.unwrap_or(0),
            network: self.network.clone().unwrap_or_else(|| "unlimited".into()),
            source: "config".into(),
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdmissionSection {
    #[serde(default = "default_cpu_overcommit")]
    cpu_overcommit: f64,
    #[serde(default = "default_memory_overcommit")]
    memory_overcommit: f64,
}

fn default_cpu_overcommit() -> f64 {
    4.0
}
fn default_memory_overcommit() -> f64 {
    1.0
}

impl Default for AdmissionSection {
    fn default() -> Self {
        AdmissionSection {
            cpu_overcommit: default_cpu_overcommit(),
            memory_overcommit: default_memory_overcommit(),
        }
    }
}

/// `[images]`: bounds on what image sources (registries, archives) may make berth store.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImagesSection {
    /// A manifest's, index's or config's most bytes.
    #[serde(default)]
    max_document_size: Option<String>,
    /// A layer's most bytes, compressed or unpacked (a decompression bomb stops here).
    #[serde(default)]
    max_layer_size: Option<String>,
}

impl ImagesSection {
    fn parse(&self) -> Result<ImageLimits> {
        let defaults = ImageLimits::default();
        let size = |key: &str, text: &Option<String>, default: u64, least: u64| -> Result<u64> {
            let Some(text) = text else { return Ok(default) };
            match text.parse::<ByteSize>() {
                Ok(size) if size.bytes() >= least => Ok(size.bytes()),
                Ok(_) => bail!("images.{key} = \"{text}\": use at least {}", ByteSize(least)),
                Err(e) => bail!("images.{key}: {e}"),
            }
        };
        Ok(ImageLimits {
            max_document_bytes: size(
                "max_document_size",
                &self.max_document_size,
                defaults.max_document_bytes,
                1 << 10,
            )?,
            max_layer_bytes: size(
                "max_layer_size",
                &self.max_layer_size,
                defaults.max_layer_bytes,
                1 << 20,
            )?,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DefaultsSection {
    #[serde(default = "default_cpus")]
    cpus: String,
    #[serde(default = "default_memory")]
    memory: String,
    #[serde(default = "default_pids")]
    pids: String,
    /// What an instance reserves when it gives neither a request nor a limit.
    #[serde(default = "default_reserve_cpus")]
    reserve_cpus: String,
    #[serde(default = "default_reserve_memory")]
    reserve_memory: String,
}

fn default_cpus() -> String {
    "1".into()
}
fn default_memory() -> String {
    "512m".into()
}
fn default_pids() -> String {
    "1024".into()
}
/// A tenth of a CPU and 64 MiB: an idle service's footprint, so a small host admits
/// hundreds of them, as Docker runs them.
fn default_reserve_cpus() -> String {
    "0.1".into()
}
fn default_reserve_memory() -> String {
    "64m".into()
}

impl Default for DefaultsSection {
    fn default() -> Self {
        DefaultsSection {
            cpus: default_cpus(),
            memory: default_memory(),
            pids: default_pids(),
            reserve_cpus: default_reserve_cpus(),
            reserve_memory: default_reserve_memory(),
        }
    }
}

impl DefaultsSection {
    fn parse(&self) -> Result<LimitsRequest> {
        let cpus = LimitSetting::<MilliCpus>::parse(&self.cpus).map_err(|e| anyhow::anyhow!("defaults.cpus: {e}"))?;
        let memory =
            LimitSetting::<ByteSize>::parse(&self.memory).map_err(|e| anyhow::anyhow!("defaults.memory: {e}"))?;
        let pids = if self.pids.trim().eq_ignore_ascii_case("unlimited") {
            LimitSetting::Unlimited
        } else {
            LimitSetting::Value(parse_count(&self.pids).map_err(|e| anyhow::anyhow!("defaults.pids: {e}"))?)
        };
        let reserve_cpus: MilliCpus = self
            .reserve_cpus
            .parse()
            .map_err(|e| anyhow::anyhow!("defaults.reserve_cpus: {e}"))?;
        let reserve_memory: ByteSize = self
            .reserve_memory
            .parse()
            .map_err(|e| anyhow::anyhow!("defaults.reserve_memory: {e}"))?;
        Ok(LimitsRequest {
            cpus: Some(cpus),
            memory_bytes: Some(match memory {
                LimitSetting::Unlimited => LimitSetting::Unlimited,
                LimitSetting::Value(size) => LimitSetting::Value(size.bytes()),
            }),
            pids: Some(pids),
            reserve_cpus: Some(reserve_cpus),
            reserve_memory_bytes: Some(reserve_memory.bytes()),
        })
    }
}

impl DaemonConfig {
    /// Builds the configuration from the command line and the config file, if any.
    pub fn load(state_dir: &Path, socket: &Path, config_file: Option<&Path>) -> Result<Self> {
        let (file, explicit) = match config_file {
            Some(path) => (path.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_CONFIG), false),
        };
        let parsed: ConfigFile = match std::fs::read_to_string(&file) {
            Ok(text) => toml::from_str(&text).with_context(|| format!("config file {}", file.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => ConfigFile::default(),
            Err(e) => return Err(e).with_context(|| format!("reading config file {}", file.display())),
        };
        // Socket paths are limited to 108 bytes; instance sockets live under the state dir.
        if state_dir.as_os_str().len() > 60 {
            bail!(
                "--state-dir {} is too long ({} bytes); use a path of at most 60 bytes so instance sockets fit",
                state_dir.display(),
                state_dir.as_os_str().len()
            );
        }
        let mut types = builtin_types();
        for section in &parsed.types {
            let custom = section.parse()?;
            if types.iter().any(|t| t.name == custom.name) {
                bail!(
                    "types: '{}' is defined twice (or shadows a built-in type); choose another name",
                    custom.name
                );
            }
            types.push(custom);
        }
        for (name, ratio) in [
            ("admission.cpu_overcommit", parsed.admission.cpu_overcommit),
            ("admission.memory_overcommit", parsed.admission.memory_overcommit),
        ] {
            if !(ratio.is_finite() && ratio > 0.0 && ratio <= 100.0) {
                bail!("{name} = {ratio}: use a ratio between 0 and 100 (1.0 = no overcommit)");
            }
        }
        let stop_timeout_secs = parsed.stop_timeout_secs.unwrap_or(10);
        if stop_timeout_secs > MAX_STOP_TIMEOUT_SECS {
            bail!("stop_timeout_secs = {stop_timeout_secs}: use at most {MAX_STOP_TIMEOUT_SECS} (a day)");
        }
        Ok(DaemonConfig {
            state_dir: state_dir.to_path_buf(),
            socket: socket.to_path_buf(),
            default_limits: parsed.defaults.parse()?,
            stop_timeout_secs,
            guest_dir: parsed
                .guest_dir
                .unwrap_or_else(|| PathBuf::from(berth_vm::assets::DEFAULT_GUEST_DIR)),
            guest_kernel: parsed.guest_kernel,
            types,
            dns_upstreams: parsed.dns.parse()?,
            config_file: file,
            default_subnet: parsed.default_subnet,
            default_bridge: parsed.default_bridge,
            cpu_overcommit: parsed.admission.cpu_overcommit,
            memory_overcommit: parsed.admission.memory_overcommit,
            image_limits: parsed.images.parse()?,
            log_defaults: parsed.logs.parse()?,
            etcd: None,
            cluster: None,
            metrics_listen: None,
            listen: None,
            docker_socket: None,
            dashboard_assets: PathBuf::from(crate::dashboard::DEFAULT_ASSETS_DIR),
            cgroup_favor_dynmods: parsed.cgroup_favor_dynmods.unwrap_or(true),
        })
    }
}
