//! The pull-through registry mirror: an OCI distribution API server (read side) that
//! serves any number of upstream registries from the node's blob store, fetching what it
//! lacks once and caching it.
//!
//! Owns: routing a request to an upstream ([`route`]), the tag cache with TTL and
//! stale-if-error ([`tags`]), single-flight downloads streamed to every waiter
//! ([`flight`]), LRU eviction under a size cap ([`lru`]), metrics, and the HTTP layer
//! ([`http`]). Does not own: the blob store (shared with image pulls: a blob is stored
//! once per node), the registry client (upstream requests, auth, plain-HTTP policy), or
//! which blobs local images reference (asked through [`BlobReferences`]).
//!
//! ```text
//!  client ──HTTP──> http (parse -> MirrorRequest) ──> Mirror ──hit──> BlobStore <data-root>/blobs
//!                                                       │ miss
//!                                                       ├─ Flights: one download per digest,
//!                                                       │  every waiter follows the .part file
//!                                                       └─ RegistryClient ──> upstream registry
//!  state: <state_dir>/tags.json (tag -> digest, confirmed time), <state_dir>/lru.json (access times)
//! ```
//!
//! # In a cluster
//!
//! berthd attaches a [`quic::PeerTransport`] ([`Mirror::attach_peers`]) and keeps its
//! member list current. A miss (blob, manifest by digest, or tag to revalidate) then asks
//! the key's owner and the members ranked after it, down to this node, before the registry
//! ([`peers::sources_before_self`]); the owner answers from its store or its one download
//! ([`Route::Local`]: never forwarded again). Bytes from a peer go through the same
//! single flight and blob writer as upstream bytes: local waiters follow the partial file,
//! the digest is verified before the last byte is released and before the blob is
//! committed, and a peer that served wrong bytes is not asked for that digest again. A
//! peer that fails to answer within [`quic::PeerTimeouts::header`], or whose transfer
//! stops or breaks, is skipped; the next source continues from the bytes already written
//! (`offset` to a peer, `Range: bytes=N-` to the registry).
//!
//! What the registry alone would answer falls back on the cluster when the registry
//! cannot answer (unreachable, 5xx, silent past the client's read timeout): a `HEAD` of a
//! blob asks the live peers in rendezvous order whether they hold it (`stat`: stored, or
//! downloading with a known size); `/v2/<name>/tags/list` answers the union of every live
//! peer's resolved tags of that repository with this node's (`tags`). Both are answered
//! from the peer's own state, never by a registry request of its own. When no one holds
//! the blob or knows a tag, the answer stays the registry's failure: 503 `UNAVAILABLE`
//! with `Retry-After` (Distribution's code for a service that cannot answer now), never
//! a made-up size or list and never a request that hangs.
//!
//! ```text
//!  node B miss ──QUIC (mTLS)──> owner A: store hit ─────────────┐
//!     │ (A down/slow/cut: next in order,                        │ or A's one download
//!     │  resumed at the offset)                                 v
//!     └──> ... ──> registry (last)            A's flight ──> registry (once per digest)
//! ```
//!
//! # Which client uses which request form
//!
//! | client | how it is configured | what it sends |
//! |---|---|---|
//! | containerd / nerdctl / k3s (`hosts.toml`, `[host."http://node:5001"]`) | per upstream | `/v2/<repo>/...?ns=<upstream>` |
//! | berthd ([`crate::ClientConfig::mirrors`]) | `--registry-mirror URL`, and its own mirror by default | `/v2/<repo>/...?ns=<upstream>` |
//! | dockerd (`"registry-mirrors": ["http://node:5001"]`) | Docker Hub only | `/v2/library/busybox/...` (no upstream: the mirror's default upstream, normally `docker.io`) |
//! | skopeo, podman, crane, curl: any plain client | `docker://node:5001/<upstream-host>/<repo>:tag`, or `registries.conf` `[[registry.mirror]] location = "node:5001/<upstream-host>"` | `/v2/<upstream-host>/<repo>/...` (the first component names the upstream when it contains `.` or `:` or is `localhost`, as Docker's reference rules decide). A docker reference cannot carry a port in a path component, so an upstream with a port is reached in this form through an alias ([`UpstreamConfig::endpoint`]). |
//!
//! # Behaviour
//!
//! - Blobs: a hit is served from the store (with `Range`, 206), a whole blob re-hashed as
//!   it goes out (a copy damaged on disk ends the body in an error and is removed, so the
//!   next request fetches it again); a miss joins or starts the
//!   one download of that digest. Bytes reach every waiter as they land on disk; the last
//!   byte only after the digest verified and the blob was committed, so a corrupted
//!   upstream blob ends every body in an error and nothing is cached. A `Range` on a blob
//!   still downloading is answered with the whole blob (200), as HTTP allows.
//! - Manifests are cached by digest in the blob store. Tags map to digests for `tag_ttl`;
//!   after that upstream is asked again, and if it is unreachable or failing the last
//!   known mapping is served (stale-if-error), across restarts. A tag upstream reports
//!   missing (404) is not served stale.
//! - Metrics: a request answered from the store is a hit; one that needed upstream
//!   (including joining a download already running, or revalidating a tag) is a miss.
//!   Upstream bytes count blob and manifest bodies received; served bytes, bodies sent.
//!   In a cluster also: bytes received from peers, bytes served to peers, failed peer
//!   fetches, and the live peers (`berth_mirror_peers`, `berth_mirror_peer_info`).
//!   berthd also shows them in `docker info` (the Engine API's `SystemStatus` pairs, under
//!   `Node Mirror:`), which the docker CLI prints.
//! - Size cap: after each download the least recently used blobs are deleted until the
//!   store fits, never one being served or downloaded, referenced by a local image, or
//!   named by a cached tag.
//!
//! # Integration with berthd
//!
//! ```text
//!  let images = Images::open(data_root, ClientConfig {
//!      mirrors: vec![MirrorEndpoint { url: "http://127.0.0.1:5001".into(), shares_blob_store: true },   // own mirror
//!                    /* --registry-mirror URLs of other nodes: shares_blob_store: false */],
//!      ..
//!  })?;
//!  let mirror = Mirror::new(
//!      MirrorConfig::new(data_root.join("mirror")),           // + upstream credentials, cap, TTL
//!      images.store.blobs().clone(),                          // the same store
//!      RegistryClient::new(ClientConfig { mirrors: vec![], insecure_registries, .. })?, // no mirrors!
//!      images.store.clone(),                                  // ImageStore: BlobReferences
//!  )?;
//!  tokio::spawn(mirror.clone().serve(TcpListener::bind("127.0.0.1:5001").await?, shutdown));
//! ```
//!
//! The puller then asks the mirror for manifests and blobs (`?ns=`); for a mirror with
//! `shares_blob_store` it lets the mirror store each layer and only unpacks the stream, so
//! nothing is written twice. If the mirror is unreachable or fails, the pull goes to the
//! registry directly.

pub mod admission;
pub mod flight;
pub mod http;
pub mod lru;
pub mod peers;
pub mod quic;
pub mod route;
pub mod tags;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, Notify};

use crate::auth::Credentials;
use crate::blob_store::{BlobStore, BlobWriter};
use crate::client::{RegistryClient, Repository};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::images::ImageStore;
use admission::Admitted;
use flight::{Flight, Flights, Phase};
use lru::{choose_victims, AccessLog, StoredBlob};
use peers::{Member, OwnerKey};
use quic::{PeerReplyHeader, PeerRequest, PeerTransport};
use route::{api_host, ManifestRef, UpstreamRepo};
use tags::{decide, TagCache, TagDecision};

