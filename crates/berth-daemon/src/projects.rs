//! Projects: records with quotas in the store (the cluster's in a cluster), and the quota
//! check at create. An instance is in a project by its `berth.project` label.

use berth_model::instance::Limits;
use berth_model::project::{check_project_name, Project, ProjectResource, ResourceKind, PROJECT_LABEL};
use berth_model::quantity::ByteSize;
use berth_model::Instance;
use std::time::Duration;

use berth_store::kv::{Expect, LeaseId, Txn};
use berth_store::StoreError;
use chrono::Utc;

use crate::engine::Engine;
use crate::error::{EngineError, EngineResult};

/// How long a project's lock outlives a node that died holding it.
const PROJECT_LOCK_TTL: Duration = Duration::from_secs(10);
/// How long a create waits for another node's check of the same project.
const PROJECT_LOCK_WAIT: Duration = Duration::from_secs(15);

/// A project's quota lock, held from the quota check until the instance is recorded: in a
/// cluster two nodes creating in one project at the same moment take turns, so both cannot
/// pass a check that has room for one. A key created only if absent, on a lease (a node that
/// dies holding it frees it within the TTL); released when dropped.
pub struct ProjectLock {
    store: berth_store::Store,
    lease: LeaseId,
}

impl Drop for ProjectLock {
    fn drop(&mut self) {
        let store = self.store.clone();
        let lease = self.lease;
        tokio::spawn(async move {
            if let Err(e) = store.kv().revoke(lease).await {
                tracing::debug!(error = %e, "releasing a project lock (its lease expires anyway)");
            }
        });
    }
}

/// What an instance counts against its project's disk quota.
pub(crate) fn disk_of(instance: &Instance) -> u64 {
    instance.spec.disk_bytes.unwrap_or(0) + instance.spec.instance_storage_bytes.iter().sum::<u64>()
}

