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
use axum::routing::{get, post};
use axum::Router;
use berth_image::RegistryOptions;
use berth_model::api::*;
use berth_model::image::ImageRecord;
use berth_model::network::Network;
use berth_model::volume::Volume;
use berth_model::Instance;
use bytes::Bytes;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use utoipa::OpenApi;

use crate::engine::Engine;
use crate::error::{EngineError, EngineResult};
use crate::extract::{parse_json, Json, Query};

type Shared = State<Arc<Engine>>;

pub fn router(engine: Arc<Engine>) -> Router {
    Router::new()
        .route("/v1/_ping", get(ping))
        .route("/v1/info", get(info))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/events", get(events))
        .route("/v1/tree", get(tree))
        .route("/v1/types", get(list_types))
        .route("/v1/networks", get(list_networks).post(create_network))
        .route("/v1/networks/{name}", axum::routing::delete(remove_network))
        .route("/v1/volumes", get(list_volumes).post(create_volume))
        .route("/v1/volumes/{name}", get(inspect_volume).delete(remove_volume))
        .route("/v1/volumes/{name}/snapshots", post(snapshot_volume))
        .route(
            "/v1/volumes/{name}/snapshots/{snapshot}",
            axum::routing::delete(delete_snapshot),
        )
        .route("/v1/volumes/{name}/restore", post(restore_volume))
        .route("/v1/instances", get(list_instances).post(create_instance))
        .route("/v1/instances/{id}", get(inspect_instance).delete(remove_instance))
        .route("/v1/instances/{id}/start", post(start_instance))
        .route("/v1/instances/{id}/stop", post(stop_instance))
        .route("/v1/instances/{id}/restart", post(restart_instance))
        .route("/v1/instances/{id}/kill", post(kill_instance))
        .route("/v1/instances/{id}/pause", post(pause_instance))
        .route("/v1/instances/{id}/unpause", post(unpause_instance))
        .route("/v1/instances/{id}/wait", post(wait_instance))
        .route("/v1/instances/{id}/logs", get(instance_logs))
        .route("/v1/instances/{id}/exec", post(exec_instance))
        .route("/v1/instances/{id}/update", post(update_instance))
        .route("/v1/instances/{id}/stats", get(instance_stats))
        .route("/v1/instances/{id}/top", get(instance_top))
        .route("/v1/instances/{id}/attach", post(attach_instance))
        .route("/v1/instances/{id}/export", get(export_instance))
        .route("/v1/instances/{id}/snapshots", post(snapshot_instance))
        .route(
            "/v1/instances/{id}/snapshots/{snapshot}",
            axum::routing::delete(delete_instance_snapshot),
        )
        .route("/v1/instances/{id}/restore", post(restore_instance))
        .route("/v1/vms/import", post(import_vm))
        .route("/v1/images", get(list_images).delete(remove_image))
        .route("/v1/images/inspect", get(inspect_image))
        .route("/v1/images/import", post(import_image))
        .route("/v1/images/pull", post(pull_image))
        .route("/v1/images/push", post(push_image))
        .route("/v1/images/tag", post(tag_image))
        .fallback(not_found)
        .with_state(engine)
}

async fn not_found() -> EngineError {
    EngineError::not_found("no such API endpoint; GET /v1/openapi.json describes the API")
}

#[utoipa::path(get, path = "/v1/_ping", responses((status = 200, description = "The daemon is serving")))]
async fn ping() -> &'static str {
    "OK"
}

