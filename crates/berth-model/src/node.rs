//! Nodes: the hosts of a cluster as its members see them. A node publishes what it is
//! (fingerprint, capacity, allocation) under a lease it renews; an operator marks it
//! cordoned or draining. One host without `--cluster` is a cluster of one node.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::AllocationSummary;
use crate::InstanceKind;

/// How long a node's lease lives: a node that has not renewed it for this long is `down`.
pub const NODE_LEASE_TTL_SECS: u64 = 10;

/// What a node is, for users and for placement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Holding its lease and taking new instances.
    Ready,
    /// Its lease expired: its daemon or its machine is gone, or it is cut off from etcd.
    Down,
    /// Holding its lease; new instances go elsewhere (`berth node cordon`).
    Cordoned,
    /// Cordoned and to be emptied (`berth node drain`).
    Draining,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Ready => "ready",
            NodeState::Down => "down",
            NodeState::Cordoned => "cordoned",
            NodeState::Draining => "draining",
        }
    }
}

/// What an operator decided about a node (kept apart from what the node publishes, so it
/// survives the node going down and coming back).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Schedulability {
    #[default]
    Schedulable,
    Cordoned,
    Draining,
}

/// What a node can run, as placement filters on it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NodeFingerprint {
    /// The kinds of instance its drivers run.
    pub kinds: Vec<InstanceKind>,
    /// How its VMs run: "kvm" or "tcg".
    pub accelerator: String,
    /// "v1" or "v2".
    pub cgroup_version: String,
    /// Volume drivers it can attach ("local", "nfs").
    pub storage_drivers: Vec<String>,
    pub kernel: String,
    pub version: String,
}

/// One node of the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Node {
    pub name: String,
    /// The node's own id, kept in its state directory (node.json).
    pub id: String,
    pub state: NodeState,
    /// The address it advertises (`--advertise`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub fingerprint: NodeFingerprint,
    /// Capacity and what active instances reserve, as admission counts them.
    pub allocated: AllocationSummary,
    /// Instances assigned to the node.
    pub instances: usize,
    /// Tags and ids of the images on the node: what it can run without a pull.
    #[serde(default)]
    pub images: Vec<String>,
    /// Names of the volumes on the node (a local volume stays on its node).
    #[serde(default)]
    pub volumes: Vec<String>,
    /// Names of the networks on the node.
    #[serde(default)]
    pub networks: Vec<String>,
    pub joined_at: DateTime<Utc>,
    /// When the node last published itself; a `down` node's last word.
    pub heartbeat_at: DateTime<Utc>,
    /// Whether this is the node that answered the request.
    #[serde(default)]
    pub this_node: bool,
    /// While it drains: how many instances it moves at once and which it cannot move.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<DrainStatus>,
    /// What its instances measurably use (not what they reserve), sampled every few seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<NodeUsage>,
}

/// What a node's instances use, measured from their cgroups (what `berth stats` reads).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeUsage {
    /// CPUs busy on behalf of its instances (1.0: one CPU all the time).
    pub cpus: f64,
    pub memory_bytes: u64,
    /// Its heaviest instances (at most 8), heaviest first: what a rebalance moves.
    #[serde(default)]
    pub heaviest: Vec<InstanceUsage>,
    pub sampled_at: DateTime<Utc>,
}

/// What one instance uses.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InstanceUsage {
    pub id: String,
    pub name: String,
    pub cpus: f64,
    pub memory_bytes: u64,
}

/// A draining node's progress, as it publishes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DrainStatus {
    /// Instances moved at once (`--parallel`).
    pub parallel: u32,
    /// Instances that stay, by name, with why: the drain ends (the node `cordoned`) once
    /// they are stopped or removed.
    #[serde(default)]
    pub blocked: BTreeMap<String, String>,
}

/// The most instances a drain moves at once.
pub const MAX_DRAIN_PARALLEL: u32 = 32;
