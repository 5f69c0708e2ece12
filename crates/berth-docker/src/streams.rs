//! The streaming endpoints: logs, attach and exec. berth speaks frames (kind, length,
//! payload) on upgraded connections; Docker clients hijack the connection (`Upgrade: tcp`,
//! answered `101 UPGRADED`) and read Docker's multiplexed format (an 8-byte header: stream,
//! three zeros, length) or, with a TTY, raw bytes. This module translates between the two,
//! keeps exec configs between create and start, and routes resizes to live sessions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::Response;
use axum::Json;
use berth_client::{AttachStream, BodyStream};
use berth_model::api::ExecRequest;
use berth_model::stream::{self, encode_frame, Frame, FrameKind};
use berth_model::{ExitStatus, Instance, InstanceState};
use chrono::{DateTime, Utc};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use crate::containers::{find, json_body};
use crate::error::{DockerError, DockerResult};
use crate::params::{flag, number};
use crate::{encode, Gateway, Shared};

/// How long an attach made before its container starts (`docker run`, `docker start -a`)
/// waits for that start.
const PENDING_ATTACH_TIMEOUT: Duration = Duration::from_secs(60);
/// Exec records kept: finished ones beyond this are forgotten, oldest first.
const MAX_EXECS: usize = 512;

const RAW_STREAM: &str = "application/vnd.docker.raw-stream";

/// Live sessions: where a resize for a container or exec goes, and attaches waiting for
/// their container's start.
#[derive(Default)]
pub struct Sessions {
    /// Encoded frames (resizes) to send on a session's berth stream, by `container:ID` or
    /// `exec:ID`.
    controls: Mutex<HashMap<String, mpsc::Sender<Vec<u8>>>>,
    /// Attaches to containers not started yet, by instance id.
    pending: Mutex<HashMap<String, oneshot::Sender<AttachStream>>>,
}

impl Sessions {
    fn open_control(&self, key: String) -> mpsc::Receiver<Vec<u8>> {
        let (sender, receiver) = mpsc::channel(8);
        self.controls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, sender);
        receiver
    }

    fn close_control(&self, key: &str) {
        self.controls.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }

    fn control(&self, key: &str) -> Option<mpsc::Sender<Vec<u8>>> {
        self.controls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    fn take_pending(&self, id: &str) -> Option<oneshot::Sender<AttachStream>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(id)
    }
}

/// The exec configs between `POST /containers/{id}/exec` and `POST /exec/{id}/start`, and
/// how each ended (`docker exec` reads the exit code after the stream closes).
#[derive(Default)]
pub struct ExecStore {
    execs: Mutex<HashMap<String, ExecRecord>>,
}

#[derive(Debug, Clone)]
struct ExecRecord {
    container_id: String,
    config: ExecConfig,
    started: bool,
    running: bool,
    exit_code: Option<i32>,
    created: Instant,
}

impl ExecStore {
    fn insert(&self, id: String, record: ExecRecord) {
        let mut execs = self.execs.lock().unwrap_or_else(|e| e.into_inner());
        if execs.len() >= MAX_EXECS {
            let mut finished: Vec<(String, Instant)> = execs
                .iter()
                .filter(|(_, r)| !r.running)
                .map(|(id, r)| (id.clone(), r.created))
                .collect();
            finished.sort_by_key(|(_, created)| *created);
            for (id, _) in finished.into_iter().take(execs.len() + 1 - MAX_EXECS) {
                execs.remove(&id);
            }
        }
        execs.insert(id, record);
    }

    fn get(&self, id: &str) -> DockerResult<ExecRecord> {
        self.execs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| DockerError::not_found(format!("No such exec instance: {id}")))
    }

    fn update(&self, id: &str, change: impl FnOnce(&mut ExecRecord)) {
        if let Some(record) = self.execs.lock().unwrap_or_else(|e| e.into_inner()).get_mut(id) {
            change(record);
        }
    }
}

/// A body fed through a channel.
pub(crate) fn body_response(content_type: &str, receiver: mpsc::Receiver<Bytes>) -> Response {
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver
            .recv()
            .await
            .map(|bytes| (Ok::<_, std::convert::Infallible>(bytes), receiver))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from_stream(stream))
        .unwrap_or_default()
}

