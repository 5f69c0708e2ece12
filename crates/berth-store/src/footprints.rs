//! What admission counts of every instance, read on each start without reading again what
//! it already read: a cache of the decoded parts is brought up to date from the store's
//! changes since its revision (SQLite), or from a listing of keys and revisions (no values)
//! in which only records at a revision new to the cache are fetched and decoded (etcd, and
//! whenever the changes are not at hand). With 1,000 instances the full read and decode took
//! 5 ms of every start and grew with the count.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use berth_model::Instance;

use crate::instance::{InstanceDesired, InstanceStatus};
use crate::kv::{KeyValue, Revision, WatchEventKind};
use crate::records::{decode, Record};
use crate::store::{Store, LIST_ATTEMPTS};
use crate::{keys, StoreError, StoreResult};

/// Above this many new records one paged read of everything is cheaper than fetching them
/// by key (and a fetch by key is one transaction, which etcd caps at 128 operations).
const FETCH_BY_KEY_AT_MOST: usize = 64;

/// What admission counts of an instance: read from its two records without decoding the rest
/// of them.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceFootprint {
    pub id: String,
    pub node: String,
    pub state: berth_model::InstanceState,
    pub limits: berth_model::Limits,
    pub requests: berth_model::Requests,
    pub instance_storage_bytes: Vec<u64>,
}

impl From<&Instance> for InstanceFootprint {
    fn from(instance: &Instance) -> Self {
        InstanceFootprint {
            id: instance.id.clone(),
            node: instance.node.clone(),
            state: instance.state,
            limits: instance.limits.clone(),
            requests: instance.requests.clone(),
            instance_storage_bytes: instance.spec.instance_storage_bytes.clone(),
        }
    }
}

/// The fields of an `InstanceDesired` record a footprint takes (serde skips the others).
#[derive(Debug, Clone, serde::Deserialize)]
struct DesiredFootprint {
    id: String,
    limits: berth_model::Limits,
    #[serde(default)]
    requests: berth_model::Requests,
    spec: SpecFootprint,
    node: String,
}

#[derive(Debug, Clone, serde::Deserialize)]
struct SpecFootprint {
    #[serde(default)]
    instance_storage_bytes: Vec<u64>,
}

/// The field of an `InstanceStatus` record a footprint takes.
#[derive(Debug, Clone, serde::Deserialize)]
struct StatusFootprint {
    state: berth_model::InstanceState,
}

/// What one instance record holds for a footprint.
#[derive(Debug, Clone)]
enum Part {
    Desired(DesiredFootprint),
    Status(StatusFootprint),
}

impl Part {
    /// `None` for a key under the instances prefix that is neither record.
    fn decode(key: &str, value: &[u8]) -> Option<StoreResult<Part>> {
        if InstanceDesired::id_in_key(key).is_some() {
            Some(decode(key, value).map(Part::Desired))
        } else if InstanceStatus::id_in_key(key).is_some() {
            Some(decode(key, value).map(Part::Status))
        } else {
            None
        }
    }
}

/// Decoded parts by key, each with the revision it was decoded at, and the store revision
/// they all reflect. A key's revision changes with every write to it (and a key deleted and
/// created again gets a new one), so a part found at the listed revision is what the store
/// holds.
#[derive(Default)]
pub(crate) struct FootprintCache {
    state: Mutex<CacheState>,
}

#[derive(Default)]
struct CacheState {
    /// The store revision `parts` is complete at; `None` until a listing filled it.
    revision: Option<Revision>,
    parts: HashMap<String, (Revision, Part)>,
    /// `parts` composed, by instance id: kept up to date with each changed part, so a start
    /// does not pair 2,000 parts again for one new instance (0.7 ms at 1,000).
    composed: HashMap<String, InstanceFootprint>,
}

impl CacheState {
    /// Sets (or with `None` removes) the part under `key` and composes its instance again.
    fn set_part(&mut self, key: String, part: Option<(Revision, Part)>) {
        let id = InstanceDesired::id_in_key(&key)
            .or_else(|| InstanceStatus::id_in_key(&key))
            .map(str::to_string);
        match part {
            Some(part) => self.parts.insert(key, part),
            None => self.parts.remove(&key),
        };
        if let Some(id) = id {
            self.compose_one(id);
        }
    }

    fn compose_one(&mut self, id: String) {
        let part = |record_key: StoreResult<String>| record_key.ok().and_then(|key| self.parts.get(&key));
        let desired = match part(InstanceDesired::key_for(&id)) {
            Some((_, Part::Desired(desired))) => desired,
            _ => {
                self.composed.remove(&id);
                return;
            }
        };
        let status = match part(InstanceStatus::key_for(&id)) {
            Some((_, Part::Status(status))) => Some(status),
            _ => None,
        };
        let footprint = footprint(desired, status);
        self.composed.insert(id, footprint);
    }

    fn footprints(&self) -> Vec<InstanceFootprint> {
        self.composed.values().cloned().collect()
    }
}

