//! The tag cache: `upstream/repository:tag -> manifest digest`, with the time it was last
//! confirmed upstream, persisted so stale-if-error works after a restart. Also remembers
//! each cached manifest's media type (the blob store keeps bytes only).
//!
//! The decision of what to do with a tag is plain code ([`decide`]): time comes in as an
//! argument.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::route::UpstreamRepo;
use crate::digest::Digest;
use crate::error::Result;

/// Version of `tags.json`.
pub const TAGS_VERSION: u32 = 1;

/// What the mirror knows about one tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagEntry {
    pub upstream: String,
    pub repository: String,
    pub tag: String,
    pub digest: Digest,
    /// Milliseconds since the Unix epoch when upstream last confirmed the mapping.
    pub confirmed_at_ms: u64,
}

/// What to do with a tag request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagDecision {
    /// Younger than the TTL: serve the cached digest without asking upstream.
    Fresh(Digest),
    /// Ask upstream; if that fails, serve `stale` if there is one (stale-if-error).
    Revalidate { stale: Option<Digest> },
}

/// Decides from the cached entry (if any), the current time and the TTL.
pub fn decide(entry: Option<&TagEntry>, now_ms: u64, ttl: Duration) -> TagDecision {
    match entry {
        Some(e) if now_ms.saturating_sub(e.confirmed_at_ms) < ttl.as_millis() as u64 => {
            TagDecision::Fresh(e.digest.clone())
        }
        Some(e) => TagDecision::Revalidate {
            stale: Some(e.digest.clone()),
        },
        None => TagDecision::Revalidate { stale: None },
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Persisted {
    version: u32,
    /// Keyed by `upstream/repository:tag`.
    tags: BTreeMap<String, TagEntry>,
    /// Media type of each cached manifest.
    media_types: BTreeMap<Digest, String>,
}

/// The persisted tag cache (`<mirror dir>/tags.json`). Not synchronised: the mirror keeps
/// it behind a mutex.
#[derive(Debug)]
pub struct TagCache {
    path: PathBuf,
    state: Persisted,
}

fn key(target: &UpstreamRepo, tag: &str) -> String {
    format!("{}/{}:{tag}", target.upstream, target.repository)
}

impl TagCache {
    /// Loads `path` (an absent file is an empty cache).
    pub fn open(path: &Path) -> Result<Self> {
        let state = super::load_versioned(path, TAGS_VERSION)?.unwrap_or(Persisted {
            version: TAGS_VERSION,
            ..Persisted::default()
        });
        Ok(TagCache {
            path: path.to_path_buf(),
            state,
        })
    }

    pub fn get(&self, target: &UpstreamRepo, tag: &str) -> Option<&TagEntry> {
        self.state.tags.get(&key(target, tag))
    }

    /// Records a confirmed mapping and the manifest's media type, and persists.
    pub fn confirm(
        &mut self,
        target: &UpstreamRepo,
        tag: &str,
        digest: &Digest,
        media_type: &str,
        now_ms: u64,
    ) -> Result<()> {
        self.state.tags.insert(
            key(target, tag),
            TagEntry {
                upstream: target.upstream.clone(),
                repository: target.repository.clone(),
                tag: tag.to_string(),
                digest: digest.clone(),
                confirmed_at_ms: now_ms,
            },
        );
        self.state
            .media_types
            .insert(digest.clone(), media_type.to_string());
        self.persist()
    }

    /// Records a manifest's media type (fetched by digest), persisting if it is new.
    pub fn remember_media_type(&mut self, digest: &Digest, media_type: &str) -> Result<()> {
        if self.state.media_types.get(digest).map(String::as_str) == Some(media_type) {
            return Ok(());
        }
        self.state
            .media_types
            .insert(digest.clone(), media_type.to_string());
        self.persist()
    }

    pub fn media_type(&self, digest: &Digest) -> Option<&str> {
        self.state.media_types.get(digest).map(String::as_str)
    }

    /// Cached tags of one repository, sorted.
    pub fn tags_of(&self, target: &UpstreamRepo) -> Vec<String> {
        self.state
            .tags
            .values()
            .filter(|e| e.upstream == target.upstream && e.repository == target.repository)
            .map(|e| e.tag.clone())
            .collect()
    }

    /// Every repository with a cached tag, as `upstream/repository`, sorted.
    pub fn repositories(&self) -> Vec<String> {
        let set: BTreeSet<String> = self
            .state
            .tags
            .values()
            .map(|e| format!("{}/{}", e.upstream, e.repository))
            .collect();
        set.into_iter().collect()
    }

    /// Manifest digests some tag points at (kept by eviction: stale-if-error needs them).
    pub fn tagged_digests(&self) -> BTreeSet<Digest> {
        self.state.tags.values().map(|e| e.digest.clone()).collect()
    }

    fn persist(&self) -> Result<()> {
        super::persist_json(&self.path, &self.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(at: u64) -> TagEntry {
        TagEntry {
            upstream: "r.io".into(),
            repository: "a".into(),
            tag: "t".into(),
            digest: Digest::of(b"m"),
            confirmed_at_ms: at,
        }
    }

    #[test]
    fn fresh_within_ttl_then_revalidate_with_stale_fallback() {
        let ttl = Duration::from_secs(60);
        let e = entry(1_000_000);
        assert_eq!(
            decide(Some(&e), 1_000_000 + 59_999, ttl),
            TagDecision::Fresh(e.digest.clone())
        );
        assert_eq!(
            decide(Some(&e), 1_000_000 + 60_000, ttl),
            TagDecision::Revalidate {
                stale: Some(e.digest.clone())
            }
        );
        // A clock that went backwards keeps the entry fresh rather than panicking.
        assert_eq!(
            decide(Some(&e), 0, ttl),
            TagDecision::Fresh(e.digest.clone())
        );
        assert_eq!(
            decide(None, 5, ttl),
            TagDecision::Revalidate { stale: None }
        );
        // TTL zero: always ask upstream.
        assert!(matches!(
            decide(Some(&e), 1_000_000, Duration::ZERO),
            TagDecision::Revalidate { .. }
        ));
    }

    #[test]
    fn persists_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tags.json");
        let target = UpstreamRepo {
            upstream: "r.io".into(),
            repository: "a/b".into(),
        };
        let d = Digest::of(b"manifest");
        {
            let mut c = TagCache::open(&p).unwrap();
            c.confirm(&target, "v1", &d, "application/x", 42).unwrap();
        }
        let c = TagCache::open(&p).unwrap();
        assert_eq!(c.get(&target, "v1").unwrap().digest, d);
        assert_eq!(c.get(&target, "v1").unwrap().confirmed_at_ms, 42);
        assert_eq!(c.media_type(&d), Some("application/x"));
        assert_eq!(c.tags_of(&target), vec!["v1".to_string()]);
        assert_eq!(c.repositories(), vec!["r.io/a/b".to_string()]);
    }
}
