//! Stacks as desired state: `berth apply` keeps what it applied as a record in the store
//! (the cluster's store in a cluster, so every node lists the same stacks); the stack's
//! instances are ordinary instances labelled with it.

use berth_model::stack::StackRecord;
use berth_store::StoreError;
use chrono::Utc;

use crate::engine::Engine;
use crate::error::{EngineError, EngineResult};

impl Engine {
    /// Keeps `record` as stack `name`'s desired state.
    pub async fn put_stack(&self, name: &str, mut record: StackRecord) -> EngineResult<StackRecord> {
        record.name = name.to_string();
        record
            .check()
            .map_err(|(field, message)| EngineError::invalid(&field, message))?;
        record.applied_at = Utc::now();
        self.store.put(&record).await?;
        Ok(record)
    }

    pub async fn stacks(&self) -> EngineResult<Vec<StackRecord>> {
        let listing = self.store.list::<StackRecord>().await?;
        Ok(listing.items.into_iter().map(|item| item.value).collect())
    }

    pub async fn stack(&self, name: &str) -> EngineResult<StackRecord> {
        match self.store.try_get::<StackRecord>(name).await {
            Ok(Some(found)) => Ok(found.value),
            Ok(None) => Err(EngineError::not_found(format!(
                "no stack {name}: `berth stack ls` lists them"
            ))),
            Err(StoreError::InvalidKey(_)) => Err(EngineError::invalid(
                "name",
                "a stack name is 1-40 letters, digits, '-' or '_'",
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// Forgets the stack's record (its instances are removed by the caller first).
    pub async fn remove_stack(&self, name: &str) -> EngineResult<()> {
        self.stack(name).await?;
        self.store.remove::<StackRecord>(name).await?;
        Ok(())
    }
}