impl FootprintCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, CacheState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Store {
    /// Every instance's footprint, read at one revision (order unspecified). An instance
    /// without a status record counts as `InstanceStatus::missing` does (not active).
    pub async fn instance_footprints(&self) -> StoreResult<Vec<InstanceFootprint>> {
        if let Some(footprints) = self.footprints_from_changes().await? {
            return Ok(footprints);
        }
        self.footprints_from_listing().await
    }

    /// The cache brought up to date with what changed since its revision, if the backend
    /// can say that in one read (SQLite: its change table, a few rows a start).
    async fn footprints_from_changes(&self) -> StoreResult<Option<Vec<InstanceFootprint>>> {
        let Some(since) = self.footprints.lock().revision else {
            return Ok(None);
        };
        let Some((events, now)) = self.kv().changes_since(keys::INSTANCES, since).await? else {
            return Ok(None);
        };
        let mut changes = Vec::with_capacity(events.len());
        for event in &events {
            let part = match event.kind {
                WatchEventKind::Put => match Part::decode(&event.key, &event.value) {
                    Some(part) => Some((event.revision, part?)),
                    None => continue,
                },
                WatchEventKind::Delete => None,
            };
            changes.push((event.key.clone(), part));
        }
        let mut state = self.footprints.lock();
        if state.revision != Some(since) {
            // Another read moved the cache meanwhile: list.
            return Ok(None);
        }
        for (key, part) in changes {
            state.set_part(key, part);
        }
        state.revision = Some(now);
        Ok(Some(state.footprints()))
    }

    /// Lists the keys and revisions of every instance record, fetches and decodes only those
    /// the cache does not hold at that revision, and leaves the cache complete at the
    /// listing's revision.
    async fn footprints_from_listing(&self) -> StoreResult<Vec<InstanceFootprint>> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (listed, listed_at) = self.range_all_keys(keys::INSTANCES).await?;
            let listed: Vec<KeyValue> = listed.into_iter().filter(is_part_key).collect();
            let new: Vec<String> = {
                let state = self.footprints.lock();
                listed
                    .iter()
                    .filter(|kv| state.parts.get(&kv.key).map(|(revision, _)| *revision) != Some(kv.mod_revision))
                    .map(|kv| kv.key.clone())
                    .collect()
            };
            let fetched = if new.len() > FETCH_BY_KEY_AT_MOST {
                // Cold (a new daemon) or much changed: one paged read of every record.
                self.range_all(keys::INSTANCES).await?.0
            } else if new.is_empty() {
                Vec::new()
            } else {
                self.kv().get(&new).await?.kvs.into_iter().flatten().collect()
            };
            // Only what the listing found new (a paged read returns the rest too).
            let new: HashSet<String> = new.into_iter().collect();
            let mut decoded = Vec::with_capacity(new.len());
            for kv in fetched.iter().filter(|kv| new.contains(&kv.key)) {
                if let Some(part) = Part::decode(&kv.key, &kv.value) {
                    decoded.push((kv.key.clone(), kv.mod_revision, part?));
                }
            }
            let mut state = self.footprints.lock();
            for (key, revision, part) in decoded {
                state.set_part(key, Some((revision, part)));
            }
            // A record written (or removed) between the listing and the fetch: the listing
            // is no longer one revision's view. List again.
            let consistent = listed
                .iter()
                .all(|kv| state.parts.get(&kv.key).map(|(revision, _)| *revision) == Some(kv.mod_revision));
            if !consistent {
                state.revision = None;
                if attempt < LIST_ATTEMPTS {
                    continue;
                }
                return Err(StoreError::Backend(
                    "the instances changed faster than admission could read them; try again".into(),
                ));
            }
            // Only what is listed stays: removed instances leave the cache, and only theirs are
            // composed again. (Every listed key is in it, so equal sizes mean nothing else is.)
            if state.parts.len() != listed.len() {
                let listed_keys: HashSet<&str> = listed.iter().map(|kv| kv.key.as_str()).collect();
                let dropped: Vec<String> = state
                    .parts
                    .keys()
                    .filter(|key| !listed_keys.contains(key.as_str()))
                    .cloned()
                    .collect();
                for key in dropped {
                    state.set_part(key, None);
                }
            }
            state.revision = Some(listed_at);
            return Ok(state.footprints());
        }
    }
}

fn is_part_key(kv: &KeyValue) -> bool {
    InstanceDesired::id_in_key(&kv.key).is_some() || InstanceStatus::id_in_key(&kv.key).is_some()
}

/// An instance's footprint from its two parts. An instance without a status record counts
/// as `InstanceStatus::missing` does (not active).
fn footprint(desired: &DesiredFootprint, status: Option<&StatusFootprint>) -> InstanceFootprint {
    InstanceFootprint {
        state: status.map_or(InstanceStatus::missing(&desired.id).state, |s| s.state),
        id: desired.id.clone(),
        node: desired.node.clone(),
        limits: desired.limits.clone(),
        requests: desired.requests.clone(),
        instance_storage_bytes: desired.spec.instance_storage_bytes.clone(),
    }
}
