//! Pulling an image: resolve the manifest (selecting a platform from an index), fetch the
//! config, then download the missing layers in parallel while each one is verified,
//! stored and handed — decompressed, as it streams — to the caller's [`LayerSink`].
//!
//! ```text
//!  registry --GET blob--> [async: progress] --chunks--> [blocking thread per layer]
//!                                                          | tee -> BlobWriter (sha256)
//!                                                          | gunzip / unzstd
//!                                                          | diff-ID hasher
//!                                                          v
//!                                                   LayerSink::unpack -> StagedLayer
//!  end of stream: blob digest ok? -> blob committed -> diff ID ok? -> staged.commit()
//!                 otherwise       -> partial blob removed, staged layer dropped (aborted)
//! ```
//!
//! Does not own: where layers are unpacked (the sink: in berthd, the runtime's snapshot
//! store, glued there so this crate does not depend on the runtime), or turning
//! [`PullEvent`]s into Docker's JSON progress stream (the API layer).

use std::io::{self, BufRead, BufReader, Read};
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest as _, Sha256};
use tokio::sync::{mpsc, Semaphore};

use crate::auth::Credentials;
use crate::blob_store::{BlobStore, BlobWriter, IngestLock};
use crate::client::{RegistryClient, Repository};
use crate::digest::Digest;
use crate::error::{BoxError, Error, Result};
use crate::images::{ImageRecord, ImageStore, LayerRecord};
use crate::manifest::{select_platform, Compression, Descriptor, ImageConfig, Manifest, Platform};
use crate::reference::Reference;

/// One layer as the sink sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRef {
    /// Position in the image, 0 = bottom.
    pub index: usize,
    /// The blob (compressed) digest.
    pub digest: Digest,
    /// Digest of the uncompressed tar, from the image config.
    pub diff_id: Digest,
    /// Chain ID of the stack up to and including this layer (a natural snapshot key).
    pub chain_id: Digest,
}

/// A layer unpacked into a staging place, waiting for its download to be verified.
/// Dropping it without [`StagedLayer::commit`] must discard it.
pub trait StagedLayer: Send {
    /// Makes the layer visible (e.g. renames the staging directory into place).
    fn commit(self: Box<Self>) -> std::result::Result<(), BoxError>;
}

/// Where pulled layers go. berthd implements it over the runtime's snapshot store with
/// `berth_runtime::unpack::unpack_layer`. Methods are called from blocking threads.
pub trait LayerSink: Send + Sync {
    /// Whether this layer is already unpacked (then it is not unpacked again).
    fn is_unpacked(&self, layer: &LayerRef) -> bool;
    /// Reads the uncompressed layer tar from `tar` into a staging place. `tar` fails with
    /// an error if the download fails; the pull drains whatever the sink leaves unread.
    fn unpack(
        &self,
        layer: &LayerRef,
        tar: &mut dyn Read,
    ) -> std::result::Result<Box<dyn StagedLayer>, BoxError>;
}

/// Progress of a pull, per layer, in the order Docker reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullEvent {
    /// The reference resolved to a manifest (an index digest for multi-platform images).
    Resolved { reference: String, digest: Digest },
    /// "Already exists": the layer is stored and unpacked.
    LayerExists { layer: Digest },
    /// "Pulling fs layer": the layer will be fetched.
    LayerQueued { layer: Digest },
    /// "Downloading": bytes received so far of `total`.
    LayerProgress {
        layer: Digest,
        done: u64,
        total: u64,
    },
    /// "Verifying Checksum".
    LayerVerifying { layer: Digest },
    /// "Download complete".
    LayerDownloaded { layer: Digest },
    /// "Pull complete": verified, stored and unpacked.
    LayerComplete { layer: Digest },
    /// All done. `new` is false when the image was already present ("Image is up to date").
    Done {
        image_id: Digest,
        digest: Digest,
        new: bool,
    },
}