/// How the mirror reaches one upstream registry.
#[derive(Debug, Clone, Default)]
pub struct UpstreamConfig {
    /// Anonymous, basic (username/password) or a static bearer token.
    pub credentials: Credentials,
    /// `host[:port]` that actually serves this upstream's API, when it is not the
    /// upstream's own name (an alias, e.g. `fixture.test` -> `127.0.0.1:5000`).
    pub endpoint: Option<String>,
}

/// Settings of a [`Mirror`].
#[derive(Debug, Clone)]
pub struct MirrorConfig {
    /// Where `tags.json` and `lru.json` live (berthd: `<data-root>/mirror`).
    pub state_dir: PathBuf,
    /// Per upstream name (`docker.io`, `ghcr.io`, `127.0.0.1:5000`). Upstreams not listed
    /// are reached anonymously at their own name.
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    /// The upstream of requests that name none (dockerd's mirror requests): `docker.io`.
    pub default_upstream: Option<String>,
    /// How long a tag -> digest mapping is served without asking upstream.
    pub tag_ttl: Duration,
    /// Evict least recently used blobs above this many bytes in the store (`None`: never).
    pub size_cap_bytes: Option<u64>,
}

impl MirrorConfig {
    /// Defaults: Docker Hub as the default upstream, tags fresh for 5 minutes, no cap.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        MirrorConfig {
            state_dir: state_dir.into(),
            upstreams: BTreeMap::new(),
            default_upstream: Some(crate::reference::DEFAULT_DOMAIN.to_string()),
            tag_ttl: Duration::from_secs(300),
            size_cap_bytes: None,
        }
    }
}

/// Who knows which blobs local images reference (berthd: the [`ImageStore`]).
pub trait BlobReferences: Send + Sync + std::fmt::Debug {
    /// Runs `f` with the referenced set while no operation adding references runs;
    /// [`Error::Busy`] (retryable) if one does.
    fn with_references_locked(
        &self,
        f: &mut dyn FnMut(&HashSet<Digest>) -> Result<()>,
    ) -> Result<()>;
}

impl BlobReferences for ImageStore {
    fn with_references_locked(
        &self,
        f: &mut dyn FnMut(&HashSet<Digest>) -> Result<()>,
    ) -> Result<()> {
        ImageStore::with_references_locked(self, |set| f(set))
    }
}

/// No local images (a standalone mirror).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoLocalImages;

impl BlobReferences for NoLocalImages {
    fn with_references_locked(
        &self,
        f: &mut dyn FnMut(&HashSet<Digest>) -> Result<()>,
    ) -> Result<()> {
        f(&HashSet::new())
    }
}

/// Counters exposed on `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    pub blob_hits: AtomicU64,
    pub blob_misses: AtomicU64,
    pub manifest_hits: AtomicU64,
    pub manifest_misses: AtomicU64,
    /// Bytes received from upstreams (blobs and manifests).
    pub upstream_bytes: AtomicU64,
    /// Blob downloads started upstream.
    pub upstream_blob_fetches: AtomicU64,
    /// Blob downloads that failed (transport, status, digest mismatch).
    pub upstream_blob_failures: AtomicU64,
    /// Bytes sent to clients (blob and manifest bodies).
    pub served_bytes: AtomicU64,
    /// Tag requests answered from a stale mapping because upstream failed.
    pub stale_served: AtomicU64,
    pub evicted_blobs: AtomicU64,
    pub evicted_bytes: AtomicU64,
    /// Bytes received from cluster peers (blobs and manifests).
    pub peer_bytes: AtomicU64,
    /// Bytes sent to cluster peers (blobs and manifests).
    pub peer_served_bytes: AtomicU64,
    /// Fetches from a peer that failed (unreachable, slow, cut, refused, wrong bytes).
    pub peer_failures: AtomicU64,
}

impl Metrics {
    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, rows: &[(&str, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (labels, v) in rows {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        };
        counter(
            "berth_mirror_hits_total",
            "Requests served from the local store.",
            &[
                ("{kind=\"blob\"}", g(&self.blob_hits)),
                ("{kind=\"manifest\"}", g(&self.manifest_hits)),
            ],
        );
        counter(
            "berth_mirror_misses_total",
            "Requests that needed upstream.",
            &[
                ("{kind=\"blob\"}", g(&self.blob_misses)),
                ("{kind=\"manifest\"}", g(&self.manifest_misses)),
            ],
        );
        counter(
            "berth_mirror_upstream_bytes_total",
            "Bytes received from upstream registries.",
            &[("", g(&self.upstream_bytes))],
        );
        counter(
            "berth_mirror_served_bytes_total",
            "Blob and manifest bytes sent to clients.",
            &[("", g(&self.served_bytes))],
        );
        counter(
            "berth_mirror_upstream_blob_fetches_total",
            "Blob downloads started upstream.",
            &[("", g(&self.upstream_blob_fetches))],
        );
        counter(
            "berth_mirror_upstream_blob_failures_total",
            "Blob downloads that failed (nothing cached).",
            &[("", g(&self.upstream_blob_failures))],
        );
        counter(
            "berth_mirror_stale_served_total",
            "Tags served from a stale mapping because upstream failed.",
            &[("", g(&self.stale_served))],
        );
        counter(
            "berth_mirror_evicted_blobs_total",
            "Blobs deleted by the size cap.",
            &[("", g(&self.evicted_blobs))],
        );
        counter(
            "berth_mirror_evicted_bytes_total",
            "Bytes deleted by the size cap.",
            &[("", g(&self.evicted_bytes))],
        );
        counter(
            "berth_mirror_peer_bytes_total",
            "Bytes received from cluster peers.",
            &[("", g(&self.peer_bytes))],
        );
        counter(
            "berth_mirror_peer_served_bytes_total",
            "Bytes sent to cluster peers.",
            &[("", g(&self.peer_served_bytes))],
        );
        counter(
            "berth_mirror_peer_failures_total",
            "Fetches from cluster peers that failed (the next source was asked).",
            &[("", g(&self.peer_failures))],
        );
        out
    }
}

/// A manifest to send.
#[derive(Debug, Clone)]
pub struct ManifestReply {
    pub digest: Digest,
    pub media_type: String,
    pub body: Bytes,
    /// Served from a stale tag mapping (upstream failed).
    pub stale: bool,
}

/// A blob to send. Holding it keeps the blob from eviction.
#[derive(Debug)]
pub enum BlobReply {
    /// Stored and verified: serve (a range of) the file.
    Stored {
        file: std::fs::File,
        size: u64,
        pin: ServingGuard,
    },
    /// Being downloaded: stream it as it arrives ([`Flight::body`]).
    Streaming {
        flight: Arc<Flight>,
        total: Option<u64>,
        pin: ServingGuard,
    },
    /// HEAD of a blob the store lacks: upstream's size.
    Head { size: u64 },
}

/// Errors of the mirror service: shared, because one failed download fails every waiter.
pub type MirrorResult<T> = std::result::Result<T, Arc<Error>>;

/// Whether a miss may be routed to cluster peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// A client of this node: a miss goes to the key's owner (and the members ranked after
    /// it) when peers are attached, then to the registry.
    Cluster,
    /// A peer's request: answered from the store or the registry, never forwarded (so
    /// requests cannot loop between nodes).
    Local,
}

/// Marks a blob as being served (eviction skips it) until dropped.
#[derive(Debug)]
pub struct ServingGuard {
    inner: Weak<Inner>,
    digest: Digest,
}

impl Drop for ServingGuard {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.upgrade() {
            let mut s = inner.serving.lock().expect("serving");
            if let Some(n) = s.get_mut(&self.digest) {
                *n -= 1;
                if *n == 0 {
                    s.remove(&self.digest);
                }
            }
        }
    }
}

