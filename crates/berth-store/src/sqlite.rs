//! The embedded store: SQLite in WAL mode under the state directory, with etcd's semantics
//! for one host. One `kv` table whose `mod_revision` column is the compare-and-swap
//! version, a store revision that every write advances, a `changes` table (the history a
//! watch replays, compacted) and an in-process broadcast for live watches. Leases live in
//! memory and are swept: a lease never needs to outlive the process that keeps it alive, so
//! the keys of leases from an earlier process are deleted at open.
//! Writes are a few hundred microseconds, so calls run inline under a mutex.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, Once, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::broadcast;

use crate::kv::{
    Check, KeyValue, Lease, LeaseId, Op, RangePage, RangeRequest, Revision, Snapshot, StateStore, Txn, WatchEvent,
    WatchEventKind, WatchStream,
};
use crate::migrate;
use crate::{StoreError, StoreResult};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS kv (
    key             TEXT PRIMARY KEY,
    value           BLOB NOT NULL,
    create_revision INTEGER NOT NULL,
    mod_revision    INTEGER NOT NULL,
    lease           INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS kv_by_lease ON kv (lease) WHERE lease IS NOT NULL;
CREATE TABLE IF NOT EXISTS changes (
    revision INTEGER NOT NULL,
    seq      INTEGER NOT NULL,
    key      TEXT NOT NULL,
    deleted  INTEGER NOT NULL,
    value    BLOB NOT NULL,
    PRIMARY KEY (revision, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS store_state (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
";

/// The database's page size. Why not SQLite's 4 KiB: a `kv` row holds at most about 1 KiB in
/// a 4 KiB page (the key is the table's key, so rows live in an index b-tree) and an
/// instance's spec record is a little more, so each spilled to an overflow page, which SQLite
/// reads straight from the file past its cache: listing 1,000 instances made 1,000 `pread`
/// calls every time. 8 KiB pages hold rows up to about 2 KiB.
const PAGE_SIZE: i64 = 8192;

/// How much history watches can resume from: older changes are compacted away as the
/// store writes (etcd compacts on a schedule; this is one host's equivalent).
const KEEP_REVISIONS: u64 = 10_000;

/// How often the sweeper looks for expired leases, so watchers see their keys go.
const SWEEP_INTERVAL: Duration = Duration::from_millis(200);

pub struct SqliteStore {
    shared: Arc<Shared>,
}

struct Shared {
    path: String,
    inner: Mutex<Inner>,
    /// Every committed revision's changes, for live watches.
    events: broadcast::Sender<Arc<Vec<WatchEvent>>>,
    sweeper: Once,
}

struct Inner {
    conn: Connection,
    revision: Revision,
    /// Changes before this revision are gone.
    compacted: Revision,
    leases: HashMap<LeaseId, LiveLease>,
    next_lease: i64,
}

struct LiveLease {
    ttl: Duration,
    deadline: Instant,
}

impl SqliteStore {
    pub fn open(path: &Path) -> StoreResult<Self> {
        let conn = Connection::open(path)?;
        if let Err(e) = use_large_pages(&conn) {
            tracing::warn!(path = %path.display(), error = %e, "keeping the state database's page size");
        }
        // WAL keeps readers and the writer apart; NORMAL sync is durable across a daemon
        // crash (the case that matters here), fsyncing at checkpoints only.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "busy_timeout", 5000)?;
        conn.execute_batch(SCHEMA)?;
        let revision = state_value(&conn, "revision")?;
        let compacted = state_value(&conn, "compacted")?;
        let (events, _) = broadcast::channel(1024);
        let store = SqliteStore {
            shared: Arc::new(Shared {
                path: path.display().to_string(),
                inner: Mutex::new(Inner {
                    conn,
                    revision,
                    compacted,
                    leases: HashMap::new(),
                    next_lease: 1,
                }),
                events,
                sweeper: Once::new(),
            }),
        };
        {
            let mut inner = store.shared.lock()?;
            inner.migrate_legacy()?;
            // Leases of an earlier process are gone with it, and so are their keys.
            let stale: Vec<String> = {
                let mut stmt = inner.conn.prepare("SELECT key FROM kv WHERE lease IS NOT NULL")?;
                let keys = stmt.query_map([], |row| row.get(0))?.collect::<Result<_, _>>()?;
                keys
            };
            let ops = stale.into_iter().map(|key| Op::Delete { key }).collect();
            let events = inner.apply(ops)?;
            store.shared.publish(events);
        }
        Ok(store)
    }
}

impl Shared {
    fn lock(&self) -> StoreResult<MutexGuard<'_, Inner>> {
        self.inner
            .lock()
            .map_err(|_| StoreError::Backend("store lock poisoned".into()))
    }

    /// Locks the store after ending expired leases (so no read sees their keys).
    fn lock_swept(&self) -> StoreResult<MutexGuard<'_, Inner>> {
        let mut inner = self.lock()?;
        let events = inner.sweep()?;
        self.publish(events);
        Ok(inner)
    }

    fn publish(&self, events: Vec<WatchEvent>) {
        if !events.is_empty() {
            // No receivers is fine: nobody watches.
            let _ = self.events.send(Arc::new(events));
        }
    }

    /// Starts the background sweep once there are leases to expire.
    fn start_sweeper(self: &Arc<Self>) {
        let weak: Weak<Shared> = Arc::downgrade(self);
        self.sweeper.call_once(|| {
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(SWEEP_INTERVAL).await;
                    let Some(shared) = weak.upgrade() else { break };
                    let swept = shared.lock_swept().map(drop);
                    if let Err(e) = swept {
                        tracing::warn!(error = %e, "sweeping expired leases");
                    }
                }
            });
        });
    }
}

