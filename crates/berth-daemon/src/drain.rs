//! Draining (`berth node drain NAME [--parallel N]`): the draining node empties itself, at
//! most N moves at a time, and ends `cordoned` once nothing runs on it. A new copy always
//! runs before the old one ends where that can be had: VMs migrate live, and a stack's
//! replica without local state is replaced start-first (the next generation runs on another
//! node, healthy if it has a check, before the old one goes) — the single-copy service that
//! Nomad's drain leaves with no running copy (nomad #11879) keeps one here. Other containers
//! move by stop, transfer and start (`berth migrate`), each only after a node that takes it
//! was found. What cannot move is published with the reason (`node inspect`: `drain.blocked`)
//! and the node stays `draining` until it is stopped or removed.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_model::api::{CreateInstanceRequest, CreatedResponse, MigrateRequest};
use berth_model::health::HealthStatus;
use berth_model::node::{NodeState, Schedulability};
use berth_model::stack::REQUEST_LABEL;
use berth_model::{Instance, InstanceKind, InstanceState};
use futures_util::StreamExt;

use crate::cluster::Membership;
use crate::engine::Engine;
use crate::error::{EngineError, EngineResult};

/// How long a start-first replacement may take to run (and pass its check).
const REPLACEMENT_TIMEOUT: Duration = Duration::from_secs(180);
/// How often a drain looks again at what is left.
const PASS_EVERY: Duration = Duration::from_secs(1);

/// What the node's drain is doing: one task at a time, and what it could not move.
#[derive(Default)]
pub struct DrainState {
    running: AtomicBool,
    blocked: Mutex<BTreeMap<String, String>>,
}

impl DrainState {
    /// The instances the drain cannot move, by name, with why (published with the node).
    pub fn blocked(&self) -> BTreeMap<String, String> {
        self.blocked.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_blocked(&self, blocked: BTreeMap<String, String>) {
        *self.blocked.lock().unwrap_or_else(|e| e.into_inner()) = blocked;
    }
}

/// How one instance leaves the draining node.
enum Step {
    /// A VM: QEMU live migration (the new copy runs before the old ends).
    Live,
    /// A stack's replica without local state: its next generation on another node first.
    ReplaceFirst(Box<CreateInstanceRequest>),
    /// Stop, transfer (writable layer, local volumes), start on another node.
    Move,
    Blocked(String),
}

fn step_for(instance: &Instance) -> Step {
    match instance.kind {
        InstanceKind::Vm => match (instance.state, crate::migration::live_refusal(instance)) {
            (_, Some(reason)) => Step::Blocked(reason),
            (InstanceState::Running, None) => Step::Live,
            (state, None) => Step::Blocked(format!("it is {state}: unpause it to move it live")),
        },
        InstanceKind::Container => {
            let stateless = instance.spec.volumes.is_empty()
                && !instance
                    .spec
                    .mounts
                    .iter()
                    .any(|m| m.kind == berth_model::mount::MountKind::Bind);
            let request = instance
                .spec
                .labels
                .get(REQUEST_LABEL)
                .and_then(|text| serde_json::from_str::<CreateInstanceRequest>(text).ok());
            match request {
                Some(request) if stateless && instance.state == InstanceState::Running => {
                    Step::ReplaceFirst(Box::new(request))
                }
                _ if instance.state != InstanceState::Running => {
                    Step::Blocked(format!("it is {}: unpause it to move it", instance.state))
                }
                _ => match crate::migration::move_refusal(instance, &MigrateRequest::default()) {
                    Some(reason) => Step::Blocked(reason),
                    None => Step::Move,
                },
            }
        }
    }
}

/// The next generation's name of a replica: `web-1` → `web-1-g2`, `web-1-g2` → `web-1-g3`.
fn next_generation(name: &str) -> String {
    if let Some((base, generation)) = name.rsplit_once("-g") {
        if let Ok(n) = generation.parse::<u32>() {
            return format!("{base}-g{}", n.saturating_add(1));
        }
    }
    format!("{name}-g2")
}

impl Engine {
    /// Called every failover round: starts this node's drain when the operator asked for
    /// one and none runs.
    pub(crate) fn drain_if_asked(
        self: &Arc<Self>,
        membership: &Arc<Membership>,
        this: Option<&berth_model::node::Node>,
    ) {
        let Some(node) = this.filter(|n| n.state == NodeState::Draining) else {
            return;
        };
        if self.drain.running.swap(true, Ordering::SeqCst) {
            return;
        }
        let parallel = node
            .drain
            .as_ref()
            .map_or(1, |d| d.parallel.clamp(1, berth_model::node::MAX_DRAIN_PARALLEL));
        let engine = self.clone();
        let membership = membership.clone();
        tokio::spawn(async move {
            tracing::info!(parallel, "draining this node");
            engine.drain(&membership, parallel as usize).await;
            engine.drain.set_blocked(BTreeMap::new());
            engine.drain.running.store(false, Ordering::SeqCst);
        });
    }