/// Output as Docker frames it: raw with a TTY, else behind an 8-byte header naming the
/// stream (1 stdout, 2 stderr).
fn docker_output(kind: FrameKind, payload: &[u8], tty: bool) -> Vec<u8> {
    if tty {
        return payload.to_vec();
    }
    let stream = if kind == FrameKind::Stderr { 2 } else { 1 };
    let mut out = Vec::with_capacity(8 + payload.len());
    out.extend_from_slice(&[stream, 0, 0, 0]);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// What a session carries to the Docker client.
#[derive(Debug, Clone, Copy)]
struct BridgeOptions {
    tty: bool,
    stdin: bool,
    stdout: bool,
    stderr: bool,
}

/// Copies one session between a hijacked Docker connection and a berth attach stream until
/// berth ends it; returns how the process exited, if it said.
async fn bridge(
    docker: impl AsyncRead + AsyncWrite + Send + 'static,
    berth: AttachStream,
    options: BridgeOptions,
    mut control: mpsc::Receiver<Vec<u8>>,
) -> Option<ExitStatus> {
    let (mut docker_read, mut docker_write) = tokio::io::split(docker);
    let (mut berth_read, mut berth_write) = tokio::io::split(berth);
    // Docker client → berth: stdin as frames (and its end), resizes from `/resize`.
    let upstream = tokio::spawn(async move {
        let mut buffer = vec![0u8; stream::MAX_PAYLOAD];
        let mut reading = true;
        let mut controlled = true;
        while reading || controlled {
            tokio::select! {
                read = docker_read.read(&mut buffer), if reading => match read {
                    Ok(0) | Err(_) => {
                        // The CLI half-closes when its stdin ends (at once without -i).
                        reading = false;
                        if options.stdin && berth_write.write_all(&encode_frame(FrameKind::StdinClose, &[])).await.is_err() {
                            return;
                        }
                    }
                    Ok(n) => {
                        if options.stdin && berth_write.write_all(&encode_frame(FrameKind::Stdin, &buffer[..n])).await.is_err() {
                            return;
                        }
                    }
                },
                frame = control.recv(), if controlled => match frame {
                    Some(frame) => {
                        if berth_write.write_all(&frame).await.is_err() {
                            return;
                        }
                    }
                    None => controlled = false,
                },
            }
        }
    });
    let mut status = None;
    loop {
        let mut header = [0u8; stream::HEADER_LEN];
        if berth_read.read_exact(&mut header).await.is_err() {
            break;
        }
        let Ok((kind, len)) = stream::parse_header(&header) else {
            break;
        };
        let mut payload = vec![0u8; len];
        if berth_read.read_exact(&mut payload).await.is_err() {
            break;
        }
        let wanted = match kind {
            FrameKind::Stdout => options.stdout,
            FrameKind::Stderr => options.stderr,
            FrameKind::Exit => {
                status = Frame::new(kind, payload).as_exit();
                break;
            }
            FrameKind::Error => {
                let message = format!("berth: {}\n", String::from_utf8_lossy(&payload));
                let _ = docker_write
                    .write_all(&docker_output(FrameKind::Stderr, message.as_bytes(), options.tty))
                    .await;
                break;
            }
            _ => false,
        };
        if wanted
            && docker_write
                .write_all(&docker_output(kind, &payload, options.tty))
                .await
                .is_err()
        {
            break;
        }
    }
    upstream.abort();
    let _ = docker_write.flush().await;
    let _ = docker_write.shutdown().await;
    status
}

/// Answers `101 UPGRADED` as Docker does and hands back the connection to come.
fn hijack(request: &mut Request) -> DockerResult<(Response, hyper::upgrade::OnUpgrade)> {
    if !request.headers().contains_key(header::UPGRADE) {
        return Err(DockerError::bad_parameter(
            "this endpoint hijacks the connection: send `Connection: Upgrade` and `Upgrade: tcp` (as clients of API 1.24 and later do)",
        ));
    }
    let on_upgrade = hyper::upgrade::on(&mut *request);
    let response = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONTENT_TYPE, RAW_STREAM)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "tcp")
        .body(Body::empty())
        .map_err(|e| DockerError::internal(e.to_string()))?;
    Ok((response, on_upgrade))
}