fn state_value(conn: &Connection, name: &str) -> StoreResult<u64> {
    let value: Option<i64> = conn
        .query_row("SELECT value FROM store_state WHERE name = ?1", [name], |row| {
            row.get(0)
        })
        .optional()?;
    Ok(value.unwrap_or(0) as u64)
}

fn read_kv(conn: &Connection, key: &str) -> StoreResult<Option<KeyValue>> {
    Ok(conn
        .query_row(
            "SELECT key, value, create_revision, mod_revision, lease FROM kv WHERE key = ?1",
            [key],
            row_to_kv,
        )
        .optional()?)
}

/// Gives a new database `PAGE_SIZE` pages before its first table, and rewrites one made
/// with smaller pages once (`VACUUM`; the daemon holds the state directory's lock, so no
/// other connection is open).
fn use_large_pages(conn: &Connection) -> rusqlite::Result<()> {
    let page_size: i64 = conn.pragma_query_value(None, "page_size", |row| row.get(0))?;
    if page_size >= PAGE_SIZE {
        return Ok(());
    }
    let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_schema", [], |row| row.get(0))?;
    // A WAL database keeps its page size; in rollback mode VACUUM applies the new one.
    conn.pragma_update(None, "journal_mode", "DELETE")?;
    conn.pragma_update(None, "page_size", PAGE_SIZE)?;
    if tables > 0 {
        conn.execute_batch("VACUUM")?;
    }
    Ok(())
}

