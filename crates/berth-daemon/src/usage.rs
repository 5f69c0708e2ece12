//! What a node's instances measurably use: CPU (the rate of their cgroups' CPU time) and
//! memory, sampled every few seconds by a task of its own and published with the node, so a
//! rebalance can judge nodes by use and not only by what they reserve.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use berth_model::node::{InstanceUsage, NodeUsage};
use chrono::Utc;

use crate::engine::Engine;

/// How often the instances are sampled (each sample reads every instance's cgroup).
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// Instances published by name with what they use.
const HEAVIEST: usize = 8;

#[derive(Default)]
pub struct UsageMeter {
    /// The last sample's CPU time of each instance: (nanoseconds, when, in ms).
    last: Mutex<HashMap<String, (u64, i64)>>,
    current: Mutex<Option<NodeUsage>>,
}

impl UsageMeter {
    /// The last sample (rounded, so that a node does not republish itself for noise).
    pub fn current(&self) -> Option<NodeUsage> {
        self.current.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// CPUs rounded to a hundredth and memory to MiB: what is published.
fn rounded(cpus: f64) -> f64 {
    // `+ 0.0` turns an empty sum's -0.0 into 0.
    (cpus * 100.0).round() / 100.0 + 0.0
}

impl Engine {
    /// Samples this node's instances every `SAMPLE_EVERY` while the engine lives.
    pub fn spawn_usage_sampling(self: &Arc<Self>) {
        let engine: Weak<Engine> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(SAMPLE_EVERY);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let Some(engine) = engine.upgrade() else { return };
                engine.sample_usage().await;
            }
        });
    }

    async fn sample_usage(&self) {
        let Ok(instances) = self.local_instances().await else {
            return;
        };
        let mut usages = Vec::new();
        let mut seen = HashMap::new();
        for instance in instances.iter().filter(|i| i.state.is_active()) {
            let Ok(driver) = self.driver(instance.kind) else {
                continue;
            };
            let Ok(stats) = driver.stats(instance).await else {
                continue;
            };
            let previous = self
                .usage
                .last
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&instance.id)
                .copied();
            seen.insert(instance.id.clone(), (stats.cpu_usage_ns, stats.sampled_at_ms));
            // The first sample of an instance has nothing to take a rate from.
            let cpus = match previous {
                Some((ns, at)) if stats.sampled_at_ms > at && stats.cpu_usage_ns >= ns => {
                    (stats.cpu_usage_ns - ns) as f64 / ((stats.sampled_at_ms - at) as f64 * 1_000_000.0)
                }
                _ => 0.0,
            };
            usages.push(InstanceUsage {
                id: instance.id.clone(),
                name: instance.name.clone(),
                cpus: rounded(cpus),
                memory_bytes: stats.memory_usage_bytes >> 20 << 20,
            });
        }
        *self.usage.last.lock().unwrap_or_else(|e| e.into_inner()) = seen;
        let cpus = rounded(usages.iter().map(|u| u.cpus).sum());
        let memory_bytes = usages.iter().map(|u| u.memory_bytes).sum();
        usages.sort_by(|a, b| b.cpus.total_cmp(&a.cpus).then(b.memory_bytes.cmp(&a.memory_bytes)));
        usages.truncate(HEAVIEST);
        *self.usage.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(NodeUsage {
            cpus,
            memory_bytes,
            heaviest: usages,
            sampled_at: Utc::now(),
        });
    }
}
