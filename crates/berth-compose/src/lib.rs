//! Compose files (the compose-spec format users already have) read into what `berth apply`
//! runs: per service, one create request per replica, named `STACK-SERVICE-N` and labelled
//! with the stack, the service and a hash of the service's definition (what `apply` compares
//! to decide that a replica is up to date). berth's own keys live under `x-berth` in a
//! service (`kind: vm`, `type`, `max_cpus`, `max_memory`, `disk`, `node`).
//!
//! Every key is either read or listed in `Stack::unsupported`, never silently dropped. A
//! file that cannot be run as written (an unknown service in `depends_on`, a dependency
//! cycle, a host port two services publish, a value of the wrong shape) is an error naming
//! the key.

use std::collections::{BTreeMap, BTreeSet};

use berth_model::api::{CreateInstanceRequest, VmRequest};
use berth_model::health::{parse_duration_ms, HealthCheckRequest};
use berth_model::instance::{InstanceKind, RestartPolicy};
use berth_model::quantity::{ByteSize, LimitSetting, MilliCpus};
use serde_yaml::Value;
use sha2::Digest;
use thiserror::Error;

/// Instance label: the stack an instance belongs to.
pub const STACK_LABEL: &str = "berth.stack";
/// Instance label: its service.
pub const SERVICE_LABEL: &str = "berth.service";
/// Instance label: the hash of its service's definition.
pub const HASH_LABEL: &str = "berth.config-hash";
/// The most replicas a service may ask for.
pub const MAX_REPLICAS: u64 = 1000;
/// Compose files larger than this are refused (they are read whole).
pub const MAX_FILE_BYTES: usize = 4 << 20;

#[derive(Debug, Error, PartialEq)]
pub enum ComposeError {
    /// A key holds a value berth cannot use, or the file as a whole cannot run.
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ComposeError {
    ComposeError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

type Result<T> = std::result::Result<T, ComposeError>;

/// A stack as the file describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Stack {
    pub name: String,
    /// In an order that starts each service after the ones it depends on.
    pub services: Vec<Service>,
    /// Top-level named volumes, as berth names them (`STACK-NAME`).
    pub volumes: Vec<String>,
    /// Top-level networks, as berth names them (`STACK-NAME`).
    pub networks: Vec<String>,
    /// Keys berth does not act on, by path (`services.web.healthcheck`).
    pub unsupported: Vec<String>,
}

/// One service: its replicas' create requests and how to roll them out.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub name: String,
    /// One per replica, named `STACK-SERVICE-N` (N from 1).
    pub replicas: Vec<CreateInstanceRequest>,
    pub depends_on: Vec<String>,
    /// What `apply` waits for of a dependency before it starts this service, where the
    /// file asks more than `service_started`.
    pub conditions: BTreeMap<String, Condition>,
    /// Whether its replicas run a health check (a rollout then waits for them to be
    /// healthy, and `service_healthy` may wait for them).
    pub healthcheck: bool,
    pub update: UpdateConfig,
    /// The hash of the definition (the `HASH_LABEL` of its replicas).
    pub hash: String,
}

/// `depends_on.SERVICE.condition`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Condition {
    /// Its replicas run (the default).
    Started,
    /// Its replicas pass their health check.
    Healthy,
    /// Its replicas ran to an exit code of 0 (a set-up job).
    CompletedSuccessfully,
}

/// `deploy.update_config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpdateConfig {
    /// Replicas replaced at once.
    pub parallelism: usize,
    /// `start-first`: the new replica runs before the old one goes.
    pub start_first: bool,
    /// `failure_action: rollback`.
    pub rollback: bool,
}

impl Default for UpdateConfig {
    fn default() -> Self {
        UpdateConfig {
            parallelism: 1,
            start_first: false,
            rollback: false,
        }
    }
}

/// The name an instance of `service`'s replica `index` (from 1) gets.
pub fn replica_name(stack: &str, service: &str, index: usize) -> String {
    format!("{stack}-{service}-{index}")
}

use berth_model::stack::valid_name;

