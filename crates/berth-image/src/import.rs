//! `berth image import`: a rootfs tarball (plain, gzip, zstd), an OCI image layout (a
//! directory or a tar of one), or a `docker save` archive. Every blob is verified against
//! the digest the archive claims, every layer against its diff_id.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use berth_model::api::ProgressEvent;
use berth_model::image::{ImageRecord, LayerRecord};
use chrono::Utc;
use serde::Deserialize;

use crate::oci::{self, Descriptor};
use crate::source::{classify_archive, ArchiveKind, ArchiveSource, DirectorySource, TarFileSource};
use crate::unpack::Compression;
use crate::{digest_hex, io_context, reference, sha256_digest, ImageError, ImageStore, ProgressSink};

/// An image read from an archive, stored but not yet recorded.
pub(crate) struct PendingImage {
    pub record: ImageRecord,
    /// Normalized tags the archive names.
    pub tags: Vec<String>,
}

/// One entry of a `docker save` manifest.json.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerSaveEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

const REF_NAME: &str = "org.opencontainers.image.ref.name";
const CONTAINERD_NAME: &str = "io.containerd.image.name";

impl ImageStore {
    /// Imports every image in the archive at `path`; `tag` names the result (the first
    /// image when the archive holds several).
    pub async fn import(
        &self,
        path: &Path,
        tag: Option<&str>,
        progress: ProgressSink,
    ) -> Result<Vec<ImageRecord>, ImageError> {
        let tag = tag
            .map(|t| {
                let parsed = reference::parse_reference(t)?;
                reference::normalized_tag(&parsed).ok_or_else(|| ImageError::InvalidReference {
                    reference: t.to_string(),
                    reason: "an import tag cannot be a digest".into(),
                })
            })
            .transpose()?;
        let _guard = self.jobs.read().await;
        let this = self.clone();
        let path = path.to_path_buf();
        let pending = tokio::task::spawn_blocking(move || this.import_blocking(&path, &progress))
            .await
            .map_err(|e| ImageError::Format(format!("import task failed: {e}")))??;
        let mut records = Vec::new();
        for (index, mut image) in pending.into_iter().enumerate() {
            let mut tags = image.tags;
            if index == 0 {
                if let Some(tag) = &tag {
                    tags = vec![tag.clone()];
                }
            }
            self.store.put_image(&image.record).await?;
            for tag in tags {
                self.set_tag(&mut image.record, &tag).await?;
            }
            records.push(image.record);
        }
        Ok(records)
    }

