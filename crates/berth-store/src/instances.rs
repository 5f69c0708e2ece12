//! Instances in the store: two records (desired spec, observed status) created and removed
//! together, read together at one revision, and written apart — the API and the scheduler
//! write the spec, the node that runs the instance writes the status.

use std::collections::BTreeMap;

use berth_model::Instance;

use crate::instance::{compose, split, InstanceDesired, InstanceStatus};
use crate::kv::{Expect, Revision, WatchEventKind, WatchStream};
use crate::records::{decode, Record, Versioned};
use crate::store::{versioned, RecordTxn, Store};
use crate::{keys, StoreError, StoreResult};

/// An instance as the API shows it, with the revisions of the two records it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionedInstance {
    pub instance: Instance,
    pub spec_revision: Revision,
    pub status_revision: Revision,
}

impl Store {
    /// Stores a new instance (spec and status in one transaction); `NameTaken` if its name
    /// is in use anywhere in the store.
    pub async fn create_instance(&self, instance: &Instance) -> StoreResult<VersionedInstance> {
        let (desired, status) = split(instance);
        let revision = self.commit(RecordTxn::new().create(&desired)?.create(&status)?).await?;
        Ok(VersionedInstance {
            instance: instance.clone(),
            spec_revision: revision,
            status_revision: revision,
        })
    }

    /// One instance, both records read at one revision.
    pub async fn instance(&self, id: &str) -> StoreResult<VersionedInstance> {
        let keys = vec![InstanceDesired::key_for(id)?, InstanceStatus::key_for(id)?];
        let snapshot = self.kv().get(&keys).await?;
        let mut kvs = snapshot.kvs.into_iter();
        let (Some(Some(spec)), status) = (kvs.next(), kvs.next().flatten()) else {
            return Err(StoreError::NotFound {
                kind: "instance",
                key: id.to_string(),
            });
        };
        let desired: Versioned<InstanceDesired> = versioned(&spec)?;
        let status: Option<Versioned<InstanceStatus>> = status.as_ref().map(versioned).transpose()?;
        Ok(assemble(desired, status))
    }

    /// Every instance, newest first, read at one revision (returned).
    pub async fn instances(&self) -> StoreResult<(Vec<VersionedInstance>, Revision)> {
        let (kvs, revision) = self.range_all(keys::INSTANCES).await?;
        let mut parts: BTreeMap<String, InstanceParts> = BTreeMap::new();
        for kv in &kvs {
            if let Some(id) = InstanceDesired::id_in_key(&kv.key) {
                parts.entry(id.to_string()).or_default().0 = Some(versioned(kv)?);
            } else if let Some(id) = InstanceStatus::id_in_key(&kv.key) {
                parts.entry(id.to_string()).or_default().1 = Some(versioned(kv)?);
            }
        }
        // A status without its spec cannot be made (writes require the spec); skip one anyway.
        let mut instances: Vec<VersionedInstance> = parts
            .into_values()
            .filter_map(|(desired, status)| Some(assemble(desired?, status)))
            .collect();
        instances.sort_by_key(|i| std::cmp::Reverse(i.instance.created_at));
        Ok((instances, revision))
    }

    /// The node's write: the observed part, if it is still at `expected` and the instance
    /// still exists (a status never brings back a removed instance).
    pub async fn update_instance_status(&self, status: &InstanceStatus, expected: Revision) -> StoreResult<Revision> {
        self.commit(
            RecordTxn::new()
                .require::<InstanceDesired>(&status.id, Expect::Present)?
                .update(status, expected)?,
        )
        .await
    }

    /// The API's and scheduler's write: the desired part, if it is still at `expected`.
    pub async fn update_instance_spec(&self, desired: &InstanceDesired, expected: Revision) -> StoreResult<Revision> {
        self.update(desired, expected).await
    }

    /// Removes an instance (spec, status and name) if its spec is still at `expected`.
    pub async fn remove_instance(&self, id: &str, expected_spec: Revision) -> StoreResult<Revision> {
        let current = self.instance(id).await?;
        let (desired, _) = split(&current.instance);
        let txn = RecordTxn::new()
            .delete(&desired, expected_spec)?
            .raw(crate::kv::Txn::new().delete(InstanceStatus::key_for(id)?));
        self.commit(txn).await
    }

    /// Changes to instances from revision `from` on.
    pub async fn watch_instances(&self, from: Revision) -> StoreResult<InstanceWatch> {
        Ok(InstanceWatch {
            stream: self.kv().watch(keys::INSTANCES, from).await?,
        })
    }
}

/// An instance's two records as a listing finds them.
type InstanceParts = (Option<Versioned<InstanceDesired>>, Option<Versioned<InstanceStatus>>);

fn assemble(desired: Versioned<InstanceDesired>, status: Option<Versioned<InstanceStatus>>) -> VersionedInstance {
    let (status, status_revision) = match status {
        Some(status) => (status.value, status.revision),
        None => {
            tracing::warn!(instance = %desired.value.id, "instance has no status record");
            (InstanceStatus::missing(&desired.value.id), 0)
        }
    };
    VersionedInstance {
        instance: compose(desired.value, status),
        spec_revision: desired.revision,
        status_revision,
    }
}

/// A change to an instance.
#[derive(Debug, Clone, PartialEq)]
pub enum InstanceEvent {
    Desired(Box<Versioned<InstanceDesired>>),
    Status(Box<Versioned<InstanceStatus>>),
    /// The spec was deleted: the instance is gone.
    Removed {
        id: String,
        revision: Revision,
    },
}

pub struct InstanceWatch {
    stream: WatchStream,
}

impl InstanceWatch {
    pub async fn next(&mut self) -> Option<StoreResult<InstanceEvent>> {
        loop {
            let event = match self.stream.next().await? {
                Ok(event) => event,
                Err(err) => return Some(Err(err)),
            };
            let put = event.kind == WatchEventKind::Put;
            if let Some(id) = InstanceDesired::id_in_key(&event.key) {
                return Some(if put {
                    decode(&event.key, &event.value).map(|value| {
                        InstanceEvent::Desired(Box::new(Versioned {
                            value,
                            revision: event.revision,
                        }))
                    })
                } else {
                    Ok(InstanceEvent::Removed {
                        id: id.to_string(),
                        revision: event.revision,
                    })
                });
            }
            if put && InstanceStatus::id_in_key(&event.key).is_some() {
                return Some(decode(&event.key, &event.value).map(|value| {
                    InstanceEvent::Status(Box::new(Versioned {
                        value,
                        revision: event.revision,
                    }))
                }));
            }
        }
    }
}
