//! Who this daemon is on its host: a node id and a short tag kept in the state directory
//! (`node.json`, not only in the store, which may live elsewhere), from which the names of what
//! it leaves on the host derive — default bridge, iptables chains, cgroup parent — so two
//! daemons with different state directories never share them.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use berth_net::firewall::Firewall;
use serde::{Deserialize, Serialize};

use crate::config::DEFAULT_STATE_DIR;

pub const NODE_FILE: &str = "node.json";

/// The daemon's lock file in its state directory (held while it runs).
pub const LOCK_FILE: &str = "daemon.lock";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeIdentity {
    /// Stable id of this node, recorded on every instance.
    pub id: String,
    /// Short tag in host-wide names (bridge, chains, cgroup parent). None for the daemon of the
    /// default state directory, which keeps the names berth has always used (`bb-default`,
    /// `BERTH-…`, `/berth`).
    #[serde(default)]
    pub tag: Option<String>,
}

fn valid_tag(tag: &str) -> bool {
    (1..=8).contains(&tag.len()) && tag.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
}

impl NodeIdentity {
    /// The identity kept in `state_dir`, if there is one.
    pub fn read(state_dir: &Path) -> Result<Option<NodeIdentity>> {
        let path = state_dir.join(NODE_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let identity: NodeIdentity = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a berth node identity; restore it or remove it",
                path.display()
            )
        })?;
        if identity.id.is_empty() || identity.tag.as_deref().is_some_and(|t| !valid_tag(t)) {
            bail!(
                "{}: the id must not be empty and the tag must be 1-8 lowercase letters or digits",
                path.display()
            );
        }
        Ok(Some(identity))
    }

    /// The identity kept in `state_dir`, made on first start: the id the store already knew
    /// (`stored_id`, from before the identity file existed) or a new one.
    pub fn load_or_create(state_dir: &Path, stored_id: Option<String>) -> Result<NodeIdentity> {
        if let Some(identity) = Self::read(state_dir)? {
            return Ok(identity);
        }
        // A store from before identity files holds instances whose cgroups, chains and
        // bridge carry berth's untagged names: keep them (a clash with another daemon is
        // then refused at start, naming the config key).
        let upgraded = stored_id.is_some();
        let id = stored_id.unwrap_or_else(|| {
            let hostname = nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "node".into());
            format!("{hostname}-{:08x}", rand::random::<u32>())
        });
        let tag =
            (!upgraded && state_dir != Path::new(DEFAULT_STATE_DIR)).then(|| format!("{:08x}", rand::random::<u32>()));
        let identity = NodeIdentity { id, tag };
        let path = state_dir.join(NODE_FILE);
        let partial = state_dir.join(format!("{NODE_FILE}.partial"));
        let text = serde_json::to_string_pretty(&identity).context("encoding the node identity")?;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&partial)
            .with_context(|| format!("creating {}", partial.display()))?;
        file.write_all(text.as_bytes())
            .and_then(|_| file.sync_all())
            .with_context(|| format!("writing {}", partial.display()))?;
        std::fs::rename(&partial, &path).with_context(|| format!("creating {}", path.display()))?;
        Ok(identity)
    }

    /// The bridge of the default network when the config names none.
    pub fn default_bridge(&self) -> String {
        match &self.tag {
            None => "bb-default".into(),
            Some(tag) => format!("bb-{tag}"),
        }
    }

    /// Every instance cgroup of this node lives under this parent, in each hierarchy.
    pub fn cgroup_parent(&self) -> String {
        match &self.tag {
            None => "berth".into(),
            Some(tag) => format!("berth-{tag}"),
        }
    }

    /// This node's iptables chains.
    pub fn firewall(&self) -> Result<Firewall> {
        Firewall::new(self.tag.as_deref()).map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// The note berth leaves on the bridges of this node (their alias), naming the owner.
    pub fn owner_note(&self, state_dir: &Path) -> String {
        format!("berth node={} state={}", self.id, state_dir.display())
    }
}

/// The daemon a bridge's owner note names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeOwner {
    pub node: String,
    pub state_dir: PathBuf,
}

impl BridgeOwner {
    pub fn parse(note: &str) -> Option<BridgeOwner> {
        let rest = note.strip_prefix("berth node=")?;
        let (node, state_dir) = rest.split_once(" state=")?;
        Some(BridgeOwner {
            node: node.to_string(),
            state_dir: PathBuf::from(state_dir),
        })
    }

    /// Whether a daemon runs on that state directory now (it holds the directory's lock).
    pub fn running(&self) -> bool {
        daemon_running(&self.state_dir)
    }

    /// "the berth daemon of DIR (node ID, running)".
    pub fn describe(&self) -> String {
        format!(
            "the berth daemon of {} (node {}, {})",
            self.state_dir.display(),
            self.node,
            if self.running() { "running" } else { "not running" }
        )
    }
}

/// Whether a daemon holds the lock of `state_dir`.
pub fn daemon_running(state_dir: &Path) -> bool {
    let Ok(file) = std::fs::File::open(state_dir.join(LOCK_FILE)) else {
        return false;
    };
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(_unlocked_on_drop) => false,
        Err((_, errno)) => errno == nix::errno::Errno::EWOULDBLOCK,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_derive_from_the_tag() {
        let legacy = NodeIdentity {
            id: "h-1".into(),
            tag: None,
        };
        assert_eq!(legacy.default_bridge(), "bb-default");
        assert_eq!(legacy.cgroup_parent(), "berth");
        assert_eq!(legacy.firewall().unwrap().dnat_chain(), "BERTH-DNAT");
        let tagged = NodeIdentity {
            id: "h-2".into(),
            tag: Some("1a2b3c4d".into()),
        };
        assert_eq!(tagged.default_bridge(), "bb-1a2b3c4d");
        assert!(tagged.default_bridge().len() <= 15);
        assert_eq!(tagged.cgroup_parent(), "berth-1a2b3c4d");
        assert_eq!(tagged.firewall().unwrap().dnat_chain(), "BERTH-1a2b3c4d-DNAT");
    }

    #[test]
    fn kept_in_the_state_directory() {
        let dir = std::env::temp_dir().join(format!("berth-identity-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let made = NodeIdentity::load_or_create(&dir, None).unwrap();
        assert!(made.tag.as_deref().is_some_and(valid_tag));
        assert_eq!(NodeIdentity::load_or_create(&dir, None).unwrap(), made);
        // A store from before identity files keeps its id and berth's untagged names.
        let upgraded_dir = dir.join("upgraded");
        std::fs::create_dir_all(&upgraded_dir).unwrap();
        let upgraded = NodeIdentity::load_or_create(&upgraded_dir, Some("old-id".into())).unwrap();
        assert_eq!(upgraded.id, "old-id");
        assert_eq!(upgraded.tag, None);
        std::fs::write(dir.join(NODE_FILE), "{\"id\":\"x\",\"tag\":\"../etc\"}").unwrap();
        assert!(NodeIdentity::read(&dir).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn owner_notes_round_trip() {
        let identity = NodeIdentity {
            id: "h-3".into(),
            tag: None,
        };
        let note = identity.owner_note(Path::new("/var/lib/berth"));
        let owner = BridgeOwner::parse(&note).unwrap();
        assert_eq!(owner.node, "h-3");
        assert_eq!(owner.state_dir, PathBuf::from("/var/lib/berth"));
        assert!(BridgeOwner::parse("uplink to the lab").is_none());
    }
}
