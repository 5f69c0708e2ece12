//! `Store`: typed records over any `StateStore` — create (fails if it exists), update and
//! delete as compare-and-swap on the revision a read returned, lists read at one revision
//! (paged, as etcd needs), watches from a revision, and transactions over several records.

use std::marker::PhantomData;
use std::sync::Arc;

use crate::footprints::FootprintCache;
use crate::kv::{Expect, KeyValue, LeaseId, RangeRequest, Revision, StateStore, Txn, WatchEventKind, WatchStream};
use crate::records::{decode, encode, Listing, Record, Versioned};
use crate::{StoreError, StoreResult};

/// A listing restarts when its snapshot is compacted away under it; after this many tries
/// the store is changing faster than it can be read, which is an error worth seeing.
pub(crate) const LIST_ATTEMPTS: usize = 5;

/// berth's state, typed. Cheap to clone (one shared backend).
#[derive(Clone)]
pub struct Store {
    kv: Arc<dyn StateStore>,
    /// What admission last decoded of each instance record, by key and revision.
    pub(crate) footprints: Arc<FootprintCache>,
}

impl Store {
    pub fn new(kv: Arc<dyn StateStore>) -> Store {
        Store {
            kv,
            footprints: Arc::default(),
        }
    }

    /// The key-value interface underneath, for leases and hand-built transactions.
    pub fn kv(&self) -> &dyn StateStore {
        self.kv.as_ref()
    }

    pub fn describe(&self) -> String {
        self.kv.describe()
    }

    pub fn is_shared(&self) -> bool {
        self.kv.is_shared()
    }

    /// Applies a transaction over records; failed checks come back as what they mean
    /// (`NameTaken`, `AlreadyExists`, `NotFound`) or as `Conflict`.
    pub async fn commit(&self, txn: RecordTxn) -> StoreResult<Revision> {
        let RecordTxn { txn, meanings } = txn;
        self.kv.txn(txn).await.map_err(|err| explain(err, &meanings))
    }

    /// Stores a new record; `AlreadyExists` (or `NameTaken`) if its id (or name) is in use.
    pub async fn create<R: Record>(&self, record: &R) -> StoreResult<Revision> {
        self.commit(RecordTxn::new().create(record)?).await
    }

    /// Replaces a record if it is still at `expected` (the revision it was read at):
    /// `Conflict` if someone wrote it since, `NotFound` if it was deleted.
    pub async fn update<R: Record>(&self, record: &R, expected: Revision) -> StoreResult<Revision> {
        self.commit(RecordTxn::new().update(record, expected)?).await
    }

    /// Deletes a record if it is still at `expected`.
    pub async fn delete<R: Record>(&self, id: &str, expected: Revision) -> StoreResult<Revision> {
        let current = self.get::<R>(id).await?;
        if current.revision != expected {
            return Err(StoreError::Conflict {
                key: R::key_for(id)?,
                expected: Expect::Revision(expected),
                actual: Some(current.revision),
            });
        }
        self.commit(RecordTxn::new().delete(&current.value, expected)?).await
    }

    pub async fn get<R: Record>(&self, id: &str) -> StoreResult<Versioned<R>> {
        self.try_get(id).await?.ok_or_else(|| StoreError::NotFound {
            kind: R::WHAT,
            key: id.to_string(),
        })
    }

    pub async fn try_get<R: Record>(&self, id: &str) -> StoreResult<Option<Versioned<R>>> {
        // An id no key can hold names no record: looking it up finds nothing (a 404 to the
        // API, not a 400 for a lookup of something that cannot exist).
        let Ok(key) = R::key_for(id) else {
            return Ok(None);
        };
        let snapshot = self.kv.get(std::slice::from_ref(&key)).await?;
        match snapshot.kvs.into_iter().next().flatten() {
            Some(kv) => Ok(Some(versioned(&kv)?)),
            None => Ok(None),
        }
    }

    /// Every record of a kind, at one revision.
    pub async fn list<R: Record>(&self) -> StoreResult<Listing<R>> {
        let (kvs, revision) = self.range_all(R::PREFIX).await?;
        let items = kvs
            .iter()
            .filter(|kv| R::id_in_key(&kv.key).is_some())
            .map(versioned)
            .collect::<StoreResult<_>>()?;
        Ok(Listing { items, revision })
    }

    /// Changes to records of a kind from revision `from` on (a listing's revision + 1).
    pub async fn watch<R: Record>(&self, from: Revision) -> StoreResult<RecordWatch<R>> {
        Ok(RecordWatch {
            stream: self.kv.watch(R::PREFIX, from).await?,
            kind: PhantomData,
        })
    }