/// Runs `bridge` once the client's connection is handed over, then closes the session.
fn spawn_session(
    gateway: Arc<Gateway>,
    key: String,
    on_upgrade: hyper::upgrade::OnUpgrade,
    berth: impl std::future::Future<Output = Option<AttachStream>> + Send + 'static,
    options: BridgeOptions,
    control: mpsc::Receiver<Vec<u8>>,
    on_exit: impl FnOnce(Option<ExitStatus>) + Send + 'static,
) {
    tokio::spawn(async move {
        let status = match on_upgrade.await {
            Ok(upgraded) => match berth.await {
                Some(stream) => bridge(TokioIo::new(upgraded), stream, options, control).await,
                None => None,
            },
            Err(e) => {
                tracing::debug!(error = %e, "a Docker client's connection was not handed over");
                None
            }
        };
        gateway.sessions.close_control(&key);
        on_exit(status);
    });
}

#[derive(Debug, Deserialize)]
pub struct AttachQuery {
    stream: Option<String>,
    stdin: Option<String>,
    stdout: Option<String>,
    stderr: Option<String>,
    logs: Option<String>,
    #[serde(rename = "detachKeys")]
    detach_keys: Option<String>,
}

/// `POST /containers/{id}/attach`: to a running container through berth's attach; to one
/// not started yet by waiting for its start (berth's `start?attach=true`), as `docker run`
/// attaches before it starts.
pub async fn attach(
    State(gateway): Shared,
    Path(id): Path<String>,
    Query(query): Query<AttachQuery>,
    mut request: Request,
) -> DockerResult<Response> {
    if flag(&query.logs) {
        return Err(DockerError::unsupported(
            "logs=1 on attach",
            "read the output so far from GET /containers/{id}/logs",
        ));
    }
    if !flag(&query.stream) {
        return Err(DockerError::unsupported(
            "attach without stream=1",
            "berth's attach always streams",
        ));
    }
    if query.detach_keys.as_deref().is_some_and(|k| !k.is_empty()) {
        return Err(DockerError::unsupported(
            "detachKeys",
            "berth's attach has no detach keys",
        ));
    }
    let instance = find(&gateway, &id).await?;
    let options = BridgeOptions {
        tty: instance.spec.process.tty,
        stdin: flag(&query.stdin) && instance.spec.process.open_stdin,
        stdout: flag(&query.stdout),
        stderr: flag(&query.stderr),
    };
    let key = format!("container:{}", instance.id);
    match instance.state {
        InstanceState::Running | InstanceState::Paused => {
            let path = format!("/v1/instances/{}/attach?stdin={}", encode(&instance.id), options.stdin);
            let stream = gateway
                .berth
                .upgrade(&path, None)
                .await?
                .ok_or_else(|| DockerError::internal("berth did not open an attach stream"))?;
            let (response, on_upgrade) = hijack(&mut request)?;
            let control = gateway.sessions.open_control(key.clone());
            spawn_session(
                gateway.clone(),
                key,
                on_upgrade,
                async move { Some(stream) },
                options,
                control,
                |_| {},
            );
            Ok(response)
        }
        InstanceState::Created | InstanceState::Exited => {
            let (deliver, delivered) = oneshot::channel();
            {
                let mut pending = gateway.sessions.pending.lock().unwrap_or_else(|e| e.into_inner());
                if pending.contains_key(&instance.id) {
                    return Err(DockerError::conflict(format!(
                        "{} already has a client attached, waiting for its start",
                        instance.name
                    )));
                }
                pending.insert(instance.id.clone(), deliver);
            }
            let (response, on_upgrade) = hijack(&mut request)?;
            let control = gateway.sessions.open_control(key.clone());
            let waiting = gateway.clone();
            let instance_id = instance.id.clone();
            let berth = async move {
                match tokio::time::timeout(PENDING_ATTACH_TIMEOUT, delivered).await {
                    Ok(Ok(stream)) => Some(stream),
                    _ => {
                        waiting.sessions.take_pending(&instance_id);
                        None
                    }
                }
            };
            spawn_session(gateway.clone(), key, on_upgrade, berth, options, control, |_| {});
            Ok(response)
        }
        _ => Err(DockerError::conflict(format!(
            "You cannot attach to container {}: it is {}",
            instance.name,
            crate::view::status_word(instance.state)
        ))),
    }
}

/// Starts `instance` with its output going to an attach that waits for the start; false
/// when none waits.
pub(crate) async fn start_pending_attach(gateway: &Gateway, instance: &Instance) -> DockerResult<bool> {
    let Some(deliver) = gateway.sessions.take_pending(&instance.id) else {
        return Ok(false);
    };
    let stream = gateway
        .berth
        .upgrade(
            &format!("/v1/instances/{}/start?attach=true", encode(&instance.id)),
            None,
        )
        .await?
        .ok_or_else(|| DockerError::internal("berth started the container without an attach stream"))?;
    if deliver.send(stream).is_err() {
        tracing::debug!(id = %instance.id, "the attached client left before the start");
    }
    Ok(true)
}