    /// Moves this node's active instances away until none is left (then cordons the node),
    /// or the operator ends the drain (uncordon, cordon).
    async fn drain(self: &Arc<Self>, membership: &Arc<Membership>, parallel: usize) {
        let mut tried: HashSet<String> = HashSet::new();
        let mut blocked: BTreeMap<String, String> = BTreeMap::new();
        loop {
            match membership.node(&self.node).await {
                Ok(node) if node.state == NodeState::Draining => {}
                Ok(_) => return,
                Err(e) => {
                    tracing::debug!(error = %e.message, "draining: reading this node");
                    tokio::time::sleep(PASS_EVERY).await;
                    continue;
                }
            }
            let Ok(instances) = self.local_instances().await else {
                tokio::time::sleep(PASS_EVERY).await;
                continue;
            };
            let active: Vec<Instance> = instances.into_iter().filter(|i| i.state.is_active()).collect();
            if active.is_empty() {
                match membership
                    .set_schedulability(&self.node, Schedulability::Cordoned, None)
                    .await
                {
                    Ok(_) => {
                        tracing::info!("drained: nothing runs here; the node is cordoned");
                        return;
                    }
                    Err(e) => tracing::warn!(error = %e.message, "draining: cordoning the emptied node"),
                }
                tokio::time::sleep(PASS_EVERY).await;
                continue;
            }
            // Instances stopped or removed meanwhile no longer block.
            blocked.retain(|name, _| active.iter().any(|i| &i.name == name));
            let next: Vec<Instance> = active.into_iter().filter(|i| !tried.contains(&i.id)).collect();
            if next.is_empty() {
                self.drain.set_blocked(blocked.clone());
                tokio::time::sleep(PASS_EVERY).await;
                continue;
            }
            let results: Vec<(Instance, EngineResult<String>)> = futures_util::stream::iter(next)
                .map(|instance| async move {
                    let moved = self.move_off(membership, &instance).await;
                    (instance, moved)
                })
                .buffer_unordered(parallel)
                .collect()
                .await;
            for (instance, moved) in results {
                tried.insert(instance.id.clone());
                match moved {
                    Ok(how) => tracing::info!(instance = %instance.name, %how, "draining: moved"),
                    Err(e) => {
                        tracing::warn!(instance = %instance.name, error = %e.message, "draining: it stays");
                        blocked.insert(instance.name.clone(), e.message);
                    }
                }
            }
            self.drain.set_blocked(blocked.clone());
        }
    }

