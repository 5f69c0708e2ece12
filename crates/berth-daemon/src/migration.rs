//! `berth migrate`: a running VM moves to another node without stopping (QEMU's live
//! migration between the two nodes' qemu processes, over TCP on their advertised addresses).
//!
//! The source node drives it. It asks the target (`POST /v1/cluster/incoming` on the peer
//! port) to start a qemu for the same VM that waits for its state (`-incoming`, paused by
//! `-S`), sends the memory (pre-copy under a downtime limit; auto-converge and post-copy when
//! asked), and once QEMU reports `completed` — the source paused, the target holding the
//! whole state, still paused — writes the instance's record over to the target in one
//! compare-and-swap. Only then does the target resume the guest — after its own
//! compare-and-swap on the revision the source wrote — and the source ends its qemu. So the
//! guest runs on one node at any moment: if the record cannot be written, the target's copy
//! is ended and the source resumes; if the target cannot be told to resume (it died after
//! the copy), the source takes the record back with a compare-and-swap on the revision it
//! wrote, which fails exactly when the target already took it, and resumes only then; if the
//! target dies before, or the migration fails or is cancelled (the client went away:
//! Ctrl-C), QEMU leaves the source running.
//!
//! Disks are not copied: a VM migrates live when all its disks and volumes are on a share
//! (`--disk-on nfs://...`, NFS volumes) that both qemus open. Local disks (which would need
//! an NBD mirror), host directories (virtiofs cannot migrate in QEMU 7.2) and containers
//! (CRIU, which fails `criu check` on this kernel) are refused with the reason.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use berth_model::api::{LiveChoice, MigrateRequest, MigrationEvent};
use berth_model::instance::{InstanceKind, Migration, Rescheduled, VmDetails};
use berth_model::mount::MountKind;
use berth_model::node::NodeState;
use berth_model::{Instance, InstanceState};
use berth_shim::client;
use berth_shim::protocol::Request as SupervisorRequest;
use berth_store::instance::split;
use berth_store::RecordTxn;
use berth_vm::migrate::{self, MigrationOptions};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::admission::{Claim, Reservation};
use crate::cluster::Membership;
use crate::engine::Engine;
use crate::error::{EngineError, EngineResult};

/// QEMU's own default downtime limit.
pub const DEFAULT_MAX_DOWNTIME_MS: u64 = 300;
/// How often the source asks QEMU how far it is (progress goes out every fourth time).
const POLL_EVERY: Duration = Duration::from_millis(50);
const PROGRESS_EVERY_POLLS: u32 = 4;
/// A migration whose expected downtime stays above the limit this long is given up: the
/// guest dirties memory faster than the link sends it.
const OVER_LIMIT_FOR: Duration = Duration::from_secs(60);
/// The longest a migration may take at all.
const MAX_MIGRATION: Duration = Duration::from_secs(15 * 60);
/// A target whose source neither commits nor aborts (it died) ends its copy after this.
const INCOMING_EXPIRES: Duration = Duration::from_secs(17 * 60);

/// The source's request to the target.
#[derive(Debug, Serialize, Deserialize)]
pub struct IncomingRequest {
    /// The instance as the source's record has it.
    pub instance: Instance,
    pub max_downtime_ms: u64,
    pub auto_converge: bool,
    pub postcopy: bool,
    /// The source's accelerator: QEMU migrates KVM to KVM and TCG to TCG only.
    pub accelerator: String,
}

/// The target's answer: where it listens and what the record becomes there.
#[derive(Debug, Serialize, Deserialize)]
pub struct IncomingReady {
    /// `IP:PORT` of the waiting qemu.
    pub address: String,
    pub pid: Option<u32>,
    pub supervisor_pid: u32,
    /// The VM's details with the target's paths.
    pub vm: VmDetails,
    pub image_id: String,
    /// The local disks (`disk0`...) the source is to mirror, and where the target serves
    /// its copies of them over NBD (`IP:PORT`).
    #[serde(default)]
    pub mirrored: Vec<String>,
    #[serde(default)]
    pub disks_address: Option<String>,
}

/// The VM's disks that live on its node (not on a share): `disk0`... as its qemu names them.
fn local_disks(vm: &VmDetails) -> Vec<String> {
    vm.disks
        .iter()
        .enumerate()
        .filter(|(_, disk)| berth_vm::shared_disk::on_share(&disk.path).is_none())
        .map(|(index, _)| format!("disk{index}"))
        .collect()
}

/// A free TCP port on `ip` for a qemu to listen on.
fn free_port(ip: std::net::IpAddr) -> EngineResult<String> {
    let port = std::net::TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| EngineError::internal(format!("finding a free port on {ip}: {e}")))?;
    Ok(std::net::SocketAddr::new(ip, port).to_string())
}

/// A target's qemu waiting for, or holding, a migrated guest, until the source commits.
struct Incoming {
    instance: Instance,
    socket: PathBuf,
    exit_path: PathBuf,
    _claim: Claim,
}

/// The target's waiting copies, by instance id (one daemon per process).
static INCOMING: Mutex<Option<HashMap<String, Incoming>>> = Mutex::new(None);

fn incoming() -> std::sync::MutexGuard<'static, Option<HashMap<String, Incoming>>> {
    INCOMING.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether a copy of instance `id` waits here for its live migration to finish.
pub(crate) fn is_incoming(id: &str) -> bool {
    incoming().as_ref().is_some_and(|m| m.contains_key(id))
}

/// The peer port's migration endpoints (behind the cluster's token).
pub fn router(engine: Arc<Engine>) -> Router {
    Router::new()
        .route("/v1/cluster/incoming", post(prepare))
        .route("/v1/cluster/incoming/{id}/commit", post(commit))
        .route("/v1/cluster/incoming/{id}/abort", post(abort))
        .route("/v1/cluster/incoming/{id}/layer", post(layer))
        .route("/v1/cluster/incoming/{id}/volume/{name}", post(volume))
        .with_state(engine)
}

async fn prepare(
    State(engine): State<Arc<Engine>>,
    Json(request): Json<IncomingRequest>,
) -> EngineResult<Json<IncomingReady>> {
    engine.prepare_incoming(request).await.map(Json)
}

async fn commit(State(engine): State<Arc<Engine>>, UrlPath(id): UrlPath<String>) -> EngineResult<Json<()>> {
    engine.commit_incoming(&id).await.map(Json)
}

async fn layer(
    State(engine): State<Arc<Engine>>,
    UrlPath(id): UrlPath<String>,
    request: Request,
) -> EngineResult<Json<()>> {
    engine.receive_layer(&id, request.into_body()).await.map(Json)
}

async fn volume(
    State(engine): State<Arc<Engine>>,
    UrlPath((id, name)): UrlPath<(String, String)>,
    request: Request,
) -> EngineResult<Json<()>> {
    engine.receive_volume(&id, &name, request.into_body()).await.map(Json)
}

async fn abort(State(engine): State<Arc<Engine>>, UrlPath(id): UrlPath<String>) -> EngineResult<Json<()>> {
    engine.abort_incoming(&id).await;
    Ok(Json(()))
}