impl PullEvent {
    /// Docker's `(id, status, progressDetail(current,total))` for the JSON stream.
    pub fn docker_status(&self) -> (Option<String>, String, Option<(u64, u64)>) {
        let id = |d: &Digest| Some(d.short().to_string());
        match self {
            PullEvent::Resolved { reference, .. } => {
                (None, format!("Pulling from {reference}"), None)
            }
            PullEvent::LayerExists { layer } => (id(layer), "Already exists".into(), None),
            PullEvent::LayerQueued { layer } => (id(layer), "Pulling fs layer".into(), None),
            PullEvent::LayerProgress { layer, done, total } => {
                (id(layer), "Downloading".into(), Some((*done, *total)))
            }
            PullEvent::LayerVerifying { layer } => (id(layer), "Verifying Checksum".into(), None),
            PullEvent::LayerDownloaded { layer } => (id(layer), "Download complete".into(), None),
            PullEvent::LayerComplete { layer } => (id(layer), "Pull complete".into(), None),
            PullEvent::Done { digest, .. } => (None, format!("Digest: {digest}"), None),
        }
    }
}

/// Options of one pull.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// Platform to select from an index (default linux/amd64).
    pub platform: Platform,
    pub credentials: Credentials,
}

/// What a pull did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullOutcome {
    pub image_id: Digest,
    /// Digest of what the reference resolved to (index or manifest).
    pub digest: Digest,
    /// Digest of the platform's image manifest.
    pub manifest: Digest,
    /// Blobs downloaded (config and layers; manifests not counted).
    pub blobs_fetched: usize,
    pub bytes_fetched: u64,
    /// Whether the image was new to the store.
    pub new: bool,
}

/// Runs pulls into one [`ImageStore`].
#[derive(Clone)]
pub struct Puller {
    client: RegistryClient,
    images: Arc<ImageStore>,
    downloads: Arc<Semaphore>,
}

impl std::fmt::Debug for Puller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Puller").finish_non_exhaustive()
    }
}

/// Progress callback type.
pub type ProgressFn<'a> = &'a (dyn Fn(PullEvent) + Send + Sync);

/// Attempts per layer download when the failure is retryable (network, 5xx, 429).
const DOWNLOAD_ATTEMPTS: u32 = 3;

/// Emit "Downloading" at most every this many bytes (and at the end).
const PROGRESS_STEP: u64 = 512 * 1024;

impl Puller {
    /// `max_concurrent_downloads` as Docker's daemon option (Docker's default is 3).
    pub fn new(
        client: RegistryClient,
        images: Arc<ImageStore>,
        max_concurrent_downloads: usize,
    ) -> Self {
        Puller {
            client,
            images,
            downloads: Arc::new(Semaphore::new(max_concurrent_downloads.max(1))),
        }
    }

