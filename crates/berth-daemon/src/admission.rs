//! Admission: whether this host has room for what an instance reserves — its requests, not
//! its limits, as Kubernetes counts them. Requests of active instances and of starts in
//! flight are summed against the host's capacity times the overcommit ratios. Checking and
//! claiming happen under one lock, so two starts never both take the last room; with a
//! cluster store the claim becomes one transaction on the node's reservations.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use berth_model::api::{AllocationSummary, LimitsRequest};
use berth_model::quantity::{ByteSize, LimitSetting, MilliCpus};
use berth_model::{Instance, InstanceKind, Limits, Requests};
use berth_store::{InstanceFootprint, Store};

use crate::error::{EngineError, EngineResult};

/// What an instance holds against capacity while it is active.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reservation {
    pub millicpus: u64,
    pub memory_bytes: u64,
    /// Its instance store's disks (the scheduler counts them; the node's own admission leaves
    /// them to `check_file_size`, as they are sparse files).
    pub instance_storage_bytes: u64,
}

impl Reservation {
    /// What `instance` holds: the same rule as for the footprints admission reads from the
    /// store (one clone of its limits and requests; starts are not a hot path for it).
    pub fn of(instance: &Instance) -> Self {
        Self::of_footprint(&InstanceFootprint::from(instance))
    }

    pub fn of_footprint(footprint: &InstanceFootprint) -> Self {
        Reservation {
            millicpus: footprint.requests.held_cpus(&footprint.limits).0,
            memory_bytes: footprint.requests.held_memory_bytes(&footprint.limits),
            instance_storage_bytes: footprint.instance_storage_bytes.iter().sum(),
        }
    }
}

pub struct Admission {
    host_cpus: u64,
    host_memory_bytes: u64,
    cpu_overcommit: f64,
    memory_overcommit: f64,
    /// Serialises check-and-claim, with the store read inside it.
    gate: tokio::sync::Mutex<()>,
    /// Starts (and updates) admitted but not yet recorded in the store, by instance id.
    claims: Arc<Mutex<HashMap<String, Reservation>>>,
    /// In a cluster: the node whose instances count (the store holds every node's).
    only_node: Option<String>,
}

/// Room held for an instance until its new state is in the store; dropping it releases
/// the room (the store's record counts from then on).
#[must_use = "the room is released when the claim is dropped"]
pub struct Claim {
    claims: Arc<Mutex<HashMap<String, Reservation>>>,
    id: String,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.claims.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.id);
    }
}

impl Admission {
    pub fn new(host_cpus: u64, host_memory_bytes: u64, cpu_overcommit: f64, memory_overcommit: f64) -> Self {
        Admission {
            host_cpus,
            host_memory_bytes,
            cpu_overcommit,
            memory_overcommit,
            gate: tokio::sync::Mutex::new(()),
            claims: Arc::default(),
            only_node: None,
        }
    }

    /// Counts only the instances of `node` (a cluster's store holds every node's).
    pub fn for_node(mut self, node: Option<String>) -> Self {
        self.only_node = node;
        self
    }

