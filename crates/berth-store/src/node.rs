//! The records of cluster membership. A node's member record is written when it joins and
//! whenever what it publishes changes; it stays when the node goes, so a dead node is listed
//! as `down` with its last facts. Its presence record is held by the node's lease: etcd
//! deletes it when the node stops renewing, which is how every other node learns it is down.

use std::collections::BTreeMap;

use berth_model::api::AllocationSummary;
use berth_model::node::{NodeFingerprint, Schedulability};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::keys;
use crate::records::Record;

/// What a node publishes about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeFacts {
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub fingerprint: NodeFingerprint,
    pub allocated: AllocationSummary,
    pub instances: usize,
    /// Tags and ids of the images the node has (images do not move between nodes yet).
    #[serde(default)]
    pub images: Vec<String>,
    /// Names of the volumes and networks the node has (both stay on their node).
    #[serde(default)]
    pub volumes: Vec<String>,
    #[serde(default)]
    pub networks: Vec<String>,
    /// While it drains: the instances it cannot move, by name, with why.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub drain_blocked: BTreeMap<String, String>,
    /// What its instances measurably use (sampled every few seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<berth_model::node::NodeUsage>,
    pub published_at: DateTime<Utc>,
}

/// A node as the cluster remembers it: `/berth/v1/nodes/<name>/member`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeMember {
    pub name: String,
    /// The id in the node's state directory: a name belongs to one state directory.
    pub node_id: String,
    /// The operator's decision (cordon, drain), apart from the node's own facts.
    #[serde(default)]
    pub schedulability: Schedulability,
    /// With `Draining`: how many instances the node moves at once (`--parallel`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_parallel: Option<u32>,
    pub joined_at: DateTime<Utc>,
    pub facts: NodeFacts,
}

impl Record for NodeMember {
    const WHAT: &'static str = "node";
    const PREFIX: &'static str = keys::NODES;
    const SUFFIX: &'static str = "/member";
    fn id(&self) -> &str {
        &self.name
    }
}

/// That a node is alive: `/berth/v1/nodes/<name>/presence`, attached to its lease.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodePresence {
    pub name: String,
    pub node_id: String,
    pub since: DateTime<Utc>,
}

impl Record for NodePresence {
    const WHAT: &'static str = "node";
    const PREFIX: &'static str = keys::NODES;
    const SUFFIX: &'static str = "/presence";
    fn id(&self) -> &str {
        &self.name
    }
}
