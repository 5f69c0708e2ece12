//! Pull from and push to OCI Distribution registries, through the `oci-client` crate
//! (auth challenges, chunked uploads and the registry quirks are its job). Blobs stream to
//! disk and are verified against their digest before they enter the store.

use std::path::PathBuf;
use std::time::Duration;

use berth_model::api::ProgressEvent;
use berth_model::image::ImageRecord;
use futures_util::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::oci::{self, Descriptor};
use crate::{reference, ImageError, ImageStore, ProgressSink};

/// How to reach a registry.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Plain HTTP instead of HTTPS.
    pub insecure: bool,
    pub username: Option<String>,
    pub password: Option<String>,
}

/// TLS through rustls with the ring provider: no system crypto library is loaded, which
/// keeps every berth process (supervisors included) free of its relocations.
fn install_crypto_provider() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

impl RegistryOptions {
    fn client(&self) -> Client {
        install_crypto_provider();
        Client::new(ClientConfig {
            protocol: if self.insecure {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(120)),
            ..Default::default()
        })
    }

    fn auth(&self) -> RegistryAuth {
        match (&self.username, &self.password) {
            (Some(user), Some(password)) => RegistryAuth::Basic(user.clone(), password.clone()),
            _ => RegistryAuth::Anonymous,
        }
    }
}

fn registry_error<'a>(
    context: &str,
    reference: &'a Reference,
) -> impl Fn(oci_client::errors::OciDistributionError) -> ImageError + 'a {
    let context = context.to_string();
    move |e| ImageError::Registry(format!("{context} {reference}: {e}"))
}

const ACCEPTED_MANIFESTS: &[&str] = &[
    oci::OCI_MANIFEST,
    oci::OCI_INDEX,
    oci::DOCKER_MANIFEST,
    oci::DOCKER_MANIFEST_LIST,
];

impl ImageStore {
    pub async fn pull(
        &self,
        text: &str,
        options: &RegistryOptions,
        progress: ProgressSink,
    ) -> Result<ImageRecord, ImageError> {
        self.pull_tagged(text, options, progress, None).await
    }

    /// Fetches image `wanted` (a normalized `REGISTRY/REPO:TAG`) from another node of the
    /// cluster, which serves its images as a read-only registry at `peer` (`IP:PORT`, plain
    /// HTTP, Basic auth with the cluster's token). Every blob is verified against its digest,
    /// so the image keeps its id; it is tagged `wanted`, as on the node it came from.
    pub async fn pull_from_peer(&self, peer: &str, wanted: &str, token: &str) -> Result<ImageRecord, ImageError> {
        let options = RegistryOptions {
            insecure: true,
            username: Some("berth".into()),
            password: Some(token.to_string()),
        };
        let progress: ProgressSink = std::sync::Arc::new(|_| {});
        self.pull_tagged(&format!("{peer}/{wanted}"), &options, progress, Some(wanted))
            .await
    }

