//! The per-type calls the single-host engine makes, kept on top of the revisioned records:
//! whole-record writes where the last writer wins, as before. New code (the node agent, the
//! scheduler) writes with the revision it read instead (`update`, `update_instance_status`).

use berth_model::image::ImageRecord;
use berth_model::network::Network;
use berth_model::volume::Volume;
use berth_model::Instance;

use crate::instance::{split, InstanceDesired, InstanceStatus};
use crate::kv::{Expect, Txn};
use crate::records::Record;
use crate::store::{retry_lost_races, RecordTxn, Store};
use crate::{keys, StoreError, StoreResult};

impl Store {
    /// Inserts a new instance; `NameTaken` if the name is in use.
    pub async fn insert_instance(&self, instance: &Instance) -> StoreResult<()> {
        self.create_instance(instance).await.map(|_| ())
    }

    /// Makes the stored instance equal to `instance`, writing only the record(s) that
    /// differ, so a status change leaves a concurrent spec change alone and vice versa.
    pub async fn update_instance(&self, instance: &Instance) -> StoreResult<()> {
        let (desired, status) = split(instance);
        let lost_race = |e: &StoreError| matches!(e, StoreError::Conflict { .. } | StoreError::AlreadyExists { .. });
        retry_lost_races(lost_race, || async {
            let current = self.instance(&instance.id).await?;
            let (current_desired, current_status) = split(&current.instance);
            let mut txn = RecordTxn::new();
            if desired != current_desired {
                txn = txn.update(&desired, current.spec_revision)?;
            } else {
                txn = txn.require::<InstanceDesired>(&instance.id, Expect::Present)?;
            }
            if status != current_status {
                txn = match current.status_revision {
                    0 => txn.create(&status)?,
                    revision => txn.update(&status, revision)?,
                };
            }
            self.commit(txn).await.map(|_| ())
        })
        .await
    }

    /// `update_instance` for the node that runs the instance: writes only while the stored
    /// instance is still `node`'s, at the spec revision it read. A node cut off while the
    /// scheduler moved its instance elsewhere cannot take it back. `Ok(false)`: it is another
    /// node's now and nothing was written.
    pub async fn update_instance_on(&self, instance: &Instance, node: &str) -> StoreResult<bool> {
        let (desired, status) = split(instance);
        let lost_race = |e: &StoreError| matches!(e, StoreError::Conflict { .. } | StoreError::AlreadyExists { .. });
        retry_lost_races(lost_race, || async {
            let current = self.instance(&instance.id).await?;
            if current.instance.node != node {
                return Ok(false);
            }
            let (current_desired, current_status) = split(&current.instance);
            let mut txn = RecordTxn::new();
            if desired != current_desired {
                txn = txn.update(&desired, current.spec_revision)?;
            } else {
                txn = txn.require::<InstanceDesired>(&instance.id, Expect::Revision(current.spec_revision))?;
            }
            if status != current_status {
                txn = match current.status_revision {
                    0 => txn.create(&status)?,
                    revision => txn.update(&status, revision)?,
                };
            }
            self.commit(txn).await.map(|_| true)
        })
        .await
    }

    pub async fn get_instance(&self, id: &str) -> StoreResult<Instance> {
        Ok(self.instance(id).await?.instance)
    }

