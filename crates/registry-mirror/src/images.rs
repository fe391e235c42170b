//! The image metadata store: which images this node has and what they are called.
//!
//! ```text
//!  tag "busybox:latest" --> image ID (= config digest) --> ImageRecord
//!                                                           | manifest digest (blob)
//!                                                           | config digest   (blob)
//!                                                           | layers: blob digest + diff ID + sizes
//!  persisted: <data-root>/images/repositories.json  {"version": 1, ...}  (atomic rename)
//! ```
//!
//! Owns: tags, repo digests, inspect/list views, tag/untag/remove (with the caller's
//! "in use by a container" check), and deciding which blobs GC keeps.
//! Does not own: blob bytes ([`crate::blob_store`]), unpacked snapshots (the runtime; a
//! removal reports the layer chain IDs no image uses any more so the caller can drop them).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::blob_store::{BlobStore, GcReport};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::{chain_ids, History, ImageConfig};
use crate::reference::Reference;

/// Version of `repositories.json` this build writes.
pub const METADATA_VERSION: u32 = 1;

/// One layer of a stored image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// Digest of the (possibly compressed) blob.
    pub digest: Digest,
    pub media_type: String,
    /// Size of the blob.
    pub size: u64,
    /// Digest of the uncompressed tar.
    pub diff_id: Digest,
    /// Size of the uncompressed tar.
    pub diff_size: u64,
}

/// Everything the store knows about one image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The image ID: the config digest.
    pub id: Digest,
    /// The image manifest in the blob store.
    pub manifest: Digest,
    pub manifest_media_type: String,
    /// The index / manifest list it was selected from, if any (kept for GC and push).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<Digest>,
    pub layers: Vec<LayerRecord>,
    /// `name@sha256:...` of what was pulled.
    #[serde(default)]
    pub repo_digests: Vec<String>,
    /// When this node stored it (RFC 3339).
    pub added: String,
}

impl ImageRecord {
    /// Uncompressed size of all layers (Docker's `Size`).
    pub fn size(&self) -> u64 {
        self.layers.iter().map(|l| l.diff_size).sum()
    }
    /// Chain IDs of its layers, bottom first (snapshot keys).
    pub fn chain_ids(&self) -> Vec<Digest> {
        let diffs: Vec<Digest> = self.layers.iter().map(|l| l.diff_id.clone()).collect();
        chain_ids(&diffs)
    }
    fn blobs(&self) -> impl Iterator<Item = &Digest> {
        [&self.id, &self.manifest]
            .into_iter()
            .chain(self.index.iter())
            .chain(self.layers.iter().map(|l| &l.digest))
    }
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Persisted {
    version: u32,
    images: BTreeMap<Digest, ImageRecord>,
    /// Familiar `name:tag` -> image ID.
    tags: BTreeMap<String, Digest>,
}

/// A row of `docker images`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSummary {
    pub id: Digest,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    /// From the config (RFC 3339), if it says.
    pub created: Option<String>,
    pub size: u64,
}

/// What `docker image inspect` shows.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageDetails {
    pub id: Digest,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    pub created: Option<String>,
    pub author: Option<String>,
    pub architecture: String,
    pub os: String,
    pub variant: Option<String>,
    /// Docker's `Config` object, as in the image config.
    pub config: Option<serde_json::Value>,
    /// `RootFS.Layers`: the diff IDs.
    pub rootfs_layers: Vec<Digest>,
    pub size: u64,
    pub history: Vec<History>,
    pub record: ImageRecord,
}

/// What [`ImageStore::remove`] did, in Docker's terms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoveReport {
    /// References removed (`Untagged:`).
    pub untagged: Vec<String>,
    /// Image IDs deleted (`Deleted:`).
    pub deleted: Vec<Digest>,
    /// Layer chain IDs no remaining image uses: the caller may remove their snapshots.
    pub unused_chain_ids: Vec<Digest>,
    /// Uncompressed bytes of those layers (what dockerd reports as `SpaceReclaimed`).
    pub unused_bytes: u64,
}

/// The image metadata of one data root.
#[derive(Debug)]
pub struct ImageStore {
    path: PathBuf,
    blobs: BlobStore,
    state: Mutex<Persisted>,
    activity: Arc<Mutex<Activity>>,
}

