//! System endpoints: `_ping`, `version`, `info` (from berth's `/v1/info`), `events` (berth's
//! event feed as Docker's events) and `system/df`.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use berth_model::api::{Event, HostInfo};
use berth_model::image::ImageRecord;
use berth_model::volume::Volume;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::containers::{all_instances, count_states};
use crate::error::{DockerError, DockerResult};
use crate::params::{name_matches, Filters};
use crate::{encode, Gateway, Shared, API_VERSION, MIN_API_VERSION};

/// `GET|HEAD /_ping`: the version headers are what clients negotiate from.
pub async fn ping() -> Response {
    (
        [
            (header::CACHE_CONTROL, "no-cache, no-store, must-revalidate"),
            (header::PRAGMA, "no-cache"),
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
        ],
        "OK",
    )
        .into_response()
}

fn architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

pub async fn version(State(gateway): Shared) -> DockerResult<Json<Value>> {
    let host: HostInfo = gateway.berth.get("/v1/info").await?;
    let details = json!({
        "ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION, "Os": "linux",
        "Arch": architecture(), "KernelVersion": host.kernel, "GitCommit": "", "GoVersion": "",
        "BuildTime": "", "Experimental": "false",
    });
    Ok(Json(json!({
        "Platform": { "Name": format!("berth {}", host.version) },
        "Components": [{ "Name": "Engine", "Version": host.version, "Details": details }],
        "Version": host.version,
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "GitCommit": "",
        "GoVersion": "",
        "Os": "linux",
        "Arch": architecture(),
        "KernelVersion": host.kernel,
        "BuildTime": "",
    })))
}

pub async fn info(State(gateway): Shared) -> DockerResult<Json<Value>> {
    let host: HostInfo = gateway.berth.get("/v1/info").await?;
    let instances = all_instances(&gateway).await?;
    let (running, paused, stopped) = count_states(&instances);
    let mut security = vec!["name=seccomp,profile=default".to_string()];
    if host.cgroup_version.contains('2') {
        security.push("name=cgroupns".into());
    }
    Ok(Json(json!({
        "ID": host.node,
        "Containers": instances.len(),
        "ContainersRunning": running,
        "ContainersPaused": paused,
        "ContainersStopped": stopped,
        "Images": host.images,
        "Driver": "overlay2",
        "DriverStatus": [["Backing Filesystem", "berth's image store"]],
        "Plugins": {
            "Volume": ["local", "nfs"],
            "Network": ["bridge", "host", "null"],
            "Authorization": null,
            "Log": ["json-file", "local"],
        },
        "MemoryLimit": true,
        "SwapLimit": false,
        "KernelMemory": false,
        "KernelMemoryTCP": false,
        "CpuCfsPeriod": true,
        "CpuCfsQuota": true,
        "CPUShares": false,
        "CPUSet": false,
        "PidsLimit": true,
        "IPv4Forwarding": true,
        "BridgeNfIptables": true,
        "BridgeNfIp6tables": false,
        "Debug": false,
        "NFd": 0,
        "OomKillDisable": false,
        "NGoroutines": 0,
        "SystemTime": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        "LoggingDriver": "json-file",
        "CgroupDriver": "cgroupfs",
        "CgroupVersion": if host.cgroup_version.contains('2') { "2" } else { "1" },
        "NEventsListener": 0,
        "KernelVersion": host.kernel,
        "OperatingSystem": host.os,
        "OSVersion": "",
        "OSType": "linux",
        "Architecture": std::env::consts::ARCH,
        "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": {
            // Docker's own default: registries on loopback are reached over plain HTTP.
            "InsecureRegistryCIDRs": ["127.0.0.0/8"],
            "IndexConfigs": {},
            "Mirrors": [],
        },
        "NCPU": host.cpus,
        "MemTotal": host.memory_bytes,
        "GenericResources": null,
        "DockerRootDir": host.state_dir,
        "HttpProxy": "",
        "HttpsProxy": "",
        "NoProxy": "",
        "Name": host.node,
        "Labels": [],
        "ExperimentalBuild": false,
        "ServerVersion": host.version,
        "Runtimes": { "berth": { "path": host.oci_runtime } },
        "DefaultRuntime": "berth",
        "Swarm": {
            "NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive", "ControlAvailable": false,
            "Error": "", "RemoteManagers": null,
        },
        // Instances keep running while the daemon restarts.
        "LiveRestoreEnabled": true,
        "Isolation": "",
        "InitBinary": "",
        "ContainerdCommit": { "ID": "", "Expected": "" },
        "RuncCommit": { "ID": "", "Expected": "" },
        "InitCommit": { "ID": "", "Expected": "" },
        "SecurityOptions": security,
        "Warnings": host.cluster.as_ref().map(|c| vec![format!(
            "berth node {} of a cluster of {} nodes: containers may run on any of them", c.node, c.nodes
        )]).unwrap_or_default(),
    })))
}

#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    since: Option<String>,
    until: Option<String>,
    filters: Option<String>,
}

const EVENT_FILTERS: &[&str] = &["type", "container", "image", "event", "label"];

/// Docker's `since`/`until` for events: Unix seconds (with a fraction) or RFC 3339.
fn event_time(name: &str, value: &Option<String>) -> DockerResult<Option<DateTime<Utc>>> {
    let Some(text) = value.as_deref().map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    if let Ok(seconds) = text.parse::<f64>() {
        return Ok(DateTime::from_timestamp(
            seconds.trunc() as i64,
            (seconds.fract() * 1e9) as u32,
        ));
    }
    DateTime::parse_from_rfc3339(text)
        .map(|t| Some(t.with_timezone(&Utc)))
        .map_err(|_| DockerError::bad_parameter(format!("invalid value for {name}: '{text}'")))
}