#[derive(Debug, Deserialize)]
pub struct ResizeQuery {
    h: Option<String>,
    w: Option<String>,
}

async fn resize(gateway: &Gateway, key: &str, query: &ResizeQuery) -> DockerResult<StatusCode> {
    let rows = number::<u16>("h", &query.h)?.unwrap_or(0);
    let cols = number::<u16>("w", &query.w)?.unwrap_or(0);
    if let Some(control) = gateway.sessions.control(key) {
        let _ = control.send(Frame::resize(rows, cols).encode()).await;
    }
    Ok(StatusCode::OK)
}

/// `POST /containers/{id}/resize`: the terminal of the attached session, if one is.
pub async fn resize_container(
    State(gateway): Shared,
    Path(id): Path<String>,
    Query(query): Query<ResizeQuery>,
) -> DockerResult<StatusCode> {
    let instance = find(&gateway, &id).await?;
    resize(&gateway, &format!("container:{}", instance.id), &query).await
}

pub async fn resize_exec(
    State(gateway): Shared,
    Path(id): Path<String>,
    Query(query): Query<ResizeQuery>,
) -> DockerResult<StatusCode> {
    gateway.execs.get(&id)?;
    resize(&gateway, &format!("exec:{id}"), &query).await
}

/// The body of `POST /containers/{id}/exec`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExecConfig {
    attach_stdin: Option<bool>,
    attach_stdout: Option<bool>,
    attach_stderr: Option<bool>,
    tty: Option<bool>,
    env: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    user: Option<String>,
    working_dir: Option<String>,
    /// The client's terminal size; the first resize sets it.
    #[allow(dead_code)]
    console_size: Option<Value>,
    /// docker-py repeats the container's id here; the path names it.
    #[allow(dead_code)]
    container: Option<String>,
    #[serde(flatten)]
    other: std::collections::BTreeMap<String, Value>,
}

pub async fn create_exec(
    State(gateway): Shared,
    Path(id): Path<String>,
    body: Bytes,
) -> DockerResult<(StatusCode, Json<Value>)> {
    let config: ExecConfig = json_body("exec config", &body)?;
    crate::create::refuse_set("", &config.other)?;
    if config.cmd.as_ref().is_none_or(|c| c.is_empty()) {
        return Err(DockerError::bad_parameter("No exec command specified"));
    }
    let instance = find(&gateway, &id).await?;
    if !instance.state.is_active() {
        return Err(DockerError::conflict(format!(
            "Container {} is not running",
            instance.id
        )));
    }
    let exec_id = berth_model::instance::new_instance_id();
    gateway.execs.insert(
        exec_id.clone(),
        ExecRecord {
            container_id: instance.id,
            config,
            started: false,
            running: false,
            exit_code: None,
            created: Instant::now(),
        },
    );
    Ok((StatusCode::CREATED, Json(json!({ "Id": exec_id }))))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExecStartBody {
    detach: Option<bool>,
    /// Must match the exec's own; the config's is used.
    tty: Option<bool>,
    console_size: Option<Value>,
}

pub async fn start_exec(
    State(gateway): Shared,
    Path(id): Path<String>,
    mut request: Request,
) -> DockerResult<Response> {
    let body = axum::body::to_bytes(std::mem::take(request.body_mut()), 1 << 20)
        .await
        .map_err(|e| DockerError::bad_parameter(format!("reading the request: {e}")))?;
    let start: ExecStartBody = json_body("exec start config", &body)?;
    let _ = (start.tty, start.console_size);
    let record = gateway.execs.get(&id)?;
    if record.started {
        return Err(DockerError::conflict(format!("Exec {id} has already been started")));
    }
    let config = &record.config;
    let detach = start.detach.unwrap_or(false);
    let exec = ExecRequest {
        command: config.cmd.clone().unwrap_or_default(),
        env: config.env.clone().unwrap_or_default(),
        working_dir: config.working_dir.clone().filter(|w| !w.is_empty()),
        user: config.user.clone().filter(|u| !u.is_empty()),
        tty: config.tty.unwrap_or(false),
        open_stdin: config.attach_stdin.unwrap_or(false) && !detach,
        detach,
    };
    let body = serde_json::to_vec(&exec).map_err(|e| DockerError::internal(e.to_string()))?;
    let path = format!("/v1/instances/{}/exec", encode(&record.container_id));
    // Checked before the hijack, so a refusal is an HTTP error the client shows.
    if !detach && !request.headers().contains_key(header::UPGRADE) {
        return Err(DockerError::bad_parameter(
            "an attached exec hijacks the connection: send `Connection: Upgrade` and `Upgrade: tcp`",
        ));
    }
    // What berth would refuse once the stream is open is refused here, as an HTTP error.
    let instance = find(&gateway, &record.container_id).await?;
    if instance.state != InstanceState::Running {
        return Err(DockerError::conflict(format!(
            "Container {} is not running",
            record.container_id
        )));
    }
    if detach {
        gateway.berth.upgrade(&path, Some(body)).await?;
        gateway.execs.update(&id, |r| r.started = true);
        // Detached: berth does not report how it ends.
        return Ok(Response::builder()
            .status(StatusCode::OK)
            .body(Body::empty())
            .unwrap_or_default());
    }
    // The command starts once the client's connection is handed over, as dockerd does it:
    // output that followed the 101 at once could land in a client's HTTP read-ahead buffer
    // and be lost when it switches to the raw socket (docker-py does).
    let (response, on_upgrade) = hijack(&mut request)?;
    gateway.execs.update(&id, |r| {
        r.started = true;
        r.running = true;
    });
    let starter = gateway.clone();
    let stream = async move {
        match starter.berth.upgrade(&path, Some(body)).await {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "starting an exec for a Docker client");
                None
            }
        }
    };
    let key = format!("exec:{id}");
    let control = gateway.sessions.open_control(key.clone());
    let options = BridgeOptions {
        tty: exec.tty,
        stdin: exec.open_stdin,
        stdout: config.attach_stdout.unwrap_or(true),
        stderr: config.attach_stderr.unwrap_or(true),
    };
    let recorder = gateway.clone();
    spawn_session(
        gateway.clone(),
        key,
        on_upgrade,
        stream,
        options,
        control,
        move |status| {
            // Recorded as the session ends, before the client asks (`docker exec` inspects
            // the exec as soon as its stream closes).
            recorder.execs.update(&id, |r| {
                r.running = false;
                r.exit_code = Some(status.map_or(126, |s| s.code));
            });
        },
    );
    Ok(response)
}