    /// Moves one instance off this node; what was done, or why it stays.
    async fn move_off(self: &Arc<Self>, membership: &Arc<Membership>, instance: &Instance) -> EngineResult<String> {
        match step_for(instance) {
            Step::Blocked(reason) => Err(EngineError::conflict(reason)),
            Step::Live | Step::Move => {
                // Progress has no reader here; the receiver stays open so nothing cancels.
                let (events, _progress) = tokio::sync::mpsc::channel(64);
                let (_, to, result) = self.migrate(&instance.id, &MigrateRequest::default(), &events).await?;
                Ok(format!(
                    "{} to {to} (down {} ms)",
                    if result.live { "live" } else { "stopped and started" },
                    result.downtime_ms
                ))
            }
            Step::ReplaceFirst(request) => self.replace_first(membership, instance, *request).await,
        }
    }

    /// A stack's replica: its next generation runs on another node (and passes its check),
    /// then this one goes.
    async fn replace_first(
        self: &Arc<Self>,
        membership: &Arc<Membership>,
        old: &Instance,
        mut request: CreateInstanceRequest,
    ) -> EngineResult<String> {
        let nodes = membership.nodes().await?;
        let all = self.store.list_instances().await?;
        let others: Vec<_> = nodes.into_iter().filter(|n| n.name != self.node).collect();
        let (target, _why) = crate::failover::place_moved(&others, &all, old).map_err(EngineError::conflict)?;
        let name = next_generation(&old.name);
        request.name = Some(name.clone());
        request.node = Some(target.clone());
        if let Some(text) = old.spec.labels.get(REQUEST_LABEL) {
            request.labels.insert(REQUEST_LABEL.into(), text.clone());
        }
        let body = serde_json::to_vec(&request).map_err(|e| EngineError::internal(e.to_string()))?;
        let created: CreatedResponse =
            crate::migration::peer_call(membership, &target, &self.node, "/v1/instances", body).await?;
        let start = format!("/v1/instances/{}/start", created.id);
        let started =
            crate::migration::peer_call::<serde_json::Value>(membership, &target, &self.node, &start, Vec::new())
                .await
                .map(|_| ());
        let ready = match started {
            Ok(()) => self.wait_replacement(&created.id, &name).await,
            Err(e) => Err(e),
        };
        if let Err(e) = ready {
            let remove = async {
                let found = self.find_anywhere(&created.id).await?;
                let path = format!("/v1/instances/{}?force=true", found.id);
                crate::migration::peer_delete(membership, &target, &self.node, &path).await
            };
            if let Err(cleanup) = remove.await {
                tracing::warn!(instance = %name, error = %cleanup.message, "draining: removing a replacement that failed");
            }
            return Err(EngineError::new(
                e.status,
                format!(
                    "its replacement {name} on {target} did not come up ({}); it stays",
                    e.message
                ),
            ));
        }
        self.remove(&old.id, true).await?;
        Ok(format!("replaced start-first by {name} on {target}"))
    }

    /// Until the replacement runs (and, with a health check, is healthy).
    async fn wait_replacement(&self, id: &str, name: &str) -> EngineResult<()> {
        let deadline = Instant::now() + REPLACEMENT_TIMEOUT;
        loop {
            let instance = self.store.get_instance(id).await?;
            let up = instance.state == InstanceState::Running
                && (instance.spec.healthcheck.is_none()
                    || instance
                        .health
                        .as_ref()
                        .is_some_and(|h| h.status == HealthStatus::Healthy));
            if up {
                return Ok(());
            }
            if !instance.state.is_active() && instance.state != InstanceState::Created {
                return Err(EngineError::conflict(format!("{name} is {}", instance.state)));
            }
            if instance
                .health
                .as_ref()
                .is_some_and(|h| h.status == HealthStatus::Unhealthy)
            {
                return Err(EngineError::conflict(format!("{name} is unhealthy")));
            }
            if Instant::now() > deadline {
                return Err(EngineError::conflict(format!(
                    "{name} was not up within {} s",
                    REPLACEMENT_TIMEOUT.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_count_up() {
        assert_eq!(next_generation("shop-web-1"), "shop-web-1-g2");
        assert_eq!(next_generation("shop-web-1-g2"), "shop-web-1-g3");
        assert_eq!(next_generation("big-gun"), "big-gun-g2");
    }
}
