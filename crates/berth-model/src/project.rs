//! Projects (Incus projects, Kubernetes namespaces): a named group of instances with quotas.
//! An instance belongs to a project through its `berth.project` label; a client trusted for
//! a project (`berth trust add NAME --project P`) sees and changes only that project's
//! instances and is refused what reaches the host (bind mounts, the host's network, devices,
//! lifted confinement).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The label that puts an instance in a project.
pub const PROJECT_LABEL: &str = "berth.project";

/// What a project's instances may hold together; `None`: no bound.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectQuotas {
    #[serde(default)]
    pub instances: Option<u32>,
    /// The sum of the instances' CPU limits.
    #[serde(default)]
    #[schema(minimum = 0.0)]
    pub cpus: Option<f64>,
    /// The sum of the instances' memory limits.
    #[serde(default)]
    pub memory_bytes: Option<u64>,
    /// The sum of the instances' writable-layer and instance-store disk sizes.
    #[serde(default)]
    pub disk_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Project {
    #[schema(pattern = "^[a-z0-9][a-z0-9-]{0,31}$")]
    pub name: String,
    #[serde(default)]
    pub quotas: ProjectQuotas,
    #[serde(default = "Utc::now")]
    pub created_at: DateTime<Utc>,
}

/// Whether `name` may name a project.
pub fn check_project_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "'{}': a project name is 1-32 lower-case letters, digits or '-', starting with a letter or digit",
            name.escape_default()
        ))
    }
}

/// What a project's client may own besides instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ResourceKind {
    Volume,
    Network,
    Image,
}

impl ResourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Volume => "volume",
            ResourceKind::Network => "network",
            ResourceKind::Image => "image",
        }
    }
}

/// A volume or network a project's client made, or an image it pulled: the project's to
/// see and change. Volumes and networks belong to one project; an image (content shared by
/// digest) to every project that pulled it. Root sees everything, as on the socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectResource {
    /// `kind:project:name`: one record per project and thing.
    pub id: String,
    pub project: String,
    pub kind: ResourceKind,
    /// The volume's or network's name, or the image's id.
    pub name: String,
    pub created_at: DateTime<Utc>,
}

impl ProjectResource {
    pub fn new(project: &str, kind: ResourceKind, name: &str) -> ProjectResource {
        ProjectResource {
            id: ProjectResource::id_of(project, kind, name),
            project: project.to_string(),
            kind,
            name: name.to_string(),
            created_at: Utc::now(),
        }
    }

    pub fn id_of(project: &str, kind: ResourceKind, name: &str) -> String {
        format!("{}:{project}:{name}", kind.as_str())
    }
}