#[utoipa::path(get, path = "/v1/info", responses((status = 200, body = HostInfo)))]
async fn info(State(engine): Shared) -> EngineResult<Json<HostInfo>> {
    Ok(Json(engine.info().await?))
}

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// Streams the event feed as JSON lines until the client goes away.
#[utoipa::path(get, path = "/v1/events", responses((status = 200, body = Event, description = "JSON lines, one event each")))]
async fn events(State(engine): Shared) -> Response {
    let mut receiver = engine.subscribe();
    let stream = async_stream(move |sender| async move {
        loop {
            match receiver.recv().await {
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
    json_lines_response(stream)
}

#[utoipa::path(get, path = "/v1/types", responses((status = 200, body = [berth_model::types::InstanceType])))]
async fn list_types(State(engine): Shared) -> Json<Vec<berth_model::types::InstanceType>> {
    Json(engine.types().to_vec())
}

#[utoipa::path(get, path = "/v1/networks", responses((status = 200, body = [Network])))]
async fn list_networks(State(engine): Shared) -> EngineResult<Json<Vec<Network>>> {
    Ok(Json(engine.networks.list().await?))
}

#[utoipa::path(post, path = "/v1/networks", request_body = CreateNetworkRequest,
    responses((status = 201, body = Network), (status = 400, body = ErrorResponse), (status = 409, body = ErrorResponse)))]
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

#[utoipa::path(delete, path = "/v1/networks/{name}", params(("name" = String, Path)), responses((status = 204), (status = 409, body = ErrorResponse)))]
async fn remove_network(State(engine): Shared, Path(name): Path<String>) -> EngineResult<StatusCode> {
    engine.remove_network(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/volumes", responses((status = 200, body = [Volume])))]
async fn list_volumes(State(engine): Shared) -> EngineResult<Json<Vec<Volume>>> {
    Ok(Json(engine.volumes.list().await?))
}

#[utoipa::path(post, path = "/v1/volumes", request_body = CreateVolumeRequest,
    responses((status = 201, body = Volume), (status = 400, body = ErrorResponse), (status = 409, body = ErrorResponse)))]
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

#[utoipa::path(get, path = "/v1/volumes/{name}", params(("name" = String, Path)), responses((status = 200, body = Volume), (status = 404, body = ErrorResponse)))]
async fn inspect_volume(State(engine): Shared, Path(name): Path<String>) -> EngineResult<Json<Volume>> {
    Ok(Json(engine.volumes.get(&name).await?))
}

#[utoipa::path(delete, path = "/v1/volumes/{name}", params(("name" = String, Path), RemoveVolumeParams),
    responses((status = 204), (status = 409, body = ErrorResponse), (status = 502, body = ErrorResponse)))]
async fn remove_volume(
    State(engine): Shared,
    Path(name): Path<String>,
    Query(params): Query<RemoveVolumeParams>,
) -> EngineResult<StatusCode> {
    engine.remove_volume(&name, params.force).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/volumes/{name}/snapshots", params(("name" = String, Path)), request_body = SnapshotRequest,
    responses((status = 200, body = Volume), (status = 409, body = ErrorResponse)))]
async fn snapshot_volume(
    State(engine): Shared,
    Path(name): Path<String>,
    Json(request): Json<SnapshotRequest>,
) -> EngineResult<Json<Volume>> {
    Ok(Json(engine.snapshot_volume(&name, &request.name).await?))
}

#[utoipa::path(post, path = "/v1/volumes/{name}/restore", params(("name" = String, Path)), request_body = SnapshotRequest,
    responses((status = 200, body = Volume), (status = 409, body = ErrorResponse)))]
async fn restore_volume(
    State(engine): Shared,
    Path(name): Path<String>,
    Json(request): Json<SnapshotRequest>,
) -> EngineResult<Json<Volume>> {
    Ok(Json(engine.restore_volume(&name, &request.name).await?))
}

#[utoipa::path(delete, path = "/v1/volumes/{name}/snapshots/{snapshot}", params(("name" = String, Path), ("snapshot" = String, Path)),
    responses((status = 200, body = Volume), (status = 404, body = ErrorResponse)))]
async fn delete_snapshot(
    State(engine): Shared,
    Path((name, snapshot)): Path<(String, String)>,
) -> EngineResult<Json<Volume>> {
    Ok(Json(engine.delete_volume_snapshot(&name, &snapshot).await?))
}

#[utoipa::path(post, path = "/v1/instances/{id}/snapshots", params(("id" = String, Path)), request_body = SnapshotRequest,
    responses((status = 200, body = Instance), (status = 400, body = ErrorResponse), (status = 409, body = ErrorResponse)))]
async fn snapshot_instance(
    State(engine): Shared,
    Path(id): Path<String>,
    Json(request): Json<SnapshotRequest>,
) -> EngineResult<Json<Instance>> {
    Ok(Json(engine.snapshot_instance(&id, &request.name).await?))
}

#[utoipa::path(post, path = "/v1/instances/{id}/restore", params(("id" = String, Path)), request_body = SnapshotRequest,
    responses((status = 200, body = Instance), (status = 404, body = ErrorResponse), (status = 409, body = ErrorResponse)))]
async fn restore_instance(
    State(engine): Shared,
    Path(id): Path<String>,
    Json(request): Json<SnapshotRequest>,
) -> EngineResult<Json<Instance>> {
    Ok(Json(engine.restore_instance(&id, &request.name).await?))
}