    /// Reservations and limits of active instances (other than `except`) and of claims in
    /// flight, against what the host offers under the overcommit ratios.
    pub fn summary(&self, instances: &[InstanceFootprint], except: Option<&str>) -> AllocationSummary {
        let capacity_millicpus = (self.host_cpus as f64 * 1000.0 * self.cpu_overcommit) as u64;
        let capacity_memory_bytes = (self.host_memory_bytes as f64 * self.memory_overcommit) as u64;
        let (mut millicpus, mut memory_bytes) = (0u64, 0u64);
        let (mut limit_millicpus, mut limit_memory_bytes) = (0u64, 0u64);
        let mut unlimited_instances = 0;
        let mut instance_storage_bytes = 0u64;
        let active: Vec<&InstanceFootprint> = instances
            .iter()
            .filter(|i| i.state.is_active() && Some(i.id.as_str()) != except)
            .collect();
        let claims = self.claims.lock().unwrap_or_else(|e| e.into_inner());
        for instance in &active {
            // A running instance growing (`update`) holds a claim for its new size while the
            // store still shows the old one: count the larger, or a concurrent start would
            // see only the old size.
            let mut reserved = Reservation::of_footprint(instance);
            if let Some(claimed) = claims.get(&instance.id) {
                reserved.millicpus = reserved.millicpus.max(claimed.millicpus);
                reserved.memory_bytes = reserved.memory_bytes.max(claimed.memory_bytes);
            }
            millicpus = millicpus.saturating_add(reserved.millicpus);
            memory_bytes = memory_bytes.saturating_add(reserved.memory_bytes);
            instance_storage_bytes = instance_storage_bytes.saturating_add(reserved.instance_storage_bytes);
            limit_millicpus = limit_millicpus.saturating_add(instance.limits.cpus.map_or(0, |c| c.0));
            limit_memory_bytes = limit_memory_bytes.saturating_add(instance.limits.memory_bytes.unwrap_or(0));
            if instance.limits.cpus.is_none() || instance.limits.memory_bytes.is_none() {
                unlimited_instances += 1;
            }
        }
        // A claim whose instance the store already shows active is counted once, above.
        for (id, reserved) in claims.iter() {
            if Some(id.as_str()) != except && !active.iter().any(|i| &i.id == id) {
                millicpus = millicpus.saturating_add(reserved.millicpus);
                memory_bytes = memory_bytes.saturating_add(reserved.memory_bytes);
            }
        }
        AllocationSummary {
            cpus: MilliCpus(millicpus).as_cpus(),
            memory_bytes,
            limit_cpus: MilliCpus(limit_millicpus).as_cpus(),
            limit_memory_bytes,
            unlimited_instances,
            capacity_cpus: MilliCpus(capacity_millicpus).as_cpus(),
            capacity_memory_bytes,
            free_cpus: MilliCpus(capacity_millicpus.saturating_sub(millicpus)).as_cpus(),
            free_memory_bytes: capacity_memory_bytes.saturating_sub(memory_bytes),
            cpu_overcommit: self.cpu_overcommit,
            memory_overcommit: self.memory_overcommit,
            instance_storage_bytes,
            capacity_instance_storage_bytes: 0,
        }
    }

    /// Admits `instance` with reservation `needed` (its own earlier reservation does not
    /// count against it) or says in one line what is short. The room stays claimed until
    /// the returned claim is dropped, which the caller does once the store shows the
    /// instance active with that reservation.
    pub async fn claim(
        &self,
        store: &Store,
        instance: &Instance,
        needed: Reservation,
        verb: &str,
    ) -> EngineResult<Claim> {
        let _gate = self.gate.lock().await;
        let mut instances = store.instance_footprints().await?;
        if let Some(node) = &self.only_node {
            instances.retain(|i| &i.node == node);
        }
        let free = self.summary(&instances, Some(&instance.id));
        let free_millicpus = (free.free_cpus * 1000.0).round() as u64;
        let mut short = Vec::new();
        if needed.millicpus > free_millicpus {
            short.push(format!(
                "CPUs: it reserves {}, {:.2} of {:.2} are free (cpu_overcommit {})",
                MilliCpus(needed.millicpus),
                free.free_cpus,
                free.capacity_cpus,
                free.cpu_overcommit
            ));
        }
        if needed.memory_bytes > free.free_memory_bytes {
            short.push(format!(
                "memory: it reserves {}, {} of {} is free (memory_overcommit {})",
                ByteSize(needed.memory_bytes),
                ByteSize(free.free_memory_bytes),
                ByteSize(free.capacity_memory_bytes),
                free.memory_overcommit
            ));
        }
        if !short.is_empty() {
            return Err(EngineError::conflict(format!(
                "not enough room to {verb} {}: {}; stop another instance, lower --reserve-cpus/--reserve-memory, or raise [admission] in the daemon config",
                instance.name,
                short.join("; ")
            )));
        }
        self.claims
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(instance.id.clone(), needed);
        Ok(Claim {
            claims: self.claims.clone(),
            id: instance.id.clone(),
        })
    }
}

