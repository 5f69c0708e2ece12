//! The web dashboard, served on the HTTPS listener (`--listen`): one page with its script
//! and style built into the binary (plain JavaScript: no build step), xterm.js from the npm
//! registry read from `--dashboard-assets` (scripts/install-deps.sh puts it there), browser
//! sessions, and WebSocket bridges from the page to an instance's console and to a shell in
//! it. Everything the page shows and does goes through the same `/v1` API as the CLI, so
//! the audit log, projects and forwarding to the instance's node apply unchanged.
//!
//! A browser logs in with a join token (`berth trust add NAME --token`): the token is
//! redeemed, as `berth remote add` redeems it, but what becomes trusted is a random session
//! secret held in an HttpOnly, Secure, SameSite=Strict cookie; the store keeps only its
//! SHA-256, listed by `trust ls` (added by "dashboard") and ended by `trust rm NAME`, the
//! page's log-out, or seven days. A browser presenting a trusted client certificate needs no login.

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use berth_model::api::ExecRequest;
use berth_model::trust::DASHBOARD_SESSION_DAYS;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::audit::TrustedAs;
use crate::engine::Engine;
use crate::error::{EngineError, EngineResult};

const INDEX: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/app.js");
const STYLE: &str = include_str!("dashboard/app.css");

/// The session cookie's name.
const SESSION_COOKIE: &str = "berth_session";
/// Every state-changing request a session makes carries it: a page on another origin cannot
/// set a custom header without a CORS preflight, which this daemon never grants.
const DASHBOARD_HEADER: &str = "x-berth-dashboard";
/// The files of `--dashboard-assets` the page loads (nothing else there is served).
const VENDOR_FILES: &[(&str, &str)] = &[
    ("xterm.js", "text/javascript; charset=utf-8"),
    ("xterm.css", "text/css; charset=utf-8"),
];

/// Where xterm.js is unless `--dashboard-assets` says otherwise.
pub const DEFAULT_ASSETS_DIR: &str = "/usr/local/lib/berth/dashboard";

/// The page and its files, login and logout: served on the HTTPS listener only.
pub fn routes(engine: Arc<Engine>) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route("/ui/", get(index))
        .route(
            "/ui/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route("/ui/app.css", get(|| async { asset("text/css; charset=utf-8", STYLE) }))
        .route("/ui/vendor/{file}", get(vendor))
        .route("/ui/login", post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/whoami", get(whoami))
        .with_state(engine)
}

/// What an untrusted browser may fetch: the page, its files and the login.
pub fn is_public(method: &Method, path: &str) -> bool {
    match *method {
        Method::GET | Method::HEAD => {
            matches!(
                path,
                "/" | "/favicon.ico" | "/ui" | "/ui/" | "/ui/app.js" | "/ui/app.css"
            ) || path.starts_with("/ui/vendor/")
        }
        Method::POST => path == "/ui/login",
        _ => false,
    }
}

/// The dashboard's own endpoints a logged-in browser reaches whatever its project.
pub fn is_session_endpoint(path: &str) -> bool {
    matches!(path, "/ui/whoami" | "/ui/logout")
}

/// The store key of the session a request's cookie names, if it has one.
pub fn session_fingerprint(headers: &HeaderMap) -> Option<String> {
    session_secret(headers).map(|secret| hex::encode(Sha256::digest(secret.as_bytes())))
}

fn session_secret(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == SESSION_COOKIE)
        .map(|c| c.value().to_string())
}

/// Why a request carried by a session cookie is refused, if it is: a state change without
/// the dashboard's header, or a WebSocket opened by a page of another origin.
pub fn cross_site(request: &Request) -> Option<String> {
    let headers = request.headers();
    let method = request.method();
    if *method != Method::GET && *method != Method::HEAD && !headers.contains_key(DASHBOARD_HEADER) {
        return Some(format!(
            "a dashboard session's {method} needs the {DASHBOARD_HEADER} header (cross-site requests are refused)"
        ));
    }
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if let (Some(origin), Some(host)) = (origin, host) {
        let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
        if !origin_host.eq_ignore_ascii_case(host) {
            return Some(format!(
                "a request from a page of {origin} with this daemon's session is refused"
            ));
        }
    }
    None
}

async fn index() -> Response {
    let mut response = asset("text/html; charset=utf-8", INDEX);
    // The page runs only its own scripts and talks only to this daemon.
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
        ),
    );
    response
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