/// Reads a Compose file. `stack` names the stack (else the file's `name:`); `env_files`
/// reads an `env_file` (relative to the file's directory: the caller resolves it).
pub fn parse(text: &str, stack: Option<&str>, env_files: &dyn Fn(&str) -> std::io::Result<String>) -> Result<Stack> {
    if text.len() > MAX_FILE_BYTES {
        return Err(invalid(
            "file",
            format!("a Compose file must be at most {MAX_FILE_BYTES} bytes"),
        ));
    }
    let document: Value = serde_yaml::from_str(text).map_err(|e| invalid("file", format!("not YAML: {e}")))?;
    let top = document
        .as_mapping()
        .ok_or_else(|| invalid("file", "a Compose file is a mapping with `services:`"))?;
    let mut unsupported = Vec::new();
    let mut file_name = None;
    let mut services_value = None;
    let mut volumes_value = None;
    let mut networks_value = None;
    for (key, value) in top {
        let key = key_str(key, "file")?;
        match key {
            "services" => services_value = Some(value),
            "volumes" => volumes_value = Some(value),
            "networks" => networks_value = Some(value),
            "name" => file_name = Some(scalar(value, "name")?),
            // The version key is obsolete in the compose spec; extensions are the user's.
            "version" => {}
            k if k.starts_with("x-") => {}
            other => unsupported.push(other.to_string()),
        }
    }
    let name = stack.map(str::to_string).or(file_name).ok_or_else(|| {
        invalid(
            "name",
            "give the stack a name: `name:` in the file or `berth apply --name STACK`",
        )
    })?;
    if !valid_name(&name) {
        return Err(invalid(
            "name",
            format!(
                "stack name '{}' must be 1-40 letters, digits, '-' or '_'",
                name.escape_default()
            ),
        ));
    }
    let volumes = names_of(volumes_value, "volumes", &mut unsupported)?;
    let networks = names_of(networks_value, "networks", &mut unsupported)?;
    let services_map = services_value.and_then(Value::as_mapping).ok_or_else(|| {
        invalid(
            "services",
            "a Compose file needs `services:`, a mapping of names to services",
        )
    })?;
    if services_map.is_empty() {
        return Err(invalid("services", "no services"));
    }
    let mut services = Vec::new();
    for (key, value) in services_map {
        let service = key_str(key, "services")?;
        if !valid_name(service) {
            return Err(invalid(
                format!("services.{}", service.escape_default()),
                "a service name is 1-40 letters, digits, '-' or '_'",
            ));
        }
        services.push(read_service(
            &name,
            service,
            value,
            &volumes,
            &networks,
            env_files,
            &mut unsupported,
        )?);
    }
    check_ports(&services)?;
    let services = in_dependency_order(services)?;
    Ok(Stack {
        name: name.clone(),
        services,
        volumes: volumes.iter().map(|v| format!("{name}-{v}")).collect(),
        networks: networks.iter().map(|n| format!("{name}-{n}")).collect(),
        unsupported,
    })
}

fn key_str<'a>(key: &'a Value, at: &str) -> Result<&'a str> {
    key.as_str()
        .ok_or_else(|| invalid(at, format!("keys are strings, not {}", describe(key))))
}

fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// Compose's interpolation of a value: `$$` is a `$`; `${VAR}`, `$VAR`, `${VAR:-default}`
/// (also when empty) and `${VAR-default}` (when unset) come from the environment of
/// `berth apply`, as with docker compose; an unset variable without a default is empty.
fn interpolate(text: &str, key: &str) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        match chars.peek().map(|&(_, c)| c) {
            Some('$') => {
                chars.next();
                out.push('$');
            }
            Some('{') => {
                chars.next();
                let mut inner = String::new();
                let mut closed = false;
                for (_, c) in chars.by_ref() {
                    if c == '}' {
                        closed = true;
                        break;
                    }
                    inner.push(c);
                }
                if !closed {
                    return Err(invalid(
                        key,
                        format!(
                            "'{}': an unclosed ${{ (write $$ for a literal $)",
                            text.escape_default()
                        ),
                    ));
                }
                let (name, default, when_empty) = match (inner.find(":-"), inner.find('-')) {
                    (Some(i), _) => (&inner[..i], Some(&inner[i + 2..]), true),
                    (None, Some(i)) => (&inner[..i], Some(&inner[i + 1..]), false),
                    (None, None) => (inner.as_str(), None, false),
                };
                let value = std::env::var(name).ok();
                let value = match (value, default) {
                    (Some(v), Some(d)) if v.is_empty() && when_empty => d.to_string(),
                    (Some(v), _) => v,
                    (None, Some(d)) => d.to_string(),
                    (None, None) => String::new(),
                };
                out.push_str(&value);
            }
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {
                let mut name = String::new();
                while let Some(&(_, c)) = chars.peek() {
                    if !(c.is_ascii_alphanumeric() || c == '_') {
                        break;
                    }
                    name.push(c);
                    chars.next();
                }
                out.push_str(&std::env::var(&name).unwrap_or_default());
            }
            _ => out.push('$'),
        }
    }
    Ok(out)
}

/// A string, number or boolean as text (strings interpolated).
fn scalar(value: &Value, key: &str) -> Result<String> {
    match value {
        Value::String(s) => interpolate(s, key),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(invalid(key, format!("give a string, not {}", describe(other)))),
    }
}

/// A string or a list of strings.
fn strings(value: &Value, key: &str) -> Result<Vec<String>> {
    match value {
        Value::Sequence(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| scalar(v, &format!("{key}[{i}]")))
            .collect(),
        other => Ok(vec![scalar(other, key)?]),
    }
}

/// A command given as a string (split as a POSIX shell splits words, quotes included, as
/// Compose does) or a list.
fn command(value: &Value, key: &str) -> Result<Vec<String>> {
    match value {
        Value::String(s) => {
            let line = interpolate(s, key)?;
            shlex::split(&line)
                .ok_or_else(|| invalid(key, "a quote is not closed; close it or give the command as a list"))
        }
        other => strings(other, key),
    }
}