/// One berth event as Docker's, with the instance's image and labels when it still exists.
fn docker_event(event: &Event, image: &str, labels: &BTreeMap<String, String>) -> Value {
    let kind = if event.subject == "image" { "image" } else { "container" };
    let mut attributes: BTreeMap<String, String> = labels.clone();
    attributes.insert("name".into(), event.name.clone());
    if kind == "container" {
        attributes.insert("image".into(), image.to_string());
    }
    if let Some(exit) = &event.exit {
        attributes.insert("exitCode".into(), exit.code.to_string());
    }
    let nanos = event.time.timestamp_nanos_opt().unwrap_or(0);
    json!({
        "status": event.action,
        "id": event.id,
        "from": image,
        "Type": kind,
        "Action": event.action,
        "Actor": { "ID": event.id, "Attributes": attributes },
        "scope": "local",
        "time": event.time.timestamp(),
        "timeNano": nanos,
    })
}

fn event_matches(filters: &Filters, event: &Value) -> bool {
    let field = |path: &[&str]| {
        path.iter()
            .try_fold(event, |value, key| value.get(key))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let attributes: BTreeMap<String, String> = event["Actor"]["Attributes"]
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default();
    let name = attributes.get("name").cloned().unwrap_or_default();
    filters.any("type", |t| t == field(&["Type"]))
        && filters.any("event", |e| e == field(&["Action"]))
        && filters.any("container", |c| {
            field(&["Type"]) == "container" && (field(&["id"]).starts_with(c) || name_matches(&format!("^{c}$"), &name))
        })
        && filters.any("image", |i| {
            field(&["from"]) == i || attributes.get("image").is_some_and(|a| a == i)
        })
        && filters.labels_match(&attributes)
}

/// `GET /events`: berth's live feed (berth keeps no history, so `since` only filters what
/// comes; `until` ends the stream).
pub async fn events(State(gateway): Shared, Query(query): Query<EventsQuery>) -> DockerResult<Response> {
    let filters = Filters::parse(&query.filters, EVENT_FILTERS)?;
    let since = event_time("since", &query.since)?;
    let until = event_time("until", &query.until)?;
    let now = Utc::now();
    let timeout = match until {
        Some(until) if until <= now => {
            return Ok(crate::streams::body_response(
                "application/json",
                tokio::sync::mpsc::channel(1).1,
            ))
        }
        Some(until) => format!("?timeout={}", (until - now).num_seconds().clamp(1, 86_400)),
        None => String::new(),
    };
    let mut lines = gateway
        .berth
        .stream(hyper::Method::GET, &format!("/v1/events{timeout}"), None)
        .await?
        .lines();
    let (sender, receiver) = tokio::sync::mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let Ok(event) = serde_json::from_slice::<Event>(&line) else {
                continue;
            };
            if since.is_some_and(|since| event.time < since) {
                continue;
            }
            let (image, labels) = describe(&gateway, &event).await;
            let docker = docker_event(&event, &image, &labels);
            if !event_matches(&filters, &docker) {
                continue;
            }
            let mut line = serde_json::to_vec(&docker).unwrap_or_default();
            line.push(b'\n');
            if sender.send(Bytes::from(line)).await.is_err() {
                return;
            }
        }
    });
    Ok(crate::streams::body_response("application/json", receiver))
}

/// The image and labels of an event's instance (gone already after a destroy).
async fn describe(gateway: &Gateway, event: &Event) -> (String, BTreeMap<String, String>) {
    if event.subject == "image" {
        return (event.name.clone(), BTreeMap::new());
    }
    match gateway
        .berth
        .get::<berth_model::Instance>(&format!("/v1/instances/{}", encode(&event.id)))
        .await
    {
        Ok(instance) => (instance.spec.image.clone(), crate::view::docker_labels(&instance)),
        Err(_) => (String::new(), BTreeMap::new()),
    }
}

/// `GET /system/df`
pub async fn disk_usage(State(gateway): Shared) -> DockerResult<Json<Value>> {
    let images: Vec<ImageRecord> = gateway.berth.get("/v1/images").await?;
    let instances = all_instances(&gateway).await?;
    let volumes: Vec<Volume> = gateway.berth.get("/v1/volumes").await?;
    let now = Utc::now();
    let images_json: Vec<Value> = images
        .iter()
        .map(|image| {
            let mut summary = crate::images::summary(image);
            summary["Containers"] = json!(instances.iter().filter(|i| i.spec.image_id == image.id).count());
            summary
        })
        .collect();
    let volumes_json: Vec<Value> = volumes
        .iter()
        .map(|volume| {
            let users = instances
                .iter()
                .filter(|i| i.spec.volumes.iter().any(|v| v.volume == volume.name))
                .count();
            let mut value = crate::networks_volumes::volume_view(volume, &gateway);
            value["UsageData"] = json!({ "Size": -1, "RefCount": users });
            value
        })
        .collect();
    Ok(Json(json!({
        "LayersSize": images.iter().map(|i| i.size_bytes).sum::<u64>(),
        "Images": images_json,
        "Containers": instances.iter().map(|i| crate::view::summary(i, now)).collect::<Vec<_>>(),
        "Volumes": volumes_json,
        "BuildCache": [],
    })))
}
