//! An instance as two records: what is desired (spec, limits, requests, placement — written
//! by the API and the scheduler) and what is observed (state, pids, exit, address — written
//! only by the node that runs it), so neither overwrites the other's writes. The API still
//! shows one `Instance`, composed from both.

use berth_model::instance::{InstanceKind, InstanceSpec, InstanceState, Limits, Requests, VmDetails};
use berth_model::network::InstanceAddress;
use berth_model::Instance;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The desired part, at `/berth/v1/instances/<id>/spec`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceDesired {
    pub id: String,
    /// Unique in the store (`/berth/v1/names/instances/<name>`); fixed at create.
    pub name: String,
    pub kind: InstanceKind,
    pub image: String,
    pub limits: Limits,
    #[serde(default)]
    pub requests: Requests,
    #[serde(default)]
    pub instance_type: Option<String>,
    pub default_limits: Vec<String>,
    pub spec: InstanceSpec,
    /// Placement: the node that is to run it.
    pub node: String,
    pub created_at: DateTime<Utc>,
    /// A VM's configuration (machine, vCPUs, memory, disks, snapshots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<VmDetails>,
    /// Set by the scheduler when it moves the instance off a node that went down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rescheduled: Option<berth_model::instance::Rescheduled>,
}

/// The observed part, at `/berth/v1/instances/<id>/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceStatus {
    pub id: String,
    pub state: InstanceState,
    pub exit_code: Option<i32>,
    pub oom_killed: bool,
    pub pid: Option<u32>,
    pub supervisor_pid: Option<u32>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub restart_count: u32,
    pub error: Option<String>,
    #[serde(default)]
    pub address: Option<InstanceAddress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<berth_model::health::Health>,
}

impl InstanceStatus {
    /// What a node reports for an instance whose status record is missing: the instance
    /// cannot be running as far as anyone knows.
    pub fn missing(id: &str) -> InstanceStatus {
        InstanceStatus {
            id: id.to_string(),
            state: InstanceState::Dead,
            exit_code: None,
            oom_killed: false,
            pid: None,
            supervisor_pid: None,
            started_at: None,
            finished_at: None,
            restart_count: 0,
            error: Some("the instance's status record is missing from the store".into()),
            address: None,
            health: None,
        }
    }
}

/// Splits an instance into the records that hold it. (Destructured, so a new field of
/// `Instance` does not compile until it is given to one side.)
pub fn split(instance: &Instance) -> (InstanceDesired, InstanceStatus) {
    let Instance {
        id,
        name,
        kind,
        image,
        state,
        exit_code,
        oom_killed,
        pid,
        supervisor_pid,
        limits,
        requests,
        instance_type,
        default_limits,
        spec,
        node,
        created_at,
        started_at,
        finished_at,
        restart_count,
        error,
        vm,
        address,
        rescheduled,
        health,
    } = instance.clone();
    (
        InstanceDesired {
            id: id.clone(),
            name,
            kind,
            image,
            limits,
            requests,
            instance_type,
            default_limits,
            spec,
            node,
            created_at,
            vm,
            rescheduled,
        },
        InstanceStatus {
            id,
            state,
            exit_code,
            oom_killed,
            pid,
            supervisor_pid,
            started_at,
            finished_at,
            restart_count,
            error,
            address,
            health,
        },
    )
}

/// The instance as the API shows it.
pub fn compose(desired: InstanceDesired, status: InstanceStatus) -> Instance {
    Instance {
        id: desired.id,
        name: desired.name,
        kind: desired.kind,
        image: desired.image,
        state: status.state,
        exit_code: status.exit_code,
        oom_killed: status.oom_killed,
        pid: status.pid,
        supervisor_pid: status.supervisor_pid,
        limits: desired.limits,
        requests: desired.requests,
        instance_type: desired.instance_type,
        default_limits: desired.default_limits,
        spec: desired.spec,
        node: desired.node,
        created_at: desired.created_at,
        started_at: status.started_at,
        finished_at: status.finished_at,
        restart_count: status.restart_count,
        error: status.error,
        vm: desired.vm,
        address: status.address,
        rescheduled: desired.rescheduled,
        health: status.health,
    }
}
