//! `berth snapshot`: disk snapshots of VMs (see `berth_vm::snapshot`), recorded in the VM's
//! details so `inspect` and `snapshot ls` list them.

use berth_model::driver::DriverError;
use berth_model::instance::VmSnapshot;
use berth_model::{Instance, InstanceKind};
use chrono::Utc;

use crate::engine::Engine;
use crate::error::{EngineError, EngineResult};

fn validate_snapshot_name(name: &str) -> EngineResult<()> {
    berth_model::instance::validate_object_name("snapshot", name).map_err(|m| EngineError::invalid("name", m))
}

/// A disk that cannot be snapshotted as asked is a conflict with the VM's state, not a fault.
fn vm_error(e: berth_vm::VmError) -> EngineError {
    match e {
        berth_vm::VmError::Disk(message) => EngineError::conflict(message),
        other => DriverError::from(other).into(),
    }
}

impl Engine {
    /// The VM behind `key`, locked against other life-cycle changes and read fresh from the
    /// store; a clear refusal for a container.
    async fn locked_vm(&self, key: &str) -> EngineResult<(tokio::sync::OwnedMutexGuard<()>, Instance)> {
        let found = self.find(key).await?;
        if found.kind != InstanceKind::Vm {
            return Err(EngineError::conflict_in(
                "instance",
                format!(
                    "{} is a container; snapshots are of VM disks (keep container data in a volume and use `berth volume snapshot`)",
                    found.name
                ),
            ));
        }
        let guard = self.lock(&found.id).await;
        let instance = self.store.get_instance(&found.id).await?;
        Ok((guard, instance))
    }

    pub async fn snapshot_instance(&self, key: &str, name: &str) -> EngineResult<Instance> {
        validate_snapshot_name(name)?;
        let (_guard, mut instance) = self.locked_vm(key).await?;
        let live = instance.state.is_active();
        let details = instance
            .vm
            .as_mut()
            .ok_or_else(|| EngineError::internal("VM details are missing"))?;
        if details.snapshots.iter().any(|s| s.name == name) {
            return Err(EngineError::conflict(format!(
                "{} already has a snapshot {name}",
                instance.name
            )));
        }
        berth_vm::snapshot::create(details, name, live)
            .await
            .map_err(vm_error)?;
        details.snapshots.push(VmSnapshot {
            name: name.to_string(),
            created_at: Utc::now(),
            live,
        });
        self.save(&instance).await?;
        self.emit(&instance, "snapshot", None);
        Ok(instance)
    }

    pub async fn restore_instance(&self, key: &str, name: &str) -> EngineResult<Instance> {
        let (_guard, instance) = self.locked_vm(key).await?;
        if instance.state.is_active() {
            return Err(EngineError::conflict(format!(
                "{} is {}; stop it first (`berth stop {}`): a snapshot is restored onto stopped disks",
                instance.name, instance.state, instance.name
            )));
        }
        let details = instance
            .vm
            .as_ref()
            .ok_or_else(|| EngineError::internal("VM details are missing"))?;
        if !details.snapshots.iter().any(|s| s.name == name) {
            return Err(EngineError::not_found(format!(
                "{} has no snapshot {name}; `berth snapshot ls {}` lists them",
                instance.name, instance.name
            )));
        }
        berth_vm::snapshot::revert(details, name).await.map_err(vm_error)?;
        self.emit(&instance, "restore", None);
        Ok(instance)
    }

    pub async fn delete_instance_snapshot(&self, key: &str, name: &str) -> EngineResult<Instance> {
        let (_guard, mut instance) = self.locked_vm(key).await?;
        let live = instance.state.is_active();
        let details = instance
            .vm
            .as_mut()
            .ok_or_else(|| EngineError::internal("VM details are missing"))?;
        if !details.snapshots.iter().any(|s| s.name == name) {
            return Err(EngineError::not_found(format!(
                "{} has no snapshot {name}",
                instance.name
            )));
        }
        berth_vm::snapshot::delete(details, name, live)
            .await
            .map_err(vm_error)?;
        details.snapshots.retain(|s| s.name != name);
        self.save(&instance).await?;
        Ok(instance)
    }
}
