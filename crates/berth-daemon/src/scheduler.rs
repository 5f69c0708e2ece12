//! Placement: which node a new instance goes to. Filters first (the node is ready, runs
//! the kind, has the image, its free capacity fits the request, its labels meet the
//! constraints, the user's `--node`), then scores: spread (the emptiest node) by default,
//! binpack (the fullest that fits) when asked. A refusal says in one line what each node
//! lacked. The chosen node's own admission stays the authority: placement reads the
//! cluster's instance records, which can be a moment behind.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

use berth_model::api::{CreateInstanceRequest, PlacementStrategy};
use berth_model::node::{Node, NodeState};
use berth_model::quantity::{ByteSize, MilliCpus};
use berth_model::{Instance, InstanceKind};

use crate::admission::Reservation;
use crate::error::{EngineError, EngineResult};

/// `--constraint KEY==VALUE` or `KEY!=VALUE` on a node's labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraint {
    pub key: String,
    pub value: String,
    pub equal: bool,
}

impl Constraint {
    pub fn parse(text: &str) -> Result<Constraint, String> {
        let (key, value, equal) = if let Some((k, v)) = text.split_once("!=") {
            (k, v, false)
        } else if let Some((k, v)) = text.split_once("==") {
            (k, v, true)
        } else {
            return Err(format!(
                "constraint '{}' must be LABEL==VALUE or LABEL!=VALUE (for example zone==a)",
                text.escape_default()
            ));
        };
        let (key, value) = (key.trim(), value.trim());
        if key.is_empty() {
            return Err(format!("constraint '{}' names no label", text.escape_default()));
        }
        Ok(Constraint {
            key: key.to_string(),
            value: value.to_string(),
            equal,
        })
    }

    fn holds(&self, labels: &BTreeMap<String, String>) -> bool {
        (labels.get(&self.key).map(String::as_str) == Some(self.value.as_str())) == self.equal
    }

    fn describe(&self) -> String {
        format!("{}{}{}", self.key, if self.equal { "==" } else { "!=" }, self.value)
    }
}

/// What an instance needs of a node.
pub struct Needs<'a> {
    pub kind: InstanceKind,
    pub image: &'a str,
    pub reservation: Reservation,
    pub node: Option<&'a str>,
    pub constraints: Vec<Constraint>,
    pub strategy: PlacementStrategy,
    /// Named volumes it mounts (`-v NAME:/path`, `--mount type=volume`).
    pub volumes: Vec<String>,
    /// A network other than the default one, `none` and `host`.
    pub network: Option<String>,
    /// `--spread-by LABEL`: first the value of LABEL whose nodes run the fewest instances,
    /// then the strategy among that value's nodes.
    pub spread_by: Option<String>,
    /// Host ports it publishes, as `PORT/PROTOCOL` (a node's active instances hold theirs).
    pub ports: Vec<String>,
}

/// `8080/tcp` for a published port: two instances on one node cannot both bind it.
pub fn port_key(mapping: &berth_model::network::PortMapping) -> String {
    format!("{}/{}", mapping.host_port, mapping.protocol)
}

