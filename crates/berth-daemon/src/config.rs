//! Daemon settings: where state lives, where the API listens, and the default limits
//! applied where a user sets none (like a Kubernetes LimitRange). Read once at start-up
//! from an optional TOML file.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use berth_model::api::LimitsRequest;
use berth_model::quantity::{parse_count, ByteSize, LimitSetting, MilliCpus};
use serde::Deserialize;

pub const DEFAULT_STATE_DIR: &str = "/var/lib/berth";
pub const DEFAULT_SOCKET: &str = "/run/berth/berth.sock";
pub const DEFAULT_CONFIG: &str = "/etc/berth/config.toml";

#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    /// Limits for fields a create request leaves out.
    pub default_limits: LimitsRequest,
    /// Seconds `stop` waits after SIGTERM when the request does not say.
    pub stop_timeout_secs: u64,
    /// Where the guest kernel for VMs made from container images is.
    pub guest_dir: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    defaults: DefaultsSection,
    #[serde(default)]
    stop_timeout_secs: Option<u64>,
    #[serde(default)]
    guest_dir: Option<PathBuf>,
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

impl Default for DefaultsSection {
    fn default() -> Self {
        DefaultsSection {
            cpus: default_cpus(),
            memory: default_memory(),
            pids: default_pids(),
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
        Ok(LimitsRequest {
            cpus: Some(cpus),
            memory_bytes: Some(match memory {
                LimitSetting::Unlimited => LimitSetting::Unlimited,
                LimitSetting::Value(size) => LimitSetting::Value(size.bytes()),
            }),
            pids: Some(pids),
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
        Ok(DaemonConfig {
            state_dir: state_dir.to_path_buf(),
            socket: socket.to_path_buf(),
            default_limits: parsed.defaults.parse()?,
            stop_timeout_secs: parsed.stop_timeout_secs.unwrap_or(10),
            guest_dir: parsed
                .guest_dir
                .unwrap_or_else(|| PathBuf::from(berth_vm::assets::DEFAULT_GUEST_DIR)),
        })
    }
}
