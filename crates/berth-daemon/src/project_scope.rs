//! What a client trusted for a project may do over HTTPS: its project's instances (create,
//! list, everything under `/v1/instances/{id}`), and read the image list, the types and
//! `info`. Its creates are labelled with the project (so its quotas hold) and may not reach
//! the host: no bind mounts or host paths, no host network, no lifted confinement, no VM disk
//! on a host path. Another project's instance is "no such instance" to it. Everything else is
//! a 403 naming the project.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use berth_model::api::CreateInstanceRequest;
use berth_model::project::PROJECT_LABEL;

use crate::audit::Refused;
use crate::engine::Engine;
use crate::error::EngineError;

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
        (&Method::GET, "/v1/types" | "/v1/images" | "/v1/info") => next.run(request).await,
        (&Method::POST, "/v1/instances") => create(project, request, next).await,
        (&Method::GET, "/v1/instances") => list(project, request, next).await,
        (_, rest) if rest.starts_with("/v1/instances/") => {
            let id = rest
                .trim_start_matches("/v1/instances/")
                .split('/')
                .next()
                .unwrap_or("");
            let id = percent_encoding::percent_decode_str(id)
                .decode_utf8_lossy()
                .into_owned();
            match engine.find_anywhere(&id).await {
                Ok(instance) if instance.spec.labels.get(PROJECT_LABEL).map(String::as_str) == Some(project) => {
                    next.run(request).await
                }
                // Another project's instance is none of this client's business.
                _ => EngineError::not_found(format!("no such instance: {id}")).into_response(),
            }
        }
        _ => forbidden(),
    }
}

async fn create(project: &str, request: Request, next: Next) -> Response {
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
    create.labels.insert(PROJECT_LABEL.to_string(), project.to_string());
    let Ok(bytes) = serde_json::to_vec(&create) else {
        return EngineError::internal("re-encoding the create request").into_response();
    };
    parts.headers.insert(header::CONTENT_LENGTH, bytes.len().into());
    next.run(Request::from_parts(parts, Body::from(bytes))).await
}

async fn list(project: &str, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    if !response.status().is_success() {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, BODY_LIMIT).await else {
        return EngineError::internal("reading the instance list").into_response();
    };
    let Ok(mut instances) = serde_json::from_slice::<Vec<serde_json::Value>>(&bytes) else {
        return EngineError::internal("the instance list is not JSON").into_response();
    };
    instances.retain(|i| i["spec"]["labels"][PROJECT_LABEL] == project);
    let bytes = serde_json::to_vec(&instances).unwrap_or_default();
    parts.headers.insert(header::CONTENT_LENGTH, bytes.len().into());
    Response::from_parts(parts, Body::from(bytes))
}
