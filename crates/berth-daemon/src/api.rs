//! The REST API (version 1) on the daemon's unix socket. Handlers translate HTTP to engine
//! calls and nothing more; attach streams upgrade the connection and then copy bytes
//! between the client and the instance's supervisor.

use std::convert::Infallible;
use std::path::Path as FsPath;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use berth_image::RegistryOptions;
use berth_model::api::*;
use berth_model::image::ImageRecord;
use berth_model::network::Network;
use berth_model::node::{Node, Schedulability};
use berth_model::project::Project;
use berth_model::stack::StackRecord;
use berth_model::trust::{AuditEntry, TrustAddRequest, TrustAddResponse, TrustedClient};
use berth_model::volume::Volume;
use berth_model::Instance;
use bytes::Bytes;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api_doc::*;
use crate::engine::Engine;
use crate::error::{EngineError, EngineResult};
use crate::extract::{parse_json, require_json, Json, Query};

type Shared = State<Arc<Engine>>;

/// Every route of the API with its description: registering a handler and documenting it
/// is one `routes!` call, so the served description cannot miss an endpoint.
fn routes() -> OpenApiRouter<Arc<Engine>> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(ping))
        .routes(routes!(info))
        .routes(routes!(openapi))
        .routes(routes!(events))
        .routes(routes!(tree))
        .routes(routes!(list_types))
        .routes(routes!(list_nodes))
        .routes(routes!(inspect_node))
        .routes(routes!(cordon_node))
        .routes(routes!(uncordon_node))
        .routes(routes!(drain_node))
        .routes(routes!(rebalance_cluster))
        .routes(routes!(list_networks, create_network))
        .routes(routes!(remove_network))
        .routes(routes!(list_volumes, create_volume))
        .routes(routes!(inspect_volume, remove_volume))
        .routes(routes!(snapshot_volume))
        .routes(routes!(delete_snapshot))
        .routes(routes!(restore_volume))
        .routes(routes!(list_instances, create_instance))
        .routes(routes!(inspect_instance, remove_instance))
        .routes(routes!(start_instance))
        .routes(routes!(stop_instance))
        .routes(routes!(restart_instance))
        .routes(routes!(migrate_instance))
        .routes(routes!(kill_instance))
        .routes(routes!(pause_instance))
        .routes(routes!(unpause_instance))
        .routes(routes!(wait_instance))
        .routes(routes!(instance_logs))
        .routes(routes!(exec_instance))
        .routes(routes!(update_instance))
        .routes(routes!(instance_stats))
        .routes(routes!(all_stats))
        .routes(routes!(instance_top))
        .routes(routes!(attach_instance))
        .routes(routes!(export_instance, export_package))
        .routes(routes!(snapshot_instance))
        .routes(routes!(delete_instance_snapshot))
        .routes(routes!(restore_instance))
        .routes(routes!(import_vm))
        .routes(routes!(list_images, remove_image))
        .routes(routes!(inspect_image))
        .routes(routes!(import_image))
        .routes(routes!(pull_image))
        .routes(routes!(push_image))
        .routes(routes!(tag_image))
        .routes(routes!(list_projects, create_project))
        .routes(routes!(remove_project))
        .routes(routes!(list_trust, add_trust))
        .routes(routes!(remove_trust))
        .routes(routes!(audit_log))
        .routes(routes!(list_stacks))
        .routes(routes!(inspect_stack, put_stack, remove_stack))
}

/// The API's OpenAPI description (what `GET /v1/openapi.json` serves and `berth openapi`
/// prints), made from the routes themselves.
pub fn description() -> utoipa::openapi::OpenApi {
    routes().into_openapi()
}

pub fn router(engine: Arc<Engine>) -> Router {
    let (router, _) = routes().split_for_parts();
    router
        .route("/metrics", axum::routing::get(crate::metrics::serve))
        .merge(crate::dashboard::instance_routes())
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            engine.clone(),
            crate::peers::route_to_owner,
        ))
        // A request's time includes its forwarding to the instance's node.
        .layer(axum::middleware::from_fn(crate::metrics::time_requests))
        // Outermost: a bug in a handler answers 500 and is logged, rather than dropping the
        // client's connection without a word.
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(handler_panicked))
        .with_state(engine)
}

fn handler_panicked(panic: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    let what = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)");
    tracing::error!(panic = %what, "an API handler panicked; the request was not completed");
    EngineError::internal(format!(
        "berth hit a bug handling this request ({what}); it was not completed, the daemon goes on serving: please report it"
    ))
    .into_response()
}

async fn not_found() -> EngineError {
    EngineError::not_found("no such API endpoint; GET /v1/openapi.json describes the API")
}

#[utoipa::path(
    get, path = "/v1/_ping",
    responses((status = 200, description = "The daemon is serving", body = String, content_type = "text/plain"))
)]
async fn ping() -> &'static str {
    "OK"
}

#[utoipa::path(
    get, path = "/v1/info", responses((status = 200, body = HostInfo), InternalError)
)]
async fn info(State(engine): Shared) -> EngineResult<Json<HostInfo>> {
    Ok(Json(engine.info().await?))
}