/// Names of a top-level `volumes:` or `networks:` mapping; their options are listed as
/// unsupported (berth makes local volumes and bridge networks).
fn names_of(value: Option<&Value>, key: &str, unsupported: &mut Vec<String>) -> Result<Vec<String>> {
    let Some(value) = value else { return Ok(Vec::new()) };
    let map = value.as_mapping().ok_or_else(|| invalid(key, "a mapping of names"))?;
    let mut names = Vec::new();
    for (name, options) in map {
        let name = key_str(name, key)?;
        if !valid_name(name) {
            return Err(invalid(
                format!("{key}.{}", name.escape_default()),
                "1-40 letters, digits, '-' or '_'",
            ));
        }
        if let Some(options) = options.as_mapping() {
            for (option, _) in options {
                unsupported.push(format!("{key}.{name}.{}", key_str(option, key)?));
            }
        }
        names.push(name.to_string());
    }
    Ok(names)
}

fn environment(value: &Value, key: &str) -> Result<Vec<String>> {
    match value {
        Value::Mapping(map) => map
            .iter()
            .map(|(k, v)| {
                let k = key_str(k, key)?;
                Ok(match v {
                    Value::Null => k.to_string(),
                    v => format!("{k}={}", scalar(v, &format!("{key}.{k}"))?),
                })
            })
            .collect(),
        Value::Sequence(_) => strings(value, key),
        other => Err(invalid(
            key,
            format!("a mapping or a list of KEY=VALUE, not {}", describe(other)),
        )),
    }
}

fn env_file_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

fn read_service(
    stack: &str,
    service: &str,
    value: &Value,
    volumes: &[String],
    networks: &[String],
    env_files: &dyn Fn(&str) -> std::io::Result<String>,
    unsupported: &mut Vec<String>,
) -> Result<Service> {
    let at = |key: &str| format!("services.{service}.{key}");
    let map = value
        .as_mapping()
        .ok_or_else(|| invalid(format!("services.{service}"), "a service is a mapping"))?;
    let mut request = CreateInstanceRequest {
        kind: InstanceKind::Container,
        ..serde_json::from_value(serde_json::json!({ "image": "" })).map_err(|e| invalid(at("image"), e.to_string()))?
    };
    let mut replicas = 1u64;
    let mut depends_on = Vec::new();
    let mut conditions = BTreeMap::new();
    let mut update = UpdateConfig::default();
    let mut env_from_files = Vec::new();
    let mut environment_vars = Vec::new();
    for (key, value) in map {
        let key = key_str(key, &format!("services.{service}"))?;
        match key {
            "image" => request.image = scalar(value, &at(key))?,
            "command" => request.command = command(value, &at(key))?,
            "entrypoint" => request.entrypoint = Some(command(value, &at(key))?),
            "environment" => environment_vars = environment(value, &at(key))?,
            "env_file" => {
                for path in strings(value, &at(key))? {
                    let text = env_files(&path).map_err(|e| invalid(at(key), format!("{path}: {e}")))?;
                    env_from_files.extend(env_file_lines(&text));
                }
            }
            "working_dir" => request.working_dir = Some(scalar(value, &at(key))?),
            "user" => request.user = Some(scalar(value, &at(key))?),
            "hostname" => request.hostname = Some(scalar(value, &at(key))?),
            "tty" => request.tty = value.as_bool().unwrap_or(false),
            "stdin_open" => request.open_stdin = value.as_bool().unwrap_or(false),
            "ports" => request.ports = ports(value, &at(key))?,
            "volumes" => {
                let (binds, named) = service_volumes(value, &at(key), stack, volumes)?;
                request.volumes = binds;
                request.volumes.extend(named);
            }
            "tmpfs" => request.tmpfs = strings(value, &at(key))?,
            "networks" => {
                let wanted: Vec<String> = match value {
                    Value::Mapping(m) => m
                        .keys()
                        .map(|k| key_str(k, &at(key)).map(str::to_string))
                        .collect::<Result<_>>()?,
                    other => strings(other, &at(key))?,
                };
                for network in &wanted {
                    if !networks.contains(network) {
                        return Err(invalid(
                            at(key),
                            format!("network {network} is not declared under the top-level `networks:`"),
                        ));
                    }
                }
                if wanted.len() > 1 {
                    unsupported.push(format!(
                        "{} (an instance joins one network: the first, {})",
                        at(key),
                        wanted[0]
                    ));
                }
                request.network = wanted.first().map(|n| format!("{stack}-{n}"));
            }
            "depends_on" => {
                depends_on = match value {
                    Value::Mapping(m) => {
                        for (dependency, options) in m {
                            let dependency = key_str(dependency, &at(key))?;
                            let condition = match options.get("condition") {
                                None => Condition::Started,
                                Some(value) => match scalar(value, &format!("{}.{dependency}.condition", at(key)))?.as_str() {
                                    "service_started" => Condition::Started,
                                    "service_healthy" => Condition::Healthy,
                                    "service_completed_successfully" => Condition::CompletedSuccessfully,
                                    other => {
                                        return Err(invalid(
                                            format!("{}.{dependency}.condition", at(key)),
                                            format!("'{other}' is not service_started, service_healthy or service_completed_successfully"),
                                        ))
                                    }
                                },
                            };
                            if condition != Condition::Started {
                                conditions.insert(dependency.to_string(), condition);
                            }
                            if let Some(options) = options.as_mapping() {
                                for option in options.keys() {
                                    let option = key_str(option, &at(key))?;
                                    if option != "condition" {
                                        unsupported.push(format!("{}.{dependency}.{option}", at(key)));
                                    }
                                }
                            }
                        }
                        m.keys()
                            .map(|k| key_str(k, &at(key)).map(str::to_string))
                            .collect::<Result<_>>()?
                    }
                    other => strings(other, &at(key))?,
                }
            }
            "healthcheck" => request.healthcheck = read_healthcheck(value, &at(key), unsupported)?,
            "restart" => {
                let text = scalar(value, &at(key))?;
                request.restart = Some(restart(&text).map_err(|m| invalid(at(key), m))?);
            }
            "deploy" => read_deploy(value, &at(key), &mut request, &mut replicas, &mut update, unsupported)?,
            "x-berth" => read_berth(value, &at(key), &mut request)?,
            "container_name" => {
                return Err(invalid(
                    at(key),
                    "berth names a stack's instances STACK-SERVICE-N; remove container_name",
                ))
            }
            other => unsupported.push(at(other)),
        }
    }
    if request.image.is_empty() {
        return Err(invalid(
            at("image"),
            "every service needs an image (build: is not supported)",
        ));
    }
    // Files first, so `environment:` overrides them as in Compose.
    request.env = env_from_files;
    request.env.extend(environment_vars);
    // The replica count is not part of it: scaling adds or removes replicas, it does not
    // replace the others.
    let definition =
        serde_json::to_vec(&(&request, &depends_on, &conditions)).map_err(|e| invalid(at("image"), e.to_string()))?;
    let healthcheck = request
        .healthcheck
        .as_ref()
        .is_some_and(|check| check.test.first().map(String::as_str) != Some("NONE"));
    let hash = hex::encode(&sha2::Sha256::digest(&definition)[..8]);
    request.labels.insert(STACK_LABEL.into(), stack.into());
    request.labels.insert(SERVICE_LABEL.into(), service.into());
    request.labels.insert(HASH_LABEL.into(), hash.clone());
    let replicas = (1..=replicas as usize)
        .map(|index| CreateInstanceRequest {
            name: Some(replica_name(stack, service, index)),
            ..request.clone()
        })
        .collect();
    Ok(Service {
        name: service.to_string(),
        replicas,
        depends_on,
        conditions,
        healthcheck,
        update,
        hash,
    })
}

