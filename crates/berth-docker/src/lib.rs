//! The Docker Engine API (1.41, negotiated down to 1.24) as a gateway onto berth's own API:
//! each Docker request becomes calls on the daemon's unix socket through `berth_client`, so
//! placement, forwarding to other nodes, validation and errors are berth's own. Unmodified
//! Docker clients (the `docker` CLI, docker-compose, docker-py) talk to `serve`'s socket.

#![recursion_limit = "256"]

mod containers;
mod create;
mod error;
mod images;
mod labels;
mod networks_volumes;
mod params;
mod streams;
mod system;
mod view;

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use berth_client::Client;
use tower::Layer;

pub use error::DockerError;

/// The API version spoken: what Debian's docker 20.10 CLI asks for.
pub const API_VERSION: &str = "1.41";
/// The oldest version a client may ask for (`/v1.24/...`).
pub const MIN_API_VERSION: &str = "1.24";
const MAX_VERSION: (u32, u32) = (1, 41);
const MIN_VERSION: (u32, u32) = (1, 24);

/// Where the gateway finds berth and keeps its own files.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The daemon's own API socket.
    pub berth_socket: PathBuf,
    /// A private directory for uploads (`docker load` archives) and the labels of networks
    /// and volumes, which berth does not keep itself.
    pub state_dir: PathBuf,
}

/// What the handlers share.
pub(crate) struct Gateway {
    pub berth: Client,
    pub state_dir: PathBuf,
    pub execs: streams::ExecStore,
    pub sessions: streams::Sessions,
    pub labels: labels::LabelBook,
}

pub(crate) type Shared = axum::extract::State<Arc<Gateway>>;

/// Serves the Docker API on `listener` until the task is dropped or the listener fails.
pub async fn serve(listener: tokio::net::UnixListener, config: GatewayConfig) -> std::io::Result<()> {
    std::fs::create_dir_all(&config.state_dir)?;
    // berth imports uploads by absolute path.
    let state_dir = std::fs::canonicalize(&config.state_dir)?;
    let gateway = Arc::new(Gateway {
        berth: Client::new(&config.berth_socket),
        labels: labels::LabelBook::open(state_dir.join("labels.json")),
        state_dir,
        execs: Default::default(),
        sessions: Default::default(),
    });
    // Versioned paths are rewritten before routing, so every route is written once.
    let app = axum::middleware::from_fn(version_prefix).layer(router(gateway));
    axum::serve(listener, axum::ServiceExt::<Request>::into_make_service(app)).await
}

fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route("/_ping", get(system::ping).head(system::ping))
        .route("/version", get(system::version))
        .route("/info", get(system::info))
        .route("/events", get(system::events))
        .route("/system/df", get(system::disk_usage))
        .route("/containers/json", get(containers::list))
        .route("/containers/create", post(containers::create))
        .route("/containers/{id}/json", get(containers::inspect))
        .route("/containers/{id}", axum::routing::delete(containers::remove))
        .route("/containers/{id}/start", post(containers::start))
        .route("/containers/{id}/stop", post(containers::stop))
        .route("/containers/{id}/restart", post(containers::restart))
        .route("/containers/{id}/kill", post(containers::kill))
        .route("/containers/{id}/pause", post(containers::pause))
        .route("/containers/{id}/unpause", post(containers::unpause))
        .route("/containers/{id}/wait", post(containers::wait))
        .route("/containers/{id}/update", post(containers::update))
        .route("/containers/{id}/rename", post(containers::rename))
        .route("/containers/{id}/top", get(containers::top))
        .route("/containers/{id}/stats", get(containers::stats))
        .route("/containers/{id}/resize", post(streams::resize_container))
        .route("/containers/{id}/logs", get(streams::logs))
        .route("/containers/{id}/attach", post(streams::attach))
        .route("/containers/{id}/exec", post(streams::create_exec))
        .route("/exec/{id}/start", post(streams::start_exec))
        .route("/exec/{id}/resize", post(streams::resize_exec))
        .route("/exec/{id}/json", get(streams::inspect_exec))
        .route("/images/json", get(images::list))
        .route("/images/create", post(images::pull))
        .route("/images/load", post(images::load))
        .route("/images/get", get(images::save))
        // Image names hold slashes (`registry:5000/team/app`): the verb is the last segment.
        .route(
            "/images/{*rest}",
            get(images::by_name_get)
                .post(images::by_name_post)
                .delete(images::remove),
        )
        .route("/networks", get(networks_volumes::list_networks))
        .route("/networks/create", post(networks_volumes::create_network))
        .route("/networks/prune", post(networks_volumes::prune_networks))
        .route(
            "/networks/{id}",
            get(networks_volumes::inspect_network).delete(networks_volumes::remove_network),
        )
        .route("/networks/{id}/connect", post(networks_volumes::connect))
        .route("/networks/{id}/disconnect", post(networks_volumes::disconnect))
        .route("/volumes", get(networks_volumes::list_volumes))
        .route("/volumes/create", post(networks_volumes::create_volume))
        .route("/volumes/prune", post(networks_volumes::prune_volumes))
        .route(
            "/volumes/{name}",
            get(networks_volumes::inspect_volume).delete(networks_volumes::remove_volume),
        )
        .fallback(not_found)
        .with_state(gateway)
}