impl<'a> Needs<'a> {
    pub fn of(request: &'a CreateInstanceRequest, reservation: Reservation) -> EngineResult<Needs<'a>> {
        let constraints = request
            .constraints
            .iter()
            .map(|c| Constraint::parse(c).map_err(|e| EngineError::invalid("constraints", e)))
            .collect::<EngineResult<_>>()?;
        // Mount texts that do not parse are the create handler's to refuse.
        let volumes = request
            .volumes
            .iter()
            .filter_map(|text| berth_model::mount::parse_volume_flag(text).ok())
            .chain(
                request
                    .mounts
                    .iter()
                    .filter_map(|text| berth_model::mount::parse_mount_flag(text).ok()),
            )
            .filter_map(|mount| match mount {
                berth_model::mount::MountRequest::Volume(volume) => Some(volume.volume),
                _ => None,
            })
            .collect();
        let network = request
            .network
            .clone()
            .filter(|n| !matches!(n.as_str(), "none" | "host" | berth_model::network::DEFAULT_NETWORK));
        Ok(Needs {
            kind: request.kind,
            image: &request.image,
            reservation,
            node: request.node.as_deref(),
            constraints,
            strategy: request.placement.unwrap_or_default(),
            volumes,
            network,
            spread_by: request.spread_by.clone(),
            // Texts that do not parse are the create handler's to refuse.
            ports: request
                .ports
                .iter()
                .filter_map(|p| berth_model::network::PortMapping::parse(p).ok())
                .filter(|p| p.host_port != 0)
                .map(|p| port_key(&p))
                .collect(),
        })
    }
}

/// The node for the instance and why (what `inspect` shows as its placement), or a refusal
/// naming what each node lacked. `has_image` says whether a node has the image.
pub fn place(
    nodes: &[Node],
    instances: &[Instance],
    needs: &Needs,
    has_image: impl Fn(&Node) -> bool,
) -> EngineResult<(String, String)> {
    BatchPlacer::new(nodes, instances).place(needs, has_image)
}

/// Placements against one view of the cluster, one after another, each seeing the ones
/// before it: the leader places a batch (a down node's instances, a burst of requests) with
/// one read of the nodes and the instance records. Nodes are judged once per kind of need
/// (kind, image, constraints, volumes, network, `--node`); spread then takes the emptiest
/// node from a heap, so a placement costs O(log nodes) however large the cluster — Nomad's
/// scheduler bounds its work per placement the same way. Small clusters (up to
/// `EXACT_UP_TO` fitting nodes) are scanned whole, so the reason counts every node.
pub struct BatchPlacer<'a> {
    nodes: &'a [Node],
    reserved: Vec<Reservation>,
    counts: Vec<usize>,
    /// Bumped when a node takes an instance: heap entries of an older version are stale.
    versions: Vec<u64>,
    shapes: HashMap<String, Shape>,
    /// The nodes where NFS volumes are in use: one node at a time uses one.
    shared_volume_nodes: HashMap<String, Vec<usize>>,
    /// Host ports each node's active instances publish (`8080/tcp`).
    ports_taken: Vec<std::collections::HashSet<String>>,
    /// Nodes looked at, over all placements (the benchmark reports it).
    pub evaluated: u64,
}

/// The nodes that meet one kind of need, apart from free capacity.
struct Shape {
    members: Vec<bool>,
    fitting: usize,
    /// Why the others do not ("do not meet zone==a" -> 2).
    refused: BTreeMap<String, usize>,
    /// The host ports the need publishes.
    ports: Vec<String>,
    /// Spread's candidates, emptiest first: (score, instances, node index, version).
    heap: BinaryHeap<Reverse<(u64, usize, usize, u64)>>,
}

/// Up to this many fitting nodes a placement looks at every one of them.
const EXACT_UP_TO: usize = 256;