#[utoipa::path(
    get, path = "/v1/openapi.json",
    responses((status = 200, body = Object, description = "This description (OpenAPI 3.1)"))
)]
async fn openapi() -> Response {
    static DESCRIPTION: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
    let json = DESCRIPTION.get_or_init(|| serde_json::to_vec(&description()).unwrap_or_default().into());
    ([(header::CONTENT_TYPE, "application/json")], json.clone()).into_response()
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct EventsParams {
    /// End the stream after this many seconds (at most a day); without it the stream lasts
    /// until the client goes away.
    #[param(maximum = 86400)]
    timeout: Option<u64>,
}

/// Streams the event feed as JSON lines until the client goes away or the timeout passes.
#[utoipa::path(
    get, path = "/v1/events", params(EventsParams),
    responses((status = 200, body = Event, content_type = "application/x-ndjson",
               description = "JSON lines, one event each, until the client goes away or `timeout` passes"),
              BadRequest)
)]
async fn events(State(engine): Shared, Query(params): Query<EventsParams>) -> EngineResult<Response> {
    let deadline = match params.timeout {
        Some(secs) if secs > MAX_EVENTS_TIMEOUT_SECS => {
            return Err(EngineError::invalid(
                "timeout",
                format!("timeout: {secs} seconds is more than a day ({MAX_EVENTS_TIMEOUT_SECS})"),
            ))
        }
        Some(secs) => Some(tokio::time::Instant::now() + std::time::Duration::from_secs(secs)),
        None => None,
    };
    let mut receiver = engine.subscribe();
    let stream = async_stream(move |sender| async move {
        loop {
            let next = match deadline {
                Some(deadline) => match tokio::time::timeout_at(deadline, receiver.recv()).await {
                    Ok(next) => next,
                    Err(_) => return,
                },
                None => receiver.recv().await,
            };
            match next {
                Ok(event) => {
                    let mut line = serde_json::to_vec(&event).unwrap_or_default();
                    line.push(b'\n');
                    if sender.send(Bytes::from(line)).await.is_err() {
                        return;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return,
            }
        }
    });
    Ok(json_lines_response(stream))
}

const MAX_EVENTS_TIMEOUT_SECS: u64 = 86_400;

#[utoipa::path(
    get, path = "/v1/types", responses((status = 200, body = [berth_model::types::InstanceType]))
)]
async fn list_types(State(engine): Shared) -> Json<Vec<berth_model::types::InstanceType>> {
    Json(engine.types().to_vec())
}

#[utoipa::path(
    get, path = "/v1/networks", responses((status = 200, body = [Network]), InternalError)
)]
async fn list_networks(State(engine): Shared) -> EngineResult<Json<Vec<Network>>> {
    Ok(Json(engine.networks.list().await?))
}

#[utoipa::path(
    post, path = "/v1/networks", request_body = CreateNetworkRequest,
    responses((status = 201, body = Network), BadRequest, Conflict, UnsupportedMediaType, InternalError)
)]
async fn create_network(
    State(engine): Shared,
    Json(request): Json<CreateNetworkRequest>,
) -> EngineResult<(StatusCode, Json<Network>)> {
    let network = engine
        .networks
        .create(&request.name, request.subnet.as_deref(), request.internal)
        .await?;
    Ok((StatusCode::CREATED, Json(network)))
}

#[utoipa::path(
    delete, path = "/v1/networks/{name}", params(NetworkPath),
    responses((status = 204, description = "Removed"), NotFound, Conflict, InternalError)
)]
async fn remove_network(State(engine): Shared, Path(name): Path<String>) -> EngineResult<StatusCode> {
    engine.remove_network(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get, path = "/v1/projects", responses((status = 200, body = [Project]), InternalError)
)]
async fn list_projects(State(engine): Shared) -> EngineResult<Json<Vec<Project>>> {
    Ok(Json(engine.projects().await?))
}

#[utoipa::path(
    post, path = "/v1/projects", request_body = Project,
    responses((status = 201, body = Project), BadRequest, Conflict, UnsupportedMediaType, InternalError)
)]
async fn create_project(
    State(engine): Shared,
    Json(body): Json<serde_json::Value>,
) -> EngineResult<(StatusCode, Json<Project>)> {
    // serde takes a list for a struct too (`"quotas": []`); the API takes what it documents.
    if body.get("quotas").is_some_and(|q| !q.is_object()) {
        return Err(EngineError::invalid(
            "quotas",
            "give an object: {\"instances\": N, \"cpus\": X, \"memory_bytes\": N, \"disk_bytes\": N}",
        ));
    }
    let mut body = body;
    if let Some(quotas) = body.get_mut("quotas").and_then(|q| q.as_object_mut()) {
        for key in ["instances", "memory_bytes", "disk_bytes"] {
            if let Some(value) = quotas.get_mut(key) {
                // JSON Schema counts 1203.0 as an integer (a client may write it so); serde
                // does not: take a whole, non-negative float as the integer it is.
                let whole = value
                    .as_f64()
                    .filter(|f| value.is_f64() && f.fract() == 0.0 && *f >= 0.0 && *f < u64::MAX as f64);
                if let Some(number) = whole {
                    *value = serde_json::Value::from(number as u64);
                }
            }
        }
    }
    let project: Project =
        serde_json::from_value(body).map_err(|e| EngineError::invalid("body", format!("not a project: {e}")))?;
    Ok((StatusCode::CREATED, Json(engine.create_project(project).await?)))
}

#[utoipa::path(
    delete, path = "/v1/projects/{name}", params(ProjectPath),
    responses((status = 204, description = "Removed (it had no instances)"), NotFound, Conflict, InternalError)
)]
async fn remove_project(State(engine): Shared, Path(name): Path<String>) -> EngineResult<StatusCode> {
    engine.remove_project(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get, path = "/v1/trust", responses((status = 200, body = [TrustedClient]), InternalError)
)]
async fn list_trust(State(engine): Shared) -> EngineResult<Json<Vec<TrustedClient>>> {
    Ok(Json(engine.trusted_clients().await?))
}

#[utoipa::path(
    post, path = "/v1/trust", request_body = TrustAddRequest,
    responses((status = 201, description = "Trusted, or a join token made", body = TrustAddResponse),
              BadRequest, NotFound, Conflict, UnsupportedMediaType, InternalError)
)]
async fn add_trust(
    State(engine): Shared,
    Json(request): Json<TrustAddRequest>,
) -> EngineResult<(StatusCode, Json<TrustAddResponse>)> {
    Ok((StatusCode::CREATED, Json(engine.add_trust(request).await?)))
}

