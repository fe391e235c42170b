//! Overlayfs snapshots: read-only layer directories keyed by chain ID, and per-container
//! writable upper/work directories.
//!
//! Owns the on-disk layout below its root and the overlay mount plan. Does not unpack layers
//! (the unpacker writes into a directory from [`SnapshotStore::begin_layer`]), and does not
//! decide when to mount: the caller executes a [`MountPlan`] through a [`Mounter`].
//!
//! ```text
//!  <root>/layers/<chain-hex>/          read-only lower (committed, never written again)
//!  <root>/ingest/<n>/                   a layer being unpacked, renamed into layers/ on commit
//!  <root>/active/<container-id>/upper   the container's writes
//!  <root>/active/<container-id>/work    overlayfs work dir
//! ```

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use crate::error::{Result, RuntimeError};

/// A mount to perform, computed as data.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MountPlan {
    pub fstype: String,
    pub source: String,
    pub target: PathBuf,
    pub options: String,
}

/// The one seam through which mounts happen.
pub trait Mounter: Send + Sync + std::fmt::Debug {
    fn mount(&self, plan: &MountPlan) -> Result<()>;
    /// Unmounts `target`; succeeds when nothing is mounted there.
    fn unmount(&self, target: &Path) -> Result<()>;
    fn is_mounted(&self, target: &Path) -> Result<bool>;
}

/// Computes the chain ID of a layer from its parent's chain ID and its own diff ID
/// (OCI image spec: `ChainID(L0) = DiffID(L0)`, `ChainID(Ln) = sha256(ChainID(Ln-1) + " " +
/// DiffID(Ln))`).
pub fn chain_id(parent: Option<&str>, diff_id: &str) -> String {
    match parent {
        None => diff_id.to_string(),
        Some(p) => {
            let digest = Sha256::digest(format!("{p} {diff_id}").as_bytes());
            format!("sha256:{}", hex::encode(digest))
        }
    }
}

/// Chain IDs of every layer of an image, bottom first, from its diff IDs (bottom first).
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = chain_id(out.last().map(String::as_str), d);
        out.push(next);
    }
    out
}

/// The overlay mount of `lowers` (bottom first, as images list layers) under `upper`.
pub fn plan_overlay(lowers: &[PathBuf], upper: &Path, work: &Path, target: &Path) -> MountPlan {
    let lowerdir = lowers
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    MountPlan {
        fstype: "overlay".into(),
        source: "overlay".into(),
        target: target.to_path_buf(),
        options: format!(
            "lowerdir={lowerdir},upperdir={},workdir={}",
            upper.display(),
            work.display()
        ),
    }
}

fn digest_hex(value: &str) -> Result<&str> {
    let hex = value.strip_prefix("sha256:").unwrap_or(value);
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(hex)
    } else {
        Err(RuntimeError::InvalidDigest {
            value: value.to_string(),
        })
    }
}

/// Layer directories and container upper dirs below one root.
#[derive(Debug)]
pub struct SnapshotStore {
    root: PathBuf,
    ingest_seq: AtomicU64,
}

