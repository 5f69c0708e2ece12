//! `berth cluster rebalance [--dry-run]`: moves instances off nodes whose measured load —
//! what their instances use, not only what they reserve — is far above the cluster's mean,
//! as Nomad (#1635), Incus (#485, `cluster.rebalance`) and the Kubernetes descheduler (#225)
//! users asked. A node's load is the larger of its instances' CPU and memory use against its
//! capacity (`NodeUsage`, sampled by each node). The plan takes a hot node's heaviest
//! movable instances (VMs live, containers by stop, transfer and start) to the coolest nodes
//! the scheduler accepts, while the move leaves both sides below where the hot node was; an
//! instance a rebalance moved stays put for `COOLDOWN`, so two runs never bounce it back.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, Method};
use berth_model::api::{MigrateRequest, MigrationEvent, NodeLoad, RebalanceMove, RebalanceReport};
use berth_model::node::{Node, NodeState};
use berth_model::{Instance, InstanceKind, InstanceState};
use chrono::{DateTime, Utc};

use crate::cluster::Membership;
use crate::engine::Engine;
use crate::error::{EngineError, EngineResult};

/// Points above the mean load that make a node hot, by default.
pub const DEFAULT_THRESHOLD_PERCENT: f64 = 20.0;
/// An instance a rebalance moved is not moved by another for this long.
pub const COOLDOWN: Duration = Duration::from_secs(10 * 60);
/// The most moves one rebalance makes.
const MAX_MOVES: usize = 16;
/// What a rebalance's placement text starts with (how the cool-down recognises it).
const REBALANCED: &str = "rebalanced";

/// A node's load in percent: its instances' use against its capacity, CPU or memory,
/// whichever is larger; `None` without a measurement.
fn load(node: &Node) -> Option<f64> {
    let usage = node.usage.as_ref()?;
    Some(share(node, usage.cpus, usage.memory_bytes))
}

/// What share of `node`'s physical capacity (its capacity without the overcommit ratios)
/// `cpus` and `memory_bytes` are, in percent.
fn share(node: &Node, cpus: f64, memory_bytes: u64) -> f64 {
    let capacity = &node.allocated;
    let physical = |capacity: f64, overcommit: f64| capacity / if overcommit > 0.0 { overcommit } else { 1.0 };
    let cpu_capacity = physical(capacity.capacity_cpus, capacity.cpu_overcommit);
    let memory_capacity = physical(capacity.capacity_memory_bytes as f64, capacity.memory_overcommit);
    let cpu = if cpu_capacity > 0.0 { cpus / cpu_capacity } else { 0.0 };
    let memory = if memory_capacity > 0.0 {
        memory_bytes as f64 / memory_capacity
    } else {
        0.0
    };
    cpu.max(memory) * 100.0
}

/// Whether `instance` can move now, and has not been moved by a rebalance lately.
fn movable(instance: &Instance, now: DateTime<Utc>) -> bool {
    let lately = instance.rescheduled.as_ref().is_some_and(|moved| {
        now.signed_duration_since(moved.at).to_std().unwrap_or_default() < COOLDOWN
            && instance
                .spec
                .placement
                .as_deref()
                .is_some_and(|p| p.contains(REBALANCED))
    });
    let request = MigrateRequest::default();
    instance.state == InstanceState::Running
        && !lately
        && match instance.kind {
            InstanceKind::Vm => crate::migration::live_refusal(instance).is_none(),
            InstanceKind::Container => crate::migration::move_refusal(instance, &request).is_none(),
        }
}