#[utoipa::path(
    delete, path = "/v1/trust/{name}", params(TrustPath),
    responses((status = 204, description = "No longer trusted"), NotFound, InternalError)
)]
async fn remove_trust(State(engine): Shared, Path(name): Path<String>) -> EngineResult<StatusCode> {
    engine.remove_trust(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct AuditParams {
    /// How many of the latest entries (default 100).
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<usize>,
}

#[utoipa::path(
    get, path = "/v1/audit", params(AuditParams),
    responses((status = 200, description = "This node's latest mutating requests, oldest first", body = [AuditEntry]),
              BadRequest, InternalError)
)]
async fn audit_log(State(engine): Shared, Query(params): Query<AuditParams>) -> EngineResult<Json<Vec<AuditEntry>>> {
    let limit = params.limit.unwrap_or(100);
    if !(1..=10_000).contains(&limit) {
        return Err(EngineError::invalid("limit", "give 1 to 10000 entries"));
    }
    let state_dir = engine.config.state_dir.clone();
    let entries = tokio::task::spawn_blocking(move || crate::audit::read_last(&state_dir, limit))
        .await
        .map_err(|e| EngineError::internal(e.to_string()))?
        .map_err(|e| EngineError::internal(format!("reading the audit log: {e}")))?;
    Ok(Json(entries))
}

#[utoipa::path(
    get, path = "/v1/stacks", responses((status = 200, body = [StackRecord]), InternalError)
)]
async fn list_stacks(State(engine): Shared) -> EngineResult<Json<Vec<StackRecord>>> {
    Ok(Json(engine.stacks().await?))
}

#[utoipa::path(
    get, path = "/v1/stacks/{name}", params(StackPath),
    responses((status = 200, body = StackRecord), BadRequest, NotFound, InternalError)
)]
async fn inspect_stack(State(engine): Shared, Path(name): Path<String>) -> EngineResult<Json<StackRecord>> {
    Ok(Json(engine.stack(&name).await?))
}

#[utoipa::path(
    put, path = "/v1/stacks/{name}", params(StackPath), request_body = StackRecord,
    responses((status = 200, description = "Kept as the stack's desired state", body = StackRecord),
              BadRequest, UnsupportedMediaType, InternalError)
)]
async fn put_stack(
    State(engine): Shared,
    Path(name): Path<String>,
    Json(record): Json<StackRecord>,
) -> EngineResult<Json<StackRecord>> {
    Ok(Json(engine.put_stack(&name, record).await?))
}

#[utoipa::path(
    delete, path = "/v1/stacks/{name}", params(StackPath),
    responses((status = 204, description = "Forgotten (its instances are not touched)"), BadRequest, NotFound, InternalError)
)]
async fn remove_stack(State(engine): Shared, Path(name): Path<String>) -> EngineResult<StatusCode> {
    engine.remove_stack(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get, path = "/v1/nodes", responses((status = 200, body = [Node]), InternalError, ServiceUnavailable)
)]
async fn list_nodes(State(engine): Shared) -> EngineResult<Json<Vec<Node>>> {
    Ok(Json(engine.nodes().await?))
}

#[utoipa::path(
    get, path = "/v1/nodes/{name}", params(NodePath),
    responses((status = 200, body = Node), NotFound, InternalError, ServiceUnavailable)
)]
async fn inspect_node(State(engine): Shared, Path(name): Path<String>) -> EngineResult<Json<Node>> {
    Ok(Json(engine.node(&name).await?))
}

#[utoipa::path(
    post, path = "/v1/nodes/{name}/cordon", params(NodePath),
    responses((status = 200, description = "New instances go elsewhere", body = Node), NotFound, Conflict, InternalError, ServiceUnavailable)
)]
async fn cordon_node(State(engine): Shared, Path(name): Path<String>) -> EngineResult<Json<Node>> {
    Ok(Json(
        engine
            .set_node_schedulability(&name, Schedulability::Cordoned, None)
            .await?,
    ))
}

#[utoipa::path(
    post, path = "/v1/nodes/{name}/uncordon", params(NodePath),
    responses((status = 200, description = "The node takes new instances again", body = Node), NotFound, Conflict, InternalError, ServiceUnavailable)
)]
async fn uncordon_node(State(engine): Shared, Path(name): Path<String>) -> EngineResult<Json<Node>> {
    Ok(Json(
        engine
            .set_node_schedulability(&name, Schedulability::Schedulable, None)
            .await?,
    ))
}

#[utoipa::path(
    post, path = "/v1/nodes/{name}/drain", params(NodePath, DrainParams),
    responses((status = 200, description = "Cordoned and marked to be emptied: the node moves its instances away and ends cordoned", body = Node),
              BadRequest, NotFound, Conflict, InternalError, ServiceUnavailable)
)]
async fn drain_node(
    State(engine): Shared,
    Path(name): Path<String>,
    Query(params): Query<DrainParams>,
) -> EngineResult<Json<Node>> {
    let parallel = params.parallel.unwrap_or(1);
    if !(1..=berth_model::node::MAX_DRAIN_PARALLEL).contains(&parallel) {
        return Err(EngineError::invalid(
            "parallel",
            format!("--parallel: give 1 to {}", berth_model::node::MAX_DRAIN_PARALLEL),
        ));
    }
    Ok(Json(
        engine
            .set_node_schedulability(&name, Schedulability::Draining, Some(parallel))
            .await?,
    ))
}

#[utoipa::path(
    post, path = "/v1/cluster/rebalance", params(RebalanceParams),
    responses((status = 200, description = "The plan and, unless a dry run, what each move did", body = RebalanceReport),
              BadRequest, Conflict, InternalError, ServiceUnavailable)
)]
async fn rebalance_cluster(
    State(engine): Shared,
    Query(params): Query<RebalanceParams>,
) -> EngineResult<Json<RebalanceReport>> {
    Ok(Json(
        engine
            .rebalance(params.dry_run.unwrap_or(false), params.threshold_percent)
            .await?,
    ))
}

#[utoipa::path(
    get, path = "/v1/volumes", responses((status = 200, body = [Volume]), InternalError)
)]
async fn list_volumes(State(engine): Shared) -> EngineResult<Json<Vec<Volume>>> {
    Ok(Json(engine.volumes.list().await?))
}

