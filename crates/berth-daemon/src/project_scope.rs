//! What a client trusted for a project may do over HTTPS: its project's instances (create,
//! list, everything under `/v1/instances/{id}`), volumes and networks (create, list, use,
//! remove), images (pull, list, push, use, remove its claim), and read the types and `info`.
//! Its creates are labelled with the project (so its quotas hold) and may not reach the host:
//! no bind mounts or host paths, no host network, no lifted confinement, no VM disk on a host
//! path, no image imported from a host file; they may use only the project's own images,
//! volumes and networks (and the default network). Another project's instance, volume,
//! network or image is "no such ..." to it. Everything else is a 403 naming the project.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use berth_model::api::CreateInstanceRequest;
use berth_model::project::{ResourceKind, PROJECT_LABEL};

use crate::audit::Refused;
use crate::engine::Engine;
use crate::error::EngineError;

/// The network every project's instances may join.
const DEFAULT_NETWORK: &str = "default";

/// The most a create body or an instance listing may weigh here.
const BODY_LIMIT: usize = 64 << 20;

fn refuse(status: StatusCode, message: String) -> Response {
    let mut response = EngineError::new(status, message.clone()).into_response();
    response.extensions_mut().insert(Refused(message));
    response
}

/// Why a project's client may not create this, if it may not.
fn reaches_the_host(request: &CreateInstanceRequest) -> Option<String> {
    if let Some(volume) = request
        .volumes
        .iter()
        .find(|v| v.starts_with('/') || v.starts_with('.'))
    {
        return Some(format!("volumes: '{volume}' mounts a host path; use a named volume"));
    }
    if let Some(mount) = request
        .mounts
        .iter()
        .find(|m| m.contains("type=bind") || m.contains("bind-"))
    {
        return Some(format!(
            "mounts: '{mount}' is a bind mount of a host path; use a named volume"
        ));
    }
    if request.network.as_deref() == Some("host") {
        return Some("network: the host's network is not for a project's instances".into());
    }
    if let Some(option) = request
        .security_opts
        .iter()
        .find(|o| o.contains("unconfined") || o.contains("privileged"))
    {
        return Some(format!("security_opts: '{option}' lifts the instance's confinement"));
    }
    if let Some(disk_on) = request.vm.as_ref().and_then(|vm| vm.disk_on.as_deref()) {
        if !disk_on.starts_with("nfs://") {
            return Some(format!("vm.disk_on: '{disk_on}' is a host path or device"));
        }
    }
    None
}

