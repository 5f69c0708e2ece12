//! berth's records in Docker's shapes: a container's inspect document and list entry, its
//! status line ("Up 5 seconds"), ports, mounts and network. Names of networks are mapped
//! here too: berth's `default` network is Docker's `bridge`.

use std::collections::BTreeMap;

use berth_model::health::HealthStatus;
use berth_model::instance::short_id;
use berth_model::mount::MountKind;
use berth_model::{Instance, InstanceKind, InstanceState};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};

/// The label that makes `docker create` make a VM, and that marks VMs in listings.
pub const KIND_LABEL: &str = "berth.kind";
/// DNS aliases on the instance's network (Compose's service names), as berth's DNS reads them.
pub const ALIASES_LABEL: &str = berth_model::network::ALIASES_LABEL;

/// Docker's zero time, for times that never happened.
const NEVER: &str = "0001-01-01T00:00:00Z";

pub fn docker_network_name(berth: &str) -> &str {
    if berth == berth_model::network::DEFAULT_NETWORK {
        "bridge"
    } else {
        berth
    }
}

/// Docker's names for berth's default network (`default`, `bridge`) become berth's.
pub fn berth_network_name(docker: &str) -> &str {
    match docker {
        "" | "default" | "bridge" => berth_model::network::DEFAULT_NETWORK,
        other => other,
    }
}

/// A stable id for a network, which berth names but does not number.
pub fn network_id(berth_name: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(format!("berth-network:{berth_name}")))
}

fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

fn optional_time(time: Option<DateTime<Utc>>) -> String {
    time.map(rfc3339).unwrap_or_else(|| NEVER.to_string())
}

/// Docker's words for a state; berth's `lost` (its node is down) is Docker's `dead`.
pub fn status_word(state: InstanceState) -> &'static str {
    match state {
        InstanceState::Created => "created",
        InstanceState::Running => "running",
        InstanceState::Paused => "paused",
        InstanceState::Exited => "exited",
        InstanceState::Dead | InstanceState::Lost => "dead",
    }
}

/// Docker's `HumanDuration` (go-units): "Less than a second", "5 seconds", "About a
/// minute", "3 hours", "2 weeks"...
pub fn human_duration(seconds: i64) -> String {
    let seconds = seconds.max(0);
    let minutes = seconds / 60;
    let hours = minutes / 60;
    let days = hours / 24;
    match () {
        _ if seconds < 1 => "Less than a second".into(),
        _ if seconds == 1 => "1 second".into(),
        _ if seconds < 60 => format!("{seconds} seconds"),
        _ if minutes == 1 => "About a minute".into(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".into(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{days} days"),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", days / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", days / 30),
        _ => format!("{} years", days / 365),
    }
}

/// The STATUS column of `docker ps`.
pub fn status_text(instance: &Instance, now: DateTime<Utc>) -> String {
    let since = |time: Option<DateTime<Utc>>| human_duration(time.map_or(0, |t| (now - t).num_seconds()));
    match instance.state {
        InstanceState::Created => "Created".into(),
        InstanceState::Paused => format!("Up {} (Paused)", since(instance.started_at)),
        InstanceState::Running => {
            let health = match instance.health.as_ref().map(|h| h.status) {
                Some(HealthStatus::Starting) => " (health: starting)",
                Some(HealthStatus::Healthy) => " (healthy)",
                Some(HealthStatus::Unhealthy) => " (unhealthy)",
                None => "",
            };
            format!("Up {}{health}", since(instance.started_at))
        }
        InstanceState::Exited => format!(
            "Exited ({}) {} ago",
            instance.exit_code.unwrap_or(0),
            since(instance.finished_at)
        ),
        InstanceState::Dead => "Dead".into(),
        InstanceState::Lost => format!("Dead (node {} is down)", instance.node),
    }
}

/// The labels a Docker client sees: the user's, exactly, plus `berth.kind=vm` on VMs; the
/// aliases label is berth's business (shown as the network's aliases instead).
pub fn docker_labels(instance: &Instance) -> BTreeMap<String, String> {
    let mut labels = instance.spec.labels.clone();
    labels.remove(ALIASES_LABEL);
    if instance.kind == InstanceKind::Vm {
        labels.insert(KIND_LABEL.into(), "vm".into());
    }
    labels
}