#[utoipa::path(
    post, path = "/v1/volumes", request_body = CreateVolumeRequest,
    responses((status = 201, body = Volume), BadRequest, Conflict, UnsupportedMediaType, InternalError, BadGateway)
)]
async fn create_volume(
    State(engine): Shared,
    Json(request): Json<CreateVolumeRequest>,
) -> EngineResult<(StatusCode, Json<Volume>)> {
    let volume = engine
        .volumes
        .create(
            &request.name,
            request.size_bytes,
            request.driver.as_deref(),
            &request.options,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(volume)))
}

#[utoipa::path(
    get, path = "/v1/volumes/{name}", params(VolumePath),
    responses((status = 200, body = Volume), NotFound, InternalError)
)]
async fn inspect_volume(State(engine): Shared, Path(name): Path<String>) -> EngineResult<Json<Volume>> {
    Ok(Json(engine.volumes.get(&name).await?))
}

#[utoipa::path(
    delete, path = "/v1/volumes/{name}", params(VolumePath, RemoveVolumeParams),
    responses((status = 204, description = "Removed"), BadRequest, NotFound, Conflict, InternalError, BadGateway)
)]
async fn remove_volume(
    State(engine): Shared,
    Path(name): Path<String>,
    Query(params): Query<RemoveVolumeParams>,
) -> EngineResult<StatusCode> {
    engine.remove_volume(&name, params.force).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post, path = "/v1/volumes/{name}/snapshots", params(VolumePath), request_body = SnapshotRequest,
    responses((status = 200, body = Volume), BadRequest, NotFound, Conflict, UnsupportedMediaType, InternalError, BadGateway)
)]
async fn snapshot_volume(
    State(engine): Shared,
    Path(name): Path<String>,
    Json(request): Json<SnapshotRequest>,
) -> EngineResult<Json<Volume>> {
    Ok(Json(engine.snapshot_volume(&name, &request.name).await?))
}

#[utoipa::path(
    post, path = "/v1/volumes/{name}/restore", params(VolumePath), request_body = SnapshotRequest,
    responses((status = 200, body = Volume), BadRequest, NotFound, Conflict, UnsupportedMediaType, InternalError, BadGateway)
)]
async fn restore_volume(
    State(engine): Shared,
    Path(name): Path<String>,
    Json(request): Json<SnapshotRequest>,
) -> EngineResult<Json<Volume>> {
    Ok(Json(engine.restore_volume(&name, &request.name).await?))
}

#[utoipa::path(
    delete, path = "/v1/volumes/{name}/snapshots/{snapshot}", params(VolumePath, SnapshotPath),
    responses((status = 200, body = Volume), NotFound, Conflict, InternalError, BadGateway)
)]
async fn delete_snapshot(
    State(engine): Shared,
    Path((name, snapshot)): Path<(String, String)>,
) -> EngineResult<Json<Volume>> {
    Ok(Json(engine.delete_volume_snapshot(&name, &snapshot).await?))
}

#[utoipa::path(
    post, path = "/v1/instances/{id}/snapshots", params(InstancePath), request_body = SnapshotRequest,
    responses((status = 200, body = Instance), BadRequest, NotFound, Conflict, UnsupportedMediaType, InternalError)
)]
async fn snapshot_instance(
    State(engine): Shared,
    Path(id): Path<String>,
    Json(request): Json<SnapshotRequest>,
) -> EngineResult<Json<Instance>> {
    Ok(Json(engine.snapshot_instance(&id, &request.name).await?))
}

#[utoipa::path(
    post, path = "/v1/instances/{id}/restore", params(InstancePath), request_body = SnapshotRequest,
    responses((status = 200, body = Instance), BadRequest, NotFound, Conflict, UnsupportedMediaType, InternalError)
)]
async fn restore_instance(
    State(engine): Shared,
    Path(id): Path<String>,
    Json(request): Json<SnapshotRequest>,
) -> EngineResult<Json<Instance>> {
    Ok(Json(engine.restore_instance(&id, &request.name).await?))
}

#[utoipa::path(
    delete, path = "/v1/instances/{id}/snapshots/{snapshot}", params(InstancePath, SnapshotPath),
    responses((status = 200, body = Instance), NotFound, Conflict, InternalError)
)]
async fn delete_instance_snapshot(
    State(engine): Shared,
    Path((id, snapshot)): Path<(String, String)>,
) -> EngineResult<Json<Instance>> {
    Ok(Json(engine.delete_instance_snapshot(&id, &snapshot).await?))
}

#[utoipa::path(
    get, path = "/v1/tree", responses((status = 200, body = [TreeEntry]), InternalError)
)]
async fn tree(State(engine): Shared) -> EngineResult<Json<Vec<TreeEntry>>> {
    Ok(Json(engine.tree().await?))
}

#[utoipa::path(
    get, path = "/v1/instances", params(ListParams),
    responses((status = 200, body = [Instance]), BadRequest, InternalError)
)]
async fn list_instances(State(engine): Shared, Query(params): Query<ListParams>) -> EngineResult<Json<Vec<Instance>>> {
    Ok(Json(engine.list(params.all).await?))
}

#[utoipa::path(
    post, path = "/v1/instances", request_body = CreateInstanceRequest,
    responses((status = 201, body = CreatedResponse), BadRequest, NotFound, Conflict, UnsupportedMediaType, InternalError)
)]
async fn create_instance(
    State(engine): Shared,
    headers: axum::http::HeaderMap,
    Json(request): Json<CreateInstanceRequest>,
) -> EngineResult<(StatusCode, Json<CreatedResponse>)> {
    let placement = crate::peers::placement_reason(&headers);
    Ok((StatusCode::CREATED, Json(engine.create(request, placement).await?)))
}

#[utoipa::path(
    get, path = "/v1/instances/{id}", params(InstancePath),
    responses((status = 200, body = Instance), NotFound, Conflict, InternalError)
)]
async fn inspect_instance(State(engine): Shared, Path(id): Path<String>) -> EngineResult<Json<Instance>> {
    Ok(Json(engine.find_anywhere(&id).await?))
}

