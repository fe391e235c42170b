//! The one error type of berth-registry-mirror.
//!
//! Every variant carries the context a caller needs (digest, reference, path, URL). Use
//! [`Error::is_retryable`] to tell transient failures (network, 5xx, rate limits) from
//! fatal ones (bad digest, bad reference, missing image, refused by policy).

use std::path::PathBuf;

use crate::digest::Digest;

/// Boxed error from a caller-supplied hook (a [`crate::pull::LayerSink`]).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why an image reference did not parse (Docker's messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReferenceErrorKind {
    /// "invalid reference format".
    Format,
    /// "repository name must be lowercase".
    Uppercase,
    /// "repository name must not be more than 255 characters".
    NameTooLong,
    /// A 64-hex string is an image ID, not a repository name.
    LooksLikeImageId,
    /// The digest part has the digest grammar but its encoded part is not what the
    /// algorithm needs (go-digest's "invalid checksum digest format").
    Digest,
    /// The digest's encoded part has the wrong length for its algorithm.
    DigestLength,
    /// The digest's algorithm is not one berth verifies (berth: sha256 only).
    DigestUnsupported,
}

impl std::fmt::Display for ReferenceErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ReferenceErrorKind::Format => "invalid reference format",
            ReferenceErrorKind::Uppercase => {
                "invalid reference format: repository name must be lowercase"
            }
            ReferenceErrorKind::NameTooLong => {
                "invalid reference format: repository name must not be more than 255 characters"
            }
            ReferenceErrorKind::LooksLikeImageId => {
                "invalid repository name, cannot specify 64-byte hexadecimal strings"
            }
            ReferenceErrorKind::Digest => "invalid checksum digest format",
            ReferenceErrorKind::DigestLength => "invalid checksum digest length",
            ReferenceErrorKind::DigestUnsupported => "unsupported digest algorithm",
        })
    }
}

