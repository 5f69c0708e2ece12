//! Projects: records with quotas in the store (the cluster's in a cluster), and the quota
//! check at create. An instance is in a project by its `berth.project` label.

use berth_model::instance::Limits;
use berth_model::project::{check_project_name, Project, PROJECT_LABEL};
use berth_model::quantity::ByteSize;
use berth_model::Instance;
use berth_store::StoreError;
use chrono::Utc;

use crate::engine::Engine;
use crate::error::{EngineError, EngineResult};

/// What an instance counts against its project's disk quota.
fn disk_of(instance: &Instance) -> u64 {
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
        self.store.remove::<Project>(name).await?;
        Ok(())
    }

    pub async fn project_instances(&self, name: &str) -> EngineResult<Vec<Instance>> {
        let mut instances = self.list(true).await?;
        instances.retain(|i| i.spec.labels.get(PROJECT_LABEL).map(String::as_str) == Some(name));
        Ok(instances)
    }

    /// Refuses a new instance of `project` with `limits` and `disk` that would take the
    /// project past a quota, naming it.
    pub async fn check_project_quota(&self, project: &str, limits: &Limits, disk: u64) -> EngineResult<()> {
        let quotas = self
            .project(project)
            .await
            .map_err(|mut e| {
                e.field = Some("labels".into());
                e
            })?
            .quotas;
        let members = self.project_instances(project).await?;
        let over = |what: &str, used: String, quota: String| {
            Err(EngineError::conflict(format!(
                "project {project}'s {what} quota is {quota} and its instances would use {used}; remove some or raise the quota"
            )))
        };
        if let Some(quota) = quotas.instances {
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