    async fn pull_tagged(
        &self,
        text: &str,
        options: &RegistryOptions,
        progress: ProgressSink,
        tag_as: Option<&str>,
    ) -> Result<ImageRecord, ImageError> {
        let reference = reference::parse_reference(text)?;
        let _guard = self.jobs.read().await;
        let client = options.client();
        let auth = options.auth();
        let (mut manifest_bytes, mut manifest_digest) = client
            .pull_manifest_raw(&reference, &auth, ACCEPTED_MANIFESTS)
            .await
            .map_err(registry_error("fetching manifest of", &reference))?;
        // oci-client has read the body by now; the bound at least keeps it from being parsed
        // and stored.
        self.check_document_size("manifest", &reference, manifest_bytes.len() as u64)?;
        let media_type = serde_json::from_slice::<serde_json::Value>(&manifest_bytes)
            .ok()
            .and_then(|v| v.get("mediaType").and_then(|m| m.as_str()).map(str::to_string))
            .unwrap_or_default();
        if oci::is_index(&media_type) || serde_json::from_slice::<oci::Manifest>(&manifest_bytes).is_err() {
            let index = oci::parse_index(&manifest_bytes)?;
            let chosen = oci::pick_platform(&index)?;
            let by_digest = reference.clone_with_digest(chosen.digest.clone());
            (manifest_bytes, manifest_digest) = client
                .pull_manifest_raw(&by_digest, &auth, ACCEPTED_MANIFESTS)
                .await
                .map_err(registry_error("fetching platform manifest of", &reference))?;
        }
        self.check_document_size("manifest", &reference, manifest_bytes.len() as u64)?;
        if crate::sha256_digest(&manifest_bytes) != manifest_digest {
            return Err(ImageError::DigestMismatch {
                what: format!("manifest of {reference}"),
                expected: manifest_digest,
                actual: crate::sha256_digest(&manifest_bytes),
            });
        }
        let manifest = oci::parse_manifest(&manifest_bytes)?;

        self.check_document_size("config", &reference, manifest.config.size)?;
        for layer in &manifest.layers {
            if layer.size > self.limits.max_layer_bytes {
                return Err(ImageError::TooLarge(format!(
                    "layer {} of {reference} is {} bytes, more than {}; raise [images] max_layer_size in the daemon config if the image is genuine",
                    layer.digest,
                    layer.size,
                    berth_model::ByteSize(self.limits.max_layer_bytes)
                )));
            }
        }
        let config_path = self
            .download_blob(&client, &reference, &manifest.config, &progress, false)
            .await?;
        let config = tokio::fs::read(&config_path)
            .await
            .map_err(crate::io_context("reading pulled config"))?;
        let document = oci::ImageConfigDocument::parse(&config)?;
        if manifest.layers.len() != document.diff_ids().len() {
            return Err(ImageError::Format(format!(
                "the manifest lists {} layers but the config lists {} diff_ids",
                manifest.layers.len(),
                document.diff_ids().len()
            )));
        }
        for (layer, diff_id) in manifest.layers.iter().zip(document.diff_ids()) {
            self.download_blob(&client, &reference, layer, &progress, true).await?;
            let this = self.clone();
            let (blob_digest, diff_id) = (layer.digest.clone(), diff_id.clone());
            let warnings = tokio::task::spawn_blocking(move || this.ensure_layer(&blob_digest, Some(&diff_id)))
                .await
                .map_err(|e| ImageError::Format(format!("unpack task failed: {e}")))??
                .1;
            for warning in warnings {
                progress(ProgressEvent::Message {
                    text: format!("warning: {warning}"),
                });
            }
            progress(ProgressEvent::Done {
                id: layer.digest.clone(),
                note: "pull complete".into(),
            });
        }
        let stored_manifest = self.store_blob_bytes(&manifest_bytes, "image manifest")?;
        let mut record = self.build_record(
            &document,
            manifest.config.digest.clone(),
            stored_manifest,
            &manifest.layers,
            document.diff_ids(),
            &format!("pull:{reference}"),
        );
        if let Ok(existing) = self.store.get_image(&record.id).await {
            record.tags = existing.tags;
        }
        self.store.put_image(&record).await?;
        let tag = match tag_as {
            Some(tag) => Some(tag.to_string()),
            None => reference::normalized_tag(&reference),
        };
        if let Some(tag) = tag {
            self.set_tag(&mut record, &tag).await?;
        }
        Ok(record)
    }

    fn check_document_size(&self, what: &str, reference: &Reference, size: u64) -> Result<(), ImageError> {
        let max = self.limits.max_document_bytes;
        if size > max {
            return Err(ImageError::TooLarge(format!(
                "the {what} of {reference} is {size} bytes, more than the {} berth accepts (real ones are a few KiB); raise [images] max_document_size in the daemon config if it is genuine",
                berth_model::ByteSize(max)
            )));
        }
        Ok(())
    }

