//! Failover in a cluster: one node leads (a key on its lease, so etcd ends its term when
//! the node is gone), and moves the instances of a node whose lease expired to nodes that
//! fit; the instances that have local state are reported `lost`, never recreated empty.
//! Each node adopts what was moved to it and, cut off from etcd, fences itself.
//!
//! The invariant: an instance never runs on two nodes at once. A node runs an instance the
//! cluster may move only while its lease is fresh: past `FENCE_AFTER` without a renewal the
//! node kills those instances, and their supervisors do the same on their own when the daemon
//! itself is gone (`berth_shim::fence`). etcd expires the lease no sooner than `TTL` after the
//! last renewal was *sent*; the leader waits `DOWN_GRACE` more before it moves anything. A
//! node that comes back writes nothing over a moved instance (its writes are compare-and-swap
//! on the instance still being its own) and clears what it left of it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use berth_model::instance::{InstanceKind, Rescheduled, RestartPolicy};
use berth_model::mount::MountKind;
use berth_model::node::NodeState;
use berth_model::{Instance, InstanceState};
use berth_shim::client;
use berth_shim::protocol::Request;
use berth_shim::ExitRecord;
use berth_store::instance::split;
use berth_store::kv::{Expect, Txn};
use berth_store::{RecordTxn, StoreError, VersionedInstance};
use chrono::Utc;

use crate::admission::Reservation;
use crate::cluster::{Membership, FENCE_AFTER};
use crate::engine::Engine;
use crate::scheduler::{Constraint, Needs};

/// Where the leader's name is, on the leader's lease.
const LEADER_KEY: &str = "/berth/v1/cluster/leader";
/// How long the leader waits after a node's lease expired before it moves its instances.
const DOWN_GRACE: Duration = Duration::from_secs(1);
/// How often a node leads, adopts and drains.
const ROUND_EVERY: Duration = Duration::from_millis(500);
/// How often a node looks at the age of its last lease renewal.
const FENCE_CHECK_EVERY: Duration = Duration::from_millis(250);

/// Why an instance cannot move to another node (it would come back without its state), or
/// `None` when it may.
pub fn local_state(instance: &Instance) -> Option<String> {
    if instance.spec.restart == RestartPolicy::No {
        return Some("it has no restart policy (--restart)".into());
    }
    if let Some(vm) = &instance.vm {
        // Instance storage is wiped at every stop anyway: it starts blank on the new node.
        if let Some(disk) = vm
            .disks
            .iter()
            .find(|d| !d.ephemeral && berth_vm::shared_disk::on_share(&d.path).is_none())
        {
            return Some(format!(
                "a VM's disk {} is on its node (--disk-on nfs://... keeps it on a share)",
                disk.path
            ));
        }
    }
    for volume in &instance.spec.volumes {
        let on_share = volume.source.starts_with("nfs://");
        match instance.kind {
            InstanceKind::Vm if on_share => {}
            // A container's NFS volume is an ext4 mounted through this node's kernel, whose
            // page cache could still write to it after a fence: never on two nodes.
            InstanceKind::Container if on_share => {
                return Some(format!(
                    "volume {} is mounted through its node's kernel (a VM's NFS volumes move with it)",
                    volume.volume
                ))
            }
            _ => return Some(format!("volume {} is its node's", volume.volume)),
        }
    }
    if let Some(bind) = instance.spec.mounts.iter().find(|m| m.kind == MountKind::Bind) {
        return Some(format!("it binds host path {}", bind.source));
    }
    None
}

