//! Stacks (`berth apply -f compose.yaml`): the desired state of an application made of
//! services, kept in the store as one record per stack. Its instances carry the stack's
//! and service's labels; the record says what the last apply asked for.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::instance::InstanceKind;

/// Instance label: the create request a stack's replica was made from (`berth apply`), so
/// a rollback or a drain's start-first replacement can make it again.
pub const REQUEST_LABEL: &str = "berth.compose-request";

/// The most services one stack may hold (a record stays far below the store's limit).
pub const MAX_SERVICES: usize = 200;

/// A stack as its last `apply` defined it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StackRecord {
    /// The path's name (set by the daemon from it).
    #[serde(default)]
    pub name: String,
    /// In start order (each after what it depends on).
    #[schema(min_items = 1, max_items = 200)]
    pub services: Vec<StackService>,
    /// Keys of the file berth did not act on, listed when it was applied.
    #[serde(default)]
    #[schema(max_items = 1000)]
    pub unsupported: Vec<String>,
    /// When the daemon stored it (set by the daemon).
    #[serde(default = "Utc::now")]
    pub applied_at: DateTime<Utc>,
}

/// One service of a stack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StackService {
    #[schema(pattern = "^[a-zA-Z0-9][a-zA-Z0-9_-]{0,39}$")]
    pub name: String,
    pub kind: InstanceKind,
    #[schema(min_length = 1, max_length = 512)]
    pub image: String,
    /// Replicas asked for (`deploy.replicas`).
    #[schema(minimum = 1, maximum = 1000)]
    #[serde(deserialize_with = "whole_number")]
    pub replicas: u32,
    /// The hash of its definition, which its up-to-date replicas carry as a label.
    #[schema(max_length = 128)]
    pub hash: String,
    /// Other services of the stack (as the file named them; checked when it was applied).
    #[serde(default)]
    #[schema(max_items = 200)]
    pub depends_on: Vec<String>,
    /// Whether its replicas run a health check.
    #[serde(default)]
    pub healthcheck: bool,
}

/// A service name or stack name as berth takes it: 1-40 letters, digits, '-' or '_',
/// starting with a letter or digit (it begins instance names).
pub fn valid_name(name: &str) -> bool {
    (1..=40).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && name.as_bytes()[0].is_ascii_alphanumeric()
}

impl StackRecord {
    /// Why the record cannot be kept, if it cannot: the field and what to do.
    pub fn check(&self) -> Result<(), (String, String)> {
        if !valid_name(&self.name) {
            return Err(("name".into(), "a stack name is 1-40 letters, digits, '-' or '_'".into()));
        }
        if self.services.is_empty() || self.services.len() > MAX_SERVICES {
            return Err(("services".into(), format!("a stack has 1 to {MAX_SERVICES} services")));
        }
        for (index, service) in self.services.iter().enumerate() {
            let at = |field: &str| format!("services[{index}].{field}");
            if !valid_name(&service.name) {
                return Err((at("name"), "a service name is 1-40 letters, digits, '-' or '_'".into()));
            }
            if !(1..=1000).contains(&service.replicas) {
                return Err((at("replicas"), "give 1 to 1000 replicas".into()));
            }
            if service.image.is_empty() || service.image.len() > 512 {
                return Err((at("image"), "give the image reference (at most 512 bytes)".into()));
            }
            if service.hash.len() > 128 {
                return Err((at("hash"), "at most 128 bytes".into()));
            }
            if service.depends_on.len() > MAX_SERVICES {
                return Err((at("depends_on"), format!("at most {MAX_SERVICES} services")));
            }
        }
        if self.unsupported.len() > 1000 {
            return Err(("unsupported".into(), "at most 1000 keys".into()));
        }
        Ok(())
    }
}

/// A count written as JSON Schema's integer allows: `3` or `3.0` (what a client whose
/// numbers are floats sends).
fn whole_number<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    let number = serde_json::Number::deserialize(deserializer)?;
    let whole = match (number.as_u64(), number.as_f64()) {
        (Some(n), _) => Some(n),
        (None, Some(f)) if f.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&f) => Some(f as u64),
        _ => None,
    };
    whole
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| serde::de::Error::custom(format!("{number} is not a whole number from 0 to {}", u32::MAX)))
}