/// What one eviction pass removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EvictReport {
    pub removed: Vec<Digest>,
    pub bytes_freed: u64,
}

/// The mirror of one node. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Mirror {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: MirrorConfig,
    blobs: BlobStore,
    client: RegistryClient,
    references: Arc<dyn BlobReferences>,
    tags: Mutex<TagCache>,
    lru: Mutex<AccessLog>,
    /// Stored digests servable to anyone ([`admission`]).
    admitted: Mutex<Admitted>,
    flights: Flights,
    serving: Mutex<HashMap<Digest, usize>>,
    metrics: Metrics,
    /// Wakes the background evictor (eviction and LRU persistence run there).
    evictor: Arc<Notify>,
    /// The cluster's peer transport while berthd has one attached ([`Mirror::attach_peers`]).
    peers: Mutex<Option<PeerTransport>>,
    /// (peer id, digest) pairs a peer served wrong bytes for: not asked again for them.
    suspects: Mutex<HashSet<(String, Digest)>>,
    /// One manifest fetch at a time per `upstream/repository@reference`: a request that
    /// waited finds the first one's answer in the cache.
    manifest_locks: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.lru.lock().map(|mut l| l.persist());
        // Wakes the evictor so it sees the mirror is gone and ends.
        self.evictor.notify_one();
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|source| Error::Join { source })?
}

impl Mirror {
    /// Opens the mirror's state under `config.state_dir` and starts its background
    /// evictor. Must be called inside a tokio runtime. `client` must not itself be
    /// configured with mirrors.
    pub fn new(
        config: MirrorConfig,
        blobs: BlobStore,
        client: RegistryClient,
        references: Arc<dyn BlobReferences>,
    ) -> Result<Self> {
        std::fs::create_dir_all(&config.state_dir)
            .map_err(Error::io("create", &config.state_dir))?;
        let tags = TagCache::open(&config.state_dir.join("tags.json"))?;
        let lru = AccessLog::open(&config.state_dir.join("lru.json"))?;
        let admitted = Admitted::open(&config.state_dir.join("admitted.json"))?;
        let evictor = Arc::new(Notify::new());
        let inner = Arc::new(Inner {
            config,
            blobs,
            client,
            references,
            tags: Mutex::new(tags),
            lru: Mutex::new(lru),
            admitted: Mutex::new(admitted),
            flights: Flights::default(),
            serving: Mutex::default(),
            metrics: Metrics::default(),
            evictor: evictor.clone(),
            peers: Mutex::new(None),
            suspects: Mutex::default(),
            manifest_locks: Mutex::default(),
        });
        tokio::spawn(run_evictor(Arc::downgrade(&inner), evictor.clone()));
        // The cap may have shrunk since the last run.
        evictor.notify_one();
        Ok(Mirror { inner })
    }

    pub fn config(&self) -> &MirrorConfig {
        &self.inner.config
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub fn blob_store(&self) -> &BlobStore {
        &self.inner.blobs
    }

    /// The HTTP API ([`http::router`]).
    pub fn router(&self) -> axum::Router {
        http::router(self.clone())
    }

    /// Serves the API on `listener` until `shutdown` resolves, then persists state.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await?;
        self.persist_state().map_err(std::io::Error::other)
    }

    /// Writes the access times now (they are otherwise written every second or so).
    pub fn persist_state(&self) -> Result<()> {
        self.inner.admitted.lock().expect("admitted").persist()?;
        self.inner.lru.lock().expect("lru").persist()
    }

    fn admit(&self, d: &Digest) {
        self.inner.admitted.lock().expect("admitted").admit(d);
    }

    /// Whether the stored `d` may be served for `target` ([`admission`]): admitted, or
    /// the registry gives it to the mirror's identity now (then admitted). Otherwise the
    /// registry's answer (refused, not found, unreachable) is the error.
    async fn check_admission(
        &self,
        target: &UpstreamRepo,
        d: &Digest,
        manifest: bool,
    ) -> Result<()> {
        if self.inner.admitted.lock().expect("admitted").contains(d) {
            return Ok(());
        }
        let repo = self.repository(target);
        if manifest {
            // The registry's own bytes are checked against the digest and are what the
            // store holds: nothing new to keep.
            self.inner
                .client
                .get_manifest_direct(&repo, &d.to_string())
                .await?;
        } else {
            match self.inner.client.blob_exists(&repo, d, "pull").await? {
                Some(_) => {}
                None => {
                    return Err(Error::BlobNotFound {
                        repository: target.display_name(),
                        digest: d.clone(),
                    })
                }
            }
        }
        tracing::debug!(digest = %d, upstream = %target.upstream, repository = %target.repository, "stored content confirmed by the registry for the mirror's identity; admitted");
        self.admit(d);
        Ok(())
    }

    fn repository(&self, t: &UpstreamRepo) -> Repository {
        let up = self.inner.config.upstreams.get(&t.upstream);
        Repository {
            host: up
                .and_then(|u| u.endpoint.clone())
                .unwrap_or_else(|| api_host(&t.upstream).to_string()),
            path: t.repository.clone(),
            credentials: up.map(|u| u.credentials.clone()).unwrap_or_default(),
        }
    }

    fn touch(&self, d: &Digest) {
        self.inner.lru.lock().expect("lru").touch(d, now_ms());
    }

    fn pin(&self, d: &Digest) -> ServingGuard {
        *self
            .inner
            .serving
            .lock()
            .expect("serving")
            .entry(d.clone())
            .or_insert(0) += 1;
        ServingGuard {
            inner: Arc::downgrade(&self.inner),
            digest: d.clone(),
        }
    }

    /// Counts bytes handed to a client.
    pub fn count_served(&self, n: u64) {
        Metrics::add(&self.inner.metrics.served_bytes, n);
    }

    /// Repositories with cached tags, as `upstream/repository`.
    pub fn catalog(&self) -> Vec<String> {
        self.inner.tags.lock().expect("tags").repositories()
    }

    /// The manifest `reference` of `target`: from the cache when it may be, else
    /// upstream (cached on the way), else a stale mapping if upstream fails.
    pub async fn manifest(
        &self,
        target: &UpstreamRepo,
        reference: &ManifestRef,
    ) -> MirrorResult<ManifestReply> {
        self.manifest_via(target, reference, Route::Cluster).await
    }