#[utoipa::path(
    delete, path = "/v1/instances/{id}", params(InstancePath, RemoveParams),
    responses((status = 204, description = "Removed"), BadRequest, NotFound, Conflict, InternalError)
)]
async fn remove_instance(
    State(engine): Shared,
    Path(id): Path<String>,
    Query(params): Query<RemoveParams>,
) -> EngineResult<StatusCode> {
    engine.remove(&id, params.force).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Copies an attach session both ways until the supervisor ends it.
async fn proxy_attach(client: impl AsyncRead + AsyncWrite, supervisor: UnixStream) {
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut supervisor_read, mut supervisor_write) = supervisor.into_split();
    {
        let upstream = tokio::io::copy(&mut client_read, &mut supervisor_write);
        let downstream = tokio::io::copy(&mut supervisor_read, &mut client_write);
        tokio::pin!(upstream, downstream);
        tokio::select! {
            _ = &mut downstream => {}
            _ = &mut upstream => {
                // The client stopped sending; keep delivering output until the session ends.
                let _ = downstream.await;
            }
        }
    }
    let _ = client_write.shutdown().await;
}

/// Answers 101 and hands the upgraded connection to `proxy_attach`.
fn upgrade_to_attach(request: &mut Request, supervisor: UnixStream) -> Response {
    let on_upgrade = hyper::upgrade::on(request);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => proxy_attach(TokioIo::new(upgraded), supervisor).await,
            Err(e) => tracing::debug!(error = %e, "attach upgrade failed"),
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "berth-attach")
        .body(Body::empty())
        .unwrap_or_default()
}

/// Whether the request asks for an attach stream: `Upgrade: berth-attach` (any other
/// protocol is refused).
fn wants_upgrade(request: &Request) -> EngineResult<bool> {
    match request.headers().get(header::UPGRADE) {
        None => Ok(false),
        Some(value) if value.as_bytes().eq_ignore_ascii_case(b"berth-attach") => Ok(true),
        Some(_) => Err(EngineError::invalid(
            "upgrade",
            "the Upgrade header must be `berth-attach`, the only protocol berth speaks",
        )),
    }
}

/// `Upgrade: berth-attach` where the attach stream is optional.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // documents the header; `wants_upgrade` reads it
struct UpgradeHeader {
    /// `berth-attach` to get an attach stream (101).
    #[param(rename = "Upgrade", inline, value_type = AttachUpgrade, required = false)]
    upgrade: Option<AttachUpgrade>,
}

/// `Upgrade: berth-attach` where only an attach stream is answered.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // documents the header; `wants_upgrade` reads it
struct RequiredUpgradeHeader {
    #[param(rename = "Upgrade", inline)]
    upgrade: AttachUpgrade,
}

#[utoipa::path(
    post, path = "/v1/instances/{id}/start", params(InstancePath, StartParams, UpgradeHeader),
    responses((status = 200, body = Instance),
              (status = 101, description = "Attach stream (with attach=true and `Upgrade: berth-attach`)"),
              BadRequest, NotFound, Conflict, InternalError)
)]
async fn start_instance(
    State(engine): Shared,
    Path(id): Path<String>,
    Query(params): Query<StartParams>,
    mut request: Request,
) -> Result<Response, EngineError> {
    let attach = params.attach;
    let upgrade = wants_upgrade(&request)?;
    if attach && !upgrade {
        return Err(EngineError::invalid(
            "attach",
            "attach=true needs an `Upgrade: berth-attach` request",
        ));
    }
    let (instance, stream) = engine.start(&id, attach).await?;
    match stream {
        Some(stream) => Ok(upgrade_to_attach(&mut request, stream)),
        None => Ok(Json(instance).into_response()),
    }
}

#[utoipa::path(
    post, path = "/v1/instances/{id}/stop", params(InstancePath, StopParams),
    responses((status = 200, body = Instance), BadRequest, NotFound, Conflict, InternalError)
)]
async fn stop_instance(
    State(engine): Shared,
    Path(id): Path<String>,
    Query(params): Query<StopParams>,
) -> EngineResult<Json<Instance>> {
    Ok(Json(engine.stop(&id, params.timeout).await?))
}

#[utoipa::path(
    post, path = "/v1/instances/{id}/restart", params(InstancePath, StopParams),
    responses((status = 200, body = Instance), BadRequest, NotFound, Conflict, InternalError)
)]
async fn restart_instance(
    State(engine): Shared,
    Path(id): Path<String>,
    Query(params): Query<StopParams>,
) -> EngineResult<Json<Instance>> {
    Ok(Json(engine.restart(&id, params.timeout).await?))
}

#[utoipa::path(
    post, path = "/v1/instances/{id}/migrate", params(InstancePath), request_body = MigrateRequest,
    responses((status = 200, body = MigrationEvent, content_type = "application/x-ndjson",
               description = "JSON lines: the target, progress every 200 ms, and last `finished` or `failed` (closing the connection cancels)"),
              BadRequest, NotFound, Conflict, UnsupportedMediaType)
)]
async fn migrate_instance(
    State(engine): Shared,
    Path(id): Path<String>,
    Json(request): Json<MigrateRequest>,
) -> EngineResult<Response> {
    // Refusals that need no work come back as errors, before the stream starts.
    let instance = engine.find(&id).await?;
    if let Some(reason) = crate::migration::move_refusal(&instance, &request) {
        return Err(EngineError::conflict(reason));
    }
    let (sender, receiver) = mpsc::channel::<Bytes>(64);
    let (events, mut relay) = mpsc::channel::<MigrationEvent>(64);
    let line = |event: &MigrationEvent| {
        let mut bytes = serde_json::to_vec(event).unwrap_or_default();
        bytes.push(b'\n');
        Bytes::from(bytes)
    };
    let job_sender = sender.clone();
    tokio::spawn(async move {
        let job = tokio::spawn(async move {
            let outcome = engine.migrate(&id, &request, &events).await;
            drop(events);
            outcome
        });
        // Progress goes out as it comes; a client that left closes `relay` (and so cancels).
        while let Some(event) = relay.recv().await {
            if job_sender.send(line(&event)).await.is_err() {
                relay.close();
            }
        }
        let last = match job.await {
            Ok(Ok((from, to, result))) => MigrationEvent::Finished { from, to, result },
            Ok(Err(e)) => MigrationEvent::Failed { message: e.message },
            Err(e) => MigrationEvent::Failed {
                message: format!("the migration task ended: {e}"),
            },
        };
        let _ = job_sender.send(line(&last)).await;
    });
    drop(sender);
    Ok(json_lines_response(receiver))
}