/// What a new instance reserves. In order: `--reserve-*`; an instance type's (or an imported
/// definition's) full size; a limit the user gave (Kubernetes' rule: a limit alone is also
/// the request); a VM's memory, which its guest owns; else the daemon's default request,
/// never above the limit. A request above its limit is refused.
pub fn resolve_requests(
    asked: &LimitsRequest,
    defaults: &LimitsRequest,
    limits: &Limits,
    kind: InstanceKind,
    sized_by_type: bool,
) -> EngineResult<Requests> {
    let given = |setting: Option<LimitSetting<u64>>| setting.and_then(LimitSetting::value);
    let cpus = asked
        .reserve_cpus
        .map(|c| c.0)
        .or(if sized_by_type { limits.cpus.map(|c| c.0) } else { None })
        .or(given(asked.cpus.map(|s| match s {
            LimitSetting::Unlimited => LimitSetting::Unlimited,
            LimitSetting::Value(v) => LimitSetting::Value(v.0),
        })))
        .unwrap_or_else(|| {
            let default = defaults.reserve_cpus.map_or(0, |c| c.0);
            limits.cpus.map_or(default, |limit| default.min(limit.0))
        });
    let memory_bytes = asked
        .reserve_memory_bytes
        .or(if sized_by_type { limits.memory_bytes } else { None })
        .or(given(asked.memory_bytes))
        .or(if kind == InstanceKind::Vm {
            limits.memory_bytes
        } else {
            None
        })
        .unwrap_or_else(|| {
            let default = defaults.reserve_memory_bytes.unwrap_or(0);
            limits.memory_bytes.map_or(default, |limit| default.min(limit))
        });
    let requests = Requests {
        cpus: Some(MilliCpus(cpus)),
        memory_bytes: Some(memory_bytes),
    };
    check_requests(&requests, limits)?;
    Ok(requests)
}

/// A request may not exceed its limit: one line with both numbers and the two fixes.
pub fn check_requests(requests: &Requests, limits: &Limits) -> EngineResult<()> {
    if let (Some(request), Some(limit)) = (requests.cpus, limits.cpus) {
        if request > limit {
            return Err(EngineError::invalid(
                "reserve_cpus",
                format!(
                    "--reserve-cpus {request} is above the CPU limit {limit}; raise --cpus or lower --reserve-cpus"
                ),
            ));
        }
    }
    if let (Some(request), Some(limit)) = (requests.memory_bytes, limits.memory_bytes) {
        if request > limit {
            return Err(EngineError::invalid(
                "reserve_memory",
                format!(
                    "--reserve-memory {} is above the memory limit {}; raise --memory or lower --reserve-memory",
                    ByteSize(request),
                    ByteSize(limit)
                ),
            ));
        }
    }
    Ok(())
}

