//! Image endpoints: list, inspect, history, pull and push (berth's progress lines as
//! Docker's), tag, remove and load (`docker load`: the archive is written under the
//! gateway's directory and imported by berth). `docker save` has no berth counterpart.

use std::collections::HashMap;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use berth_model::api::{ImportImageRequest, ProgressEvent, RegistryRequest, TagImageRequest};
use berth_model::image::ImageRecord;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use crate::error::{DockerError, DockerResult};
use crate::params::{flag, Filters};
use crate::{encode, Gateway, Shared};

/// `docker.io/library/busybox:latest` as people write it: `busybox:latest` (berth stores
/// references normalized).
pub fn familiar(reference: &str) -> String {
    reference
        .strip_prefix("docker.io/library/")
        .or_else(|| reference.strip_prefix("docker.io/"))
        .unwrap_or(reference)
        .to_string()
}

/// The repository of a reference: everything before its tag or digest.
fn repository(reference: &str) -> &str {
    let without_digest = reference.split('@').next().unwrap_or(reference);
    match without_digest.rfind(':') {
        Some(colon) if !without_digest[colon..].contains('/') => &without_digest[..colon],
        _ => without_digest,
    }
}

fn repo_digests(image: &ImageRecord) -> Vec<String> {
    let mut digests: Vec<String> = image
        .tags
        .iter()
        .map(|tag| format!("{}@{}", familiar(repository(tag)), image.manifest_digest))
        .collect();
    digests.dedup();
    digests
}

/// One entry of `GET /images/json`.
pub fn summary(image: &ImageRecord) -> Value {
    let mut labels = serde_json::Map::new();
    if image.disk.is_some() {
        labels.insert(crate::view::KIND_LABEL.into(), json!("vm"));
    }
    json!({
        "Id": image.id,
        "ParentId": "",
        "RepoTags": image.tags.iter().map(|t| familiar(t)).collect::<Vec<_>>(),
        "RepoDigests": repo_digests(image),
        "Created": image.created_at.timestamp(),
        "Size": image.size_bytes,
        "VirtualSize": image.size_bytes,
        "SharedSize": -1,
        "Labels": labels,
        "Containers": -1,
    })
}

fn inspect_view(image: &ImageRecord) -> Value {
    let config = json!({
        "Hostname": "", "Domainname": "", "User": image.config.user, "AttachStdin": false,
        "AttachStdout": false, "AttachStderr": false, "Tty": false, "OpenStdin": false,
        "StdinOnce": false, "Env": image.config.env, "Cmd": image.config.cmd, "Image": "",
        "Volumes": null, "WorkingDir": image.config.working_dir,
        "Entrypoint": if image.config.entrypoint.is_empty() { Value::Null } else { json!(image.config.entrypoint) },
        "OnBuild": null, "Labels": null,
    });
    json!({
        "Id": image.id,
        "RepoTags": image.tags.iter().map(|t| familiar(t)).collect::<Vec<_>>(),
        "RepoDigests": repo_digests(image),
        "Parent": "",
        "Comment": image.source,
        "Created": image.created_at.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        "Container": "",
        "ContainerConfig": config,
        "DockerVersion": "",
        "Author": "",
        "Config": config,
        "Architecture": image.architecture,
        "Os": image.os,
        "Size": image.size_bytes,
        "VirtualSize": image.size_bytes,
        "GraphDriver": { "Name": "overlay2", "Data": null },
        "RootFS": { "Type": "layers", "Layers": image.layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>() },
        "Metadata": { "LastTagTime": "0001-01-01T00:00:00Z" },
    })
}

async fn resolve(gateway: &Gateway, name: &str) -> DockerResult<ImageRecord> {
    gateway
        .berth
        .get(&format!("/v1/images/inspect?reference={}", encode(name)))
        .await
        .map_err(|e| DockerError::from(e).for_image(name))
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    filters: Option<String>,
    /// Intermediate images: berth keeps none, so `all` lists the same.
    all: Option<String>,
}

/// Docker's `reference` filter: `busybox`, `busybox:latest` or a glob's plain prefix
/// (`team/*`).
fn reference_matches(pattern: &str, tag: &str) -> bool {
    let tag = familiar(tag);
    let repo = repository(&tag);
    match pattern.strip_suffix('*') {
        Some(prefix) => tag.starts_with(prefix),
        None => tag == pattern || repo == pattern,
    }
}