#[utoipa::path(
    post, path = "/v1/instances/{id}/kill", params(InstancePath, KillParams),
    responses((status = 204, description = "Signalled"), BadRequest, NotFound, Conflict, InternalError)
)]
async fn kill_instance(
    State(engine): Shared,
    Path(id): Path<String>,
    Query(params): Query<KillParams>,
) -> EngineResult<StatusCode> {
    let signal = params.signal.as_deref().unwrap_or("KILL");
    berth_model::signal::parse_api_signal(signal).map_err(|m| EngineError::invalid("signal", m))?;
    engine.kill(&id, signal).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post, path = "/v1/instances/{id}/pause", params(InstancePath),
    responses((status = 200, body = Instance), NotFound, Conflict, InternalError)
)]
async fn pause_instance(State(engine): Shared, Path(id): Path<String>) -> EngineResult<Json<Instance>> {
    Ok(Json(engine.pause(&id).await?))
}

#[utoipa::path(
    post, path = "/v1/instances/{id}/unpause", params(InstancePath),
    responses((status = 200, body = Instance), NotFound, Conflict, InternalError)
)]
async fn unpause_instance(State(engine): Shared, Path(id): Path<String>) -> EngineResult<Json<Instance>> {
    Ok(Json(engine.unpause(&id).await?))
}

#[utoipa::path(
    post, path = "/v1/instances/{id}/wait", params(InstancePath, WaitParams),
    responses((status = 200, body = WaitResponse), BadRequest, NotFound, Conflict, InternalError)
)]
async fn wait_instance(
    State(engine): Shared,
    Path(id): Path<String>,
    Query(params): Query<WaitParams>,
) -> EngineResult<Json<WaitResponse>> {
    Ok(Json(engine.wait(&id, params.condition).await?))
}

/// A body fed by a task through a channel.
fn async_stream<F, Fut>(producer: F) -> mpsc::Receiver<Bytes>
where
    F: FnOnce(mpsc::Sender<Bytes>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (sender, receiver) = mpsc::channel(64);
    tokio::spawn(producer(sender));
    receiver
}

fn body_from(receiver: mpsc::Receiver<Bytes>) -> Body {
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver
            .recv()
            .await
            .map(|bytes| (Ok::<_, Infallible>(bytes), receiver))
    });
    Body::from_stream(stream)
}

fn json_lines_response(receiver: mpsc::Receiver<Bytes>) -> Response {
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(body_from(receiver))
        .unwrap_or_default()
}

#[utoipa::path(
    get, path = "/v1/instances/{id}/logs", params(InstancePath, LogsParams),
    responses((status = 200, body = Vec<u8>, content_type = "application/vnd.berth.stream",
               description = "Attach-stream frames (stdout 1, stderr 2); with `follow`, until the instance stops"),
              BadRequest, NotFound, Conflict, InternalError)
)]
async fn instance_logs(
    State(engine): Shared,
    Path(id): Path<String>,
    Query(params): Query<LogsParams>,
) -> EngineResult<Response> {
    let instance = engine.find(&id).await?;
    let path = engine.log_path(&instance);
    let receiver = async_stream(move |sender| async move {
        let _ = crate::logs::stream_log(engine, instance, path, params, sender).await;
    });
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "application/vnd.berth.stream")
        .body(body_from(receiver))
        .unwrap_or_default())
}

#[utoipa::path(
    post, path = "/v1/instances/{id}/exec", params(InstancePath, UpgradeHeader), request_body = ExecRequest,
    responses((status = 101, description = "Attach stream (needs `Upgrade: berth-attach` unless `detach`)"),
              (status = 204, description = "Started detached"),
              BadRequest, NotFound, Conflict, UnsupportedMediaType, InternalError)
)]
async fn exec_instance(
    State(engine): Shared,
    Path(id): Path<String>,
    mut request: Request,
) -> Result<Response, EngineError> {
    require_json(request.headers())?;
    let body = axum::body::to_bytes(std::mem::take(request.body_mut()), 1 << 20)
        .await
        .map_err(|e| EngineError::invalid("body", format!("reading the request: {e}")))?;
    let exec: ExecRequest = parse_json(&body)?;
    let upgrade = wants_upgrade(&request)?;
    if !exec.detach && !upgrade {
        return Err(EngineError::invalid(
            "detach",
            "an attached exec needs an `Upgrade: berth-attach` request",
        ));
    }
    match engine.exec(&id, exec).await? {
        Some(stream) => Ok(upgrade_to_attach(&mut request, stream)),
        None => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

#[utoipa::path(
    post, path = "/v1/instances/{id}/update", params(InstancePath), request_body = UpdateInstanceRequest,
    responses((status = 200, body = Instance), BadRequest, NotFound, Conflict, UnsupportedMediaType, InternalError)
)]
async fn update_instance(
    State(engine): Shared,
    Path(id): Path<String>,
    Json(request): Json<UpdateInstanceRequest>,
) -> EngineResult<Json<Instance>> {
    Ok(Json(engine.update(&id, &request.limits).await?))
}

#[utoipa::path(
    get, path = "/v1/stats", params(StatsParams),
    responses((status = 200, body = [InstanceStats]), BadRequest, InternalError)
)]
async fn all_stats(State(engine): Shared, Query(params): Query<StatsParams>) -> EngineResult<Json<Vec<InstanceStats>>> {
    if params.window_ms > 5000 {
        return Err(EngineError::invalid(
            "window_ms",
            "window_ms: at most 5000 (five seconds)",
        ));
    }
    Ok(Json(
        engine
            .stats_all(std::time::Duration::from_millis(params.window_ms))
            .await?,
    ))
}