pub async fn confine(engine: &Arc<Engine>, project: &str, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let forbidden = || {
        refuse(
            StatusCode::FORBIDDEN,
            format!(
                "a client of project {project} reaches its project's instances only (and reads images, types and info)"
            ),
        )
    };
    match (&method, path.as_str()) {
        (_, "/v1/_ping") => next.run(request).await,
        (&Method::GET, "/v1/types" | "/v1/info") => next.run(request).await,
        (&Method::POST, "/v1/instances") => create(engine, project, request, next).await,
        (&Method::GET, "/v1/instances") => list(project, request, next).await,
        // Writes files or devices of the host.
        (&Method::POST, rest) if rest.starts_with("/v1/instances/") && rest.ends_with("/export") => refuse(
            StatusCode::FORBIDDEN,
            "a project's clients cannot write a VM to the host's files or devices; the host's administrator can (berth vm export)".into(),
        ),
        (_, rest) if rest.starts_with("/v1/instances/") => {
            let id = first_segment(rest, "/v1/instances/");
            match engine.find_anywhere(&id).await {
                Ok(instance) if instance.spec.labels.get(PROJECT_LABEL).map(String::as_str) == Some(project) => {
                    next.run(request).await
                }
                // Another project's instance is none of this client's business.
                _ => EngineError::not_found(format!("no such instance: {id}")).into_response(),
            }
        }
        (&Method::GET, "/v1/volumes") => owned_only(engine, project, ResourceKind::Volume, "name", request, next).await,
        (&Method::POST, "/v1/volumes") => create_owned(engine, project, ResourceKind::Volume, request, next).await,
        (_, rest) if rest.starts_with("/v1/volumes/") => {
            let name = first_segment(rest, "/v1/volumes/");
            if_owned(engine, project, ResourceKind::Volume, &name, request, next).await
        }
        (&Method::GET, "/v1/networks") => {
            owned_only(engine, project, ResourceKind::Network, "name", request, next).await
        }
        (&Method::POST, "/v1/networks") => create_owned(engine, project, ResourceKind::Network, request, next).await,
        (_, rest) if rest.starts_with("/v1/networks/") => {
            let name = first_segment(rest, "/v1/networks/");
            if name == DEFAULT_NETWORK {
                return refuse(
                    StatusCode::FORBIDDEN,
                    format!("project {project}: the default network is every project's to use and root's to change"),
                );
            }
            if_owned(engine, project, ResourceKind::Network, &name, request, next).await
        }
        (&Method::GET, "/v1/images") => owned_only(engine, project, ResourceKind::Image, "id", request, next).await,
        (&Method::GET, "/v1/images/inspect") => {
            let reference = query_value(&request, "name").or_else(|| query_value(&request, "reference"));
            if_image_owned(engine, project, reference, request, next).await
        }
        (&Method::POST, "/v1/images/pull") => {
            let mut request = request;
            request.extensions_mut().insert(ProjectScope(project.to_string()));
            next.run(request).await
        }
        (&Method::POST, "/v1/images/push") => {
            let (parts, body) = request.into_parts();
            let Ok(bytes) = axum::body::to_bytes(body, BODY_LIMIT).await else {
                return EngineError::invalid("body", "the body could not be read").into_response();
            };
            let reference = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v["reference"].as_str().map(str::to_string));
            let request = Request::from_parts(parts, Body::from(bytes));
            if_image_owned(engine, project, reference, request, next).await
        }
        (&Method::DELETE, "/v1/images") => {
            let reference = query_value(&request, "reference").unwrap_or_default();
            match engine.images.resolve(&reference).await {
                Ok(image)
                    if engine
                        .project_owns(project, ResourceKind::Image, &image.id)
                        .await
                        .unwrap_or(false) =>
                {
                    // The image's content may be other projects' and root's too: the project's
                    // claim goes; root's `image rm` or a prune removes the data.
                    match engine.disown(project, ResourceKind::Image, &image.id).await {
                        Ok(()) => axum::Json(serde_json::json!({ "untagged": [], "deleted": false })).into_response(),
                        Err(e) => e.into_response(),
                    }
                }
                _ => EngineError::not_found(format!("no such image in project {project}: {reference}")).into_response(),
            }
        }
        _ => forbidden(),
    }
}

async fn create(engine: &Arc<Engine>, project: &str, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, BODY_LIMIT).await else {
        return EngineError::invalid("body", "the body could not be read").into_response();
    };
    let mut create: CreateInstanceRequest = match serde_json::from_slice(&bytes) {
        Ok(create) => create,
        Err(e) => return EngineError::invalid("body", format!("not a create request: {e}")).into_response(),
    };
    if let Some(reason) = reaches_the_host(&create) {
        return refuse(
            StatusCode::FORBIDDEN,
            format!("project {project}: {reason} (project clients cannot reach the host)"),
        );
    }
    if let Some(missing) = not_the_projects(engine, project, &create).await {
        return refuse(StatusCode::NOT_FOUND, format!("project {project}: {missing}"));
    }
    create.labels.insert(PROJECT_LABEL.to_string(), project.to_string());
    let Ok(bytes) = serde_json::to_vec(&create) else {
        return EngineError::internal("re-encoding the create request").into_response();
    };
    parts.headers.insert(header::CONTENT_LENGTH, bytes.len().into());
    next.run(Request::from_parts(parts, Body::from(bytes))).await
}

async fn list(project: &str, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    filter_listing(response, |instance| {
        instance["spec"]["labels"][PROJECT_LABEL] == project
    })
    .await
}

/// A successful JSON-array answer with only the entries `keep` keeps (anything else as is).
async fn filter_listing(response: Response, keep: impl Fn(&serde_json::Value) -> bool) -> Response {
    if !response.status().is_success() {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, BODY_LIMIT).await else {
        return EngineError::internal("reading the listing").into_response();
    };
    let Ok(mut entries) = serde_json::from_slice::<Vec<serde_json::Value>>(&bytes) else {
        return EngineError::internal("the listing is not JSON").into_response();
    };
    entries.retain(|entry| keep(entry));
    let bytes = serde_json::to_vec(&entries).unwrap_or_default();
    parts.headers.insert(header::CONTENT_LENGTH, bytes.len().into());
    Response::from_parts(parts, Body::from(bytes))
}

/// Set on a project client's request for handlers that record what it made (an image pull).
#[derive(Debug, Clone)]
pub struct ProjectScope(pub String);

/// The decoded first path segment after `prefix`.
fn first_segment(path: &str, prefix: &str) -> String {
    let segment = path.trim_start_matches(prefix).split('/').next().unwrap_or("");
    percent_encoding::percent_decode_str(segment)
        .decode_utf8_lossy()
        .into_owned()
}