/// `{"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]}`
fn port_map(instance: &Instance) -> BTreeMap<String, Vec<Value>> {
    let mut ports: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for port in &instance.spec.ports {
        ports
            .entry(format!("{}/{}", port.port, port.protocol))
            .or_default()
            .push(json!({
                "HostIp": port.host_ip.clone().unwrap_or_else(|| "0.0.0.0".into()),
                "HostPort": port.host_port.to_string(),
            }));
    }
    ports
}

fn list_ports(instance: &Instance) -> Vec<Value> {
    instance
        .spec
        .ports
        .iter()
        .map(|port| {
            json!({
                "IP": port.host_ip.clone().unwrap_or_else(|| "0.0.0.0".into()),
                "PrivatePort": port.port,
                "PublicPort": port.host_port,
                "Type": port.protocol,
            })
        })
        .collect()
}

/// `Binds` as they would be given again: volumes and host paths.
fn binds(instance: &Instance) -> Vec<String> {
    let ro = |read_only: bool| if read_only { ":ro" } else { "" };
    let volumes = instance
        .spec
        .volumes
        .iter()
        .map(|v| format!("{}:{}{}", v.volume, v.path, ro(v.read_only)));
    let hosts = instance
        .spec
        .mounts
        .iter()
        .filter(|m| m.kind == MountKind::Bind)
        .map(|m| format!("{}:{}{}", m.source, m.target, ro(m.read_only)));
    volumes.chain(hosts).collect()
}

fn mounts(instance: &Instance) -> Vec<Value> {
    let volumes = instance.spec.volumes.iter().map(|v| {
        json!({
            "Type": "volume", "Name": v.volume, "Source": v.host_path, "Destination": v.path,
            "Driver": if v.source.starts_with("nfs://") { "nfs" } else { "local" },
            "Mode": if v.read_only { "ro" } else { "rw" }, "RW": !v.read_only, "Propagation": "",
        })
    });
    let others = instance.spec.mounts.iter().map(|m| match m.kind {
        MountKind::Bind => json!({
            "Type": "bind", "Source": m.source, "Destination": m.target,
            "Mode": if m.read_only { "ro" } else { "rw" }, "RW": !m.read_only, "Propagation": "rprivate",
        }),
        MountKind::Tmpfs => json!({
            "Type": "tmpfs", "Source": "", "Destination": m.target, "Mode": "", "RW": !m.read_only,
            "Propagation": "",
        }),
    });
    volumes.chain(others).collect()
}

fn aliases(instance: &Instance) -> Vec<String> {
    let mut aliases = vec![short_id(&instance.id).to_string()];
    if let Some(list) = instance.spec.labels.get(ALIASES_LABEL) {
        aliases.extend(list.split(',').filter(|a| !a.is_empty()).map(str::to_string));
    }
    aliases
}

/// `NetworkSettings.Networks`: the one network berth gives an instance.
fn networks(instance: &Instance) -> BTreeMap<String, Value> {
    let network = instance.spec.network.as_str();
    if network == "none" {
        return [("none".to_string(), json!({}))].into();
    }
    let address = instance.address.as_ref();
    let endpoint = json!({
        "IPAMConfig": null,
        "Links": null,
        "Aliases": if network == "host" { Value::Null } else { json!(aliases(instance)) },
        "NetworkID": network_id(network),
        "EndpointID": if address.is_some() { network_id(&instance.id) } else { String::new() },
        "Gateway": address.map(|a| a.gateway.clone()).unwrap_or_default(),
        "IPAddress": address.map(|a| a.address.clone()).unwrap_or_default(),
        "IPPrefixLen": address.map_or(0, |a| a.prefix),
        "IPv6Gateway": "",
        "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0,
        "MacAddress": address.map(|a| a.mac.clone()).unwrap_or_default(),
        "DriverOpts": null,
    });
    [(docker_network_name(network).to_string(), endpoint)].into()
}

/// `HostConfig.NetworkMode`: Docker's `default` for berth's default network.
fn network_mode(instance: &Instance) -> String {
    match instance.spec.network.as_str() {
        berth_model::network::DEFAULT_NETWORK => "default".into(),
        other => other.into(),
    }
}