impl Engine {
    pub async fn create_project(&self, mut project: Project) -> EngineResult<Project> {
        check_project_name(&project.name).map_err(|m| EngineError::invalid("name", m))?;
        if project.quotas.cpus.is_some_and(|c| !(c.is_finite() && c >= 0.0)) {
            return Err(EngineError::invalid("quotas.cpus", "give a number of CPUs, 0 or more"));
        }
        if project.quotas.instances.is_some_and(|n| n > i32::MAX as u32) {
            return Err(EngineError::invalid("quotas.instances", "give at most 2147483647"));
        }
        let too_big = |value: Option<u64>| value.is_some_and(|v| v > i64::MAX as u64);
        if too_big(project.quotas.memory_bytes) {
            return Err(EngineError::invalid("quotas.memory_bytes", "give at most 8 EiB"));
        }
        if too_big(project.quotas.disk_bytes) {
            return Err(EngineError::invalid("quotas.disk_bytes", "give at most 8 EiB"));
        }
        project.created_at = Utc::now();
        match self.store.create(&project).await {
            Ok(_) => Ok(project),
            Err(StoreError::AlreadyExists { .. }) => Err(EngineError::conflict(format!(
                "project {} exists; `berth project ls` lists them",
                project.name
            ))),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn projects(&self) -> EngineResult<Vec<Project>> {
        let listing = self.store.list::<Project>().await?;
        Ok(listing.items.into_iter().map(|item| item.value).collect())
    }

    pub async fn project(&self, name: &str) -> EngineResult<Project> {
        match self.store.try_get::<Project>(name).await? {
            Some(found) => Ok(found.value),
            None => Err(EngineError::not_found(format!(
                "no project {name}; `berth project create {name}` makes it"
            ))),
        }
    }

    /// Removes an empty project.
    pub async fn remove_project(&self, name: &str) -> EngineResult<()> {
        self.project(name).await?;
        let owned = self.project_resources(name).await?;
        if let Some(kept) = owned.iter().find(|r| r.kind != ResourceKind::Image) {
            return Err(EngineError::conflict(format!(
                "project {name} still has {} {}; remove it first",
                kept.kind.as_str(),
                kept.name
            )));
        }
        let members = self.project_instances(name).await?;
        if !members.is_empty() {
            return Err(EngineError::conflict(format!(
                "project {name} still has {} instance(s) ({}); remove them first",
                members.len(),
                members
                    .iter()
                    .take(5)
                    .map(|i| i.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        // Its images stay (root's, as everything is); only the project's claim on them goes.
        for image in owned {
            self.disown(name, image.kind, &image.name).await?;
        }
        self.store.remove::<Project>(name).await?;
        Ok(())
    }

    /// The volumes, networks and images `project` owns.
    pub async fn project_resources(&self, project: &str) -> EngineResult<Vec<ProjectResource>> {
        let listing = self.store.list::<ProjectResource>().await?;
        Ok(listing
            .items
            .into_iter()
            .map(|item| item.value)
            .filter(|r| r.project == project)
            .collect())
    }

    /// Whether `project` owns the `kind` called `name`.
    pub async fn project_owns(&self, project: &str, kind: ResourceKind, name: &str) -> EngineResult<bool> {
        Ok(self
            .store
            .try_get::<ProjectResource>(&ProjectResource::id_of(project, kind, name))
            .await?
            .is_some())
    }

    /// Records that `project` owns the `kind` called `name` (made or pulled by its client).
    pub async fn own(&self, project: &str, kind: ResourceKind, name: &str) -> EngineResult<()> {
        match self.store.create(&ProjectResource::new(project, kind, name)).await {
            Ok(_) | Err(StoreError::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn disown(&self, project: &str, kind: ResourceKind, name: &str) -> EngineResult<()> {
        match self
            .store
            .remove::<ProjectResource>(&ProjectResource::id_of(project, kind, name))
            .await
        {
            Ok(()) | Err(StoreError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// A volume, network or image is gone: no project owns it any more (so that another
    /// made later under the same name is not theirs).
    pub async fn forget_owners(&self, kind: ResourceKind, name: &str) -> EngineResult<()> {
        let listing = self.store.list::<ProjectResource>().await?;
        for owned in listing.items.into_iter().map(|item| item.value) {
            if owned.kind == kind && owned.name == name {
                self.disown(&owned.project, kind, name).await?;
            }
        }
        Ok(())
    }

    pub async fn project_instances(&self, name: &str) -> EngineResult<Vec<Instance>> {
        let mut instances = self.list(true).await?;
        instances.retain(|i| i.spec.labels.get(PROJECT_LABEL).map(String::as_str) == Some(name));
        Ok(instances)
    }

    /// Takes `project`'s quota lock (waiting for another node's turn).
    pub async fn lock_project(&self, project: &str) -> EngineResult<ProjectLock> {
        let key = format!(
            "{}{}",
            berth_store::keys::PROJECT_LOCKS,
            berth_store::keys::component("project", project)?
        );
        let lease = self.store.kv().grant_lease(PROJECT_LOCK_TTL).await?.id;
        let lock = ProjectLock {
            store: self.store.clone(),
            lease,
        };
        let deadline = tokio::time::Instant::now() + PROJECT_LOCK_WAIT;
        loop {
            let txn = Txn::new().check(&key, Expect::Absent).put_with_lease(
                &key,
                self.node.clone().into_bytes(),
                Some(lease),
            );
            match self.store.kv().txn(txn).await {
                Ok(_) => return Ok(lock),
                Err(StoreError::Conflict { .. }) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(StoreError::Conflict { .. }) => {
                    return Err(EngineError::conflict(format!(
                        "project {project} is busy with another create; try again"
                    )))
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Refuses a new instance of `project` with `limits` and `disk` that would take the
    /// project past a quota, naming it. `replacing`: the instance whose limits change (an
    /// update), counted with these values instead of its own.
    pub async fn check_project_quota(
        &self,
        project: &str,
        limits: &Limits,
        disk: u64,
        replacing: Option<&str>,
    ) -> EngineResult<()> {
        let quotas = self
            .project(project)
            .await
            .map_err(|mut e| {
                e.field = Some("labels".into());
                e
            })?
            .quotas;
        let mut members = self.project_instances(project).await?;
        members.retain(|i| Some(i.id.as_str()) != replacing);
        let over = |what: &str, used: String, quota: String| {
            Err(EngineError::conflict(format!(
                "project {project}'s {what} quota is {quota} and its instances would use {used}; remove some or raise the quota"
            )))
        };
        if let Some(quota) = quotas.instances.filter(|_| replacing.is_none()) {
            if members.len() as u64 + 1 > quota as u64 {
                return over("instances", (members.len() + 1).to_string(), quota.to_string());
            }
        }
        if let Some(quota) = quotas.cpus {
            let used: f64 = members
                .iter()
                .map(|i| i.limits.cpus.map_or(0.0, |c| c.0 as f64 / 1000.0))
                .sum::<f64>()
                + limits.cpus.map_or(0.0, |c| c.0 as f64 / 1000.0);
            if used > quota + 1e-9 {
                return over("CPU", format!("{used:.2}"), format!("{quota}"));
            }
        }
        if let Some(quota) = quotas.memory_bytes {
            let used: u64 =
                members.iter().filter_map(|i| i.limits.memory_bytes).sum::<u64>() + limits.memory_bytes.unwrap_or(0);
            if used > quota {
                return over("memory", ByteSize(used).to_string(), ByteSize(quota).to_string());
            }
        }
        if let Some(quota) = quotas.disk_bytes {
            let used: u64 = members.iter().map(disk_of).sum::<u64>() + disk;
            if used > quota {
                return over("disk", ByteSize(used).to_string(), ByteSize(quota).to_string());
            }
        }
        Ok(())
    }
}
