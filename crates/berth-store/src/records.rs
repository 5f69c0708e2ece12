//! What berth keeps, as typed records over the key-value interface: each kind says where
//! its records live and which of them carry a cluster-wide unique name. Values are JSON.

use berth_model::image::ImageRecord;
use berth_model::network::Network;
use berth_model::volume::Volume;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::instance::{InstanceDesired, InstanceStatus};
use crate::kv::Revision;
use crate::{keys, StoreError, StoreResult};

/// A kind of record. Its key is `PREFIX + id + SUFFIX`.
pub trait Record: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// What a user calls it, in messages ("instance", "volume").
    const WHAT: &'static str;
    const PREFIX: &'static str;
    const SUFFIX: &'static str = "";
    /// Where the unique-name index of this kind lives, if its records have names apart from
    /// their ids (`NAME_INDEX + name` holds the id, created and deleted with the record).
    const NAME_INDEX: Option<&'static str> = None;

    fn id(&self) -> &str;

    /// The unique name, for kinds with a `NAME_INDEX`.
    fn name(&self) -> Option<&str> {
        None
    }

    fn key_for(id: &str) -> StoreResult<String> {
        Ok(format!(
            "{}{}{}",
            Self::PREFIX,
            keys::component(Self::WHAT, id)?,
            Self::SUFFIX
        ))
    }

    /// The id in a key of this kind; `None` for other keys under the same prefix.
    fn id_in_key(key: &str) -> Option<&str> {
        let id = key.strip_prefix(Self::PREFIX)?.strip_suffix(Self::SUFFIX)?;
        (!id.is_empty() && !id.contains('/')).then_some(id)
    }

    fn name_key(&self) -> StoreResult<Option<String>> {
        match (Self::NAME_INDEX, self.name()) {
            (Some(index), Some(name)) => Ok(Some(format!("{index}{}", keys::component("name", name)?))),
            _ => Ok(None),
        }
    }
}

/// A record and the revision it was last written at (its etcd `mod_revision`): what an
/// update must name to be applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    pub value: T,
    pub revision: Revision,
}

/// Every record of a kind, read at one store revision (watch from `revision + 1` to follow).
#[derive(Debug, Clone, PartialEq)]
pub struct Listing<T> {
    pub items: Vec<Versioned<T>>,
    pub revision: Revision,
}

pub(crate) fn encode<T: Serialize>(value: &T) -> StoreResult<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(crate) fn decode<T: DeserializeOwned>(key: &str, value: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(value).map_err(|e| StoreError::Corrupt(format!("{key}: {e}")))
}

impl Record for InstanceDesired {
    const WHAT: &'static str = "instance";
    const PREFIX: &'static str = keys::INSTANCES;
    const SUFFIX: &'static str = "/spec";
    const NAME_INDEX: Option<&'static str> = Some(keys::INSTANCE_NAMES);
    fn id(&self) -> &str {
        &self.id
    }
    fn name(&self) -> Option<&str> {
        Some(&self.name)
    }
}

impl Record for InstanceStatus {
    const WHAT: &'static str = "instance";
    const PREFIX: &'static str = keys::INSTANCES;
    const SUFFIX: &'static str = "/status";
    fn id(&self) -> &str {
        &self.id
    }
}

impl Record for ImageRecord {
    const WHAT: &'static str = "image";
    const PREFIX: &'static str = keys::IMAGES;
    fn id(&self) -> &str {
        &self.id
    }
}

impl Record for Volume {
    const WHAT: &'static str = "volume";
    const PREFIX: &'static str = keys::VOLUMES;
    fn id(&self) -> &str {
        &self.name
    }
}

impl Record for Network {
    const WHAT: &'static str = "network";
    const PREFIX: &'static str = keys::NETWORKS;
    fn id(&self) -> &str {
        &self.name
    }
}

impl Record for berth_model::stack::StackRecord {
    const WHAT: &'static str = "stack";
    const PREFIX: &'static str = keys::STACKS;
    fn id(&self) -> &str {
        &self.name
    }
}

impl Record for berth_model::trust::TrustedClient {
    const WHAT: &'static str = "trusted client";
    const PREFIX: &'static str = keys::TRUSTED_CLIENTS;
    const NAME_INDEX: Option<&'static str> = Some(keys::TRUSTED_CLIENT_NAMES);
    fn id(&self) -> &str {
        &self.fingerprint
    }
    fn name(&self) -> Option<&str> {
        Some(&self.name)
    }
}

impl Record for berth_model::trust::JoinTokenRecord {
    const WHAT: &'static str = "join token";
    const PREFIX: &'static str = keys::JOIN_TOKENS;
    fn id(&self) -> &str {
        &self.secret_sha256
    }
}

impl Record for berth_model::project::ProjectResource {
    const WHAT: &'static str = "project resource";
    const PREFIX: &'static str = keys::PROJECT_RESOURCES;
    fn id(&self) -> &str {
        &self.id
    }
}

impl Record for berth_model::project::Project {
    const WHAT: &'static str = "project";
    const PREFIX: &'static str = keys::PROJECTS;
    fn id(&self) -> &str {
        &self.name
    }
}