    /// [`Mirror::manifest`], with misses routed as `route` says.
    pub async fn manifest_via(
        &self,
        target: &UpstreamRepo,
        reference: &ManifestRef,
        route: Route,
    ) -> MirrorResult<ManifestReply> {
        let m = &self.inner.metrics;
        let key = match reference {
            ManifestRef::Digest(d) => format!("{}/{}@{d}", target.upstream, target.repository),
            ManifestRef::Tag(t) => format!("{}/{}:{t}", target.upstream, target.repository),
        };
        let _one_at_a_time = self.manifest_lock(key).await;
        match reference {
            ManifestRef::Digest(d) => {
                if self.inner.blobs.contains(d) {
                    // Stored, perhaps by a pull with a client's credentials.
                    self.check_admission(target, d, true)
                        .await
                        .map_err(Arc::new)?;
                }
                if let Some(reply) = self.cached_manifest(d).await? {
                    Metrics::add(&m.manifest_hits, 1);
                    return Ok(reply);
                }
                Metrics::add(&m.manifest_misses, 1);
                self.fetch_manifest(target, &d.to_string(), None, route)
                    .await
                    .map_err(Arc::new)
            }
            ManifestRef::Tag(tag) => {
                let entry = self
                    .inner
                    .tags
                    .lock()
                    .expect("tags")
                    .get(target, tag)
                    .cloned();
                let stale = match decide(entry.as_ref(), now_ms(), self.inner.config.tag_ttl) {
                    TagDecision::Fresh(d) => {
                        // The mapping was confirmed by the mirror's own fetch.
                        self.admit(&d);
                        if let Some(reply) = self.cached_manifest(&d).await? {
                            Metrics::add(&m.manifest_hits, 1);
                            return Ok(reply);
                        }
                        Some(d)
                    }
                    TagDecision::Revalidate { stale } => stale,
                };
                Metrics::add(&m.manifest_misses, 1);
                match self.fetch_manifest(target, tag, Some(tag), route).await {
                    Ok(reply) => Ok(reply),
                    // Upstream says the tag does not exist, or refuses the mirror's
                    // identity: an answer, not a failure; never served stale.
                    Err(e @ (Error::ManifestNotFound { .. } | Error::Unauthorized { .. })) => {
                        Err(Arc::new(e))
                    }
                    Err(e) => {
                        if let Some(d) = stale {
                            // The mapping was confirmed by the mirror's own fetch.
                            self.admit(&d);
                            if let Some(mut reply) = self.cached_manifest(&d).await? {
                                tracing::warn!(upstream = %target.upstream, repository = %target.repository, %tag, error = %e, "upstream failed; serving the last known tag mapping");
                                Metrics::add(&m.stale_served, 1);
                                reply.stale = true;
                                return Ok(reply);
                            }
                        }
                        if !e.is_retryable() {
                            // Refused (credentials), or bad content: say so as it is.
                            return Err(Arc::new(e));
                        }
                        Err(Arc::new(Error::TagNotCached {
                            reference: format!("{}/{}:{tag}", target.upstream, target.repository),
                            source: Box::new(e),
                        }))
                    }
                }
            }
        }
    }

