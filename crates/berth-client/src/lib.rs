//! A client of the daemon's REST API over its unix socket, or over HTTPS with a client
//! certificate (a remote, `tls`). The CLI talks to the daemon only through this, so anything
//! the CLI does, another program can do too.

pub mod tls;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_model::api::ErrorResponse;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::UnixStream;

pub const DEFAULT_SOCKET: &str = "/run/berth/berth.sock";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the berth daemon at {socket}: {source}; is `berth daemon` running? (BERTH_HOST selects another socket)")]
    Connect { socket: String, source: std::io::Error },
    #[error("{message}")]
    Api {
        status: StatusCode,
        message: String,
        field: Option<String>,
    },
    #[error("talking to the daemon: {0}")]
    Protocol(String),
    #[error("remote {remote}: {message}")]
    Remote { remote: String, message: String },
}

impl ClientError {
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

pub type ClientResult<T> = Result<T, ClientError>;

/// An upgraded connection carrying an attach stream.
pub type AttachStream = TokioIo<hyper::upgrade::Upgraded>;

#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
    /// Set for a remote: requests go over HTTPS to it instead of the socket.
    remote: Option<RemoteEndpoint>,
}

#[derive(Clone)]
struct RemoteEndpoint {
    name: String,
    /// `HOST:PORT`.
    address: String,
    tls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for RemoteEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteEndpoint")
            .field("name", &self.name)
            .field("address", &self.address)
            .finish()
    }
}

/// Either transport, for hyper.
trait Connection: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Connection for T {}

fn protocol(e: impl std::fmt::Display) -> ClientError {
    ClientError::Protocol(e.to_string())
}

