//! The revisioned key-value interface both backends implement (SQLite on one host, etcd for
//! a cluster): reads that say which store revision they saw, compare-and-swap transactions,
//! watches that resume from a revision, and leases that take their keys with them.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::{StoreError, StoreResult};

/// A point in the store's history. Every committed transaction advances it by one; a key's
/// `mod_revision` is the revision of the transaction that last wrote it (etcd's meaning).
/// 0 is never a revision of a stored key, so "expected revision 0" means "absent".
pub type Revision = u64;

/// etcd's default `--max-txn-ops`: at most this many checks and this many operations in one
/// transaction, on both backends, so nothing that works on one host fails in a cluster.
pub const MAX_TXN_OPS: usize = 128;

/// The largest value berth stores: far below etcd's 1.5 MiB request limit, so that a
/// transaction of a few records still fits in one request.
pub const MAX_VALUE_BYTES: usize = 512 * 1024;

/// The most one transaction may carry (keys and values together), under etcd's 1.5 MiB.
pub const MAX_TXN_BYTES: usize = 1024 * 1024;

/// A lease: keys put with it are deleted when it expires or is revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LeaseId(pub i64);

impl std::fmt::Display for LeaseId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// A granted lease and the time-to-live the store gave it (etcd may raise a short TTL to its
/// minimum).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub id: LeaseId,
    pub ttl: Duration,
}

/// A stored key with its value and where in the history it was made and last changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    pub create_revision: Revision,
    pub mod_revision: Revision,
    pub lease: Option<LeaseId>,
}

/// What a transaction requires of a key before it applies its operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// The key does not exist (etcd: `ModRevision(key) == 0`).
    Absent,
    /// The key exists.
    Present,
    /// The key was last written at exactly this revision (compare-and-swap).
    Revision(Revision),
    /// The key holds exactly this value.
    Value(Vec<u8>),
}

impl std::fmt::Display for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expect::Absent => f.write_str("absent"),
            Expect::Present => f.write_str("present"),
            Expect::Revision(revision) => write!(f, "at revision {revision}"),
            Expect::Value(_) => f.write_str("holding the expected value"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub key: String,
    pub expect: Expect,
}

impl Check {
    /// Whether a key in this state (`None`: absent) meets the check.
    pub fn holds(&self, current: Option<&KeyValue>) -> bool {
        match (&self.expect, current) {
            (Expect::Absent, current) => current.is_none(),
            (Expect::Present, current) => current.is_some(),
            (Expect::Revision(0), current) => current.is_none(),
            (Expect::Revision(revision), Some(kv)) => kv.mod_revision == *revision,
            (Expect::Value(value), Some(kv)) => kv.value == *value,
            (_, None) => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put {
        key: String,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    },
    Delete {
        key: String,
    },
}

impl Op {
    pub fn key(&self) -> &str {
        match self {
            Op::Put { key, .. } | Op::Delete { key } => key,
        }
    }
}

/// Checks, then operations: all operations apply at one new revision if every check holds,
/// none otherwise (`StoreError::Conflict` names the first check that failed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    pub checks: Vec<Check>,
    pub ops: Vec<Op>,
}

impl Txn {
    pub fn new() -> Self {
        Txn::default()
    }

    pub fn check(mut self, key: impl Into<String>, expect: Expect) -> Self {
        self.checks.push(Check {
            key: key.into(),
            expect,
        });
        self
    }

    pub fn put(self, key: impl Into<String>, value: Vec<u8>) -> Self {
        self.put_with_lease(key, value, None)
    }

    pub fn put_with_lease(mut self, key: impl Into<String>, value: Vec<u8>, lease: Option<LeaseId>) -> Self {
        self.ops.push(Op::Put {
            key: key.into(),
            value,
            lease,
        });
        self
    }

    pub fn delete(mut self, key: impl Into<String>) -> Self {
        self.ops.push(Op::Delete { key: key.into() });
        self
    }

    /// Appends another transaction's checks and operations (to build one from parts).
    pub fn merge(mut self, other: Txn) -> Self {
        self.checks.extend(other.checks);
        self.ops.extend(other.ops);
        self
    }

