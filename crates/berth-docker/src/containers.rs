//! Container endpoints: create, list, inspect and the life cycle (start, stop, kill, wait,
//! remove...), each a call or two on berth's `/v1/instances`. Streams (logs, attach, exec)
//! are in `streams`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use berth_model::api::{
    CreatedResponse, HostInfo, InstanceStats, ProcessNode, TopResponse, UpdateInstanceRequest, WaitResponse,
};
use berth_model::{Instance, InstanceState};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::create::{self, CreateBody, Resources};
use crate::error::{DockerError, DockerResult};
use crate::params::{flag, name_matches, number, Filters};
use crate::view::{self, berth_network_name};
use crate::{encode, Gateway, Shared};

/// The instance a Docker id or name stands for (Docker names may carry a leading `/`).
pub(crate) async fn find(gateway: &Gateway, id: &str) -> DockerResult<Instance> {
    let id = id.trim_start_matches('/');
    gateway
        .berth
        .get(&format!("/v1/instances/{}", encode(id)))
        .await
        .map_err(|e| DockerError::from(e).for_container(id))
}

/// A body that must be JSON of type `T` (an empty one reads as `{}`).
pub(crate) fn json_body<T: serde::de::DeserializeOwned + Default>(what: &str, body: &Bytes) -> DockerResult<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| DockerError::bad_parameter(format!("invalid {what}: {e}")))
}

#[derive(Debug, Deserialize)]
pub struct CreateQuery {
    name: Option<String>,
    platform: Option<String>,
}

pub async fn create(
    State(gateway): Shared,
    Query(query): Query<CreateQuery>,
    body: Bytes,
) -> DockerResult<(StatusCode, Json<Value>)> {
    if let Some(platform) = query.platform.filter(|p| !p.is_empty()) {
        if !matches!(platform.as_str(), "linux" | "linux/amd64") {
            return Err(DockerError::unsupported(
                &format!("platform {platform}"),
                "berth runs linux/amd64 images",
            ));
        }
    }
    let body: CreateBody = json_body("container config", &body)?;
    let request = create::create_request(query.name, body)?;
    tracing::info!(image = %request.image, name = ?request.name, "docker create");
    let created: CreatedResponse = gateway.berth.post("/v1/instances", &request).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "Id": created.id, "Warnings": created.warnings })),
    ))
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    all: Option<String>,
    limit: Option<String>,
    size: Option<String>,
    filters: Option<String>,
    since: Option<String>,
    before: Option<String>,
}

const CONTAINER_FILTERS: &[&str] = &["label", "name", "id", "status", "ancestor", "network"];

fn matches_filters(filters: &Filters, instance: &Instance) -> bool {
    let image_matches = |wanted: &str| {
        let image = &instance.spec.image;
        image == wanted
            || image.strip_suffix(":latest") == Some(wanted)
            || wanted.strip_suffix(":latest") == Some(image.as_str())
            || instance
                .spec
                .image_id
                .trim_start_matches("sha256:")
                .starts_with(wanted.trim_start_matches("sha256:"))
    };
    filters.labels_match(&view::docker_labels(instance))
        && filters.any("name", |pattern| name_matches(pattern, &instance.name))
        && filters.any("id", |prefix| instance.id.starts_with(prefix))
        && filters.any("status", |status| view::status_word(instance.state) == status)
        && filters.any("ancestor", image_matches)
        && filters.any("network", |network| {
            berth_network_name(network) == instance.spec.network
                || view::network_id(&instance.spec.network).starts_with(network)
        })
}

