//! The state store: everything berth keeps about instances, images, volumes and networks.
//! One revisioned key-value trait (`StateStore`: reads at a revision, compare-and-swap
//! transactions, watches, leases) with two backends — the embedded SQLite store of one host
//! and etcd for a cluster — and `Store`, the typed records berth's code uses on top of it.

mod compat;
mod etcd;
mod footprints;
pub mod instance;
mod instances;
pub mod keys;
pub mod kv;
mod migrate;
pub mod node;
pub mod records;
mod sqlite;
mod store;

use thiserror::Error;

pub use etcd::{EtcdConfig, EtcdStore, EtcdTls};
pub use footprints::InstanceFootprint;
pub use instance::{InstanceDesired, InstanceStatus};
pub use instances::{InstanceEvent, InstanceWatch, VersionedInstance};
pub use kv::{
    Check, Expect, KeyValue, Lease, LeaseId, Op, RangePage, RangeRequest, Revision, Snapshot, StateStore, Txn,
    WatchEvent, WatchEventKind, WatchStream, MAX_TXN_BYTES, MAX_TXN_OPS, MAX_VALUE_BYTES,
};
pub use node::{NodeFacts, NodeMember, NodePresence};
pub use records::{Listing, Record, Versioned};
pub use sqlite::SqliteStore;
pub use store::{RecordEvent, RecordTxn, RecordWatch, Store};

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("the name '{0}' is already in use by another instance; choose another with --name or remove the other")]
    NameTaken(String),
    #[error("{kind} {key} already exists")]
    AlreadyExists { kind: &'static str, key: String },
    #[error("no such {kind}: {key}")]
    NotFound { kind: &'static str, key: String },
    #[error("'{0}' matches more than one instance; give more of the id")]
    Ambiguous(String),
    /// A compare-and-swap lost: the key is not as the writer read it. Read again and retry.
    #[error("{key} changed since it was read (expected {expected}, found {}); read it again and retry",
        actual.map_or("it absent".to_string(), |r| format!("revision {r}")))]
    Conflict {
        key: String,
        expected: Expect,
        /// Its revision now; `None`: it does not exist.
        actual: Option<Revision>,
    },
    /// The history a watch or a paged read needs is gone: list again.
    #[error("revision {requested} is no longer in the store (history from {compacted} on is kept); list again and watch from there")]
    Compacted { requested: Revision, compacted: Revision },
    #[error("{key} would be {bytes} bytes, more than the store takes ({limit}); make it smaller (fewer or shorter labels, environment variables or arguments)")]
    TooLarge { key: String, bytes: usize, limit: usize },
    #[error("a transaction of {ops} operations is more than the store takes ({limit}); split it")]
    TooManyOps { ops: usize, limit: usize },
    #[error("lease {0} has expired or was revoked; grant a new one (the keys it held are gone)")]
    LeaseNotFound(LeaseId),
    #[error("{0}")]
    InvalidKey(String),
    /// The backend cannot be reached (etcd members down or no quorum).
    #[error("state store unavailable: {0}")]
    Unavailable(String),
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
