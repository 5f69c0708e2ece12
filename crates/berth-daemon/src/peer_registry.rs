//! Each node serves its images to the other nodes as a read-only OCI Distribution registry
//! on its peer port (behind the cluster's token, given as Basic credentials `berth:TOKEN`), so
//! an image imported or pulled on one node runs on any: the node that needs it pulls it with
//! the same client and digest checks as from any registry (`ImageStore::pull_from_peer`).
//!
//! `GET /v2/` · `GET|HEAD /v2/<REGISTRY/REPO>/manifests/<TAG|DIGEST>` ·
//! `GET|HEAD /v2/<REGISTRY/REPO>/blobs/<DIGEST>`. The repository path is the image's
//! normalized name (`docker.io/library/busybox`), so `NODE:PORT/docker.io/library/busybox:latest`
//! names what `busybox` names on that node.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::engine::Engine;

pub fn router(engine: Arc<Engine>) -> Router {
    Router::new()
        .route("/v2/", get(version))
        .route("/v2/{*rest}", get(content).head(content))
        .with_state(engine)
}

async fn version() -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], "{}").into_response()
}

fn not_found(what: &str) -> Response {
    let body = format!("{{\"errors\":[{{\"code\":\"MANIFEST_UNKNOWN\",\"message\":\"{what}\"}}]}}");
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

async fn content(State(engine): State<Arc<Engine>>, method: Method, Path(rest): Path<String>) -> Response {
    if let Some((repository, reference)) = rest.rsplit_once("/manifests/") {
        return manifest(&engine, &method, repository, reference).await;
    }
    if let Some((_, digest)) = rest.rsplit_once("/blobs/") {
        return blob(&engine, &method, digest).await;
    }
    not_found("no such registry endpoint")
}

async fn manifest(engine: &Engine, method: &Method, repository: &str, reference: &str) -> Response {
    let wanted = if reference.starts_with("sha256:") {
        format!("{repository}@{reference}")
    } else {
        format!("{repository}:{reference}")
    };
    let images = match engine.images.list().await {
        Ok(images) => images,
        Err(e) => return crate::error::EngineError::from(e).into_response(),
    };
    let found = images
        .into_iter()
        .find(|image| image.disk.is_none() && (image.tags.contains(&wanted) || image.manifest_digest == reference));
    let Some(image) = found else {
        return not_found(&format!("no image {wanted} on this node"));
    };
    let bytes = match engine.images.manifest_bytes(&image) {
        Ok(bytes) => bytes,
        Err(e) => return crate::error::EngineError::from(e).into_response(),
    };
    let media_type = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.get("mediaType").and_then(|m| m.as_str()).map(str::to_string))
        .unwrap_or_else(|| "application/vnd.oci.image.manifest.v1+json".into());
    let mut response = if *method == Method::HEAD {
        Response::new(Body::empty())
    } else {
        Response::new(Body::from(bytes.clone()))
    };
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&media_type) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    if let Ok(value) = HeaderValue::from_str(&image.manifest_digest) {
        headers.insert("docker-content-digest", value);
    }
    response
}

async fn blob(engine: &Engine, method: &Method, digest: &str) -> Response {
    let Some(path) = engine.images.blob_file(digest) else {
        return not_found(&format!("no blob {digest} on this node"));
    };
    let file = match tokio::fs::File::open(&path).await {
        Ok(file) => file,
        Err(_) => return not_found(&format!("no blob {digest} on this node")),
    };
    let length = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    let mut response = if *method == Method::HEAD {
        Response::new(Body::empty())
    } else {
        Response::new(Body::from_stream(tokio_util::io::ReaderStream::new(file)))
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    if let Ok(value) = HeaderValue::from_str(digest) {
        headers.insert("docker-content-digest", value);
    }
    response
}
