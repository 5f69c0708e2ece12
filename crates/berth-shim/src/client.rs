//! The daemon's side of the control socket (async, tokio).

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::protocol::{ExitRecord, Reply, Request};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the supervisor is not reachable: {0}")]
    Unreachable(std::io::Error),
    #[error("the supervisor closed the connection")]
    Closed,
    #[error("the supervisor said: {0}")]
    Refused(String),
    #[error("bad reply from the supervisor: {0}")]
    Protocol(String),
    #[error("the supervisor did not answer within {0:?}")]
    Timeout(Duration),
}

/// How long a supervisor may take to answer a request (starting a workload included).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

async fn with_timeout<T>(future: impl std::future::Future<Output = Result<T, ClientError>>) -> Result<T, ClientError> {
    tokio::time::timeout(REPLY_TIMEOUT, future)
        .await
        .unwrap_or(Err(ClientError::Timeout(REPLY_TIMEOUT)))
}

async fn send(socket: &Path, request: &Request) -> Result<UnixStream, ClientError> {
    let mut stream = UnixStream::connect(socket).await.map_err(ClientError::Unreachable)?;
    let mut line = serde_json::to_vec(request).map_err(|e| ClientError::Protocol(e.to_string()))?;
    line.push(b'\n');
    stream.write_all(&line).await.map_err(ClientError::Unreachable)?;
    Ok(stream)
}

/// Reads exactly one reply line without consuming bytes past it (attach frames follow).
async fn read_reply(stream: &mut UnixStream) -> Result<Reply, ClientError> {
    let mut line = Vec::with_capacity(64);
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte).await {
            Ok(0) => return Err(ClientError::Closed),
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => line.push(byte[0]),
            Err(e) => return Err(ClientError::Unreachable(e)),
        }
        if line.len() > 1 << 20 {
            return Err(ClientError::Protocol("reply too long".into()));
        }
    }
    let reply: Reply = serde_json::from_slice(&line).map_err(|e| ClientError::Protocol(e.to_string()))?;
    if !reply.ok {
        return Err(ClientError::Refused(reply.error.unwrap_or_default()));
    }
    Ok(reply)
}

/// Sends one request and returns the reply.
pub async fn call(socket: &Path, request: &Request) -> Result<Reply, ClientError> {
    call_within(socket, request, REPLY_TIMEOUT).await
}

/// `call` with a deadline of its own (starting a VM waits for its guest to boot).
pub async fn call_within(socket: &Path, request: &Request, timeout: Duration) -> Result<Reply, ClientError> {
    let attempt = async {
        let mut stream = send(socket, request).await?;
        read_reply(&mut stream).await
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or(Err(ClientError::Timeout(timeout)))
}

/// Opens an attach stream: frames flow on the returned connection.
pub async fn attach(socket: &Path, stdin: bool) -> Result<UnixStream, ClientError> {
    with_timeout(async {
        let mut stream = send(socket, &Request::Attach { stdin }).await?;
        read_reply(&mut stream).await?;
        Ok(stream)
    })
    .await
}

/// Waits for the workload to exit. `Err(Closed)` when the supervisor went away without
/// saying (read the exit file then).
pub async fn wait(socket: &Path) -> Result<ExitRecord, ClientError> {
    let stream = send(socket, &Request::Wait).await?;
    // One short line comes, at the end of the instance's life: the daemon holds one of
    // these per running instance, so not the default 8 KiB buffer.
    let mut reader = BufReader::with_capacity(512, stream);
    let mut line = String::new();
    match reader.read_line(&mut line).await {
        Ok(0) => Err(ClientError::Closed),
        Ok(_) => {
            let reply: Reply = serde_json::from_str(&line).map_err(|e| ClientError::Protocol(e.to_string()))?;
            reply
                .exit
                .ok_or(ClientError::Protocol("wait reply without exit".into()))
        }
        Err(e) => Err(ClientError::Unreachable(e)),
    }
}