#[utoipa::path(
    get, path = "/v1/instances/{id}/stats", params(InstancePath),
    responses((status = 200, body = InstanceStats), NotFound, Conflict, InternalError)
)]
async fn instance_stats(State(engine): Shared, Path(id): Path<String>) -> EngineResult<Json<InstanceStats>> {
    Ok(Json(engine.stats(&id).await?))
}

#[utoipa::path(
    get, path = "/v1/instances/{id}/top", params(InstancePath),
    responses((status = 200, body = TopResponse), NotFound, Conflict, InternalError)
)]
async fn instance_top(State(engine): Shared, Path(id): Path<String>) -> EngineResult<Json<TopResponse>> {
    Ok(Json(engine.top(&id).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct AttachParams {
    /// Forward the client's stdin (instances created with -i, and VMs).
    #[serde(default)]
    stdin: bool,
}

#[utoipa::path(
    post, path = "/v1/instances/{id}/attach", params(InstancePath, AttachParams, RequiredUpgradeHeader),
    responses((status = 101, description = "Attach stream to a running instance (its console, for a VM)"),
              BadRequest, NotFound, Conflict, InternalError)
)]
async fn attach_instance(
    State(engine): Shared,
    Path(id): Path<String>,
    Query(params): Query<AttachParams>,
    mut request: Request,
) -> Result<Response, EngineError> {
    if !wants_upgrade(&request)? {
        return Err(EngineError::invalid(
            "attach",
            "attach needs an `Upgrade: berth-attach` request",
        ));
    }
    let stream = engine.attach(&id, params.stdin).await?;
    Ok(upgrade_to_attach(&mut request, stream))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ExportParams {
    #[serde(default)]
    #[param(inline)]
    format: ExportFormat,
}

/// What `export` writes: only a libvirt domain XML for now.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum ExportFormat {
    #[default]
    Libvirt,
}

#[utoipa::path(
    get, path = "/v1/instances/{id}/export", params(InstancePath, ExportParams),
    responses((status = 200, body = String, content_type = "application/xml", description = "A libvirt domain XML"),
              BadRequest, NotFound, Conflict, InternalError)
)]
async fn export_instance(
    State(engine): Shared,
    Path(id): Path<String>,
    Query(params): Query<ExportParams>,
) -> EngineResult<Response> {
    let format = match params.format {
        ExportFormat::Libvirt => "libvirt",
    };
    let xml = engine.export_vm(&id, format).await?;
    Ok(([(header::CONTENT_TYPE, "application/xml")], xml).into_response())
}

#[utoipa::path(
    post, path = "/v1/instances/{id}/export", params(InstancePath), request_body = VmExportRequest,
    responses((status = 201, body = VmExportResponse, description = "Written"),
              BadRequest, NotFound, Conflict, UnsupportedMediaType, InternalError)
)]
async fn export_package(
    State(engine): Shared,
    Path(id): Path<String>,
    Json(request): Json<VmExportRequest>,
) -> EngineResult<(StatusCode, Json<VmExportResponse>)> {
    Ok((
        StatusCode::CREATED,
        Json(engine.export_vm_package(&id, &request).await?),
    ))
}

#[utoipa::path(
    post, path = "/v1/vms/import", request_body = VmImportRequest,
    responses((status = 201, body = VmImportResponse), BadRequest, NotFound, Conflict, UnsupportedMediaType, InternalError)
)]
async fn import_vm(
    State(engine): Shared,
    Json(request): Json<VmImportRequest>,
) -> EngineResult<(StatusCode, Json<VmImportResponse>)> {
    Ok((StatusCode::CREATED, Json(engine.import_vm(&request).await?)))
}

#[utoipa::path(
    get, path = "/v1/images", responses((status = 200, body = [ImageRecord]), InternalError)
)]
async fn list_images(State(engine): Shared) -> EngineResult<Json<Vec<ImageRecord>>> {
    Ok(Json(engine.images.list().await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ImageParams {
    /// A tag (`busybox`, `registry:5000/app:1`), an id or a unique id prefix.
    reference: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct RemoveImageParams {
    /// A tag (removes that tag; the image goes with its last one), an id or a unique id prefix.
    reference: String,
    /// Remove it even if instances use it.
    #[serde(default)]
    force: bool,
}

#[utoipa::path(
    get, path = "/v1/images/inspect", params(ImageParams),
    responses((status = 200, body = ImageRecord), BadRequest, NotFound, Conflict, InternalError)
)]
async fn inspect_image(State(engine): Shared, Query(params): Query<ImageParams>) -> EngineResult<Json<ImageRecord>> {
    Ok(Json(engine.images.resolve(&params.reference).await?))
}

#[derive(Debug, serde::Serialize, ToSchema)]
struct RemovedImage {
    untagged: Vec<String>,
    deleted: bool,
}

#[utoipa::path(
    delete, path = "/v1/images", params(RemoveImageParams),
    responses((status = 200, body = RemovedImage), BadRequest, NotFound, Conflict, InternalError)
)]
async fn remove_image(
    State(engine): Shared,
    Query(params): Query<RemoveImageParams>,
) -> EngineResult<Json<RemovedImage>> {
    let image = engine.images.resolve(&params.reference).await?;
    let user = engine.image_user(&image.id).await?;
    let (untagged, deleted) = engine.images.remove(&params.reference, user, params.force).await?;
    if deleted {
        engine.emit_image(&image, "remove");
        engine
            .forget_owners(berth_model::project::ResourceKind::Image, &image.id)
            .await?;
    }
    Ok(Json(RemovedImage { untagged, deleted }))
}

#[utoipa::path(
    post, path = "/v1/images/tag", request_body = TagImageRequest,
    responses((status = 200, body = ImageRecord), BadRequest, NotFound, Conflict, UnsupportedMediaType, InternalError)
)]
async fn tag_image(State(engine): Shared, Json(request): Json<TagImageRequest>) -> EngineResult<Json<ImageRecord>> {
    Ok(Json(engine.images.tag(&request.source, &request.target).await?))
}

