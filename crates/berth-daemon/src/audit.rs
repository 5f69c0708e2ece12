//! The audit log: every mutating request (and every request refused for want of trust) as
//! one JSON line in `STATE_DIR/audit.log` — who asked (the socket's peer uid, or the trusted
//! client's name over HTTPS), through what, what, when, and how it ended. The log keeps one
//! older generation (`audit.log.1`) once it passes 64 MiB.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::extract::connect_info::Connected;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use axum::serve::IncomingStream;
use berth_model::trust::AuditEntry;
use chrono::Utc;
use tokio::net::UnixListener;

use crate::engine::Engine;

const ROTATE_BYTES: u64 = 64 << 20;

/// Who is on the other end of a request.
#[derive(Debug, Clone)]
pub enum Caller {
    /// The unix socket: the peer's credentials from the kernel.
    Socket { uid: Option<u32>, pid: Option<i32> },
    /// HTTPS: the client's address and the certificate it presented, if any.
    Https {
        address: SocketAddr,
        fingerprint: Option<String>,
        certificate_pem: Option<String>,
    },
}

/// Set by the HTTPS authorization on requests (and responses) of a trusted client: its name.
#[derive(Debug, Clone)]
pub struct TrustedAs(pub String);

/// Set on a response the HTTPS layer refused before the API saw the request: why.
#[derive(Debug, Clone)]
pub struct Refused(pub String);

/// The unix socket's peer, for `into_make_service_with_connect_info`.
#[derive(Debug, Clone)]
pub struct SocketPeer {
    pub uid: Option<u32>,
    pub pid: Option<i32>,
}

impl Connected<IncomingStream<'_, UnixListener>> for SocketPeer {
    fn connect_info(stream: IncomingStream<'_, UnixListener>) -> Self {
        let credentials = stream.io().peer_cred().ok();
        SocketPeer {
            uid: credentials.map(|c| c.uid()),
            pid: credentials.and_then(|c| c.pid()),
        }
    }
}

/// Socket middleware: names the caller from the connection's credentials.
pub async fn socket_caller(mut request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<SocketPeer>>()
        .map(|info| info.0.clone());
    let caller = Caller::Socket {
        uid: peer.as_ref().and_then(|p| p.uid),
        pid: peer.and_then(|p| p.pid),
    };
    request.extensions_mut().insert(caller);
    next.run(request).await
}

fn mutating(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Middleware: writes the entry once the response is known.
pub async fn record(State(engine): State<Arc<Engine>>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let caller = request.extensions().get::<Caller>().cloned();
    let response = next.run(request).await;
    let trusted = response.extensions().get::<TrustedAs>().cloned();
    let refused = response.extensions().get::<Refused>().cloned();
    if !mutating(&method) && refused.is_none() {
        return response;
    }
    let (who, via) = match (&caller, &trusted) {
        (Some(Caller::Socket { uid, pid }), _) => (
            format!("local uid {}", uid.map_or("?".to_string(), |u| u.to_string())),
            format!("socket (pid {})", pid.map_or("?".to_string(), |p| p.to_string())),
        ),
        (Some(Caller::Https { address, .. }), Some(TrustedAs(name))) => (name.clone(), format!("https {address}")),
        (
            Some(Caller::Https {
                address, fingerprint, ..
            }),
            None,
        ) => (
            match fingerprint {
                Some(fp) => format!("untrusted {fp}"),
                None => "no certificate".to_string(),
            },
            format!("https {address}"),
        ),
        (None, _) => ("unknown".to_string(), "unknown".to_string()),
    };
    let entry = AuditEntry {
        time: Utc::now(),
        who,
        via,
        method: method.to_string(),
        path,
        status: response.status().as_u16(),
        refused: refused.map(|r| r.0),
    };
    let file = log_path(&engine.config.state_dir);
    // Off the async threads: a slow disk delays nobody's response.
    tokio::task::spawn_blocking(move || append(&file, &entry));
    response
}

pub fn log_path(state_dir: &Path) -> PathBuf {
    state_dir.join("audit.log")
}

static WRITER: Mutex<()> = Mutex::new(());

fn append(file: &Path, entry: &AuditEntry) {
    let _one_writer = WRITER.lock().unwrap_or_else(|e| e.into_inner());
    if std::fs::metadata(file).is_ok_and(|m| m.len() > ROTATE_BYTES) {
        let _ = std::fs::rename(file, file.with_extension("log.1"));
    }
    let result = serde_json::to_vec(entry)
        .map_err(std::io::Error::other)
        .and_then(|mut line| {
            line.push(b'\n');
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(file)?
                .write_all(&line)
        });
    if let Err(e) = result {
        tracing::warn!(file = %file.display(), error = %e, "writing the audit log");
    }
}

/// The last `limit` entries, oldest first.
pub fn read_last(state_dir: &Path, limit: usize) -> std::io::Result<Vec<AuditEntry>> {
    let text = match std::fs::read_to_string(log_path(state_dir)) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    let lines: Vec<&str> = text.lines().collect();
    Ok(lines[lines.len().saturating_sub(limit)..]
        .iter()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect())
}