pub async fn list(
    State(gateway): Shared,
    Query(query): Query<ListQuery>,
) -> DockerResult<Json<Vec<view::ContainerSummary>>> {
    if flag(&query.size) {
        return Err(DockerError::unsupported(
            "size=1 (docker ps -s)",
            "berth does not measure writable layers per container",
        ));
    }
    for (name, value) in [("since", &query.since), ("before", &query.before)] {
        if value.as_deref().is_some_and(|v| !v.is_empty()) {
            return Err(DockerError::unsupported(name, "use filters instead"));
        }
    }
    let filters = Filters::parse(&query.filters, CONTAINER_FILTERS)?;
    // A status filter shows stopped containers too, as in Docker.
    let all = flag(&query.all) || !filters.get("status").is_empty();
    let mut instances: Vec<Instance> = gateway.berth.get("/v1/instances?all=true").await?;
    instances.retain(|i| (all || i.state.is_active()) && matches_filters(&filters, i));
    instances.sort_by_key(|i| std::cmp::Reverse(i.created_at));
    if let Some(limit) = number::<i64>("limit", &query.limit)?.filter(|l| *l > 0) {
        instances.truncate(limit as usize);
    }
    let now = Utc::now();
    Ok(Json(instances.iter().map(|i| view::summary(i, now)).collect()))
}

pub async fn inspect(State(gateway): Shared, Path(id): Path<String>) -> DockerResult<Json<Value>> {
    Ok(Json(view::inspect(&find(&gateway, &id).await?)))
}

#[derive(Debug, Deserialize)]
pub struct RemoveQuery {
    force: Option<String>,
    /// Anonymous volumes go with the container; berth has none, so there is nothing to do.
    v: Option<String>,
    link: Option<String>,
}