    /// The limits etcd enforces, checked the same way on both backends and before anything
    /// is sent, so the error names the record instead of a gRPC status.
    pub fn validate(&self) -> StoreResult<()> {
        if self.checks.len() > MAX_TXN_OPS || self.ops.len() > MAX_TXN_OPS {
            return Err(StoreError::TooManyOps {
                ops: self.checks.len().max(self.ops.len()),
                limit: MAX_TXN_OPS,
            });
        }
        let mut total = 0;
        let mut keys = std::collections::HashSet::new();
        for check in &self.checks {
            crate::keys::validate(&check.key)?;
        }
        for op in &self.ops {
            crate::keys::validate(op.key())?;
            // etcd refuses a transaction that writes one key twice; say so the same way here.
            if !keys.insert(op.key()) {
                return Err(StoreError::Backend(format!(
                    "a transaction writes {} twice; merge the two writes",
                    op.key()
                )));
            }
            total += op.key().len();
            if let Op::Put { key, value, .. } = op {
                if value.len() > MAX_VALUE_BYTES {
                    return Err(StoreError::TooLarge {
                        key: key.clone(),
                        bytes: value.len(),
                        limit: MAX_VALUE_BYTES,
                    });
                }
                total += value.len();
            }
        }
        if total > MAX_TXN_BYTES {
            return Err(StoreError::TooLarge {
                key: format!("a transaction of {} writes", self.ops.len()),
                bytes: total,
                limit: MAX_TXN_BYTES,
            });
        }
        Ok(())
    }
}

/// One page of the keys under a prefix, in key order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeRequest {
    pub prefix: String,
    /// Continue after this key (the last key of the previous page).
    pub start_after: Option<String>,
    /// At most this many keys; 0 means all.
    pub limit: usize,
    /// Read as of this revision (to page through one consistent snapshot); the latest when
    /// `None`. A revision the store no longer has is `StoreError::Compacted`.
    pub revision: Option<Revision>,
    /// Keys and revisions only: every value comes back empty (etcd's `keys_only`), for a
    /// caller that decodes only what changed since it last looked.
    pub keys_only: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangePage {
    pub kvs: Vec<KeyValue>,
    /// More keys follow the last one of this page.
    pub more: bool,
    /// The store revision this page was read at.
    pub revision: Revision,
}

/// The keys asked for, read together at one revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub kvs: Vec<Option<KeyValue>>,
    pub revision: Revision,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchEventKind {
    Put,
    Delete,
}

/// A change to one key; the events of a stream come in revision order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    pub kind: WatchEventKind,
    pub key: String,
    /// The new value (empty for a delete).
    pub value: Vec<u8>,
    /// The revision of the change.
    pub revision: Revision,
}

/// The changes under a prefix, from the revision the watch began at. It ends with
/// `Err(StoreError::Compacted)` when the store no longer has the history it needs (the
/// watcher then lists again and watches from that listing's revision + 1), and with another
/// error when the store is gone. Dropping it cancels the watch.
pub struct WatchStream {
    receiver: mpsc::Receiver<StoreResult<WatchEvent>>,
}

impl WatchStream {
    /// A stream fed by a backend's task through `sender`; the task stops when the receiver
    /// is dropped (its sends fail).
    pub fn channel() -> (mpsc::Sender<StoreResult<WatchEvent>>, WatchStream) {
        let (sender, receiver) = mpsc::channel(256);
        (sender, WatchStream { receiver })
    }

    /// The next change; `None` after the stream ended.
    pub async fn next(&mut self) -> Option<StoreResult<WatchEvent>> {
        self.receiver.recv().await
    }
}

/// The one store interface: the embedded SQLite store and etcd implement it, and everything
/// berth keeps (`Store`'s typed records) is built on it.
#[async_trait]
pub trait StateStore: Send + Sync {
    /// Which backend this is and where, for `berth info` and logs.
    fn describe(&self) -> String;

    /// Whether other nodes read and write this store too (etcd) or it is this node's own.
    fn is_shared(&self) -> bool;

    /// How many keys a listing asks for per page: etcd's answers are bounded (gRPC's 4 MiB
    /// messages), SQLite's are not, and one page of everything is one consistent read
    /// there (0: all in one page).
    fn page_keys(&self) -> usize;

    /// Reads these keys together at one revision.
    async fn get(&self, keys: &[String]) -> StoreResult<Snapshot>;

    /// One page of the keys under a prefix.
    async fn range(&self, request: RangeRequest) -> StoreResult<RangePage>;

    /// Applies `txn` atomically and returns the revision it committed at. A failed check is
    /// `StoreError::Conflict` and nothing is written.
    async fn txn(&self, txn: Txn) -> StoreResult<Revision>;

    /// What changed under `prefix` after revision `after`, in order, and the store's revision
    /// they bring it to: for a caller that keeps its own copy of a prefix up to date. `None`
    /// when the backend cannot answer in one cheap read or no longer has that history: list
    /// instead. (SQLite answers from its change table; etcd would need a watch, so it lists.)
    async fn changes_since(&self, prefix: &str, after: Revision) -> StoreResult<Option<(Vec<WatchEvent>, Revision)>> {
        let _ = (prefix, after);
        Ok(None)
    }

    /// Changes under `prefix` from revision `from` on (inclusive: pass a listing's revision
    /// + 1 to get exactly what happened after it; 0: from now on, the cluster's now).
    async fn watch(&self, prefix: &str, from: Revision) -> StoreResult<WatchStream>;

    /// Forgets history before `revision`: watches from before it become `Compacted`.
    async fn compact(&self, revision: Revision) -> StoreResult<()>;

    async fn grant_lease(&self, ttl: Duration) -> StoreResult<Lease>;

    /// Renews a lease for another TTL; `StoreError::LeaseNotFound` once it has expired (its
    /// keys are gone then).
    async fn keep_alive(&self, lease: LeaseId) -> StoreResult<()>;

    /// Ends a lease now, deleting its keys.
    async fn revoke(&self, lease: LeaseId) -> StoreResult<()>;

    /// The members of a replicated backend ("name at http://HOST:PORT"), for `berth info`;
    /// empty for a local one.
    async fn members(&self) -> StoreResult<Vec<String>> {
        Ok(Vec::new())
    }
}