/// The mean load, each node's load, and the moves that bring the hot nodes down to within
/// `threshold` points of the mean (at most `MAX_MOVES`).
pub fn plan(
    nodes: &[Node],
    instances: &[Instance],
    threshold: f64,
    now: DateTime<Utc>,
) -> (f64, Vec<NodeLoad>, Vec<RebalanceMove>) {
    let measured: Vec<(&Node, f64)> = nodes
        .iter()
        .filter(|n| n.state != NodeState::Down)
        .filter_map(|n| Some((n, load(n)?)))
        .collect();
    let loads: Vec<NodeLoad> = measured
        .iter()
        .map(|(node, load)| NodeLoad {
            name: node.name.clone(),
            load_percent: (load * 10.0).round() / 10.0,
            cpus: node.usage.as_ref().map_or(0.0, |u| u.cpus),
            memory_bytes: node.usage.as_ref().map_or(0, |u| u.memory_bytes),
        })
        .collect();
    if measured.len() < 2 {
        return (measured.first().map_or(0.0, |(_, l)| *l), loads, Vec::new());
    }
    let mean = measured.iter().map(|(_, l)| l).sum::<f64>() / measured.len() as f64;
    let mut current: BTreeMap<String, f64> = measured.iter().map(|(n, l)| (n.name.clone(), *l)).collect();
    let mut hot: Vec<(&Node, f64)> = measured
        .iter()
        .filter(|(_, l)| *l > mean + threshold)
        .cloned()
        .collect();
    hot.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut moves = Vec::new();
    for (node, _) in hot {
        let Some(usage) = &node.usage else { continue };
        for heavy in &usage.heaviest {
            if moves.len() >= MAX_MOVES || current[&node.name] <= mean + threshold {
                break;
            }
            let Some(instance) = instances.iter().find(|i| i.id == heavy.id && i.node == node.name) else {
                continue;
            };
            if !movable(instance, now) {
                continue;
            }
            let from_share = share(node, heavy.cpus, heavy.memory_bytes);
            if from_share <= 0.0 {
                continue;
            }
            let source_after = current[&node.name] - from_share;
            // Nodes where it would not make things worse than they were on the source.
            let cooler: Vec<Node> = measured
                .iter()
                .filter(|(n, _)| n.name != node.name && n.state == NodeState::Ready)
                .filter(|(n, _)| {
                    current[&n.name] + share(n, heavy.cpus, heavy.memory_bytes) < current[&node.name].max(source_after)
                })
                .map(|(n, _)| (*n).clone())
                .collect();
            let mut coolest = cooler.clone();
            coolest.sort_by(|a, b| current[&a.name].total_cmp(&current[&b.name]));
            // The scheduler's filters (kind, constraints, ports, room) among the coolest.
            let Some(target) = coolest
                .iter()
                .find(|n| crate::failover::place_moved(std::slice::from_ref(n), instances, instance).is_ok())
            else {
                continue;
            };
            let to_share = share(target, heavy.cpus, heavy.memory_bytes);
            let why = format!(
                "{REBALANCED}: node {} used {:.0}% against the cluster's mean of {:.0}%; {} used {:.2} CPUs and {} MiB",
                node.name,
                current[&node.name],
                mean,
                instance.name,
                heavy.cpus,
                heavy.memory_bytes >> 20
            );
            *current.entry(node.name.clone()).or_default() = source_after;
            *current.entry(target.name.clone()).or_default() += to_share;
            moves.push(RebalanceMove {
                instance: instance.name.clone(),
                from: node.name.clone(),
                to: target.name.clone(),
                why,
                moved: None,
                error: None,
                downtime_ms: None,
            });
        }
    }
    (mean, loads, moves)
}

impl Engine {
    /// Plans a rebalance of the cluster and, unless `dry_run`, makes its moves one after
    /// another (each on the instance's node).
    pub async fn rebalance(self: &Arc<Self>, dry_run: bool, threshold: Option<f64>) -> EngineResult<RebalanceReport> {
        let membership = self.membership.clone().ok_or_else(|| {
            EngineError::conflict(
                "this daemon is a single host: a rebalance moves instances between the nodes of a cluster (berth daemon --cluster etcd://...)",
            )
        })?;
        let threshold = threshold.unwrap_or(DEFAULT_THRESHOLD_PERCENT);
        if !(0.0..=100.0).contains(&threshold) {
            return Err(EngineError::invalid(
                "threshold_percent",
                "--threshold: give 0 to 100 (percentage points above the mean)",
            ));
        }
        let nodes = membership.nodes().await?;
        let instances = self.store.list_instances().await?;
        let (mean, loads, mut moves) = plan(&nodes, &instances, threshold, Utc::now());
        if !dry_run {
            for planned in &mut moves {
                let request = MigrateRequest {
                    to: Some(planned.to.clone()),
                    reason: Some(planned.why.clone()),
                    ..Default::default()
                };
                let moved = match instances.iter().find(|i| i.name == planned.instance) {
                    Some(instance) if instance.node == self.node => {
                        let (events, _progress) = tokio::sync::mpsc::channel(64);
                        self.migrate(&instance.id, &request, &events).await.map(|(_, _, m)| m)
                    }
                    Some(instance) => remote_migrate(&membership, &self.node, instance, &request).await,
                    None => Err(EngineError::not_found(format!("{} is gone", planned.instance))),
                };
                match moved {
                    Ok(result) => {
                        planned.moved = Some(true);
                        planned.downtime_ms = Some(result.downtime_ms);
                        tracing::info!(instance = %planned.instance, from = %planned.from, to = %planned.to, "rebalanced");
                    }
                    Err(e) => {
                        planned.moved = Some(false);
                        planned.error = Some(e.message);
                    }
                }
            }
        }
        Ok(RebalanceReport {
            dry_run,
            mean_load_percent: (mean * 10.0).round() / 10.0,
            threshold_percent: threshold,
            nodes: loads,
            moves,
        })
    }
}

