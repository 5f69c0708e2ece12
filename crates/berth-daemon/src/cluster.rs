//! Cluster membership: joining, the lease that says this node is alive, what it publishes
//! about itself, and the operator's cordon and drain. The cluster's records live in etcd
//! (`berth_store::node`); the node's own things (images, volumes, bridges) stay in its state
//! directory.
//!
//! Liveness is etcd's: the node's presence key is attached to a lease of
//! `NODE_LEASE_TTL_SECS` that the node renews every `RENEW_EVERY`; when the node stops
//! renewing (its daemon died, its machine died, it lost etcd) etcd deletes the key and every
//! other node sees it `down`. Nothing here is consensus of berth's own.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use berth_model::node::{Node, NodeState, Schedulability, NODE_LEASE_TTL_SECS};
use berth_store::{EtcdConfig, LeaseId, NodeFacts, NodeMember, NodePresence, RecordTxn, Store, StoreError};
use chrono::Utc;

use crate::engine::Engine;
use crate::error::{EngineError, EngineResult};

/// How often the node renews its lease: a fifth of its TTL, so three renewals may fail (an
/// etcd member changing leader) before the node fences itself (`FENCE_AFTER`).
const RENEW_EVERY: Duration = Duration::from_secs(NODE_LEASE_TTL_SECS / 5);
/// A node that has not renewed its lease for this long stops the instances the cluster
/// would move (and their supervisors do so without the daemon): three seconds before the
/// TTL ends, counted from the moment the last good renewal was *sent*, which is before etcd
/// restarted the TTL. The scheduler moves them only after etcd expired the lease.
pub const FENCE_AFTER: Duration = Duration::from_secs(NODE_LEASE_TTL_SECS - 3);
/// What the node publishes is rewritten when it changes, and at least this often.
const REPUBLISH_EVERY: Duration = Duration::from_secs(60);

/// The subnet the default network spans across a cluster's nodes (one /24 each).
pub const OVERLAY_SUBNET: &str = "10.240.0.0/16";
/// The overlay's VXLAN network identifier.
pub const OVERLAY_VNI: u32 = 4240;

/// `berth daemon --cluster ... --node-name ... --advertise ... --labels ...`.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub etcd: EtcdConfig,
    pub node_name: String,
    pub advertise: Option<IpAddr>,
    /// The port other nodes reach this one's API at, on the advertised address.
    pub peer_port: u16,
    pub labels: BTreeMap<String, String>,
}

/// A node name: what `berth node` commands and `--node` take, and a key component.
pub fn parse_node_name(name: &str) -> Result<String, String> {
    let valid = (1..=63).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric());
    if valid {
        Ok(name.to_string())
    } else {
        Err(format!(
            "'{}' is not a node name: use 1 to 63 letters, digits, '-', '.' or '_', starting with a letter or digit",
            name.escape_default()
        ))
    }
}

/// `--labels k=v,k=v`: keys and values of letters, digits, '-', '.', '_' and '/'.
pub fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(format!(
                "label '{pair}' has no '=': write key=value, for example zone=a"
            ));
        };
        let ok = |s: &str, empty_ok: bool| {
            (empty_ok || !s.is_empty())
                && s.len() <= 63
                && s.chars().all(|c| c.is_ascii_alphanumeric() || "-._/".contains(c))
        };
        if !ok(key, false) || !ok(value, true) {
            return Err(format!(
                "label '{}' must be key=value of at most 63 letters, digits, '-', '.', '_' or '/' each",
                pair.escape_default()
            ));
        }
        if labels.insert(key.to_string(), value.to_string()).is_some() {
            return Err(format!("label '{key}' is given twice"));
        }
    }
    Ok(labels)
}

/// This node's membership of the cluster.
pub struct Membership {
    store: Store,
    name: String,
    id: String,
    address: Option<String>,
    labels: BTreeMap<String, String>,
    lease: std::sync::Mutex<LeaseId>,
    /// The secret other nodes' requests carry (`peers`).
    token: String,
    /// When the last good renewal (or the grant) was sent, on `berth_shim::fence`'s clock.
    renewed_at: std::sync::Mutex<Duration>,
    /// Where that moment is written for the supervisors (`berth_shim::fence`).
    heartbeat_path: std::path::PathBuf,
    /// This node fenced itself (no renewal within `FENCE_AFTER`) and has not renewed since.
    fenced: std::sync::atomic::AtomicBool,
}