impl<'a> BatchPlacer<'a> {
    /// `nodes` with what `instances` reserve on them: one pass over each.
    pub fn new(nodes: &'a [Node], instances: &[Instance]) -> BatchPlacer<'a> {
        let index: HashMap<&str, usize> = nodes.iter().enumerate().map(|(i, n)| (n.name.as_str(), i)).collect();
        let mut reserved = vec![Reservation::default(); nodes.len()];
        let mut counts = vec![0; nodes.len()];
        let mut shared_volume_nodes: HashMap<String, Vec<usize>> = HashMap::new();
        let mut ports_taken = vec![std::collections::HashSet::new(); nodes.len()];
        for instance in instances {
            let Some(&i) = index.get(instance.node.as_str()) else {
                continue;
            };
            counts[i] += 1;
            if instance.state.is_active() {
                ports_taken[i].extend(instance.spec.ports.iter().map(port_key));
                for volume in instance.spec.volumes.iter().filter(|v| v.source.starts_with("nfs://")) {
                    let users = shared_volume_nodes.entry(volume.volume.clone()).or_default();
                    if !users.contains(&i) {
                        users.push(i);
                    }
                }
                reserved[i].millicpus = reserved[i].millicpus.saturating_add(instance.reserved_cpus().0);
                reserved[i].memory_bytes = reserved[i]
                    .memory_bytes
                    .saturating_add(instance.reserved_memory_bytes());
                reserved[i].instance_storage_bytes = reserved[i]
                    .instance_storage_bytes
                    .saturating_add(instance.spec.instance_storage_bytes.iter().sum());
            }
        }
        BatchPlacer {
            nodes,
            reserved,
            counts,
            versions: vec![0; nodes.len()],
            shapes: HashMap::new(),
            shared_volume_nodes,
            ports_taken,
            evaluated: 0,
        }
    }

    /// Half the share of CPU plus half the share of memory reserved on node `i`.
    fn fraction(&self, i: usize) -> f64 {
        let a = &self.nodes[i].allocated;
        let r = &self.reserved[i];
        let cpu = if a.capacity_cpus > 0.0 {
            r.millicpus as f64 / 1000.0 / a.capacity_cpus
        } else {
            0.0
        };
        let memory = if a.capacity_memory_bytes > 0 {
            r.memory_bytes as f64 / a.capacity_memory_bytes as f64
        } else {
            0.0
        };
        (cpu + memory) / 2.0
    }

    fn heap_entry(&self, i: usize) -> Reverse<(u64, usize, usize, u64)> {
        Reverse(((self.fraction(i) * 1e12) as u64, self.counts[i], i, self.versions[i]))
    }

    fn shape(&mut self, needs: &Needs, has_image: &impl Fn(&Node) -> bool) -> String {
        let key = format!(
            "{:?}|{}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
            needs.kind,
            needs.image,
            needs.constraints,
            needs.volumes,
            needs.network,
            needs.node,
            needs.spread_by,
            needs.ports
        );
        if self.shapes.contains_key(&key) {
            return key;
        }
        // A volume that exists stays where it is: only its nodes can mount it. One that
        // exists nowhere is made where the instance goes.
        let pinned: Vec<&String> = needs
            .volumes
            .iter()
            .filter(|v| self.nodes.iter().any(|n| n.volumes.contains(v)))
            .collect();
        let mut shape = Shape {
            members: vec![false; self.nodes.len()],
            fitting: 0,
            refused: BTreeMap::new(),
            ports: needs.ports.clone(),
            heap: BinaryHeap::new(),
        };
        for (i, node) in self.nodes.iter().enumerate() {
            let storage = pinned
                .iter()
                .find(|v| !node.volumes.contains(v))
                .map(|v| format!("do not hold volume {v} (a volume stays on its node)"))
                .or_else(|| {
                    needs
                        .volumes
                        .iter()
                        .find(|v| {
                            self.shared_volume_nodes
                                .get(*v)
                                .is_some_and(|users| !users.contains(&i))
                        })
                        .map(|v| format!("do not run volume {v}'s users (an NFS volume is used on one node at a time)"))
                })
                .or_else(|| {
                    needs
                        .ports
                        .iter()
                        .find(|p| self.ports_taken[i].contains(*p))
                        .map(|p| format!("have port {p} taken"))
                })
                .or_else(|| {
                    needs
                        .network
                        .as_ref()
                        .filter(|n| !node.networks.contains(n))
                        .map(|n| format!("lack network {n}"))
                });
            match static_refusal(node, needs, has_image).or(storage) {
                Some(reason) => *shape.refused.entry(reason).or_default() += 1,
                None => {
                    shape.members[i] = true;
                    shape.fitting += 1;
                    shape.heap.push(self.heap_entry(i));
                }
            }
        }
        self.evaluated += self.nodes.len() as u64;
        self.shapes.insert(key.clone(), shape);
        key
    }

    /// Places one instance and counts it against its node for the placements after it.
    pub fn place(&mut self, needs: &Needs, has_image: impl Fn(&Node) -> bool) -> EngineResult<(String, String)> {
        let placed = self.place_one(needs, has_image);
        crate::metrics::record_placement(placed.is_ok());
        placed
    }

    /// Counts an instance placed earlier whose record is not in the view yet (pinned to its
    /// node by `needs.node`), without recording a decision.
    pub fn count_placed(&mut self, needs: &Needs) {
        let _ = self.place_one(needs, |_| true);
    }

    fn place_one(&mut self, needs: &Needs, has_image: impl Fn(&Node) -> bool) -> EngineResult<(String, String)> {
        if let Some(wanted) = needs.node {
            if !self.nodes.iter().any(|n| n.name == wanted) {
                return Err(EngineError::invalid(
                    "node",
                    format!("no such node: {wanted}; `berth node ls` lists them"),
                ));
            }
        }
        let key = self.shape(needs, &has_image);
        let shape = &self.shapes[&key];
        let exact =
            shape.fitting <= EXACT_UP_TO || needs.strategy == PlacementStrategy::Binpack || needs.spread_by.is_some();
        let mut reasons = shape.refused.clone();
        let (chosen, fitting) = if exact {
            let mut fitting = Vec::new();
            for i in (0..self.nodes.len()).filter(|&i| shape.members[i]) {
                match capacity_refusal(&self.nodes[i], &self.reserved[i], needs) {
                    Some(reason) => *reasons.entry(reason).or_default() += 1,
                    None => fitting.push(i),
                }
            }
            self.evaluated += shape.fitting as u64;
            // --spread-by: only the nodes of the label's value that runs the fewest.
            let mut spread_value = None;
            if let Some(label) = needs.spread_by.as_deref() {
                if let Some((value, count)) = self.least_used_value(label, &fitting) {
                    fitting.retain(|&i| self.nodes[i].labels.get(label) == Some(&value));
                    spread_value = Some((label, value, count));
                }
            }
            let order = |a: &usize, b: &usize| {
                self.fraction(*a)
                    .total_cmp(&self.fraction(*b))
                    .then(self.counts[*a].cmp(&self.counts[*b]))
            };
            let chosen = match needs.strategy {
                PlacementStrategy::Spread => fitting.iter().copied().min_by(|a, b| order(a, b).then(a.cmp(b))),
                PlacementStrategy::Binpack => fitting.iter().copied().max_by(|a, b| order(a, b).then(b.cmp(a))),
            };
            (chosen, (fitting.len(), spread_value))
        } else {
            // Spread over many nodes: the emptiest that has room, from the heap.
            let shape = self.shapes.get_mut(&key).expect("shape made above");
            let mut full = Vec::new();
            let mut chosen = None;
            while let Some(Reverse(entry)) = shape.heap.pop() {
                let (_, _, i, version) = entry;
                if version != self.versions[i] {
                    continue;
                }
                self.evaluated += 1;
                match capacity_refusal(&self.nodes[i], &self.reserved[i], needs) {
                    Some(reason) => {
                        *reasons.entry(reason).or_default() += 1;
                        full.push(Reverse(entry));
                    }
                    None => {
                        chosen = Some(i);
                        break;
                    }
                }
            }
            // Too full for this request, maybe not for a smaller one.
            shape.heap.extend(full);
            (chosen, (shape.fitting, None))
        };
        let (fitting, spread_value) = fitting;
        let others: Vec<String> = reasons.iter().map(|(reason, n)| format!("{n} {reason}")).collect();
        let Some(i) = chosen else {
            return Err(EngineError::conflict(format!(
                "0/{} nodes fit: {}",
                self.nodes.len(),
                others.join(", ")
            )));
        };
        self.reserved[i].millicpus = self.reserved[i].millicpus.saturating_add(needs.reservation.millicpus);
        self.reserved[i].memory_bytes = self.reserved[i]
            .memory_bytes
            .saturating_add(needs.reservation.memory_bytes);
        self.reserved[i].instance_storage_bytes = self.reserved[i]
            .instance_storage_bytes
            .saturating_add(needs.reservation.instance_storage_bytes);
        self.counts[i] += 1;
        self.versions[i] += 1;
        // Its ports are the node's now: needs that publish one of them no longer fit there.
        for port in &needs.ports {
            self.ports_taken[i].insert(port.clone());
            for shape in self.shapes.values_mut() {
                if shape.members[i] && shape.ports.contains(port) {
                    shape.members[i] = false;
                    shape.fitting -= 1;
                    *shape.refused.entry(format!("have port {port} taken")).or_default() += 1;
                }
            }
        }
        let entry = self.heap_entry(i);
        for shape in self.shapes.values_mut() {
            if shape.members[i] {
                shape.heap.push(entry);
            }
        }
        let passed_over = if others.is_empty() {
            String::new()
        } else {
            format!("; passed over: {}", others.join(", "))
        };
        let by_value = spread_value
            .as_ref()
            .map(|(label, value, count)| {
                format!("spread by {label}: {label}={value} runs the fewest instances ({count}); ")
            })
            .unwrap_or_default();
        let why = match (needs.node, needs.strategy) {
            (Some(node), _) => format!("--node {node}"),
            (None, PlacementStrategy::Spread) if spread_value.is_some() => {
                format!("{by_value}the emptiest of its {fitting} nodes that fit{passed_over}")
            }
            (None, PlacementStrategy::Binpack) if spread_value.is_some() => {
                format!("{by_value}the fullest of its {fitting} nodes that fit{passed_over}")
            }
            (None, PlacementStrategy::Spread) => {
                format!("spread: the emptiest of {fitting} nodes that fit{passed_over}")
            }
            (None, PlacementStrategy::Binpack) => {
                format!("binpack: the fullest of {fitting} nodes that fit{passed_over}")
            }
        };
        Ok((self.nodes[i].name.clone(), why))
    }
}

impl BatchPlacer<'_> {
    /// Of the values `label` has on the `fitting` nodes, the one whose nodes (all of them,
    /// fitting or not) run the fewest instances, and that count; ties go to the smaller value.
    fn least_used_value(&self, label: &str, fitting: &[usize]) -> Option<(String, usize)> {
        let mut per_value: BTreeMap<&str, usize> = BTreeMap::new();
        for &i in fitting {
            if let Some(value) = self.nodes[i].labels.get(label) {
                per_value.insert(value, 0);
            }
        }
        for (i, node) in self.nodes.iter().enumerate() {
            if let Some(count) = node.labels.get(label).and_then(|v| per_value.get_mut(v.as_str())) {
                *count += self.counts[i];
            }
        }
        per_value
            .into_iter()
            .min_by_key(|(value, count)| (*count, *value))
            .map(|(value, count)| (value.to_string(), count))
    }
}