    /// Pulls `reference` into the store, unpacking layers into `sink` if given.
    pub async fn pull(
        &self,
        reference: &Reference,
        opts: &PullOptions,
        sink: Option<Arc<dyn LayerSink>>,
        progress: ProgressFn<'_>,
    ) -> Result<PullOutcome> {
        // `docker pull busybox` means busybox:latest: tag what a bare name resolves to.
        let tagged;
        let reference = if reference.tag().is_none() && reference.digest().is_none() {
            tagged = reference.with_tag(crate::reference::DEFAULT_TAG)?;
            &tagged
        } else {
            reference
        };
        // Keeps GC from collecting blobs this pull stores before it records the image.
        let _activity = self.images.begin_activity_async().await;
        let repo = Repository {
            host: reference.registry_host().to_string(),
            path: reference.path().to_string(),
            credentials: opts.credentials.clone(),
        };
        let blobs = self.images.blobs().clone();
        let top = self
            .client
            .get_manifest(&repo, &reference.manifest_reference())
            .await?;
        progress(PullEvent::Resolved {
            reference: reference.to_string(),
            digest: top.digest.clone(),
        });
        let (index, fetched) =
            match Manifest::parse(&top.body, top.content_type.as_deref(), &top.digest)? {
                Manifest::Index(idx) => {
                    let chosen = select_platform(&idx, &opts.platform).ok_or_else(|| {
                        Error::NoMatchingPlatform {
                            reference: reference.to_string(),
                            platform: opts.platform.to_string(),
                        }
                    })?;
                    let child = self
                        .client
                        .get_manifest(&repo, &chosen.digest.to_string())
                        .await?;
                    (Some(top), child)
                }
                Manifest::Image(_) => (None, top),
            };
        let manifest = match Manifest::parse(
            &fetched.body,
            fetched.content_type.as_deref(),
            &fetched.digest,
        )? {
            Manifest::Image(m) => m,
            Manifest::Index(_) => {
                return Err(Error::UnsupportedMediaType {
                    what: "manifest (an index inside an index)",
                    media_type: fetched.content_type.clone().unwrap_or_default(),
                })
            }
        };
        for l in &manifest.layers {
            if !Compression::layer_media_type_supported(&l.media_type) {
                return Err(Error::UnsupportedMediaType {
                    what: "layer",
                    media_type: l.media_type.clone(),
                });
            }
        }

        // Config: small, fetched whole and verified.
        let mut blobs_fetched = 0;
        let mut bytes_fetched = 0;
        let cfg_desc = &manifest.config;
        if !blobs.contains(&cfg_desc.digest) {
            let data = self.fetch_small_blob(&repo, cfg_desc).await?;
            blobs_fetched += 1;
            bytes_fetched += data.len() as u64;
            let b = blobs.clone();
            let d = cfg_desc.digest.clone();
            blocking(move || b.put_verified(&d, &data)).await?;
        }
        let cfg_bytes = blobs.read(&cfg_desc.digest)?;
        let config = ImageConfig::parse(&cfg_bytes, &cfg_desc.digest)?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(Error::LayerCountMismatch {
                manifest: fetched.digest.clone(),
                config: cfg_desc.digest.clone(),
                layers: manifest.layers.len(),
                diff_ids: config.rootfs.diff_ids.len(),
            });
        }
        let chains = crate::manifest::chain_ids(&config.rootfs.diff_ids);
        let layer_refs: Vec<LayerRef> = manifest
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| LayerRef {
                index: i,
                digest: l.digest.clone(),
                diff_id: config.rootfs.diff_ids[i].clone(),
                chain_id: chains[i].clone(),
            })
            .collect();

        let jobs = manifest.layers.iter().zip(layer_refs).map(|(desc, layer)| {
            let sink = sink.clone();
            let repo = repo.clone();
            async move { self.pull_layer(&repo, desc, layer, sink, progress).await }
        });
        let results = futures::future::try_join_all(jobs).await?;
        let mut layers = Vec::new();
        for (desc, (diff_size, fetched)) in manifest.layers.iter().zip(results) {
            if fetched {
                blobs_fetched += 1;
                bytes_fetched += desc.size;
            }
            layers.push(LayerRecord {
                digest: desc.digest.clone(),
                media_type: desc.media_type.clone(),
                size: desc.size,
                diff_id: config.rootfs.diff_ids[layers.len()].clone(),
                diff_size,
            });
        }

        // Manifests last: the image is recorded only once everything it names is stored.
        {
            let b = blobs.clone();
            let (fd, fb) = (fetched.digest.clone(), fetched.body.clone());
            let idx = index.as_ref().map(|i| (i.digest.clone(), i.body.clone()));
            blocking(move || {
                b.put_verified(&fd, &fb)?;
                if let Some((d, body)) = idx {
                    b.put_verified(&d, &body)?;
                }
                Ok(())
            })
            .await?;
        }
        let top_digest = index
            .as_ref()
            .map_or(&fetched.digest, |i| &i.digest)
            .clone();
        let record = ImageRecord {
            id: cfg_desc.digest.clone(),
            manifest: fetched.digest.clone(),
            manifest_media_type: Manifest::Image(manifest.clone()).media_type().to_string(),
            index: index.as_ref().map(|i| i.digest.clone()),
            layers,
            repo_digests: vec![format!("{}@{top_digest}", reference.familiar_name())],
            added: ImageStore::now(),
        };
        let tags: Vec<Reference> = reference
            .tag()
            .map(|_| reference.clone())
            .into_iter()
            .collect();
        let images = self.images.clone();
        let new = blocking(move || images.record(record, &tags)).await?;
        progress(PullEvent::Done {
            image_id: cfg_desc.digest.clone(),
            digest: top_digest.clone(),
            new: new || blobs_fetched > 0,
        });
        Ok(PullOutcome {
            image_id: cfg_desc.digest.clone(),
            digest: top_digest,
            manifest: fetched.digest,
            blobs_fetched,
            bytes_fetched,
            new,
        })
    }

    async fn fetch_small_blob(&self, repo: &Repository, desc: &Descriptor) -> Result<Vec<u8>> {
        let resp = self.client.get_blob(repo, &desc.digest).await?;
        let url = resp.url().to_string();
        let body = resp
            .bytes()
            .await
            .map_err(|source| Error::Transport { url, source })?;
        let actual = Digest::of(&body);
        if actual != desc.digest {
            return Err(Error::DigestMismatch {
                what: "config",
                expected: desc.digest.clone(),
                actual,
            });
        }
        Ok(body.to_vec())
    }

    /// Fetches (if missing) and unpacks (if the sink lacks it) one layer. Returns the
    /// uncompressed size and whether the blob was downloaded.
    async fn pull_layer(
        &self,
        repo: &Repository,
        desc: &Descriptor,
        layer: LayerRef,
        sink: Option<Arc<dyn LayerSink>>,
        progress: ProgressFn<'_>,
    ) -> Result<(u64, bool)> {
        let blobs = self.images.blobs().clone();
        let d = desc.digest.clone();
        let sink_needs = |sink: &Option<Arc<dyn LayerSink>>, layer: &LayerRef| {
            sink.as_ref().is_some_and(|s| !s.is_unpacked(layer))
        };
        if blobs.contains(&d) && !sink_needs(&sink, &layer) {
            progress(PullEvent::LayerExists { layer: d.clone() });
            let size = match self.images.layer_diff_size(&layer.diff_id) {
                Some(s) => s,
                None => {
                    let (b, l) = (blobs.clone(), layer.clone());
                    blocking(move || apply_stored(&b, &l, None)).await?
                }
            };
            return Ok((size, false));
        }
        progress(PullEvent::LayerQueued { layer: d.clone() });
        let _permit = self
            .downloads
            .acquire()
            .await
            .expect("semaphore never closed");
        // berthd's own mirror writes into our store: let it fetch, verify and store the
        // blob (once, however many pulls and mirror clients want it) and only unpack the
        // stream here. Any failure falls back to fetching under our own ingest lock.
        if self.client.shared_store_mirror_first(repo) && !blobs.contains(&d) {
            if let Some(resp) = self
                .client
                .get_blob_from_shared_store_mirror(repo, &d)
                .await
            {
                match self
                    .download_layer(
                        repo,
                        desc,
                        &layer,
                        sink.clone(),
                        progress,
                        BlobSource::SharedStoreMirror(resp),
                    )
                    .await
                {
                    Ok(size) => {
                        progress(PullEvent::LayerDownloaded { layer: d.clone() });
                        progress(PullEvent::LayerComplete { layer: d });
                        return Ok((size, true));
                    }
                    Err(e) => {
                        tracing::warn!(layer = %d, error = %e, "pull through the node's mirror failed; fetching directly")
                    }
                }
            }
        }
        let lock = blobs.lock_async(&d).await?;
        if blobs.contains(&d) {
            // Another pull stored it while we waited; unpack from the store if needed.
            drop(lock);
            let (b, l, s) = (blobs.clone(), layer.clone(), sink.clone());
            let size =
                blocking(move || apply_stored(&b, &l, s.as_deref().filter(|s| !s.is_unpacked(&l))))
                    .await?;
            progress(PullEvent::LayerComplete { layer: d });
            return Ok((size, false));
        }

        let mut attempt = 1;
        let size = loop {
            match self
                .download_layer(
                    repo,
                    desc,
                    &layer,
                    sink.clone(),
                    progress,
                    BlobSource::Locked(&lock),
                )
                .await
            {
                Ok(size) => break size,
                Err(e) if e.is_retryable() && attempt < DOWNLOAD_ATTEMPTS => {
                    tracing::warn!(layer = %d, attempt, error = %e, "layer download failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(200 * attempt as u64))
                        .await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        };
        // Released only now: a pull waiting on this digest then finds the blob stored and
        // the layer unpacked, and does neither again.
        drop(lock);
        progress(PullEvent::LayerDownloaded { layer: d.clone() });
        progress(PullEvent::LayerComplete { layer: d });
        Ok((size, true))
    }

    /// One attempt at downloading, verifying, storing and unpacking a layer. Returns the
    /// uncompressed size. With [`BlobSource::Locked`] this pull stores the blob; with
    /// [`BlobSource::SharedStoreMirror`] the mirror does, and the blob must be in the store
    /// once the body has ended.
    async fn download_layer(
        &self,
        repo: &Repository,
        desc: &Descriptor,
        layer: &LayerRef,
        sink: Option<Arc<dyn LayerSink>>,
        progress: ProgressFn<'_>,
        source: BlobSource<'_>,
    ) -> Result<u64> {
        let blobs = self.images.blobs().clone();
        let d = desc.digest.clone();
        // Two blocking consumers of the same chunks, so the two cores overlap the work:
        // one hashes and writes (and fsyncs) the blob, the other decompresses, hashes the
        // diff and unpacks. Nothing is published until both have finished and agree.
        let (wtx, mut wrx) = mpsc::channel::<io::Result<Bytes>>(64);
        let (utx, urx) = mpsc::channel::<io::Result<Bytes>>(64);
        let (store_task, mirror_resp) = match source {
            BlobSource::Locked(lock) => {
                let mut writer = blobs.writer(lock, Some(desc.size))?;
                let blobs = blobs.clone();
                let task = tokio::task::spawn_blocking(move || -> Result<Option<BlobWriter>> {
                    while let Some(chunk) = wrx.blocking_recv() {
                        let Ok(chunk) = chunk else {
                            // The download failed; its error is reported by the async side.
                            return Ok(Some(writer));
                        };
                        io::Write::write_all(&mut writer, &chunk)
                            .map_err(Error::io("write blob", blobs.path(writer.digest())))?;
                    }
                    writer.verify()?;
                    writer.sync()?;
                    Ok(Some(writer))
                });
                (task, None)
            }
            BlobSource::SharedStoreMirror(resp) => {
                // Nothing to write: drain the channel so the download loop never blocks.
                let task = tokio::task::spawn_blocking(move || -> Result<Option<BlobWriter>> {
                    while wrx.blocking_recv().is_some() {}
                    Ok(None)
                });
                (task, Some(resp))
            }
        };
        let unpack_task = {
            let layer = layer.clone();
            let sink = sink.clone();
            tokio::task::spawn_blocking(move || {
                let mut reader = ChannelReader {
                    rx: urx,
                    cur: Bytes::new(),
                };
                let unpacked = unpack_stream(&mut reader, &layer, sink.as_deref());
                drop(reader);
                unpacked
            })
        };
        let download = async {
            let resp = match mirror_resp {
                Some(r) => r,
                None => self.client.get_blob_locked(repo, &d).await?,
            };
            let url = resp.url().to_string();
            let mut stream = resp.bytes_stream();
            let (mut done, mut reported) = (0u64, 0u64);
            let mut unpacking = true;
            progress(PullEvent::LayerProgress {
                layer: d.clone(),
                done: 0,
                total: desc.size,
            });
            while let Some(chunk) = stream.next().await {
                let chunk = match chunk {
                    Ok(c) => c,
                    Err(source) => {
                        let _ = wtx.send(Err(io::Error::other("download failed"))).await;
                        let _ = utx.send(Err(io::Error::other("download failed"))).await;
                        return Err(Error::Transport { url, source });
                    }
                };
                done += chunk.len() as u64;
                // Once the unpacker stops (e.g. a hostile layer), the download still runs
                // to the end so the blob's digest is judged on every byte.
                if unpacking && utx.send(Ok(chunk.clone())).await.is_err() {
                    unpacking = false;
                }
                if wtx.send(Ok(chunk)).await.is_err() {
                    break;
                }
                if done - reported >= PROGRESS_STEP || done == desc.size {
                    reported = done;
                    progress(PullEvent::LayerProgress {
                        layer: d.clone(),
                        done,
                        total: desc.size,
                    });
                }
            }
            Ok(())
        };
        let download_result = download.await;
        drop(wtx);
        drop(utx);
        progress(PullEvent::LayerVerifying { layer: d.clone() });
        let stored = store_task.await.map_err(|source| Error::Join { source })?;
        let unpacked = unpack_task.await.map_err(|source| Error::Join { source })?;
        // Report in order of precedence: transport, blob digest, then the layer itself.
        download_result?;
        let writer = stored?;
        let (staged, diff_id, size) = unpacked?;
        let layer2 = layer.clone();
        blocking(move || {
            match writer {
                Some(w) => w.commit()?,
                // The mirror holds the blob's ingest lock until its commit is durable.
                None if {
                    let _committed = blobs.lock(&layer2.digest)?;
                    blobs.contains(&layer2.digest)
                } => {}
                None => {
                    return Err(Error::BlobNotFound {
                        repository: "the node's mirror (body ended, blob not stored)".into(),
                        digest: layer2.digest.clone(),
                    })
                }
            }
            check_diff_id(&layer2, diff_id)?;
            if let Some(staged) = staged {
                staged.commit().map_err(|source| Error::LayerSink {
                    digest: layer2.digest.clone(),
                    source,
                })?;
            }
            Ok(())
        })
        .await?;
        Ok(size)
    }
}

/// Who stores a layer blob being downloaded.
enum BlobSource<'a> {
    /// This pull, under the blob's ingest lock.
    Locked(&'a IngestLock),
    /// A mirror sharing our blob store, whose response this is.
    SharedStoreMirror(reqwest::Response),
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|source| Error::Join { source })?
}

/// Reads the chunks a download sends.
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    cur: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(Err(e)) => return Err(e),
                Some(Ok(chunk)) => self.cur = chunk,
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        let _ = self.cur.split_to(n);
        Ok(n)
    }
}

