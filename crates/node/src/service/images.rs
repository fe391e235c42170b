//! Images on this node: pulls through the registry-mirror crate with layers unpacked into
//! the runtime's snapshot store, and the image metadata operations the API exposes.
//!
//! ```text
//!  pull(ref) --Puller--> registry --verified layer tar--> SnapshotSink::unpack
//!                                                          | unpack_layer into ingest dir
//!                                                          v commit after verification
//!                                                   SnapshotStore layers/<chain id>
//! ```

use std::io::Read;
use std::sync::Arc;

use berth_registry_mirror::error::BoxError;
use berth_registry_mirror::{
    Credentials, Digest, Error as ImageError, ImageDetails, Images, LayerRef, LayerSink, Platform,
    PullEvent, PullOptions, PullOutcome, PushEvent, Reference, RemoveReport, StagedLayer,
};
use berth_runtime::Runtime;

use crate::error::ServiceError;
use crate::service::containers::ImageUser;

/// Unpacks pulled layers into the runtime's snapshot store.
#[derive(Debug)]
pub struct SnapshotSink {
    runtime: Arc<Runtime>,
}

struct Staged {
    runtime: Arc<Runtime>,
    ingest: std::path::PathBuf,
    chain_id: String,
    committed: bool,
}

impl StagedLayer for Staged {
    fn commit(mut self: Box<Self>) -> Result<(), BoxError> {
        self.runtime
            .snapshots()
            .commit_layer(&self.ingest, &self.chain_id)?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.ingest);
        }
    }
}

impl LayerSink for SnapshotSink {
    fn is_unpacked(&self, layer: &LayerRef) -> bool {
        self.runtime
            .snapshots()
            .has_layer(&layer.chain_id.to_string())
            .unwrap_or(false)
    }

    fn unpack(
        &self,
        layer: &LayerRef,
        tar: &mut dyn Read,
    ) -> Result<Box<dyn StagedLayer>, BoxError> {
        let ingest = self.runtime.snapshots().begin_layer()?;
        let staged = Staged {
            runtime: self.runtime.clone(),
            ingest: ingest.clone(),
            chain_id: layer.chain_id.to_string(),
            committed: false,
        };
        berth_runtime::unpack::unpack_layer(tar, &ingest)?;
        Ok(Box::new(staged))
    }
}

/// The registry API host of a login's `serveraddress` (dockerd's `Auth`: a scheme is
/// added when missing and the URL's host kept; Docker Hub's index names and the empty
/// address mean Docker Hub's registry).
pub fn login_host(server: &str) -> Result<String, ServiceError> {
    use berth_registry_mirror::reference::{
        DEFAULT_DOMAIN, DEFAULT_REGISTRY_HOST, LEGACY_DEFAULT_DOMAIN,
    };
    let server = server.trim();
    if server.is_empty() {
        return Ok(DEFAULT_REGISTRY_HOST.to_string());
    }
    let with_scheme = if server.starts_with("https://") || server.starts_with("http://") {
        server.to_string()
    } else {
        format!("https://{server}")
    };
    let url = url::Url::parse(&with_scheme)
        .map_err(|e| ServiceError::invalid(format!("unable to parse server address: {e}")))?;
    let host = match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        (None, _) => {
            return Err(ServiceError::invalid(format!(
                "unable to parse server address: no host in {server:?}"
            )))
        }
    };
    Ok(match host.as_str() {
        DEFAULT_DOMAIN | LEGACY_DEFAULT_DOMAIN | DEFAULT_REGISTRY_HOST => {
            DEFAULT_REGISTRY_HOST.to_string()
        }
        _ => host,
    })
}