/// The recorded changes under `prefix` from revision `from` on, in order.
fn changes_from(conn: &Connection, prefix: &str, from: Revision) -> StoreResult<Vec<WatchEvent>> {
    let end = text_prefix_end(prefix);
    let mut stmt = conn.prepare_cached(
        "SELECT key, deleted, value, revision FROM changes
         WHERE revision >= ?1 AND key >= ?2 AND (?3 IS NULL OR key < ?3) ORDER BY revision, seq",
    )?;
    let events = stmt
        .query_map(params![from as i64, prefix, end], |row| {
            Ok(WatchEvent {
                key: row.get(0)?,
                kind: if row.get::<_, bool>(1)? {
                    WatchEventKind::Delete
                } else {
                    WatchEventKind::Put
                },
                value: row.get(2)?,
                revision: row.get::<_, i64>(3)? as u64,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(events)
}

fn row_to_kv(row: &rusqlite::Row<'_>) -> rusqlite::Result<KeyValue> {
    Ok(KeyValue {
        key: row.get(0)?,
        value: row.get(1)?,
        create_revision: row.get::<_, i64>(2)? as u64,
        mod_revision: row.get::<_, i64>(3)? as u64,
        lease: row.get::<_, Option<i64>>(4)?.map(LeaseId),
    })
}

/// The first string after every string that starts with `prefix`, in SQLite's (byte)
/// order: the last character, incremented. UTF-8 keeps code point order, so this is exact.
fn text_prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let mut next = last as u32 + 1;
        if (0xD800..0xE000).contains(&next) {
            next = 0xE000;
        }
        if let Some(next) = char::from_u32(next) {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

impl Inner {
    /// Applies operations at the next revision, all or none; the changes made (none: the
    /// revision stays).
    fn apply(&mut self, ops: Vec<Op>) -> StoreResult<Vec<WatchEvent>> {
        let revision = self.revision + 1;
        let tx = self.conn.transaction()?;
        let mut events = Vec::new();
        for op in ops {
            match op {
                Op::Put { key, value, lease } => {
                    tx.prepare_cached(
                        "INSERT INTO kv (key, value, create_revision, mod_revision, lease) VALUES (?1, ?2, ?3, ?3, ?4)
                         ON CONFLICT(key) DO UPDATE SET value = excluded.value, mod_revision = excluded.mod_revision, lease = excluded.lease",
                    )?
                    .execute(params![key, value, revision as i64, lease.map(|l| l.0)])?;
                    events.push(WatchEvent {
                        kind: WatchEventKind::Put,
                        key,
                        value,
                        revision,
                    });
                }
                Op::Delete { key } => {
                    // Deleting what is not there changes nothing and is no event (as etcd).
                    if tx.prepare_cached("DELETE FROM kv WHERE key = ?1")?.execute([&key])? > 0 {
                        events.push(WatchEvent {
                            kind: WatchEventKind::Delete,
                            key,
                            value: Vec::new(),
                            revision,
                        });
                    }
                }
            }
        }
        if events.is_empty() {
            return Ok(events);
        }
        for (seq, event) in events.iter().enumerate() {
            tx.prepare_cached("INSERT INTO changes (revision, seq, key, deleted, value) VALUES (?1, ?2, ?3, ?4, ?5)")?
                .execute(params![
                    revision as i64,
                    seq as i64,
                    event.key,
                    event.kind == WatchEventKind::Delete,
                    event.value
                ])?;
        }
        tx.execute(
            "INSERT INTO store_state (name, value) VALUES ('revision', ?1) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            [revision as i64],
        )?;
        // Every thousand revisions, forget what is older than the history kept.
        let compact_to = revision.saturating_sub(KEEP_REVISIONS);
        let compact = revision.is_multiple_of(1000) && compact_to > self.compacted;
        if compact {
            compact_changes(&tx, compact_to)?;
        }
        tx.commit()?;
        self.revision = revision;
        if compact {
            self.compacted = compact_to;
        }
        Ok(events)
    }

    /// Ends every lease whose deadline passed, deleting its keys in one revision.
    fn sweep(&mut self) -> StoreResult<Vec<WatchEvent>> {
        let now = Instant::now();
        let expired: Vec<LeaseId> = self
            .leases
            .iter()
            .filter(|(_, lease)| lease.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        if expired.is_empty() {
            return Ok(Vec::new());
        }
        for id in &expired {
            self.leases.remove(id);
            tracing::debug!(lease = %id, "lease expired");
        }
        self.delete_lease_keys(&expired)
    }

    fn delete_lease_keys(&mut self, leases: &[LeaseId]) -> StoreResult<Vec<WatchEvent>> {
        let mut keys = Vec::new();
        {
            let mut stmt = self.conn.prepare("SELECT key FROM kv WHERE lease = ?1")?;
            for lease in leases {
                for key in stmt.query_map([lease.0], |row| row.get::<_, String>(0))? {
                    keys.push(key?);
                }
            }
        }
        self.apply(keys.into_iter().map(|key| Op::Delete { key }).collect())
    }

    fn migrate_legacy(&mut self) -> StoreResult<()> {
        if !migrate::has_legacy_tables(&self.conn)? {
            return Ok(());
        }
        let records = migrate::legacy_records(&self.conn)?;
        let count = records.len();
        let ops = records
            .into_iter()
            .map(|(key, value)| Op::Put {
                key,
                value,
                lease: None,
            })
            .collect();
        // One SQLite transaction for the copy and the drop would be tidier; the copy is
        // idempotent (puts), so a crash between the two only repeats it at the next open.
        self.apply(ops)?;
        for table in migrate::LEGACY_TABLES {
            self.conn.execute_batch(&format!("DROP TABLE IF EXISTS {table}"))?;
        }
        tracing::info!(records = count, "moved the state to the revisioned layout");
        Ok(())
    }
}

fn compact_changes(conn: &Connection, revision: Revision) -> StoreResult<()> {
    conn.execute("DELETE FROM changes WHERE revision < ?1", [revision as i64])?;
    conn.execute(
        "INSERT INTO store_state (name, value) VALUES ('compacted', ?1) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
        [revision as i64],
    )?;
    Ok(())
}

#[async_trait]
impl StateStore for SqliteStore {
    fn describe(&self) -> String {
        format!("sqlite {}", self.shared.path)
    }

    fn is_shared(&self) -> bool {
        false
    }

    fn page_keys(&self) -> usize {
        0
    }

    async fn get(&self, keys: &[String]) -> StoreResult<Snapshot> {
        let inner = self.shared.lock_swept()?;
        let kvs = keys
            .iter()
            .map(|key| read_kv(&inner.conn, key))
            .collect::<StoreResult<_>>()?;
        Ok(Snapshot {
            kvs,
            revision: inner.revision,
        })
    }

    async fn range(&self, request: RangeRequest) -> StoreResult<RangePage> {
        let inner = self.shared.lock_swept()?;
        // Only the latest revision is kept as a snapshot: a page of an older one is gone.
        match request.revision {
            Some(revision) if revision > inner.revision => {
                return Err(StoreError::Backend(format!(
                    "revision {revision} is in the future (the store is at {})",
                    inner.revision
                )))
            }
            Some(revision) if revision < inner.revision => {
                return Err(StoreError::Compacted {
                    requested: revision,
                    compacted: inner.revision,
                })
            }
            _ => {}
        }
        let start = match &request.start_after {
            Some(after) if after.as_str() >= request.prefix.as_str() => format!("{after}\0"),
            _ => request.prefix.clone(),
        };
        let end = text_prefix_end(&request.prefix);
        // One more than asked, to know whether more follow.
        let limit = if request.limit == 0 {
            -1
        } else {
            request.limit as i64 + 1
        };
        let mut stmt = inner.conn.prepare_cached(
            "SELECT key, CASE WHEN ?4 THEN x'' ELSE value END, create_revision, mod_revision, lease FROM kv
             WHERE key >= ?1 AND (?2 IS NULL OR key < ?2) ORDER BY key LIMIT ?3",
        )?;
        let mut kvs: Vec<KeyValue> = stmt
            .query_map(params![start, end, limit, request.keys_only], row_to_kv)?
            .collect::<Result<_, _>>()?;
        let more = request.limit != 0 && kvs.len() > request.limit;
        kvs.truncate(if request.limit == 0 { kvs.len() } else { request.limit });
        Ok(RangePage {
            kvs,
            more,
            revision: inner.revision,
        })
    }

    async fn txn(&self, txn: Txn) -> StoreResult<Revision> {
        txn.validate()?;
        let mut inner = self.shared.lock_swept()?;
        for Check { key, expect } in &txn.checks {
            let current = read_kv(&inner.conn, key)?;
            let check = Check {
                key: key.clone(),
                expect: expect.clone(),
            };
            if !check.holds(current.as_ref()) {
                return Err(StoreError::Conflict {
                    key: key.clone(),
                    expected: expect.clone(),
                    actual: current.map(|kv| kv.mod_revision),
                });
            }
        }
        for op in &txn.ops {
            if let Op::Put { lease: Some(lease), .. } = op {
                if !inner.leases.contains_key(lease) {
                    return Err(StoreError::LeaseNotFound(*lease));
                }
            }
        }
        let events = inner.apply(txn.ops)?;
        let revision = inner.revision;
        self.shared.publish(events);
        Ok(revision)
    }

    async fn changes_since(&self, prefix: &str, after: Revision) -> StoreResult<Option<(Vec<WatchEvent>, Revision)>> {
        let inner = self.shared.lock_swept()?;
        if after + 1 < inner.compacted || after > inner.revision {
            return Ok(None);
        }
        let events = changes_from(&inner.conn, prefix, after + 1)?;
        Ok(Some((events, inner.revision)))
    }

    async fn watch(&self, prefix: &str, from: Revision) -> StoreResult<WatchStream> {
        let (sender, stream) = WatchStream::channel();
        let (history, mut live, from) = {
            let inner = self.shared.lock_swept()?;
            // 0: from now on.
            let from = if from == 0 { inner.revision + 1 } else { from };
            if from < inner.compacted {
                let _ = sender.try_send(Err(StoreError::Compacted {
                    requested: from,
                    compacted: inner.compacted,
                }));
                return Ok(stream);
            }
            let history = changes_from(&inner.conn, prefix, from)?;
            // Subscribed under the lock: nothing commits between the history and the live feed.
            let live = self.shared.events.subscribe();
            (history, live, from.max(inner.revision + 1))
        };
        let prefix = prefix.to_string();
        tokio::spawn(async move {
            for event in history {
                if sender.send(Ok(event)).await.is_err() {
                    return;
                }
            }
            loop {
                match live.recv().await {
                    Ok(batch) => {
                        for event in batch.iter() {
                            if event.revision >= from
                                && event.key.starts_with(&prefix)
                                && sender.send(Ok(event.clone())).await.is_err()
                            {
                                return;
                            }
                        }
                    }
                    // This watcher fell behind the in-process feed: like a compacted etcd
                    // watch, it has to list again.
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let _ = sender
                            .send(Err(StoreError::Compacted {
                                requested: from,
                                compacted: from,
                            }))
                            .await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(stream)
    }

    async fn compact(&self, revision: Revision) -> StoreResult<()> {
        let mut inner = self.shared.lock()?;
        if revision > inner.revision {
            return Err(StoreError::Backend(format!(
                "cannot compact to revision {revision}: the store is at {}",
                inner.revision
            )));
        }
        if revision <= inner.compacted {
            return Err(StoreError::Compacted {
                requested: revision,
                compacted: inner.compacted,
            });
        }
        compact_changes(&inner.conn, revision)?;
        inner.compacted = revision;
        Ok(())
    }

    async fn grant_lease(&self, ttl: Duration) -> StoreResult<Lease> {
        // Whole seconds, at least one, as etcd grants them.
        let ttl = Duration::from_secs(ttl.as_secs_f64().ceil().max(1.0) as u64);
        let lease = {
            let mut inner = self.shared.lock_swept()?;
            let id = LeaseId(inner.next_lease);
            inner.next_lease += 1;
            inner.leases.insert(
                id,
                LiveLease {
                    ttl,
                    deadline: Instant::now() + ttl,
                },
            );
            Lease { id, ttl }
        };
        self.shared.start_sweeper();
        Ok(lease)
    }

    async fn keep_alive(&self, lease: LeaseId) -> StoreResult<()> {
        let mut inner = self.shared.lock_swept()?;
        let live = inner.leases.get_mut(&lease).ok_or(StoreError::LeaseNotFound(lease))?;
        live.deadline = Instant::now() + live.ttl;
        Ok(())
    }

    async fn revoke(&self, lease: LeaseId) -> StoreResult<()> {
        let mut inner = self.shared.lock_swept()?;
        if inner.leases.remove(&lease).is_none() {
            return Err(StoreError::LeaseNotFound(lease));
        }
        let events = inner.delete_lease_keys(&[lease])?;
        self.shared.publish(events);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_prefix_end_bounds_the_prefix() {
        assert_eq!(text_prefix_end("/berth/v1/").as_deref(), Some("/berth/v10"));
        assert_eq!(text_prefix_end("ab\u{D7FF}").as_deref(), Some("ab\u{E000}"));
        assert_eq!(text_prefix_end(""), None);
    }

    /// A database made with SQLite's 4 KiB pages is rewritten with `PAGE_SIZE` pages at open,
    /// its rows kept; a new one starts with them.
    #[test]
    fn small_pages_are_rewritten_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("berth.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.pragma_update(None, "page_size", 4096).unwrap();
            conn.pragma_update(None, "journal_mode", "WAL").unwrap();
            conn.execute_batch(SCHEMA).unwrap();
            conn.execute(
                "INSERT INTO kv (key, value, create_revision, mod_revision) VALUES ('/berth/v1/k', ?1, 1, 1)",
                [vec![7u8; 3000]],
            )
            .unwrap();
        }
        let page_size = |path: &Path| -> i64 {
            Connection::open(path)
                .unwrap()
                .pragma_query_value(None, "page_size", |row| row.get(0))
                .unwrap()
        };
        assert_eq!(page_size(&path), 4096);
        let store = SqliteStore::open(&path).unwrap();
        let value: Vec<u8> = store
            .shared
            .lock()
            .unwrap()
            .conn
            .query_row("SELECT value FROM kv WHERE key = '/berth/v1/k'", [], |row| row.get(0))
            .unwrap();
        assert_eq!(value, vec![7u8; 3000]);
        drop(store);
        assert_eq!(page_size(&path), PAGE_SIZE);

        let fresh = dir.path().join("fresh.db");
        drop(SqliteStore::open(&fresh).unwrap());
        assert_eq!(page_size(&fresh), PAGE_SIZE);
    }
}