    /// Waits for the other fetches of the manifest `key` to finish.
    async fn manifest_lock(&self, key: String) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.inner.manifest_locks.lock().expect("manifest locks");
            locks.retain(|_, l| l.strong_count() > 0);
            match locks.get(&key).and_then(Weak::upgrade) {
                Some(l) => l,
                None => {
                    let l = Arc::new(tokio::sync::Mutex::new(()));
                    locks.insert(key, Arc::downgrade(&l));
                    l
                }
            }
        };
        lock.lock_owned().await
    }

    async fn cached_manifest(&self, d: &Digest) -> MirrorResult<Option<ManifestReply>> {
        if !self.inner.blobs.contains(d) {
            return Ok(None);
        }
        let (store, d2) = (self.inner.blobs.clone(), d.clone());
        let body = match blocking(move || store.read(&d2)).await {
            Ok(b) => b,
            // Evicted meanwhile, or damaged on disk: fetch it again.
            Err(e) => {
                tracing::warn!(digest = %d, error = %e, "cached manifest unreadable; refetching");
                return Ok(None);
            }
        };
        let media_type = self
            .inner
            .tags
            .lock()
            .expect("tags")
            .media_type(d)
            .map(str::to_string)
            .unwrap_or_else(|| sniff_media_type(&body));
        self.touch(d);
        Ok(Some(ManifestReply {
            digest: d.clone(),
            media_type,
            body: Bytes::from(body),
            stale: false,
        }))
    }

    async fn fetch_manifest(
        &self,
        target: &UpstreamRepo,
        reference: &str,
        tag: Option<&str>,
        route: Route,
    ) -> Result<ManifestReply> {
        let (fetched, stale) = match self
            .manifest_from_peers(target, reference, tag, route)
            .await
        {
            Some(got) => got?,
            None => {
                let repo = self.repository(target);
                let fetched = self
                    .inner
                    .client
                    .get_manifest_direct(&repo, reference)
                    .await?;
                Metrics::add(
                    &self.inner.metrics.upstream_bytes,
                    fetched.body.len() as u64,
                );
                (fetched, false)
            }
        };
        // A mapping a peer served stale is not confirmed here as fresh.
        let tag = tag.filter(|_| !stale);
        let media_type = fetched
            .content_type
            .clone()
            .filter(|c| !c.is_empty() && c != "application/octet-stream")
            .unwrap_or_else(|| sniff_media_type(&fetched.body));
        let (store, d, body) = (
            self.inner.blobs.clone(),
            fetched.digest.clone(),
            fetched.body.clone(),
        );
        blocking(move || store.put_verified(&d, &body)).await?;
        self.admit(&fetched.digest);
        {
            // The tag file is fsynced: off the async threads.
            let (inner, target, tag) =
                (self.inner.clone(), target.clone(), tag.map(str::to_string));
            let (d, mt) = (fetched.digest.clone(), media_type.clone());
            blocking(move || {
                let mut tags = inner.tags.lock().expect("tags");
                match tag {
                    Some(t) => tags.confirm(&target, &t, &d, &mt, now_ms()),
                    None => tags.remember_media_type(&d, &mt),
                }
            })
            .await?;
        }
        self.touch(&fetched.digest);
        self.inner.evictor.notify_one();
        Ok(ManifestReply {
            digest: fetched.digest,
            media_type,
            body: Bytes::from(fetched.body),
            stale,
        })
    }

    /// The manifest from the owner of its key (the tag, or the digest) or the members
    /// ranked after it: `None` when no peer is to be asked or none answered (then the
    /// registry is asked); `Some(Err)` when the owner's registry says it does not exist.
    async fn manifest_from_peers(
        &self,
        target: &UpstreamRepo,
        reference: &str,
        tag: Option<&str>,
        route: Route,
    ) -> Option<Result<(crate::client::FetchedManifest, bool)>> {
        if route == Route::Local {
            return None;
        }
        let transport = self.peer_transport()?;
        let key = match tag {
            Some(tag) => OwnerKey::Tag {
                target: target.clone(),
                tag: tag.to_string(),
            },
            None => OwnerKey::Digest(Digest::parse(reference).ok()?),
        };
        for peer in transport.members().sources(&key) {
            match transport.fetch_manifest(&peer, target, reference).await {
                Ok(m) => {
                    Metrics::add(&self.inner.metrics.peer_bytes, m.body.len() as u64);
                    let fetched = crate::client::FetchedManifest {
                        body: m.body.to_vec(),
                        content_type: Some(m.media_type).filter(|t| !t.is_empty()),
                        digest: m.digest,
                    };
                    return Some(Ok((fetched, m.stale)));
                }
                Err(Error::PeerRefused {
                    not_found: true, ..
                }) => {
                    return Some(Err(Error::ManifestNotFound {
                        reference: format!("{}/{}:{reference}", target.upstream, target.repository),
                    }))
                }
                Err(e) => {
                    Metrics::add(&self.inner.metrics.peer_failures, 1);
                    tracing::warn!(peer = %peer.id, addr = %peer.addr, %reference, error = %e, "peer did not serve the manifest; trying the next source");
                }
            }
        }
        None
    }

    /// Tags of `target`: upstream's list, or the cached tags if upstream fails.
    pub async fn tags(&self, target: &UpstreamRepo) -> MirrorResult<Bytes> {
        let repo = self.repository(target);
        match self.inner.client.list_tags(&repo).await {
            Ok(body) => Ok(body),
            Err(e) => {
                let mut cached: BTreeSet<String> = self
                    .inner
                    .tags
                    .lock()
                    .expect("tags")
                    .tags_of(target)
                    .into_iter()
                    .collect();
                // The stale-if-error view is the cluster's: every live peer's resolved
                // tags of this repository, asked at once.
                if let Some(t) = self.peer_transport() {
                    let asks = t.members().peers().into_iter().map(|p| {
                        let t = t.clone();
                        async move { (t.fetch_tags(&p, target).await, p) }
                    });
                    for (r, p) in futures::future::join_all(asks).await {
                        match r {
                            Ok(tags) => cached.extend(tags),
                            Err(err) => {
                                tracing::debug!(peer = %p.id, error = %err, "peer did not list its tags")
                            }
                        }
                    }
                }
                if cached.is_empty() {
                    return Err(Arc::new(e));
                }
                let body = serde_json::json!({
                    "name": target.display_name(), "tags": cached,
                });
                Ok(Bytes::from(body.to_string()))
            }
        }
    }

    /// The blob `digest`: from the store, or the (single) download of it.
    pub async fn blob(
        &self,
        target: &UpstreamRepo,
        digest: &Digest,
        head: bool,
    ) -> MirrorResult<BlobReply> {
        self.blob_via(target, digest, head, Route::Cluster).await
    }

    /// [`Mirror::blob`], with a miss routed as `route` says.
    pub async fn blob_via(
        &self,
        target: &UpstreamRepo,
        digest: &Digest,
        head: bool,
        route: Route,
    ) -> MirrorResult<BlobReply> {
        let m = &self.inner.metrics;
        let pin = self.pin(digest);
        match self.inner.blobs.open_blob(digest) {
            Ok(file) => {
                self.check_admission(target, digest, false)
                    .await
                    .map_err(Arc::new)?;
                let size = file
                    .metadata()
                    .map_err(|e| {
                        Arc::new(Error::io("stat blob", self.inner.blobs.path(digest))(e))
                    })?
                    .len();
                Metrics::add(&m.blob_hits, 1);
                self.touch(digest);
                return Ok(BlobReply::Stored { file, size, pin });
            }
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Arc::new(e)),
        }
        if head {
            if let Some(f) = self.inner.flights.get(digest) {
                if let Some(size) = f.started().await.total {
                    return Ok(BlobReply::Head { size });
                }
            }
            let repo = self.repository(target);
            return match self.inner.client.blob_exists(&repo, digest, "pull").await {
                Ok(Some(size)) => Ok(BlobReply::Head { size }),
                Ok(None) => Err(Arc::new(Error::BlobNotFound {
                    repository: target.display_name(),
                    digest: digest.clone(),
                })),
                Err(e) if e.is_retryable() && matches!(route, Route::Cluster) => {
                    // The registry cannot answer: a peer that holds the blob can.
                    match self.peer_size(target, digest).await {
                        Some(size) => Ok(BlobReply::Head { size }),
                        None => Err(Arc::new(e)),
                    }
                }
                Err(e) => Err(Arc::new(e)),
            };
        }
        Metrics::add(&m.blob_misses, 1);
        let (flight, created) = self.inner.flights.join_or_start(digest);
        if created {
            tokio::spawn(
                self.clone()
                    .run_flight(flight.clone(), target.clone(), route),
            );
        }
        let st = flight.started().await;
        if let Phase::Failed(e) = st.phase {
            return Err(e);
        }
        Ok(BlobReply::Streaming {
            flight,
            total: st.total,
            pin,
        })
    }

    async fn run_flight(self, flight: Arc<Flight>, target: UpstreamRepo, route: Route) {
        let d = flight.digest.clone();
        match self.download(&flight, &target, route).await {
            Ok(()) => {
                flight.update(|s| s.phase = Phase::Done);
                self.inner.flights.finish(&d);
                self.inner.evictor.notify_one();
            }
            Err(e) => {
                tracing::warn!(digest = %d, upstream = %target.upstream, error = %e, "blob download failed; nothing cached");
                Metrics::add(&self.inner.metrics.upstream_blob_failures, 1);
                // New requests start afresh; the current waiters all see the error.
                self.inner.flights.finish(&d);
                flight.update(|s| s.phase = Phase::Failed(Arc::new(e)));
            }
        }
    }

    async fn download(
        &self,
        flight: &Arc<Flight>,
        target: &UpstreamRepo,
        route: Route,
    ) -> Result<()> {
        let store = &self.inner.blobs;
        let d = &flight.digest;
        let lock = store.lock_async(d).await?;
        if let Some(size) = store.size(d)? {
            // Stored meanwhile (by a pull or another process).
            drop(lock);
            self.check_admission(target, d, false).await?;
            flight.set_file(store.open_blob(d)?);
            flight.update(|s| {
                s.total = Some(size);
                s.written = size;
            });
            return Ok(());
        }
        // The sources in order: the owner and the members ranked after it down to this
        // node (unless one served wrong bytes for this digest), then the registry (`None`).
        let peers: Vec<Member> = match (route, self.peer_transport()) {
            (Route::Cluster, Some(t)) => {
                let suspects = self.inner.suspects.lock().expect("suspects");
                t.members()
                    .sources(&OwnerKey::Digest(d.clone()))
                    .into_iter()
                    .filter(|m| !suspects.contains(&(m.id.clone(), d.clone())))
                    .collect()
            }
            _ => Vec::new(),
        };
        let sources = peers.into_iter().map(Some).chain(std::iter::once(None));
        let mut sink: Option<(
            mpsc::Sender<Bytes>,
            tokio::task::JoinHandle<Result<BlobWriter>>,
        )> = None;
        // Bytes handed to the writer: where a resumed transfer starts.
        let mut received = 0u64;
        let mut contributors: Vec<String> = Vec::new();
        let mut outcome: Result<()> = Err(Error::BlobNotFound {
            repository: target.display_name(),
            digest: d.clone(),
        });
        'sources: for source in sources {
            let opened = self.open_source(source.as_ref(), target, d, received).await;
            let (total, mut body) = match opened {
                Ok(o) => o,
                Err(e) => {
                    let Some(peer) = &source else {
                        outcome = Err(e);
                        break;
                    };
                    Metrics::add(&self.inner.metrics.peer_failures, 1);
                    tracing::warn!(peer = %peer.id, addr = %peer.addr, digest = %d, error = %e, "peer did not serve the blob; trying the next source");
                    outcome = Err(e);
                    continue;
                }
            };
            if sink.is_none() {
                let writer = store.writer(&lock, total)?;
                sink = Some(self.spawn_writer(flight, writer, total)?);
            }
            let (tx, _) = sink.as_ref().expect("writer started");
            if let Some(peer) = &source {
                contributors.push(peer.id.clone());
            }
            let counter = match source {
                Some(_) => &self.inner.metrics.peer_bytes,
                None => &self.inner.metrics.upstream_bytes,
            };
            while let Some(chunk) = body.next().await {
                match chunk {
                    Ok(c) => {
                        Metrics::add(counter, c.len() as u64);
                        received += c.len() as u64;
                        if tx.send(c).await.is_err() {
                            // The writer failed: its error is the outcome.
                            outcome = Ok(());
                            break 'sources;
                        }
                    }
                    Err(e) => {
                        if let Some(peer) = &source {
                            Metrics::add(&self.inner.metrics.peer_failures, 1);
                            tracing::warn!(peer = %peer.id, digest = %d, at = received, error = %e, "peer transfer cut; resuming from the next source");
                        }
                        outcome = Err(e);
                        continue 'sources;
                    }
                }
            }
            outcome = Ok(());
            break;
        }
        let Some((tx, write_task)) = sink else {
            return outcome;
        };
        drop(tx);
        let writer = write_task
            .await
            .map_err(|source| Error::Join { source })??;
        outcome?;
        if let Err(e) = writer.verify() {
            // Someone served wrong bytes: a peer among the sources is not asked again
            // for this digest (the registry is the last source anyway).
            let mut suspects = self.inner.suspects.lock().expect("suspects");
            for id in contributors {
                tracing::error!(peer = %id, digest = %d, error = %e, "peer served wrong bytes; refused, nothing stored");
                suspects.insert((id, d.clone()));
            }
            return Err(e);
        }
        // Verified content may go to the waiters while it is made durable.
        self.touch(d);
        flight.update(|s| s.verified = true);
        blocking(move || writer.commit()).await?;
        drop(lock);
        self.admit(d);
        flight.update(|s| s.total = Some(s.written));
        Ok(())
    }

    /// Opens the partial file for the waiters and starts the blocking task that writes
    /// the chunks sent to the returned channel into `writer`.
    fn spawn_writer(
        &self,
        flight: &Arc<Flight>,
        writer: BlobWriter,
        total: Option<u64>,
    ) -> Result<(
        mpsc::Sender<Bytes>,
        tokio::task::JoinHandle<Result<BlobWriter>>,
    )> {
        let part = writer.part_path().to_path_buf();
        flight.set_file(std::fs::File::open(&part).map_err(Error::io("open partial blob", &part))?);
        flight.update(|s| {
            s.phase = Phase::Streaming;
            s.total = total;
        });
        let (tx, mut rx) = mpsc::channel::<Bytes>(32);
        let f2 = flight.clone();
        let write_task = tokio::task::spawn_blocking(move || -> Result<BlobWriter> {
            // Waiters are woken per 256 KiB, or whenever the writer catches up with the
            // network: batches when the source is fast, low latency when it is slow.
            const PUBLISH_STEP: u64 = 256 * 1024;
            let mut writer = writer;
            let mut unpublished = 0u64;
            let publish = |writer: &mut BlobWriter, n: &mut u64| -> Result<()> {
                if *n > 0 {
                    std::io::Write::flush(writer).map_err(Error::io("write blob", &part))?;
                    let done = *n;
                    f2.update(|s| s.written += done);
                    *n = 0;
                }
                Ok(())
            };
            loop {
                let chunk = match rx.try_recv() {
                    Ok(c) => c,
                    Err(mpsc::error::TryRecvError::Empty) => {
                        publish(&mut writer, &mut unpublished)?;
                        match rx.blocking_recv() {
                            Some(c) => c,
                            None => break,
                        }
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => break,
                };
                std::io::Write::write_all(&mut writer, &chunk)
                    .map_err(Error::io("write blob", writer.part_path()))?;
                unpublished += chunk.len() as u64;
                if unpublished >= PUBLISH_STEP {
                    publish(&mut writer, &mut unpublished)?;
                }
            }
            publish(&mut writer, &mut unpublished)?;
            Ok(writer)
        });
        Ok((tx, write_task))
    }

    /// Starts reading the blob `d` from byte `offset` from `source` (a peer, or the
    /// registry for `None`): the whole blob's size when known, and the body from `offset`.
    async fn open_source(
        &self,
        source: Option<&Member>,
        target: &UpstreamRepo,
        d: &Digest,
        offset: u64,
    ) -> Result<(Option<u64>, quic::PeerBody)> {
        if let Some(peer) = source {
            let Some(t) = self.peer_transport() else {
                return Err(Error::Peer {
                    peer: peer.addr.to_string(),
                    what: "peer transport detached",
                    source: "the node left the cluster".into(),
                });
            };
            return t.fetch_blob(peer, target, d, offset).await;
        }
        let repo = self.repository(target);
        let resp = self.inner.client.get_blob_from(&repo, d, offset).await?;
        Metrics::add(&self.inner.metrics.upstream_blob_fetches, 1);
        let url = resp.url().to_string();
        let partial = resp.status() == reqwest::StatusCode::PARTIAL_CONTENT;
        let len = resp.content_length();
        let (total, skip) = match (offset, partial) {
            (0, _) => (len, 0),
            (_, true) => (len.map(|l| l + offset), 0),
            // A registry that ignores ranges sends the whole blob: skip what we have.
            (_, false) => (len, offset),
        };
        let mut to_skip = skip;
        // Skipped bytes crossed the uplink too: they count as received from upstream.
        let inner = self.inner.clone();
        let body = resp
            .bytes_stream()
            .map(move |r| {
                r.map_err(|source| Error::Transport {
                    url: url.clone(),
                    source,
                })
            })
            .filter_map(move |r| {
                let out = match r {
                    Ok(mut c) if to_skip > 0 => {
                        let n = (c.len() as u64).min(to_skip);
                        to_skip -= n;
                        Metrics::add(&inner.metrics.upstream_bytes, n);
                        let _ = c.split_to(n as usize);
                        (!c.is_empty()).then_some(Ok(c))
                    }
                    other => Some(other),
                };
                futures::future::ready(out)
            });
        Ok((total, Box::pin(body)))
    }

    /// Attaches the cluster's peer transport: from now on a miss asks the owner of its
    /// key first ([`peers`]), and requests arriving on `transport` are answered from this
    /// mirror ([`quic`]). A transport attached before (another cluster identity) is
    /// closed and replaced.
    pub fn attach_peers(&self, transport: PeerTransport) {
        let old = self
            .inner
            .peers
            .lock()
            .expect("peers")
            .replace(transport.clone());
        if let Some(old) = old {
            old.close();
        }
        tokio::spawn(serve_peers(Arc::downgrade(&self.inner), transport));
    }

    /// Detaches and closes the peer transport (the node left its cluster): every miss
    /// goes to the registry again.
    pub fn detach_peers(&self) {
        if let Some(old) = self.inner.peers.lock().expect("peers").take() {
            old.close();
        }
    }

    /// The attached peer transport, if any.
    pub fn peer_transport(&self) -> Option<PeerTransport> {
        self.inner.peers.lock().expect("peers").clone()
    }

    /// The size of the blob `d` if this node holds it: stored, or being downloaded with
    /// a known size.
    async fn held_size(&self, d: &Digest) -> Option<u64> {
        if let Ok(Some(size)) = self.inner.blobs.size(d) {
            return Some(size);
        }
        let f = self.inner.flights.get(d)?;
        let st = f.started().await;
        match st.phase {
            Phase::Failed(_) => None,
            _ => st.total,
        }
    }

    /// The size of the blob `d` as the first live peer holding it says (peers asked in
    /// rendezvous order for `d`); `None` when none does or none answers.
    async fn peer_size(&self, target: &UpstreamRepo, d: &Digest) -> Option<u64> {
        let t = self.peer_transport()?;
        let key = OwnerKey::Digest(d.clone());
        let me = t.members().self_id().to_string();
        let order: Vec<Member> = peers::rendezvous_order(&key, &t.members().members())
            .into_iter()
            .filter(|m| m.id != me)
            .cloned()
            .collect();
        for p in order {
            match t.stat_blob(&p, target, d).await {
                Ok(Some(size)) => return Some(size),
                Ok(None) => {}
                Err(e) => tracing::debug!(peer = %p.id, error = %e, "peer did not answer a stat"),
            }
        }
        None
    }

    /// The `/metrics` text: the counters, and the live peers as a gauge per peer.
    pub fn render_metrics(&self) -> String {
        let mut out = self.inner.metrics.render();
        if let Some(t) = self.peer_transport() {
            let peers = t.members().peers();
            let _ = writeln!(
                out,
                "# HELP berth_mirror_peers Live cluster peers this mirror routes to.\n# TYPE berth_mirror_peers gauge\nberth_mirror_peers {}",
                peers.len()
            );
            let _ = writeln!(
                out,
                "# HELP berth_mirror_peer_info A live peer (value 1).\n# TYPE berth_mirror_peer_info gauge"
            );
            for p in peers {
                let _ = writeln!(
                    out,
                    "berth_mirror_peer_info{{id=\"{}\",addr=\"{}\"}} 1",
                    p.id, p.addr
                );
            }
        }
        out
    }

    /// Answers one request a peer sent on a bidirectional stream.
    async fn answer_peer(
        self,
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
    ) -> std::io::Result<()> {
        let req = quic::read_request(&mut recv).await?;
        let refuse = |e: &Error| PeerReplyHeader {
            status: if matches!(
                e,
                Error::BlobNotFound { .. } | Error::ManifestNotFound { .. }
            ) {
                "not_found".into()
            } else {
                "failed".into()
            },
            message: Some(e.to_string()),
            ..Default::default()
        };
        let peer_served = self.clone();
        let on_bytes = move |n: u64| {
            Metrics::add(&peer_served.inner.metrics.peer_served_bytes, n);
        };
        let body: std::pin::Pin<Box<dyn futures::Stream<Item = std::io::Result<Bytes>> + Send>> =
            match req {
                PeerRequest::Blob {
                    upstream,
                    repository,
                    digest,
                    offset,
                } => {
                    let target = UpstreamRepo {
                        upstream,
                        repository,
                    };
                    let d = match Digest::parse(&digest) {
                        Ok(d) => d,
                        Err(e) => {
                            let h = PeerReplyHeader {
                                status: "failed".into(),
                                message: Some(e.to_string()),
                                ..Default::default()
                            };
                            quic::write_header(&mut send, &h).await?;
                            let _ = send.finish();
                            return Ok(());
                        }
                    };
                    match self.blob_via(&target, &d, false, Route::Local).await {
                        Err(e) => {
                            quic::write_header(&mut send, &refuse(&e)).await?;
                            let _ = send.finish();
                            return Ok(());
                        }
                        Ok(BlobReply::Stored { file, size, pin }) => {
                            let start = offset.min(size);
                            quic::write_header(
                                &mut send,
                                &PeerReplyHeader {
                                    status: "ok".into(),
                                    size: Some(size),
                                    ..Default::default()
                                },
                            )
                            .await?;
                            let body = self.stored_body(file, d, start, size - start, size, pin);
                            Box::pin(body.inspect(move |c| {
                                if let Ok(c) = c {
                                    on_bytes(c.len() as u64)
                                }
                            }))
                        }
                        Ok(BlobReply::Streaming { flight, total, pin }) => {
                            quic::write_header(
                                &mut send,
                                &PeerReplyHeader {
                                    status: "ok".into(),
                                    size: total,
                                    ..Default::default()
                                },
                            )
                            .await?;
                            Box::pin(flight.body_from(offset, pin, on_bytes))
                        }
                        Ok(BlobReply::Head { .. }) => {
                            unreachable!("a GET is never answered with a HEAD reply")
                        }
                    }
                }
                PeerRequest::Stat {
                    upstream,
                    repository,
                    digest,
                } => {
                    let target = UpstreamRepo {
                        upstream,
                        repository,
                    };
                    let size = match Digest::parse(&digest) {
                        Ok(d) => self.held_size(&d).await,
                        Err(_) => None,
                    };
                    let h = PeerReplyHeader {
                        status: if size.is_some() { "ok" } else { "not_found" }.into(),
                        size,
                        message: size.is_none().then(|| {
                            format!("blob {digest} of {} not held", target.display_name())
                        }),
                        ..Default::default()
                    };
                    quic::write_header(&mut send, &h).await?;
                    let _ = send.finish();
                    return Ok(());
                }
                PeerRequest::Tags {
                    upstream,
                    repository,
                } => {
                    let target = UpstreamRepo {
                        upstream,
                        repository,
                    };
                    let tags = self.inner.tags.lock().expect("tags").tags_of(&target);
                    let h = PeerReplyHeader {
                        status: "ok".into(),
                        ..Default::default()
                    };
                    quic::write_header(&mut send, &h).await?;
                    let body = Bytes::from(serde_json::to_vec(&tags).expect("tags serialise"));
                    on_bytes(body.len() as u64);
                    Box::pin(futures::stream::once(futures::future::ready(Ok(body))))
                }
                PeerRequest::Manifest {
                    upstream,
                    repository,
                    reference,
                } => {
                    let target = UpstreamRepo {
                        upstream,
                        repository,
                    };
                    let r = match Digest::parse(&reference) {
                        Ok(d) => ManifestRef::Digest(d),
                        Err(_) => ManifestRef::Tag(reference),
                    };
                    match self.manifest_via(&target, &r, Route::Local).await {
                        Err(e) => {
                            quic::write_header(&mut send, &refuse(&e)).await?;
                            let _ = send.finish();
                            return Ok(());
                        }
                        Ok(reply) => {
                            quic::write_header(
                                &mut send,
                                &PeerReplyHeader {
                                    status: "ok".into(),
                                    size: Some(reply.body.len() as u64),
                                    digest: Some(reply.digest.to_string()),
                                    media_type: Some(reply.media_type),
                                    stale: reply.stale,
                                    ..Default::default()
                                },
                            )
                            .await?;
                            on_bytes(reply.body.len() as u64);
                            Box::pin(futures::stream::once(futures::future::ready(
                                Ok(reply.body),
                            )))
                        }
                    }
                }
            };
        let mut body = body;
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(c) => send.write_chunk(c).await.map_err(std::io::Error::from)?,
                Err(e) => {
                    // The asker must see a broken transfer, not a clean end: it resumes
                    // elsewhere instead of verifying a truncated blob.
                    let _ = send.reset(quinn::VarInt::from_u32(1));
                    return Err(e);
                }
            }
        }
        let _ = send.finish();
        Ok(())
    }

    /// The body of a stored blob: bytes `start..start+len` of `file`. A whole-blob body
    /// is hashed as it goes and its last chunk sent only if the digest matches; on a
    /// mismatch (the file was damaged on disk) the body ends in an error and the blob is
    /// removed from the store, so the next request fetches it again.
    pub fn stored_body(
        &self,
        file: std::fs::File,
        digest: Digest,
        start: u64,
        len: u64,
        size: u64,
        pin: ServingGuard,
    ) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
        use sha2::Digest as _;
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        struct State {
            mirror: Mirror,
            digest: Digest,
            inner: Option<tokio_util::io::ReaderStream<tokio::io::Take<tokio::fs::File>>>,
            file: Option<tokio::fs::File>,
            start: u64,
            len: u64,
            hasher: Option<sha2::Sha256>,
            held: Option<Bytes>,
            _pin: ServingGuard,
        }
        let st = State {
            mirror: self.clone(),
            digest,
            inner: None,
            file: Some(tokio::fs::File::from_std(file)),
            start,
            len,
            hasher: (start == 0 && len == size).then(sha2::Sha256::new),
            held: None,
            _pin: pin,
        };
        futures::stream::unfold(Some(st), |st| async move {
            let mut st = st?;
            if st.inner.is_none() {
                let mut f = st.file.take().expect("file until the stream starts");
                if st.start > 0 {
                    if let Err(e) = f.seek(std::io::SeekFrom::Start(st.start)).await {
                        return Some((Err(e), None));
                    }
                }
                st.inner = Some(tokio_util::io::ReaderStream::with_capacity(
                    f.take(st.len),
                    256 * 1024,
                ));
            }
            loop {
                let next = st.inner.as_mut().expect("reader").next().await;
                match next {
                    Some(Ok(chunk)) => {
                        let Some(h) = st.hasher.as_mut() else {
                            st.mirror.count_served(chunk.len() as u64);
                            return Some((Ok(chunk), Some(st)));
                        };
                        h.update(&chunk);
                        // Send the previous chunk; keep this one until the end is verified.
                        if let Some(prev) = st.held.replace(chunk) {
                            st.mirror.count_served(prev.len() as u64);
                            return Some((Ok(prev), Some(st)));
                        }
                    }
                    Some(Err(e)) => return Some((Err(e), None)),
                    None => {
                        let h = st.hasher.take()?;
                        let actual = Digest::from_hasher(h);
                        if actual != st.digest {
                            tracing::error!(digest = %st.digest, %actual, "stored blob is damaged; removing it");
                            if let Err(e) = st.mirror.inner.blobs.delete(&st.digest) {
                                tracing::warn!(digest = %st.digest, error = %e, "could not remove a damaged blob");
                            }
                            let err = std::io::Error::other(format!(
                                "stored blob {} is damaged (hashes to {actual})",
                                st.digest
                            ));
                            return Some((Err(err), None));
                        }
                        let last = st.held.take()?;
                        st.mirror.count_served(last.len() as u64);
                        return Some((Ok(last), None));
                    }
                }
            }
        })
    }

    /// One eviction pass (blocking): deletes least recently used blobs until the store
    /// fits the cap. [`Error::Busy`] if local image operations run (try again later).
    pub fn evict(&self) -> Result<EvictReport> {
        let Some(cap) = self.inner.config.size_cap_bytes else {
            return Ok(EvictReport::default());
        };
        let inner = &self.inner;
        let mut report = EvictReport::default();
        inner.references.with_references_locked(&mut |referenced| {
            let mut stored = Vec::new();
            for d in inner.blobs.list()? {
                if let Some(size) = inner.blobs.size(&d)? {
                    stored.push(StoredBlob { digest: d, size });
                }
            }
            let mut protected: HashSet<Digest> = referenced.clone();
            protected.extend(inner.flights.digests());
            protected.extend(inner.tags.lock().expect("tags").tagged_digests());
            protected.extend(inner.serving.lock().expect("serving").keys().cloned());
            let victims = {
                let lru = inner.lru.lock().expect("lru");
                choose_victims(&stored, lru.last_access(), cap, &protected, now_ms())
            };
            let sizes: HashMap<&Digest, u64> = stored.iter().map(|b| (&b.digest, b.size)).collect();
            for v in &victims {
                // A request may have started serving it since: pinning and this check
                // exclude each other, and a request that pins after the delete misses.
                let serving = inner.serving.lock().expect("serving");
                if serving.contains_key(v) || inner.flights.get(v).is_some() {
                    continue;
                }
                if inner.blobs.delete(v)? {
                    report.bytes_freed += sizes.get(v).copied().unwrap_or(0);
                    report.removed.push(v.clone());
                }
                drop(serving);
                inner.lru.lock().expect("lru").forget(v);
                inner.admitted.lock().expect("admitted").forget(v);
            }
            Ok(())
        })?;
        Metrics::add(&inner.metrics.evicted_blobs, report.removed.len() as u64);
        Metrics::add(&inner.metrics.evicted_bytes, report.bytes_freed);
        inner.lru.lock().expect("lru").persist()?;
        Ok(report)
    }
}

