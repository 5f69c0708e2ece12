//! Restart policies (`--restart`): what the node does when an instance's main process ends.
//! As Docker: a stop or kill by the user is never undone; a workload that keeps failing is
//! started again after a doubling delay (100 ms up to 10 s), reset once it has run 10 s.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_model::{Instance, InstanceState};

use crate::engine::Engine;

const FIRST_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(10);
/// A run at least this long ends a streak of failures.
const STEADY_RUN: Duration = Duration::from_secs(10);

/// What the node remembers between exits (not stored: a daemon restart forgets a user's
/// stop, as Docker's `always` does).
#[derive(Default)]
pub struct Restarts {
    /// Instances the user stopped or killed since their last start.
    stopped_by_user: Mutex<HashSet<String>>,
    /// Quick exits in a row, per instance.
    streaks: Mutex<HashMap<String, u32>>,
}

impl Restarts {
    pub fn stopped_by_user(&self, id: &str) {
        self.stopped_by_user
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string());
    }

    pub fn started(&self, id: &str) {
        self.stopped_by_user
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    pub fn forget(&self, id: &str) {
        self.started(id);
        self.streaks.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
    }

    fn was_stopped_by_user(&self, id: &str) -> bool {
        self.stopped_by_user
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(id)
    }

    /// The delay before the next start, counting this exit into the streak.
    fn next_delay(&self, instance: &Instance) -> Duration {
        let ran = match (instance.started_at, instance.finished_at) {
            (Some(started), Some(finished)) => (finished - started).to_std().unwrap_or_default(),
            _ => Duration::ZERO,
        };
        let mut streaks = self.streaks.lock().unwrap_or_else(|e| e.into_inner());
        let streak = streaks.entry(instance.id.clone()).or_insert(0);
        if ran >= STEADY_RUN {
            *streak = 0;
        }
        let delay = FIRST_DELAY.saturating_mul(1 << (*streak).min(10)).min(MAX_DELAY);
        *streak += 1;
        delay
    }
}

impl Engine {
    /// After an exit is recorded: starts the instance again if its policy says so.
    pub(crate) fn apply_restart_policy(self: &Arc<Self>, instance: &Instance) {
        let policy = instance.spec.restart;
        let code = match instance.state {
            InstanceState::Exited => instance.exit_code,
            _ => None,
        };
        if instance.spec.auto_remove
            || !policy.restarts_after(code, instance.restart_count)
            || self.restarts.was_stopped_by_user(&instance.id)
            || self.membership.as_ref().is_some_and(|m| m.fenced())
        {
            return;
        }
        let delay = self.restarts.next_delay(instance);
        let engine = self.clone();
        let id = instance.id.clone();
        tracing::info!(%id, %policy, ?delay, "restarting by its restart policy");
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            // The user may have stopped, removed or started it meanwhile.
            if engine.restarts.was_stopped_by_user(&id) {
                return;
            }
            match engine.find(&id).await {
                Ok(now) if !now.state.is_active() => {
                    if let Err(e) = engine.start(&id, false).await {
                        tracing::warn!(%id, error = %e.message, "restart by policy failed");
                    }
                }
                _ => {}
            }
        });
    }
}