#[utoipa::path(delete, path = "/v1/instances/{id}/snapshots/{snapshot}", params(("id" = String, Path), ("snapshot" = String, Path)),
    responses((status = 200, body = Instance), (status = 404, body = ErrorResponse)))]
async fn delete_instance_snapshot(
    State(engine): Shared,
    Path((id, snapshot)): Path<(String, String)>,
) -> EngineResult<Json<Instance>> {
    Ok(Json(engine.delete_instance_snapshot(&id, &snapshot).await?))
}

#[utoipa::path(get, path = "/v1/tree", responses((status = 200, body = [TreeEntry])))]
async fn tree(State(engine): Shared) -> EngineResult<Json<Vec<TreeEntry>>> {
    Ok(Json(engine.tree().await?))
}

#[utoipa::path(get, path = "/v1/instances", params(ListParams), responses((status = 200, body = [Instance])))]
async fn list_instances(State(engine): Shared, Query(params): Query<ListParams>) -> EngineResult<Json<Vec<Instance>>> {
    Ok(Json(engine.list(params.all).await?))
}

#[utoipa::path(post, path = "/v1/instances", request_body = CreateInstanceRequest,
    responses((status = 201, body = CreatedResponse), (status = 400, body = ErrorResponse), (status = 409, body = ErrorResponse)))]
async fn create_instance(
    State(engine): Shared,
    Json(request): Json<CreateInstanceRequest>,
) -> EngineResult<(StatusCode, Json<CreatedResponse>)> {
    Ok((StatusCode::CREATED, Json(engine.create(request).await?)))
}

#[utoipa::path(get, path = "/v1/instances/{id}", params(("id" = String, Path, description = "id, unique id prefix or name")),
    responses((status = 200, body = Instance), (status = 404, body = ErrorResponse)))]
async fn inspect_instance(State(engine): Shared, Path(id): Path<String>) -> EngineResult<Json<Instance>> {
    Ok(Json(engine.find(&id).await?))
}

#[utoipa::path(delete, path = "/v1/instances/{id}", params(("id" = String, Path), RemoveParams),
    responses((status = 204), (status = 409, body = ErrorResponse)))]
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

fn wants_upgrade(request: &Request) -> bool {
    request.headers().contains_key(header::UPGRADE)
}

#[utoipa::path(post, path = "/v1/instances/{id}/start", params(("id" = String, Path), StartParams),
    responses((status = 200, body = Instance), (status = 101, description = "attach stream (with attach=true and an Upgrade header)"),
              (status = 409, body = ErrorResponse)))]
async fn start_instance(
    State(engine): Shared,
    Path(id): Path<String>,
    Query(params): Query<StartParams>,
    mut request: Request,
) -> Result<Response, EngineError> {
    let attach = params.attach;
    if attach && !wants_upgrade(&request) {
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

#[utoipa::path(post, path = "/v1/instances/{id}/stop", params(("id" = String, Path), StopParams), responses((status = 200, body = Instance)))]
async fn stop_instance(
    State(engine): Shared,
    Path(id): Path<String>,
    Query(params): Query<StopParams>,
) -> EngineResult<Json<Instance>> {
    Ok(Json(engine.stop(&id, params.timeout).await?))
}

#[utoipa::path(post, path = "/v1/instances/{id}/restart", params(("id" = String, Path), StopParams), responses((status = 200, body = Instance)))]
async fn restart_instance(
    State(engine): Shared,
    Path(id): Path<String>,
    Query(params): Query<StopParams>,
) -> EngineResult<Json<Instance>> {
    Ok(Json(engine.restart(&id, params.timeout).await?))
}

#[utoipa::path(post, path = "/v1/instances/{id}/kill", params(("id" = String, Path), KillParams), responses((status = 204)))]
async fn kill_instance(
    State(engine): Shared,
    Path(id): Path<String>,
    Query(params): Query<KillParams>,
) -> EngineResult<StatusCode> {
    engine.kill(&id, params.signal.as_deref().unwrap_or("KILL")).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/instances/{id}/pause", params(("id" = String, Path)), responses((status = 200, body = Instance)))]
async fn pause_instance(State(engine): Shared, Path(id): Path<String>) -> EngineResult<Json<Instance>> {
    Ok(Json(engine.pause(&id).await?))
}

#[utoipa::path(post, path = "/v1/instances/{id}/unpause", params(("id" = String, Path)), responses((status = 200, body = Instance)))]
async fn unpause_instance(State(engine): Shared, Path(id): Path<String>) -> EngineResult<Json<Instance>> {
    Ok(Json(engine.unpause(&id).await?))
}

#[utoipa::path(post, path = "/v1/instances/{id}/wait", params(("id" = String, Path), WaitParams), responses((status = 200, body = WaitResponse)))]
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

#[utoipa::path(get, path = "/v1/instances/{id}/logs", params(("id" = String, Path), LogsParams),
    responses((status = 200, description = "attach-stream frames (stdout=1, stderr=2)")))]
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

#[utoipa::path(post, path = "/v1/instances/{id}/exec", params(("id" = String, Path)), request_body = ExecRequest,
    responses((status = 101, description = "attach stream"), (status = 204, description = "detached"), (status = 409, body = ErrorResponse)))]