    /// Writes a record whatever its current revision, creating it if absent: for records
    /// with one writer, where the last write is the truth. Retries compare-and-swap until it
    /// lands, so it never resurrects a name another create took meanwhile.
    pub async fn put<R: Record>(&self, record: &R) -> StoreResult<Revision> {
        let lost_race = |e: &StoreError| {
            matches!(
                e,
                StoreError::Conflict { .. } | StoreError::AlreadyExists { .. } | StoreError::NotFound { .. }
            )
        };
        retry_lost_races(lost_race, || async move {
            match self.try_get::<R>(record.id()).await? {
                Some(current) => self.update(record, current.revision).await,
                None => self.create(record).await,
            }
        })
        .await
    }

    /// Deletes a record whatever its revision; nothing to do if it is gone.
    pub async fn remove<R: Record>(&self, id: &str) -> StoreResult<()> {
        let lost_race = |e: &StoreError| matches!(e, StoreError::Conflict { .. } | StoreError::NotFound { .. });
        retry_lost_races(lost_race, || async move {
            let Some(current) = self.try_get::<R>(id).await? else {
                return Ok(());
            };
            self.commit(RecordTxn::new().delete(&current.value, current.revision)?)
                .await
                .map(|_| ())
        })
        .await
    }

    /// Every key under `prefix` at one revision, page by page.
    pub(crate) async fn range_all(&self, prefix: &str) -> StoreResult<(Vec<KeyValue>, Revision)> {
        self.range_pages(prefix, false).await
    }

    /// Every key under `prefix` at one revision with its revisions but empty values.
    pub(crate) async fn range_all_keys(&self, prefix: &str) -> StoreResult<(Vec<KeyValue>, Revision)> {
        self.range_pages(prefix, true).await
    }

    async fn range_pages(&self, prefix: &str, keys_only: bool) -> StoreResult<(Vec<KeyValue>, Revision)> {
        let mut attempt = 0;
        'listing: loop {
            attempt += 1;
            let mut kvs = Vec::new();
            let mut request = RangeRequest {
                prefix: prefix.to_string(),
                limit: self.kv.page_keys(),
                keys_only,
                ..RangeRequest::default()
            };
            loop {
                let page = match self.kv.range(request.clone()).await {
                    Err(StoreError::Compacted { .. }) if attempt < LIST_ATTEMPTS => continue 'listing,
                    other => other?,
                };
                request.revision = Some(page.revision);
                request.start_after = page.kvs.last().map(|kv| kv.key.clone());
                kvs.extend(page.kvs);
                if !page.more {
                    return Ok((kvs, page.revision));
                }
            }
        }
    }
}

/// How often a last-writer-wins write retries a compare-and-swap it lost before it reports
/// the conflict: a check that can never hold (a name index pointing elsewhere) must not spin.
const WRITE_ATTEMPTS: usize = 32;

/// Runs `write` again while it fails with an error `lost_race` calls a lost race, at most
/// `WRITE_ATTEMPTS` times.
pub(crate) async fn retry_lost_races<T, F, Fut>(lost_race: impl Fn(&StoreError) -> bool, mut write: F) -> StoreResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = StoreResult<T>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match write().await {
            Err(e) if lost_race(&e) && attempt < WRITE_ATTEMPTS => continue,
            other => return other,
        }
    }
}

pub(crate) fn versioned<R: Record>(kv: &KeyValue) -> StoreResult<Versioned<R>> {
    Ok(Versioned {
        value: decode(&kv.key, &kv.value)?,
        revision: kv.mod_revision,
    })
}