/// Where `docker search TERM` asks (dockerd's `splitReposSearchTerm`): a first path
/// component that looks like a host (has `.` or `:`, or is `localhost`) names the
/// registry; otherwise Docker Hub's index, where `library/` is dropped.
pub fn search_target(term: &str) -> (String, String) {
    use berth_registry_mirror::reference::{LEGACY_DEFAULT_DOMAIN, OFFICIAL_REPO_PREFIX};
    match term.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            if first == "docker.io" || first == LEGACY_DEFAULT_DOMAIN {
                let r = rest.strip_prefix(OFFICIAL_REPO_PREFIX).unwrap_or(rest);
                (LEGACY_DEFAULT_DOMAIN.to_string(), r.to_string())
            } else {
                (first.to_string(), rest.to_string())
            }
        }
        _ => (
            LEGACY_DEFAULT_DOMAIN.to_string(),
            term.strip_prefix(OFFICIAL_REPO_PREFIX)
                .unwrap_or(term)
                .to_string(),
        ),
    }
}

/// Maps image errors onto what the API reports.
pub fn image_error(e: ImageError) -> ServiceError {
    match e {
        ImageError::ImageNotFound { reference } => {
            ServiceError::not_found(format!("No such image: {reference}"))
        }
        // dockerd's words: the registry's error code and message follow.
        ImageError::ManifestNotFound { reference } => ServiceError::not_found(format!(
            "manifest for {reference} not found: manifest unknown: manifest unknown"
        )),
        // dockerd answers 401 only when a token server refused the login; else 500.
        ImageError::LoginFailed {
            message,
            unauthorized: true,
        } => ServiceError::Unauthorized { message },
        e @ ImageError::ImageInUse { .. } => ServiceError::conflict(e.to_string()),
        e @ ImageError::ImageHasManyTags { .. } => ServiceError::conflict(e.to_string()),
        e @ ImageError::InvalidReference { .. } => ServiceError::invalid(e.to_string()),
        // A load/import whose archive or layer cannot be read is the client's bad input.
        e @ (ImageError::InvalidArchive { .. } | ImageError::Decompress { .. }) => {
            ServiceError::invalid(printable(&e.to_string()))
        }
        ImageError::LayerSink { ref source, .. } if is_bad_layer(source.as_ref()) => {
            ServiceError::invalid(printable(&e.to_string()))
        }
        e => ServiceError::image(e),
    }
}

/// Whether an unpack failure is the layer's fault (unreadable or hostile tar) rather than
/// the host's (a filesystem operation that failed).
fn is_bad_layer(e: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    use berth_runtime::unpack::UnpackError;
    e.downcast_ref::<UnpackError>()
        .is_some_and(|u| !matches!(u, UnpackError::Io { .. }))
}

/// `msg` up to its first character that is not printable ASCII (tar readers quote raw
/// header bytes in their messages), marked when cut.
fn printable(msg: &str) -> String {
    match msg.find(|c: char| !(c.is_ascii_graphic() || c == ' ')) {
        Some(i) => format!("{}(unprintable bytes)", &msg[..i]),
        None => msg.to_string(),
    }
}

/// The image service of berthd.
#[derive(Debug, Clone)]
pub struct ImageService {
    pub images: Images,
    sink: Arc<SnapshotSink>,
}

impl ImageService {
    pub fn new(images: Images, runtime: Arc<Runtime>) -> Self {
        ImageService {
            images,
            sink: Arc::new(SnapshotSink { runtime }),
        }
    }

    pub fn parse_reference(s: &str) -> Result<Reference, ServiceError> {
        Reference::parse_normalized(s).map_err(image_error)
    }

    /// Pulls `reference` for `platform` (default linux/amd64), reporting progress.
    pub async fn pull(
        &self,
        reference: &Reference,
        platform: Option<&str>,
        credentials: Credentials,
        progress: &(dyn Fn(PullEvent) + Send + Sync),
    ) -> Result<PullOutcome, ServiceError> {
        let platform = match platform.filter(|p| !p.is_empty()) {
            Some(p) => Platform::parse(p).map_err(image_error)?,
            None => Platform::default(),
        };
        let opts = PullOptions {
            platform,
            credentials,
        };
        let sink: Arc<dyn LayerSink> = self.sink.clone();
        self.images
            .puller
            .pull(reference, &opts, Some(sink), progress)
            .await
            .map_err(image_error)
    }