    /// Finds by full id, name, or unique id prefix (as Docker does).
    pub async fn find_instance(&self, key: &str) -> StoreResult<Instance> {
        let not_found = || StoreError::NotFound {
            kind: "instance",
            key: key.to_string(),
        };
        if keys::component("instance", key).is_err() {
            return Err(not_found());
        }
        match self.instance(key).await {
            Err(StoreError::NotFound { .. }) => {}
            other => return other.map(|v| v.instance),
        }
        let name_key = format!("{}{key}", keys::INSTANCE_NAMES);
        if let Some(Some(kv)) = self.kv().get(&[name_key]).await?.kvs.into_iter().next() {
            let id = String::from_utf8(kv.value).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            match self.instance(&id).await {
                Err(StoreError::NotFound { .. }) => {}
                other => return other.map(|v| v.instance),
            }
        }
        // Only hex prefixes can be id prefixes.
        if !key.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(not_found());
        }
        let page = self
            .kv()
            .range(crate::kv::RangeRequest {
                prefix: format!("{}{}", keys::INSTANCES, key.to_ascii_lowercase()),
                // Two keys per instance: four keys show whether a second one matches.
                limit: 4,
                keys_only: true,
                ..Default::default()
            })
            .await?;
        let mut ids: Vec<&str> = page
            .kvs
            .iter()
            .filter_map(|kv| InstanceDesired::id_in_key(&kv.key).or_else(|| InstanceStatus::id_in_key(&kv.key)))
            .collect();
        ids.dedup();
        match ids.as_slice() {
            [id] => self.get_instance(id).await,
            [] => Err(not_found()),
            _ => Err(StoreError::Ambiguous(key.to_string())),
        }
    }

    pub async fn list_instances(&self) -> StoreResult<Vec<Instance>> {
        Ok(self.instances().await?.0.into_iter().map(|v| v.instance).collect())
    }

    /// Removes an instance whatever its revision; nothing to do if it is gone.
    pub async fn delete_instance(&self, id: &str) -> StoreResult<()> {
        let lost_race = |e: &StoreError| matches!(e, StoreError::Conflict { .. });
        retry_lost_races(lost_race, || async {
            let current = match self.instance(id).await {
                Err(StoreError::NotFound { .. }) => return Ok(()),
                other => other?,
            };
            match self.remove_instance(id, current.spec_revision).await {
                Err(StoreError::NotFound { .. }) => Ok(()),
                other => other.map(|_| ()),
            }
        })
        .await
    }

    pub async fn put_image(&self, image: &ImageRecord) -> StoreResult<()> {
        self.put(image).await.map(|_| ())
    }

    pub async fn get_image(&self, id: &str) -> StoreResult<ImageRecord> {
        Ok(self.get::<ImageRecord>(id).await?.value)
    }

    /// Newest first.
    pub async fn list_images(&self) -> StoreResult<Vec<ImageRecord>> {
        let mut images: Vec<ImageRecord> = self
            .list::<ImageRecord>()
            .await?
            .items
            .into_iter()
            .map(|v| v.value)
            .collect();
        images.sort_by_key(|i| std::cmp::Reverse(i.created_at));
        Ok(images)
    }

    pub async fn delete_image(&self, id: &str) -> StoreResult<()> {
        self.remove::<ImageRecord>(id).await
    }

    pub async fn put_network(&self, network: &Network) -> StoreResult<()> {
        self.put(network).await.map(|_| ())
    }

    /// By name (the key order).
    pub async fn list_networks(&self) -> StoreResult<Vec<Network>> {
        Ok(self
            .list::<Network>()
            .await?
            .items
            .into_iter()
            .map(|v| v.value)
            .collect())
    }

    pub async fn delete_network(&self, name: &str) -> StoreResult<()> {
        self.remove::<Network>(name).await
    }

    pub async fn put_volume(&self, volume: &Volume) -> StoreResult<()> {
        self.put(volume).await.map(|_| ())
    }

    pub async fn get_volume(&self, name: &str) -> StoreResult<Volume> {
        Ok(self.get::<Volume>(name).await?.value)
    }

    /// By name (the key order).
    pub async fn list_volumes(&self) -> StoreResult<Vec<Volume>> {
        Ok(self
            .list::<Volume>()
            .await?
            .items
            .into_iter()
            .map(|v| v.value)
            .collect())
    }

    pub async fn delete_volume(&self, name: &str) -> StoreResult<()> {
        self.remove::<Volume>(name).await
    }

    /// A small fact kept as a string (the schema version; a node's id mirror on its own store).
    pub async fn get_meta(&self, key: &str) -> StoreResult<Option<String>> {
        let key = format!("{}{}", keys::META, keys::component("meta key", key)?);
        match self
            .kv()
            .get(std::slice::from_ref(&key))
            .await?
            .kvs
            .into_iter()
            .next()
            .flatten()
        {
            Some(kv) => String::from_utf8(kv.value)
                .map(Some)
                .map_err(|e| StoreError::Corrupt(format!("{key}: {e}"))),
            None => Ok(None),
        }
    }

    pub async fn set_meta(&self, key: &str, value: &str) -> StoreResult<()> {
        let key = format!("{}{}", keys::META, keys::component("meta key", key)?);
        self.kv()
            .txn(Txn::new().put(key, value.as_bytes().to_vec()))
            .await
            .map(|_| ())
    }
}