pub async fn list(State(gateway): Shared, Query(query): Query<ListQuery>) -> DockerResult<Json<Vec<Value>>> {
    let _same_either_way = flag(&query.all);
    let filters = Filters::parse(&query.filters, &["reference", "dangling", "label"])?;
    let images: Vec<ImageRecord> = gateway.berth.get("/v1/images").await?;
    let listed = images
        .iter()
        .filter(|image| filters.any("reference", |p| image.tags.iter().any(|t| reference_matches(p, t))))
        .filter(|image| {
            filters.any("dangling", |d| {
                let dangling = image.tags.is_empty();
                if flag(&Some(d.to_string())) {
                    dangling
                } else {
                    !dangling
                }
            })
        })
        .filter(|_| filters.get("label").is_empty())
        .map(summary)
        .collect();
    Ok(Json(listed))
}

/// `GET /images/{name}/json|history|get`: the name may hold slashes.
pub async fn by_name_get(State(gateway): Shared, Path(rest): Path<String>) -> DockerResult<Response> {
    let Some((name, verb)) = rest.rsplit_once('/') else {
        return Err(DockerError::not_found(format!("page not found: /images/{rest}")));
    };
    match verb {
        "json" => Ok(Json(inspect_view(&resolve(&gateway, name).await?)).into_response()),
        "history" => history(&gateway, name).await.map(IntoResponse::into_response),
        "get" => Err(save_refused()),
        _ => Err(DockerError::not_found(format!("page not found: /images/{rest}"))),
    }
}

async fn history(gateway: &Gateway, name: &str) -> DockerResult<Json<Vec<Value>>> {
    let image = resolve(gateway, name).await?;
    let count = image.layers.len();
    let entries = image
        .layers
        .iter()
        .enumerate()
        .rev()
        .map(|(index, layer)| {
            let newest = index + 1 == count;
            json!({
                "Id": if newest { image.id.clone() } else { "<missing>".into() },
                "Created": image.created_at.timestamp(),
                "CreatedBy": format!("layer {}", layer.diff_id),
                "Tags": if newest { json!(image.tags.iter().map(|t| familiar(t)).collect::<Vec<_>>()) } else { Value::Null },
                "Size": layer.blob_size,
                "Comment": "",
            })
        })
        .collect();
    Ok(Json(entries))
}

fn save_refused() -> DockerError {
    DockerError::not_implemented(
        "berth cannot save images to an archive (it has no export of its image store); push the image to a registry instead (POST /images/{name}/push)",
    )
}

/// `GET /images/get?names=...`
pub async fn save() -> DockerError {
    save_refused()
}

#[derive(Debug, Deserialize)]
pub struct NameQuery {
    tag: Option<String>,
    repo: Option<String>,
}

/// `POST /images/{name}/push|tag`
pub async fn by_name_post(
    State(gateway): Shared,
    Path(rest): Path<String>,
    Query(query): Query<NameQuery>,
    headers: HeaderMap,
) -> DockerResult<Response> {
    let Some((name, verb)) = rest.rsplit_once('/') else {
        return Err(DockerError::not_found(format!("page not found: /images/{rest}")));
    };
    match verb {
        "push" => push(&gateway, name, query.tag.as_deref(), &headers).await,
        "tag" => {
            let repo = query
                .repo
                .filter(|r| !r.is_empty())
                .ok_or_else(|| DockerError::bad_parameter("repo is required"))?;
            let target = match query.tag.as_deref().filter(|t| !t.is_empty()) {
                Some(tag) => format!("{repo}:{tag}"),
                None => repo,
            };
            let _: ImageRecord = gateway
                .berth
                .post(
                    "/v1/images/tag",
                    &TagImageRequest {
                        source: name.to_string(),
                        target,
                    },
                )
                .await
                .map_err(|e| DockerError::from(e).for_image(name))?;
            Ok(StatusCode::CREATED.into_response())
        }
        _ => Err(DockerError::not_found(format!("page not found: /images/{rest}"))),
    }
}

