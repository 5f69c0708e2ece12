//! The nodes as the API shows them (`berth node ...`): the cluster's members with
//! `--cluster`, this host alone without.

use berth_model::driver::InstanceDriver;
use berth_model::node::{Node, NodeFingerprint, NodeState, Schedulability};
use berth_model::InstanceKind;
use berth_store::NodeFacts;
use chrono::Utc;

use crate::admission::Reservation;
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
        let mut images: Vec<String> = self
            .images
            .list()
            .await?
            .into_iter()
            .flat_map(|image| std::iter::once(image.id).chain(image.tags))
            .collect();
        images.sort();
        let volumes = self.volumes.list_local().await?.into_iter().map(|v| v.name).collect();
        let networks = self.networks.list().await?.into_iter().map(|n| n.name).collect();
        Ok(NodeFacts {
            address: None,
            labels: Default::default(),
            fingerprint: self.node_fingerprint(),
            allocated: self.allocation(&instances),
            instances: instances.len(),
            images,
            volumes,
            networks,
            drain_blocked: self.drain.blocked(),
            usage: self.usage.current(),
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
            images: facts.images,
            volumes: facts.volumes,
            networks: facts.networks,
            joined_at: facts.published_at,
            heartbeat_at: facts.published_at,
            this_node: true,
            drain: None,
            usage: facts.usage,
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

    /// What an instance created from `request` would reserve, as admission counts it.
    pub fn placement_needs(&self, request: &berth_model::api::CreateInstanceRequest) -> EngineResult<Reservation> {
        let (instance_type, limits, _) = self.sized_limits(request)?;
        let requests = self.resolved_requests(request, &limits, instance_type.is_some())?;
        Ok(Reservation {
            millicpus: requests.cpus.or(limits.cpus).map_or(0, |c| c.0),
            memory_bytes: requests.memory_bytes.or(limits.memory_bytes).unwrap_or(0),
            instance_storage_bytes: instance_type.map_or(0, |t| t.instance_storage_bytes.iter().sum()),
        })
    }

    /// Refuses placement fields this node cannot honour: another node's name (a create is
    /// placed before it reaches its node), cluster options on a single host.
    pub fn check_placement(&self, request: &berth_model::api::CreateInstanceRequest) -> EngineResult<()> {
        if let Some(node) = request.node.as_deref().filter(|n| *n != self.node) {
            return Err(EngineError::invalid(
                "node",
                match self.membership {
                    Some(_) => format!("--node {node}: this request reached node {}; send it through the daemon's socket, which places it", self.node),
                    None => format!("--node {node}: this daemon is a single host (node {}); --node is for clusters", self.node),
                },
            ));
        }
        if self.membership.is_none()
            && (!request.constraints.is_empty() || request.placement.is_some() || request.spread_by.is_some())
        {
            return Err(EngineError::invalid(
                "constraints",
                "--constraint, --placement and --spread-by are for clusters (berth daemon --cluster etcd://...)",
            ));
        }
        if let Some(label) = request.spread_by.as_deref() {
            if label.is_empty() || label.len() > 63 || label.chars().any(|c| c.is_whitespace() || c == '=') {
                return Err(EngineError::invalid(
                    "spread_by",
                    format!(
                        "--spread-by '{}': give a node label's name, for example zone",
                        label.escape_default()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The node a new instance goes to, chosen by the scheduler (in a cluster), and why.
    pub async fn choose_node(
        &self,
        request: &berth_model::api::CreateInstanceRequest,
    ) -> EngineResult<(String, String)> {
        if self.membership.is_none() {
            return Ok((self.node.clone(), "the only node".into()));
        }
        let needs = crate::scheduler::Needs::of(request, self.placement_needs(request)?)?;
        let mut nodes = self.nodes().await?;
        // This node's own volumes and networks, fresh; others' as they last published.
        if let Some(here) = nodes.iter_mut().find(|n| n.name == self.node) {
            let facts = self.node_facts().await?;
            here.volumes = facts.volumes;
            here.networks = facts.networks;
        }
        let instances = self.store.list_instances().await?;
        // Nodes publish ids and normalized tags (docker.io/library/busybox:latest).
        let wanted = request.image.trim_start_matches("sha256:");
        let wanted_tag = berth_image::reference::parse_reference(&request.image)
            .ok()
            .and_then(|r| berth_image::reference::normalized_tag(&r));
        // This node's own image store is the fresh answer; others' as they last published.
        let here = self.images.resolve(&request.image).await.is_ok();
        let has_image = |node: &Node| {
            if node.name == self.node {
                return here;
            }
            node.images.iter().any(|known| {
                Some(known) == wanted_tag.as_ref()
                    || (wanted.len() >= 12 && known.strip_prefix("sha256:").is_some_and(|id| id.starts_with(wanted)))
            })
        };
        // Placements answered a moment ago whose instances the target nodes have not
        // written yet count too: a burst of creates (a stack's replicas) spreads.
        let recent = recent_placements(&instances);
        let placer = || {
            let mut placer = crate::scheduler::BatchPlacer::new(&nodes, &instances);
            for earlier in &recent {
                if let Ok(reservation) = self.placement_needs(earlier) {
                    if let Ok(needs) = crate::scheduler::Needs::of(earlier, reservation) {
                        placer.count_placed(&needs);
                    }
                }
            }
            placer
        };
        let placed: (String, String) = match placer().place(&needs, has_image) {
            Ok(placed) => EngineResult::Ok(placed),
            Err(refusal) => {
                // No node with the image fits: any node that fits otherwise fetches it from
                // one that has it.
                let source = nodes
                    .iter()
                    .find(|n| has_image(n) && n.state != berth_model::node::NodeState::Down && n.address.is_some());
                let Some(source) = source else { return Err(refusal) };
                let (node, why) = placer().place(&needs, |_| true).map_err(|_| refusal)?;
                Ok((node, format!("{why}; the image comes from node {}", source.name)))
            }
        }?;
        remember_placement(request, &placed.0);
        Ok(placed)
    }

    /// An image by reference or id; in a cluster, one this node lacks is fetched from a node
    /// that has it (`peer_registry`), verified by digest, keeping its id and tag.
    pub async fn resolve_image(&self, text: &str) -> Result<berth_model::image::ImageRecord, berth_image::ImageError> {
        let missing = match self.images.resolve(text).await {
            Err(e @ berth_image::ImageError::NotFound(_)) => e,
            other => return other,
        };
        let Some(membership) = &self.membership else {
            return Err(missing);
        };
        let Some(wanted) = berth_image::reference::parse_reference(text)
            .ok()
            .and_then(|r| berth_image::reference::normalized_tag(&r))
        else {
            return Err(missing);
        };
        let Ok(nodes) = membership.nodes().await else {
            return Err(missing);
        };
        let sources = nodes
            .iter()
            .filter(|n| !n.this_node && n.state != berth_model::node::NodeState::Down && n.images.contains(&wanted));
        for source in sources {
            let Some(address) = &source.address else { continue };
            tracing::info!(image = %wanted, node = %source.name, "fetching an image from another node");
            match self.images.pull_from_peer(address, &wanted, membership.token()).await {
                Ok(image) => return Ok(image),
                Err(e) => {
                    tracing::warn!(image = %wanted, node = %source.name, error = %e, "fetching an image from another node")
                }
            }
        }
        Err(missing)
    }

    /// `berth node cordon|uncordon|drain`.
    /// `parallel`: for a drain, how many instances the node moves at once.
    pub async fn set_node_schedulability(
        &self,
        name: &str,
        schedulability: Schedulability,
        parallel: Option<u32>,
    ) -> EngineResult<Node> {
        match &self.membership {
            Some(membership) => membership.set_schedulability(name, schedulability, parallel).await,
            None => {
                self.node(name).await?;
                Err(EngineError::conflict(
                    "this daemon is a single host: cordon and drain are for members of a cluster (berth daemon --cluster etcd://...)",
                ))
            }
        }
    }
}

/// How long a placement counts before its instance's record shows up (a create that takes
/// longer has failed, or is counted twice for a while: spread leans, nothing breaks).
const RECENT_PLACEMENT: std::time::Duration = std::time::Duration::from_secs(20);

/// Placements this node answered lately, as their requests pinned to the chosen node.
static RECENT: std::sync::Mutex<Vec<(std::time::Instant, berth_model::api::CreateInstanceRequest)>> =
    std::sync::Mutex::new(Vec::new());

fn remember_placement(request: &berth_model::api::CreateInstanceRequest, node: &str) {
    let mut pinned = request.clone();
    pinned.node = Some(node.to_string());
    let mut recent = RECENT.lock().unwrap_or_else(|e| e.into_inner());
    recent.push((std::time::Instant::now(), pinned));
}

/// The recent placements whose instances are not among `instances` yet (by name; an unnamed
/// one counts for the whole window), dropping the rest.
fn recent_placements(instances: &[berth_model::Instance]) -> Vec<berth_model::api::CreateInstanceRequest> {
    let mut recent = RECENT.lock().unwrap_or_else(|e| e.into_inner());
    recent.retain(|(at, request)| {
        at.elapsed() < RECENT_PLACEMENT
            && request
                .name
                .as_ref()
                .is_none_or(|name| !instances.iter().any(|i| &i.name == name))
    });
    recent.iter().map(|(_, request)| request.clone()).collect()
}
