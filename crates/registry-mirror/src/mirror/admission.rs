//! Which stored digests the mirror may serve to anyone: those it fetched itself (from the
//! registry with its own upstream identity, or from a peer mirror that did), and those
//! the registry confirmed to that identity since. Persisted in `<mirror dir>/admitted.json`.
//!
//! Why: the blob store is shared with the node's own pulls and pushes, and a pull made
//! with a client's credentials (`X-Registry-Auth`) goes to the registry directly and
//! stores a private repository's manifests and layers there. Serving them by digest to
//! whoever asks the mirror would hand a private image to a client without credentials.
//! So a stored digest that is not admitted is served only after the registry answers the
//! mirror's own `HEAD`/`GET` for it in the asked repository (then it is admitted); a
//! refusal (401/403), a 404 or an unreachable registry is the client's answer. Content is
//! public knowledge once the mirror's identity may read it anywhere, so admission is per
//! digest, not per repository.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::Result;

/// Version of `admitted.json` this build writes and reads.
pub const ADMITTED_VERSION: u32 = 1;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Persisted {
    version: u32,
    digests: BTreeSet<Digest>,
}

/// The admitted digests. Not synchronised: the mirror keeps it behind a mutex.
#[derive(Debug)]
pub struct Admitted {
    path: PathBuf,
    state: Persisted,
    dirty: bool,
}

impl Admitted {
    /// Reads `path` (an absent file is an empty set).
    pub fn open(path: &Path) -> Result<Self> {
        let state = super::load_versioned(path, ADMITTED_VERSION)?.unwrap_or(Persisted {
            version: ADMITTED_VERSION,
            ..Persisted::default()
        });
        Ok(Admitted {
            path: path.to_path_buf(),
            state,
            dirty: false,
        })
    }

    pub fn contains(&self, d: &Digest) -> bool {
        self.state.digests.contains(d)
    }

    /// Records `d` as servable to anyone (in memory; [`Admitted::persist`] writes it).
    pub fn admit(&mut self, d: &Digest) {
        if self.state.digests.insert(d.clone()) {
            self.dirty = true;
        }
    }

    /// Drops `d` (evicted from the store).
    pub fn forget(&mut self, d: &Digest) {
        if self.state.digests.remove(d) {
            self.dirty = true;
        }
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

    #[test]
    fn admitted_digests_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admitted.json");
        let d = Digest::of(b"x");
        let mut a = Admitted::open(&path).unwrap();
        assert!(!a.contains(&d));
        a.admit(&d);
        a.persist().unwrap();
        let mut b = Admitted::open(&path).unwrap();
        assert!(b.contains(&d));
        b.forget(&d);
        b.persist().unwrap();
        assert!(!Admitted::open(&path).unwrap().contains(&d));
    }
}