    pub async fn push(
        &self,
        reference: &Reference,
        credentials: Credentials,
        progress: &(dyn Fn(PushEvent) + Send + Sync),
    ) -> Result<(), ServiceError> {
        self.images
            .pusher
            .push(reference, &credentials, progress)
            .await
            .map(|_| ())
            .map_err(image_error)
    }

    /// `docker login`: checks `credentials` against the registry of `server` (a host,
    /// `host:port` or URL as the CLI sends it; empty or Docker Hub's index name means
    /// Docker Hub), as dockerd's `AuthenticateToRegistry` does. Plain HTTP only for hosts
    /// the client config allows (loopback, `insecure-registries`).
    pub async fn login(&self, server: &str, credentials: &Credentials) -> Result<(), ServiceError> {
        let host = login_host(server)?;
        self.images
            .client
            .login(&host, credentials)
            .await
            .map_err(image_error)
    }

    /// `docker search TERM`: the V1 search results of the registry the term names
    /// (`host[:port]/name`, else Docker Hub's index), as JSON objects (`name`,
    /// `description`, `star_count`, `is_official`, `is_automated`).
    pub async fn search(
        &self,
        term: &str,
        limit: u32,
    ) -> Result<Vec<serde_json::Value>, ServiceError> {
        let (host, remote) = search_target(term);
        let body = self
            .images
            .client
            .search(&host, &remote, limit)
            .await
            .map_err(image_error)?;
        #[derive(serde::Deserialize)]
        struct Results {
            #[serde(default)]
            results: Vec<serde_json::Value>,
        }
        let r: Results = serde_json::from_slice(&body).map_err(|e| {
            ServiceError::unavailable(format!("invalid search results from {host}: {e}"))
        })?;
        Ok(r.results)
    }

    pub fn inspect(&self, name: &str) -> Result<ImageDetails, ServiceError> {
        self.images.store.inspect(name).map_err(image_error)
    }

    /// Removes an image or reference; unused layer snapshots go with it. `user_of` names a
    /// container that uses an image. Conflicts as dockerd decides them (its
    /// `daemon/images/image_delete.go`): a reference whose image a container uses is kept
    /// unless forced ("unable to remove repository reference ... (must force)"); an image
    /// named by ID that a stopped container uses needs force, one a running container uses
    /// cannot be removed even with force. Each is a 409 with dockerd's message.
    pub fn remove(
        &self,
        name: &str,
        force: bool,
        user_of: &dyn Fn(&Digest) -> Option<ImageUser>,
    ) -> Result<RemoveReport, ServiceError> {
        let short = |s: &str| {
            s.trim_start_matches("sha256:")
                .chars()
                .take(12)
                .collect::<String>()
        };
        let id = self.images.store.resolve(name).map_err(image_error)?.id;
        let by_id = id
            .hex()
            .starts_with(name.strip_prefix("sha256:").unwrap_or(name));
        if let Some(user) = user_of(&id) {
            let conflict = if !by_id && !force {
                Some(format!(
                    "conflict: unable to remove repository reference {name:?} (must force) - container {} is using its referenced image {}",
                    short(&user.container_id),
                    short(id.hex())
                ))
            } else if by_id && user.running {
                Some(format!(
                    "conflict: unable to delete {} (cannot be forced) - image is being used by running container {}",
                    short(id.hex()),
                    short(&user.container_id)
                ))
            } else if by_id && !force {
                Some(format!(
                    "conflict: unable to delete {} (must be forced) - image is being used by stopped container {}",
                    short(id.hex()),
                    short(&user.container_id)
                ))
            } else {
                None
            };
            if let Some(message) = conflict {
                return Err(ServiceError::conflict(message));
            }
        }
        let report = self
            .images
            .store
            .remove(name, force, &|d| user_of(d).is_some())
            .map_err(image_error)?;
        for chain in &report.unused_chain_ids {
            if let Err(e) = self
                .sink
                .runtime
                .snapshots()
                .remove_layer(&chain.to_string())
            {
                tracing::warn!(chain = %chain, error = %e, "removing unused layer snapshot");
            }
        }
        Ok(report)
    }