/// A service's `healthcheck:`, checked as the daemon will check it.
fn read_healthcheck(value: &Value, key: &str, unsupported: &mut Vec<String>) -> Result<Option<HealthCheckRequest>> {
    let map = value.as_mapping().ok_or_else(|| {
        invalid(
            key,
            format!(
                "a healthcheck is a mapping (test, interval, timeout, retries, start_period), not {}",
                describe(value)
            ),
        )
    })?;
    let mut check = HealthCheckRequest::default();
    let mut disabled = false;
    let duration =
        |value: &Value, at: &str| -> Result<u64> { parse_duration_ms(&scalar(value, at)?).map_err(|m| invalid(at, m)) };
    for (name, value) in map {
        let name = key_str(name, key)?;
        let at = format!("{key}.{name}");
        match name {
            "test" => {
                check.test = match value {
                    Value::String(line) => vec!["CMD-SHELL".into(), interpolate(line, &at)?],
                    other => strings(other, &at)?,
                }
            }
            "interval" => check.interval_ms = Some(duration(value, &at)?),
            "timeout" => check.timeout_ms = Some(duration(value, &at)?),
            "start_period" => check.start_period_ms = Some(duration(value, &at)?),
            "retries" => {
                let text = scalar(value, &at)?;
                check.retries = Some(
                    text.parse()
                        .map_err(|_| invalid(&at, format!("'{text}' is not a whole number")))?,
                );
            }
            "disable" => disabled = value.as_bool().unwrap_or(false),
            _ => unsupported.push(at),
        }
    }
    if disabled {
        return Ok(Some(HealthCheckRequest {
            test: vec!["NONE".into()],
            ..Default::default()
        }));
    }
    check.resolve().map_err(|e| {
        invalid(
            // The daemon's field names (`healthcheck.timeout_ms`) as the file's keys.
            format!(
                "{key}{}",
                e.field
                    .strip_prefix("healthcheck")
                    .unwrap_or_default()
                    .trim_end_matches("_ms")
            ),
            e.message,
        )
    })?;
    Ok(Some(check))
}