impl Membership {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    /// The IP this node advertises to the others (`--advertise`), if any.
    pub fn advertised_ip(&self) -> Option<std::net::IpAddr> {
        self.address
            .as_deref()
            .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
            .map(|a| a.ip())
    }

    /// Whether this node is fenced: cut off from etcd past `FENCE_AFTER`, it runs nothing
    /// the cluster may have moved, and starts nothing by restart policy.
    pub fn fenced(&self) -> bool {
        self.fenced.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Sets the fence; returns what it was.
    pub fn set_fenced(&self, fenced: bool) -> bool {
        self.fenced.swap(fenced, std::sync::atomic::Ordering::SeqCst)
    }

    /// How long since the last good renewal was sent.
    pub fn renewed_ago(&self) -> Duration {
        let at = *self.renewed_at.lock().unwrap_or_else(|e| e.into_inner());
        berth_shim::fence::monotonic_now().saturating_sub(at)
    }

    /// The heartbeat file supervisors fence by.
    pub fn heartbeat_path(&self) -> &std::path::Path {
        &self.heartbeat_path
    }

    fn renewed(&self, sent_at: Duration) {
        *self.renewed_at.lock().unwrap_or_else(|e| e.into_inner()) = sent_at;
        if let Err(e) = berth_shim::fence::write_heartbeat(&self.heartbeat_path, sent_at) {
            tracing::warn!(path = %self.heartbeat_path.display(), error = %e, "writing the lease heartbeat");
        }
    }

    /// Where node `name` serves other nodes; an error that says why not if it is down or
    /// advertises nothing.
    pub async fn peer_address(&self, name: &str) -> EngineResult<std::net::SocketAddr> {
        let node = self.node(name).await?;
        if node.state == NodeState::Down {
            return Err(EngineError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                format!("node {name} is down (its lease expired); its instances cannot be reached until it is back"),
            ));
        }
        node.address.as_deref().and_then(|a| a.parse().ok()).ok_or_else(|| {
            EngineError::conflict(format!(
                "node {name} advertises no address other nodes can reach; restart its daemon with --advertise IP"
            ))
        })
    }

    /// Joins: claims the name for this node's id (a name held by another state directory
    /// is refused), takes a lease and publishes the node.
    pub async fn join(
        store: Store,
        config: &ClusterConfig,
        id: &str,
        heartbeat_path: std::path::PathBuf,
    ) -> anyhow::Result<Arc<Membership>> {
        if let Some(member) = store.try_get::<NodeMember>(&config.node_name).await? {
            if member.value.node_id != id {
                let alive = store.try_get::<NodePresence>(&config.node_name).await?.is_some();
                anyhow::bail!(
                    "--node-name {}: the cluster already has a node of that name (id {}, {}); pass another --node-name",
                    config.node_name,
                    member.value.node_id,
                    if alive { "alive" } else { "down" },
                );
            }
        }
        let token = crate::peers::cluster_token(&store).await?;
        let sent_at = berth_shim::fence::monotonic_now();
        let lease = store.kv().grant_lease(Duration::from_secs(NODE_LEASE_TTL_SECS)).await?;
        let membership = Arc::new(Membership {
            store,
            name: config.node_name.clone(),
            id: id.to_string(),
            address: config
                .advertise
                .map(|ip| std::net::SocketAddr::new(ip, config.peer_port).to_string()),
            labels: config.labels.clone(),
            lease: std::sync::Mutex::new(lease.id),
            token,
            renewed_at: std::sync::Mutex::new(sent_at),
            heartbeat_path,
            fenced: Default::default(),
        });
        membership.claim_name().await?;
        membership.announce(lease.id).await?;
        membership.renewed(sent_at);
        Ok(membership)
    }