    /// Streams a blob into the store unless it is there already; verifies its digest. The
    /// registry may send no more than the descriptor's size (the caller bounded that).
    async fn download_blob(
        &self,
        client: &Client,
        reference: &Reference,
        descriptor: &Descriptor,
        progress: &ProgressSink,
        report: bool,
    ) -> Result<PathBuf, ImageError> {
        let destination = self.blob_path(&descriptor.digest)?;
        if destination.is_file() {
            if report {
                progress(ProgressEvent::Done {
                    id: descriptor.digest.clone(),
                    note: "already exists".into(),
                });
            }
            return Ok(destination);
        }
        if report {
            progress(ProgressEvent::Started {
                id: descriptor.digest.clone(),
                total_bytes: Some(descriptor.size),
            });
        }
        let mut stream = client
            .pull_blob_stream(reference, descriptor.digest.as_str())
            .await
            .map_err(registry_error("fetching blob of", reference))?;
        let temp = self.temp_path("pull");
        let result = async {
            let mut file = tokio::fs::File::create(&temp)
                .await
                .map_err(crate::io_context(format!("creating {}", temp.display())))?;
            let mut hasher = Sha256::new();
            let mut received = 0u64;
            let mut last_report = 0u64;
            while let Some(chunk) = stream.stream.next().await {
                let chunk =
                    chunk.map_err(|e| ImageError::Registry(format!("downloading {}: {e}", descriptor.digest)))?;
                received += chunk.len() as u64;
                if received > descriptor.size {
                    return Err(ImageError::Format(format!(
                        "the registry sent more than the {} bytes the manifest gives for {}",
                        descriptor.size, descriptor.digest
                    )));
                }
                hasher.update(&chunk);
                file.write_all(&chunk)
                    .await
                    .map_err(crate::io_context(format!("writing {}", temp.display())))?;
                if report && received - last_report >= 256 * 1024 {
                    last_report = received;
                    progress(ProgressEvent::Progress {
                        id: descriptor.digest.clone(),
                        current_bytes: received,
                    });
                }
            }
            file.flush().await.map_err(crate::io_context("flushing blob"))?;
            let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
            if actual != descriptor.digest {
                return Err(ImageError::DigestMismatch {
                    what: format!("blob from {reference}"),
                    expected: descriptor.digest.clone(),
                    actual,
                });
            }
            tokio::fs::rename(&temp, &destination)
                .await
                .map_err(crate::io_context(format!("storing {}", destination.display())))?;
            Ok(destination.clone())
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&temp).await;
        }
        result
    }

    pub async fn push(
        &self,
        text: &str,
        options: &RegistryOptions,
        progress: ProgressSink,
    ) -> Result<ImageRecord, ImageError> {
        let image = self.resolve(text).await?;
        if image.disk.is_some() {
            return Err(ImageError::Format(format!(
                "{text} is a VM disk image; OCI registries hold container images only"
            )));
        }
        let reference = reference::parse_reference(text)?;
        if reference.tag().is_none() {
            return Err(ImageError::InvalidReference {
                reference: text.to_string(),
                reason: "push needs a tag (NAME:TAG), not a digest".into(),
            });
        }
        let client = options.client();
        let auth = options.auth();
        client
            .auth(&reference, &auth, RegistryOperation::Push)
            .await
            .map_err(registry_error("authenticating for", &reference))?;
        let manifest_bytes = self.read_blob(&image.manifest_digest, self.limits.max_document_bytes)?;
        let manifest = oci::parse_manifest(&manifest_bytes)?;
        let mut blobs: Vec<&Descriptor> = manifest.layers.iter().collect();
        blobs.push(&manifest.config);
        for blob in blobs {
            progress(ProgressEvent::Started {
                id: blob.digest.clone(),
                total_bytes: Some(blob.size),
            });
            let exists = client
                .blob_exists(&reference, &blob.digest)
                .await
                .map_err(registry_error("checking blob at", &reference))?;
            if exists {
                progress(ProgressEvent::Done {
                    id: blob.digest.clone(),
                    note: "already exists".into(),
                });
                continue;
            }
            let path = self.blob_path(&blob.digest)?;
            let file = tokio::fs::File::open(&path)
                .await
                .map_err(crate::io_context(format!("opening {}", path.display())))?;
            let id = blob.digest.clone();
            let sink = progress.clone();
            let chunks = futures_util::stream::unfold((file, 0u64), move |(mut file, sent)| {
                let id = id.clone();
                let sink = sink.clone();
                async move {
                    use tokio::io::AsyncReadExt;
                    let mut buffer = vec![0u8; 1 << 20];
                    match file.read(&mut buffer).await {
                        Ok(0) => None,
                        Ok(n) => {
                            buffer.truncate(n);
                            let sent = sent + n as u64;
                            sink(ProgressEvent::Progress {
                                id,
                                current_bytes: sent,
                            });
                            Some((Ok(bytes::Bytes::from(buffer)), (file, sent)))
                        }
                        Err(e) => Some((
                            Err(oci_client::errors::OciDistributionError::GenericError(Some(
                                e.to_string(),
                            ))),
                            (file, sent),
                        )),
                    }
                }
            });
            client
                .push_blob_stream(&reference, chunks, &blob.digest, Some(blob.size))
                .await
                .map_err(registry_error("uploading blob to", &reference))?;
            progress(ProgressEvent::Done {
                id: blob.digest.clone(),
                note: "pushed".into(),
            });
        }
        let content_type = if manifest.media_type.is_empty() {
            oci::OCI_MANIFEST.to_string()
        } else {
            manifest.media_type.clone()
        };
        let header = content_type
            .parse()
            .map_err(|_| ImageError::Format(format!("bad manifest media type '{content_type}'")))?;
        client
            .push_manifest_raw(&reference, manifest_bytes, header)
            .await
            .map_err(registry_error("uploading manifest to", &reference))?;
        Ok(image)
    }
}
