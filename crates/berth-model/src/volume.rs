//! Volumes: storage that outlives instances, attached to containers as directories and to
//! VMs as disks.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VolumeSnapshot {
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Volume {
    pub name: String,
    /// "local": a thin ext4 image on this host's disk; "nfs": on an NFS share.
    pub driver: String,
    pub size_bytes: u64,
    /// The image holding the volume: a file for `local`, an `nfs://` URL for `nfs`.
    pub path: String,
    /// Where the share is, for `nfs` volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nfs: Option<NfsLocation>,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub snapshots: Vec<VolumeSnapshot>,
}

/// How an `nfs` volume lives on its share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NfsMode {
    /// A qcow2 image file on the share (Cinder's way): VMs open it with QEMU's NFS client,
    /// containers through a qemu-storage-daemon FUSE export. Works without a kernel NFS client.
    Image,
    /// A directory on the share mounted by the kernel's NFS client; containers only.
    Mount,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NfsLocation {
    pub server: String,
    /// The exported path.
    pub share: String,
    pub mode: NfsMode,
    /// The image's file name in the share (mode `image`).
    #[serde(default)]
    pub file: String,
}

/// A volume attached to an instance (`-v NAME:/path[:ro]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VolumeMount {
    pub volume: String,
    /// Where the instance sees it.
    pub path: String,
    #[serde(default)]
    pub read_only: bool,
    /// The volume's image (filled in by the daemon): a path, or an `nfs://` URL.
    #[serde(default)]
    pub source: String,
    /// The image's format for VMs: "raw" (local) or "qcow2" (nfs); empty means raw.
    #[serde(default)]
    pub format: String,
    /// The host directory containers bind (filled in by the daemon).
    #[serde(default)]
    pub host_path: String,
}

impl VolumeMount {
    /// Parses `NAME:/path[:ro|:rw]`.
    pub fn parse(text: &str) -> Result<VolumeMount, String> {
        let parts: Vec<&str> = text.split(':').collect();
        let (volume, path, mode) = match parts.as_slice() {
            [volume, path] => (*volume, *path, None),
            [volume, path, mode] => (*volume, *path, Some(*mode)),
            _ => return Err(format!("'{text}' is not NAME:/path[:ro]")),
        };
        if volume.is_empty() {
            return Err(format!("'{text}': the volume name is empty"));
        }
        if !path.starts_with('/') || path.split('/').any(|c| c == "..") {
            return Err(format!("'{text}': the path must be absolute, without '..'"));
        }
        let read_only = match mode {
            None | Some("rw") => false,
            Some("ro") => true,
            Some(other) => return Err(format!("'{text}': mode '{other}' is neither ro nor rw")),
        };
        Ok(VolumeMount {
            volume: volume.to_string(),
            path: path.to_string(),
            read_only,
            source: String::new(),
            format: String::new(),
            host_path: String::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mounts() {
        let m = VolumeMount::parse("data:/var/lib/db:ro").unwrap();
        assert_eq!(
            (m.volume.as_str(), m.path.as_str(), m.read_only),
            ("data", "/var/lib/db", true)
        );
        assert!(!VolumeMount::parse("data:/x").unwrap().read_only);
        assert!(VolumeMount::parse("data").is_err());
        assert!(VolumeMount::parse("data:relative").is_err());
        assert!(VolumeMount::parse("data:/x:rx").is_err());
        assert!(VolumeMount::parse("data:/../etc").is_err());
    }
}