async fn exec_instance(
    State(engine): Shared,
    Path(id): Path<String>,
    mut request: Request,
) -> Result<Response, EngineError> {
    let body = axum::body::to_bytes(std::mem::take(request.body_mut()), 1 << 20)
        .await
        .map_err(|e| EngineError::invalid("body", format!("reading the request: {e}")))?;
    let exec: ExecRequest = parse_json(&body)?;
    if !exec.detach && !wants_upgrade(&request) {
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

#[utoipa::path(post, path = "/v1/instances/{id}/update", params(("id" = String, Path)), request_body = UpdateInstanceRequest,
    responses((status = 200, body = Instance), (status = 400, body = ErrorResponse)))]
async fn update_instance(
    State(engine): Shared,
    Path(id): Path<String>,
    Json(request): Json<UpdateInstanceRequest>,
) -> EngineResult<Json<Instance>> {
    Ok(Json(engine.update(&id, &request.limits).await?))
}

#[utoipa::path(get, path = "/v1/instances/{id}/stats", params(("id" = String, Path)), responses((status = 200, body = InstanceStats)))]
async fn instance_stats(State(engine): Shared, Path(id): Path<String>) -> EngineResult<Json<InstanceStats>> {
    Ok(Json(engine.stats(&id).await?))
}

#[utoipa::path(get, path = "/v1/instances/{id}/top", params(("id" = String, Path)), responses((status = 200, body = TopResponse)))]
async fn instance_top(State(engine): Shared, Path(id): Path<String>) -> EngineResult<Json<TopResponse>> {
    Ok(Json(engine.top(&id).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
struct AttachParams {
    /// Forward the client's stdin (instances created with -i, and VMs).
    #[serde(default)]
    stdin: bool,
}

#[utoipa::path(post, path = "/v1/instances/{id}/attach", params(("id" = String, Path), AttachParams),
    responses((status = 101, description = "attach stream to a running instance (its console, for a VM)"), (status = 409, body = ErrorResponse)))]
async fn attach_instance(
    State(engine): Shared,
    Path(id): Path<String>,
    Query(params): Query<AttachParams>,
    mut request: Request,
) -> Result<Response, EngineError> {
    if !wants_upgrade(&request) {
        return Err(EngineError::invalid(
            "attach",
            "attach needs an `Upgrade: berth-attach` request",
        ));
    }
    let stream = engine.attach(&id, params.stdin).await?;
    Ok(upgrade_to_attach(&mut request, stream))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
struct ExportParams {
    /// Only "libvirt" (a domain XML) for now.
    #[serde(default = "default_export_format")]
    format: String,
}

fn default_export_format() -> String {
    "libvirt".into()
}

#[utoipa::path(get, path = "/v1/instances/{id}/export", params(("id" = String, Path), ExportParams),
    responses((status = 200, description = "libvirt domain XML", content_type = "application/xml"), (status = 400, body = ErrorResponse)))]
async fn export_instance(
    State(engine): Shared,
    Path(id): Path<String>,
    Query(params): Query<ExportParams>,
) -> EngineResult<Response> {
    let xml = engine.export_vm(&id, &params.format).await?;
    Ok(([(header::CONTENT_TYPE, "application/xml")], xml).into_response())
}

#[utoipa::path(post, path = "/v1/vms/import", request_body = VmImportRequest,
    responses((status = 201, body = VmImportResponse), (status = 400, body = ErrorResponse)))]
async fn import_vm(
    State(engine): Shared,
    Json(request): Json<VmImportRequest>,
) -> EngineResult<(StatusCode, Json<VmImportResponse>)> {
    Ok((StatusCode::CREATED, Json(engine.import_vm(&request).await?)))
}