fn restart(text: &str) -> std::result::Result<RestartPolicy, String> {
    let text = if text == "unless-stopped" { "always" } else { text };
    text.parse::<RestartPolicy>().map_err(|_| {
        format!(
            "'{}': give no, always, on-failure[:N] or unless-stopped",
            text.escape_default()
        )
    })
}

fn ports(value: &Value, key: &str) -> Result<Vec<String>> {
    let items = value
        .as_sequence()
        .ok_or_else(|| invalid(key, "a list of \"HOST:CONTAINER\" or {target, published}"))?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let at = format!("{key}[{i}]");
            let text = match item {
                Value::Mapping(m) => {
                    let target = m.get("target").map(|v| scalar(v, &at)).transpose()?;
                    let published = m.get("published").map(|v| scalar(v, &at)).transpose()?;
                    let protocol = m.get("protocol").map(|v| scalar(v, &at)).transpose()?;
                    let (Some(target), Some(published)) = (target, published) else {
                        return Err(invalid(
                            at,
                            "give target and published (a port berth picks is not supported)",
                        ));
                    };
                    match protocol {
                        Some(p) => format!("{published}:{target}/{p}"),
                        None => format!("{published}:{target}"),
                    }
                }
                other => scalar(other, &at)?,
            };
            berth_model::network::PortMapping::parse(&text).map_err(|e| invalid(&at, e))?;
            Ok(text)
        })
        .collect()
}

/// A service's `volumes:` as berth's `-v` texts: binds as given, named volumes renamed
/// `STACK-NAME` (they must be declared at the top level).
fn service_volumes(value: &Value, key: &str, stack: &str, declared: &[String]) -> Result<(Vec<String>, Vec<String>)> {
    let items = value
        .as_sequence()
        .ok_or_else(|| invalid(key, "a list of \"SOURCE:TARGET[:ro]\" or {type, source, target}"))?;
    let (mut binds, mut named) = (Vec::new(), Vec::new());
    for (i, item) in items.iter().enumerate() {
        let at = format!("{key}[{i}]");
        let (source, rest) = match item {
            Value::Mapping(m) => {
                let source = m.get("source").map(|v| scalar(v, &at)).transpose()?.unwrap_or_default();
                let target = m
                    .get("target")
                    .map(|v| scalar(v, &at))
                    .transpose()?
                    .ok_or_else(|| invalid(&at, "give target"))?;
                let read_only = m.get("read_only").and_then(Value::as_bool).unwrap_or(false);
                (source, format!("{target}{}", if read_only { ":ro" } else { "" }))
            }
            other => {
                let text = scalar(other, &at)?;
                match text.split_once(':') {
                    Some((source, rest)) => (source.to_string(), rest.to_string()),
                    None => return Err(invalid(at, "an anonymous volume (no source) is not supported; name it")),
                }
            }
        };
        if source.starts_with('/') || source.starts_with('.') {
            if source.starts_with('.') {
                return Err(invalid(
                    at,
                    format!("bind source {source} is relative: give an absolute host path"),
                ));
            }
            binds.push(format!("{source}:{rest}"));
        } else if declared.contains(&source) {
            named.push(format!("{stack}-{source}:{rest}"));
        } else {
            return Err(invalid(
                at,
                format!("volume {source} is not declared under the top-level `volumes:`"),
            ));
        }
    }
    Ok((binds, named))
}