impl Membership {
    /// Takes the lead if nobody holds it; whether this node leads now.
    pub async fn lead(&self) -> Result<bool, StoreError> {
        let key = LEADER_KEY.to_string();
        let snapshot = self.store().kv().get(std::slice::from_ref(&key)).await?;
        if let Some(Some(kv)) = snapshot.kvs.into_iter().next() {
            return Ok(kv.value == self.name().as_bytes() && kv.lease == Some(self.lease()));
        }
        let txn = Txn::new().check(&key, Expect::Absent).put_with_lease(
            &key,
            self.name().as_bytes().to_vec(),
            Some(self.lease()),
        );
        match self.store().kv().txn(txn).await {
            Ok(_) => {
                tracing::info!(node = %self.name(), "this node leads the cluster's scheduler");
                Ok(true)
            }
            Err(StoreError::Conflict { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The node that leads now, if any.
    pub async fn leader(&self) -> Result<Option<String>, StoreError> {
        let key = LEADER_KEY.to_string();
        let snapshot = self.store().kv().get(std::slice::from_ref(&key)).await?;
        Ok(snapshot
            .kvs
            .into_iter()
            .next()
            .flatten()
            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
    }
}

impl Engine {
    /// Starts this node's failover rounds (fencing, leading, adopting) while the engine lives.
    pub fn spawn_failover(self: &Arc<Self>, membership: Arc<Membership>) {
        // Fencing has a task of its own: the round below waits on etcd, which is what a
        // cut-off node cannot reach, and must not hold the fence back.
        let unfenced = Arc::new(tokio::sync::Notify::new());
        {
            let engine: Weak<Engine> = Arc::downgrade(self);
            let (membership, unfenced) = (membership.clone(), unfenced.clone());
            tokio::spawn(async move {
                let mut ticker = tokio::time::interval(FENCE_CHECK_EVERY);
                loop {
                    ticker.tick().await;
                    let Some(engine) = engine.upgrade() else { return };
                    if membership.renewed_ago() > FENCE_AFTER {
                        if !membership.set_fenced(true) {
                            tracing::warn!(
                                "no lease renewal for {:?}: fencing this node (stopping the instances the cluster may move)",
                                membership.renewed_ago()
                            );
                            engine.fence_movable();
                        }
                    } else if membership.set_fenced(false) {
                        tracing::info!("the lease is renewed again: this node is no longer fenced");
                        unfenced.notify_one();
                    }
                }
            });
        }
        let engine: Weak<Engine> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut down_since: HashMap<String, Instant> = HashMap::new();
            let mut round: u64 = 0;
            let mut reconcile_pending = false;
            let mut ticker = tokio::time::interval(ROUND_EVERY);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    _ = unfenced.notified() => reconcile_pending = true,
                }
                let Some(engine) = engine.upgrade() else { return };
                if membership.fenced() {
                    continue;
                }
                round += 1;
                // Until it has worked once after the node was fenced (right after a partition
                // heals etcd may not answer every read yet), and every 10 s anyway.
                if (reconcile_pending || round.is_multiple_of(20))
                    && engine.clear_moved_away().await
                    && (!reconcile_pending || engine.reconcile_own().await)
                {
                    reconcile_pending = false;
                }
                match membership.lead().await {
                    Ok(true) => engine.leader_round(&membership, &mut down_since).await,
                    Ok(false) => down_since.clear(),
                    Err(e) => tracing::debug!(error = %e, "leader election"),
                }
                engine.adopt_moved_here().await;
                if let Ok(this) = membership.node(&engine.node).await {
                    engine.drain_if_asked(&membership, Some(&this));
                }
                if round % 4 == 1 && engine.networks.has_overlay() {
                    engine.sync_overlay(&membership).await;
                }
            }
        });
    }

    /// The overlay follows the cluster: it floods to every other node's advertised address,
    /// and this node's DNS answers the names of other nodes' instances on the default network.
    async fn sync_overlay(&self, membership: &Membership) {
        if let Ok(nodes) = membership.nodes().await {
            let peers: Vec<std::net::Ipv4Addr> = nodes
                .iter()
                .filter(|n| !n.this_node)
                .filter_map(|n| n.address.as_deref()?.parse::<std::net::SocketAddr>().ok())
                .filter_map(|a| match a.ip() {
                    std::net::IpAddr::V4(ip) => Some(ip),
                    _ => None,
                })
                .collect();
            if let Err(e) = self.networks.set_overlay_peers(&peers) {
                tracing::warn!(error = %e.message, "updating the overlay's peers");
            }
        }
        if let Ok(instances) = self.store.list_instances().await {
            let remote: Vec<(String, std::net::Ipv4Addr)> = instances
                .iter()
                .filter(|i| i.node != self.node && i.state.is_active())
                .filter_map(|i| {
                    let address = i.address.as_ref()?;
                    (address.network == berth_model::network::DEFAULT_NETWORK)
                        .then(|| Some((i.name.clone(), address.address.parse().ok()?)))?
                })
                .collect();
            self.networks.set_remote_names(&remote);
        }
    }

    /// Kills, through their supervisors, every instance this node runs that the cluster may
    /// move. Reads only the node's own files: etcd is what it cannot reach.
    pub(crate) fn fence_movable(&self) {
        let Ok(entries) = std::fs::read_dir(self.config.state_dir.join("instances")) else {
            return;
        };
        for entry in entries.flatten() {
            let dir = entry.path();
            let Some(config) = supervisor_config(&dir) else {
                continue;
            };
            if config.fence.is_none() {
                continue;
            }
            let socket = config.socket_path.clone();
            tokio::spawn(async move {
                let kill = Request::Kill {
                    signal: libc::SIGKILL,
                    all: true,
                };
                match client::call_within(&socket, &kill, Duration::from_secs(2)).await {
                    Ok(_) => tracing::warn!(dir = %dir.display(), "fenced"),
                    Err(e) => tracing::debug!(dir = %dir.display(), error = %e, "fencing (already ended?)"),
                }
            });
        }
    }

    /// The leader's round: the instances of nodes down past the grace are moved or lost.
    async fn leader_round(&self, membership: &Membership, down_since: &mut HashMap<String, Instant>) {
        let nodes = match membership.nodes().await {
            Ok(nodes) => nodes,
            Err(e) => return tracing::warn!(error = %e.message, "listing nodes"),
        };
        down_since.retain(|name, _| nodes.iter().any(|n| &n.name == name && n.state == NodeState::Down));
        let now = Instant::now();
        let due: Vec<String> = nodes
            .iter()
            .filter(|n| n.state == NodeState::Down)
            .filter(|n| now.duration_since(*down_since.entry(n.name.clone()).or_insert(now)) >= DOWN_GRACE)
            .map(|n| n.name.clone())
            .collect();
        if due.is_empty() {
            return;
        }
        let instances = match self.store.instances().await {
            Ok((instances, _)) => instances,
            Err(e) => return tracing::warn!(error = %e, "listing instances"),
        };
        let all: Vec<Instance> = instances.iter().map(|v| v.instance.clone()).collect();
        for versioned in instances {
            let instance = &versioned.instance;
            let pending_move =
                instance.state == InstanceState::Created && instance.rescheduled.as_ref().is_some_and(|r| !r.adopted);
            if due.contains(&instance.node) && (instance.state.is_active() || pending_move) {
                let from = instance.node.clone();
                self.move_or_lose(&nodes, &all, versioned, &from).await;
            }
        }
    }

    /// Moves one instance off node `from` (down), or reports it lost with why.
    async fn move_or_lose(
        &self,
        nodes: &[berth_model::node::Node],
        all: &[Instance],
        versioned: VersionedInstance,
        from: &str,
    ) {
        let instance = versioned.instance.clone();
        let placed = match local_state(&instance) {
            Some(reason) => Err(format!("not moved: {reason}")),
            None => place_moved(nodes, all, &instance).map_err(|e| format!("not moved: {e}")),
        };
        let txn = match placed {
            Ok((node, why)) => {
                tracing::warn!(instance = %instance.name, %from, to = %node, "moving an instance off a node that is down");
                moved_txn(&versioned, &node, &format!("moved from node {from} (down): {why}"))
            }
            Err(reason) => {
                let (_, mut status) = split(&instance);
                tracing::warn!(instance = %instance.name, %from, %reason, "an instance is lost with its node");
                status.state = InstanceState::Lost;
                status.error = Some(format!(
                    "node {from} went down at {}; {reason}; it runs again when {from} is back, or remove it",
                    Utc::now().format("%H:%M:%S")
                ));
                RecordTxn::new()
                    .require::<berth_store::InstanceDesired>(&instance.id, Expect::Revision(versioned.spec_revision))
                    .and_then(|t| t.update(&status, versioned.status_revision))
            }
        };
        // A lost race (the node came back, the user removed it) is settled next round.
        match txn {
            Ok(txn) => {
                if let Err(e) = self.store.commit(txn).await {
                    tracing::info!(instance = %instance.name, error = %e, "moving an instance: lost a race; next round");
                }
            }
            Err(e) => tracing::warn!(instance = %instance.name, error = %e, "moving an instance"),
        }
    }

    /// Makes the instances moved to this node its own: a directory, an address on its
    /// network here, then a start.
    async fn adopt_moved_here(self: &Arc<Self>) {
        let Ok(instances) = self.local_instances().await else {
            return;
        };
        // This node is up: none of its instances is lost (a leader that read the node as
        // down a moment before it came back may have said so after it reconciled).
        if instances.iter().any(|i| i.state == InstanceState::Lost) {
            self.reconcile_own().await;
        }
        for instance in instances {
            let waiting =
                instance.state == InstanceState::Created && instance.rescheduled.as_ref().is_some_and(|r| !r.adopted);
            if waiting {
                if let Err(e) = self.adopt(instance.clone()).await {
                    tracing::warn!(instance = %instance.name, error = %e.message, "adopting a moved instance");
                }
            }
        }
    }

    async fn adopt(self: &Arc<Self>, mut instance: Instance) -> crate::error::EngineResult<()> {
        {
            let _guard = self.lock(&instance.id).await;
            let dir = self.instance_dir(&instance.id);
            std::fs::create_dir_all(&dir)
                .map_err(|e| crate::error::EngineError::internal(format!("creating {}: {e}", dir.display())))?;
            // Held until the instance is saved with it (below).
            let address_claim = match instance.spec.network.as_str() {
                "none" | "host" => None,
                name => Some(self.networks.allocate(name, &instance.id).await?),
            };
            instance.address = address_claim.as_ref().map(|claim| claim.address.clone());
            if self.local_store.get_image(&instance.spec.image_id).await.is_err() {
                let here = self.resolve_image(&instance.spec.image).await.map_err(|e| {
                    crate::error::EngineError::conflict(format!(
                        "instance {} was moved here but this node has no image {} ({e})",
                        instance.name, instance.spec.image
                    ))
                })?;
                instance.spec.image_id = here.id;
            }
            if let Some(vm) = instance.vm.as_mut() {
                rebase_vm_paths(vm, &dir);
            }
            // Local volumes that came along (a container's move) are this node's now.
            for mount in instance
                .spec
                .volumes
                .iter_mut()
                .filter(|v| !v.source.starts_with("nfs://"))
            {
                if let Ok(volume) = self.volumes.get(&mount.volume).await {
                    self.volumes.attach_to(&volume, mount);
                }
            }
            if let Some(moved) = instance.rescheduled.as_mut() {
                moved.adopted = true;
            }
            self.save(&instance).await?;
            drop(address_claim);
        }
        tracing::info!(instance = %instance.name, from = ?instance.rescheduled.as_ref().map(|r| &r.from), "starting an instance moved here");
        self.start(&instance.id, false).await.map(|_| ())
    }

    /// After the node was cut off: what it left of instances that are now another node's
    /// (or were removed meanwhile) goes. Also at start, for a daemon that was down. False
    /// when the cluster's records could not be read (try again).
    pub(crate) async fn clear_moved_away(&self) -> bool {
        let Ok(records) = self.store.list_instances().await else {
            return false;
        };
        let Ok(entries) = std::fs::read_dir(self.config.state_dir.join("instances")) else {
            return true;
        };
        for entry in entries.flatten() {
            let dir = entry.path();
            let Some(local) = local_copy(&dir) else { continue };
            if local.node != self.node {
                continue;
            }
            match records.iter().find(|r| r.id == local.id) {
                Some(record) if record.node == self.node => continue,
                // Being created or removed right now: not ours to touch.
                None if !dir.join("supervisor.json").exists() => continue,
                _ => {}
            }
            // A copy waiting for a live migration also has a record that names another
            // node until the hand-over: decide under the instance's lock (which the
            // migration's prepare and commit hold), on the record as it is now.
            // Once decided, no migration can begin here (a copy's directory refuses one)
            // and none waits, so the lock is let go before `release_local` takes it.
            {
                let _guard = self.lock(&local.id).await;
                if crate::migration::is_incoming(&local.id) {
                    continue;
                }
                match self.store.get_instance(&local.id).await {
                    Ok(record) if record.node == self.node => continue,
                    Ok(_) => {}
                    Err(berth_store::StoreError::NotFound { .. }) => {}
                    Err(_) => return false,
                }
            }
            tracing::info!(instance = %local.name, "clearing what this node left of an instance now elsewhere");
            if let Some(config) = supervisor_config(&dir) {
                let kill = Request::Kill {
                    signal: libc::SIGKILL,
                    all: true,
                };
                let _ = client::call_within(&config.socket_path, &kill, Duration::from_secs(2)).await;
            }
            self.release_local(&local, &dir).await;
        }
        true
    }

    /// After the node was cut off: its own instances whose exits it could not record are
    /// recorded now (and restarted by their policy); the ones the cluster reported lost and
    /// that kept running are running again. False when something could not be read or
    /// written (try again).
    pub(crate) async fn reconcile_own(self: &Arc<Self>) -> bool {
        let Ok(instances) = self.local_instances().await else {
            return false;
        };
        let mut done = true;
        for instance in instances {
            if !instance.state.is_active() && instance.state != InstanceState::Lost {
                continue;
            }
            let dir = self.instance_dir(&instance.id);
            let alive = client::call(&dir.join("supervisor.sock"), &Request::Status)
                .await
                .is_ok();
            if instance.state == InstanceState::Lost {
                let mut back = instance.clone();
                back.state = InstanceState::Running;
                back.error = None;
                if let Err(e) = self.save(&back).await {
                    tracing::warn!(instance = %instance.name, error = %e.message, "recording a lost instance back");
                    done = false;
                    continue;
                }
                tracing::info!(instance = %instance.name, alive, "an instance reported lost is this node's again");
            }
            if !alive {
                self.on_exit(&instance.id, ExitRecord::read(&dir.join("exit.json")))
                    .await;
            }
        }
        done
    }
}

/// The records of an instance handed to `node`, to be started there, compare-and-swap on
/// the revisions they were read at.
pub(crate) fn moved_txn(versioned: &VersionedInstance, node: &str, why: &str) -> Result<RecordTxn, StoreError> {
    let (mut desired, mut status) = split(&versioned.instance);
    let from = desired.node.clone();
    desired.node = node.to_string();
    desired.spec.placement = Some(why.to_string());
    desired.rescheduled = Some(Rescheduled {
        from,
        at: Utc::now(),
        adopted: false,
        migration: None,
    });
    status.state = InstanceState::Created;
    status.pid = None;
    status.supervisor_pid = None;
    status.address = None;
    status.error = None;
    RecordTxn::new()
        .update(&desired, versioned.spec_revision)
        .and_then(|t| t.update(&status, versioned.status_revision))
}

/// The scheduler's choice for an instance being moved: as for a new one, from what its
/// record says it needs; the down node's own reservations count only against it.
pub(crate) fn place_moved(
    nodes: &[berth_model::node::Node],
    all: &[Instance],
    instance: &Instance,
) -> Result<(String, String), String> {
    let constraints = instance
        .spec
        .constraints
        .iter()
        .filter_map(|c| Constraint::parse(c).ok())
        .collect();
    let network = Some(instance.spec.network.clone())
        .filter(|n| !matches!(n.as_str(), "none" | "host" | berth_model::network::DEFAULT_NETWORK));
    let needs = Needs {
        kind: instance.kind,
        image: &instance.spec.image,
        reservation: Reservation::of(instance),
        node: None,
        constraints,
        strategy: Default::default(),
        volumes: Vec::new(),
        network,
        spread_by: instance.spec.spread_by.clone(),
        ports: instance.spec.ports.iter().map(crate::scheduler::port_key).collect(),
    };
    // The same image id, or else the image its reference names there (an image imported
    // from one tarball on two nodes has two ids).
    let image_id = instance.spec.image_id.trim_start_matches("sha256:");
    let tag = berth_image::reference::parse_reference(&instance.spec.image)
        .ok()
        .and_then(|r| berth_image::reference::normalized_tag(&r));
    let has_image = |node: &berth_model::node::Node| {
        node.images
            .iter()
            .any(|known| known.trim_start_matches("sha256:") == image_id || Some(known) == tag.as_ref())
    };
    crate::scheduler::place(nodes, all, &needs, has_image).or_else(|refusal| {
        // A node without the image fetches it from one that has it.
        let source = nodes
            .iter()
            .find(|n| has_image(n) && n.state != NodeState::Down && n.address.is_some());
        match source {
            Some(source) => crate::scheduler::place(nodes, all, &needs, |_| true)
                .map(|(node, why)| (node, format!("{why}; the image comes from node {}", source.name)))
                .map_err(|_| refusal.message),
            None => Err(refusal.message),
        }
    })
}

/// The supervisor configuration an instance was last started with.
/// A moved VM's files that lived in its old node's instance directory (its QMP socket, its
/// instance storage) go in this node's; disks on a share keep their URL.
pub(crate) fn rebase_vm_paths(vm: &mut berth_model::instance::VmDetails, dir: &Path) {
    let Some(old_dir) = Path::new(&vm.qmp_socket).parent().map(Path::to_path_buf) else {
        return;
    };
    let rebase = |path: &str| match Path::new(path).strip_prefix(&old_dir) {
        Ok(rest) => dir.join(rest).display().to_string(),
        Err(_) => path.to_string(),
    };
    vm.qmp_socket = rebase(&vm.qmp_socket);
    for disk in &mut vm.disks {
        disk.path = rebase(&disk.path);
    }
}

fn supervisor_config(dir: &Path) -> Option<berth_model::driver::SupervisorConfig> {
    let text = std::fs::read(dir.join("supervisor.json")).ok()?;
    serde_json::from_slice(&text).ok()
}

/// The instance as this node last started it (`instance.json`, written at each start).
pub(crate) fn local_copy(dir: &Path) -> Option<Instance> {
    let text = std::fs::read(dir.join("instance.json")).ok()?;
    serde_json::from_slice(&text).ok()
}