/// What `criu check` says on this host: `Ok` when CRIU works, else its complaint.
fn criu_check() -> Result<(), String> {
    match berth_process::command("criu").arg("check").output() {
        Ok(output) if output.status.success() => Ok(()),
        Ok(output) => Err(String::from_utf8_lossy(&output.stderr)
            .lines()
            .chain(String::from_utf8_lossy(&output.stdout).lines())
            .find(|l| l.contains("Error") || l.contains("error"))
            .unwrap_or("it failed")
            .trim()
            .to_string()),
        Err(e) => Err(format!("criu is not installed ({e})")),
    }
}

/// Why `instance` cannot move as asked, if it cannot: a VM live, a container by stop, move
/// and start (or with CRIU, `live: yes`).
pub fn move_refusal(instance: &Instance, request: &MigrateRequest) -> Option<String> {
    if instance.kind == InstanceKind::Vm {
        return live_refusal(instance);
    }
    if request.live == Some(LiveChoice::Yes) {
        let why = match criu_check() {
            Err(complaint) => format!("`criu check` fails on this host: {complaint}"),
            Ok(()) => "checkpoint/restore with CRIU is not built into berth yet".to_string(),
        };
        return Some(format!(
            "{} cannot move live: {why}; --live=auto (or no --live) moves it by stop, move and start",
            instance.name
        ));
    }
    if instance.spec.disk_bytes.is_some() {
        return Some(format!(
            "{}'s writable layer is a file system of its own (--disk): moving it is not built yet",
            instance.name
        ));
    }
    if let Some(volume) = instance.spec.volumes.iter().find(|v| v.source.starts_with("nfs://")) {
        return Some(format!(
            "{}'s NFS volume {} is mounted through this node's kernel: a container using one does not move (a VM's does)",
            instance.name, volume.volume
        ));
    }
    if let Some(bind) = instance.spec.mounts.iter().find(|m| m.kind == MountKind::Bind) {
        return Some(format!(
            "{} binds host path {}, which is its node's",
            instance.name, bind.source
        ));
    }
    None
}

/// The marker in a moving container's directory on the target naming the volumes that
/// arrived for it (removed again if the move is called off).
const RECEIVED_VOLUMES: &str = "received-volumes";

/// Why the VM `instance` cannot migrate live, if it cannot.
pub fn live_refusal(instance: &Instance) -> Option<String> {
    if instance.kind == InstanceKind::Container {
        return Some(format!(
            "{} is a container: it moves by stop, move and start (berth migrate), not live",
            instance.name
        ));
    }
    let vm = instance.vm.as_ref()?;
    // Local disks are mirrored to the target; they must be the instance's own files.
    let own_dir = std::path::Path::new(&vm.qmp_socket).parent()?;
    let local = vm
        .disks
        .iter()
        .filter(|d| berth_vm::shared_disk::on_share(&d.path).is_none());
    for disk in local {
        if !std::path::Path::new(&disk.path).starts_with(own_dir) {
            return Some(format!(
                "{}'s disk {} is outside its instance directory: berth mirrors only the VM's own disks; keep it on a share (--disk-on nfs://SERVER/EXPORT)",
                instance.name, disk.path
            ));
        }
        if !vm.snapshots.is_empty() {
            return Some(format!(
                "{} has disk snapshots ({}), which a mirrored disk cannot take along: delete them (`berth snapshot rm`) or keep its disks on a share",
                instance.name,
                vm.snapshots.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
            ));
        }
    }
    if let Some(volume) = instance.spec.volumes.iter().find(|v| !v.source.starts_with("nfs://")) {
        return Some(format!(
            "{}'s volume {} is its node's: a VM migrates live with NFS volumes only",
            instance.name, volume.volume
        ));
    }
    if let Some(bind) = instance.spec.mounts.iter().find(|m| m.kind == MountKind::Bind) {
        return Some(format!(
            "{} shares host directory {} (virtiofs), which QEMU cannot migrate",
            instance.name, bind.source
        ));
    }
    None
}

impl Engine {
    /// Moves a running VM of this node to another node live; `events` gets the target,
    /// progress and, from the caller, the result. A closed `events` (the client left)
    /// cancels it.
    pub async fn migrate(
        self: &Arc<Self>,
        key: &str,
        request: &MigrateRequest,
        events: &mpsc::Sender<MigrationEvent>,
    ) -> EngineResult<(String, String, Migration)> {
        let result = self.migrate_unrecorded(key, request, events).await;
        match &result {
            Ok((_, _, migration)) => {
                crate::metrics::record_migration(migration.live, Ok(Duration::from_millis(migration.downtime_ms)))
            }
            // A request refused before anything moved (a single host, a bad limit) is not a
            // migration; one that failed on its way is.
            Err(e) if e.status.is_server_error() || e.status == StatusCode::CONFLICT => {
                let live = self.find(key).await.is_ok_and(|i| i.kind == InstanceKind::Vm);
                crate::metrics::record_migration(live, Err(()))
            }
            Err(_) => {}
        }
        result
    }

