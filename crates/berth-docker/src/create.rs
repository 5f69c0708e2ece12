//! `POST /containers/create`: Docker's container config, parsed into typed values and
//! translated into berth's create request. Every field a client may set is either carried
//! over or, when set to anything but its default, refused with a 400 naming it: a container
//! never runs without something its creator asked for.

use std::collections::BTreeMap;

use berth_model::api::{CreateInstanceRequest, LimitsRequest};
use berth_model::health::HealthCheckRequest;
use berth_model::instance::RestartPolicy;
use berth_model::log::{LogOption, LogOptions};
use berth_model::quantity::LimitSetting;
use berth_model::{InstanceKind, MilliCpus};
use serde::Deserialize;
use serde_json::Value;

use crate::error::{DockerError, DockerResult};
use crate::view::{berth_network_name, ALIASES_LABEL, KIND_LABEL};

/// `Cmd` and `Entrypoint` are lists, which Docker also takes as one string.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StringOrList {
    One(String),
    List(Vec<String>),
}

impl StringOrList {
    fn into_list(self) -> Vec<String> {
        match self {
            StringOrList::One(text) => vec![text],
            StringOrList::List(list) => list,
        }
    }
}

/// The body of `POST /containers/create`: the container's config with `HostConfig` and
/// `NetworkingConfig` beside it.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateBody {
    pub hostname: Option<String>,
    pub domainname: Option<String>,
    pub user: Option<String>,
    /// Which streams `docker run` will attach: its attach request says so again.
    #[allow(dead_code)]
    pub attach_stdin: Option<bool>,
    #[allow(dead_code)]
    pub attach_stdout: Option<bool>,
    #[allow(dead_code)]
    pub attach_stderr: Option<bool>,
    /// Informational in Docker too unless ports are published; accepted.
    #[allow(dead_code)]
    pub exposed_ports: Option<BTreeMap<String, Value>>,
    pub tty: Option<bool>,
    pub open_stdin: Option<bool>,
    /// Docker closes stdin when the attached client leaves; berth's attach does the same.
    #[allow(dead_code)]
    pub stdin_once: Option<bool>,
    pub env: Option<Vec<String>>,
    pub cmd: Option<StringOrList>,
    pub healthcheck: Option<HealthConfig>,
    pub image: Option<String>,
    /// Mount points; each must be covered by a bind or mount (anonymous volumes are refused).
    pub volumes: Option<BTreeMap<String, Value>>,
    pub working_dir: Option<String>,
    pub entrypoint: Option<StringOrList>,
    pub labels: Option<BTreeMap<String, String>>,
    pub host_config: Option<HostConfig>,
    pub networking_config: Option<NetworkingConfig>,
    /// Everything else: refused when set.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthConfig {
    pub test: Option<Vec<String>>,
    /// Nanoseconds, as all of Docker's durations.
    pub interval: Option<i64>,
    pub timeout: Option<i64>,
    pub retries: Option<i64>,
    pub start_period: Option<i64>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HostConfig {
    pub binds: Option<Vec<String>>,
    pub mounts: Option<Vec<MountConfig>>,
    pub tmpfs: Option<BTreeMap<String, String>>,
    pub port_bindings: Option<BTreeMap<String, Option<Vec<PortBinding>>>>,
    pub memory: Option<i64>,
    pub memory_reservation: Option<i64>,
    pub nano_cpus: Option<i64>,
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<i64>,
    pub pids_limit: Option<i64>,
    pub restart_policy: Option<RestartPolicyConfig>,
    pub network_mode: Option<String>,
    pub auto_remove: Option<bool>,
    pub security_opt: Option<Vec<String>>,
    pub log_config: Option<LogConfig>,
    /// Written by the CLI itself, not the daemon.
    #[serde(rename = "ContainerIDFile")]
    pub container_id_file: Option<String>,
    /// -1 is Docker's "not set".
    pub memory_swappiness: Option<i64>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PortBinding {
    pub host_ip: Option<String>,
    pub host_port: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RestartPolicyConfig {
    pub name: Option<String>,
    pub maximum_retry_count: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LogConfig {
    #[serde(rename = "Type")]
    pub kind: Option<String>,
    pub config: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MountConfig {
    #[serde(rename = "Type")]
    pub kind: Option<String>,
    pub source: Option<String>,
    pub target: Option<String>,
    pub read_only: Option<bool>,
    /// macOS file-sharing hints; no meaning on Linux (Docker ignores them there too).
    #[allow(dead_code)]
    pub consistency: Option<String>,
    pub bind_options: Option<BindOptions>,
    pub volume_options: Option<Value>,
    pub tmpfs_options: Option<TmpfsOptions>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct BindOptions {
    pub propagation: Option<String>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TmpfsOptions {
    pub size_bytes: Option<i64>,
    pub mode: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkingConfig {
    pub endpoints_config: Option<BTreeMap<String, EndpointSettings>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointSettings {
    pub aliases: Option<Vec<String>>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// Whether a value differs from Docker's zero value for its field (null, false, 0, "",
/// empty, or a list or object of such).
fn is_set(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(on) => *on,
        Value::Number(n) => n.as_f64().is_some_and(|n| n != 0.0),
        Value::String(text) => !text.is_empty(),
        Value::Array(items) => items.iter().any(is_set),
        Value::Object(fields) => fields.values().any(is_set),
    }
}

/// Why an option has no berth equivalent, for the ones clients set most.
fn reason(option: &str) -> &'static str {
    match option {
        "Privileged" => "a privileged container would own the host; berth never runs one",
        "CapAdd" | "CapDrop" => "berth runs containers with Docker's default capability set only",
        "Devices" | "DeviceRequests" | "DeviceCgroupRules" => "host devices are not passed into berth's containers",
        "Dns" | "DnsOptions" | "DnsSearch" | "ExtraHosts" => {
            "berth's network DNS answers instance names and forwards the rest"
        }
        "PublishAllPorts" => "publish each port with HOSTPORT:PORT",
        "VolumesFrom" | "Links" => "use named volumes and DNS names on a network instead",
        "StopSignal" | "StopTimeout" => "berth stops with SIGTERM and the stop request's timeout",
        _ => "berth has no equivalent",
    }
}

/// Refuses any field of `fields` that is set; `prefix` names where it sits.
pub fn refuse_set(prefix: &str, fields: &BTreeMap<String, Value>) -> DockerResult<()> {
    match fields.iter().find(|(_, value)| is_set(value)) {
        None => Ok(()),
        Some((name, _)) => Err(DockerError::unsupported(&format!("{prefix}{name}"), reason(name))),
    }
}

fn is_valid_alias(alias: &str) -> bool {
    !alias.is_empty()
        && alias.len() <= 63
        && alias.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && alias
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn nanoseconds_to_ms(option: &str, value: Option<i64>) -> DockerResult<Option<u64>> {
    match value {
        None | Some(0) => Ok(None),
        Some(ns) if ns < 0 => Err(DockerError::bad_parameter(format!(
            "{option}: {ns} is negative; give a duration in nanoseconds"
        ))),
        Some(ns) => Ok(Some((ns as u64).div_ceil(1_000_000))),
    }
}

fn healthcheck(config: HealthConfig) -> DockerResult<Option<HealthCheckRequest>> {
    refuse_set("Healthcheck.", &config.other)?;
    let test = config.test.unwrap_or_default();
    let times_given = [config.interval, config.timeout, config.start_period, config.retries]
        .iter()
        .any(|v| v.is_some_and(|v| v != 0));
    if test.is_empty() {
        if times_given {
            // Docker would keep the image's test with these times; berth resolves checks
            // at create from the request alone.
            return Err(DockerError::unsupported(
                "Healthcheck times without Healthcheck.Test",
                "give the test too",
            ));
        }
        return Ok(None);
    }
    let retries = match config.retries {
        None | Some(0) => None,
        Some(n) => Some(
            u32::try_from(n)
                .map_err(|_| DockerError::bad_parameter(format!("Healthcheck.Retries: {n} is not a count")))?,
        ),
    };
    Ok(Some(HealthCheckRequest {
        test,
        interval_ms: nanoseconds_to_ms("Healthcheck.Interval", config.interval)?,
        timeout_ms: nanoseconds_to_ms("Healthcheck.Timeout", config.timeout)?,
        retries,
        start_period_ms: nanoseconds_to_ms("Healthcheck.StartPeriod", config.start_period)?,
    }))
}

/// One field of a `--mount` value, quoted when it holds a comma or a quote.
fn mount_field(key: &str, value: &str) -> String {
    let field = format!("{key}={value}");
    if field.contains(',') || field.contains('"') {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field
    }
}

/// `HostConfig.Mounts[i]` as berth's `--mount` text.
fn mount(index: usize, mount: MountConfig) -> DockerResult<String> {
    let name = format!("HostConfig.Mounts[{index}].");
    refuse_set(&name, &mount.other)?;
    let target = mount
        .target
        .filter(|t| !t.is_empty())
        .ok_or_else(|| DockerError::bad_parameter(format!("{name}Target is required")))?;
    let source = mount.source.unwrap_or_default();
    let kind = mount.kind.unwrap_or_default();
    let mut fields = vec![format!("type={kind}")];
    match kind.as_str() {
        "bind" | "volume" => {
            if source.is_empty() {
                return Err(DockerError::unsupported(
                    &format!("{name}Source empty (an anonymous volume)"),
                    "name the volume",
                ));
            }
            fields.push(mount_field("source", &source));
        }
        "tmpfs" => {}
        other => {
            return Err(DockerError::unsupported(
                &format!("{name}Type {other:?}"),
                "use bind, volume or tmpfs",
            ))
        }
    }
    fields.push(mount_field("target", &target));
    if mount.read_only.unwrap_or(false) {
        fields.push("readonly".into());
    }
    if let Some(options) = mount.bind_options {
        refuse_set(&format!("{name}BindOptions."), &options.other)?;
        match options.propagation.as_deref() {
            None | Some("") | Some("rprivate") | Some("private") => {}
            Some(other) => {
                return Err(DockerError::unsupported(
                    &format!("{name}BindOptions.Propagation {other}"),
                    "berth's binds are always private",
                ))
            }
        }
    }
    if mount.volume_options.as_ref().is_some_and(is_set) {
        return Err(DockerError::unsupported(
            &format!("{name}VolumeOptions"),
            "create the volume first (POST /volumes/create) and mount it by name",
        ));
    }
    if let Some(tmpfs) = mount.tmpfs_options {
        if let Some(size) = tmpfs.size_bytes.filter(|s| *s > 0) {
            fields.push(format!("tmpfs-size={size}"));
        }
        if let Some(mode) = tmpfs.mode.filter(|m| *m != 0) {
            fields.push(format!("tmpfs-mode={mode:o}"));
        }
    }
    Ok(fields.join(","))
}

/// `{"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}` as berth's `8080:80/tcp`.
fn ports(bindings: BTreeMap<String, Option<Vec<PortBinding>>>) -> DockerResult<Vec<String>> {
    let mut ports = Vec::new();
    for (key, list) in bindings {
        let (port, protocol) = key.split_once('/').unwrap_or((key.as_str(), "tcp"));
        if port.contains('-') {
            return Err(DockerError::unsupported(
                &format!("the port range {key}"),
                "publish each port on its own",
            ));
        }
        for binding in list.unwrap_or_default() {
            let host_port = binding.host_port.unwrap_or_default();
            if host_port.is_empty() || host_port == "0" {
                return Err(DockerError::unsupported(
                    &format!("publishing {key} on a random host port"),
                    &format!("give the host port, as -p HOSTPORT:{port}"),
                ));
            }
            if host_port.contains('-') {
                return Err(DockerError::unsupported(
                    &format!("the host port range {host_port}"),
                    "give one host port",
                ));
            }
            let host_ip = binding.host_ip.unwrap_or_default();
            match host_ip.as_str() {
                "" | "0.0.0.0" => ports.push(format!("{host_port}:{port}/{protocol}")),
                ip if ip.contains(':') => {
                    return Err(DockerError::unsupported(
                        &format!("publishing on the IPv6 address {ip}"),
                        "berth publishes on IPv4",
                    ))
                }
                ip => ports.push(format!("{ip}:{host_port}:{port}/{protocol}")),
            }
        }
    }
    Ok(ports)
}

/// The resource fields of `HostConfig`, which `POST /containers/{id}/update` takes too.
#[derive(Debug, Default, Clone, Copy)]
pub struct Resources {
    pub memory: Option<i64>,
    pub memory_reservation: Option<i64>,
    pub nano_cpus: Option<i64>,
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<i64>,
    pub pids_limit: Option<i64>,
}

impl HostConfig {
    fn resources(&self) -> Resources {
        Resources {
            memory: self.memory,
            memory_reservation: self.memory_reservation,
            nano_cpus: self.nano_cpus,
            cpu_quota: self.cpu_quota,
            cpu_period: self.cpu_period,
            pids_limit: self.pids_limit,
        }
    }
}

/// Docker's memory, CPU and process limits as berth's (0 is Docker's "not set").
pub fn limits(resources: Resources) -> DockerResult<LimitsRequest> {
    let positive = |value: Option<i64>| value.filter(|v| *v > 0).map(|v| v as u64);
    let mut limits = LimitsRequest {
        memory_bytes: positive(resources.memory).map(LimitSetting::Value),
        reserve_memory_bytes: positive(resources.memory_reservation),
        ..Default::default()
    };
    let quota = positive(resources.cpu_quota);
    let period = positive(resources.cpu_period);
    limits.cpus = match (positive(resources.nano_cpus), quota) {
        (Some(_), Some(_)) => {
            return Err(DockerError::bad_parameter(
                "Conflicting options: Nano CPUs and CPU Period/Quota cannot both be set",
            ))
        }
        (Some(nano), None) => Some(MilliCpus((nano / 1_000_000).max(1))),
        (None, Some(quota)) => {
            let period = period.unwrap_or(100_000);
            Some(MilliCpus((quota.saturating_mul(1000) / period).max(1)))
        }
        (None, None) => {
            if period.is_some() {
                return Err(DockerError::unsupported(
                    "HostConfig.CpuPeriod without CpuQuota",
                    "give CpuQuota too, or NanoCpus",
                ));
            }
            None
        }
    }
    .map(LimitSetting::Value);
    limits.pids = match resources.pids_limit {
        None | Some(0) => None,
        Some(n) if n < 0 => Some(LimitSetting::Unlimited),
        Some(n) => Some(LimitSetting::Value(n as u64)),
    };
    Ok(limits)
}

fn restart(policy: Option<RestartPolicyConfig>) -> DockerResult<Option<RestartPolicy>> {
    let Some(policy) = policy else { return Ok(None) };
    let name = policy.name.unwrap_or_default();
    let text = match (name.as_str(), policy.maximum_retry_count.unwrap_or(0)) {
        ("", _) => return Ok(None),
        ("on-failure", n) if n > 0 => format!("on-failure:{n}"),
        (name, 0) => name.to_string(),
        (name, _) => {
            return Err(DockerError::bad_parameter(format!(
                "invalid restart policy: maximum retry count is only for on-failure, not {name}"
            )))
        }
    };
    text.parse()
        .map(Some)
        .map_err(|e: String| DockerError::bad_parameter(format!("HostConfig.RestartPolicy: {e}")))
}

fn log_options(config: Option<LogConfig>) -> DockerResult<LogOptions> {
    let Some(config) = config else {
        return Ok(LogOptions::default());
    };
    match config.kind.as_deref().unwrap_or("") {
        // berth's log is Docker's `local` driver with json-file's options.
        "" | "json-file" | "local" => {}
        other => {
            return Err(DockerError::unsupported(
                &format!("the log driver {other}"),
                "berth keeps logs itself (json-file and local are accepted)",
            ))
        }
    }
    let options: Vec<LogOption> = config
        .config
        .unwrap_or_default()
        .into_iter()
        .map(|(key, value)| format!("{key}={value}").parse::<LogOption>())
        .collect::<Result<_, _>>()
        .map_err(|e| DockerError::bad_parameter(format!("HostConfig.LogConfig: {e}")))?;
    Ok(LogOptions::from_options(&options))
}

/// The network: `HostConfig.NetworkMode` and the one endpoint of `NetworkingConfig`, which
/// must agree; and the aliases asked for on it.
fn network(mode: Option<String>, networking: Option<NetworkingConfig>) -> DockerResult<(Option<String>, Vec<String>)> {
    let mode = mode.unwrap_or_default();
    if let Some(container) = mode.strip_prefix("container:") {
        return Err(DockerError::unsupported(
            &format!("NetworkMode container:{container}"),
            "each berth instance has a network namespace of its own",
        ));
    }
    let endpoints = networking.and_then(|n| n.endpoints_config).unwrap_or_default();
    if endpoints.len() > 1 {
        return Err(DockerError::unsupported(
            "more than one network in NetworkingConfig",
            "a berth instance is on exactly one network",
        ));
    }
    let mut chosen = berth_network_name(&mode).to_string();
    let mut aliases = Vec::new();
    if let Some((name, endpoint)) = endpoints.into_iter().next() {
        let endpoint_network = berth_network_name(&name).to_string();
        let mode_is_default = chosen == berth_model::network::DEFAULT_NETWORK;
        if !mode_is_default && endpoint_network != chosen {
            return Err(DockerError::bad_parameter(format!(
                "NetworkMode {mode} and NetworkingConfig's network {name} differ; a berth instance is on one network"
            )));
        }
        refuse_set(&format!("NetworkingConfig.EndpointsConfig.{name}."), &endpoint.other)?;
        chosen = endpoint_network;
        for alias in endpoint.aliases.unwrap_or_default() {
            if !is_valid_alias(&alias) {
                return Err(DockerError::bad_parameter(format!(
                    "network alias '{alias}': use letters, digits, '-', '_' and '.' (at most 63)"
                )));
            }
            if !aliases.contains(&alias) {
                aliases.push(alias);
            }
        }
    }
    let network = (chosen != berth_model::network::DEFAULT_NETWORK).then_some(chosen);
    Ok((network, aliases))
}

/// The mount point of a bind (`SOURCE:TARGET[:OPTIONS]`).
fn bind_target(bind: &str) -> Option<&str> {
    bind.split(':').nth(1)
}

/// Translates a create body (and `?name=`) into berth's create request.
pub fn create_request(name: Option<String>, body: CreateBody) -> DockerResult<CreateInstanceRequest> {
    refuse_set("", &body.other)?;
    if body.domainname.as_deref().is_some_and(|d| !d.is_empty()) {
        return Err(DockerError::unsupported("Domainname", "give a Hostname only"));
    }
    let image = body
        .image
        .filter(|i| !i.is_empty())
        .ok_or_else(|| DockerError::bad_parameter("Config.Image is required"))?;
    let mut host = body.host_config.unwrap_or_default();
    refuse_set("HostConfig.", &host.other)?;
    if host.memory_swappiness.is_some_and(|s| s != -1) {
        return Err(DockerError::unsupported(
            "HostConfig.MemorySwappiness",
            "berth leaves swappiness to the host",
        ));
    }
    let _written_by_the_cli = host.container_id_file.take();
    let limits = limits(host.resources())?;
    let volumes = host.binds.take().unwrap_or_default();
    let mounts = host
        .mounts
        .take()
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(index, m)| mount(index, m))
        .collect::<DockerResult<Vec<String>>>()?;
    let tmpfs: Vec<String> = host
        .tmpfs
        .take()
        .unwrap_or_default()
        .into_iter()
        .map(|(path, options)| {
            if options.is_empty() {
                path
            } else {
                format!("{path}:{options}")
            }
        })
        .collect();
    // Config.Volumes lists mount points; Docker gives any not covered an anonymous volume.
    for target in body.volumes.unwrap_or_default().keys() {
        let covered = volumes.iter().any(|b| bind_target(b) == Some(target.as_str()))
            || mounts.iter().any(|m| m.contains(&format!("target={target}")))
            || tmpfs.iter().any(|t| t.split(':').next() == Some(target.as_str()));
        if !covered {
            return Err(DockerError::unsupported(
                &format!("the anonymous volume at {target}"),
                &format!("name a volume for it (-v NAME:{target})"),
            ));
        }
    }
    let (network, aliases) = network(host.network_mode.take(), body.networking_config)?;
    let mut labels = body.labels.unwrap_or_default();
    let kind = match labels.get(KIND_LABEL).map(String::as_str) {
        None | Some("container") => InstanceKind::Container,
        Some("vm") => InstanceKind::Vm,
        Some(other) => {
            return Err(DockerError::bad_parameter(format!(
                "label {KIND_LABEL}={other}: use vm or container"
            )))
        }
    };
    if !aliases.is_empty() {
        labels.insert(ALIASES_LABEL.into(), aliases.join(","));
    }
    let entrypoint = body.entrypoint.map(StringOrList::into_list).map(|list| {
        // `--entrypoint ""` arrives as [""]: no entrypoint at all.
        if list.iter().all(String::is_empty) {
            Vec::new()
        } else {
            list
        }
    });
    Ok(CreateInstanceRequest {
        name: name
            .map(|n| n.trim_start_matches('/').to_string())
            .filter(|n| !n.is_empty()),
        kind,
        image,
        command: body.cmd.map(StringOrList::into_list).unwrap_or_default(),
        entrypoint,
        env: body.env.unwrap_or_default(),
        working_dir: body.working_dir.filter(|w| !w.is_empty()),
        user: body.user.filter(|u| !u.is_empty()),
        tty: body.tty.unwrap_or(false),
        open_stdin: body.open_stdin.unwrap_or(false),
        auto_remove: host.auto_remove.unwrap_or(false),
        hostname: body.hostname.filter(|h| !h.is_empty()),
        limits,
        instance_type: None,
        vm: None,
        disk_bytes: None,
        volumes,
        mounts,
        tmpfs,
        network,
        ports: ports(host.port_bindings.take().unwrap_or_default())?,
        bandwidth_bits_per_second: None,
        security_opts: host.security_opt.take().unwrap_or_default(),
        log: log_options(host.log_config.take())?,
        healthcheck: body.healthcheck.map(healthcheck).transpose()?.flatten(),
        node: None,
        constraints: Vec::new(),
        placement: None,
        spread_by: None,
        restart: restart(host.restart_policy.take())?,
        labels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn translate(body: Value) -> DockerResult<CreateInstanceRequest> {
        create_request(Some("web".into()), serde_json::from_value(body).unwrap())
    }

    /// What Debian's docker 20.10 CLI sends for `docker run -d -p 8080:80 -m 64m busybox httpd`.
    #[test]
    fn the_clis_run_body() {
        let request = translate(json!({
            "Hostname": "", "Domainname": "", "User": "", "AttachStdin": false, "AttachStdout": false,
            "AttachStderr": false, "ExposedPorts": {"80/tcp": {}}, "Tty": false, "OpenStdin": false,
            "StdinOnce": false, "Env": [], "Cmd": ["httpd", "-f"], "Image": "busybox", "Volumes": {},
            "WorkingDir": "", "Entrypoint": null, "OnBuild": null, "Labels": {"a": "b"},
            "HostConfig": {"Binds": null, "ContainerIDFile": "", "LogConfig": {"Type": "", "Config": {}},
                "NetworkMode": "default", "PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]},
                "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0}, "AutoRemove": false,
                "VolumeDriver": "", "VolumesFrom": null, "CapAdd": null, "CapDrop": null, "CgroupnsMode": "",
                "Dns": [], "DnsOptions": [], "DnsSearch": [], "ExtraHosts": null, "Privileged": false,
                "ConsoleSize": [0, 0], "Memory": 67108864, "NanoCpus": 500000000, "MemorySwappiness": -1,
                "OomKillDisable": false, "PidsLimit": null, "Devices": [], "BlkioWeightDevice": []},
            "NetworkingConfig": {"EndpointsConfig": {}}
        }))
        .unwrap();
        assert_eq!(request.name.as_deref(), Some("web"));
        assert_eq!(request.ports, vec!["8080:80/tcp"]);
        assert_eq!(request.limits.memory_bytes, Some(LimitSetting::Value(64 << 20)));
        assert_eq!(request.limits.cpus, Some(LimitSetting::Value(MilliCpus(500))));
        assert_eq!(request.network, None);
        assert_eq!(request.restart, Some(RestartPolicy::No));
        assert_eq!(request.command, vec!["httpd", "-f"]);
        assert_eq!(request.labels.get("a").map(String::as_str), Some("b"));
    }

    #[test]
    fn unsupported_options_are_refused_by_name() {
        for (body, named) in [
            (
                json!({"Image": "b", "HostConfig": {"Privileged": true}}),
                "HostConfig.Privileged",
            ),
            (
                json!({"Image": "b", "HostConfig": {"CapAdd": ["NET_ADMIN"]}}),
                "HostConfig.CapAdd",
            ),
            (
                json!({"Image": "b", "HostConfig": {"Devices": [{"PathOnHost": "/dev/kvm"}]}}),
                "HostConfig.Devices",
            ),
            (json!({"Image": "b", "StopSignal": "SIGINT"}), "StopSignal"),
            (json!({"Image": "b", "Volumes": {"/data": {}}}), "/data"),
            (
                json!({"Image": "b", "HostConfig": {"PortBindings": {"80/tcp": [{"HostPort": ""}]}}}),
                "random host port",
            ),
            (
                json!({"Image": "b", "HostConfig": {"LogConfig": {"Type": "syslog"}}}),
                "syslog",
            ),
        ] {
            let error = translate(body).unwrap_err();
            assert_eq!(error.status, axum::http::StatusCode::BAD_REQUEST);
            assert!(error.message.contains(named), "{named}: {}", error.message);
        }
    }

    /// What docker-compose 1.29 sends for a service with a named volume on its network.
    #[test]
    fn composes_body() {
        let request = translate(json!({
            "Hostname": null, "ExposedPorts": {"5432/tcp": {}}, "Tty": false, "Env": ["A=1"], "Cmd": null,
            "Image": "busybox", "Volumes": {"/var/lib/db": {}}, "NetworkDisabled": false, "Entrypoint": null,
            "Labels": {"com.docker.compose.project": "p", "com.docker.compose.service": "db"},
            "MacAddress": null, "StopSignal": null, "Healthcheck": null, "StopTimeout": null, "Runtime": null,
            "HostConfig": {"NetworkMode": "p_default", "Binds": ["p_data:/var/lib/db:rw"], "Links": [],
                "PortBindings": {}, "VolumesFrom": []},
            "NetworkingConfig": {"EndpointsConfig": {"p_default": {"Aliases": ["db"], "IPAMConfig": {}}}}
        }))
        .unwrap();
        assert_eq!(request.network.as_deref(), Some("p_default"));
        assert_eq!(request.volumes, vec!["p_data:/var/lib/db:rw"]);
        assert_eq!(request.labels.get(ALIASES_LABEL).map(String::as_str), Some("db"));
    }

    #[test]
    fn health_checks_in_milliseconds_and_vms_by_label() {
        let request = translate(json!({
            "Image": "b", "Labels": {"berth.kind": "vm"},
            "Healthcheck": {"Test": ["CMD-SHELL", "true"], "Interval": 2_000_000_000i64, "Retries": 2}
        }))
        .unwrap();
        assert_eq!(request.kind, InstanceKind::Vm);
        let check = request.healthcheck.unwrap();
        assert_eq!((check.interval_ms, check.retries), (Some(2000), Some(2)));
    }
}
