//! Health checks: while an instance with a check runs, the node that runs it runs the
//! check's command inside it (an exec, as `berth exec` runs one) every interval and records
//! what the checks found in the instance's status, by Docker's rules. One task per run of
//! an instance, started and ended with it by `watch_exit`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_model::api::ExecRequest;
use berth_model::health::{Health, HealthCheck, HealthProbe, MAX_OUTPUT_BYTES};
use berth_model::stream::{parse_header, FrameKind, HEADER_LEN, MAX_PAYLOAD};
use berth_model::InstanceState;
use chrono::{DateTime, Utc};
use tokio::io::AsyncReadExt;
use tokio::net::UnixStream;
use tokio::task::AbortHandle;

use crate::engine::Engine;

impl Engine {
    /// Starts checking instance `id`'s health for its current run, if it has a check.
    /// Aborting the handle ends the checks (the run ended).
    pub(crate) fn watch_health(self: &Arc<Self>, id: &str) -> AbortHandle {
        let engine = self.clone();
        let id = id.to_string();
        tokio::spawn(async move { engine.check_health(&id).await }).abort_handle()
    }

    async fn check_health(self: &Arc<Self>, id: &str) {
        let Ok(instance) = self.store.get_instance(id).await else {
            return;
        };
        let Some(check) = instance.spec.healthcheck.clone() else {
            return;
        };
        // The run being checked: a restart is a new run with a new task.
        let run = instance.started_at;
        let began = Instant::now();
        if !self.record_health(id, run, |health| *health = Health::starting()).await {
            return;
        }
        let interval = Duration::from_millis(check.interval_ms);
        let start_period = Duration::from_millis(check.start_period_ms);
        loop {
            tokio::time::sleep(interval).await;
            match self.store.get_instance(id).await {
                Ok(now) if now.state == InstanceState::Running => {}
                // Paused: no check runs (as Docker), the last result stands.
                Ok(now) if now.state == InstanceState::Paused => continue,
                _ => return,
            }
            let probe = self.probe(id, &check).await;
            let in_start_period = began.elapsed() < start_period;
            let mut before = None;
            let mut after = None;
            let recorded = self
                .record_health(id, run, |health| {
                    before = Some(health.status);
                    health.record(probe, &check, in_start_period);
                    after = Some(health.status);
                })
                .await;
            if !recorded {
                return;
            }
            if before != after {
                if let (Some(status), Ok(instance)) = (after, self.store.get_instance(id).await) {
                    tracing::info!(instance = %instance.name, %status, "health");
                    self.emit(&instance, &format!("health_status: {status}"), None);
                }
            }
        }
    }

    /// Applies `change` to the instance's health while it still runs the run `run` on this
    /// node; false when it does not (the checks stop).
    async fn record_health(&self, id: &str, run: Option<DateTime<Utc>>, change: impl FnOnce(&mut Health)) -> bool {
        let _guard = self.lock(id).await;
        let Ok(mut instance) = self.store.get_instance(id).await else {
            return false;
        };
        if !instance.state.is_active() || instance.started_at != run || instance.node != self.node {
            return false;
        }
        let health = instance.health.get_or_insert_with(Health::starting);
        change(health);
        match self.save(&instance).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(instance = %instance.name, error = %e.message, "recording its health");
                // A store that did not answer this time may next time.
                true
            }
        }
    }

    /// Runs the check once: its exit code and the start of its output.
    async fn probe(self: &Arc<Self>, id: &str, check: &HealthCheck) -> HealthProbe {
        let start = Utc::now();
        let request = ExecRequest {
            command: check.command.clone(),
            env: Vec::new(),
            working_dir: None,
            user: None,
            tty: false,
            open_stdin: false,
            detach: false,
        };
        let timeout = Duration::from_millis(check.timeout_ms);
        let (exit_code, output) = match self.exec_session(id, request).await {
            Err(e) => (-1, format!("the check could not run: {}", e.message)),
            Ok((None, _)) => (-1, "the check ran detached".to_string()),
            Ok((Some(stream), session)) => match tokio::time::timeout(timeout, read_result(stream)).await {
                Ok(result) => result,
                Err(_) => {
                    crate::exec_sessions::end_one(&session).await;
                    (
                        -1,
                        format!(
                            "the check ran longer than its timeout ({} ms) and was killed",
                            check.timeout_ms
                        ),
                    )
                }
            },
        };
        HealthProbe {
            start,
            end: Utc::now(),
            exit_code,
            output,
        }
    }
}

/// Reads an exec's frames to its end: the exit code (-1 when it could not start or the
/// stream broke) and the first `MAX_OUTPUT_BYTES` of its stdout and stderr.
async fn read_result(mut stream: UnixStream) -> (i32, String) {
    let mut output = Vec::new();
    let mut header = [0u8; HEADER_LEN];
    let mut payload = Vec::new();
    loop {
        if stream.read_exact(&mut header).await.is_err() {
            return (-1, text(&output, "the check's stream ended without an exit status"));
        }
        let Ok((kind, length)) = parse_header(&header) else {
            return (-1, text(&output, "the check's stream was malformed"));
        };
        if length > MAX_PAYLOAD {
            return (-1, text(&output, "the check's stream was malformed"));
        }
        payload.resize(length, 0);
        if stream.read_exact(&mut payload).await.is_err() {
            return (-1, text(&output, "the check's stream ended without an exit status"));
        }
        match kind {
            FrameKind::Stdout | FrameKind::Stderr => {
                let room = MAX_OUTPUT_BYTES.saturating_sub(output.len());
                output.extend_from_slice(&payload[..payload.len().min(room)]);
            }
            FrameKind::Exit => {
                let code = serde_json::from_slice::<berth_model::ExitStatus>(&payload)
                    .map(|status| status.code)
                    .unwrap_or(-1);
                return (code, text(&output, ""));
            }
            FrameKind::Error => {
                let why = String::from_utf8_lossy(&payload).to_string();
                return (-1, text(&output, &format!("the check could not start: {why}")));
            }
            _ => {}
        }
    }
}

fn text(output: &[u8], note: &str) -> String {
    let mut text = String::from_utf8_lossy(output).to_string();
    if !note.is_empty() {
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(note);
    }
    text
}