    async fn migrate_unrecorded(
        self: &Arc<Self>,
        key: &str,
        request: &MigrateRequest,
        events: &mpsc::Sender<MigrationEvent>,
    ) -> EngineResult<(String, String, Migration)> {
        let began = Instant::now();
        let membership = self.membership.clone().ok_or_else(|| {
            EngineError::invalid(
                "to",
                "this daemon is a single host: instances migrate between the nodes of a cluster (berth daemon --cluster etcd://...)",
            )
        })?;
        let max_downtime_ms = request.max_downtime_ms.unwrap_or(DEFAULT_MAX_DOWNTIME_MS);
        if !(1..=60_000).contains(&max_downtime_ms) {
            return Err(EngineError::invalid(
                "max_downtime_ms",
                "--max-downtime: give 1 to 60000 milliseconds (QEMU's default is 300)",
            ));
        }
        let max_bandwidth_bytes = match request.bandwidth_mib {
            None => migrate::LINK_SPEED_BYTES,
            Some(mib @ 1..=1_000_000) => mib << 20,
            Some(_) => {
                return Err(EngineError::invalid(
                    "bandwidth_mib",
                    "--bandwidth: give 1 to 1000000 MiB/s",
                ))
            }
        };
        let options = MigrationOptions {
            max_downtime_ms,
            max_bandwidth_bytes,
            auto_converge: request.auto_converge,
            postcopy: request.postcopy,
        };
        let found = self.find(key).await?;
        if found.kind == InstanceKind::Container {
            return self.move_container(&membership, &found, request, events).await;
        }
        let guard = self.lock(&found.id).await;
        let versioned = self.store.instance(&found.id).await?;
        let instance = versioned.instance.clone();
        if instance.node != self.node {
            return Err(EngineError::conflict(format!(
                "instance {} runs on node {}, not here ({}); send the request through any node's socket",
                instance.name, instance.node, self.node
            )));
        }
        if let Some(reason) = live_refusal(&instance) {
            return Err(EngineError::conflict(reason));
        }
        if instance.state != InstanceState::Running {
            return Err(EngineError::conflict(format!(
                "instance {} is {}: only a running VM migrates live",
                instance.name, instance.state
            )));
        }
        let vm = instance
            .vm
            .clone()
            .ok_or_else(|| EngineError::internal(format!("{} has no VM details", instance.name)))?;
        let qmp = PathBuf::from(&vm.qmp_socket);
        let (target, reason) = self
            .migration_target(&membership, &instance, request.to.as_deref())
            .await?;
        let reason = request.reason.clone().unwrap_or(reason);
        let _ = events
            .send(MigrationEvent::Target {
                node: target.clone(),
                reason: reason.clone(),
            })
            .await;
        let accelerator = self.vm_driver().accelerator().choice().to_string();
        let ask = IncomingRequest {
            instance: instance.clone(),
            max_downtime_ms,
            auto_converge: request.auto_converge,
            postcopy: request.postcopy,
            accelerator: accelerator.clone(),
        };
        let body = serde_json::to_vec(&ask).map_err(|e| EngineError::internal(e.to_string()))?;
        let ready: IncomingReady = peer_call(&membership, &target, &self.node, "/v1/cluster/incoming", body)
            .await
            .map_err(|e| {
                EngineError::new(
                    e.status,
                    format!("node {target} cannot take {}: {}", instance.name, e.message),
                )
            })?;
        let abort_target = || async {
            let path = format!("/v1/cluster/incoming/{}/abort", instance.id);
            if let Err(e) = peer_call::<()>(&membership, &target, &self.node, &path, Vec::new()).await {
                tracing::warn!(instance = %instance.name, %target, error = %e.message, "ending the target's copy");
            }
        };
        // Local disks first: the guest runs on while they are copied, until every mirror is
        // in step; from then on each guest write reaches both copies.
        let mirrors = ready.mirrored.clone();
        let abandon_mirrors = || async {
            if !mirrors.is_empty() {
                if let Err(e) = migrate::finish_mirrors(&qmp, &mirrors, true).await {
                    tracing::warn!(instance = %instance.name, error = %e, "abandoning the disks' copies");
                }
            }
        };
        let mut disk_bytes = 0;
        if !mirrors.is_empty() {
            let copied = self
                .mirror_disks(&qmp, &ready, request.bandwidth_mib.map_or(0, |mib| mib << 20), events)
                .await;
            match copied {
                Ok(bytes) => disk_bytes = bytes,
                Err(e) => {
                    abandon_mirrors().await;
                    abort_target().await;
                    return Err(EngineError::new(
                        e.status,
                        format!("{}; {} still runs on {}", e.message, instance.name, self.node),
                    ));
                }
            }
        }
        let sending = Instant::now();
        if let Err(e) = migrate::start(&qmp, &ready.address, &options, !mirrors.is_empty()).await {
            abandon_mirrors().await;
            abort_target().await;
            return Err(EngineError::internal(format!(
                "starting the migration of {}: {e}; it still runs on {}",
                instance.name, self.node
            )));
        }
        tracing::info!(instance = %instance.name, to = %target, address = %ready.address, "migrating live");
        let still_here = format!("{} still runs on {}", instance.name, self.node);
        let mut polls = 0u32;
        let mut over_limit_since: Option<Instant> = None;
        let mut switched_to_postcopy = false;
        let done = loop {
            tokio::time::sleep(POLL_EVERY).await;
            let status = match migrate::progress(&qmp).await {
                Ok(status) => status,
                Err(e) => {
                    let _ = migrate::cancel(&qmp).await;
                    abandon_mirrors().await;
                    abort_target().await;
                    return Err(EngineError::internal(format!(
                        "following the migration: {e}; {still_here}"
                    )));
                }
            };
            match status.status.as_str() {
                "completed" => break status,
                // The guest is paused and its devices not yet handed over: the disk copies
                // end in step, then the switch-over goes on.
                "pre-switchover" => {
                    let ended = match migrate::finish_mirrors(&qmp, &mirrors, false).await {
                        Ok(()) => migrate::continue_after_mirrors(&qmp).await,
                        Err(e) => Err(e),
                    };
                    if let Err(e) = ended {
                        let _ = migrate::cancel(&qmp).await;
                        abandon_mirrors().await;
                        abort_target().await;
                        return Err(EngineError::internal(format!(
                            "ending the disks' copies at the switch-over: {e}; {still_here}"
                        )));
                    }
                    continue;
                }
                "failed" | "cancelled" | "cancelling" => {
                    abandon_mirrors().await;
                    abort_target().await;
                    return Err(EngineError::conflict(format!(
                        "the migration to {target} {}: {}; {still_here}",
                        status.status,
                        status.error.unwrap_or_else(|| "QEMU gave no reason".into())
                    )));
                }
                _ => {}
            }
            if events.is_closed() && status.status != "postcopy-active" {
                let _ = migrate::cancel(&qmp).await;
                abandon_mirrors().await;
                abort_target().await;
                return Err(EngineError::conflict(format!(
                    "the migration was cancelled; {still_here}"
                )));
            }
            if options.postcopy && !switched_to_postcopy && status.status == "active" && status.dirty_sync_count >= 2 {
                // One full pass is over: the rest comes on demand, the guest runs there.
                if migrate::start_postcopy(&qmp).await.is_ok() {
                    switched_to_postcopy = true;
                }
            }
            if status.status == "active"
                && status.dirty_sync_count >= 2
                && status.expected_downtime_ms > max_downtime_ms
            {
                let since = *over_limit_since.get_or_insert_with(Instant::now);
                if since.elapsed() > OVER_LIMIT_FOR {
                    let _ = migrate::cancel(&qmp).await;
                    abandon_mirrors().await;
                    abort_target().await;
                    return Err(EngineError::conflict(format!(
                        "the expected downtime stayed above --max-downtime {max_downtime_ms} ms for {} s (the guest dirties memory faster than it is sent: {} pages/s); try --auto-converge, --postcopy or a larger --max-downtime; {still_here}",
                        OVER_LIMIT_FOR.as_secs(),
                        status.dirty_pages_rate
                    )));
                }
            } else {
                over_limit_since = None;
            }
            if sending.elapsed() > MAX_MIGRATION {
                let _ = migrate::cancel(&qmp).await;
                abandon_mirrors().await;
                abort_target().await;
                return Err(EngineError::conflict(format!(
                    "the migration took longer than {} min; {still_here}",
                    MAX_MIGRATION.as_secs() / 60
                )));
            }
            polls += 1;
            if polls % PROGRESS_EVERY_POLLS == 1 {
                let _ = events.try_send(MigrationEvent::Progress {
                    status: status.status.clone(),
                    transferred_bytes: status.transferred_bytes,
                    remaining_bytes: status.remaining_bytes,
                    total_bytes: status.total_bytes,
                    dirty_pages_rate: status.dirty_pages_rate,
                    expected_downtime_ms: status.expected_downtime_ms,
                    cpu_throttle_percent: status.cpu_throttle_percent,
                });
            }
        };
        // Both qemus are paused now (unless post-copy already runs the guest there). The
        // record goes over first, in one compare-and-swap; then the target resumes.
        let mut moved = instance.clone();
        moved.node = target.clone();
        moved.vm = Some(ready.vm.clone());
        moved.spec.image_id = ready.image_id.clone();
        moved.pid = ready.pid;
        moved.supervisor_pid = Some(ready.supervisor_pid);
        moved.spec.placement = Some(format!("live-migrated from node {}: {reason}", self.node));
        let mut result = Migration {
            live: true,
            downtime_ms: 0,
            qemu_downtime_ms: done.downtime_ms,
            total_ms: 0,
            transferred_bytes: done.transferred_bytes,
            max_downtime_ms,
            auto_converge: options.auto_converge,
            postcopy: switched_to_postcopy,
            accelerator,
            disk_bytes,
        };
        moved.rescheduled = Some(Rescheduled {
            from: self.node.clone(),
            at: Utc::now(),
            adopted: true,
            migration: Some(result.clone()),
        });
        let (desired, status) = split(&moved);
        let written = async {
            let txn = RecordTxn::new()
                .update(&desired, versioned.spec_revision)?
                .update(&status, versioned.status_revision)?;
            self.store.commit(txn).await
        }
        .await;
        let handed_over = match written {
            Ok(revision) => revision,
            Err(e) => {
                abort_target().await;
                if !switched_to_postcopy {
                    if let Err(resume) = migrate::resume(&qmp).await {
                        tracing::error!(instance = %instance.name, error = %resume, "resuming the source after a failed hand-over");
                    }
                }
                return Err(EngineError::internal(format!(
                    "the hand-over of {} could not be recorded ({e}); {still_here}",
                    instance.name
                )));
            }
        };
        let commit_path = format!("/v1/cluster/incoming/{}/commit", instance.id);
        let resumed = peer_call::<()>(&membership, &target, &self.node, &commit_path, Vec::new()).await;
        if let Err(e) = &resumed {
            // The target did not say it took the guest. Take the record back — only if it is
            // still as written here, which it is not once the target took it.
            let (desired, status) = split(&instance);
            let back = async {
                let txn = RecordTxn::new()
                    .update(&desired, handed_over)?
                    .update(&status, handed_over)?;
                self.store.commit(txn).await
            }
            .await;
            if back.is_ok() && !switched_to_postcopy {
                abort_target().await;
                if let Err(resume) = migrate::resume(&qmp).await {
                    tracing::error!(instance = %instance.name, error = %resume, "resuming the source after the target failed");
                }
                return Err(EngineError::new(
                    StatusCode::BAD_GATEWAY,
                    format!(
                        "node {target} did not take {} after the copy ({}); {still_here}",
                        instance.name, e.message
                    ),
                ));
            }
        }
        // The guest was paused from QEMU's last copy (it ended `total-time` after the
        // migrate command) until the target resumed it.
        let completed_at = sending + Duration::from_millis(done.total_ms);
        let resumed_at = Instant::now();
        result.downtime_ms = done.downtime_ms + resumed_at.saturating_duration_since(completed_at).as_millis() as u64;
        result.total_ms = began.elapsed().as_millis() as u64;
        // The source's qemu has nothing left to run: it goes, and this node's copy with it.
        if let Err(e) = berth_vm::qmp::execute(&qmp, "quit", serde_json::Value::Null).await {
            tracing::warn!(instance = %instance.name, error = %e, "ending the source's qemu");
        }
        drop(guard);
        let dir = self.instance_dir(&instance.id);
        supervisor_gone(&dir.join("supervisor.sock"), Duration::from_secs(10)).await;
        self.release_local(&instance, &dir).await;
        if let Err(e) = resumed {
            return Err(EngineError::internal(format!(
                "{} moved to node {target}, which did not resume it ({}); `berth unpause {}` resumes it there",
                instance.name, e.message, instance.name
            )));
        }
        // The measured figures go into the record too.
        if let Ok(mut current) = self.store.get_instance(&instance.id).await {
            if let Some(moved) = current.rescheduled.as_mut() {
                moved.migration = Some(result.clone());
                if let Err(e) = self.store.update_instance(&current).await {
                    tracing::warn!(instance = %instance.name, error = %e, "recording the migration's figures");
                }
            }
        }
        self.emit(&moved, "migrate", None);
        tracing::info!(
            instance = %instance.name, to = %target, downtime_ms = result.downtime_ms,
            total_ms = result.total_ms, "migrated live"
        );
        Ok((self.node.clone(), target, result))
    }