/// Accepts peer connections (handshake with a cluster certificate done) and answers each
/// stream they open. Ends when the transport's endpoint is closed.
async fn serve_peers(inner: Weak<Inner>, transport: PeerTransport) {
    while let Some(conn) = transport.accept().await {
        let inner = inner.clone();
        tokio::spawn(async move {
            while let Ok((send, recv)) = conn.accept_bi().await {
                let Some(strong) = inner.upgrade() else {
                    return;
                };
                let mirror = Mirror { inner: strong };
                tokio::spawn(async move {
                    if let Err(e) = mirror.answer_peer(send, recv).await {
                        tracing::debug!(error = %e, "peer request ended early");
                    }
                });
            }
        });
    }
}

/// Runs eviction when woken (after downloads) and persists access times every second.
/// Ends when the mirror is dropped.
async fn run_evictor(inner: Weak<Inner>, wake: Arc<Notify>) {
    loop {
        let woken = tokio::time::timeout(Duration::from_secs(1), wake.notified())
            .await
            .is_ok();
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let mirror = Mirror { inner: strong };
        if woken && mirror.inner.config.size_cap_bytes.is_some() {
            loop {
                let m = mirror.clone();
                match blocking(move || m.evict()).await {
                    Err(Error::Busy { .. }) => {
                        // Local pulls running: they may be about to reference any blob.
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "mirror eviction failed");
                        break;
                    }
                    Ok(r) => {
                        if !r.removed.is_empty() {
                            tracing::info!(
                                blobs = r.removed.len(),
                                bytes = r.bytes_freed,
                                "mirror evicted least recently used blobs"
                            );
                        }
                        break;
                    }
                }
            }
        } else {
            let m = mirror.clone();
            if let Err(e) = blocking(move || m.persist_state()).await {
                tracing::warn!(error = %e, "could not persist mirror access times");
            }
        }
    }
}