/// Asks `instance`'s node to move it as `request` says, and reads the migration's stream to
/// its end.
async fn remote_migrate(
    membership: &Membership,
    from: &str,
    instance: &Instance,
    request: &MigrateRequest,
) -> EngineResult<berth_model::instance::Migration> {
    let address = membership.peer_address(&instance.node).await?;
    let body = serde_json::to_vec(request).map_err(|e| EngineError::internal(e.to_string()))?;
    let http = Request::builder()
        .method(Method::POST)
        .uri(format!("/v1/instances/{}/migrate", instance.id))
        .header(header::HOST, address.to_string())
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, body.len())
        .body(Body::from(body))
        .map_err(|e| EngineError::internal(e.to_string()))?;
    let response = crate::peers::forward(address, membership.token(), from, http).await?;
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 16 << 20)
        .await
        .map_err(|e| EngineError::internal(format!("reading node {}'s answer: {e}", instance.node)))?;
    if !status.is_success() {
        let message = serde_json::from_slice::<berth_model::api::ErrorResponse>(&bytes)
            .map(|e| e.message)
            .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
        return Err(EngineError::new(status, message));
    }
    for line in bytes.split(|b| *b == b'\n').rev() {
        match serde_json::from_slice::<MigrationEvent>(line) {
            Ok(MigrationEvent::Finished { result, .. }) => return Ok(result),
            Ok(MigrationEvent::Failed { message }) => return Err(EngineError::conflict(message)),
            _ => {}
        }
    }
    Err(EngineError::internal(format!(
        "node {} ended the move of {} without a result",
        instance.node, instance.name
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_model::api::AllocationSummary;
    use berth_model::node::{InstanceUsage, NodeUsage};

    fn node(name: &str, busy: &[(&str, f64)]) -> Node {
        let usage = NodeUsage {
            cpus: busy.iter().map(|(_, c)| c).sum(),
            memory_bytes: 0,
            heaviest: busy
                .iter()
                .map(|(id, cpus)| InstanceUsage {
                    id: id.to_string(),
                    name: id.to_string(),
                    cpus: *cpus,
                    memory_bytes: 0,
                })
                .collect(),
            sampled_at: Utc::now(),
        };
        serde_json::from_value(serde_json::json!({
            "name": name, "id": name, "state": "ready",
            "fingerprint": {"kinds": ["container"], "accelerator": "tcg", "cgroup_version": "v1",
                            "storage_drivers": ["local"], "kernel": "6", "version": "0"},
            "allocated": serde_json::to_value(AllocationSummary {
                capacity_cpus: 2.0, capacity_memory_bytes: 8 << 30, free_cpus: 2.0, free_memory_bytes: 8 << 30,
                ..Default::default()
            }).unwrap(),
            "instances": busy.len(), "images": ["busybox"], "address": "198.51.100.1",
            "joined_at": Utc::now(), "heartbeat_at": Utc::now(), "usage": usage
        }))
        .unwrap()
    }

    fn instance(id: &str, on: &str) -> Instance {
        serde_json::from_value(serde_json::json!({
            "id": id, "name": id, "kind": "container", "image": "busybox", "state": "running",
            "exit_code": null, "oom_killed": false, "pid": 1, "supervisor_pid": 1,
            "limits": {"cpus": null, "memory_bytes": null, "pids": null, "network_bits_per_second": null},
            "default_limits": [], "node": on, "created_at": Utc::now(), "started_at": Utc::now(),
            "finished_at": null, "restart_count": 0, "error": null,
            "spec": {"kind": "container", "image": "busybox", "image_id": "busybox",
                     "process": {"args": ["sleep"], "env": [], "user": "", "working_dir": "", "tty": false, "open_stdin": false},
                     "hostname": id, "auto_remove": false}
        }))
        .unwrap()
    }

    #[test]
    fn a_hot_node_gives_its_heaviest_to_the_coolest_until_near_the_mean() {
        let nodes = [
            node("n1", &[("a", 0.4), ("b", 0.3), ("c", 0.1)]),
            node("n2", &[]),
            node("n3", &[("d", 0.1)]),
        ];
        let instances: Vec<Instance> = [("a", "n1"), ("b", "n1"), ("c", "n1"), ("d", "n3")]
            .iter()
            .map(|(id, on)| instance(id, on))
            .collect();
        let (mean, loads, moves) = plan(&nodes, &instances, 10.0, Utc::now());
        assert_eq!(loads.len(), 3);
        assert!((mean - 15.0).abs() < 0.01, "{mean}");
        // n1 (40%) gives a (20%) to n2 (0%): 20% and 20%, within 10 points of the mean.
        assert_eq!(moves.len(), 1, "{moves:?}");
        assert_eq!((moves[0].instance.as_str(), moves[0].to.as_str()), ("a", "n2"));
        assert!(
            moves[0].why.starts_with("rebalanced: node n1 used 40%"),
            "{}",
            moves[0].why
        );
        // Balanced enough: nothing moves.
        let (_, _, none) = plan(&nodes, &instances, 30.0, Utc::now());
        assert!(none.is_empty());
    }
}