/// Requests after `update`: a new `--reserve-*` wins; otherwise the old request stays, held
/// down to a lowered limit, except that a VM's memory request follows its memory size.
pub fn updated_requests(instance: &Instance, asked: &LimitsRequest, limits: &Limits) -> EngineResult<Requests> {
    let old_cpus = instance.reserved_cpus().0;
    let old_memory = instance.reserved_memory_bytes();
    let cpus = match asked.reserve_cpus {
        Some(request) => request.0,
        None => limits.cpus.map_or(old_cpus, |limit| old_cpus.min(limit.0)),
    };
    let memory_bytes = match asked.reserve_memory_bytes {
        Some(request) => request,
        None if instance.kind == InstanceKind::Vm && asked.memory_bytes.is_some() => {
            limits.memory_bytes.unwrap_or(old_memory)
        }
        None => limits.memory_bytes.map_or(old_memory, |limit| old_memory.min(limit)),
    };
    let requests = Requests {
        cpus: Some(MilliCpus(cpus)),
        memory_bytes: Some(memory_bytes),
    };
    check_requests(&requests, limits)?;
    Ok(requests)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> LimitsRequest {
        LimitsRequest {
            cpus: Some(LimitSetting::Value(MilliCpus(1000))),
            memory_bytes: Some(LimitSetting::Value(512 << 20)),
            pids: None,
            reserve_cpus: Some(MilliCpus(100)),
            reserve_memory_bytes: Some(64 << 20),
        }
    }

    fn limits(millicpus: Option<u64>, memory: Option<u64>) -> Limits {
        Limits {
            cpus: millicpus.map(MilliCpus),
            memory_bytes: memory,
            ..Default::default()
        }
    }

    #[test]
    fn defaults_reserve_a_little_under_the_default_ceiling() {
        let requests = resolve_requests(
            &LimitsRequest::default(),
            &defaults(),
            &limits(Some(1000), Some(512 << 20)),
            InstanceKind::Container,
            false,
        )
        .unwrap();
        assert_eq!(requests.cpus, Some(MilliCpus(100)));
        assert_eq!(requests.memory_bytes, Some(64 << 20));
        // A ceiling below the default request holds it down.
        let small = resolve_requests(
            &LimitsRequest::default(),
            &defaults(),
            &limits(Some(50), Some(32 << 20)),
            InstanceKind::Container,
            false,
        )
        .unwrap();
        assert_eq!((small.cpus, small.memory_bytes), (Some(MilliCpus(50)), Some(32 << 20)));
    }

    #[test]
    fn a_limit_alone_is_also_the_request_and_types_reserve_their_size() {
        let asked = LimitsRequest {
            memory_bytes: Some(LimitSetting::Value(256 << 20)),
            ..Default::default()
        };
        let requests = resolve_requests(
            &asked,
            &defaults(),
            &limits(Some(1000), Some(256 << 20)),
            InstanceKind::Container,
            false,
        )
        .unwrap();
        assert_eq!(
            (requests.cpus, requests.memory_bytes),
            (Some(MilliCpus(100)), Some(256 << 20))
        );
        let typed = resolve_requests(
            &LimitsRequest::default(),
            &defaults(),
            &limits(Some(2000), Some(4 << 30)),
            InstanceKind::Container,
            true,
        )
        .unwrap();
        assert_eq!((typed.cpus, typed.memory_bytes), (Some(MilliCpus(2000)), Some(4 << 30)));
        let vm = resolve_requests(
            &LimitsRequest::default(),
            &defaults(),
            &limits(Some(1000), Some(512 << 20)),
            InstanceKind::Vm,
            false,
        )
        .unwrap();
        assert_eq!(vm.memory_bytes, Some(512 << 20));
    }

    #[test]
    fn a_request_above_its_limit_is_refused() {
        let asked = LimitsRequest {
            reserve_cpus: Some(MilliCpus(2000)),
            ..Default::default()
        };
        let error = resolve_requests(
            &asked,
            &defaults(),
            &limits(Some(1000), None),
            InstanceKind::Container,
            false,
        )
        .unwrap_err();
        assert_eq!(error.field.as_deref(), Some("reserve_cpus"));
        assert!(error.message.contains("above the CPU limit 1"), "{}", error.message);
        // Without a ceiling, any request is the user's to make.
        let unlimited = LimitsRequest {
            cpus: Some(LimitSetting::Unlimited),
            reserve_cpus: Some(MilliCpus(2000)),
            ..Default::default()
        };
        assert!(resolve_requests(
            &unlimited,
            &defaults(),
            &limits(None, None),
            InstanceKind::Container,
            false
        )
        .is_ok());
    }
}