/// Why `node` cannot take the instance whatever its load, as "N <reason>" reads.
fn static_refusal(node: &Node, needs: &Needs, has_image: &impl Fn(&Node) -> bool) -> Option<String> {
    if needs.node.is_some_and(|wanted| wanted != node.name) {
        return Some("not the --node asked for".into());
    }
    match node.state {
        NodeState::Ready => {}
        state => return Some(state.as_str().into()),
    }
    if node.address.is_none() && !node.this_node {
        return Some("advertise no address (--advertise)".into());
    }
    if !node.fingerprint.kinds.contains(&needs.kind) {
        return Some(format!("cannot run {}s", needs.kind));
    }
    if let Some(constraint) = needs.constraints.iter().find(|c| !c.holds(&node.labels)) {
        return Some(format!("do not meet {}", constraint.describe()));
    }
    if let Some(label) = needs.spread_by.as_deref().filter(|l| !node.labels.contains_key(*l)) {
        return Some(format!("lack label {label} (--spread-by)"));
    }
    if !has_image(node) {
        return Some(format!("lack image {}", needs.image));
    }
    None
}

/// Why `node`, holding `reserved`, has no room for the instance.
fn capacity_refusal(node: &Node, reserved: &Reservation, needs: &Needs) -> Option<String> {
    let a = &node.allocated;
    let capacity_millicpus = (a.capacity_cpus * 1000.0).round() as u64;
    if reserved.millicpus.saturating_add(needs.reservation.millicpus) > capacity_millicpus {
        return Some(format!("lack CPUs (needs {})", MilliCpus(needs.reservation.millicpus)));
    }
    if reserved.memory_bytes.saturating_add(needs.reservation.memory_bytes) > a.capacity_memory_bytes {
        return Some(format!(
            "lack memory (needs {})",
            ByteSize(needs.reservation.memory_bytes)
        ));
    }
    // Nodes that do not report their instance storage (0) are not judged on it.
    let storage = needs.reservation.instance_storage_bytes;
    if storage > 0
        && a.capacity_instance_storage_bytes > 0
        && reserved.instance_storage_bytes.saturating_add(storage) > a.capacity_instance_storage_bytes
    {
        return Some(format!("lack instance storage (needs {})", ByteSize(storage)));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_model::api::AllocationSummary;
    use berth_model::node::NodeFingerprint;

    fn node(name: &str, state: NodeState, labels: &[(&str, &str)], memory: u64) -> Node {
        Node {
            name: name.into(),
            id: name.into(),
            state,
            address: Some("192.0.2.1:7380".into()),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            fingerprint: NodeFingerprint {
                kinds: vec![InstanceKind::Container],
                ..Default::default()
            },
            allocated: AllocationSummary {
                capacity_cpus: 2.0,
                capacity_memory_bytes: memory,
                ..Default::default()
            },
            instances: 0,
            images: vec![],
            volumes: vec![],
            networks: vec![],
            joined_at: chrono::Utc::now(),
            heartbeat_at: chrono::Utc::now(),
            this_node: false,
            drain: None,
            usage: None,
        }
    }

    fn needs(memory: u64) -> Needs<'static> {
        Needs {
            kind: InstanceKind::Container,
            image: "busybox",
            reservation: Reservation {
                millicpus: 0,
                memory_bytes: memory,
                instance_storage_bytes: 0,
            },
            node: None,
            constraints: vec![],
            strategy: PlacementStrategy::Spread,
            volumes: vec![],
            network: None,
            spread_by: None,
            ports: vec![],
        }
    }

    const GIB: u64 = 1 << 30;

    #[test]
    fn refusals_say_what_each_node_lacked() {
        let nodes = [
            node("a", NodeState::Ready, &[], GIB),
            node("b", NodeState::Ready, &[], GIB),
            node("c", NodeState::Cordoned, &[], 128 * GIB),
        ];
        let refused = place(&nodes, &[], &needs(64 * GIB), |_| true).unwrap_err();
        assert_eq!(
            refused.message,
            "0/3 nodes fit: 1 cordoned, 2 lack memory (needs 64GiB)"
        );
    }

    #[test]
    fn instance_storage_is_reserved_in_full_against_the_file_system() {
        let mut nodes = [
            node("a", NodeState::Ready, &[], GIB),
            node("b", NodeState::Ready, &[], GIB),
            node("c", NodeState::Ready, &[], GIB),
        ];
        nodes[0].allocated.capacity_instance_storage_bytes = 100 * GIB;
        nodes[1].allocated.capacity_instance_storage_bytes = 500 * GIB;
        let mut wanted = needs(0);
        wanted.reservation.instance_storage_bytes = 475 * GIB;
        let mut placer = BatchPlacer::new(&nodes, &[]);
        // c does not report its storage (an older node): not judged on it.
        let first = placer.place(&wanted, |_| true).unwrap().0;
        let second = placer.place(&wanted, |_| true).unwrap().0;
        assert_eq!(
            [first.as_str(), second.as_str()].iter().filter(|n| **n == "a").count(),
            0
        );
        nodes[2].allocated.capacity_instance_storage_bytes = 200 * GIB;
        let mut placer = BatchPlacer::new(&nodes, &[]);
        assert_eq!(placer.place(&wanted, |_| true).unwrap().0, "b");
        let refused = placer.place(&wanted, |_| true).unwrap_err();
        assert_eq!(refused.message, "0/3 nodes fit: 3 lack instance storage (needs 475GiB)");
    }

    #[test]
    fn constraints_and_node_filter() {
        let nodes = [
            node("a", NodeState::Ready, &[("zone", "a")], GIB),
            node("b", NodeState::Ready, &[("zone", "b")], GIB),
        ];
        let mut wanted = needs(0);
        wanted.constraints = vec![Constraint::parse("zone==b").unwrap()];
        assert_eq!(place(&nodes, &[], &wanted, |_| true).unwrap().0, "b");
        wanted.constraints = vec![Constraint::parse("zone!=b").unwrap()];
        assert_eq!(place(&nodes, &[], &wanted, |_| true).unwrap().0, "a");
        wanted.constraints = vec![];
        wanted.node = Some("b");
        assert_eq!(place(&nodes, &[], &wanted, |_| true).unwrap().0, "b");
        wanted.node = Some("z");
        assert!(place(&nodes, &[], &wanted, |_| true).is_err());
        assert!(Constraint::parse("zone=a").unwrap_err().contains("LABEL==VALUE"));
        let refused = place(&nodes, &[], &needs(0), |n| n.name == "x").unwrap_err();
        assert_eq!(refused.message, "0/2 nodes fit: 2 lack image busybox");
    }

    #[test]
    fn volumes_pin_and_networks_filter() {
        let mut a = node("a", NodeState::Ready, &[], GIB);
        let mut b = node("b", NodeState::Ready, &[], GIB);
        a.volumes = vec!["data".into()];
        b.networks = vec!["back".into()];
        let nodes = [a, b];
        let mut wanted = needs(0);
        wanted.volumes = vec!["data".into()];
        assert_eq!(place(&nodes, &[], &wanted, |_| true).unwrap().0, "a");
        wanted.volumes = vec!["fresh".into()];
        assert!(place(&nodes, &[], &wanted, |_| true).is_ok());
        wanted.volumes = vec!["data".into()];
        wanted.network = Some("back".into());
        let refused = place(&nodes, &[], &wanted, |_| true).unwrap_err();
        assert_eq!(
            refused.message,
            "0/2 nodes fit: 1 do not hold volume data (a volume stays on its node), 1 lack network back"
        );
    }

    #[test]
    fn spread_by_a_label_balances_its_values_first() {
        // Zone a has two nodes, zone b one; spread alone would fill a's two nodes as fast
        // as b's one, spread by zone alternates the zones.
        let nodes = [
            node("a1", NodeState::Ready, &[("zone", "a")], 64 * GIB),
            node("a2", NodeState::Ready, &[("zone", "a")], 64 * GIB),
            node("b1", NodeState::Ready, &[("zone", "b")], 64 * GIB),
            node("x", NodeState::Ready, &[], 64 * GIB),
        ];
        let mut wanted = needs(GIB);
        wanted.spread_by = Some("zone".into());
        let mut placer = BatchPlacer::new(&nodes, &[]);
        let chosen: Vec<String> = (0..4).map(|_| placer.place(&wanted, |_| true).unwrap().0).collect();
        assert_eq!(chosen, ["a1", "b1", "a2", "b1"]);
        let (_, why) = placer.place(&wanted, |_| true).unwrap();
        assert_eq!(
            why,
            "spread by zone: zone=a runs the fewest instances (2); the emptiest of its 2 nodes that fit; \
             passed over: 1 lack label zone (--spread-by)"
        );
        let mut none = needs(GIB);
        none.spread_by = Some("rack".into());
        assert_eq!(
            placer.place(&none, |_| true).unwrap_err().message,
            "0/4 nodes fit: 4 lack label rack (--spread-by)"
        );
    }

    #[test]
    fn published_ports_are_taken_per_node() {
        let nodes = [
            node("a", NodeState::Ready, &[], GIB),
            node("b", NodeState::Ready, &[], GIB),
        ];
        let mut web = needs(0);
        web.ports = vec!["8080/tcp".into()];
        let mut placer = BatchPlacer::new(&nodes, &[]);
        let first = placer.place(&web, |_| true).unwrap().0;
        let second = placer.place(&web, |_| true).unwrap().0;
        assert_ne!(first, second);
        assert_eq!(
            placer.place(&web, |_| true).unwrap_err().message,
            "0/2 nodes fit: 2 have port 8080/tcp taken"
        );
        // Another port, or another protocol, still fits.
        web.ports = vec!["8080/udp".into()];
        assert!(placer.place(&web, |_| true).is_ok());
    }

    #[test]
    fn a_batch_spreads_over_many_nodes_and_fills_them_in_turn() {
        // 1,000 nodes of 1 GiB: past EXACT_UP_TO, spread comes from the heap.
        let nodes: Vec<Node> = (0..1000)
            .map(|i| node(&format!("n{i:04}"), NodeState::Ready, &[], 1 << 30))
            .collect();
        let mut placer = BatchPlacer::new(&nodes, &[]);
        let mut per_node: HashMap<String, usize> = HashMap::new();
        for _ in 0..3000 {
            let (node, why) = placer.place(&needs(256 << 20), |_| true).unwrap();
            assert!(why.starts_with("spread: the emptiest of 1000 nodes"), "{why}");
            *per_node.entry(node).or_default() += 1;
        }
        assert_eq!(per_node.len(), 1000);
        assert!(per_node.values().all(|&n| n == 3), "spread evenly");
        // Each node has room for one more 256 MiB instance, then none.
        for _ in 0..1000 {
            placer.place(&needs(256 << 20), |_| true).unwrap();
        }
        let refused = placer.place(&needs(256 << 20), |_| true).unwrap_err();
        assert_eq!(refused.message, "0/1000 nodes fit: 1000 lack memory (needs 256MiB)");
        // A placement looked at a few nodes, not all of them.
        assert!(placer.evaluated < 20_000, "{}", placer.evaluated);
    }
}