    fn import_blocking(&self, path: &Path, progress: &ProgressSink) -> Result<Vec<PendingImage>, ImageError> {
        let meta = std::fs::metadata(path).map_err(io_context(format!("reading {}", path.display())))?;
        let source_label = format!("import:{}", path.display());
        if meta.is_dir() {
            let source = DirectorySource::new(path);
            return if source.exists("oci-layout") && source.exists("index.json") && !source.exists("manifest.json") {
                self.import_oci_layout(&source, &source_label, progress)
            } else if source.exists("manifest.json") {
                self.import_docker_save(&source, &source_label, progress)
            } else {
                Err(ImageError::Format(format!(
                    "{} is a directory but neither an OCI layout (oci-layout, index.json) nor a docker save folder (manifest.json)",
                    path.display()
                )))
            };
        }
        if !meta.is_file() {
            // A device or FIFO would be read without end (/dev/zero fills the disk).
            return Err(ImageError::Format(format!(
                "{} is not a regular file or a directory; give an archive or an image layout",
                path.display()
            )));
        }
        let kind = classify_archive(File::open(path).map_err(io_context(format!("opening {}", path.display())))?)?;
        if kind == ArchiveKind::Rootfs {
            return Ok(vec![self.import_rootfs(path, &source_label, progress)?]);
        }
        // Image archives are read in place, which needs an uncompressed tar file.
        let mut head = [0u8; 4];
        let head_len = File::open(path)
            .and_then(|mut f| f.read(&mut head))
            .map_err(io_context(format!("reading {}", path.display())))?;
        let decompressed_copy = if Compression::detect(&head[..head_len]) != Compression::None {
            progress(ProgressEvent::Message {
                text: "decompressing archive".into(),
            });
            let temp = self.temp_path("archive");
            let (_, stream) = crate::unpack::decompressed(
                File::open(path).map_err(io_context(format!("opening {}", path.display())))?,
            )
            .map_err(io_context("decompressing archive"))?;
            let max = self.limits.max_layer_bytes;
            let mut limited = crate::unpack::SizeLimited::new(stream, max);
            let mut out = File::create(&temp).map_err(io_context(format!("creating {}", temp.display())))?;
            if let Err(e) = io::copy(&mut limited, &mut out) {
                drop(out);
                let _ = std::fs::remove_file(&temp);
                if limited.exceeded() {
                    return Err(ImageError::TooLarge(format!(
                        "{} decompresses to more than {}; raise [images] max_layer_size in the daemon config if it is genuine",
                        path.display(),
                        berth_model::ByteSize(max)
                    )));
                }
                return Err(io_context("decompressing archive")(e));
            }
            Some(temp)
        } else {
            None
        };
        let result = (|| {
            let source = TarFileSource::open(decompressed_copy.as_deref().unwrap_or(path))?;
            match kind {
                ArchiveKind::OciLayout => self.import_oci_layout(&source, &source_label, progress),
                _ => self.import_docker_save(&source, &source_label, progress),
            }
        })();
        if let Some(temp) = decompressed_copy {
            let _ = std::fs::remove_file(temp);
        }
        result
    }

    fn import_rootfs(
        &self,
        path: &Path,
        source_label: &str,
        progress: &ProgressSink,
    ) -> Result<PendingImage, ImageError> {
        progress(ProgressEvent::Message {
            text: format!("importing rootfs tarball {}", path.display()),
        });
        let file = File::open(path).map_err(io_context(format!("opening {}", path.display())))?;
        let (blob_digest, blob_size) = self.store_blob(file, None, "rootfs tarball")?;
        let compression = self.blob_compression(&blob_digest)?;
        let (diff_id, warnings) = self.ensure_layer(&blob_digest, None)?;
        report_warnings(progress, &warnings);
        let created = Utc::now();
        let config = oci::config_for_rootfs(&diff_id, &created.to_rfc3339());
        let layer = Descriptor {
            media_type: compression.oci_layer_media_type().into(),
            digest: blob_digest,
            size: blob_size,
            ..Default::default()
        };
        self.record_image(&config, vec![layer], &[diff_id], source_label, progress)
    }

    fn blob_compression(&self, digest: &str) -> Result<Compression, ImageError> {
        let mut head = [0u8; 4];
        let n = File::open(self.blob_path(digest)?)
            .and_then(|mut f| f.read(&mut head))
            .map_err(io_context(format!("reading blob {digest}")))?;
        Ok(Compression::detect(&head[..n]))
    }

    /// Stores config and manifest for layers already stored and unpacked.
    pub(crate) fn record_image(
        &self,
        config: &[u8],
        layers: Vec<Descriptor>,
        diff_ids: &[String],
        source_label: &str,
        progress: &ProgressSink,
    ) -> Result<PendingImage, ImageError> {
        let document = oci::ImageConfigDocument::parse(config)?;
        let config_digest = self.store_blob_bytes(config, "image config")?;
        let config_descriptor = Descriptor {
            media_type: oci::OCI_CONFIG.into(),
            digest: config_digest.clone(),
            size: config.len() as u64,
            ..Default::default()
        };
        let manifest = oci::manifest_for(&config_descriptor, &layers);
        let manifest_digest = self.store_blob_bytes(&manifest, "image manifest")?;
        let record = self.build_record(
            &document,
            config_digest,
            manifest_digest,
            &layers,
            diff_ids,
            source_label,
        );
        progress(ProgressEvent::Message {
            text: format!("stored image {}", crate::reference::familiar_name(&record.id)),
        });
        Ok(PendingImage {
            record,
            tags: Vec::new(),
        })
    }

