//! The image store (after containerd's content store): blobs addressed by digest and
//! verified on the way in, layers unpacked once per diff_id and shared read-only by every
//! instance through overlayfs, and image records in the state store.
//!
//! Layout under the store root:
//! - `blobs/sha256/<hex>` — manifests, configs and layer blobs exactly as pushed/pulled
//! - `layers/<hex of diff_id>/` — unpacked layer trees (overlayfs lower directories)
//! - `tmp/` — work in progress; renamed into place only when verified

mod import;
pub mod oci;
pub mod reference;
mod registry;
pub mod source;
pub mod unpack;
pub mod user;

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_model::api::ProgressEvent;
use berth_model::image::ImageRecord;
use berth_store::{Store, StoreError};
use sha2::{Digest, Sha256};
use thiserror::Error;

pub use registry::RegistryOptions;

#[derive(Debug, Error)]
pub enum ImageError {
    #[error("image not found: {0}; import it with `berth image import` or pull it with `berth image pull`")]
    NotFound(String),
    #[error("invalid image reference '{reference}': {reason}")]
    InvalidReference { reference: String, reason: String },
    /// What was looked up cannot name an image (so none is found).
    #[error("invalid image reference '{reference}': {reason}")]
    NotAReference { reference: String, reason: String },
    #[error("image id prefix {0} matches more than one image; give more digits")]
    AmbiguousId(String),
    #[error("refused hostile archive: {0}")]
    Hostile(String),
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("unsupported image format: {0}")]
    Format(String),
    /// A document or layer beyond `ImageLimits`.
    #[error("refused: {0}")]
    TooLarge(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("registry: {0}")]
    Registry(String),
    #[error("image {0} is used by instance {1}; remove the instance first or use --force")]
    InUse(String, String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Receives progress of long jobs (pull, push, import).
pub type ProgressSink = Arc<dyn Fn(ProgressEvent) + Send + Sync>;

/// Bounds on what an image source (a registry, an archive) can make the store read or hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLimits {
    /// A manifest, index or config: real ones are a few KiB; 4 MiB, as the registry itself
    /// and containers/image allow.
    pub max_document_bytes: u64,
    /// One layer, compressed or unpacked; a decompression bomb stops here.
    pub max_layer_bytes: u64,
}

impl Default for ImageLimits {
    fn default() -> Self {
        ImageLimits {
            max_document_bytes: oci::MAX_DOCUMENT_BYTES,
            max_layer_bytes: 32 << 30,
        }
    }
}

#[derive(Clone)]
pub struct ImageStore {
    root: PathBuf,
    store: Store,
    /// Held shared by imports and pulls, exclusively by garbage collection, so a blob
    /// stored by a job whose image is not recorded yet is never collected.
    jobs: Arc<tokio::sync::RwLock<()>>,
    limits: ImageLimits,
}

pub(crate) fn io_context(context: impl Into<String>) -> impl FnOnce(io::Error) -> ImageError {
    let context = context.into();
    move |source| ImageError::Io { context, source }
}

/// Checks a `sha256:<hex>` digest and returns the hex part.
pub(crate) fn digest_hex(digest: &str) -> Result<&str, ImageError> {
    match digest.strip_prefix("sha256:") {
        Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) => {
            Ok(hex)
        }
        _ => Err(ImageError::Format(format!(
            "'{digest}' is not a sha256 digest (sha256:<64 lowercase hex digits>)"
        ))),
    }
}

pub(crate) fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

impl ImageStore {
    pub fn open(root: &Path, store: Store) -> Result<Self, ImageError> {
        for dir in ["blobs/sha256", "layers", "tmp"] {
            let path = root.join(dir);
            fs::create_dir_all(&path).map_err(io_context(format!("creating {}", path.display())))?;
        }
        // Leftovers of jobs interrupted by a crash.
        if let Ok(entries) = fs::read_dir(root.join("tmp")) {
            for entry in entries.flatten() {
                let path = entry.path();
                let _ = if path.is_dir() {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
            }
        }
        Ok(ImageStore {
            root: root.to_path_buf(),
            store,
            jobs: Arc::new(tokio::sync::RwLock::new(())),
            limits: ImageLimits::default(),
        })
    }

    /// The same store with other bounds (the daemon's `[images]` settings).
    pub fn with_limits(mut self, limits: ImageLimits) -> Self {
        self.limits = limits;
        self
    }

    pub fn limits(&self) -> ImageLimits {
        self.limits
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn blob_path(&self, digest: &str) -> Result<PathBuf, ImageError> {
        Ok(self.root.join("blobs/sha256").join(digest_hex(digest)?))
    }

    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).map(|p| p.is_file()).unwrap_or(false)
    }

