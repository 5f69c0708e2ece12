//! berth's key layout, one versioned prefix for everything it keeps, as Kubernetes keeps
//! `/registry/...`: `/berth/v1/<kind>/<id>` for records, `/berth/v1/names/<kind>/<name>` for
//! names that must stay unique across the cluster. A new layout gets a new version prefix.

use crate::{StoreError, StoreResult};

/// Every key berth writes starts with this.
pub const ROOT: &str = "/berth/v1/";

/// Instances: `<id>/spec` (desired: written by the API and the scheduler) and `<id>/status`
/// (observed: written by the node that runs it) side by side, so one range reads both.
pub const INSTANCES: &str = "/berth/v1/instances/";
pub const INSTANCE_NAMES: &str = "/berth/v1/names/instances/";
pub const IMAGES: &str = "/berth/v1/images/";
pub const VOLUMES: &str = "/berth/v1/volumes/";
pub const NETWORKS: &str = "/berth/v1/networks/";
/// Stacks (`berth apply`): what the last apply of each asked for.
pub const STACKS: &str = "/berth/v1/stacks/";
/// Cluster members: `<name>/member` (what the node last published, the operator's cordon)
/// and `<name>/presence` (held by the node's lease).
pub const NODES: &str = "/berth/v1/nodes/";
/// Projects and their quotas.
pub const PROJECTS: &str = "/berth/v1/projects/";
/// Held while a project's quota is checked and its new instance recorded (on a lease).
pub const PROJECT_LOCKS: &str = "/berth/v1/locks/projects/";
/// The volumes, networks and images each project owns (`kind:project:name`).
pub const PROJECT_RESOURCES: &str = "/berth/v1/project-resources/";
/// Clients trusted over HTTPS, by certificate fingerprint; their names are unique.
pub const TRUSTED_CLIENTS: &str = "/berth/v1/trust/clients/";
pub const TRUSTED_CLIENT_NAMES: &str = "/berth/v1/names/trust/";
/// One-time join tokens, by the hash of their secret.
pub const JOIN_TOKENS: &str = "/berth/v1/trust/tokens/";
/// Small facts kept as plain strings (the schema version, the local node id mirror).
pub const META: &str = "/berth/v1/meta/";

/// The longest id or name that goes into a key (ids are 64 hex digits, `sha256:` + 64 for
/// images, names at most 64 characters).
const MAX_COMPONENT_BYTES: usize = 256;

/// One path component of a key: an id or a name. `/` would let one record's key reach into
/// another's, and a NUL or an empty component cannot be ranged over.
pub fn component<'a>(what: &str, value: &'a str) -> StoreResult<&'a str> {
    if value.is_empty()
        || value.len() > MAX_COMPONENT_BYTES
        || value.contains('/')
        || value.chars().any(|c| c.is_control())
    {
        return Err(StoreError::InvalidKey(format!(
            "{what} '{}' cannot be stored: it must be 1 to {MAX_COMPONENT_BYTES} bytes without '/' or control characters",
            value.escape_default()
        )));
    }
    Ok(value)
}

/// A whole key, as a transaction is about to write or check it.
pub fn validate(key: &str) -> StoreResult<()> {
    if !key.starts_with(ROOT) || key.len() == ROOT.len() || key.contains('\0') {
        return Err(StoreError::InvalidKey(format!(
            "key '{}' is outside berth's space {ROOT}",
            key.escape_default()
        )));
    }
    Ok(())
}

/// The first key after every key that starts with `prefix` (etcd's `range_end`).
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Only a prefix of 0xff bytes (not a berth key) gets here: "to the end of the keyspace".
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_cannot_escape_their_directory() {
        assert!(component("name", "web").is_ok());
        assert!(component("id", "sha256:abc").is_ok());
        for bad in ["", "a/b", "..\u{0}", "x\n", &"a".repeat(300)] {
            assert!(component("name", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn prefix_end_is_the_next_key() {
        assert_eq!(prefix_end("/berth/v1/images/"), b"/berth/v1/images0".to_vec());
        assert!(validate("/berth/v1/images/x").is_ok());
        assert!(validate("/other/x").is_err());
        assert!(validate(ROOT).is_err());
    }
}
