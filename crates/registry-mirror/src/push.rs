//! Pushing a local image to a registry: each blob is checked with HEAD and uploaded only
//! if missing (streamed from the blob store), then the stored manifest is PUT under the
//! target tag, byte for byte, so the registry's digest equals the local one.

use std::sync::Arc;

use futures::StreamExt;

use crate::auth::Credentials;
use crate::client::{RegistryClient, Repository};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::images::ImageStore;
use crate::reference::Reference;

/// Progress of a push, per blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushEvent {
    /// "Layer already exists".
    BlobExists { digest: Digest },
    /// "Pushing" (`size` bytes).
    BlobUploading { digest: Digest, size: u64 },
    /// "Pushed".
    BlobPushed { digest: Digest },
    /// `<tag>: digest: <digest> size: <size>`.
    Done {
        tag: String,
        digest: Digest,
        size: u64,
    },
}

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushOutcome {
    pub manifest: Digest,
    pub manifest_size: u64,
    pub blobs_uploaded: usize,
}

/// Pushes images out of one [`ImageStore`].
#[derive(Debug, Clone)]
pub struct Pusher {
    client: RegistryClient,
    images: Arc<ImageStore>,
}

impl Pusher {
    pub fn new(client: RegistryClient, images: Arc<ImageStore>) -> Self {
        Pusher { client, images }
    }

    /// Pushes the local image `target` names (it must be tagged locally, as with
    /// `docker push`) to `target`'s registry and repository.
    pub async fn push(
        &self,
        target: &Reference,
        credentials: &Credentials,
        progress: &(dyn Fn(PushEvent) + Send + Sync),
    ) -> Result<PushOutcome> {
        let tagged;
        let target = if target.tag().is_none() && target.digest().is_none() {
            tagged = target.with_tag(crate::reference::DEFAULT_TAG)?;
            &tagged
        } else {
            target
        };
        let key = target.to_string();
        let record = self.images.resolve(&key)?;
        let repo = Repository {
            host: target.registry_host().to_string(),
            path: target.path().to_string(),
            credentials: credentials.clone(),
        };
        let blobs = self.images.blobs().clone();
        let mut uploads: Vec<(Digest, u64)> = record
            .layers
            .iter()
            .map(|l| (l.digest.clone(), l.size))
            .collect();
        let cfg_size = blobs.size(&record.id)?.ok_or_else(|| Error::NotPushable {
            id: record.id.clone(),
        })?;
        uploads.push((record.id.clone(), cfg_size));
        let mut blobs_uploaded = 0;
        for (digest, size) in uploads {
            if self
                .client
                .blob_exists(&repo, &digest, "pull,push")
                .await?
                .is_some()
            {
                progress(PushEvent::BlobExists { digest });
                continue;
            }
            if !blobs.contains(&digest) {
                return Err(Error::NotPushable {
                    id: record.id.clone(),
                });
            }
            progress(PushEvent::BlobUploading {
                digest: digest.clone(),
                size,
            });
            let path = blobs.path(&digest);
            let body = move || -> reqwest::Body {
                match std::fs::File::open(&path) {
                    Ok(f) => {
                        reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(
                            tokio::fs::File::from_std(f),
                            256 * 1024,
                        ))
                    }
                    Err(e) => reqwest::Body::wrap_stream(
                        futures::stream::once(async move { Err::<bytes::Bytes, _>(e) }).boxed(),
                    ),
                }
            };
            self.client.upload_blob(&repo, &digest, size, &body).await?;
            blobs_uploaded += 1;
            progress(PushEvent::BlobPushed { digest });
        }
        let manifest = blobs.read(&record.manifest)?;
        let tag = target
            .tag()
            .unwrap_or(crate::reference::DEFAULT_TAG)
            .to_string();
        let reported = self
            .client
            .put_manifest(&repo, &tag, &record.manifest_media_type, &manifest)
            .await?;
        if let Some(r) = reported.as_deref().and_then(|r| Digest::parse(r).ok()) {
            if r != record.manifest {
                return Err(Error::DigestMismatch {
                    what: "pushed manifest",
                    expected: record.manifest.clone(),
                    actual: r,
                });
            }
        }
        progress(PushEvent::Done {
            tag,
            digest: record.manifest.clone(),
            size: manifest.len() as u64,
        });
        Ok(PushOutcome {
            manifest: record.manifest,
            manifest_size: manifest.len() as u64,
            blobs_uploaded,
        })
    }
}
