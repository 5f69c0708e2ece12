//! The JSON documents of an image: index, manifest and config. Docker's schema 2 and OCI's
//! image spec share one shape, so these structs read both; they keep only the fields berth
//! acts on and ignore the rest.

use std::collections::HashMap;

use berth_model::image::ImageRuntimeConfig;
use serde::{Deserialize, Serialize};

use crate::ImageError;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Largest manifest, index or config accepted; real ones are a few KiB.
pub const MAX_DOCUMENT_BYTES: u64 = 4 << 20;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<HashMap<String, String>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default)]
    pub media_type: String,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default)]
    pub media_type: String,
    pub manifests: Vec<Descriptor>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ProcessConfig {
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ImageConfigDocument {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    config: Option<ProcessConfig>,
    rootfs: RootFs,
}

impl ImageConfigDocument {
    pub fn parse(data: &[u8]) -> Result<Self, ImageError> {
        serde_json::from_slice(data).map_err(|e| ImageError::Format(format!("image config: {e}")))
    }

    pub fn diff_ids(&self) -> &[String] {
        &self.rootfs.diff_ids
    }

    pub fn runtime_config(&self) -> ImageRuntimeConfig {
        let process = self.config.clone().unwrap_or_default();
        ImageRuntimeConfig {
            entrypoint: process.entrypoint.unwrap_or_default(),
            cmd: process.cmd.unwrap_or_default(),
            env: process.env.unwrap_or_default(),
            working_dir: process.working_dir.unwrap_or_default(),
            user: process.user.unwrap_or_default(),
        }
    }
}

pub fn parse_manifest(data: &[u8]) -> Result<Manifest, ImageError> {
    let manifest: Manifest =
        serde_json::from_slice(data).map_err(|e| ImageError::Format(format!("image manifest: {e}")))?;
    if manifest.schema_version != 2 {
        return Err(ImageError::Format(format!(
            "image manifest schema version {} (only 2 is supported)",
            manifest.schema_version
        )));
    }
    Ok(manifest)
}

pub fn parse_index(data: &[u8]) -> Result<Index, ImageError> {
    serde_json::from_slice(data).map_err(|e| ImageError::Format(format!("image index: {e}")))
}

/// True for media types of an index (manifest list) rather than a single manifest.
pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
}

/// Picks the manifest for this host (linux/amd64) from an index; falls back to the only
/// entry when there is one without a platform.
pub fn pick_platform(index: &Index) -> Result<&Descriptor, ImageError> {
    let arch = host_architecture();
    index
        .manifests
        .iter()
        .find(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == arch)
        })
        .or_else(|| match index.manifests.as_slice() {
            [only] if only.platform.is_none() => Some(only),
            _ => None,
        })
        .or_else(|| {
            index
                .manifests
                .iter()
                .find(|d| d.platform.is_none() && !is_attestation(d))
        })
        .ok_or_else(|| ImageError::Format(format!("the image index has no manifest for linux/{arch}")))
}

fn is_attestation(descriptor: &Descriptor) -> bool {
    descriptor
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key("vnd.docker.reference.type"))
}

/// The OCI name of this machine's architecture.
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// A config for an image made from a plain rootfs tarball.
pub fn config_for_rootfs(diff_id: &str, created: &str) -> Vec<u8> {
    let config = serde_json::json!({
        "architecture": host_architecture(),
        "os": "linux",
        "created": created,
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
        },
        "rootfs": { "type": "layers", "diff_ids": [diff_id] },
        "history": [{ "created": created, "created_by": "berth image import" }]
    });
    serde_json::to_vec(&config).unwrap_or_default()
}

/// An OCI manifest for a config and layers already in the store.
pub fn manifest_for(config: &Descriptor, layers: &[Descriptor]) -> Vec<u8> {
    let manifest = Manifest {
        schema_version: 2,
        media_type: OCI_MANIFEST.into(),
        config: config.clone(),
        layers: layers.to_vec(),
    };
    serde_json::to_vec(&manifest).unwrap_or_default()
}