    /// Copies the VM's local disks into the target's (`ready.mirrored`, served at
    /// `ready.disks_address`) while the guest runs, until every copy is in step; progress
    /// goes to `events` (`copying disks`), a closed `events` cancels. The bytes copied.
    async fn mirror_disks(
        &self,
        qmp: &std::path::Path,
        ready: &IncomingReady,
        speed_bytes: u64,
        events: &mpsc::Sender<MigrationEvent>,
    ) -> EngineResult<u64> {
        let address = ready
            .disks_address
            .as_deref()
            .ok_or_else(|| EngineError::internal("the target serves no disk copies"))?;
        migrate::start_mirrors(qmp, address, &ready.mirrored, speed_bytes)
            .await
            .map_err(|e| EngineError::internal(format!("copying the local disks: {e}")))?;
        let began = Instant::now();
        let mut polls = 0u32;
        loop {
            tokio::time::sleep(POLL_EVERY).await;
            let progress = migrate::mirror_progress(qmp, &ready.mirrored)
                .await
                .map_err(|e| EngineError::internal(format!("copying the local disks: {e}")))?;
            if progress.ready {
                return Ok(progress.copied_bytes);
            }
            if events.is_closed() {
                return Err(EngineError::conflict(
                    "the migration was cancelled while the disks were copied",
                ));
            }
            if began.elapsed() > MAX_MIGRATION {
                return Err(EngineError::conflict(format!(
                    "the disks were not copied within {} min",
                    MAX_MIGRATION.as_secs() / 60
                )));
            }
            polls += 1;
            if polls % PROGRESS_EVERY_POLLS == 1 {
                let _ = events.try_send(MigrationEvent::Progress {
                    status: "copying disks".into(),
                    transferred_bytes: progress.copied_bytes,
                    remaining_bytes: progress.total_bytes.saturating_sub(progress.copied_bytes),
                    total_bytes: progress.total_bytes,
                    dirty_pages_rate: 0,
                    expected_downtime_ms: 0,
                    cpu_throttle_percent: 0,
                });
            }
        }
    }