    /// This node's part of the overlay: a /24 of `OVERLAY_SUBNET` claimed compare-and-swap
    /// (`/berth/v1/cluster/overlay/<n>` holds the node's name), kept across restarts. `None`
    /// for a node that advertises no address other nodes can send VXLAN to (or loopback).
    pub async fn overlay_plan(&self) -> anyhow::Result<Option<crate::networks::OverlayPlan>> {
        let Some(local) = self
            .address
            .as_deref()
            .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
            .and_then(|a| match a.ip() {
                IpAddr::V4(ip) if !ip.is_loopback() => Some(ip),
                _ => None,
            })
        else {
            return Ok(None);
        };
        let subnet = berth_net::Subnet::parse(OVERLAY_SUBNET).map_err(|e| anyhow::anyhow!(e))?;
        let base = u32::from(subnet.network);
        for slot in 0..=255u32 {
            let key = format!("/berth/v1/cluster/overlay/{slot}");
            let snapshot = self.store.kv().get(std::slice::from_ref(&key)).await?;
            let held = snapshot.kvs.into_iter().next().flatten().map(|kv| kv.value);
            let mine = match held {
                Some(holder) => holder == self.name.as_bytes(),
                None => {
                    let claim = berth_store::kv::Txn::new()
                        .check(&key, berth_store::kv::Expect::Absent)
                        .put(&key, self.name.as_bytes().to_vec());
                    match self.store.kv().txn(claim).await {
                        Ok(_) => true,
                        Err(StoreError::Conflict { .. }) => false,
                        Err(e) => return Err(e.into()),
                    }
                }
            };
            if mine {
                let pool_base = std::net::Ipv4Addr::from(base + (slot << 8));
                let pool = berth_net::Subnet::parse(&format!("{pool_base}/24")).map_err(|e| anyhow::anyhow!(e))?;
                return Ok(Some(crate::networks::OverlayPlan {
                    subnet,
                    gateway: pool.gateway(),
                    pool,
                    vni: OVERLAY_VNI,
                    local,
                }));
            }
        }
        anyhow::bail!("the overlay {OVERLAY_SUBNET} has a /24 for 256 nodes and all are taken")
    }