/// The media type a manifest body declares, or the OCI type its shape implies.
fn sniff_media_type(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<Probe>(body) {
        Ok(Probe {
            media_type: Some(mt),
            ..
        }) => mt,
        Ok(Probe {
            manifests: Some(_), ..
        }) => "application/vnd.oci.image.index.v1+json".into(),
        _ => "application/vnd.oci.image.manifest.v1+json".into(),
    }
}

/// Reads a versioned JSON file; `None` if absent. Refuses other versions (there are no
/// older ones to migrate from yet).
fn load_versioned<T: DeserializeOwned>(path: &Path, version: u32) -> Result<Option<T>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read", path)(e)),
    };
    #[derive(serde::Deserialize)]
    struct VersionOnly {
        version: u32,
    }
    let corrupt = |source| Error::MetadataCorrupt {
        path: path.to_path_buf(),
        source,
    };
    let v: VersionOnly = serde_json::from_slice(&bytes).map_err(corrupt)?;
    if v.version != version {
        return Err(Error::MetadataVersion {
            path: path.to_path_buf(),
            found: v.version,
            supported: version,
        });
    }
    serde_json::from_slice(&bytes).map(Some).map_err(corrupt)
}

/// Writes `value` as JSON atomically (temp file, fsync, rename).
fn persist_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    let data = serde_json::to_vec(value).expect("mirror state serialises");
    let mut f = std::fs::File::create(&tmp).map_err(Error::io("create", &tmp))?;
    std::io::Write::write_all(&mut f, &data).map_err(Error::io("write", &tmp))?;
    f.sync_all().map_err(Error::io("fsync", &tmp))?;
    std::fs::rename(&tmp, path).map_err(Error::io("rename", path))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_media_types() {
        assert_eq!(
            sniff_media_type(br#"{"mediaType":"application/x","schemaVersion":2}"#),
            "application/x"
        );
        assert_eq!(
            sniff_media_type(br#"{"schemaVersion":2,"manifests":[]}"#),
            "application/vnd.oci.image.index.v1+json"
        );
        assert_eq!(
            sniff_media_type(br#"{"schemaVersion":2,"layers":[]}"#),
            "application/vnd.oci.image.manifest.v1+json"
        );
    }

    #[test]
    fn metrics_render_in_prometheus_text_format() {
        let m = Metrics::default();
        Metrics::add(&m.blob_hits, 3);
        Metrics::add(&m.served_bytes, 10);
        let text = m.render();
        assert!(text.contains("# TYPE berth_mirror_hits_total counter\n"));
        assert!(text.contains("berth_mirror_hits_total{kind=\"blob\"} 3\n"));
        assert!(text.contains("berth_mirror_served_bytes_total 10\n"));
        assert!(text.contains("berth_mirror_misses_total{kind=\"manifest\"} 0\n"));
        assert!(text.contains("berth_mirror_upstream_bytes_total 0\n"));
    }
}