fn read_deploy(
    value: &Value,
    key: &str,
    request: &mut CreateInstanceRequest,
    replicas: &mut u64,
    update: &mut UpdateConfig,
    unsupported: &mut Vec<String>,
) -> Result<()> {
    let map = value.as_mapping().ok_or_else(|| invalid(key, "a mapping"))?;
    for (k, v) in map {
        let k = key_str(k, key)?;
        let at = format!("{key}.{k}");
        match k {
            "replicas" => {
                *replicas = v
                    .as_u64()
                    .filter(|n| (1..=MAX_REPLICAS).contains(n))
                    .ok_or_else(|| invalid(&at, format!("give 1 to {MAX_REPLICAS}")))?
            }
            "resources" => {
                let resources = v.as_mapping().ok_or_else(|| invalid(&at, "a mapping"))?;
                for (part, values) in resources {
                    let part = key_str(part, &at)?;
                    let at = format!("{at}.{part}");
                    let values = values.as_mapping().ok_or_else(|| invalid(&at, "a mapping"))?;
                    for (name, amount) in values {
                        let name = key_str(name, &at)?;
                        let at = format!("{at}.{name}");
                        let text = scalar(amount, &at)?;
                        match (part, name) {
                            ("limits", "cpus") => {
                                request.limits.cpus = Some(LimitSetting::Value(parse_cpus(&text, &at)?))
                            }
                            ("limits", "memory") => {
                                request.limits.memory_bytes = Some(LimitSetting::Value(parse_bytes(&text, &at)?))
                            }
                            ("limits", "pids") => {
                                request.limits.pids = Some(LimitSetting::Value(
                                    text.parse().map_err(|_| invalid(&at, "a process count"))?,
                                ))
                            }
                            ("reservations", "cpus") => request.limits.reserve_cpus = Some(parse_cpus(&text, &at)?),
                            ("reservations", "memory") => {
                                request.limits.reserve_memory_bytes = Some(parse_bytes(&text, &at)?)
                            }
                            _ => unsupported.push(at),
                        }
                    }
                }
            }
            "placement" => {
                let placement = v.as_mapping().ok_or_else(|| invalid(&at, "a mapping"))?;
                for (p, pv) in placement {
                    let p = key_str(p, &at)?;
                    if p != "constraints" {
                        unsupported.push(format!("{at}.{p}"));
                        continue;
                    }
                    for (i, c) in strings(pv, &format!("{at}.constraints"))?.into_iter().enumerate() {
                        // Swarm's form, node.labels.zone==a, is berth's zone==a.
                        let c = c.replace(' ', "");
                        let c = c.strip_prefix("node.labels.").unwrap_or(&c).to_string();
                        if !(c.contains("==") || c.contains("!=")) {
                            return Err(invalid(
                                format!("{at}.constraints[{i}]"),
                                "give LABEL==VALUE or LABEL!=VALUE (node.labels.zone==a)",
                            ));
                        }
                        request.constraints.push(c);
                    }
                }
            }
            "update_config" => {
                let config = v.as_mapping().ok_or_else(|| invalid(&at, "a mapping"))?;
                for (u, uv) in config {
                    let u = key_str(u, &at)?;
                    let at = format!("{at}.{u}");
                    match u {
                        "parallelism" => {
                            update.parallelism = uv
                                .as_u64()
                                .filter(|n| (1..=MAX_REPLICAS).contains(n))
                                .ok_or_else(|| invalid(&at, "give 1 or more"))?
                                as usize
                        }
                        "order" => {
                            update.start_first = match uv.as_str() {
                                Some("start-first") => true,
                                Some("stop-first") => false,
                                _ => return Err(invalid(&at, "give start-first or stop-first")),
                            }
                        }
                        "failure_action" => {
                            update.rollback = match uv.as_str() {
                                Some("rollback") => true,
                                Some("pause") | Some("continue") => false,
                                _ => return Err(invalid(&at, "give rollback, pause or continue")),
                            }
                        }
                        _ => unsupported.push(at),
                    }
                }
            }
            _ => unsupported.push(at),
        }
    }
    Ok(())
}

fn parse_cpus(text: &str, at: &str) -> Result<MilliCpus> {
    text.parse::<MilliCpus>().map_err(|e| invalid(at, e.to_string()))
}

fn parse_bytes(text: &str, at: &str) -> Result<u64> {
    // Compose writes 512M and 1G; berth's sizes are 512m and 1g.
    text.to_ascii_lowercase()
        .trim_end_matches('b')
        .parse::<ByteSize>()
        .map(|b| b.0)
        .map_err(|e| invalid(at, e.to_string()))
}

fn read_berth(value: &Value, key: &str, request: &mut CreateInstanceRequest) -> Result<()> {
    let map = value.as_mapping().ok_or_else(|| invalid(key, "a mapping"))?;
    let mut vm = VmRequest::default();
    for (k, v) in map {
        let k = key_str(k, key)?;
        let at = format!("{key}.{k}");
        let text = scalar(v, &at)?;
        match k {
            "kind" => {
                request.kind = match text.as_str() {
                    "vm" => InstanceKind::Vm,
                    "container" => InstanceKind::Container,
                    _ => return Err(invalid(at, "give vm or container")),
                }
            }
            "type" => request.instance_type = Some(text),
            "node" => request.node = Some(text),
            "disk" => request.disk_bytes = Some(parse_bytes(&text, &at)?),
            "max_cpus" => vm.max_cpus = Some(text.parse().map_err(|_| invalid(&at, "a vCPU count"))?),
            "max_memory" => vm.max_memory_bytes = Some(parse_bytes(&text, &at)?),
            _ => {
                return Err(invalid(
                    at,
                    "x-berth takes kind, type, node, disk, max_cpus and max_memory",
                ))
            }
        }
    }
    if request.kind == InstanceKind::Vm {
        request.vm = Some(vm);
    } else if vm != VmRequest::default() {
        return Err(invalid(key, "max_cpus and max_memory are for `kind: vm`"));
    }
    Ok(())
}

/// Two services publishing one host port cannot both run on one host: refused by name.
fn check_ports(services: &[Service]) -> Result<()> {
    let mut seen: BTreeMap<String, &str> = BTreeMap::new();
    for service in services {
        let Some(first) = service.replicas.first() else {
            continue;
        };
        for port in &first.ports {
            let Ok(mapping) = berth_model::network::PortMapping::parse(port) else {
                continue;
            };
            let key = format!("{}/{}", mapping.host_port, mapping.protocol);
            if let Some(other) = seen.insert(key.clone(), &service.name) {
                return Err(invalid(
                    format!("services.{}.ports", service.name),
                    format!("host port {key} is also published by service {other}; give one of them another port"),
                ));
            }
        }
    }
    Ok(())
}