    pub(crate) fn build_record(
        &self,
        document: &oci::ImageConfigDocument,
        config_digest: String,
        manifest_digest: String,
        layers: &[Descriptor],
        diff_ids: &[String],
        source_label: &str,
    ) -> ImageRecord {
        ImageRecord {
            id: config_digest,
            manifest_digest,
            tags: Vec::new(),
            layers: layers
                .iter()
                .zip(diff_ids)
                .map(|(layer, diff_id)| LayerRecord {
                    blob_digest: layer.digest.clone(),
                    media_type: layer.media_type.clone(),
                    blob_size: layer.size,
                    diff_id: diff_id.clone(),
                })
                .collect(),
            config: document.runtime_config(),
            architecture: document.architecture.clone(),
            os: document.os.clone(),
            size_bytes: layers.iter().map(|l| l.size).sum(),
            created_at: Utc::now(),
            source: source_label.to_string(),
            disk: None,
        }
    }

    fn import_oci_layout(
        &self,
        source: &dyn ArchiveSource,
        source_label: &str,
        progress: &ProgressSink,
    ) -> Result<Vec<PendingImage>, ImageError> {
        let index = oci::parse_index(&source.read_to_vec("index.json", self.limits.max_document_bytes)?)?;
        let mut images = Vec::new();
        for descriptor in &index.manifests {
            let name = descriptor
                .annotations
                .as_ref()
                .and_then(|a| a.get(CONTAINERD_NAME).or_else(|| a.get(REF_NAME)))
                .and_then(|name| reference::parse_reference(name).ok())
                .and_then(|r| reference::normalized_tag(&r));
            let manifest_descriptor = if oci::is_index(&descriptor.media_type) {
                let nested = oci::parse_index(&self.read_verified(source, &descriptor.digest)?)?;
                oci::pick_platform(&nested)?.clone()
            } else {
                descriptor.clone()
            };
            let mut image = self.import_manifest(source, &manifest_descriptor.digest, source_label, progress)?;
            // A bare "latest" ref name says nothing about the repository; only full names count.
            if let Some(name) = name.filter(|n| n.contains('/')) {
                image.tags.push(name);
            }
            images.push(image);
        }
        if images.is_empty() {
            return Err(ImageError::Format("the OCI layout's index.json lists no images".into()));
        }
        Ok(images)
    }

    /// Reads a blob of the archive and checks its digest.
    fn read_verified(&self, source: &dyn ArchiveSource, digest: &str) -> Result<Vec<u8>, ImageError> {
        let data = source.read_to_vec(
            &format!("blobs/sha256/{}", digest_hex(digest)?),
            self.limits.max_document_bytes,
        )?;
        let actual = sha256_digest(&data);
        if actual != digest {
            return Err(ImageError::DigestMismatch {
                what: format!("blob {digest}"),
                expected: digest.to_string(),
                actual,
            });
        }
        Ok(data)
    }

    fn import_manifest(
        &self,
        source: &dyn ArchiveSource,
        manifest_digest: &str,
        source_label: &str,
        progress: &ProgressSink,
    ) -> Result<PendingImage, ImageError> {
        let manifest_bytes = self.read_verified(source, manifest_digest)?;
        let manifest = oci::parse_manifest(&manifest_bytes)?;
        let config = self.read_verified(source, &manifest.config.digest)?;
        let document = oci::ImageConfigDocument::parse(&config)?;
        check_layer_count(manifest.layers.len(), document.diff_ids().len())?;
        for (layer, diff_id) in manifest.layers.iter().zip(document.diff_ids()) {
            let name = format!("blobs/sha256/{}", digest_hex(&layer.digest)?);
            progress(ProgressEvent::Started {
                id: layer.digest.clone(),
                total_bytes: Some(layer.size),
            });
            if !self.has_blob(&layer.digest) {
                self.store_blob(
                    source.open(&name)?,
                    Some(&layer.digest),
                    &format!("layer {}", layer.digest),
                )?;
            }
            let (_, warnings) = self.ensure_layer(&layer.digest, Some(diff_id))?;
            report_warnings(progress, &warnings);
            progress(ProgressEvent::Done {
                id: layer.digest.clone(),
                note: "unpacked".into(),
            });
        }
        let config_digest = self.store_blob_bytes(&config, "image config")?;
        let stored_manifest = self.store_blob_bytes(&manifest_bytes, "image manifest")?;
        let record = self.build_record(
            &document,
            config_digest,
            stored_manifest,
            &manifest.layers,
            document.diff_ids(),
            source_label,
        );
        Ok(PendingImage {
            record,
            tags: Vec::new(),
        })
    }