#[derive(Debug, Default, Deserialize)]
struct RegistryAuth {
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// `X-Registry-Auth`: base64url JSON; empty or `{}` means none.
fn registry_auth(headers: &HeaderMap) -> DockerResult<RegistryAuth> {
    let Some(value) = headers.get("x-registry-auth").and_then(|v| v.to_str().ok()) else {
        return Ok(RegistryAuth::default());
    };
    let value = value.trim();
    if value.is_empty() {
        return Ok(RegistryAuth::default());
    }
    let decoded = base64::engine::general_purpose::URL_SAFE
        .decode(value)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(value))
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(value))
        .map_err(|_| DockerError::bad_parameter("X-Registry-Auth is not base64"))?;
    serde_json::from_slice(&decoded).map_err(|e| DockerError::bad_parameter(format!("X-Registry-Auth: {e}")))
}

/// Docker reaches registries on loopback over plain HTTP by default (127.0.0.0/8 is an
/// insecure registry CIDR); berth is told so explicitly.
fn is_loopback_registry(reference: &str) -> bool {
    let first = reference.split('/').next().unwrap_or("");
    if !reference.contains('/') {
        return false;
    }
    let host = match first.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => first,
    };
    host == "localhost" || host.starts_with("127.") || host == "[::1]"
}

fn registry_request(reference: String, auth: RegistryAuth) -> RegistryRequest {
    RegistryRequest {
        insecure: is_loopback_registry(&reference),
        reference,
        username: auth.username.filter(|u| !u.is_empty()),
        password: auth.password.filter(|p| !p.is_empty()),
    }
}

/// Translates berth's progress lines into Docker's JSON messages as they come.
struct ProgressTranslator {
    totals: HashMap<String, Option<u64>>,
    verb: &'static str,
}

fn short(id: &str) -> String {
    berth_model::instance::short_id(id).to_string()
}

impl ProgressTranslator {
    fn translate(&mut self, event: ProgressEvent) -> Value {
        match event {
            ProgressEvent::Started { id, total_bytes } => {
                self.totals.insert(id.clone(), total_bytes);
                json!({ "status": if self.verb == "push" { "Preparing" } else { "Pulling fs layer" }, "progressDetail": {}, "id": short(&id) })
            }
            ProgressEvent::Progress { id, current_bytes } => {
                let total = self.totals.get(&id).copied().flatten();
                json!({
                    "status": if self.verb == "push" { "Pushing" } else { "Downloading" },
                    "progressDetail": { "current": current_bytes, "total": total },
                    "id": short(&id),
                })
            }
            ProgressEvent::Done { id, note } => {
                let status = match note.as_str() {
                    "" if self.verb == "push" => "Pushed".to_string(),
                    "" => "Pull complete".to_string(),
                    "already exists" => "Already exists".to_string(),
                    other => other.to_string(),
                };
                json!({ "status": status, "progressDetail": {}, "id": short(&id) })
            }
            ProgressEvent::Message { text } => json!({ "status": text }),
            ProgressEvent::Finished { image_id, reference } => {
                let what = if reference.is_empty() {
                    image_id
                } else {
                    familiar(&reference)
                };
                if self.verb == "push" {
                    json!({ "status": format!("Pushed {what}") })
                } else {
                    json!({ "status": format!("Status: Downloaded newer image for {what}") })
                }
            }
            ProgressEvent::Failed { message } => json!({ "errorDetail": { "message": message }, "error": message }),
        }
    }
}