fn command(instance: &Instance) -> String {
    instance.spec.process.args.join(" ")
}

fn restart_policy(instance: &Instance) -> Value {
    use berth_model::instance::RestartPolicy;
    let (name, count) = match instance.spec.restart {
        RestartPolicy::No => ("no", 0),
        RestartPolicy::Always => ("always", 0),
        RestartPolicy::OnFailure { max_retries } => ("on-failure", max_retries.unwrap_or(0)),
    };
    json!({ "Name": name, "MaximumRetryCount": count })
}

fn health(instance: &Instance) -> Value {
    match &instance.health {
        None => Value::Null,
        Some(health) => json!({
            "Status": health.status.to_string(),
            "FailingStreak": health.failing_streak,
            "Log": health.log.iter().map(|probe| json!({
                "Start": rfc3339(probe.start), "End": rfc3339(probe.end),
                "ExitCode": probe.exit_code, "Output": probe.output,
            })).collect::<Vec<_>>(),
        }),
    }
}

fn healthcheck(instance: &Instance) -> Value {
    match &instance.spec.healthcheck {
        None => Value::Null,
        Some(check) => {
            let mut test = vec!["CMD".to_string()];
            test.extend(check.command.iter().cloned());
            let ns = |ms: u64| ms.saturating_mul(1_000_000);
            json!({
                "Test": test, "Interval": ns(check.interval_ms), "Timeout": ns(check.timeout_ms),
                "Retries": check.retries, "StartPeriod": ns(check.start_period_ms),
            })
        }
    }
}

fn exposed_ports(instance: &Instance) -> Value {
    if instance.spec.ports.is_empty() {
        return Value::Null;
    }
    let ports: BTreeMap<String, Value> = instance
        .spec
        .ports
        .iter()
        .map(|p| (format!("{}/{}", p.port, p.protocol), json!({})))
        .collect();
    json!(ports)
}

fn nano_cpus(instance: &Instance) -> u64 {
    instance.limits.cpus.map_or(0, |c| c.0.saturating_mul(1_000_000))
}