fn query_value(request: &Request, key: &str) -> Option<String> {
    let query = request.uri().query()?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// What a project client's create names that is not its project's: an image it has not
/// pulled, another's volume or network.
async fn not_the_projects(engine: &Arc<Engine>, project: &str, create: &CreateInstanceRequest) -> Option<String> {
    let owns = |kind: ResourceKind, name: String| async move {
        engine.project_owns(project, kind, &name).await.unwrap_or(false)
    };
    match engine.images.resolve(&create.image).await {
        Ok(image) if owns(ResourceKind::Image, image.id.clone()).await => {}
        // Unknown to the daemon: the create handler says so.
        Err(_) => {}
        Ok(_) => {
            return Some(format!(
                "image: no image {} in this project; pull it (POST /v1/images/pull) first",
                create.image
            ))
        }
    }
    let named_volumes = create
        .volumes
        .iter()
        .filter_map(|v| v.split(':').next())
        .chain(create.mounts.iter().filter_map(|m| {
            let fields: Vec<&str> = m.split(',').collect();
            let is_volume = !fields.iter().any(|f| f.starts_with("type=") && *f != "type=volume");
            fields
                .iter()
                .find_map(|f| f.strip_prefix("source=").or_else(|| f.strip_prefix("src=")))
                .filter(|_| is_volume)
        }))
        .filter(|name| !name.is_empty() && !name.starts_with('/') && !name.starts_with('.'))
        .map(str::to_string)
        .collect::<Vec<_>>();
    for volume in named_volumes {
        if !owns(ResourceKind::Volume, volume.clone()).await {
            return Some(format!(
                "volumes: no volume {volume} in this project; create it (POST /v1/volumes) first"
            ));
        }
    }
    match create.network.as_deref() {
        None | Some(DEFAULT_NETWORK) | Some("none") => {}
        Some(network) if owns(ResourceKind::Network, network.to_string()).await => {}
        Some(network) => {
            return Some(format!(
                "network: no network {network} in this project; create it (POST /v1/networks) first"
            ))
        }
    }
    None
}

/// A listing answered with only the project's own entries (`field` names them).
async fn owned_only(
    engine: &Arc<Engine>,
    project: &str,
    kind: ResourceKind,
    field: &str,
    request: Request,
    next: Next,
) -> Response {
    let owned: std::collections::HashSet<String> = match engine.project_resources(project).await {
        Ok(resources) => resources
            .into_iter()
            .filter(|r| r.kind == kind)
            .map(|r| r.name)
            .collect(),
        Err(e) => return e.into_response(),
    };
    let response = next.run(request).await;
    // Every project may use the default network: it is listed for them all.
    filter_listing(response, |entry| {
        entry[field]
            .as_str()
            .is_some_and(|name| owned.contains(name) || (kind == ResourceKind::Network && name == DEFAULT_NETWORK))
    })
    .await
}

/// A create whose result becomes the project's.
async fn create_owned(
    engine: &Arc<Engine>,
    project: &str,
    kind: ResourceKind,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, BODY_LIMIT).await else {
        return EngineError::invalid("body", "the body could not be read").into_response();
    };
    let name = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v["name"].as_str().map(str::to_string));
    let response = next.run(Request::from_parts(parts, Body::from(bytes))).await;
    if let (true, Some(name)) = (response.status().is_success(), name) {
        if let Err(e) = engine.own(project, kind, &name).await {
            return e.into_response();
        }
    }
    response
}

/// Passes the request on if the project owns `name`; else "no such ...".
async fn if_owned(
    engine: &Arc<Engine>,
    project: &str,
    kind: ResourceKind,
    name: &str,
    request: Request,
    next: Next,
) -> Response {
    match engine.project_owns(project, kind, name).await {
        Ok(true) => next.run(request).await,
        Ok(false) => {
            EngineError::not_found(format!("no such {} in project {project}: {name}", kind.as_str())).into_response()
        }
        Err(e) => e.into_response(),
    }
}

async fn if_image_owned(
    engine: &Arc<Engine>,
    project: &str,
    reference: Option<String>,
    request: Request,
    next: Next,
) -> Response {
    let reference = reference.unwrap_or_default();
    match engine.images.resolve(&reference).await {
        Ok(image) => if_owned(engine, project, ResourceKind::Image, &image.id, request, next).await,
        Err(_) => EngineError::not_found(format!("no such image in project {project}: {reference}")).into_response(),
    }
}