/// Errors of the blob store, registry client, pull/push pipeline and image store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{input:?}: {kind}")]
    InvalidReference {
        input: String,
        kind: ReferenceErrorKind,
    },
    #[error("invalid digest {input:?}")]
    InvalidDigest { input: String },
    #[error("unsupported digest algorithm in {input:?} (only sha256)")]
    UnsupportedDigestAlgorithm { input: String },
    #[error("invalid platform {input:?} (want os/arch[/variant])")]
    InvalidPlatform { input: String },

    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Could not reach the registry, or the connection broke mid-transfer. Retryable.
    #[error("request to {url} failed: {source}")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The registry answered with an unexpected status. 5xx and 429 are retryable.
    #[error("{method} {url}: registry answered {status}: {body}")]
    RegistryStatus {
        method: &'static str,
        url: String,
        status: u16,
        body: String,
    },
    /// The registry (or its token server) refused the request for want of credentials
    /// or with the ones given. `message` is dockerd's wording: `Get "<url>": no basic
    /// auth credentials`, or the registry's error ("unauthorized: authentication
    /// required").
    #[error("{message}")]
    Unauthorized {
        registry: String,
        scope: String,
        status: u16,
        message: String,
    },
    /// `docker login` refused (see [`crate::RegistryClient::login`]); `unauthorized` when
    /// the registry's token server refused the credentials (dockerd answers 401 then, and
    /// 500 otherwise).
    #[error("{message}")]
    LoginFailed { message: String, unauthorized: bool },
    /// The registry has no V1 search API (dockerd's words: "Unexpected status code 404").
    #[error("Unexpected status code {status}")]
    SearchUnavailable { status: u16 },
    #[error("{registry}: token endpoint {realm} answered without a token")]
    TokenMissing { registry: String, realm: String },
    #[error("{registry}: unsupported authentication challenge {challenge:?}")]
    UnsupportedChallenge { registry: String, challenge: String },
    #[error("manifest unknown: {reference}")]
    ManifestNotFound { reference: String },
    #[error("blob unknown: {digest} in {repository}")]
    BlobNotFound { repository: String, digest: Digest },

    /// Content did not hash to the digest it was fetched or stored under. Fatal.
    #[error("{what} digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        what: &'static str,
        expected: Digest,
        actual: Digest,
    },
    #[error("blob {digest}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    #[error("unsupported media type {media_type:?} for {what}")]
    UnsupportedMediaType {
        what: &'static str,
        media_type: String,
    },
    #[error("invalid {what} {digest}: {source}")]
    InvalidJson {
        what: &'static str,
        digest: Digest,
        #[source]
        source: serde_json::Error,
    },
    #[error("image config {config} lists {diff_ids} layers but manifest {manifest} has {layers}")]
    LayerCountMismatch {
        manifest: Digest,
        config: Digest,
        layers: usize,
        diff_ids: usize,
    },
    #[error("no manifest for platform {platform} in {reference}")]
    NoMatchingPlatform { reference: String, platform: String },
    #[error("layer {digest}: cannot decompress: {source}")]
    Decompress {
        digest: Digest,
        #[source]
        source: std::io::Error,
    },
    #[error("layer {digest}: unpacking failed: {source}")]
    LayerSink {
        digest: Digest,
        #[source]
        source: BoxError,
    },

    /// No mirror had this tag cached and upstream could not be asked. Not retryable here;
    /// the upstream failure is the source.
    #[error("manifest unknown: {reference} was never cached by a mirror and the registry failed: {source}")]
    TagNotCached {
        reference: String,
        #[source]
        source: Box<Error>,
    },
    #[error("No such image: {reference}")]
    ImageNotFound { reference: String },
    #[error("conflict: unable to remove image {id}: image is in use by a container")]
    ImageInUse { id: Digest },
    #[error("conflict: unable to delete {id} (must be forced) - image is referenced in multiple repositories: {tags:?}")]
    ImageHasManyTags { id: Digest, tags: Vec<String> },
    #[error("image {id} has no manifest in the local store; it cannot be pushed")]
    NotPushable { id: Digest },
    #[error("metadata {path}: unsupported version {found} (this build reads up to {supported})")]
    MetadataVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("metadata {path}: {source}")]
    MetadataCorrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("image archive: {problem}")]
    InvalidArchive { problem: ArchiveProblem },
    /// GC was asked for while pulls, loads or imports run. Retryable.
    #[error(
        "image store busy: {operations} operation(s) adding blobs; garbage collection deferred"
    )]
    Busy { operations: usize },
    /// A cluster peer could not be reached, did not answer in time, or its transfer
    /// broke. Retryable: the next holder in rendezvous order, or the registry, is asked.
    #[error("peer {peer}: {what}: {source}")]
    Peer {
        peer: String,
        what: &'static str,
        #[source]
        source: BoxError,
    },
    /// A cluster peer answered with an error (`not_found`: its registry says the content
    /// does not exist).
    #[error("peer {peer} refused {what}: {message}")]
    PeerRefused {
        peer: String,
        what: String,
        not_found: bool,
        message: String,
    },
    /// The peer transport's TLS setup failed (a bad node identity).
    #[error("peer transport TLS: {source}")]
    PeerTls {
        #[source]
        source: rustls::Error,
    },
    #[error("blocking task failed: {source}")]
    Join {
        #[source]
        source: tokio::task::JoinError,
    },
}

/// What is wrong with a `docker save` archive given to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveProblem {
    /// No `manifest.json` at the top of the archive.
    NoManifest,
    /// `manifest.json` names a file the archive does not hold.
    MissingFile(String),
    /// An entry path is absolute or has `..`.
    UnsafePath(String),
    /// `manifest.json` is not valid.
    BadManifest(String),
    /// The archive is not a readable tar stream (the tar reader's message).
    Tar(String),
}

impl std::fmt::Display for ArchiveProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ArchiveProblem::NoManifest => f.write_str("no manifest.json"),
            ArchiveProblem::MissingFile(p) => write!(f, "missing file {p}"),
            ArchiveProblem::UnsafePath(p) => write!(f, "unsafe path {p}"),
            ArchiveProblem::BadManifest(e) => write!(f, "bad manifest.json: {e}"),
            ArchiveProblem::Tar(e) => write!(f, "invalid tar archive: {e}"),
        }
    }
}

impl Error {
    /// Whether trying the same operation again may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Transport { .. } | Error::Busy { .. } | Error::Peer { .. } => true,
            Error::PeerRefused { not_found, .. } => !not_found,
            Error::RegistryStatus { status, .. } => *status >= 500 || *status == 429,
            Error::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::Interrupted | std::io::ErrorKind::TimedOut
            ),
            _ => false,
        }
    }

    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