    /// The file of a blob the store holds (a layer, a config, a manifest), for serving it to
    /// another node; `None` for a digest it does not hold or that is malformed.
    pub fn blob_file(&self, digest: &str) -> Option<PathBuf> {
        self.blob_path(digest).ok().filter(|p| p.is_file())
    }

    /// An image's manifest as stored (the bytes its manifest digest is of).
    pub fn manifest_bytes(&self, image: &ImageRecord) -> Result<Vec<u8>, ImageError> {
        self.read_blob(&image.manifest_digest, self.limits.max_document_bytes)
    }

    /// The unpacked tree of a layer; overlayfs uses it as a lower directory.
    pub fn layer_path(&self, diff_id: &str) -> Result<PathBuf, ImageError> {
        Ok(self.root.join("layers").join(digest_hex(diff_id)?))
    }

    /// Lower directories for an overlay mount of `image`, top layer first.
    pub fn lower_dirs(&self, image: &ImageRecord) -> Result<Vec<PathBuf>, ImageError> {
        image
            .layers
            .iter()
            .rev()
            .map(|layer| self.layer_path(&layer.diff_id))
            .collect()
    }

    /// A fresh path under `tmp/`.
    pub(crate) fn temp_path(&self, purpose: &str) -> PathBuf {
        let suffix: u64 = rand::random();
        self.root.join("tmp").join(format!("{purpose}-{suffix:016x}"))
    }

