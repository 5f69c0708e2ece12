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

/// A volume attached to an instance (`-v NAME:/path[:ro]`, `--mount type=volume,...`; parsed
/// by `crate::mount`).
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
