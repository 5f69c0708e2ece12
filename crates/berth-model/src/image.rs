//! Images as the image store records them: content-addressed layers plus the runtime
//! config that `berth run` honours.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One layer of an image: the blob as stored/pushed and the uncompressed tar's digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LayerRecord {
    /// Digest of the blob as stored (compressed or not), `sha256:...`.
    pub blob_digest: String,
    pub media_type: String,
    pub blob_size: u64,
    /// Digest of the uncompressed tar (the image config's `diff_id`).
    pub diff_id: String,
}

/// The parts of an OCI image config that decide how a process starts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ImageRuntimeConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
}

/// A stored image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ImageRecord {
    /// Digest of the image config, `sha256:...` (Docker's image id).
    pub id: String,
    /// Digest of the manifest as stored (what a push uploads).
    pub manifest_digest: String,
    pub tags: Vec<String>,
    pub layers: Vec<LayerRecord>,
    pub config: ImageRuntimeConfig,
    pub architecture: String,
    pub os: String,
    /// Sum of layer blob sizes.
    pub size_bytes: u64,
    pub created_at: DateTime<Utc>,
    /// Where the image came from: "import:<path>", "pull:<ref>".
    pub source: String,
    /// A bootable disk (VMs only) rather than a container image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<DiskImage>,
}

/// A bootable disk stored as a read-only qcow2 base; VMs get copy-on-write overlays of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DiskImage {
    pub path: String,
    /// The format it was imported from (qcow2, raw, vmdk).
    pub source_format: String,
    pub virtual_size_bytes: u64,
    /// "uefi" (OVMF) or "bios" (SeaBIOS): from the partition table at import, or `--firmware`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<String>,
}