    /// The node to move to: the one asked for, checked, or the scheduler's choice among the
    /// others.
    async fn migration_target(
        &self,
        membership: &Membership,
        instance: &Instance,
        wanted: Option<&str>,
    ) -> EngineResult<(String, String)> {
        let nodes = membership.nodes().await?;
        let vm_kind = |n: &berth_model::node::Node| n.fingerprint.kinds.contains(&instance.kind);
        if let Some(name) = wanted {
            let node = nodes.iter().find(|n| n.name == name).ok_or_else(|| {
                EngineError::invalid("to", format!("no such node: {name}; `berth node ls` lists them"))
            })?;
            if node.name == self.node {
                return Err(EngineError::invalid(
                    "to",
                    format!("--to {name}: {} already runs there", instance.name),
                ));
            }
            if node.state != NodeState::Ready {
                return Err(EngineError::conflict(format!(
                    "node {name} is {}: it takes no instances",
                    node.state.as_str()
                )));
            }
            if !vm_kind(node) {
                return Err(EngineError::conflict(format!(
                    "node {name} cannot run {}s",
                    instance.kind
                )));
            }
            return Ok((name.to_string(), "the node asked for (--to)".into()));
        }
        let others: Vec<_> = nodes.into_iter().filter(|n| n.name != self.node).collect();
        let all = self.store.list_instances().await?;
        crate::failover::place_moved(&others, &all, instance).map_err(EngineError::conflict)
    }

    /// A container's move: stopped here, its writable layer sent to the target (`tar` with
    /// xattrs, so overlayfs whiteouts and opaque directories survive), its record handed over
    /// in one compare-and-swap, and started there by the target's adoption; the name stays.
    /// It never runs twice: it is stopped before the record moves.
    async fn move_container(
        self: &Arc<Self>,
        membership: &Arc<Membership>,
        found: &Instance,
        request: &MigrateRequest,
        events: &mpsc::Sender<MigrationEvent>,
    ) -> EngineResult<(String, String, Migration)> {
        let began = Instant::now();
        if found.node != self.node {
            return Err(EngineError::conflict(format!(
                "instance {} runs on node {}, not here ({})",
                found.name, found.node, self.node
            )));
        }
        if let Some(reason) = move_refusal(found, request) {
            return Err(EngineError::conflict(reason));
        }
        if found.state != InstanceState::Running {
            return Err(EngineError::conflict(format!(
                "instance {} is {}: only a running instance moves",
                found.name, found.state
            )));
        }
        let volumes = self.volumes_to_move(found).await?;
        let (target, mut reason) = self.migration_target(membership, found, request.to.as_deref()).await?;
        if let Some(asked) = &request.reason {
            reason = asked.clone();
        }
        // Before anything stops: a volume of the same name there would be refused.
        if let Some(clash) = membership
            .node(&target)
            .await?
            .volumes
            .into_iter()
            .find(|name| volumes.contains(name))
        {
            return Err(EngineError::conflict(format!(
                "node {target} already has a volume {clash}; remove or rename one of the two first"
            )));
        }
        if request.live == Some(LiveChoice::Auto) {
            let why = criu_check()
                .err()
                .unwrap_or_else(|| "CRIU is not built into berth yet".into());
            reason = format!("{reason}; moved by stop and start (--live=auto: {why})");
        }
        let _ = events
            .send(MigrationEvent::Target {
                node: target.clone(),
                reason: reason.clone(),
            })
            .await;
        let stopped_at = Instant::now();
        self.stop(&found.id, Some(10)).await?;
        let dir = self.instance_dir(&found.id);
        let upper = berth_container::rootfs::RootfsPaths::new(&dir).upper;
        let sent = match send_layer(membership, &target, &self.node, &found.id, &upper).await {
            Ok(sent) => sent,
            Err(e) => {
                let _ = self.start(&found.id, false).await;
                return Err(EngineError::new(
                    e.status,
                    format!(
                        "sending {}'s writable layer to {target}: {}; it runs here again",
                        found.name, e.message
                    ),
                ));
            }
        };
        let mut sent = sent;
        for volume in &volumes {
            let path = format!("/v1/cluster/incoming/{}/volume/{volume}", found.id);
            let dir = self.volumes.image_dir(volume);
            let image = crate::volumes::IMAGE_FILE;
            match send_tar(membership, &target, &self.node, &path, &dir, image, VOLUME_TAR).await {
                Ok(bytes) => sent += bytes,
                Err(e) => {
                    let abort = format!("/v1/cluster/incoming/{}/abort", found.id);
                    let _ = peer_call::<()>(membership, &target, &self.node, &abort, Vec::new()).await;
                    let _ = self.start(&found.id, false).await;
                    return Err(EngineError::new(
                        e.status,
                        format!(
                            "sending {}'s volume {volume} to {target}: {}; it runs here again",
                            found.name, e.message
                        ),
                    ));
                }
            }
        }
        let stopped = self.store.instance(&found.id).await?;
        let mut figures = Migration {
            live: false,
            downtime_ms: 0,
            qemu_downtime_ms: 0,
            total_ms: 0,
            transferred_bytes: sent,
            max_downtime_ms: 0,
            auto_converge: false,
            postcopy: false,
            accelerator: String::new(),
            disk_bytes: 0,
        };
        let why = format!("moved from node {} (berth migrate): {reason}", self.node);
        let handed = match crate::failover::moved_txn(&stopped, &target, &why) {
            Ok(txn) => self.store.commit(txn).await,
            Err(e) => Err(e),
        };
        if let Err(e) = handed {
            let abort = format!("/v1/cluster/incoming/{}/abort", found.id);
            let _ = peer_call::<()>(membership, &target, &self.node, &abort, Vec::new()).await;
            let _ = self.start(&found.id, false).await;
            return Err(EngineError::internal(format!(
                "the hand-over of {} could not be recorded ({e}); it runs here again",
                found.name
            )));
        }
        self.release_local(&stopped.instance, &dir).await;
        // The volumes went with it: the target has them now.
        for volume in &volumes {
            if let Err(e) = self.volumes.remove(volume, &[], false).await {
                tracing::warn!(%volume, error = %e.message, "removing a volume that moved to {target}");
            }
        }
        // The target adopts it within a round (0.5 s) and starts it.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            match self.store.get_instance(&found.id).await {
                Ok(now) if now.state == InstanceState::Running && now.node == target => break,
                Ok(now) if now.error.is_some() && now.node == target => {
                    return Err(EngineError::internal(format!(
                        "{} moved to {target}, which could not start it: {}",
                        found.name,
                        now.error.unwrap_or_default()
                    )))
                }
                _ if Instant::now() > deadline => {
                    return Err(EngineError::internal(format!(
                        "{} moved to {target}, which has not started it within 2 min; `berth inspect {}` shows it",
                        found.name, found.name
                    )))
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        figures.downtime_ms = stopped_at.elapsed().as_millis() as u64;
        figures.total_ms = began.elapsed().as_millis() as u64;
        if let Ok(mut current) = self.store.get_instance(&found.id).await {
            if let Some(moved) = current.rescheduled.as_mut() {
                moved.migration = Some(figures.clone());
                if let Err(e) = self.store.update_instance(&current).await {
                    tracing::warn!(instance = %found.name, error = %e, "recording the move's figures");
                }
            }
        }
        tracing::info!(instance = %found.name, to = %target, downtime_ms = figures.downtime_ms, "moved a container");
        Ok((self.node.clone(), target, figures))
    }

    /// The local volumes `instance` (a container) takes along when it moves: each must be
    /// its alone (no other instance of this node uses it) and have no snapshots.
    async fn volumes_to_move(&self, instance: &Instance) -> EngineResult<Vec<String>> {
        let mut names = Vec::new();
        for mount in instance.spec.volumes.iter().filter(|v| !v.source.starts_with("nfs://")) {
            let volume = self.volumes.get(&mount.volume).await?;
            if !volume.snapshots.is_empty() {
                return Err(EngineError::conflict(format!(
                    "{}'s volume {} has snapshots, which do not move with it: delete them first (`berth volume snapshot --rm`)",
                    instance.name, volume.name
                )));
            }
            let others: Vec<Instance> = self
                .local_instances()
                .await?
                .into_iter()
                .filter(|other| other.id != instance.id && other.spec.volumes.iter().any(|v| v.volume == volume.name))
                .collect();
            if let Some(other) = others.first() {
                return Err(EngineError::conflict(format!(
                    "{}'s volume {} is also used by {} on this node: moving it would take it from them",
                    instance.name, volume.name, other.name
                )));
            }
            if !names.contains(&volume.name) {
                names.push(volume.name);
            }
        }
        Ok(names)
    }

    /// A moving container's local volume arriving ahead of its record: its image becomes a
    /// volume of this node under the same name (refused if this node has one).
    async fn receive_volume(&self, id: &str, name: &str, body: Body) -> EngineResult<()> {
        if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(EngineError::invalid("id", "an instance id is 64 hex digits"));
        }
        let instance_dir = self.instance_dir(id);
        if !instance_dir.is_dir() {
            return Err(EngineError::conflict(format!(
                "no move of {id} is under way here: its writable layer comes first"
            )));
        }
        let dir = match self.volumes.prepare_receive(name).await {
            Ok(dir) => dir,
            Err(e) => {
                // Read what was sent, so the sender hears why rather than a broken pipe.
                use futures_util::StreamExt;
                let mut stream = body.into_data_stream();
                while let Some(Ok(_)) = stream.next().await {}
                return Err(e);
            }
        };
        let marker = instance_dir.join(RECEIVED_VOLUMES);
        let mut received = std::fs::read_to_string(&marker).unwrap_or_default();
        received.push_str(name);
        received.push('\n');
        std::fs::write(&marker, received)
            .map_err(|e| EngineError::internal(format!("writing {}: {e}", marker.display())))?;
        if let Err(e) = unpack_tar(body, &dir, VOLUME_TAR).await {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(EngineError::internal(format!("volume {name}: {}", e.message)));
        }
        self.volumes.finish_receive(name).await.map(|_| ())
    }

