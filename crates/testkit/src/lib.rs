//! berth-testkit: test fixtures shared by berth's test suites.
//!
//! Owns: deterministic OCI test images built from Debian's static busybox ([`image`]), a real
//! registry process (Debian's `docker-registry`) on a free loopback port ([`registry`]), and
//! the description of the images a fixture run serves ([`Fixture`]); hosts for end-to-end
//! tests: a berthd or a reference dockerd in a network namespace of its own ([`daemon`],
//! [`dockerd`]), a LAN between namespaces ([`lan`]) and a multi-host berth cluster on it
//! ([`cluster`]).
//!
//! Does not own: anything berth ships. Nothing outside tests and benchmarks depends on it.
//!
//! ```text
//!  tests/run.sh -> berth-fixture run -- <test runner>
//!                    | starts docker-registry on 127.0.0.1:<free port>
//!                    | builds + pushes busybox, web, big, multi
//!                    | writes fixture.json, exports BERTH_TEST_FIXTURE
//!                    v
//!                  test process -> Fixture::from_env() -> registry address, digests
//!                    (registry stopped and its data removed when the runner ends)
//! ```

pub mod cluster;
pub mod daemon;
pub mod dockerd;
pub mod image;
pub mod lan;
pub mod netns;
pub mod registry;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// Environment variable naming the fixture description file.
pub const FIXTURE_ENV: &str = "BERTH_TEST_FIXTURE";

/// One layer of a fixture image.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LayerInfo {
    pub digest: String,
    pub size: u64,
    pub diff_id: String,
}

/// What the registry serves under one `repo:tag`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageInfo {
    pub manifest_digest: String,
    pub media_type: String,
    /// Config digest (the image ID); for an index, of its linux/amd64 entry.
    pub config_digest: String,
    /// Layers; for an index, of its linux/amd64 entry.
    pub layers: Vec<LayerInfo>,
    /// For an index: digests of its child manifests.
    pub children: Vec<String>,
}

/// The running fixture: the registry address and what it serves.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fixture {
    /// `127.0.0.1:<port>`.
    pub registry: String,
    /// By `repo:tag`, e.g. `busybox:latest`.
    pub images: BTreeMap<String, ImageInfo>,
}

impl Fixture {
    /// Describes pushed images.
    pub fn describe(registry: String, images: &[image::TaggedManifest]) -> Self {
        let images = images
            .iter()
            .map(|m| {
                let info = ImageInfo {
                    manifest_digest: m.manifest.digest.clone(),
                    media_type: m.media_type.clone(),
                    config_digest: m.config_digest.clone(),
                    layers: m
                        .layers
                        .iter()
                        .map(|l| LayerInfo {
                            digest: l.blob.digest.clone(),
                            size: l.blob.data.len() as u64,
                            diff_id: l.diff_id.clone(),
                        })
                        .collect(),
                    children: m.children.iter().map(|(_, c)| c.digest.clone()).collect(),
                };
                (format!("{}:{}", m.repo, m.tag), info)
            })
            .collect();
        Fixture { registry, images }
    }

    /// Reads the fixture that `berth-fixture run` started for this test run.
    pub fn from_env() -> Result<Self> {
        let path = std::env::var_os(FIXTURE_ENV).with_context(|| {
            format!(
                "{FIXTURE_ENV} is not set: run the tests through tests/run.sh, or wrap the \
                 test runner: cargo run -p berth-testkit --bin berth-fixture -- run -- cargo test"
            )
        })?;
        Self::load(Path::new(&path))
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read(path).with_context(|| format!("read fixture {}", path.display()))?;
        serde_json::from_slice(&text).with_context(|| format!("parse fixture {}", path.display()))
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        std::fs::write(path, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("write {}", path.display()))
    }

    /// The image served under `repo:tag`; panics with a clear message if there is none.
    pub fn image(&self, repo_tag: &str) -> &ImageInfo {
        self.images
            .get(repo_tag)
            .unwrap_or_else(|| panic!("fixture serves no image {repo_tag}"))
    }

    /// A full reference such as `127.0.0.1:5000/busybox:latest`.
    pub fn reference(&self, repo_tag: &str) -> String {
        format!("{}/{repo_tag}", self.registry)
    }
}

/// The static busybox the fixture images are built from (`BERTH_BUSYBOX` overrides).
pub fn busybox_path() -> PathBuf {
    std::env::var_os("BERTH_BUSYBOX")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/bin/busybox"))
}

/// Starts a registry, builds every fixture image and pushes it. The registry stops when the
/// returned process is dropped.
pub fn start_fixture_registry() -> Result<(registry::RegistryProcess, Fixture)> {
    let reg = registry::RegistryProcess::start()?;
    let images = image::build_fixture_images(&busybox_path())?;
    let addr = reg.addr().to_string();
    let pusher = registry::Pusher::new(&addr);
    for img in &images {
        pusher
            .push_image(img)
            .with_context(|| format!("push {}:{}", img.repo, img.tag))?;
    }
    Ok((reg, Fixture::describe(addr, &images)))
}