    /// Copies `reader` into the blob store, verifying `expected` if given. Returns the
    /// digest and size. Nothing is stored if the digest does not match.
    pub(crate) fn store_blob(
        &self,
        mut reader: impl Read,
        expected: Option<&str>,
        what: &str,
    ) -> Result<(String, u64), ImageError> {
        let temp = self.temp_path("blob");
        let result = (|| {
            let mut file = File::create(&temp).map_err(io_context(format!("creating {}", temp.display())))?;
            let mut hasher = Sha256::new();
            let mut buffer = vec![0u8; 256 * 1024];
            let mut size = 0u64;
            loop {
                let n = reader
                    .read(&mut buffer)
                    .map_err(io_context(format!("reading {what}")))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buffer[..n]);
                file.write_all(&buffer[..n])
                    .map_err(io_context(format!("writing {}", temp.display())))?;
                size += n as u64;
            }
            let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
            if let Some(expected) = expected {
                if expected != digest {
                    return Err(ImageError::DigestMismatch {
                        what: what.to_string(),
                        expected: expected.to_string(),
                        actual: digest,
                    });
                }
            }
            let destination = self.blob_path(&digest)?;
            fs::rename(&temp, &destination).map_err(io_context(format!("storing {}", destination.display())))?;
            Ok((digest, size))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result
    }

    pub(crate) fn store_blob_bytes(&self, data: &[u8], what: &str) -> Result<String, ImageError> {
        self.store_blob(data, None, what).map(|(digest, _)| digest)
    }

    pub(crate) fn read_blob(&self, digest: &str, limit: u64) -> Result<Vec<u8>, ImageError> {
        let path = self.blob_path(digest)?;
        let mut data = Vec::new();
        File::open(&path)
            .map_err(io_context(format!("opening blob {digest}")))?
            .take(limit + 1)
            .read_to_end(&mut data)
            .map_err(io_context(format!("reading blob {digest}")))?;
        if data.len() as u64 > limit {
            return Err(ImageError::Format(format!(
                "blob {digest} is larger than {limit} bytes"
            )));
        }
        Ok(data)
    }

    /// Unpacks a stored layer blob unless its tree already exists, and checks that the
    /// uncompressed stream has `expected_diff_id` when that is known. Returns the diff_id
    /// and any warnings (skipped device nodes).
    pub(crate) fn ensure_layer(
        &self,
        blob_digest: &str,
        expected_diff_id: Option<&str>,
    ) -> Result<(String, Vec<String>), ImageError> {
        if let Some(diff_id) = expected_diff_id {
            if self.layer_path(diff_id)?.is_dir() {
                return Ok((diff_id.to_string(), Vec::new()));
            }
        }
        let blob =
            File::open(self.blob_path(blob_digest)?).map_err(io_context(format!("opening blob {blob_digest}")))?;
        let temp = self.temp_path("layer");
        fs::create_dir(&temp).map_err(io_context(format!("creating {}", temp.display())))?;
        // The layer's root is a `/` (of a VM's disk, say): 0755 unless the archive says.
        fs::set_permissions(&temp, fs::Permissions::from_mode(0o755))
            .map_err(io_context(format!("setting the mode of {}", temp.display())))?;
        let result = (|| {
            let report = unpack::unpack_layer(blob, &temp, self.limits.max_layer_bytes)?;
            if let Some(expected) = expected_diff_id {
                if expected != report.diff_id {
                    return Err(ImageError::DigestMismatch {
                        what: format!("layer {blob_digest} (uncompressed)"),
                        expected: expected.to_string(),
                        actual: report.diff_id,
                    });
                }
            }
            let destination = self.layer_path(&report.diff_id)?;
            if let Err(e) = fs::rename(&temp, &destination) {
                // Another job unpacked the same layer meanwhile: theirs is as good as ours.
                if !destination.is_dir() {
                    return Err(io_context(format!("storing {}", destination.display()))(e));
                }
                let _ = fs::remove_dir_all(&temp);
            }
            Ok((report.diff_id, report.warnings))
        })();
        if result.is_err() {
            let _ = fs::remove_dir_all(&temp);
        }
        result
    }

    pub async fn list(&self) -> Result<Vec<ImageRecord>, ImageError> {
        Ok(self.store.list_images().await?)
    }

    /// Finds an image by tag, `name@digest`, id or unique id prefix.
    pub async fn resolve(&self, text: &str) -> Result<ImageRecord, ImageError> {
        let images = self.store.list_images().await?;
        let id_like = text.strip_prefix("sha256:").unwrap_or(text);
        let looks_like_id = id_like.len() >= 4 && id_like.bytes().all(|b| b.is_ascii_hexdigit());
        if let Ok(reference) = reference::parse_reference(text) {
            if let Some(digest) = reference.digest() {
                if let Some(image) = images.iter().find(|i| i.manifest_digest == digest) {
                    return Ok(image.clone());
                }
            } else if let Some(tag) = reference::normalized_tag(&reference) {
                if let Some(image) = images.iter().find(|i| i.tags.contains(&tag)) {
                    return Ok(image.clone());
                }
            }
        } else if !looks_like_id {
            // A lookup: nothing is found by what is not a reference, and the error says why.
            if let Err(ImageError::InvalidReference { reference, reason }) = reference::parse_reference(text) {
                return Err(ImageError::NotAReference { reference, reason });
            }
        }
        if looks_like_id {
            let matches: Vec<&ImageRecord> = images
                .iter()
                .filter(|i| {
                    i.id.trim_start_matches("sha256:")
                        .starts_with(&id_like.to_ascii_lowercase())
                })
                .collect();
            match matches.as_slice() {
                [one] => return Ok((*one).clone()),
                [] => {}
                _ => {
                    return Err(ImageError::AmbiguousId(text.to_string()));
                }
            }
        }
        Err(ImageError::NotFound(text.to_string()))
    }

    /// Points `tag` at `image`, taking it from any image that had it.
    pub async fn set_tag(&self, image: &mut ImageRecord, tag: &str) -> Result<(), ImageError> {
        for mut other in self.store.list_images().await? {
            if other.id != image.id && other.tags.iter().any(|t| t == tag) {
                other.tags.retain(|t| t != tag);
                self.store.put_image(&other).await?;
            }
        }
        if !image.tags.iter().any(|t| t == tag) {
            image.tags.push(tag.to_string());
        }
        self.store.put_image(image).await?;
        Ok(())
    }

    /// Records an image made elsewhere (a VM disk), tagged `tag` if given.
    pub async fn add_record(&self, mut image: ImageRecord, tag: Option<&str>) -> Result<ImageRecord, ImageError> {
        // The same content imported again keeps the tags it already has.
        if let Ok(existing) = self.store.get_image(&image.id).await {
            for tag in existing.tags {
                if !image.tags.contains(&tag) {
                    image.tags.push(tag);
                }
            }
        }
        self.store.put_image(&image).await?;
        if let Some(tag) = tag {
            let reference = reference::parse_reference(tag)?;
            let normalized = reference::normalized_tag(&reference).ok_or_else(|| ImageError::InvalidReference {
                reference: tag.to_string(),
                reason: "a tag cannot be a digest".into(),
            })?;
            self.set_tag(&mut image, &normalized).await?;
        }
        Ok(image)
    }

    /// `berth image tag SOURCE TARGET`
    pub async fn tag(&self, source: &str, target: &str) -> Result<ImageRecord, ImageError> {
        let mut image = self.resolve(source).await?;
        let target_ref = reference::parse_reference(target)?;
        let tag = reference::normalized_tag(&target_ref).ok_or_else(|| ImageError::InvalidReference {
            reference: target.to_string(),
            reason: "a tag target cannot be a digest".into(),
        })?;
        self.set_tag(&mut image, &tag).await?;
        Ok(image)
    }

    /// Removes a tag, or the whole image when it was referred to by id or its last tag
    /// goes. `in_use` names an instance using the image, if any; removal is then refused
    /// unless `force`. Returns what was untagged and whether the image was deleted.
    pub async fn remove(
        &self,
        text: &str,
        in_use: Option<String>,
        force: bool,
    ) -> Result<(Vec<String>, bool), ImageError> {
        let mut image = self.resolve(text).await?;
        let named_tag = reference::parse_reference(text)
            .ok()
            .and_then(|r| reference::normalized_tag(&r))
            .filter(|tag| image.tags.contains(tag));
        let untagged: Vec<String>;
        if let Some(tag) = named_tag.filter(|_| image.tags.len() > 1) {
            image.tags.retain(|t| *t != tag);
            self.store.put_image(&image).await?;
            return Ok((vec![tag], false));
        } else {
            untagged = image.tags.clone();
        }
        if let (Some(instance), false) = (in_use, force) {
            return Err(ImageError::InUse(text.to_string(), instance));
        }
        self.store.delete_image(&image.id).await?;
        if let Some(disk) = &image.disk {
            let _ = fs::remove_file(&disk.path);
        }
        self.collect_garbage().await?;
        Ok((untagged, true))
    }

    /// Deletes blobs and layer trees no image refers to.
    pub async fn collect_garbage(&self) -> Result<usize, ImageError> {
        let _exclusive = self.jobs.write().await;
        let images = self.store.list_images().await?;
        let mut keep_blobs = std::collections::HashSet::new();
        let mut keep_layers = std::collections::HashSet::new();
        for image in &images {
            keep_blobs.insert(digest_hex(&image.id)?.to_string());
            keep_blobs.insert(digest_hex(&image.manifest_digest)?.to_string());
            for layer in &image.layers {
                keep_blobs.insert(digest_hex(&layer.blob_digest)?.to_string());
                keep_layers.insert(digest_hex(&layer.diff_id)?.to_string());
            }
        }
        let root = self.root.clone();
        let removed = tokio::task::spawn_blocking(move || {
            let mut removed = 0;
            for (dir, keep) in [("blobs/sha256", &keep_blobs), ("layers", &keep_layers)] {
                let Ok(entries) = fs::read_dir(root.join(dir)) else {
                    continue;
                };
                for entry in entries.flatten() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if keep.contains(&name) {
                        continue;
                    }
                    let path = entry.path();
                    let result = if path.is_dir() {
                        fs::remove_dir_all(&path)
                    } else {
                        fs::remove_file(&path)
                    };
                    match result {
                        Ok(()) => removed += 1,
                        Err(e) => {
                            tracing::warn!(path = %path.display(), error = %e, "could not remove unused image data")
                        }
                    }
                }
            }
            removed
        })
        .await
        .map_err(|e| ImageError::Format(format!("garbage collection task failed: {e}")))?;
        Ok(removed)
    }
}