pub async fn inspect_exec(State(gateway): Shared, Path(id): Path<String>) -> DockerResult<Json<Value>> {
    let record = gateway.execs.get(&id)?;
    let command = record.config.cmd.clone().unwrap_or_default();
    Ok(Json(json!({
        "ID": id,
        "Running": record.running,
        "ExitCode": record.exit_code,
        "ProcessConfig": {
            "tty": record.config.tty.unwrap_or(false),
            "entrypoint": command.first(),
            "arguments": command.iter().skip(1).collect::<Vec<_>>(),
            "privileged": false,
            "user": record.config.user.clone().unwrap_or_default(),
        },
        "OpenStdin": record.config.attach_stdin.unwrap_or(false),
        "OpenStderr": record.config.attach_stderr.unwrap_or(true),
        "OpenStdout": record.config.attach_stdout.unwrap_or(true),
        "CanRemove": false,
        "ContainerID": record.container_id,
        "DetachKeys": "",
        "Pid": 0,
    })))
}

/// berth's frames from a streamed body, however the chunks cut them.
struct FrameReader {
    body: BodyStream,
    buffer: Vec<u8>,
}

impl FrameReader {
    async fn next(&mut self) -> DockerResult<Option<(FrameKind, Vec<u8>)>> {
        loop {
            if self.buffer.len() >= stream::HEADER_LEN {
                let mut header = [0u8; stream::HEADER_LEN];
                header.copy_from_slice(&self.buffer[..stream::HEADER_LEN]);
                let (kind, len) = stream::parse_header(&header).map_err(|e| DockerError::internal(e.to_string()))?;
                if self.buffer.len() >= stream::HEADER_LEN + len {
                    let payload = self.buffer[stream::HEADER_LEN..stream::HEADER_LEN + len].to_vec();
                    self.buffer.drain(..stream::HEADER_LEN + len);
                    return Ok(Some((kind, payload)));
                }
            }
            match self.body.next_chunk().await? {
                Some(chunk) => self.buffer.extend_from_slice(&chunk),
                None => return Ok(None),
            }
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct LogsQuery {
    follow: Option<String>,
    stdout: Option<String>,
    stderr: Option<String>,
    since: Option<String>,
    until: Option<String>,
    timestamps: Option<String>,
    tail: Option<String>,
    details: Option<String>,
}

/// Docker's `since`/`until`: Unix seconds, with an optional fraction; 0 means none.
fn unix_time(name: &str, value: &Option<String>) -> DockerResult<Option<DateTime<Utc>>> {
    let Some(text) = value.as_deref().map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let seconds: f64 = text
        .parse()
        .map_err(|_| DockerError::bad_parameter(format!("invalid value for {name}: '{text}' is not a Unix time")))?;
    if seconds <= 0.0 {
        return Ok(None);
    }
    Ok(DateTime::from_timestamp(
        (seconds.trunc()) as i64,
        (seconds.fract() * 1e9) as u32,
    ))
}

/// `GET /containers/{id}/logs`: berth's log frames in Docker's stream format.
pub async fn logs(
    State(gateway): Shared,
    Path(id): Path<String>,
    Query(query): Query<LogsQuery>,
) -> DockerResult<Response> {
    if flag(&query.details) {
        return Err(DockerError::unsupported(
            "details=1",
            "berth's logs carry no log attributes",
        ));
    }
    let (stdout, stderr) = (flag(&query.stdout), flag(&query.stderr));
    if !stdout && !stderr {
        return Err(DockerError::bad_parameter(
            "Bad parameters: you must choose at least one stream",
        ));
    }
    let since = unix_time("since", &query.since)?;
    let until = unix_time("until", &query.until)?;
    let timestamps = flag(&query.timestamps);
    let instance = find(&gateway, &id).await?;
    let mut berth_query = vec!["timestamps=true".to_string()];
    if flag(&query.follow) {
        berth_query.push("follow=true".into());
    }
    match query.tail.as_deref().map(str::trim) {
        None | Some("") | Some("all") => {}
        Some(text) => match text.parse::<i64>() {
            Ok(n) if n >= 0 => berth_query.push(format!("tail={}", n.min(u32::MAX as i64))),
            Ok(_) => {}
            Err(_) => {
                return Err(DockerError::bad_parameter(format!(
                    "invalid value for tail: '{text}' (a number or all)"
                )))
            }
        },
    }
    let path = format!("/v1/instances/{}/logs?{}", encode(&instance.id), berth_query.join("&"));
    let body = gateway.berth.stream(hyper::Method::GET, &path, None).await?;
    let tty = instance.spec.process.tty;
    let (sender, receiver) = mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        let mut frames = FrameReader {
            body,
            buffer: Vec::new(),
        };
        while let Ok(Some((kind, payload))) = frames.next().await {
            let wanted = match kind {
                FrameKind::Stdout => stdout,
                FrameKind::Stderr => stderr,
                _ => false,
            };
            if !wanted {
                continue;
            }
            // Every record starts with its RFC 3339 time and a space (asked for above).
            let (time, text) = match payload.iter().position(|b| *b == b' ') {
                Some(space) => (
                    std::str::from_utf8(&payload[..space])
                        .ok()
                        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                        .map(|t| t.with_timezone(&Utc)),
                    &payload[space + 1..],
                ),
                None => (None, &payload[..]),
            };
            if let (Some(since), Some(time)) = (since, time) {
                if time < since {
                    continue;
                }
            }
            if let (Some(until), Some(time)) = (until, time) {
                if time > until {
                    return;
                }
            }
            let line = if timestamps { &payload[..] } else { text };
            if sender.send(Bytes::from(docker_output(kind, line, tty))).await.is_err() {
                return;
            }
        }
    });
    Ok(body_response(RAW_STREAM, receiver))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_frames_carry_the_stream_and_length() {
        assert_eq!(
            docker_output(FrameKind::Stderr, b"hi", false),
            vec![2, 0, 0, 0, 0, 0, 0, 2, b'h', b'i']
        );
        assert_eq!(docker_output(FrameKind::Stdout, b"hi", true), b"hi".to_vec());
    }

    #[test]
    fn unix_times_with_fractions() {
        let time = unix_time("since", &Some("1600000000.5".into())).unwrap().unwrap();
        assert_eq!(time.timestamp(), 1_600_000_000);
        assert_eq!(time.timestamp_subsec_millis(), 500);
        assert_eq!(unix_time("since", &Some("0".into())).unwrap(), None);
        assert!(unix_time("since", &Some("yesterday".into())).is_err());
    }
}
