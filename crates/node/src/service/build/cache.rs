//! The classic builder's cache: step cache key -> the image that step produced, kept in
//! `<data-root>/build/cache.json` so it survives daemon restarts.
//!
//! A key is [`berth_builder::cache_key`] (Docker's rule: parent image ID, the step's
//! instruction/config text, and for COPY/ADD the content checksum of the copied files). An
//! entry whose image is gone (removed with `docker rmi`, `image prune`) is a miss.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One cached step result.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CacheEntry {
    /// The image the step produced (`sha256:...`).
    pub image: String,
    /// The parent image it was built on (empty for `FROM scratch`).
    pub parent: String,
    /// The step's Dockerfile text (`RUN echo hi`), shown as the record's description.
    pub description: String,
    /// Bytes of the layer the step added (0 for metadata steps).
    pub size: u64,
    /// RFC 3339.
    pub created: String,
    /// RFC 3339, updated on every hit.
    pub last_used: String,
    /// Hits so far.
    pub usage_count: u64,
}

/// The cache, loaded in memory, written through on every change.
#[derive(Debug)]
pub struct BuildCache {
    path: PathBuf,
    entries: BTreeMap<String, CacheEntry>,
}

impl BuildCache {
    /// Loads `dir/cache.json` (an absent or unreadable file is an empty cache: the cache
    /// only saves work, losing it loses nothing else).
    pub fn open(dir: &Path) -> Self {
        let path = dir.join("cache.json");
        let entries = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        BuildCache { path, entries }
    }

    fn save(&self) {
        let tmp = self.path.with_extension("json.tmp");
        let bytes = serde_json::to_vec(&self.entries).expect("json");
        let result = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, &self.path));
        if let Err(e) = result {
            tracing::warn!(path = %self.path.display(), error = %e, "saving the build cache");
        }
    }

    /// The image cached for `key`, counting the hit.
    pub fn hit(&mut self, key: &str, now: &str) -> Option<String> {
        let e = self.entries.get_mut(key)?;
        e.last_used = now.to_string();
        e.usage_count += 1;
        let image = e.image.clone();
        self.save();
        Some(image)
    }

    /// Forgets `key` (its image is gone).
    pub fn forget(&mut self, key: &str) {
        if self.entries.remove(key).is_some() {
            self.save();
        }
    }

    pub fn insert(&mut self, key: String, entry: CacheEntry) {
        self.entries.insert(key, entry);
        self.save();
    }

    /// Whether `image` is the result of a cached step.
    pub fn has_image(&self, image: &str) -> bool {
        self.entries.values().any(|e| e.image == image)
    }

    pub fn entries(&self) -> &BTreeMap<String, CacheEntry> {
        &self.entries
    }

    /// Empties the cache; returns what it held.
    pub fn clear(&mut self) -> BTreeMap<String, CacheEntry> {
        let all = std::mem::take(&mut self.entries);
        self.save();
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = BuildCache::open(dir.path());
        c.insert(
            "sha256:k".into(),
            CacheEntry {
                image: "sha256:i".into(),
                parent: String::new(),
                description: "RUN x".into(),
                size: 3,
                created: "t".into(),
                last_used: "t".into(),
                usage_count: 0,
            },
        );
        let mut again = BuildCache::open(dir.path());
        assert_eq!(again.hit("sha256:k", "u").as_deref(), Some("sha256:i"));
        assert!(again.has_image("sha256:i"));
        assert_eq!(again.clear().len(), 1);
        assert!(BuildCache::open(dir.path()).entries().is_empty());
    }
}