/// Counts and hashes what passes through (the uncompressed tar: its diff ID).
struct DiffHasher<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> Read for DiffHasher<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

fn decoder<'a, R: BufRead + 'a>(mut r: R, digest: &Digest) -> Result<Box<dyn Read + 'a>> {
    let head = r.fill_buf().map_err(|source| Error::Decompress {
        digest: digest.clone(),
        source,
    })?;
    Ok(match Compression::sniff(head) {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(r).map_err(
            |source| Error::Decompress {
                digest: digest.clone(),
                source,
            },
        )?),
        Compression::None => Box::new(r),
    })
}

/// A layer read to its end: the staged layer (if a sink took it), its diff ID and size.
type Unpacked = (Option<Box<dyn StagedLayer>>, Digest, u64);

/// Decompresses `raw` into the sink (or just through the hasher), checks the diff ID and
/// returns the staged layer (not yet committed) and the uncompressed size.
fn unpack_stream(
    raw: &mut dyn Read,
    layer: &LayerRef,
    sink: Option<&dyn LayerSink>,
) -> Result<Unpacked> {
    let dec = decoder(BufReader::with_capacity(256 * 1024, raw), &layer.digest)?;
    let mut h = DiffHasher {
        inner: dec,
        hasher: Sha256::new(),
        bytes: 0,
    };
    let staged = match sink {
        Some(s) => Some(s.unpack(layer, &mut h).map_err(|source| Error::LayerSink {
            digest: layer.digest.clone(),
            source,
        })?),
        None => None,
    };
    io::copy(&mut h, &mut io::sink()).map_err(|source| Error::Decompress {
        digest: layer.digest.clone(),
        source,
    })?;
    Ok((staged, Digest::from_hasher(h.hasher), h.bytes))
}

fn check_diff_id(layer: &LayerRef, actual: Digest) -> Result<()> {
    if actual != layer.diff_id {
        return Err(Error::DigestMismatch {
            what: "layer diff ID",
            expected: layer.diff_id.clone(),
            actual,
        });
    }
    Ok(())
}

/// Unpacks a stored blob into `sink` (or only measures it). Returns the uncompressed size.
pub(crate) fn apply_stored(
    blobs: &BlobStore,
    layer: &LayerRef,
    sink: Option<&dyn LayerSink>,
) -> Result<u64> {
    let mut f = blobs.open_blob(&layer.digest)?;
    let (staged, diff_id, size) = unpack_stream(&mut f, layer, sink)?;
    check_diff_id(layer, diff_id)?;
    if let Some(staged) = staged {
        staged.commit().map_err(|source| Error::LayerSink {
            digest: layer.digest.clone(),
            source,
        })?;
    }
    Ok(size)
}
