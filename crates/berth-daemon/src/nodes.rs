//! The nodes as the API shows them (`berth node ...`): the cluster's members with
//! `--cluster`, this host alone without.

use berth_model::driver::InstanceDriver;
use berth_model::node::{Node, NodeFingerprint, NodeState, Schedulability};
use berth_model::InstanceKind;
use berth_store::NodeFacts;
use chrono::Utc;

use crate::engine::Engine;
use crate::error::{EngineError, EngineResult};

impl Engine {
    /// What this node can run.
    pub fn node_fingerprint(&self) -> NodeFingerprint {
        let mut kinds = vec![InstanceKind::Container];
        if self.vm_driver().fingerprint().available {
            kinds.push(InstanceKind::Vm);
        }
        let cgroup_version = if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            "v2"
        } else {
            "v1"
        };
        NodeFingerprint {
            kinds,
            accelerator: self
                .host
                .accelerator
                .usable
                .first()
                .cloned()
                .unwrap_or_else(|| "tcg".into()),
            cgroup_version: cgroup_version.into(),
            storage_drivers: vec!["local".into(), "nfs".into()],
            kernel: self.host.kernel.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }

    /// What this node publishes to the cluster: its fingerprint, capacity and allocation.
    pub async fn node_facts(&self) -> EngineResult<NodeFacts> {
        let instances = self.local_instances().await?;
        Ok(NodeFacts {
            address: None,
            labels: Default::default(),
            fingerprint: self.node_fingerprint(),
            allocated: self.allocation(&instances),
            instances: instances.len(),
            published_at: Utc::now(),
        })
    }

    /// This host as the one node of its own cluster.
    async fn standalone_node(&self) -> EngineResult<Node> {
        let facts = self.node_facts().await?;
        Ok(Node {
            name: self.node.clone(),
            id: self.node.clone(),
            state: NodeState::Ready,
            address: None,
            labels: Default::default(),
            fingerprint: facts.fingerprint,
            allocated: facts.allocated,
            instances: facts.instances,
            joined_at: facts.published_at,
            heartbeat_at: facts.published_at,
            this_node: true,
        })
    }

    pub async fn nodes(&self) -> EngineResult<Vec<Node>> {
        match &self.membership {
            Some(membership) => membership.nodes().await,
            None => Ok(vec![self.standalone_node().await?]),
        }
    }

    pub async fn node(&self, name: &str) -> EngineResult<Node> {
        match &self.membership {
            Some(membership) => membership.node(name).await,
            None if name == self.node => self.standalone_node().await,
            None => Err(EngineError::not_found(format!(
                "no such node: {name}; this daemon is a single host (node {}); `berth node ls` lists it",
                self.node
            ))),
        }
    }

    /// `berth node cordon|uncordon|drain`.
    pub async fn set_node_schedulability(&self, name: &str, schedulability: Schedulability) -> EngineResult<Node> {
        match &self.membership {
            Some(membership) => membership.set_schedulability(name, schedulability).await,
            None => {
                self.node(name).await?;
                Err(EngineError::conflict(
                    "this daemon is a single host: cordon and drain are for members of a cluster (berth daemon --cluster etcd://...)",
                ))
            }
        }
    }
}