async fn vendor(State(engine): State<Arc<Engine>>, Path(file): Path<String>) -> Response {
    let Some((name, content_type)) = VENDOR_FILES.iter().find(|(name, _)| *name == file) else {
        return EngineError::not_found(format!("no dashboard file {file}")).into_response();
    };
    let path: PathBuf = engine.config.dashboard_assets.join(name);
    match tokio::fs::read(&path).await {
        Ok(body) => (
            [
                (header::CONTENT_TYPE, *content_type),
                (header::CACHE_CONTROL, "max-age=3600"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            body,
        )
            .into_response(),
        // The page falls back to a plain text console without it.
        Err(_) => EngineError::not_found(format!(
            "{} is missing: scripts/install-deps.sh installs xterm.js there (or give --dashboard-assets DIR)",
            path.display()
        ))
        .into_response(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    /// What `berth trust add NAME --token` printed (or the bare secret in it).
    token: String,
}

#[derive(Debug, Serialize)]
struct WhoAmI {
    name: String,
}

async fn login(State(engine): State<Arc<Engine>>, Json(request): Json<LoginRequest>) -> EngineResult<Response> {
    let token = request.token.trim();
    let secret = match berth_client::tls::JoinToken::decode(token) {
        Ok(decoded) => decoded.secret,
        Err(_) if !token.is_empty() && token.len() <= 128 && token.bytes().all(|b| b.is_ascii_hexdigit()) => {
            token.to_string()
        }
        Err(_) => {
            return Err(EngineError::invalid(
                "token",
                "token: paste what `berth trust add NAME --token` printed on the server",
            ))
        }
    };
    let mut session = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut session);
    let session = hex::encode(session);
    let fingerprint = hex::encode(Sha256::digest(session.as_bytes()));
    let expires_at = chrono::Utc::now() + chrono::Duration::days(DASHBOARD_SESSION_DAYS);
    let client = engine
        .redeem_join_token(&secret, fingerprint, String::new(), "dashboard", Some(expires_at))
        .await?;
    // As long as the store's record: closing the browser does not log out, time does.
    let cookie = session_cookie(session, cookie::time::Duration::days(DASHBOARD_SESSION_DAYS));
    let mut response = Json(WhoAmI {
        name: client.name.clone(),
    })
    .into_response();
    response.extensions_mut().insert(TrustedAs(client.name));
    set_cookie(&mut response, &cookie)?;
    Ok(response)
}

/// The session cookie: sent over HTTPS only, never to scripts or other sites' requests.
fn session_cookie(value: String, max_age: cookie::time::Duration) -> cookie::Cookie<'static> {
    cookie::Cookie::build((SESSION_COOKIE, value))
        .path("/")
        .secure(true)
        .http_only(true)
        .same_site(cookie::SameSite::Strict)
        .max_age(max_age)
        .build()
}

fn set_cookie(response: &mut Response, cookie: &cookie::Cookie<'_>) -> EngineResult<()> {
    let value = HeaderValue::from_str(&cookie.to_string()).map_err(|e| EngineError::internal(e.to_string()))?;
    response.headers_mut().insert(header::SET_COOKIE, value);
    Ok(())
}

async fn logout(State(engine): State<Arc<Engine>>, headers: HeaderMap) -> EngineResult<Response> {
    if let Some(fingerprint) = session_fingerprint(&headers) {
        if engine.trusted_client(&fingerprint).await?.is_some() {
            engine.remove_trust(&fingerprint).await?;
        }
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    set_cookie(
        &mut response,
        &session_cookie(String::new(), cookie::time::Duration::ZERO),
    )?;
    Ok(response)
}

async fn whoami(trusted: Option<Extension<TrustedAs>>) -> EngineResult<Json<WhoAmI>> {
    match trusted {
        Some(Extension(TrustedAs(name))) => Ok(Json(WhoAmI { name })),
        None => Err(EngineError::new(StatusCode::FORBIDDEN, "not logged in")),
    }
}

/// The WebSocket bridges: in the API's router, so that a request for an instance on
/// another node is passed to that node like any other.
pub fn instance_routes() -> Router<Arc<Engine>> {
    Router::new()
        .route("/v1/instances/{id}/console/ws", get(console))
        .route("/v1/instances/{id}/shell/ws", get(shell))
}

/// The instance's console (a VM's, or a container's terminal), input included when it was
/// created with stdin open.
async fn console(
    State(engine): State<Arc<Engine>>,
    Path(id): Path<String>,
    upgrade: WebSocketUpgrade,
) -> EngineResult<Response> {
    let stream = engine.attach(&id, true).await?;
    Ok(upgrade.on_upgrade(move |socket| bridge(socket, stream)))
}

/// `/bin/sh` in the instance on a terminal (through the guest agent in a VM).
async fn shell(
    State(engine): State<Arc<Engine>>,
    Path(id): Path<String>,
    upgrade: WebSocketUpgrade,
) -> EngineResult<Response> {
    let exec = ExecRequest {
        command: vec!["/bin/sh".into()],
        env: vec!["TERM=xterm-256color".into()],
        tty: true,
        open_stdin: true,
        ..Default::default()
    };
    let stream = engine
        .exec(&id, exec)
        .await?
        .ok_or_else(|| EngineError::internal("the shell started detached"))?;
    Ok(upgrade.on_upgrade(move |socket| bridge(socket, stream)))
}

/// Copies the attach stream's bytes (berth's frames: the page reads and writes them, see
/// `berth_model::stream`) between the socket's binary messages and the supervisor.
async fn bridge(socket: WebSocket, supervisor: UnixStream) {
    let (mut to_browser, mut from_browser) = socket.split();
    let (mut from_supervisor, mut to_supervisor) = supervisor.into_split();
    let upstream = async move {
        while let Some(Ok(message)) = from_browser.next().await {
            match message {
                Message::Binary(bytes) if to_supervisor.write_all(&bytes).await.is_err() => break,
                Message::Close(_) => break,
                _ => {}
            }
        }
    };
    let downstream = async move {
        let mut buffer = vec![0u8; 32 * 1024];
        loop {
            match from_supervisor.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to_browser
                        .send(Message::Binary(Bytes::copy_from_slice(&buffer[..n])))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        let _ = to_browser.send(Message::Close(None)).await;
    };
    tokio::pin!(upstream, downstream);
    tokio::select! {
        _ = &mut downstream => {}
        _ = &mut upstream => {
            // The page went away: the session ends with it (the supervisor sees its end).
        }
    }
}