/// Pulls, loads and imports in progress vs a running GC: they exclude each other, so GC
/// never removes a blob that an operation stored but has not yet recorded.
#[derive(Debug, Default)]
struct Activity {
    running: usize,
    collecting: bool,
}

/// Held while an operation that adds blobs runs; see [`ImageStore::gc`].
#[derive(Debug)]
pub struct ActivityGuard {
    activity: Arc<Mutex<Activity>>,
}

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        self.activity.lock().expect("activity").running -= 1;
    }
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

impl ImageStore {
    /// Opens the store under `data_root` (`blobs/` and `images/`), loading what an
    /// earlier run persisted.
    pub fn open(data_root: &Path) -> Result<Self> {
        let blobs = BlobStore::open(data_root.join("blobs"))?;
        let dir = data_root.join("images");
        fs::create_dir_all(&dir).map_err(Error::io("create", &dir))?;
        let path = dir.join("repositories.json");
        let state = match fs::read(&path) {
            Ok(bytes) => Self::decode(&path, &bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Persisted {
                version: METADATA_VERSION,
                ..Persisted::default()
            },
            Err(e) => return Err(Error::io("read", &path)(e)),
        };
        Ok(ImageStore {
            path,
            blobs,
            state: Mutex::new(state),
            activity: Arc::default(),
        })
    }

    fn try_begin_activity(&self) -> Option<ActivityGuard> {
        let mut a = self.activity.lock().expect("activity");
        if a.collecting {
            return None;
        }
        a.running += 1;
        Some(ActivityGuard {
            activity: self.activity.clone(),
        })
    }

    /// Marks an operation that adds blobs (waits while a GC runs). Blocking.
    pub fn begin_activity(&self) -> ActivityGuard {
        loop {
            if let Some(g) = self.try_begin_activity() {
                return g;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// [`ImageStore::begin_activity`] for async callers.
    pub async fn begin_activity_async(&self) -> ActivityGuard {
        loop {
            if let Some(g) = self.try_begin_activity() {
                return g;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Decodes a persisted file, migrating older versions (there are none before 1).
    fn decode(path: &Path, bytes: &[u8]) -> Result<Persisted> {
        #[derive(Deserialize)]
        struct VersionOnly {
            version: u32,
        }
        let v: VersionOnly =
            serde_json::from_slice(bytes).map_err(|source| Error::MetadataCorrupt {
                path: path.to_path_buf(),
                source,
            })?;
        if v.version != METADATA_VERSION {
            return Err(Error::MetadataVersion {
                path: path.to_path_buf(),
                found: v.version,
                supported: METADATA_VERSION,
            });
        }
        serde_json::from_slice(bytes).map_err(|source| Error::MetadataCorrupt {
            path: path.to_path_buf(),
            source,
        })
    }

    fn persist(&self, state: &Persisted) -> Result<()> {
        let tmp = self.path.with_extension("json.tmp");
        let data = serde_json::to_vec_pretty(state).expect("metadata serialises");
        let mut f = fs::File::create(&tmp).map_err(Error::io("create", &tmp))?;
        f.write_all(&data).map_err(Error::io("write", &tmp))?;
        f.sync_all().map_err(Error::io("fsync", &tmp))?;
        fs::rename(&tmp, &self.path).map_err(Error::io("rename", &self.path))?;
        Ok(())
    }

    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    /// Adds (or refreshes) an image and points `tags` at it; a tag that named another
    /// image moves. Returns whether the image is new to this store.
    pub fn record(&self, mut image: ImageRecord, tags: &[Reference]) -> Result<bool> {
        let mut st = self.state.lock().expect("image store");
        let new = !st.images.contains_key(&image.id);
        if let Some(old) = st.images.get(&image.id) {
            let mut digests: BTreeSet<String> = old.repo_digests.iter().cloned().collect();
            digests.extend(image.repo_digests.drain(..));
            image.repo_digests = digests.into_iter().collect();
            image.added = old.added.clone();
        }
        for t in tags {
            if let Some(key) = t.familiar_tagged() {
                st.tags.insert(key, image.id.clone());
            }
        }
        st.images.insert(image.id.clone(), image);
        self.persist(&st)?;
        Ok(new)
    }

    /// Finds an image by `name[:tag]`, `name@digest`, full ID, or unique ID prefix.
    pub fn resolve(&self, s: &str) -> Result<ImageRecord> {
        let st = self.state.lock().expect("image store");
        Self::resolve_or_err(&st, s).map(|id| st.images[&id].clone())
    }

    /// [`Self::resolve_in`] with its failure told apart as dockerd does: input that is
    /// neither an ID (prefix) nor a valid reference is bad input ([`Error::InvalidReference`],
    /// a 400), a valid one that names nothing is [`Error::ImageNotFound`] (a 404).
    fn resolve_or_err(st: &Persisted, s: &str) -> Result<Digest> {
        match Self::resolve_in(st, s) {
            Some(id) => Ok(id),
            None => match Reference::parse(s) {
                Err(e) => Err(e),
                Ok(_) => Err(Error::ImageNotFound {
                    reference: s.to_string(),
                }),
            },
        }
    }

    fn resolve_in(st: &Persisted, s: &str) -> Option<Digest> {
        let hex = s.strip_prefix("sha256:").unwrap_or(s);
        if !hex.is_empty()
            && hex.len() <= 64
            && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            let hits: Vec<&Digest> = st
                .images
                .keys()
                .filter(|d| d.hex().starts_with(hex))
                .collect();
            if hits.len() == 1 {
                return Some(hits[0].clone());
            }
        }
        let r = Reference::parse(s).ok()?;
        if let Some(d) = r.digest() {
            let want = format!("{}@{d}", r.familiar_name());
            return st
                .images
                .values()
                .find(|i| i.repo_digests.contains(&want))
                .map(|i| i.id.clone());
        }
        st.tags.get(&r.familiar_tagged()?).cloned()
    }

    fn tags_of(st: &Persisted, id: &Digest) -> Vec<String> {
        st.tags
            .iter()
            .filter(|(_, v)| *v == id)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Details for `docker image inspect`.
    pub fn inspect(&self, s: &str) -> Result<ImageDetails> {
        let record = self.resolve(s)?;
        let cfg_bytes = self.blobs.read(&record.id)?;
        let cfg = ImageConfig::parse(&cfg_bytes, &record.id)?;
        let st = self.state.lock().expect("image store");
        Ok(ImageDetails {
            id: record.id.clone(),
            repo_tags: Self::tags_of(&st, &record.id),
            repo_digests: record.repo_digests.clone(),
            created: cfg.created,
            author: cfg.author,
            architecture: cfg.architecture,
            os: cfg.os,
            variant: cfg.variant,
            config: cfg.config,
            rootfs_layers: cfg.rootfs.diff_ids,
            size: record.size(),
            history: cfg.history,
            record,
        })
    }

    /// All images, as `docker images` lists them.
    pub fn list(&self) -> Result<Vec<ImageSummary>> {
        let st = self.state.lock().expect("image store");
        let mut out = Vec::new();
        for img in st.images.values() {
            let created = self
                .blobs
                .read(&img.id)
                .ok()
                .and_then(|b| ImageConfig::parse(&b, &img.id).ok())
                .and_then(|c| c.created);
            out.push(ImageSummary {
                id: img.id.clone(),
                repo_tags: Self::tags_of(&st, &img.id),
                repo_digests: img.repo_digests.clone(),
                created,
                size: img.size(),
            });
        }
        Ok(out)
    }

    /// Points `target` (which must carry a tag) at the image `source` resolves to.
    pub fn tag(&self, source: &str, target: &Reference) -> Result<()> {
        let mut st = self.state.lock().expect("image store");
        let id = Self::resolve_or_err(&st, source)?;
        let key = target
            .familiar_tagged()
            .ok_or_else(|| Error::InvalidReference {
                input: target.to_string(),
                kind: crate::error::ReferenceErrorKind::Format,
            })?;
        st.tags.insert(key, id);
        self.persist(&st)
    }

    /// Uncompressed size of a layer another image already recorded.
    pub fn layer_diff_size(&self, diff_id: &Digest) -> Option<u64> {
        let st = self.state.lock().expect("image store");
        st.images
            .values()
            .flat_map(|i| i.layers.iter())
            .find(|l| &l.diff_id == diff_id)
            .map(|l| l.diff_size)
    }

    /// Removes a reference or an image, as `docker rmi` does. `in_use` tells whether a
    /// container uses an image ID. Refuses (unless `force`) to delete an image in use, or
    /// to delete by ID an image with several tags.
    pub fn remove(
        &self,
        s: &str,
        force: bool,
        in_use: &dyn Fn(&Digest) -> bool,
    ) -> Result<RemoveReport> {
        let mut st = self.state.lock().expect("image store");
        let id = Self::resolve_or_err(&st, s)?;
        let tags = Self::tags_of(&st, &id);
        let mut report = RemoveReport::default();
        let by_reference = !id.hex().starts_with(s.strip_prefix("sha256:").unwrap_or(s));
        if by_reference {
            let r = Reference::parse(s)?;
            let key = r.familiar_tagged();
            let is_last = tags.len() <= 1;
            if !is_last {
                if let Some(k) = key {
                    st.tags.remove(&k);
                    report.untagged.push(k);
                }
                self.persist(&st)?;
                return Ok(report);
            }
        } else if tags.len() > 1 && !force {
            return Err(Error::ImageHasManyTags { id, tags });
        }
        let used = in_use(&id);
        if used && !force {
            return Err(Error::ImageInUse { id });
        }
        for t in &tags {
            st.tags.remove(t);
            report.untagged.push(t.clone());
        }
        if used {
            // Forced while a container uses it: Docker untags and keeps the image.
            self.persist(&st)?;
            return Ok(report);
        }
        let img = st.images.remove(&id).expect("resolved image exists");
        report.untagged.extend(img.repo_digests.iter().cloned());
        let still_used: HashSet<Digest> = st.images.values().flat_map(|i| i.chain_ids()).collect();
        for (chain, layer) in img.chain_ids().into_iter().zip(&img.layers) {
            if !still_used.contains(&chain) {
                report.unused_bytes += layer.diff_size;
                report.unused_chain_ids.push(chain);
            }
        }
        report.deleted.push(id);
        self.persist(&st)?;
        let keep: HashSet<Digest> = st
            .images
            .values()
            .flat_map(|i| i.blobs().cloned())
            .collect();
        for b in img.blobs() {
            if !keep.contains(b) {
                self.blobs.delete(b)?;
            }
        }
        Ok(report)
    }

    /// Removes every blob no image references. Refused with [`Error::Busy`] (retryable)
    /// while a pull, load or import runs; those wait while a GC runs.
    pub fn gc(&self) -> Result<GcReport> {
        self.with_references_locked(|keep| self.blobs.gc(keep))
    }

    /// Runs `f` with the set of blobs recorded images reference, excluding pulls, loads
    /// and imports meanwhile (as [`ImageStore::gc`] does): what `f` deletes outside that
    /// set cannot be a blob an operation is about to reference. Refused with
    /// [`Error::Busy`] (retryable) while such an operation runs.
    pub fn with_references_locked<T>(
        &self,
        f: impl FnOnce(&HashSet<Digest>) -> Result<T>,
    ) -> Result<T> {
        {
            let mut a = self.activity.lock().expect("activity");
            if a.running > 0 || a.collecting {
                return Err(Error::Busy {
                    operations: a.running,
                });
            }
            a.collecting = true;
        }
        let result = {
            let st = self.state.lock().expect("image store");
            let keep: HashSet<Digest> = st
                .images
                .values()
                .flat_map(|i| i.blobs().cloned())
                .collect();
            drop(st);
            f(&keep)
        };
        self.activity.lock().expect("activity").collecting = false;
        result
    }

    /// A new record's `added` time.
    pub fn now() -> String {
        now_rfc3339()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gc_waits_for_no_activity_and_keeps_referenced_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let orphan = store.blobs().put(b"orphan").unwrap();
        let guard = store.begin_activity();
        let err = store.gc().unwrap_err();
        assert!(matches!(err, Error::Busy { operations: 1 }), "{err}");
        assert!(err.is_retryable());
        assert!(
            store.blobs().contains(&orphan),
            "nothing collected while busy"
        );
        drop(guard);
        let report = store.gc().unwrap();
        assert_eq!(report.removed, vec![orphan]);
    }

    #[test]
    fn unknown_metadata_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(ImageStore::open(dir.path()).unwrap());
        let path = dir.path().join("images/repositories.json");
        std::fs::write(&path, br#"{"version": 99, "images": {}, "tags": {}}"#).unwrap();
        let err = ImageStore::open(dir.path()).unwrap_err();
        assert!(
            matches!(
                err,
                Error::MetadataVersion {
                    found: 99,
                    supported: 1,
                    ..
                }
            ),
            "{err}"
        );
    }
}