async fn not_found(uri: Uri) -> DockerError {
    DockerError::not_found(format!(
        "page not found: berth's Docker API has no {} (see berth's README, \"Docker Engine API\")",
        uri.path()
    ))
}

/// `/v1.41/containers/json` → (1.41, `/containers/json`); `None` for unversioned paths.
fn split_version(path: &str) -> Option<((u32, u32), &str)> {
    let rest = path.strip_prefix("/v")?;
    let end = rest.find('/')?;
    let (major, minor) = rest[..end].split_once('.')?;
    Some(((major.parse().ok()?, minor.parse().ok()?), &rest[end..]))
}

/// Takes the version off the path (refusing versions outside 1.24 to 1.41, as Docker does)
/// and adds the headers Docker answers every request with.
async fn version_prefix(mut request: Request, next: Next) -> Response {
    let path = request.uri().path().to_string();
    if let Some((version, rest)) = split_version(&path) {
        if version > MAX_VERSION {
            return DockerError::bad_parameter(format!(
                "client version {}.{} is too new. Maximum supported API version is {API_VERSION}",
                version.0, version.1
            ))
            .into_response();
        }
        if version < MIN_VERSION {
            return DockerError::bad_parameter(format!(
                "client version {}.{} is too old. Minimum supported API version is {MIN_API_VERSION}, please upgrade your client to a newer version",
                version.0, version.1
            ))
            .into_response();
        }
        let rewritten = match request.uri().query() {
            Some(query) => format!("{rest}?{query}"),
            None => rest.to_string(),
        };
        match rewritten.parse::<Uri>() {
            Ok(uri) => *request.uri_mut() = uri,
            Err(_) => return (StatusCode::BAD_REQUEST, "bad request path").into_response(),
        }
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert("api-version", HeaderValue::from_static(API_VERSION));
    headers.insert("ostype", HeaderValue::from_static("linux"));
    headers.insert("docker-experimental", HeaderValue::from_static("false"));
    headers.insert(
        "server",
        HeaderValue::from_static(concat!("berth/", env!("CARGO_PKG_VERSION"), " (linux)")),
    );
    response
}

/// A path segment for berth's API (names and ids are percent-encoded).
pub(crate) fn encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_come_off_the_path() {
        assert_eq!(
            split_version("/v1.41/containers/json"),
            Some(((1, 41), "/containers/json"))
        );
        assert_eq!(split_version("/v1.24/_ping"), Some(((1, 24), "/_ping")));
        assert_eq!(split_version("/volumes/v1.2"), None);
        assert_eq!(split_version("/version"), None);
        assert!((1, 9) < MIN_VERSION && (1, 43) > MAX_VERSION);
    }
}