    /// A container's writable layer arriving ahead of its record: unpacked into the
    /// instance's directory here, where the adoption finds it.
    async fn receive_layer(&self, id: &str, body: Body) -> EngineResult<()> {
        if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(EngineError::invalid("id", "an instance id is 64 hex digits"));
        }
        let dir = self.instance_dir(id);
        if dir.join("supervisor.json").exists() {
            return Err(EngineError::conflict(format!(
                "node {} still holds a copy of {id}; it is cleared within a failover round",
                self.node
            )));
        }
        let upper = berth_container::rootfs::RootfsPaths::new(&dir).upper;
        let _ = std::fs::remove_dir_all(&upper);
        std::fs::create_dir_all(&upper)
            .map_err(|e| EngineError::internal(format!("creating {}: {e}", upper.display())))?;
        if let Err(e) = unpack_tar(body, &upper, LAYER_TAR).await {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(EngineError::internal(format!("the writable layer: {}", e.message)));
        }
        Ok(())
    }

    /// The target's part: a qemu for `request.instance` that waits for its state.
    async fn prepare_incoming(self: &Arc<Self>, request: IncomingRequest) -> EngineResult<IncomingReady> {
        let mut instance = request.instance.clone();
        let membership = self
            .membership
            .clone()
            .ok_or_else(|| EngineError::conflict("this daemon is not a cluster's node"))?;
        if let Some(reason) = live_refusal(&instance) {
            return Err(EngineError::conflict(reason));
        }
        let here = self.vm_driver().accelerator().choice().to_string();
        if here != request.accelerator {
            return Err(EngineError::conflict(format!(
                "node {} runs VMs with {here} and the source with {}: QEMU migrates between the same accelerator only",
                self.node, request.accelerator
            )));
        }
        let ip = membership.advertised_ip().ok_or_else(|| {
            EngineError::conflict(format!(
                "node {} advertises no address (--advertise IP) for the source to send to",
                self.node
            ))
        })?;
        if incoming().as_ref().is_some_and(|m| m.contains_key(&instance.id)) {
            return Err(EngineError::conflict(format!(
                "{} is already migrating here",
                instance.name
            )));
        }
        let _guard = self.lock(&instance.id).await;
        let dir = self.instance_dir(&instance.id);
        if dir.join("supervisor.json").exists() {
            return Err(EngineError::conflict(format!(
                "node {} still holds a copy of {} (it ran here before); it is cleared within a failover round",
                self.node, instance.name
            )));
        }
        std::fs::create_dir_all(&dir).map_err(|e| EngineError::internal(format!("creating {}: {e}", dir.display())))?;
        let image = match self.local_store.get_image(&instance.spec.image_id).await {
            Ok(image) => image,
            Err(_) => self.resolve_image(&instance.spec.image).await.map_err(|e| {
                EngineError::conflict(format!(
                    "node {} has no image {} and cannot fetch it ({e})",
                    self.node, instance.spec.image
                ))
            })?,
        };
        instance.spec.image_id = image.id.clone();
        let mut mirrored = Vec::new();
        if let Some(vm) = instance.vm.as_mut() {
            crate::failover::rebase_vm_paths(vm, &dir);
            // This node's copies of the local disks start blank (qcow2 without a backing
            // file: the mirror brings every block the guest sees, the base's too).
            mirrored = local_disks(vm);
            for disk in vm
                .disks
                .iter_mut()
                .filter(|d| berth_vm::shared_disk::on_share(&d.path).is_none())
            {
                disk.backing = None;
                disk.format = "qcow2".into();
                let _ = std::fs::remove_file(&disk.path);
            }
        }
        instance.node = self.node.clone();
        let claim = self
            .admission
            .claim(&self.store, &instance, Reservation::of(&instance), "take")
            .await?;
        let started = self
            .start_incoming(&instance, &image, &dir, ip, &request, &mirrored)
            .await;
        let (address, disks_address, pid, supervisor_pid, socket, exit_path) = match started {
            Ok(started) => started,
            Err(e) => {
                drop(_guard);
                self.release_local(&instance, &dir).await;
                return Err(e);
            }
        };
        // What this node holds, should it restart before the source decides: the record
        // then says another node, and `clear_moved_away` ends this copy.
        if let Ok(copy) = serde_json::to_vec(&instance) {
            let _ = std::fs::write(dir.join("instance.json"), copy);
        }
        let vm = instance
            .vm
            .clone()
            .ok_or_else(|| EngineError::internal("the VM's details are gone"))?;
        let ready = IncomingReady {
            address,
            pid,
            supervisor_pid,
            vm,
            image_id: image.id.clone(),
            mirrored,
            disks_address,
        };
        let id = instance.id.clone();
        incoming().get_or_insert_with(HashMap::new).insert(
            id.clone(),
            Incoming {
                instance,
                socket,
                exit_path,
                _claim: claim,
            },
        );
        // A source that died mid-migration neither commits nor aborts.
        let engine = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(INCOMING_EXPIRES).await;
            if incoming().as_ref().is_some_and(|m| m.contains_key(&id)) {
                tracing::warn!(%id, "a migration's source never finished; ending the waiting copy");
                engine.abort_incoming(&id).await;
            }
        });
        Ok(ready)
    }

    /// Networks, the qemu (paused, waiting for the source on `ip`), its listening port and,
    /// for `mirrored` disks, the NBD server the source copies them into.
    #[allow(clippy::type_complexity)]
    async fn start_incoming(
        &self,
        instance: &Instance,
        image: &berth_model::image::ImageRecord,
        dir: &std::path::Path,
        ip: std::net::IpAddr,
        request: &IncomingRequest,
        mirrored: &[String],
    ) -> EngineResult<(String, Option<String>, Option<u32>, u32, PathBuf, PathBuf)> {
        self.networks.attach(instance).await?;
        let driver = self.driver(InstanceKind::Vm)?;
        let mut config = driver.prepare_start(instance, Some(image), dir).await?;
        config.log_limits = self.log_limits(instance);
        if let Some(membership) = &self.membership {
            config.fence = Some(berth_model::driver::FenceConfig {
                heartbeat_path: membership.heartbeat_path().to_path_buf(),
                stale_after_ms: crate::cluster::FENCE_AFTER.as_millis() as u64,
            });
        }
        if let berth_model::driver::Workload::Vm { args, incoming, .. } = &mut config.workload {
            args.extend(["-S", "-incoming", "defer"].map(String::from));
            *incoming = true;
        }
        let supervisor_pid = self.spawn_supervisor(dir, &config).await?;
        let reply = client::call_within(&config.socket_path, &SupervisorRequest::Start, Duration::from_secs(30))
            .await
            .map_err(|e| EngineError::internal(format!("starting the waiting qemu: {e}")))?;
        let qmp = instance
            .vm
            .as_ref()
            .map(|vm| PathBuf::from(&vm.qmp_socket))
            .ok_or_else(|| EngineError::internal("the VM's details are gone"))?;
        let address = free_port(ip)?;
        let options = MigrationOptions {
            max_downtime_ms: request.max_downtime_ms,
            max_bandwidth_bytes: migrate::LINK_SPEED_BYTES,
            auto_converge: request.auto_converge,
            postcopy: request.postcopy,
        };
        let end_qemu = || async {
            let _ = client::call(
                &config.socket_path,
                &SupervisorRequest::Kill {
                    signal: libc::SIGKILL,
                    all: true,
                },
            )
            .await;
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match migrate::listen(&qmp, &address, &options).await {
                Ok(()) => break,
                Err(e) if Instant::now() >= deadline => {
                    end_qemu().await;
                    return Err(EngineError::internal(format!("the waiting qemu: {e}")));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        let disks_address = if mirrored.is_empty() {
            None
        } else {
            let disks_address = free_port(ip)?;
            if let Err(e) = migrate::serve_disks(&qmp, &disks_address, mirrored).await {
                end_qemu().await;
                return Err(EngineError::internal(format!("serving the disks' copies: {e}")));
            }
            Some(disks_address)
        };
        Ok((
            address,
            disks_address,
            reply.pid,
            supervisor_pid,
            config.socket_path,
            config.exit_path,
        ))
    }

    /// The source recorded the move: the guest runs here from now on.
    async fn commit_incoming(self: &Arc<Self>, id: &str) -> EngineResult<()> {
        // Held until the record is this node's: `clear_moved_away` decides under it.
        let guard = self.lock(id).await;
        let waiting = incoming()
            .as_mut()
            .and_then(|m| m.remove(id))
            .ok_or_else(|| EngineError::not_found(format!("no migration of {id} is waiting here")))?;
        // Taking it: a compare-and-swap on the record as the source wrote it, so a source
        // that took it back (it did not hear from this node in time) and this node never
        // both run it.
        let versioned = self.store.instance(id).await?;
        if versioned.instance.node != self.node {
            // `release_local` takes the lock itself.
            drop(guard);
            self.abort_waiting(waiting).await;
            return Err(EngineError::conflict(format!(
                "the record of {id} says node {}: the source took it back",
                versioned.instance.node
            )));
        }
        let (_, status) = split(&versioned.instance);
        if let Err(e) = self
            .store
            .update_instance_status(&status, versioned.status_revision)
            .await
        {
            drop(guard);
            self.abort_waiting(waiting).await;
            return Err(EngineError::conflict(format!("taking over {id}: {e}")));
        }
        drop(guard);
        let qmp = waiting
            .instance
            .vm
            .as_ref()
            .map(|vm| PathBuf::from(&vm.qmp_socket))
            .ok_or_else(|| EngineError::internal("the VM's details are gone"))?;
        let mirrored = waiting
            .instance
            .vm
            .as_ref()
            .is_some_and(|vm| !local_disks(vm).is_empty());
        if mirrored {
            if let Err(e) = migrate::stop_serving_disks(&qmp).await {
                tracing::warn!(%id, error = %e, "ending the disks' NBD server");
            }
        }
        // Post-copy has it running already.
        if migrate::run_state(&qmp).await.ok().as_deref() != Some("running") {
            migrate::resume(&qmp)
                .await
                .map_err(|e| EngineError::internal(format!("resuming the migrated guest: {e}")))?;
        }
        let dir = self.instance_dir(id);
        if let Ok(instance) = self.store.get_instance(id).await {
            // What this node knows of it if the cluster moves it away while it is cut off.
            if let Ok(copy) = serde_json::to_vec(&instance) {
                if let Err(e) = std::fs::write(dir.join("instance.json"), copy) {
                    tracing::warn!(%id, error = %e, "keeping a local copy of the instance");
                }
            }
        }
        self.restarts.started(id);
        self.watch_exit(id.to_string(), waiting.socket, waiting.exit_path);
        Ok(())
    }

    /// The migration did not happen: the waiting copy goes.
    async fn abort_incoming(&self, id: &str) {
        let Some(waiting) = incoming().as_mut().and_then(|m| m.remove(id)) else {
            // A container's layer that arrived for a move that did not happen.
            let dir = self.instance_dir(id);
            let layer_only =
                dir.exists() && !dir.join("supervisor.json").exists() && !dir.join("instance.json").exists();
            if layer_only && self.store.get_instance(id).await.is_ok_and(|i| i.node != self.node) {
                let received = std::fs::read_to_string(dir.join(RECEIVED_VOLUMES)).unwrap_or_default();
                for volume in received.lines().filter(|l| !l.is_empty()) {
                    if let Err(e) = self.volumes.remove(volume, &[], false).await {
                        tracing::warn!(%volume, error = %e.message, "removing a volume of a move called off");
                    }
                }
                let _ = std::fs::remove_dir_all(&dir);
            }
            return;
        };
        self.abort_waiting(waiting).await;
    }

    async fn abort_waiting(&self, waiting: Incoming) {
        let id = waiting.instance.id.clone();
        let _ = client::call_within(
            &waiting.socket,
            &SupervisorRequest::Kill {
                signal: libc::SIGKILL,
                all: true,
            },
            Duration::from_secs(2),
        )
        .await;
        supervisor_gone(&waiting.socket, Duration::from_secs(5)).await;
        let dir = self.instance_dir(&id);
        self.release_local(&waiting.instance, &dir).await;
    }
}

/// Waits (at most `within`) until the supervisor at `socket` no longer answers: its qemu was
/// told to end, and what it holds is released only once it is gone.
async fn supervisor_gone(socket: &std::path::Path, within: Duration) {
    let deadline = Instant::now() + within;
    while client::call(socket, &SupervisorRequest::Status).await.is_ok() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Streams the writable layer at `upper` to node `name` as a tar archive (with xattrs, so
/// overlayfs whiteouts and opaque directories survive); the bytes sent.
async fn send_layer(
    membership: &Membership,
    name: &str,
    from: &str,
    id: &str,
    upper: &std::path::Path,
) -> EngineResult<u64> {
    let path = format!("/v1/cluster/incoming/{id}/layer");
    send_tar(membership, name, from, &path, upper, ".", LAYER_TAR).await
}

/// tar's options for a writable layer: xattrs (overlayfs's whiteouts and opaque
/// directories), numeric owners.
const LAYER_TAR: &[&str] = &["--xattrs", "--xattrs-include=*", "--numeric-owner"];
/// tar's options for a volume's image: its holes stay holes.
const VOLUME_TAR: &[&str] = &["--sparse"];

/// Streams `entry` of `dir` as a tar archive (made with `options`) to node `name`'s peer
/// endpoint `path`; the bytes sent.
async fn send_tar(
    membership: &Membership,
    name: &str,
    from: &str,
    path: &str,
    dir: &std::path::Path,
    entry: &str,
    options: &[&str],
) -> EngineResult<u64> {
    let mut tar = berth_process::async_command("tar")
        .args(options)
        .args(["-cf", "-", "-C"])
        .arg(dir)
        .arg(entry)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| EngineError::internal(format!("running tar: {e}")))?;
    let stdout = tar.stdout.take().ok_or_else(|| EngineError::internal("tar's stdout"))?;
    let counted = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = counted.clone();
    let stream = tokio_util::io::ReaderStream::new(stdout).inspect(move |chunk| {
        if let Ok(bytes) = chunk {
            counter.fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
    });
    use futures_util::StreamExt;
    let address = membership.peer_address(name).await?;
    let request = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::HOST, address.to_string())
        .header(header::CONTENT_TYPE, "application/x-tar")
        .body(Body::from_stream(stream))
        .map_err(|e| EngineError::internal(e.to_string()))?;
    let response = crate::peers::forward(address, membership.token(), from, request).await?;
    let status = response.status();
    let _ = tar.wait().await;
    if !status.is_success() {
        let bytes = axum::body::to_bytes(response.into_body(), 64 << 10)
            .await
            .unwrap_or_default();
        let message = serde_json::from_slice::<berth_model::api::ErrorResponse>(&bytes)
            .map(|e| e.message)
            .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
        return Err(EngineError::new(status, message));
    }
    Ok(counted.load(std::sync::atomic::Ordering::Relaxed))
}

/// Unpacks a tar archive arriving as `body` into `dest` (tar `options` as it was made).
async fn unpack_tar(body: Body, dest: &std::path::Path, options: &[&str]) -> EngineResult<()> {
    let mut tar = berth_process::async_command("tar")
        .args(options)
        .args(["-xpf", "-", "-C"])
        .arg(dest)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| EngineError::internal(format!("running tar: {e}")))?;
    let mut stdin = tar.stdin.take().ok_or_else(|| EngineError::internal("tar's stdin"))?;
    let mut stream = body.into_data_stream();
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| EngineError::internal(format!("receiving: {e}")))?;
        stdin
            .write_all(&chunk)
            .await
            .map_err(|e| EngineError::internal(format!("unpacking: {e}")))?;
    }
    drop(stdin);
    let output = tar
        .wait_with_output()
        .await
        .map_err(|e| EngineError::internal(format!("tar: {e}")))?;
    if !output.status.success() {
        return Err(EngineError::internal(format!(
            "unpacking: {}",
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .next()
                .unwrap_or("tar failed")
        )));
    }
    Ok(())
}