#[utoipa::path(get, path = "/v1/images", responses((status = 200, body = [ImageRecord])))]
async fn list_images(State(engine): Shared) -> EngineResult<Json<Vec<ImageRecord>>> {
    Ok(Json(engine.images.list().await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
struct ImageParams {
    reference: String,
    #[serde(default)]
    force: bool,
}

#[utoipa::path(get, path = "/v1/images/inspect", params(ImageParams), responses((status = 200, body = ImageRecord), (status = 404, body = ErrorResponse)))]
async fn inspect_image(State(engine): Shared, Query(params): Query<ImageParams>) -> EngineResult<Json<ImageRecord>> {
    Ok(Json(engine.images.resolve(&params.reference).await?))
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
struct RemovedImage {
    untagged: Vec<String>,
    deleted: bool,
}

#[utoipa::path(delete, path = "/v1/images", params(ImageParams), responses((status = 200, body = RemovedImage), (status = 409, body = ErrorResponse)))]
async fn remove_image(State(engine): Shared, Query(params): Query<ImageParams>) -> EngineResult<Json<RemovedImage>> {
    let image = engine.images.resolve(&params.reference).await?;
    let user = engine.image_user(&image.id).await?;
    let (untagged, deleted) = engine.images.remove(&params.reference, user, params.force).await?;
    if deleted {
        engine.emit_image(&image, "remove");
    }
    Ok(Json(RemovedImage { untagged, deleted }))
}

#[utoipa::path(post, path = "/v1/images/tag", request_body = TagImageRequest, responses((status = 200, body = ImageRecord)))]
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

#[utoipa::path(post, path = "/v1/images/import", request_body = ImportImageRequest,
    responses((status = 200, body = ProgressEvent, description = "JSON lines of progress; the last is finished or failed")))]
async fn import_image(State(engine): Shared, Json(request): Json<ImportImageRequest>) -> EngineResult<Response> {
    let path = FsPath::new(&request.path);
    if !path.is_absolute() {
        return Err(EngineError::invalid(
            "path",
            "the import path must be absolute (the daemon resolves it)",
        ));
    }
    if !path.exists() {
        return Err(EngineError::invalid("path", format!("{} does not exist", request.path)));
    }
    if !request.vm && (request.format.is_some() || request.allow_device) {
        return Err(EngineError::invalid(
            "vm",
            "--format and --allow-device are for disk images; add --vm",
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
            let image = engine
                .store_disk_image(source, request.tag.as_deref())
                .await
                .map_err(|e| berth_image::ImageError::Format(e.message))?;
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

#[utoipa::path(post, path = "/v1/images/pull", request_body = RegistryRequest,
    responses((status = 200, body = ProgressEvent, description = "JSON lines of progress")))]
async fn pull_image(State(engine): Shared, Json(request): Json<RegistryRequest>) -> EngineResult<Response> {
    berth_image::reference::parse_reference(&request.reference)?;
    Ok(progress_response(move |sink| async move {
        let image = engine
            .images
            .pull(&request.reference, &registry_options(&request), sink)
            .await?;
        engine.emit_image(&image, "pull");
        Ok(image)
    }))
}

#[utoipa::path(post, path = "/v1/images/push", request_body = RegistryRequest,
    responses((status = 200, body = ProgressEvent, description = "JSON lines of progress")))]
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

#[derive(OpenApi)]
#[openapi(
    info(
        title = "berth API",
        version = "1",
        description = "The berth daemon's REST API on its unix socket (default /run/berth/berth.sock). Attach streams upgrade the connection (`Upgrade: berth-attach`) and then carry frames: a 5-byte header (kind u8: 0 stdin, 1 stdout, 2 stderr, 3 exit JSON, 4 resize rows/cols u16 BE, 5 stdin closed, 6 error; length u32 BE) and the payload."
    ),
    paths(
        ping,
        info,
        events,
        tree,
        list_types,
        list_networks,
        create_network,
        remove_network,
        list_volumes,
        create_volume,
        inspect_volume,
        remove_volume,
        snapshot_volume,
        restore_volume,
        delete_snapshot,
        snapshot_instance,
        restore_instance,
        delete_instance_snapshot,
        list_instances,
        create_instance,
        inspect_instance,
        remove_instance,
        start_instance,
        stop_instance,
        restart_instance,
        kill_instance,
        pause_instance,
        unpause_instance,
        wait_instance,
        instance_logs,
        exec_instance,
        update_instance,
        instance_stats,
        instance_top,
        list_images,
        inspect_image,
        remove_image,
        tag_image,
        import_image,
        pull_image,
        push_image
    ),
    components(schemas(Instance, ImageRecord, ProcessNode, RemovedImage))
)]
pub struct ApiDoc;
