//! Placement: which node a new instance goes to. Filters first (the node is ready, runs
//! the kind, has the image, its free capacity fits the request, its labels meet the
//! constraints, the user's `--node`), then scores: spread (the emptiest node) by default,
//! binpack (the fullest that fits) when asked. A refusal says in one line what each node
//! lacked. The chosen node's own admission stays the authority: placement reads the
//! cluster's instance records, which can be a moment behind.

use std::collections::BTreeMap;

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
        })
    }
}

/// A node with what the cluster's records say it holds now.
struct Candidate<'a> {
    node: &'a Node,
    reserved: Reservation,
    instances: usize,
}

/// The node for the instance and why (what `inspect` shows as its placement), or a refusal
/// naming what each node lacked. `has_image` says whether a node has the image (images do
/// not move between nodes yet).
pub fn place(
    nodes: &[Node],
    instances: &[Instance],
    needs: &Needs,
    has_image: impl Fn(&Node) -> bool,
) -> EngineResult<(String, String)> {
    if let Some(wanted) = needs.node {
        if !nodes.iter().any(|n| n.name == wanted) {
            return Err(EngineError::invalid(
                "node",
                format!("no such node: {wanted}; `berth node ls` lists them"),
            ));
        }
    }
    // A volume that exists stays where it is: only its nodes can mount it. One that exists
    // nowhere is made where the instance goes.
    let pinned: Vec<&String> = needs
        .volumes
        .iter()
        .filter(|v| nodes.iter().any(|n| n.volumes.contains(v)))
        .collect();
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut fitting = Vec::new();
    for node in nodes {
        let candidate = tally(node, instances);
        let storage = pinned
            .iter()
            .find(|v| !node.volumes.contains(v))
            .map(|v| format!("do not hold volume {v} (a volume stays on its node)"))
            .or_else(|| {
                needs
                    .network
                    .as_ref()
                    .filter(|n| !node.networks.contains(n))
                    .map(|n| format!("lack network {n}"))
            });
        match storage.or_else(|| refusal(&candidate, needs, &has_image)) {
            Some(reason) => *reasons.entry(reason).or_default() += 1,
            None => fitting.push(candidate),
        }
    }
    let fraction = |c: &Candidate| {
        let a = &c.node.allocated;
        let cpu = if a.capacity_cpus > 0.0 {
            c.reserved.millicpus as f64 / 1000.0 / a.capacity_cpus
        } else {
            0.0
        };
        let memory = if a.capacity_memory_bytes > 0 {
            c.reserved.memory_bytes as f64 / a.capacity_memory_bytes as f64
        } else {
            0.0
        };
        (cpu + memory) / 2.0
    };
    let best = match needs.strategy {
        PlacementStrategy::Spread => fitting.iter().min_by(|a, b| {
            fraction(a)
                .total_cmp(&fraction(b))
                .then(a.instances.cmp(&b.instances))
                .then(a.node.name.cmp(&b.node.name))
        }),
        PlacementStrategy::Binpack => fitting.iter().max_by(|a, b| {
            fraction(a)
                .total_cmp(&fraction(b))
                .then(a.instances.cmp(&b.instances))
                .then(b.node.name.cmp(&a.node.name))
        }),
    };
    let others: Vec<String> = reasons.iter().map(|(reason, n)| format!("{n} {reason}")).collect();
    let passed_over = if others.is_empty() {
        String::new()
    } else {
        format!("; passed over: {}", others.join(", "))
    };
    match best {
        Some(candidate) => {
            let why = match (needs.node, needs.strategy) {
                (Some(node), _) => format!("--node {node}"),
                (None, PlacementStrategy::Spread) => {
                    format!("spread: the emptiest of {} nodes that fit{passed_over}", fitting.len())
                }
                (None, PlacementStrategy::Binpack) => {
                    format!("binpack: the fullest of {} nodes that fit{passed_over}", fitting.len())
                }
            };
            Ok((candidate.node.name.clone(), why))
        }
        None => Err(EngineError::conflict(format!(
            "0/{} nodes fit: {}",
            nodes.len(),
            others.join(", ")
        ))),
    }
}

/// What the instance records hold on `node`: reservations of its active instances, and
/// how many instances it has.
fn tally<'a>(node: &'a Node, instances: &[Instance]) -> Candidate<'a> {
    let mine = instances.iter().filter(|i| i.node == node.name);
    let mut reserved = Reservation {
        millicpus: 0,
        memory_bytes: 0,
    };
    let mut count = 0;
    for instance in mine {
        count += 1;
        if instance.state.is_active() {
            reserved.millicpus = reserved.millicpus.saturating_add(instance.reserved_cpus().0);
            reserved.memory_bytes = reserved.memory_bytes.saturating_add(instance.reserved_memory_bytes());
        }
    }
    Candidate {
        node,
        reserved,
        instances: count,
    }
}

/// Why `candidate` cannot take the instance, as "N <reason>" reads ("lack memory ...").
fn refusal(candidate: &Candidate, needs: &Needs, has_image: &impl Fn(&Node) -> bool) -> Option<String> {
    let node = candidate.node;
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
    if !has_image(node) {
        return Some(format!("lack image {}", needs.image));
    }
    let a = &node.allocated;
    let capacity_millicpus = (a.capacity_cpus * 1000.0).round() as u64;
    if candidate.reserved.millicpus.saturating_add(needs.reservation.millicpus) > capacity_millicpus {
        return Some(format!("lack CPUs (needs {})", MilliCpus(needs.reservation.millicpus)));
    }
    if candidate
        .reserved
        .memory_bytes
        .saturating_add(needs.reservation.memory_bytes)
        > a.capacity_memory_bytes
    {
        return Some(format!(
            "lack memory (needs {})",
            ByteSize(needs.reservation.memory_bytes)
        ));
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
        }
    }

    fn needs(memory: u64) -> Needs<'static> {
        Needs {
            kind: InstanceKind::Container,
            image: "busybox",
            reservation: Reservation {
                millicpus: 0,
                memory_bytes: memory,
            },
            node: None,
            constraints: vec![],
            strategy: PlacementStrategy::Spread,
            volumes: vec![],
            network: None,
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
}