/// Runs a berth image job (pull, push) and streams its progress in Docker's words.
async fn progress_job(
    gateway: &Gateway,
    path: &str,
    request: &RegistryRequest,
    verb: &'static str,
    first: Value,
) -> DockerResult<Response> {
    let body = serde_json::to_vec(request).map_err(|e| DockerError::internal(e.to_string()))?;
    let mut lines = gateway
        .berth
        .stream(hyper::Method::POST, path, Some(body))
        .await?
        .lines();
    let (sender, receiver) = tokio::sync::mpsc::channel::<Bytes>(64);
    let mut translator = ProgressTranslator {
        totals: HashMap::new(),
        verb,
    };
    tokio::spawn(async move {
        let send = |value: Value| {
            let mut line = serde_json::to_vec(&value).unwrap_or_default();
            line.extend_from_slice(b"\r\n");
            Bytes::from(line)
        };
        if sender.send(send(first)).await.is_err() {
            return;
        }
        loop {
            match lines.next_line().await {
                Ok(Some(line)) => {
                    let Ok(event) = serde_json::from_slice::<ProgressEvent>(&line) else {
                        continue;
                    };
                    if sender.send(send(translator.translate(event))).await.is_err() {
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    let message = e.to_string();
                    let _ = sender
                        .send(send(json!({ "errorDetail": { "message": message }, "error": message })))
                        .await;
                    return;
                }
            }
        }
    });
    Ok(crate::streams::body_response("application/json", receiver))
}

#[derive(Debug, Deserialize)]
pub struct PullQuery {
    #[serde(rename = "fromImage")]
    from_image: Option<String>,
    #[serde(rename = "fromSrc")]
    from_src: Option<String>,
    tag: Option<String>,
    platform: Option<String>,
}

/// `POST /images/create?fromImage=...&tag=...` (`docker pull`).
pub async fn pull(
    State(gateway): Shared,
    Query(query): Query<PullQuery>,
    headers: HeaderMap,
) -> DockerResult<Response> {
    if query.from_src.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(DockerError::unsupported(
            "fromSrc (docker import)",
            "load a docker-save archive with POST /images/load, or use `berth image import`",
        ));
    }
    if let Some(platform) = query.platform.filter(|p| !p.is_empty()) {
        if !matches!(platform.as_str(), "linux" | "linux/amd64") {
            return Err(DockerError::unsupported(
                &format!("platform {platform}"),
                "berth pulls linux/amd64",
            ));
        }
    }
    let image = query
        .from_image
        .filter(|i| !i.is_empty())
        .ok_or_else(|| DockerError::bad_parameter("fromImage is required"))?;
    let reference = match query.tag.as_deref().filter(|t| !t.is_empty()) {
        Some(digest) if digest.starts_with("sha256:") => format!("{image}@{digest}"),
        Some(tag) => format!("{image}:{tag}"),
        None => image.clone(),
    };
    let request = registry_request(reference.clone(), registry_auth(&headers)?);
    tracing::info!(reference = %reference, insecure = request.insecure, "docker pull");
    let first = json!({ "status": format!("Pulling from {}", repository(&familiar(&reference))), "id": query.tag.unwrap_or_else(|| "latest".into()) });
    progress_job(&gateway, "/v1/images/pull", &request, "pull", first).await
}

async fn push(gateway: &Gateway, name: &str, tag: Option<&str>, headers: &HeaderMap) -> DockerResult<Response> {
    let reference = match tag.filter(|t| !t.is_empty()) {
        Some(tag) => format!("{name}:{tag}"),
        None => name.to_string(),
    };
    resolve(gateway, &reference).await?;
    let request = registry_request(reference.clone(), registry_auth(headers)?);
    let first = json!({ "status": format!("The push refers to repository [{}]", repository(&reference)) });
    progress_job(gateway, "/v1/images/push", &request, "push", first).await
}

#[derive(Debug, Deserialize)]
pub struct RemoveQuery {
    force: Option<String>,
    noprune: Option<String>,
}

/// `DELETE /images/{name}`
pub async fn remove(
    State(gateway): Shared,
    Path(name): Path<String>,
    Query(query): Query<RemoveQuery>,
) -> DockerResult<Json<Vec<Value>>> {
    if flag(&query.noprune) {
        return Err(DockerError::unsupported(
            "noprune",
            "berth has no untagged parents to keep",
        ));
    }
    let image = resolve(&gateway, &name).await?;
    #[derive(Deserialize)]
    struct Removed {
        untagged: Vec<String>,
        deleted: bool,
    }
    let force = if flag(&query.force) { "&force=true" } else { "" };
    let reply = gateway
        .berth
        .delete(&format!("/v1/images?reference={}{force}", encode(&name)))
        .await
        .map_err(|e| DockerError::from(e).for_image(&name))?;
    let removed: Removed =
        serde_json::from_slice(&reply).map_err(|e| DockerError::internal(format!("berth's answer: {e}")))?;
    let mut answer: Vec<Value> = removed
        .untagged
        .iter()
        .map(|t| json!({ "Untagged": familiar(t) }))
        .collect();
    if removed.deleted {
        answer.push(json!({ "Deleted": image.id }));
    }
    Ok(Json(answer))
}

#[derive(Debug, Deserialize)]
pub struct LoadQuery {
    quiet: Option<String>,
}

