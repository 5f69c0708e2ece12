//! A small typed QMP client (QEMU's JSON machine protocol) over the VM's unix socket: the
//! daemon uses it for pause/resume, graceful power-down, CPU and memory hotplug and to learn
//! the vCPU threads. One connection per call keeps it stateless across daemon restarts.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::VmError;

const TIMEOUT: Duration = Duration::from_secs(10);

pub struct QmpClient {
    reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    writer: tokio::net::unix::OwnedWriteHalf,
}

fn qmp_error(e: impl std::fmt::Display) -> VmError {
    VmError::Qmp(e.to_string())
}

impl QmpClient {
    /// Connects and leaves capabilities negotiation mode.
    pub async fn connect(socket: &Path) -> Result<QmpClient, VmError> {
        let stream = tokio::time::timeout(TIMEOUT, UnixStream::connect(socket))
            .await
            .map_err(|_| VmError::Qmp("connecting timed out".into()))?
            .map_err(|e| VmError::Qmp(format!("connecting to {}: {e}", socket.display())))?;
        let (read, write) = stream.into_split();
        let mut client = QmpClient {
            reader: BufReader::new(read),
            writer: write,
        };
        let greeting = client.read_message().await?;
        if greeting.get("QMP").is_none() {
            return Err(VmError::Qmp(format!("unexpected greeting: {greeting}")));
        }
        client.execute("qmp_capabilities", Value::Null).await?;
        Ok(client)
    }

    async fn read_message(&mut self) -> Result<Value, VmError> {
        let mut line = String::new();
        let n = tokio::time::timeout(TIMEOUT, self.reader.read_line(&mut line))
            .await
            .map_err(|_| VmError::Qmp("no answer from QEMU".into()))?
            .map_err(qmp_error)?;
        if n == 0 {
            return Err(VmError::Qmp("QEMU closed the connection".into()));
        }
        serde_json::from_str(&line).map_err(qmp_error)
    }

    /// Runs a command and returns its `return` value; events in between are skipped.
    pub async fn execute(&mut self, command: &str, arguments: Value) -> Result<Value, VmError> {
        let mut request = json!({ "execute": command });
        if !arguments.is_null() {
            request["arguments"] = arguments;
        }
        let mut line = serde_json::to_vec(&request).map_err(qmp_error)?;
        line.push(b'\n');
        self.writer.write_all(&line).await.map_err(qmp_error)?;
        loop {
            let message = self.read_message().await?;
            if let Some(value) = message.get("return") {
                return Ok(value.clone());
            }
            if let Some(error) = message.get("error") {
                return Err(VmError::Qmp(format!(
                    "{command}: {}",
                    error.get("desc").and_then(Value::as_str).unwrap_or("failed")
                )));
            }
        }
    }
}

/// Runs one QMP command on the VM whose socket is `socket`.
pub async fn execute(socket: &Path, command: &str, arguments: Value) -> Result<Value, VmError> {
    QmpClient::connect(socket).await?.execute(command, arguments).await
}