/// Runs an image job, streaming its progress as JSON lines; the last line says how it ended.
fn progress_response<F, Fut>(job: F) -> Response
where
    F: FnOnce(berth_image::ProgressSink) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<ImageRecord, berth_image::ImageError>> + Send + 'static,
{
    let (sender, receiver) = mpsc::channel::<Bytes>(256);
    let line = |event: &ProgressEvent| {
        let mut bytes = serde_json::to_vec(event).unwrap_or_default();
        bytes.push(b'\n');
        Bytes::from(bytes)
    };
    let progress_sender = sender.clone();
    let sink: berth_image::ProgressSink = Arc::new(move |event: ProgressEvent| {
        // A slow client loses progress lines, never the job.
        let _ = progress_sender.try_send(line(&event));
    });
    tokio::spawn(async move {
        let last = match job(sink).await {
            Ok(image) => ProgressEvent::Finished {
                reference: image.tags.first().cloned().unwrap_or_default(),
                image_id: image.id,
            },
            Err(e) => ProgressEvent::Failed { message: e.to_string() },
        };
        let _ = sender.send(line(&last)).await;
    });
    json_lines_response(receiver)
}

#[utoipa::path(
    post, path = "/v1/images/import", request_body = ImportImageRequest,
    responses((status = 200, body = ProgressEvent, content_type = "application/x-ndjson",
               description = "JSON lines of progress; the last is `finished` or `failed`"),
              BadRequest, NotFound, UnsupportedMediaType, InternalError)
)]
async fn import_image(State(engine): Shared, Json(request): Json<ImportImageRequest>) -> EngineResult<Response> {
    let path = FsPath::new(&request.path);
    if !path.is_absolute() {
        return Err(EngineError::invalid(
            "path",
            "the import path must be absolute (the daemon resolves it)",
        ));
    }
    if !path.exists() {
        return Err(EngineError::no_such_path("path", &request.path));
    }
    if !request.vm
        && (request.format.is_some() || request.allow_device || request.compress || request.firmware.is_some())
    {
        return Err(EngineError::invalid(
            "vm",
            "--format, --allow-device, --compress and --firmware are for disk images; add --vm",
        ));
    }
    if request.vm {
        let source = engine
            .inspect_disk_image(
                FsPath::new(&request.path),
                request.format.as_deref(),
                request.allow_device,
            )
            .await?;
        return Ok(progress_response(move |sink| async move {
            sink(ProgressEvent::Message {
                text: format!("converting {} ({}) to a qcow2 base disk", request.path, source.format),
            });
            // One bar: the source's bytes read (zeros are read and left sparse).
            let id = "disk".to_string();
            sink(ProgressEvent::Started {
                id: id.clone(),
                total_bytes: Some(source.virtual_size),
            });
            let progress_sink = sink.clone();
            let progress_id = id.clone();
            let progress = Box::new(move |done: u64| {
                progress_sink(ProgressEvent::Progress {
                    id: progress_id.clone(),
                    current_bytes: done,
                })
            });
            let started = std::time::Instant::now();
            let image = engine
                .store_disk_image(
                    source,
                    request.tag.as_deref(),
                    request.compress,
                    request.firmware.as_deref(),
                    progress,
                )
                .await
                .map_err(|e| berth_image::ImageError::Format(e.message))?;
            let stored = image.size_bytes;
            sink(ProgressEvent::Done {
                id,
                note: format!(
                    "{} stored in {:.1} s ({}; boots with {})",
                    berth_model::ByteSize(stored),
                    started.elapsed().as_secs_f64(),
                    if request.compress { "compressed" } else { "sparse" },
                    match image.disk.as_ref().and_then(|d| d.firmware.as_deref()) {
                        Some("uefi") => "UEFI (OVMF)",
                        _ => "BIOS (SeaBIOS)",
                    }
                ),
            });
            engine.emit_image(&image, "import");
            Ok(image)
        }));
    }
    Ok(progress_response(move |sink| async move {
        let images = engine
            .images
            .import(FsPath::new(&request.path), request.tag.as_deref(), sink)
            .await?;
        for image in &images {
            engine.emit_image(image, "import");
        }
        images
            .into_iter()
            .next()
            .ok_or_else(|| berth_image::ImageError::Format("the archive held no image".into()))
    }))
}

fn registry_options(request: &RegistryRequest) -> RegistryOptions {
    RegistryOptions {
        insecure: request.insecure,
        username: request.username.clone(),
        password: request.password.clone(),
    }
}

#[utoipa::path(
    post, path = "/v1/images/pull", request_body = RegistryRequest,
    responses((status = 200, body = ProgressEvent, content_type = "application/x-ndjson",
               description = "JSON lines of progress; the last is `finished` or `failed`"),
              BadRequest, UnsupportedMediaType)
)]
async fn pull_image(
    State(engine): Shared,
    scope: Option<axum::Extension<crate::project_scope::ProjectScope>>,
    Json(request): Json<RegistryRequest>,
) -> EngineResult<Response> {
    berth_image::reference::parse_reference(&request.reference)?;
    Ok(progress_response(move |sink| async move {
        let image = engine
            .images
            .pull(&request.reference, &registry_options(&request), sink)
            .await?;
        // A project's client pulled it: the image is now that project's to use.
        if let Some(axum::Extension(crate::project_scope::ProjectScope(project))) = scope {
            engine
                .own(&project, berth_model::project::ResourceKind::Image, &image.id)
                .await
                .map_err(|e| berth_image::ImageError::Format(e.message))?;
        }
        engine.emit_image(&image, "pull");
        Ok(image)
    }))
}

#[utoipa::path(
    post, path = "/v1/images/push", request_body = RegistryRequest,
    responses((status = 200, body = ProgressEvent, content_type = "application/x-ndjson",
               description = "JSON lines of progress; the last is `finished` or `failed`"),
              BadRequest, NotFound, Conflict, UnsupportedMediaType, InternalError)
)]
async fn push_image(State(engine): Shared, Json(request): Json<RegistryRequest>) -> EngineResult<Response> {
    engine.images.resolve(&request.reference).await?;
    Ok(progress_response(move |sink| async move {
        let image = engine
            .images
            .push(&request.reference, &registry_options(&request), sink)
            .await?;
        engine.emit_image(&image, "push");
        Ok(image)
    }))
}