/// `POST /images/load`: a `docker save` archive, written to a file berth imports.
pub async fn load(State(gateway): Shared, Query(query): Query<LoadQuery>, body: Body) -> DockerResult<Response> {
    let quiet = flag(&query.quiet);
    let uploads = gateway.state_dir.join("uploads");
    tokio::fs::create_dir_all(&uploads)
        .await
        .map_err(|e| DockerError::internal(format!("creating {}: {e}", uploads.display())))?;
    let path = uploads.join(format!("load-{}.tar", &berth_model::instance::new_instance_id()[..16]));
    let written = write_body(body, &path).await;
    if let Err(e) = written {
        let _ = tokio::fs::remove_file(&path).await;
        return Err(e);
    }
    let request = ImportImageRequest {
        path: path.display().to_string(),
        tag: None,
        vm: false,
        format: None,
        allow_device: false,
        compress: false,
        firmware: None,
    };
    let result = import(&gateway, &request).await;
    let _ = tokio::fs::remove_file(&path).await;
    let lines = match result {
        Ok(references) => references
            .iter()
            .map(|r| {
                let text = if r.starts_with("sha256:") {
                    format!("Loaded image ID: {r}\n")
                } else {
                    format!("Loaded image: {}\n", familiar(r))
                };
                json!({ "stream": text })
            })
            .collect::<Vec<_>>(),
        Err(message) => vec![json!({ "errorDetail": { "message": message }, "error": message })],
    };
    let _ = quiet;
    let mut body = Vec::new();
    for line in lines {
        body.extend_from_slice(&serde_json::to_vec(&line).unwrap_or_default());
        body.push(b'\n');
    }
    Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response())
}

async fn write_body(body: Body, path: &std::path::Path) -> DockerResult<()> {
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|e| DockerError::internal(format!("creating {}: {e}", path.display())))?;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| DockerError::bad_parameter(format!("reading the archive: {e}")))?;
        file.write_all(&chunk)
            .await
            .map_err(|e| DockerError::internal(format!("writing {}: {e}", path.display())))?;
    }
    file.flush()
        .await
        .map_err(|e| DockerError::internal(format!("writing {}: {e}", path.display())))
}

/// Imports the archive; the images' references (or ids) on success, berth's message on
/// failure.
async fn import(gateway: &Gateway, request: &ImportImageRequest) -> Result<Vec<String>, String> {
    let body = serde_json::to_vec(request).map_err(|e| e.to_string())?;
    let mut lines = gateway
        .berth
        .stream(hyper::Method::POST, "/v1/images/import", Some(body))
        .await
        .map_err(|e| e.to_string())?
        .lines();
    while let Some(line) = lines.next_line().await.map_err(|e| e.to_string())? {
        match serde_json::from_slice::<ProgressEvent>(&line) {
            Ok(ProgressEvent::Finished { image_id, reference }) => {
                let image = resolve(gateway, &image_id).await.map_err(|e| e.message)?;
                return Ok(if image.tags.is_empty() {
                    vec![if reference.is_empty() { image_id } else { reference }]
                } else {
                    image.tags
                });
            }
            Ok(ProgressEvent::Failed { message }) => return Err(message),
            _ => {}
        }
    }
    Err("berth ended the import without a result".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_as_people_write_them() {
        assert_eq!(familiar("docker.io/library/busybox:latest"), "busybox:latest");
        assert_eq!(familiar("127.0.0.1:5000/a/b:1"), "127.0.0.1:5000/a/b:1");
        assert_eq!(repository("127.0.0.1:5000/a/b:1"), "127.0.0.1:5000/a/b");
        assert_eq!(repository("127.0.0.1:5000/a/b"), "127.0.0.1:5000/a/b");
        assert!(reference_matches("busybox", "docker.io/library/busybox:latest"));
        assert!(reference_matches("busybox:latest", "docker.io/library/busybox:latest"));
        assert!(!reference_matches("alpine", "docker.io/library/busybox:latest"));
    }

    #[test]
    fn loopback_registries_are_plain_http() {
        assert!(is_loopback_registry("127.0.0.1:5000/a/b:1"));
        assert!(is_loopback_registry("localhost:5000/a"));
        assert!(!is_loopback_registry("busybox"));
        assert!(!is_loopback_registry("registry.example.com/a"));
    }
}
