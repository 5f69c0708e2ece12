//! The state store: where a node keeps its instances and images. One trait, so the embedded
//! SQLite store (one host, no services) and an etcd store (a cluster) are interchangeable;
//! records are whole JSON documents keyed by id, which maps to both.

mod sqlite;

use async_trait::async_trait;
use berth_model::image::ImageRecord;
use berth_model::network::Network;
use berth_model::volume::Volume;
use berth_model::Instance;
use thiserror::Error;

pub use sqlite::SqliteStore;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("the name '{0}' is already in use by another instance; choose another with --name or remove the other")]
    NameTaken(String),
    #[error("no such {kind}: {key}")]
    NotFound { kind: &'static str, key: String },
    #[error("'{0}' matches more than one instance; give more of the id")]
    Ambiguous(String),
    #[error("state store: {0}")]
    Backend(String),
    #[error("state store record is corrupt: {0}")]
    Corrupt(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        StoreError::Backend(err.to_string())
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

#[async_trait]
pub trait StateStore: Send + Sync {
    /// Which backend this is, for `berth info`.
    fn describe(&self) -> String;

    /// Inserts a new instance; fails with `NameTaken` if the name is in use.
    async fn insert_instance(&self, instance: &Instance) -> StoreResult<()>;
    /// Replaces an existing instance record.
    async fn update_instance(&self, instance: &Instance) -> StoreResult<()>;
    async fn get_instance(&self, id: &str) -> StoreResult<Instance>;
    /// Finds by full id, name, or unique id prefix (as Docker does).
    async fn find_instance(&self, key: &str) -> StoreResult<Instance>;
    async fn list_instances(&self) -> StoreResult<Vec<Instance>>;
    async fn delete_instance(&self, id: &str) -> StoreResult<()>;

    async fn put_image(&self, image: &ImageRecord) -> StoreResult<()>;
    async fn get_image(&self, id: &str) -> StoreResult<ImageRecord>;
    async fn list_images(&self) -> StoreResult<Vec<ImageRecord>>;
    async fn delete_image(&self, id: &str) -> StoreResult<()>;

    async fn put_network(&self, network: &Network) -> StoreResult<()>;
    async fn list_networks(&self) -> StoreResult<Vec<Network>>;
    async fn delete_network(&self, name: &str) -> StoreResult<()>;

    async fn put_volume(&self, volume: &Volume) -> StoreResult<()>;
    async fn get_volume(&self, name: &str) -> StoreResult<Volume>;
    async fn list_volumes(&self) -> StoreResult<Vec<Volume>>;
    async fn delete_volume(&self, name: &str) -> StoreResult<()>;

    /// A small key/value space for node-level facts (node id, schema version).
    async fn get_meta(&self, key: &str) -> StoreResult<Option<String>>;
    async fn set_meta(&self, key: &str, value: &str) -> StoreResult<()>;
}