    /// Loads a `docker save` archive; returns `(image ID, tags)` per image.
    pub fn load(&self, input: impl Read) -> Result<Vec<(Digest, Vec<String>)>, ServiceError> {
        let loaded = berth_registry_mirror::archive::load(
            &self.images.store,
            input,
            Some(self.sink.as_ref() as &dyn LayerSink),
        )
        .map_err(image_error)?;
        Ok(loaded.into_iter().map(|l| (l.id, l.tags)).collect())
    }

    /// Imports a rootfs tar as a one-layer image, with `config` as its container config
    /// (`docker import --change`) and `comment` (`-m`).
    pub fn import(
        &self,
        input: impl Read,
        reference: Option<&Reference>,
        config: serde_json::Value,
        comment: Option<&str>,
    ) -> Result<Digest, ServiceError> {
        berth_registry_mirror::archive::import_with_config(
            &self.images.store,
            input,
            reference,
            config,
            comment,
            Some(self.sink.as_ref() as &dyn LayerSink),
        )
        .map(|l| l.id)
        .map_err(image_error)
    }

    /// Stores a new image: `parent`'s layers (None: from scratch) plus the uncompressed layer
    /// tar at `layer` if given (unpacked into the snapshot store), `config` as the image
    /// config's "config" object, one more history entry, tagged `tags`; `created` is
    /// RFC 3339. Wraps [`berth_registry_mirror::archive::commit_image`] (see there); errors
    /// as [`image_error`] maps them (an unknown parent is a 404 "No such image").
    #[allow(clippy::too_many_arguments)]
    pub fn commit_image(
        &self,
        parent: Option<&str>,
        config: serde_json::Value,
        history: berth_registry_mirror::archive::HistoryEntry,
        layer: Option<&std::path::Path>,
        created: &str,
        tags: &[Reference],
    ) -> Result<Digest, ServiceError> {
        berth_registry_mirror::archive::commit_image(
            &self.images.store,
            parent,
            config,
            history,
            layer,
            created,
            tags,
            Some(self.sink.as_ref() as &dyn LayerSink),
        )
        .map(|l| l.id)
        .map_err(image_error)
    }

    /// Writes `docker save` output for `names`.
    pub fn save(&self, names: &[String], out: impl std::io::Write) -> Result<(), ServiceError> {
        berth_registry_mirror::archive::save(&self.images.store, names, out).map_err(image_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_hosts_as_dockerd_reads_serveraddress() {
        assert_eq!(login_host("").unwrap(), "registry-1.docker.io");
        assert_eq!(
            login_host("https://index.docker.io/v1/").unwrap(),
            "registry-1.docker.io"
        );
        assert_eq!(login_host("docker.io").unwrap(), "registry-1.docker.io");
        assert_eq!(login_host("127.0.0.1:5000").unwrap(), "127.0.0.1:5000");
        assert_eq!(
            login_host("http://127.0.0.1:5000/").unwrap(),
            "127.0.0.1:5000"
        );
        assert_eq!(login_host("reg.lan").unwrap(), "reg.lan");
        assert!(login_host("http://").is_err());
    }

    #[test]
    fn search_terms_name_their_registry_as_dockerd_splits_them() {
        let t = |s: &str| {
            let (h, r) = search_target(s);
            (h, r)
        };
        assert_eq!(t("busybox"), ("index.docker.io".into(), "busybox".into()));
        assert_eq!(
            t("library/busybox"),
            ("index.docker.io".into(), "busybox".into())
        );
        assert_eq!(t("user/app"), ("index.docker.io".into(), "user/app".into()));
        assert_eq!(
            t("127.0.0.1:5000/app"),
            ("127.0.0.1:5000".into(), "app".into())
        );
        assert_eq!(t("localhost/a/b"), ("localhost".into(), "a/b".into()));
        assert_eq!(
            t("docker.io/library/x"),
            ("index.docker.io".into(), "x".into())
        );
    }
}