/// `GET /containers/{id}/json`
pub fn inspect(instance: &Instance) -> Value {
    let process = &instance.spec.process;
    let state = instance.state;
    let address = instance.address.as_ref();
    json!({
        "Id": instance.id,
        "Created": rfc3339(instance.created_at),
        "Path": process.args.first().cloned().unwrap_or_default(),
        "Args": process.args.iter().skip(1).collect::<Vec<_>>(),
        "State": {
            "Status": status_word(state),
            "Running": state.is_active(),
            "Paused": state == InstanceState::Paused,
            "Restarting": false,
            "OOMKilled": instance.oom_killed,
            "Dead": matches!(state, InstanceState::Dead | InstanceState::Lost),
            "Pid": instance.pid.unwrap_or(0),
            "ExitCode": instance.exit_code.unwrap_or(0),
            "Error": instance.error.clone().unwrap_or_default(),
            "StartedAt": optional_time(instance.started_at),
            "FinishedAt": optional_time(instance.finished_at),
            "Health": health(instance),
        },
        "Image": instance.spec.image_id,
        "ResolvConfPath": "",
        "HostnamePath": "",
        "HostsPath": "",
        "LogPath": "",
        "Name": format!("/{}", instance.name),
        "RestartCount": instance.restart_count,
        "Driver": if instance.kind == InstanceKind::Vm { "qemu" } else { "overlay2" },
        "Platform": "linux",
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "ExecIDs": null,
        "HostConfig": {
            "Binds": binds(instance),
            "NetworkMode": network_mode(instance),
            "PortBindings": port_map(instance),
            "RestartPolicy": restart_policy(instance),
            "AutoRemove": instance.spec.auto_remove,
            // berth's log is JSON records with json-file's options; docker-py reads the logs
            // of a `run` only from json-file and journald.
            "LogConfig": {
                "Type": "json-file",
                "Config": {
                    "max-size": instance.spec.log.max_size_bytes.map(|b| b.to_string()),
                    "max-file": instance.spec.log.max_files.map(|f| f.to_string()),
                },
            },
            "Memory": instance.limits.memory_bytes.unwrap_or(0),
            "MemoryReservation": instance.requests.memory_bytes.unwrap_or(0),
            "NanoCpus": nano_cpus(instance),
            "PidsLimit": instance.limits.pids,
            "Privileged": false,
            "PublishAllPorts": false,
            "ReadonlyRootfs": false,
            "SecurityOpt": if instance.spec.seccomp_unconfined { json!(["seccomp=unconfined"]) } else { Value::Null },
            "Tmpfs": instance.spec.mounts.iter().filter(|m| m.kind == MountKind::Tmpfs)
                .map(|m| (m.target.clone(), m.tmpfs_mount_options().join(","))).collect::<BTreeMap<_, _>>(),
            "Links": null,
            "CapAdd": null,
            "CapDrop": null,
            "Devices": [],
        },
        "GraphDriver": { "Name": "overlay2", "Data": null },
        "Mounts": mounts(instance),
        "Config": {
            "Hostname": instance.spec.hostname,
            "Domainname": "",
            "User": process.user,
            "AttachStdin": false,
            "AttachStdout": false,
            "AttachStderr": false,
            "ExposedPorts": exposed_ports(instance),
            "Tty": process.tty,
            "OpenStdin": process.open_stdin,
            "StdinOnce": false,
            "Env": process.env,
            // berth records the command with the image's entrypoint already applied.
            "Cmd": process.args,
            "Healthcheck": healthcheck(instance),
            "Image": instance.spec.image,
            "Volumes": null,
            "WorkingDir": process.working_dir,
            "Entrypoint": null,
            "OnBuild": null,
            "Labels": docker_labels(instance),
        },
        "NetworkSettings": {
            "Bridge": "",
            "SandboxID": "",
            "HairpinMode": false,
            "Ports": port_map(instance),
            "SandboxKey": "",
            "EndpointID": "",
            "Gateway": address.map(|a| a.gateway.clone()).unwrap_or_default(),
            "IPAddress": address.map(|a| a.address.clone()).unwrap_or_default(),
            "IPPrefixLen": address.map_or(0, |a| a.prefix),
            "MacAddress": address.map(|a| a.mac.clone()).unwrap_or_default(),
            "GlobalIPv6Address": "",
            "GlobalIPv6PrefixLen": 0,
            "IPv6Gateway": "",
            "Networks": networks(instance),
        },
    })
}

/// One entry of `GET /containers/json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerSummary {
    pub id: String,
    pub names: Vec<String>,
    pub image: String,
    #[serde(rename = "ImageID")]
    pub image_id: String,
    pub command: String,
    pub created: i64,
    pub ports: Vec<Value>,
    pub labels: BTreeMap<String, String>,
    pub state: &'static str,
    pub status: String,
    pub host_config: Value,
    pub network_settings: Value,
    pub mounts: Vec<Value>,
}

pub fn summary(instance: &Instance, now: DateTime<Utc>) -> ContainerSummary {
    ContainerSummary {
        id: instance.id.clone(),
        names: vec![format!("/{}", instance.name)],
        image: instance.spec.image.clone(),
        image_id: instance.spec.image_id.clone(),
        command: command(instance),
        created: instance.created_at.timestamp(),
        ports: list_ports(instance),
        labels: docker_labels(instance),
        state: status_word(instance.state),
        status: status_text(instance, now),
        host_config: json!({ "NetworkMode": network_mode(instance) }),
        network_settings: json!({ "Networks": networks(instance) }),
        mounts: mounts(instance),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_docker_writes_them() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(5), "5 seconds");
        assert_eq!(human_duration(90), "About a minute");
        assert_eq!(human_duration(600), "10 minutes");
        assert_eq!(human_duration(3 * 3600), "3 hours");
        assert_eq!(human_duration(3 * 86400), "3 days");
    }

    #[test]
    fn the_default_network_is_dockers_bridge() {
        assert_eq!(docker_network_name("default"), "bridge");
        assert_eq!(berth_network_name("bridge"), "default");
        assert_eq!(berth_network_name("proj_default"), "proj_default");
        assert_eq!(network_id("x").len(), 64);
    }
}