/// Services ordered so that each comes after what it depends on; an unknown dependency or a
/// cycle is an error naming it.
fn in_dependency_order(services: Vec<Service>) -> Result<Vec<Service>> {
    let names: BTreeSet<&str> = services.iter().map(|s| s.name.as_str()).collect();
    for service in &services {
        if let Some(unknown) = service.depends_on.iter().find(|d| !names.contains(d.as_str())) {
            return Err(invalid(
                format!("services.{}.depends_on", service.name),
                format!("no service {unknown} in this file"),
            ));
        }
        for (dependency, condition) in &service.conditions {
            let checked = services.iter().any(|s| &s.name == dependency && s.healthcheck);
            if *condition == Condition::Healthy && !checked {
                return Err(invalid(
                    format!("services.{}.depends_on.{dependency}.condition", service.name),
                    format!("service_healthy needs {dependency} to have a healthcheck; give it one or wait with service_started"),
                ));
            }
        }
    }
    let mut ordered: Vec<Service> = Vec::new();
    let mut left = services;
    while !left.is_empty() {
        let ready = left
            .iter()
            .position(|s| s.depends_on.iter().all(|d| ordered.iter().any(|o| &o.name == d)));
        match ready {
            Some(index) => ordered.push(left.remove(index)),
            None => {
                let cycle: Vec<&str> = left.iter().map(|s| s.name.as_str()).collect();
                return Err(invalid(
                    "depends_on",
                    format!("services {} depend on each other in a cycle", cycle.join(", ")),
                ));
            }
        }
    }
    Ok(ordered)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_files(path: &str) -> std::io::Result<String> {
        Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{path} not found"),
        ))
    }

    const WEB: &str = r#"
name: shop
services:
  web:
    image: busybox
    command: ["httpd", "-f", "-p", "80"]
    environment:
      MODE: prod
    ports: ["8080:80"]
    depends_on:
      db:
        condition: service_healthy
    deploy:
      replicas: 3
      resources:
        limits: {cpus: "0.5", memory: 128M}
        reservations: {memory: 64M}
      placement:
        constraints: ["node.labels.zone==a"]
      update_config: {parallelism: 2, order: start-first, failure_action: rollback}
  db:
    image: busybox
    command: sleep 1000
    volumes: ["data:/var/lib/db"]
    restart: unless-stopped
    healthcheck:
      test: test -d /var/lib/db
      interval: 1m30s
      retries: 5
      start_interval: 1s
  vm:
    image: busybox
    command: sleep 1000
    x-berth: {kind: vm, max_memory: 1g}
    deploy: {resources: {limits: {memory: 256M}}}
volumes:
  data: {}