    /// The lease this node holds now.
    pub fn lease(&self) -> LeaseId {
        *self.lease.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes the member record this node's, compare-and-swap: two state directories starting
    /// at once under one name cannot both have it.
    async fn claim_name(&self) -> anyhow::Result<()> {
        let member = NodeMember {
            name: self.name.clone(),
            node_id: self.id.clone(),
            schedulability: Schedulability::Schedulable,
            drain_parallel: None,
            joined_at: Utc::now(),
            facts: NodeFacts {
                address: self.address.clone(),
                labels: self.labels.clone(),
                fingerprint: Default::default(),
                allocated: Default::default(),
                instances: 0,
                images: Vec::new(),
                volumes: Vec::new(),
                networks: Vec::new(),
                drain_blocked: Default::default(),
                usage: None,
                published_at: Utc::now(),
            },
        };
        match self.store.create(&member).await {
            Ok(_) => Ok(()),
            Err(StoreError::AlreadyExists { .. }) => match self.store.try_get::<NodeMember>(&self.name).await? {
                Some(current) if current.value.node_id == self.id => Ok(()),
                Some(current) => anyhow::bail!(
                    "--node-name {}: the cluster already has a node of that name (id {}); pass another --node-name",
                    self.name,
                    current.value.node_id
                ),
                None => anyhow::bail!(
                    "--node-name {}: the name changed hands while joining; start again",
                    self.name
                ),
            },
            Err(e) => Err(e.into()),
        }
    }

    /// Writes the presence record under `lease`.
    async fn announce(&self, lease: LeaseId) -> Result<(), StoreError> {
        let presence = NodePresence {
            name: self.name.clone(),
            node_id: self.id.clone(),
            since: Utc::now(),
        };
        self.store
            .commit(RecordTxn::new().put_with_lease(&presence, lease)?)
            .await
            .map(|_| ())
    }

    /// Rewrites what the node publishes, keeping what an operator set meanwhile (the write
    /// is compare-and-swap on the member record).
    pub async fn publish(&self, facts: NodeFacts) -> Result<(), StoreError> {
        let facts = NodeFacts {
            address: self.address.clone(),
            labels: self.labels.clone(),
            ..facts
        };
        for _ in 0..8 {
            let result = match self.store.try_get::<NodeMember>(&self.name).await? {
                Some(current) if current.value.node_id != self.id => {
                    return Err(StoreError::Backend(format!(
                        "node name {} now belongs to node {}; this node ({}) stops publishing under it",
                        self.name, current.value.node_id, self.id
                    )))
                }
                Some(current) => {
                    let member = NodeMember {
                        facts: facts.clone(),
                        node_id: self.id.clone(),
                        ..current.value
                    };
                    self.store.update(&member, current.revision).await
                }
                None => {
                    let member = NodeMember {
                        name: self.name.clone(),
                        node_id: self.id.clone(),
                        schedulability: Schedulability::Schedulable,
                        drain_parallel: None,
                        joined_at: Utc::now(),
                        facts: facts.clone(),
                    };
                    self.store.create(&member).await
                }
            };
            match result {
                Ok(_) => return Ok(()),
                Err(StoreError::Conflict { .. } | StoreError::AlreadyExists { .. } | StoreError::NotFound { .. }) => {
                    continue
                }
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Backend(format!(
            "node {}: the member record kept changing while it was written",
            self.name
        )))
    }

    /// Renews the lease; a lease that expired (the node was cut off longer than the TTL)
    /// is replaced and the presence written again.
    async fn renew(&self) -> Result<(), StoreError> {
        let sent_at = berth_shim::fence::monotonic_now();
        match self.store.kv().keep_alive(self.lease()).await {
            Ok(_) => {
                self.renewed(sent_at);
                Ok(())
            }
            Err(StoreError::LeaseNotFound(old)) => {
                tracing::warn!(lease = %old, "this node's lease expired (cut off from etcd?); rejoining");
                let lease = self
                    .store
                    .kv()
                    .grant_lease(Duration::from_secs(NODE_LEASE_TTL_SECS))
                    .await?;
                *self.lease.lock().unwrap_or_else(|e| e.into_inner()) = lease.id;
                self.announce(lease.id).await?;
                self.renewed(sent_at);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Keeps the lease and the published facts up to date while the engine lives: two tasks,
    /// so that gathering and writing facts never delays a renewal.
    pub fn spawn_heartbeat(self: &Arc<Self>, engine: Weak<Engine>) {
        let membership = Arc::clone(self);
        let alive = engine.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(RENEW_EVERY);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                if alive.strong_count() == 0 {
                    return;
                }
                match tokio::time::timeout(RENEW_EVERY, membership.renew()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "renewing this node's lease"),
                    Err(_) => tracing::warn!("renewing this node's lease took longer than {RENEW_EVERY:?}"),
                }
            }
        });
        let membership = Arc::clone(self);
        tokio::spawn(async move {
            let mut published: Option<(NodeFacts, std::time::Instant)> = None;
            let mut ticker = tokio::time::interval(RENEW_EVERY);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let Some(engine) = engine.upgrade() else { return };
                let facts = match engine.node_facts().await {
                    Ok(facts) => facts,
                    Err(e) => {
                        tracing::warn!(error = %e, "gathering what this node publishes");
                        continue;
                    }
                };
                drop(engine);
                let unchanged = published
                    .as_ref()
                    .is_some_and(|(last, at)| at.elapsed() < REPUBLISH_EVERY && same_facts(last, &facts));
                if unchanged {
                    continue;
                }
                match membership.publish(facts.clone()).await {
                    Ok(()) => published = Some((facts, std::time::Instant::now())),
                    Err(e) => tracing::warn!(error = %e, "publishing this node"),
                }
            }
        });
    }