    fn import_docker_save(
        &self,
        source: &dyn ArchiveSource,
        source_label: &str,
        progress: &ProgressSink,
    ) -> Result<Vec<PendingImage>, ImageError> {
        let entries: Vec<DockerSaveEntry> =
            serde_json::from_slice(&source.read_to_vec("manifest.json", self.limits.max_document_bytes)?)
                .map_err(|e| ImageError::Format(format!("docker save manifest.json: {e}")))?;
        if entries.is_empty() {
            return Err(ImageError::Format(
                "the docker save manifest.json lists no images".into(),
            ));
        }
        let mut images = Vec::new();
        for entry in entries {
            let config = source.read_to_vec(&entry.config, self.limits.max_document_bytes)?;
            if let Some(claimed) = claimed_digest(&entry.config) {
                let actual = sha256_digest(&config);
                if actual != claimed {
                    return Err(ImageError::DigestMismatch {
                        what: format!("config {}", entry.config),
                        expected: claimed,
                        actual,
                    });
                }
            }
            let document = oci::ImageConfigDocument::parse(&config)?;
            check_layer_count(entry.layers.len(), document.diff_ids().len())?;
            let mut layers = Vec::new();
            for (layer_path, diff_id) in entry.layers.iter().zip(document.diff_ids()) {
                progress(ProgressEvent::Started {
                    id: diff_id.clone(),
                    total_bytes: None,
                });
                let claimed = claimed_digest(layer_path);
                let (blob_digest, size) = self.store_blob(source.open(layer_path)?, claimed.as_deref(), layer_path)?;
                let compression = self.blob_compression(&blob_digest)?;
                let (_, warnings) = self.ensure_layer(&blob_digest, Some(diff_id))?;
                report_warnings(progress, &warnings);
                progress(ProgressEvent::Done {
                    id: diff_id.clone(),
                    note: "unpacked".into(),
                });
                layers.push(Descriptor {
                    media_type: compression.oci_layer_media_type().into(),
                    digest: blob_digest,
                    size,
                    ..Default::default()
                });
            }
            let mut image = self.record_image(&config, layers, document.diff_ids(), source_label, progress)?;
            for tag in entry.repo_tags.unwrap_or_default() {
                let parsed = reference::parse_reference(&tag)?;
                if let Some(normalized) = reference::normalized_tag(&parsed) {
                    image.tags.push(normalized);
                }
            }
            images.push(image);
        }
        Ok(images)
    }
}

/// Newer `docker save` names members `blobs/sha256/<hex>`; that name is a digest claim.
fn claimed_digest(member: &str) -> Option<String> {
    let hex = member.trim_start_matches("./").strip_prefix("blobs/sha256/")?;
    (hex.len() == 64).then(|| format!("sha256:{hex}"))
}

fn check_layer_count(layers: usize, diff_ids: usize) -> Result<(), ImageError> {
    if layers != diff_ids {
        return Err(ImageError::Format(format!(
            "the manifest lists {layers} layers but the config lists {diff_ids} diff_ids"
        )));
    }
    Ok(())
}

fn report_warnings(progress: &ProgressSink, warnings: &[String]) {
    for warning in warnings {
        tracing::warn!("{warning}");
        progress(ProgressEvent::Message {
            text: format!("warning: {warning}"),
        });
    }
}
