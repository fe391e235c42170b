//! berth-registry-mirror: OCI distribution for one node.
//!
//! Owns: the content-addressed blob store ([`blob_store`]), image references parsed as
//! Docker parses them ([`mod@reference`]), manifests and platform selection ([`manifest`]),
//! the registry client with auth and the plain-HTTP policy ([`client`], [`auth`]), the
//! pull pipeline ([`pull`]), push ([`push`]), the image metadata store ([`images`]) and
//! `docker save`/`load`/`import` archives ([`archive`]).
//! The pull-through mirror server ([`mirror`]) serves the same blob store to other
//! clients and nodes; in a cluster, each blob and tag has an owner node (rendezvous
//! hashing, [`mirror::peers`]) that fetches it from the registry once and streams it to
//! the other nodes over QUIC with the cluster's node certificates ([`mirror::quic`]).
//!
//! Does not own: unpacking layers into snapshots (`berth-runtime`; a pull hands each
//! layer's decompressed stream to a caller-supplied [`pull::LayerSink`]), the Engine API
//! (`berth-node`).
//!
//! ```text
//!  berthd ──pull(ref)──> Puller ──RegistryClient──> registry (HTTP/HTTPS, auth)
//!                          │ verified chunks
//!                          ├──> BlobStore   <data-root>/blobs/sha256/<hex>
//!                          ├──> LayerSink   (berthd: runtime snapshot store + unpack_layer)
//!                          └──> ImageStore  <data-root>/images/repositories.json
//! ```
//!
//! Construct with [`Images::open`] for a data root; everything async runs on tokio.
//!
//! How berthd uses it:
//! - `Images::open(data_root, ClientConfig { insecure_registries, .. })` once at start.
//! - `images.puller.pull(&reference, &PullOptions { platform, credentials }, Some(sink),
//!   &progress).await` (async): `sink` implements [`pull::LayerSink`] over the runtime's
//!   snapshot store (each layer's decompressed tar goes to `unpack_layer` in a staging
//!   directory; [`pull::StagedLayer::commit`] is called only after the blob digest and the
//!   diff ID verified). `progress` receives [`PullEvent`]s; [`PullEvent::docker_status`]
//!   gives the `(id, status, progressDetail)` of Docker's JSON stream.
//! - `images.pusher.push(&reference, &credentials, &progress).await` (async).
//! - `images.client.login(host, &credentials)` (`docker login`, dockerd's messages) and
//!   `images.client.search(host, term, limit)` (`docker search`, V1 search API).
//!   Whatever a set of credentials earned (a token, a working Basic header) is cached
//!   for those credentials only ([`Credentials::identity`]); the mirror serves a stored
//!   digest only once its own identity may read it ([`mirror::admission`]).
//! - `images.store` ([`ImageStore`], blocking, fast): `resolve`, `inspect`, `list`, `tag`,
//!   `remove(name, force, &in_use)` (returns the layer chain IDs no image uses any more),
//!   `gc` (refused with a retryable [`Error::Busy`] while pulls/loads/imports run).
//! - [`archive::save`] / [`archive::load`] / [`archive::import`] (blocking: run them on a
//!   blocking thread).
//! - The node's mirror ([`mirror`], details and a sketch in its docs): bind the mirror's
//!   listener first, open `Images` with `ClientConfig { mirrors: vec![MirrorEndpoint {
//!   url: <own mirror URL>, shares_blob_store: true }, <each --registry-mirror URL with
//!   shares_blob_store: false>], .. }`, then `Mirror::new(MirrorConfig { state_dir:
//!   <data-root>/mirror, .. }, images.store.blobs().clone(), <a RegistryClient without
//!   mirrors>, images.store.clone())` and spawn `mirror.serve(listener, shutdown)`.

pub mod archive;
pub mod auth;
pub mod blob_store;
pub mod client;
pub mod digest;
pub mod error;
pub mod images;
pub mod manifest;
pub mod mirror;
pub mod pull;
pub mod push;
pub mod reference;

use std::path::Path;
use std::sync::Arc;

pub use auth::Credentials;
pub use blob_store::BlobStore;
pub use client::{ClientConfig, MirrorEndpoint, RegistryClient};
pub use digest::Digest;
pub use error::{Error, Result};
pub use images::{ImageDetails, ImageRecord, ImageStore, ImageSummary, RemoveReport};
pub use manifest::Platform;
pub use mirror::{Mirror, MirrorConfig, UpstreamConfig};
pub use pull::{LayerRef, LayerSink, PullEvent, PullOptions, PullOutcome, Puller, StagedLayer};
pub use push::{PushEvent, PushOutcome, Pusher};
pub use reference::Reference;

/// The image service of one data root: store, puller and pusher sharing one client.
#[derive(Debug, Clone)]
pub struct Images {
    pub store: Arc<ImageStore>,
    pub client: RegistryClient,
    pub puller: Puller,
    pub pusher: Pusher,
}

impl Images {
    /// Opens `<data_root>/blobs` and `<data_root>/images` (creating them), with Docker's
    /// default of 3 concurrent layer downloads.
    pub fn open(data_root: &Path, config: ClientConfig) -> Result<Self> {
        let store = Arc::new(ImageStore::open(data_root)?);
        let client = RegistryClient::new(config)?;
        Ok(Images {
            puller: Puller::new(client.clone(), store.clone(), 3),
            pusher: Pusher::new(client.clone(), store.clone()),
            store,
            client,
        })
    }
}