    /// Every node the cluster knows, by name.
    pub async fn nodes(&self) -> EngineResult<Vec<Node>> {
        // Both ranges at once: the leader reads them for every batch of placements.
        let (members, presences) = tokio::join!(self.store.list::<NodeMember>(), self.store.list::<NodePresence>());
        let (members, presences) = (members?, presences?);
        let alive: std::collections::HashSet<(&str, &str)> = presences
            .items
            .iter()
            .map(|p| (p.value.name.as_str(), p.value.node_id.as_str()))
            .collect();
        let mut nodes: Vec<Node> = members
            .items
            .into_iter()
            .map(|member| {
                let up = alive.contains(&(member.value.name.as_str(), member.value.node_id.as_str()));
                self.node_view(member.value, up)
            })
            .collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(nodes)
    }

    pub async fn node(&self, name: &str) -> EngineResult<Node> {
        let member = self.member(name).await?;
        let alive = self
            .store
            .try_get::<NodePresence>(name)
            .await?
            .is_some_and(|p| p.value.node_id == member.value.node_id);
        Ok(self.node_view(member.value, alive))
    }

    async fn member(&self, name: &str) -> EngineResult<berth_store::Versioned<NodeMember>> {
        self.store
            .try_get::<NodeMember>(name)
            .await?
            .ok_or_else(|| EngineError::not_found(format!("no such node: {name}; `berth node ls` lists them")))
    }

    /// Cordon, uncordon, drain: the operator's decision, written compare-and-swap.
    pub async fn set_schedulability(
        &self,
        name: &str,
        schedulability: Schedulability,
        drain_parallel: Option<u32>,
    ) -> EngineResult<Node> {
        for _ in 0..8 {
            let current = self.member(name).await?;
            let member = NodeMember {
                schedulability,
                drain_parallel: drain_parallel.filter(|_| schedulability == Schedulability::Draining),
                ..current.value
            };
            match self.store.update(&member, current.revision).await {
                Ok(_) => {
                    tracing::info!(node = %name, ?schedulability, "node schedulability changed");
                    return self.node(name).await;
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(EngineError::conflict(format!(
            "node {name} kept changing while it was written; try again"
        )))
    }

    fn node_view(&self, member: NodeMember, alive: bool) -> Node {
        node_view(member, alive, &self.name)
    }
}

/// Facts equal but for when they were gathered.
/// The API's view of a member: `down` without a presence, else the operator's schedulability.
pub fn node_view(member: NodeMember, alive: bool, this_node: &str) -> Node {
    let state = match (alive, member.schedulability) {
        (false, _) => NodeState::Down,
        (true, Schedulability::Schedulable) => NodeState::Ready,
        (true, Schedulability::Cordoned) => NodeState::Cordoned,
        (true, Schedulability::Draining) => NodeState::Draining,
    };
    Node {
        this_node: member.name == this_node,
        name: member.name,
        id: member.node_id,
        state,
        address: member.facts.address,
        labels: member.facts.labels,
        fingerprint: member.facts.fingerprint,
        allocated: member.facts.allocated,
        instances: member.facts.instances,
        images: member.facts.images,
        volumes: member.facts.volumes,
        networks: member.facts.networks,
        joined_at: member.joined_at,
        heartbeat_at: member.facts.published_at,
        drain: (member.schedulability == Schedulability::Draining).then(|| berth_model::node::DrainStatus {
            parallel: member.drain_parallel.unwrap_or(1),
            blocked: member.facts.drain_blocked,
        }),
        usage: member.facts.usage,
    }
}

fn same_facts(a: &NodeFacts, b: &NodeFacts) -> bool {
    NodeFacts {
        published_at: b.published_at,
        ..a.clone()
    } == *b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_parse_and_refuse_with_the_fix() {
        let labels = parse_labels("zone=a, rack=r1").unwrap();
        assert_eq!(labels.get("zone").map(String::as_str), Some("a"));
        assert!(parse_labels("zone").unwrap_err().contains("key=value"));
        assert!(parse_labels("zone=a,zone=b").unwrap_err().contains("twice"));
        assert!(parse_labels("zo ne=a").is_err());
        assert!(parse_labels("").unwrap().is_empty());
    }

    #[test]
    fn node_names_are_key_components() {
        assert!(parse_node_name("node-1").is_ok());
        for bad in ["", "-a", "a/b", "a b", &"n".repeat(64)] {
            assert!(parse_node_name(bad).is_err(), "{bad:?}");
        }
    }
}