impl SnapshotStore {
    /// Opens (creating if needed) a store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        for sub in ["layers", "ingest", "active"] {
            let dir = root.join(sub);
            std::fs::create_dir_all(&dir).map_err(|e| RuntimeError::io("create", &dir, e))?;
        }
        Ok(SnapshotStore {
            root,
            ingest_seq: AtomicU64::new(0),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of a committed layer.
    pub fn layer_dir(&self, chain_id: &str) -> Result<PathBuf> {
        Ok(self.root.join("layers").join(digest_hex(chain_id)?))
    }

    pub fn has_layer(&self, chain_id: &str) -> Result<bool> {
        Ok(self.layer_dir(chain_id)?.is_dir())
    }

    /// A fresh empty directory to unpack one layer into; pass it to [`Self::commit_layer`].
    pub fn begin_layer(&self) -> Result<PathBuf> {
        let n = self.ingest_seq.fetch_add(1, Ordering::Relaxed);
        let dir = self
            .root
            .join("ingest")
            .join(format!("{}-{n}", std::process::id()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| RuntimeError::io("remove", &dir, e))?;
        }
        std::fs::create_dir(&dir).map_err(|e| RuntimeError::io("create", &dir, e))?;
        Ok(dir)
    }

    /// Moves an unpacked layer into place under its chain ID. If another writer committed the
    /// same chain ID first, the new copy is discarded.
    pub fn commit_layer(&self, ingest: &Path, chain_id: &str) -> Result<PathBuf> {
        let dest = self.layer_dir(chain_id)?;
        match std::fs::rename(ingest, &dest) {
            Ok(()) => Ok(dest),
            Err(_) if dest.is_dir() => {
                std::fs::remove_dir_all(ingest)
                    .map_err(|e| RuntimeError::io("remove", ingest, e))?;
                Ok(dest)
            }
            Err(e) => Err(RuntimeError::io("rename", ingest, e)),
        }
    }

    /// Removes a committed layer (the caller makes sure no container uses it).
    pub fn remove_layer(&self, chain_id: &str) -> Result<()> {
        let dir = self.layer_dir(chain_id)?;
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(RuntimeError::io("remove", &dir, e))
            }
            _ => Ok(()),
        }
    }

    /// Reads file `rel` of the image made of `chain_ids` (bottom first) straight from the
    /// layers, top layer first, without a mount: the first layer holding it decides; a
    /// whiteout there means the file is absent. Only regular files are read (no symlinks).
    pub fn read_image_file(&self, chain_ids: &[String], rel: &str) -> Result<Option<Vec<u8>>> {
        use std::os::unix::fs::FileTypeExt;
        let (dir, name) = match rel.rsplit_once('/') {
            Some((d, n)) => (d, n),
            None => ("", rel),
        };
        for c in chain_ids.iter().rev() {
            let layer = self.layer_dir(c)?;
            let p = layer.join(rel);
            if let Ok(m) = std::fs::symlink_metadata(&p) {
                if m.file_type().is_char_device() {
                    return Ok(None); // overlay whiteout
                }
                if !m.is_file() {
                    return Ok(None);
                }
                return std::fs::read(&p)
                    .map(Some)
                    .map_err(|e| RuntimeError::io("read", &p, e));
            }
            if layer.join(dir).join(format!(".wh.{name}")).exists() {
                return Ok(None);
            }
        }
        Ok(None)
    }

    /// The writable directory of container `id`.
    pub fn upper_dir(&self, id: &str) -> PathBuf {
        self.active_dir(id).join("upper")
    }

    /// The directory holding container `id`'s upper and work dirs.
    pub fn active_dir(&self, id: &str) -> PathBuf {
        self.root.join("active").join(id)
    }

    /// Creates the upper and work dirs of container `id` (kept if they exist: a restarted
    /// container keeps its writes) and returns the overlay mount of `chain_ids` (bottom first)
    /// onto `target`.
    pub fn prepare_active(
        &self,
        id: &str,
        chain_ids: &[String],
        target: &Path,
    ) -> Result<MountPlan> {
        let mut lowers = Vec::with_capacity(chain_ids.len());
        for c in chain_ids {
            let dir = self.layer_dir(c)?;
            if !dir.is_dir() {
                return Err(RuntimeError::SnapshotMissing {
                    chain_id: c.clone(),
                });
            }
            lowers.push(dir);
        }
        let base = self.active_dir(id);
        let upper = base.join("upper");
        let work = base.join("work");
        for d in [&upper, &work] {
            std::fs::create_dir_all(d).map_err(|e| RuntimeError::io("create", d, e))?;
        }
        Ok(plan_overlay(&lowers, &upper, &work, target))
    }

    /// Removes the upper and work dirs of container `id` (after its rootfs is unmounted).
    pub fn remove_active(&self, id: &str) -> Result<()> {
        let dir = self.active_dir(id);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(RuntimeError::io("remove", &dir, e))
            }
            _ => Ok(()),
        }
    }
}

/// The real [`Mounter`]: mount(2) and umount2(2).
#[derive(Debug, Default, Clone, Copy)]
pub struct SysMounter;

impl Mounter for SysMounter {
    fn mount(&self, plan: &MountPlan) -> Result<()> {
        std::fs::create_dir_all(&plan.target)
            .map_err(|e| RuntimeError::io("create", &plan.target, e))?;
        nix::mount::mount(
            Some(plan.source.as_str()),
            &plan.target,
            Some(plan.fstype.as_str()),
            nix::mount::MsFlags::empty(),
            Some(plan.options.as_str()),
        )
        .map_err(|source| RuntimeError::Mount {
            target: plan.target.clone(),
            source,
        })
    }

    fn unmount(&self, target: &Path) -> Result<()> {
        if !self.is_mounted(target)? {
            return Ok(());
        }
        nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH).map_err(|source| {
            RuntimeError::Unmount {
                target: target.to_path_buf(),
                source,
            }
        })
    }

    fn is_mounted(&self, target: &Path) -> Result<bool> {
        let text = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| RuntimeError::io("read", "/proc/self/mountinfo", e))?;
        let want = target.display().to_string();
        Ok(text
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .any(|mp| unescape_mountinfo(mp) == want))
    }
}

/// Mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mountinfo(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

#[cfg(test)]
mod tests {
    use super::*;

    const D0: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D1: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn chain_id_of_first_layer_is_its_diff_id() {
        assert_eq!(chain_id(None, D0), D0);
        let ids = chain_ids(&[D0.to_string(), D1.to_string()]);
        assert_eq!(ids[0], D0);
        let expect = format!(
            "sha256:{}",
            hex::encode(Sha256::digest(format!("{D0} {D1}").as_bytes()))
        );
        assert_eq!(ids[1], expect);
    }

    #[test]
    fn overlay_plan_lists_top_layer_first() {
        let plan = plan_overlay(
            &[PathBuf::from("/l/bottom"), PathBuf::from("/l/top")],
            Path::new("/a/up"),
            Path::new("/a/wk"),
            Path::new("/c/rootfs"),
        );
        assert_eq!(plan.fstype, "overlay");
        assert_eq!(plan.target, Path::new("/c/rootfs"));
        assert_eq!(
            plan.options,
            "lowerdir=/l/top:/l/bottom,upperdir=/a/up,workdir=/a/wk"
        );
    }

    #[test]
    fn prepare_active_needs_committed_layers() {
        let tmp = tempfile::tempdir().unwrap();
        let store = SnapshotStore::open(tmp.path()).unwrap();
        let err = store
            .prepare_active("c1", &[D0.to_string()], Path::new("/x"))
            .unwrap_err();
        assert!(matches!(err, RuntimeError::SnapshotMissing { .. }));

        let ingest = store.begin_layer().unwrap();
        std::fs::write(ingest.join("f"), b"x").unwrap();
        let dir = store.commit_layer(&ingest, D0).unwrap();
        assert!(store.has_layer(D0).unwrap());
        assert!(dir.join("f").is_file());
        let plan = store
            .prepare_active("c1", &[D0.to_string()], Path::new("/x"))
            .unwrap();
        assert!(plan
            .options
            .contains(&format!("lowerdir={}", dir.display())));
        assert!(store.upper_dir("c1").is_dir());
        store.remove_active("c1").unwrap();
        assert!(!store.upper_dir("c1").exists());
    }

    #[test]
    fn second_commit_of_same_chain_id_is_discarded() {
        let tmp = tempfile::tempdir().unwrap();
        let store = SnapshotStore::open(tmp.path()).unwrap();
        let a = store.begin_layer().unwrap();
        std::fs::write(a.join("first"), b"1").unwrap();
        store.commit_layer(&a, D0).unwrap();
        let b = store.begin_layer().unwrap();
        std::fs::create_dir(b.join("sub")).unwrap();
        std::fs::write(b.join("sub/second"), b"2").unwrap();
        let dir = store.commit_layer(&b, D0).unwrap();
        assert!(dir.join("first").is_file());
        assert!(!b.exists());
    }

    #[test]
    fn image_files_are_read_from_the_top_layer_that_has_them() {
        let tmp = tempfile::tempdir().unwrap();
        let store = SnapshotStore::open(tmp.path()).unwrap();
        let bottom = store.begin_layer().unwrap();
        std::fs::create_dir(bottom.join("etc")).unwrap();
        std::fs::write(bottom.join("etc/passwd"), b"old").unwrap();
        std::fs::write(bottom.join("etc/group"), b"g").unwrap();
        store.commit_layer(&bottom, D0).unwrap();
        let top = store.begin_layer().unwrap();
        std::fs::create_dir(top.join("etc")).unwrap();
        std::fs::write(top.join("etc/passwd"), b"new").unwrap();
        store.commit_layer(&top, D1).unwrap();
        let chain = [D0.to_string(), D1.to_string()];
        assert_eq!(
            store.read_image_file(&chain, "etc/passwd").unwrap(),
            Some(b"new".to_vec())
        );
        assert_eq!(
            store.read_image_file(&chain, "etc/group").unwrap(),
            Some(b"g".to_vec())
        );
        assert_eq!(store.read_image_file(&chain, "etc/shadow").unwrap(), None);
    }

    #[test]
    fn rejects_non_digest_chain_ids() {
        let tmp = tempfile::tempdir().unwrap();
        let store = SnapshotStore::open(tmp.path()).unwrap();
        assert!(store.layer_dir("../../etc").is_err());
        assert!(store.layer_dir("sha256:abc").is_err());
    }

    #[test]
    fn mountinfo_unescape() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
    }
}
