//! Least-recently-used eviction under a size cap. The choice of victims is plain code
//! ([`choose_victims`]); the access times are persisted (`<mirror dir>/lru.json`) so the
//! order survives restarts.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::Result;

/// Version of `lru.json`.
pub const LRU_VERSION: u32 = 1;

/// One blob in the store, as eviction sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBlob {
    pub digest: Digest,
    pub size: u64,
}

/// The blobs to delete, oldest access first, so that the store fits in `cap` bytes.
/// Blobs in `protected` are never chosen (then the store may stay above the cap). Blobs
/// with no recorded access count as accessed at `unknown_at` (a blob some other writer
/// added, e.g. a direct pull, is treated as new rather than as the oldest).
pub fn choose_victims(
    blobs: &[StoredBlob],
    last_access: &BTreeMap<Digest, u64>,
    cap: u64,
    protected: &HashSet<Digest>,
    unknown_at: u64,
) -> Vec<Digest> {
    let mut total: u64 = blobs.iter().map(|b| b.size).sum();
    if total <= cap {
        return Vec::new();
    }
    let mut candidates: Vec<(u64, &StoredBlob)> = blobs
        .iter()
        .filter(|b| !protected.contains(&b.digest))
        .map(|b| (last_access.get(&b.digest).copied().unwrap_or(unknown_at), b))
        .collect();
    candidates.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.digest.cmp(&b.1.digest)));
    let mut out = Vec::new();
    for (_, b) in candidates {
        if total <= cap {
            break;
        }
        total -= b.size;
        out.push(b.digest.clone());
    }
    out
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Persisted {
    version: u32,
    /// Milliseconds since the Unix epoch of the last serve or store of each blob.
    last_access_ms: BTreeMap<Digest, u64>,
}

/// The persisted access times. Not synchronised: the mirror keeps it behind a mutex.
#[derive(Debug)]
pub struct AccessLog {
    path: PathBuf,
    state: Persisted,
    dirty: bool,
}

impl AccessLog {
    pub fn open(path: &Path) -> Result<Self> {
        let state = super::load_versioned(path, LRU_VERSION)?.unwrap_or(Persisted {
            version: LRU_VERSION,
            ..Persisted::default()
        });
        Ok(AccessLog {
            path: path.to_path_buf(),
            state,
            dirty: false,
        })
    }

    /// Records an access (in memory; [`AccessLog::persist`] writes it).
    pub fn touch(&mut self, d: &Digest, now_ms: u64) {
        self.state.last_access_ms.insert(d.clone(), now_ms);
        self.dirty = true;
    }

    pub fn forget(&mut self, d: &Digest) {
        if self.state.last_access_ms.remove(d).is_some() {
            self.dirty = true;
        }
    }

    pub fn last_access(&self) -> &BTreeMap<Digest, u64> {
        &self.state.last_access_ms
    }

    /// Writes the file if anything changed since the last write.
    pub fn persist(&mut self) -> Result<()> {
        if !self.dirty {
            return Ok(());
        }
        super::persist_json(&self.path, &self.state)?;
        self.dirty = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(n: u8, size: u64) -> StoredBlob {
        StoredBlob {
            digest: Digest::of(&[n]),
            size,
        }
    }

    #[test]
    fn evicts_least_recently_used_until_under_cap() {
        let blobs = vec![blob(1, 10), blob(2, 10), blob(3, 10), blob(4, 10)];
        let times: BTreeMap<Digest, u64> = [(1, 400), (2, 100), (3, 300), (4, 200)]
            .into_iter()
            .map(|(n, t)| (Digest::of(&[n]), t))
            .collect();
        let none = HashSet::new();
        assert!(choose_victims(&blobs, &times, 40, &none, 0).is_empty());
        assert_eq!(
            choose_victims(&blobs, &times, 25, &none, 0),
            vec![Digest::of(&[2]), Digest::of(&[4])]
        );
        // Protected blobs are skipped, even when the cap cannot be met.
        let protected: HashSet<Digest> = [Digest::of(&[2]), Digest::of(&[4])].into();
        assert_eq!(
            choose_victims(&blobs, &times, 0, &protected, 0),
            vec![Digest::of(&[3]), Digest::of(&[1])]
        );
    }

    #[test]
    fn unknown_blobs_count_as_new() {
        let blobs = vec![blob(1, 10), blob(2, 10)];
        let times: BTreeMap<Digest, u64> = [(Digest::of(&[1]), 500)].into();
        assert_eq!(
            choose_victims(&blobs, &times, 10, &HashSet::new(), 1000),
            vec![Digest::of(&[1])]
        );
    }

    #[test]
    fn access_times_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lru.json");
        let mut log = AccessLog::open(&p).unwrap();
        log.touch(&Digest::of(b"a"), 7);
        log.persist().unwrap();
        let log = AccessLog::open(&p).unwrap();
        assert_eq!(log.last_access().get(&Digest::of(b"a")), Some(&7));
    }
}