impl Client {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Client {
            socket: socket.into(),
            remote: None,
        }
    }

    /// A client of remote `name` from the configuration in `dir` (`tls::config_dir()`).
    pub fn for_remote(dir: &Path, name: &str) -> ClientResult<Self> {
        let failed = |message: String| ClientError::Remote {
            remote: name.to_string(),
            message,
        };
        let remotes = tls::Remotes::load(dir).map_err(|e| failed(e.to_string()))?;
        let remote = remotes.remotes.get(name).ok_or_else(|| {
            failed(format!(
                "no such remote in {}; `berth remote add {name} https://HOST:8443 --token TOKEN` adds it",
                dir.display()
            ))
        })?;
        let identity = tls::Identity::load_or_create(dir, "client", vec!["berth-client".into()])
            .map_err(|e| failed(e.to_string()))?;
        Self::for_url(name, &remote.url, &identity, &remote.fingerprint)
    }

    /// A client of the daemon at `url` (`https://HOST:PORT`) whose certificate has
    /// `fingerprint`, presenting `identity`.
    pub fn for_url(name: &str, url: &str, identity: &tls::Identity, fingerprint: &str) -> ClientResult<Self> {
        let failed = |message: String| ClientError::Remote {
            remote: name.to_string(),
            message,
        };
        let address = url
            .strip_prefix("https://")
            .map(|rest| rest.trim_end_matches('/'))
            .filter(|rest| !rest.is_empty() && !rest.contains('/'))
            .ok_or_else(|| failed(format!("{url}: give https://HOST:PORT")))?;
        let address = if address
            .rsplit_once(':')
            .is_some_and(|(_, port)| port.parse::<u16>().is_ok())
        {
            address.to_string()
        } else {
            format!("{address}:8443")
        };
        let config = tls::client_config(identity, fingerprint).map_err(|e| failed(e.to_string()))?;
        Ok(Client {
            socket: PathBuf::new(),
            remote: Some(RemoteEndpoint {
                name: name.to_string(),
                address,
                tls: config,
            }),
        })
    }

    /// `--remote NAME` (or `BERTH_REMOTE`) if given, else the socket of `from_env`.
    pub fn from_env_or_remote(remote: Option<&str>) -> ClientResult<Self> {
        match remote.filter(|r| !r.is_empty()) {
            Some(name) => Self::for_remote(&tls::config_dir(), name),
            None => Ok(Self::from_env()),
        }
    }

    /// The socket named by `BERTH_HOST` (`unix:///path` or a path), else the default.
    pub fn from_env() -> Self {
        let socket = std::env::var("BERTH_HOST")
            .ok()
            .filter(|v| !v.is_empty())
            .map(|v| v.strip_prefix("unix://").map(str::to_string).unwrap_or(v))
            .unwrap_or_else(|| DEFAULT_SOCKET.to_string());
        Client::new(socket)
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        upgrade: bool,
    ) -> ClientResult<Response<Incoming>> {
        let stream: Box<dyn Connection> = match &self.remote {
            None => Box::new(
                UnixStream::connect(&self.socket)
                    .await
                    .map_err(|source| ClientError::Connect {
                        socket: self.socket.display().to_string(),
                        source,
                    })?,
            ),
            Some(remote) => Box::new(remote.connect().await?),
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(protocol)?;
        tokio::spawn(async move {
            let _ = connection.with_upgrades().await;
        });
        let mut builder = Request::builder().method(method).uri(path).header("host", "berth");
        if body.is_some() {
            builder = builder.header("content-type", "application/json");
        }
        if upgrade {
            builder = builder
                .header("connection", "Upgrade")
                .header("upgrade", "berth-attach");
        }
        let request = builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(protocol)?;
        sender.send_request(request).await.map_err(protocol)
    }

    /// Turns a non-success response into the daemon's error message.
    async fn check(response: Response<Incoming>) -> ClientResult<Response<Incoming>> {
        let status = response.status();
        if status.is_success() || status == StatusCode::SWITCHING_PROTOCOLS {
            return Ok(response);
        }
        let body = response.into_body().collect().await.map_err(protocol)?.to_bytes();
        let (message, field) = match serde_json::from_slice::<ErrorResponse>(&body) {
            Ok(error) => (error.message, error.field),
            Err(_) => (String::from_utf8_lossy(&body).trim().to_string(), None),
        };
        Err(ClientError::Api { status, message, field })
    }

    async fn call(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> ClientResult<Bytes> {
        let response = Self::check(self.send(method, path, body, false).await?).await?;
        Ok(response.into_body().collect().await.map_err(protocol)?.to_bytes())
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> ClientResult<T> {
        let body = self.call(Method::GET, path, None).await?;
        serde_json::from_slice(&body).map_err(protocol)
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> ClientResult<T> {
        let body = serde_json::to_vec(body).map_err(protocol)?;
        let reply = self.call(Method::POST, path, Some(body)).await?;
        serde_json::from_slice(&reply).map_err(protocol)
    }

    pub async fn put<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> ClientResult<T> {
        let body = serde_json::to_vec(body).map_err(protocol)?;
        let reply = self.call(Method::PUT, path, Some(body)).await?;
        serde_json::from_slice(&reply).map_err(protocol)
    }

    /// A GET whose body is text (an exported domain XML).
    pub async fn get_text(&self, path: &str) -> ClientResult<String> {
        let body = self.call(Method::GET, path, None).await?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// POST without a body whose reply is ignored.
    pub async fn post_empty(&self, path: &str) -> ClientResult<Bytes> {
        self.call(Method::POST, path, None).await
    }

    pub async fn delete(&self, path: &str) -> ClientResult<Bytes> {
        self.call(Method::DELETE, path, None).await
    }

    /// A streamed response body, chunk by chunk.
    pub async fn stream(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> ClientResult<BodyStream> {
        let response = Self::check(self.send(method, path, body, false).await?).await?;
        Ok(BodyStream {
            body: response.into_body(),
        })
    }

    /// Sends a request that upgrades to an attach stream; `Ok(None)` if the daemon
    /// answered without upgrading (for example a detached exec).
    pub async fn upgrade(&self, path: &str, body: Option<Vec<u8>>) -> ClientResult<Option<AttachStream>> {
        let response = Self::check(self.send(Method::POST, path, body, true).await?).await?;
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Ok(None);
        }
        let upgraded = hyper::upgrade::on(response).await.map_err(protocol)?;
        Ok(Some(TokioIo::new(upgraded)))
    }
}

impl RemoteEndpoint {
    async fn connect(&self) -> ClientResult<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let failed = |message: String| ClientError::Remote {
            remote: self.name.clone(),
            message,
        };
        let tcp = tokio::net::TcpStream::connect(&self.address).await.map_err(|e| {
            failed(format!(
                "cannot reach {}: {e}; is the daemon started with --listen?",
                self.address
            ))
        })?;
        // The name is not checked (the certificate is pinned by fingerprint), but TLS needs one.
        let server_name = rustls::pki_types::ServerName::try_from("berth").map_err(|e| failed(e.to_string()))?;
        tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(server_name, tcp)
            .await
            .map_err(|e| failed(format!("TLS with {}: {e}", self.address)))
    }
}

/// Chunks of a streamed body.
pub struct BodyStream {
    body: Incoming,
}

impl BodyStream {
    pub async fn next_chunk(&mut self) -> ClientResult<Option<Bytes>> {
        loop {
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(protocol(e)),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        return Ok(Some(data));
                    }
                }
            }
        }
    }

    /// Splits the body into lines (for JSON-lines responses).
    pub fn lines(self) -> LineStream {
        LineStream {
            inner: self,
            buffer: Vec::new(),
            done: false,
        }
    }
}

pub struct LineStream {
    inner: BodyStream,
    buffer: Vec<u8>,
    done: bool,
}

impl LineStream {
    pub async fn next_line(&mut self) -> ClientResult<Option<Vec<u8>>> {
        loop {
            if let Some(newline) = self.buffer.iter().position(|b| *b == b'\n') {
                let mut line: Vec<u8> = self.buffer.drain(..=newline).collect();
                line.pop();
                return Ok(Some(line));
            }
            if self.done {
                if self.buffer.is_empty() {
                    return Ok(None);
                }
                return Ok(Some(std::mem::take(&mut self.buffer)));
            }
            match self.inner.next_chunk().await? {
                Some(chunk) => self.buffer.extend_from_slice(&chunk),
                None => self.done = true,
            }
        }
    }
}