/// What a failed check on a key means to the records of a transaction.
#[derive(Debug, Clone)]
enum Meaning {
    /// A create: the record exists.
    Exists { what: &'static str, id: String },
    /// A create: the unique name is taken.
    Name(String),
    /// An update or delete: gone is `NotFound`, anything else a `Conflict`.
    Record { what: &'static str, id: String },
}

fn explain(err: StoreError, meanings: &[(String, Meaning)]) -> StoreError {
    let StoreError::Conflict { key, expected, actual } = err else {
        return err;
    };
    match meanings.iter().find(|(k, _)| *k == key).map(|(_, m)| m) {
        Some(Meaning::Exists { what, id }) => StoreError::AlreadyExists {
            kind: what,
            key: id.clone(),
        },
        Some(Meaning::Name(name)) if expected == Expect::Absent => StoreError::NameTaken(name.clone()),
        Some(Meaning::Record { what, id }) if actual.is_none() => StoreError::NotFound {
            kind: what,
            key: id.clone(),
        },
        _ => StoreError::Conflict { key, expected, actual },
    }
}

/// A transaction over records (and raw keys), committed with `Store::commit`: at most
/// `MAX_TXN_OPS` writes, all or none.
#[derive(Debug, Default)]
pub struct RecordTxn {
    txn: Txn,
    meanings: Vec<(String, Meaning)>,
}

impl RecordTxn {
    pub fn new() -> Self {
        RecordTxn::default()
    }

    /// Adds a new record (and its unique name): the transaction fails if either exists.
    pub fn create<R: Record>(mut self, record: &R) -> StoreResult<Self> {
        let key = R::key_for(record.id())?;
        self.txn = std::mem::take(&mut self.txn)
            .check(&key, Expect::Absent)
            .put(&key, encode(record)?);
        self.meanings.push((
            key,
            Meaning::Exists {
                what: R::WHAT,
                id: record.id().to_string(),
            },
        ));
        if let (Some(name_key), Some(name)) = (record.name_key()?, record.name()) {
            self.txn = std::mem::take(&mut self.txn)
                .check(&name_key, Expect::Absent)
                .put(&name_key, record.id().as_bytes().to_vec());
            self.meanings.push((name_key, Meaning::Name(name.to_string())));
        }
        Ok(self)
    }

    /// Replaces a record still at `expected`. Names are fixed at create: the name index must
    /// still point at this record.
    pub fn update<R: Record>(mut self, record: &R, expected: Revision) -> StoreResult<Self> {
        let key = R::key_for(record.id())?;
        self.txn = std::mem::take(&mut self.txn)
            .check(&key, Expect::Revision(expected))
            .put(&key, encode(record)?);
        self.meanings.push((
            key,
            Meaning::Record {
                what: R::WHAT,
                id: record.id().to_string(),
            },
        ));
        if let Some(name_key) = record.name_key()? {
            self.txn = std::mem::take(&mut self.txn).check(name_key, Expect::Value(record.id().as_bytes().to_vec()));
        }
        Ok(self)
    }

    /// Deletes a record still at `expected`, and its name.
    pub fn delete<R: Record>(mut self, record: &R, expected: Revision) -> StoreResult<Self> {
        let key = R::key_for(record.id())?;
        self.txn = std::mem::take(&mut self.txn)
            .check(&key, Expect::Revision(expected))
            .delete(&key);
        self.meanings.push((
            key,
            Meaning::Record {
                what: R::WHAT,
                id: record.id().to_string(),
            },
        ));
        if let Some(name_key) = record.name_key()? {
            self.txn = std::mem::take(&mut self.txn).delete(name_key);
        }
        Ok(self)
    }

    /// Writes a record unconditionally, attached to a lease: it vanishes when the lease
    /// ends (a node's liveness record, a claim that must not outlive its holder).
    pub fn put_with_lease<R: Record>(mut self, record: &R, lease: LeaseId) -> StoreResult<Self> {
        if R::NAME_INDEX.is_some() {
            return Err(StoreError::Backend(format!(
                "{} records have unique names and are not written with a lease",
                R::WHAT
            )));
        }
        self.txn = std::mem::take(&mut self.txn).put_with_lease(R::key_for(record.id())?, encode(record)?, Some(lease));
        Ok(self)
    }

    /// Requires something of another record, written or not by this transaction (for
    /// example: a status is written only while its instance's spec exists).
    pub fn require<R: Record>(mut self, id: &str, expect: Expect) -> StoreResult<Self> {
        let key = R::key_for(id)?;
        self.txn = std::mem::take(&mut self.txn).check(&key, expect);
        self.meanings.push((
            key,
            Meaning::Record {
                what: R::WHAT,
                id: id.to_string(),
            },
        ));
        Ok(self)
    }

    /// Adds raw checks and operations (claims, counters, anything that is not a record).
    pub fn raw(mut self, txn: Txn) -> Self {
        self.txn = std::mem::take(&mut self.txn).merge(txn);
        self
    }

    /// The key-value transaction this becomes.
    pub fn txn(&self) -> &Txn {
        &self.txn
    }
}

/// A change to a record of one kind.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordEvent<R> {
    Put(Versioned<R>),
    Deleted { id: String, revision: Revision },
}

/// The changes to one kind of record; ends as `WatchStream` does (`Compacted`: list again).
pub struct RecordWatch<R> {
    stream: WatchStream,
    kind: PhantomData<fn() -> R>,
}

impl<R: Record> RecordWatch<R> {
    pub async fn next(&mut self) -> Option<StoreResult<RecordEvent<R>>> {
        loop {
            let event = match self.stream.next().await? {
                Ok(event) => event,
                Err(err) => return Some(Err(err)),
            };
            // Other records under the same prefix (an instance's status beside its spec).
            let Some(id) = R::id_in_key(&event.key) else {
                continue;
            };
            return Some(match event.kind {
                WatchEventKind::Put => decode(&event.key, &event.value).map(|value| {
                    RecordEvent::Put(Versioned {
                        value,
                        revision: event.revision,
                    })
                }),
                WatchEventKind::Delete => Ok(RecordEvent::Deleted {
                    id: id.to_string(),
                    revision: event.revision,
                }),
            });
        }
    }
}