/// A call to node `name`'s peer port; its error answer (status and message) otherwise.
/// DELETEs `path` on node `name` (through its peer port).
pub(crate) async fn peer_delete(membership: &Membership, name: &str, from: &str, path: &str) -> EngineResult<()> {
    let address = membership.peer_address(name).await?;
    let request = Request::builder()
        .method(Method::DELETE)
        .uri(path)
        .header(header::HOST, address.to_string())
        .body(Body::empty())
        .map_err(|e| EngineError::internal(e.to_string()))?;
    let response = crate::peers::forward(address, membership.token(), from, request).await?;
    if response.status().is_success() {
        return Ok(());
    }
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 64 << 10)
        .await
        .unwrap_or_default();
    Err(EngineError::new(status, String::from_utf8_lossy(&bytes).into_owned()))
}

/// POSTs `body` to node `name`'s peer endpoint `path`; its JSON answer (an empty one reads
/// as `null`).
pub(crate) async fn peer_call<T: serde::de::DeserializeOwned>(
    membership: &Membership,
    name: &str,
    from: &str,
    path: &str,
    body: Vec<u8>,
) -> EngineResult<T> {
    let address = membership.peer_address(name).await?;
    let request = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::HOST, address.to_string())
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, body.len())
        .body(Body::from(body))
        .map_err(|e| EngineError::internal(e.to_string()))?;
    let response = crate::peers::forward(address, membership.token(), from, request).await?;
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .map_err(|e| EngineError::internal(format!("reading node {name}'s answer: {e}")))?;
    if !status.is_success() {
        let message = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
        return Err(EngineError::new(
            if status == StatusCode::NOT_FOUND {
                StatusCode::BAD_GATEWAY
            } else {
                status
            },
            message,
        ));
    }
    let bytes: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
    serde_json::from_slice(bytes).map_err(|e| EngineError::internal(format!("node {name}'s answer: {e}")))
}