"#;

    #[test]
    fn a_stack_is_read_in_dependency_order_with_each_key_used_or_listed() {
        let stack = parse(WEB, None, &no_files).unwrap();
        assert_eq!(stack.name, "shop");
        let names: Vec<&str> = stack.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["db", "web", "vm"]);
        let web = &stack.services[1];
        assert_eq!(web.replicas.len(), 3);
        assert_eq!(web.replicas[2].name.as_deref(), Some("shop-web-3"));
        assert_eq!(web.replicas[0].env, ["MODE=prod"]);
        assert_eq!(web.replicas[0].constraints, ["zone==a"]);
        assert_eq!(
            web.replicas[0].limits.memory_bytes,
            Some(LimitSetting::Value(128 << 20))
        );
        assert_eq!(web.replicas[0].labels[STACK_LABEL], "shop");
        assert_eq!(
            web.update,
            UpdateConfig {
                parallelism: 2,
                start_first: true,
                rollback: true
            }
        );
        let db = &stack.services[0];
        assert_eq!(db.replicas[0].volumes, ["shop-data:/var/lib/db"]);
        assert_eq!(db.replicas[0].command, ["sleep", "1000"]);
        assert_eq!(db.replicas[0].restart, Some(RestartPolicy::Always));
        assert_eq!(stack.services[2].replicas[0].kind, InstanceKind::Vm);
        assert_eq!(stack.volumes, ["shop-data"]);
        assert_eq!(web.conditions["db"], Condition::Healthy);
        assert!(db.healthcheck && !web.healthcheck);
        let check = db.replicas[0].healthcheck.clone().unwrap();
        assert_eq!(check.test, ["CMD-SHELL", "test -d /var/lib/db"]);
        assert_eq!((check.interval_ms, check.retries), (Some(90_000), Some(5)));
        assert_eq!(stack.unsupported, ["services.db.healthcheck.start_interval"]);
    }

    #[test]
    fn command_strings_split_as_a_shell_splits_them() {
        let stack = parse(
            "services: {a: {image: x, command: 'sh -c \"sleep 2; touch /ready\"', entrypoint: \"env 'A B'\"}}",
            Some("s"),
            &no_files,
        )
        .unwrap();
        let a = &stack.services[0].replicas[0];
        assert_eq!(a.command, ["sh", "-c", "sleep 2; touch /ready"]);
        assert_eq!(
            a.entrypoint.as_deref(),
            Some(&["env".to_string(), "A B".to_string()][..])
        );
        let err = parse("services: {a: {image: x, command: 'sh -c \"x'}}", Some("s"), &no_files).unwrap_err();
        assert!(
            err.to_string().contains("services.a.command: a quote is not closed"),
            "{err}"
        );
    }

    #[test]
    fn the_hash_follows_the_definition() {
        let one = parse(WEB, None, &no_files).unwrap();
        let changed = parse(&WEB.replace("MODE: prod", "MODE: test"), None, &no_files).unwrap();
        assert_ne!(one.services[1].hash, changed.services[1].hash);
        assert_eq!(one.services[0].hash, changed.services[0].hash);
        let scaled = parse(&WEB.replace("replicas: 3", "replicas: 5"), None, &no_files).unwrap();
        assert_eq!(one.services[1].hash, scaled.services[1].hash);
    }

    #[test]
    fn bad_files_say_which_key_and_what_to_do() {
        for (text, expected) in [
            (
                "services: {a: {image: x, depends_on: [b]}}",
                "services.a.depends_on: no service b in this file",
            ),
            (
                "services: {a: {image: x, depends_on: {b: {condition: service_healthy}}}, b: {image: y}}",
                "services.a.depends_on.b.condition: service_healthy needs b to have a healthcheck",
            ),
            (
                "services: {a: {image: x, depends_on: {b: {condition: soon}}}, b: {image: y}}",
                "services.a.depends_on.b.condition: 'soon' is not service_started",
            ),
            (
                "services: {a: {image: x, healthcheck: {test: true, interval: often}}}",
                "services.a.healthcheck.interval: 'often' is not a duration",
            ),
            (
                "services: {a: {image: x, healthcheck: {test: [true]}}}",
                "services.a.healthcheck.test: 'true' is not CMD, CMD-SHELL or NONE",
            ),
            (
                "services: {a: {image: x, healthcheck: {test: [CMD, x], timeout: 1ms}}}",
                "services.a.healthcheck.timeout: the health check's timeout",
            ),
            (
                "services: {a: {image: x, ports: ['80:80']}, b: {image: y, ports: ['80:81']}}",
                "host port 80/tcp is also published by service a",
            ),
            (
                "services: {a: {image: x, depends_on: [b]}, b: {image: y, depends_on: [a]}}",
                "cycle",
            ),
            (
                "services: {a: {command: true}}",
                "services.a.image: every service needs an image",
            ),
            (
                "services: {a: {image: x, volumes: ['nope:/x']}}",
                "volume nope is not declared",
            ),
            (
                "services: {a: {image: x, deploy: {replicas: 0}}}",
                "services.a.deploy.replicas: give 1 to 1000",
            ),
            ("services: {a: {image: x, restart: sometimes}}", "services.a.restart"),
            (
                "services: {a: {image: x, x-berth: {kind: moon}}}",
                "give vm or container",
            ),
            ("services: [a]", "needs `services:`"),
            (": : :", "not YAML"),
        ] {
            let err = parse(text, Some("s"), &no_files).unwrap_err().to_string();
            assert!(err.contains(expected), "{text}: {err}");
        }
        let err = parse("services: {a: {image: x}}", None, &no_files)
            .unwrap_err()
            .to_string();
        assert!(err.contains("berth apply --name"), "{err}");
    }

    #[test]
    fn values_are_interpolated_as_compose_does() {
        std::env::set_var("BERTH_COMPOSE_TEST_TAG", "1.2");
        let stack = parse(
            "services: {a: {image: 'busybox:${BERTH_COMPOSE_TEST_TAG}', command: ['sh', '-c', 'echo $$HOME ${BERTH_COMPOSE_UNSET:-dflt} $BERTH_COMPOSE_TEST_TAG']}}",
            Some("s"),
            &no_files,
        )
        .unwrap();
        let a = &stack.services[0].replicas[0];
        assert_eq!(a.image, "busybox:1.2");
        assert_eq!(a.command[2], "echo $HOME dflt 1.2");
        let err = parse("services: {a: {image: '${OOPS'}}", Some("s"), &no_files)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unclosed"), "{err}");
    }

    #[test]
    fn env_files_come_first_and_environment_overrides_them() {
        let files = |path: &str| -> std::io::Result<String> {
            assert_eq!(path, "app.env");
            Ok("# comment\nA=1\nB=2\n".into())
        };
        let stack = parse(
            "services: {a: {image: x, env_file: app.env, environment: [B=3]}}",
            Some("s"),
            &files,
        )
        .unwrap();
        assert_eq!(stack.services[0].replicas[0].env, ["A=1", "B=2", "B=3"]);
    }
}