pub async fn remove(
    State(gateway): Shared,
    Path(id): Path<String>,
    Query(query): Query<RemoveQuery>,
) -> DockerResult<StatusCode> {
    if flag(&query.link) {
        return Err(DockerError::unsupported("link=1", "berth has no links"));
    }
    let _no_anonymous_volumes = flag(&query.v);
    let force = if flag(&query.force) { "?force=true" } else { "" };
    let id = id.trim_start_matches('/');
    gateway
        .berth
        .delete(&format!("/v1/instances/{}{force}", encode(id)))
        .await
        .map_err(|e| DockerError::from(e).for_container(id))?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
pub struct StartQuery {
    #[serde(rename = "detachKeys")]
    detach_keys: Option<String>,
}

pub async fn start(
    State(gateway): Shared,
    Path(id): Path<String>,
    Query(query): Query<StartQuery>,
) -> DockerResult<StatusCode> {
    if query.detach_keys.as_deref().is_some_and(|k| !k.is_empty()) {
        return Err(DockerError::unsupported(
            "detachKeys",
            "berth's attach has no detach keys",
        ));
    }
    let instance = find(&gateway, &id).await?;
    if instance.state.is_active() {
        return Ok(StatusCode::NOT_MODIFIED);
    }
    // `docker run` attached before it started: the output flows from the first byte.
    if crate::streams::start_pending_attach(&gateway, &instance).await? {
        return Ok(StatusCode::NO_CONTENT);
    }
    gateway
        .berth
        .post_empty(&format!("/v1/instances/{}/start", encode(&instance.id)))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
pub struct StopQuery {
    t: Option<String>,
}

/// `?t=` as berth's `timeout` (Docker's -1, wait for ever, is berth's longest: a day).
fn timeout_query(query: &StopQuery) -> DockerResult<String> {
    Ok(match number::<i64>("t", &query.t)? {
        None => String::new(),
        Some(t) if t < 0 => "?timeout=86400".into(),
        Some(t) => format!("?timeout={}", t.min(86_400)),
    })
}

pub async fn stop(
    State(gateway): Shared,
    Path(id): Path<String>,
    Query(query): Query<StopQuery>,
) -> DockerResult<StatusCode> {
    let timeout = timeout_query(&query)?;
    let instance = find(&gateway, &id).await?;
    if !instance.state.is_active() {
        return Ok(StatusCode::NOT_MODIFIED);
    }
    gateway
        .berth
        .post_empty(&format!("/v1/instances/{}/stop{timeout}", encode(&instance.id)))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn restart(
    State(gateway): Shared,
    Path(id): Path<String>,
    Query(query): Query<StopQuery>,
) -> DockerResult<StatusCode> {
    let timeout = timeout_query(&query)?;
    let instance = find(&gateway, &id).await?;
    gateway
        .berth
        .post_empty(&format!("/v1/instances/{}/restart{timeout}", encode(&instance.id)))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
pub struct KillQuery {
    signal: Option<String>,
}

pub async fn kill(
    State(gateway): Shared,
    Path(id): Path<String>,
    Query(query): Query<KillQuery>,
) -> DockerResult<StatusCode> {
    let instance = find(&gateway, &id).await?;
    if !instance.state.is_active() {
        return Err(DockerError::conflict(format!(
            "Container {} is not running",
            instance.name
        )));
    }
    let signal = match query.signal.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        // berth takes upper-case names or numbers.
        Some(signal) => format!("?signal={}", encode(&signal.to_ascii_uppercase())),
        None => String::new(),
    };
    gateway
        .berth
        .post_empty(&format!("/v1/instances/{}/kill{signal}", encode(&instance.id)))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn simple(gateway: &Gateway, id: &str, verb: &str) -> DockerResult<StatusCode> {
    let instance = find(gateway, id).await?;
    gateway
        .berth
        .post_empty(&format!("/v1/instances/{}/{verb}", encode(&instance.id)))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn pause(State(gateway): Shared, Path(id): Path<String>) -> DockerResult<StatusCode> {
    simple(&gateway, &id, "pause").await
}

pub async fn unpause(State(gateway): Shared, Path(id): Path<String>) -> DockerResult<StatusCode> {
    simple(&gateway, &id, "unpause").await
}

#[derive(Debug, Deserialize)]
pub struct WaitQuery {
    condition: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WaitCondition {
    NotRunning,
    NextExit,
    Removed,
}

/// Until the instance's next exit: `docker run` asks before it starts the container, so a
/// container that is not running yet is waited for through its start.
async fn wait_next_exit(gateway: &Gateway, first: Instance) -> DockerResult<WaitResponse> {
    let mut last = first.clone();
    loop {
        if last.state.is_active() {
            return Ok(gateway
                .berth
                .post(&format!("/v1/instances/{}/wait", encode(&last.id)), &())
                .await?);
        }
        if last.finished_at != first.finished_at {
            return Ok(WaitResponse {
                exit_code: last.exit_code.unwrap_or(0),
                oom_killed: last.oom_killed,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        last = match find(gateway, &first.id).await {
            Ok(instance) => instance,
            // Removed (`--rm`) after an exit between two looks.
            Err(e) if e.status == StatusCode::NOT_FOUND => {
                return Ok(WaitResponse {
                    exit_code: last.exit_code.unwrap_or(0),
                    oom_killed: last.oom_killed,
                })
            }
            Err(e) => return Err(e),
        };
    }
}

async fn wait_for(gateway: Arc<Gateway>, instance: Instance, condition: WaitCondition) -> DockerResult<WaitResponse> {
    let berth_condition = match condition {
        WaitCondition::NextExit => return wait_next_exit(&gateway, instance).await,
        WaitCondition::NotRunning => "not-running",
        WaitCondition::Removed => "removed",
    };
    let reply = gateway
        .berth
        .post_empty(&format!(
            "/v1/instances/{}/wait?condition={berth_condition}",
            encode(&instance.id)
        ))
        .await?;
    serde_json::from_slice(&reply).map_err(|e| DockerError::internal(format!("berth's wait answer: {e}")))
}

/// `POST /containers/{id}/wait`: the 200 goes out at once and the body when the wait ends,
/// as Docker does; `docker run` starts the container only once the wait is in place.
pub async fn wait(
    State(gateway): Shared,
    Path(id): Path<String>,
    Query(query): Query<WaitQuery>,
) -> DockerResult<Response> {
    let condition = match query.condition.as_deref().unwrap_or("") {
        "" | "not-running" => WaitCondition::NotRunning,
        "next-exit" => WaitCondition::NextExit,
        "removed" => WaitCondition::Removed,
        other => {
            return Err(DockerError::bad_parameter(format!(
                "invalid condition: \"{other}\" (use not-running, next-exit or removed)"
            )))
        }
    };
    let instance = find(&gateway, &id).await?;
    let (sender, receiver) = tokio::sync::oneshot::channel::<Bytes>();
    tokio::spawn(async move {
        let body = match wait_for(gateway, instance, condition).await {
            Ok(reply) => json!({ "StatusCode": reply.exit_code, "Error": null }),
            Err(e) => json!({ "StatusCode": -1, "Error": { "Message": e.message } }),
        };
        let mut line = serde_json::to_vec(&body).unwrap_or_default();
        line.push(b'\n');
        let _ = sender.send(Bytes::from(line));
    });
    let stream =
        futures_util::stream::once(
            async move { Ok::<_, std::convert::Infallible>(receiver.await.unwrap_or_default()) },
        );
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_default())
}

/// `POST /containers/{id}/update`
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateBody {
    memory: Option<i64>,
    memory_reservation: Option<i64>,
    nano_cpus: Option<i64>,
    cpu_quota: Option<i64>,
    cpu_period: Option<i64>,
    pids_limit: Option<i64>,
    restart_policy: Option<create::RestartPolicyConfig>,
    #[serde(flatten)]
    other: BTreeMap<String, Value>,
}

pub async fn update(State(gateway): Shared, Path(id): Path<String>, body: Bytes) -> DockerResult<Json<Value>> {
    let body: UpdateBody = json_body("update config", &body)?;
    create::refuse_set("", &body.other)?;
    if body
        .restart_policy
        .as_ref()
        .and_then(|p| p.name.as_deref())
        .is_some_and(|n| !n.is_empty())
    {
        return Err(DockerError::unsupported(
            "RestartPolicy in an update",
            "berth sets the restart policy at create",
        ));
    }
    let limits = create::limits(Resources {
        memory: body.memory,
        memory_reservation: body.memory_reservation,
        nano_cpus: body.nano_cpus,
        cpu_quota: body.cpu_quota,
        cpu_period: body.cpu_period,
        pids_limit: body.pids_limit,
    })?;
    if limits.is_empty() {
        return Ok(Json(json!({ "Warnings": [] })));
    }
    let instance = find(&gateway, &id).await?;
    let _: Instance = gateway
        .berth
        .post(
            &format!("/v1/instances/{}/update", encode(&instance.id)),
            &UpdateInstanceRequest { limits },
        )
        .await?;
    Ok(Json(json!({ "Warnings": [] })))
}

pub async fn rename(State(gateway): Shared, Path(id): Path<String>) -> DockerResult<StatusCode> {
    let instance = find(&gateway, &id).await?;
    Err(DockerError::not_implemented(format!(
        "berth cannot rename {}: an instance's name is its DNS name and its key in the cluster's store; remove it and create it again under the new name",
        instance.name
    )))
}

#[derive(Debug, Deserialize)]
pub struct TopQuery {
    ps_args: Option<String>,
}

fn flatten_processes(nodes: &[ProcessNode], rows: &mut Vec<Vec<String>>) {
    for node in nodes {
        rows.push(vec![
            node.user.clone(),
            node.pid.to_string(),
            node.ppid.to_string(),
            format!("{:.1}", node.cpu_percent),
            (node.rss_bytes / 1024).to_string(),
            node.state.clone(),
            node.command.clone(),
        ]);
        flatten_processes(&node.children, rows);
    }
}

pub async fn top(
    State(gateway): Shared,
    Path(id): Path<String>,
    Query(query): Query<TopQuery>,
) -> DockerResult<Json<Value>> {
    if query.ps_args.as_deref().is_some_and(|a| !a.is_empty()) {
        return Err(DockerError::unsupported(
            "ps_args",
            "berth lists processes from /proc, not by running ps",
        ));
    }
    let instance = find(&gateway, &id).await?;
    if !instance.state.is_active() {
        return Err(DockerError::conflict(format!(
            "Container {} is not running",
            instance.name
        )));
    }
    let top: TopResponse = gateway
        .berth
        .get(&format!("/v1/instances/{}/top", encode(&instance.id)))
        .await?;
    let mut rows = Vec::new();
    flatten_processes(&top.processes, &mut rows);
    Ok(Json(json!({
        "Titles": ["UID", "PID", "PPID", "%CPU", "RSS", "STAT", "CMD"],
        "Processes": rows,
    })))
}

#[derive(Debug, Deserialize)]
pub struct StatsQuery {
    stream: Option<String>,
    #[serde(rename = "one-shot")]
    one_shot: Option<String>,
}

/// Docker's stats document from two of berth's samples. The "system" CPU time is wall time
/// times the host's CPUs, so Docker's formula (CPU delta / system delta x CPUs) gives the
/// same percentage berth's own `stats` shows.
fn stats_document(instance: &Instance, host: &HostInfo, now: &InstanceStats, before: Option<&InstanceStats>) -> Value {
    let cpus = host.cpus.max(1);
    let cpu = |sample: Option<&InstanceStats>| match sample {
        None => json!({ "cpu_usage": { "total_usage": 0 }, "system_cpu_usage": 0, "online_cpus": cpus }),
        Some(s) => json!({
            "cpu_usage": { "total_usage": s.cpu_usage_ns, "usage_in_kernelmode": 0, "usage_in_usermode": 0 },
            "system_cpu_usage": (s.sampled_at_ms.max(0) as u64).saturating_mul(1_000_000).saturating_mul(cpus),
            "online_cpus": cpus,
            "throttling_data": { "periods": 0, "throttled_periods": 0, "throttled_time": 0 },
        }),
    };
    let time = |sample: Option<&InstanceStats>| {
        sample
            .and_then(|s| chrono::DateTime::from_timestamp_millis(s.sampled_at_ms))
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
            .unwrap_or_else(|| "0001-01-01T00:00:00Z".into())
    };
    json!({
        "read": time(Some(now)),
        "preread": time(before),
        "name": format!("/{}", instance.name),
        "id": instance.id,
        "pids_stats": { "current": now.pids_current, "limit": now.pids_limit },
        "num_procs": 0,
        "blkio_stats": {},
        "storage_stats": {},
        "cpu_stats": cpu(Some(now)),
        "precpu_stats": cpu(before),
        "memory_stats": {
            "usage": now.memory_usage_bytes,
            "limit": now.memory_limit_bytes.unwrap_or(host.memory_bytes),
            "stats": {},
        },
        "networks": {},
    })
}

pub async fn stats(
    State(gateway): Shared,
    Path(id): Path<String>,
    Query(query): Query<StatsQuery>,
) -> DockerResult<Response> {
    let instance = find(&gateway, &id).await?;
    let host: HostInfo = gateway.berth.get("/v1/info").await?;
    let path = format!("/v1/instances/{}/stats", encode(&instance.id));
    // Docker streams unless told `stream=false`.
    let streaming = query.stream.is_none() || flag(&query.stream);
    let first: InstanceStats = gateway.berth.get(&path).await?;
    if !streaming {
        let before = if flag(&query.one_shot) {
            None
        } else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            Some(first.clone())
        };
        let now: InstanceStats = match before {
            Some(_) => gateway.berth.get(&path).await?,
            None => first,
        };
        return Ok(Json(stats_document(&instance, &host, &now, before.as_ref())).into_response());
    }
    let (sender, receiver) = tokio::sync::mpsc::channel::<Bytes>(4);
    tokio::spawn(async move {
        let mut before: Option<InstanceStats> = None;
        let mut now = first;
        loop {
            let mut line =
                serde_json::to_vec(&stats_document(&instance, &host, &now, before.as_ref())).unwrap_or_default();
            line.push(b'\n');
            if sender.send(Bytes::from(line)).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            match gateway.berth.get::<InstanceStats>(&path).await {
                Ok(next) => before = Some(std::mem::replace(&mut now, next)),
                // Stopped or removed: the stream ends, as Docker's does.
                Err(_) => return,
            }
        }
    });
    Ok(crate::streams::body_response("application/json", receiver))
}

/// For `system/df` and the events' container names: every instance.
pub(crate) async fn all_instances(gateway: &Gateway) -> DockerResult<Vec<Instance>> {
    Ok(gateway.berth.get("/v1/instances?all=true").await?)
}

/// Counts for `info`.
pub(crate) fn count_states(instances: &[Instance]) -> (usize, usize, usize) {
    let running = instances.iter().filter(|i| i.state == InstanceState::Running).count();
    let paused = instances.iter().filter(|i| i.state == InstanceState::Paused).count();
    (running, paused, instances.len() - running - paused)
}
