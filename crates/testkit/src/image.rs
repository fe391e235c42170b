//! Deterministic OCI test images built from the host's static busybox.
//!
//! Every byte is fixed (mtimes, ownership, entry order, gzip header, `created`), so the
//! digests are the same on every run on machines with the same `busybox-static`.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Modification time of every entry in every fixture layer.
pub const EPOCH: u64 = 1_700_000_000;
/// The `created` time of every fixture image (equal to [`EPOCH`]).
pub const CREATED: &str = "2023-11-14T22:13:20Z";
/// Size of the incompressible layer of the `big` image.
pub const BIG_LAYER_BYTES: usize = 50 * 1024 * 1024;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A content-addressed blob: a layer, a config, or a manifest.
#[derive(Clone)]
pub struct Blob {
    pub digest: String,
    pub data: Vec<u8>,
}

impl std::fmt::Debug for Blob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blob")
            .field("digest", &self.digest)
            .field("size", &self.data.len())
            .finish()
    }
}

impl Blob {
    fn new(data: Vec<u8>) -> Self {
        Blob {
            digest: sha256_digest(&data),
            data,
        }
    }
}

/// One compressed layer and the digest of its uncompressed tar (the diff ID).
#[derive(Debug, Clone)]
pub struct Layer {
    pub diff_id: String,
    pub blob: Blob,
}

/// A manifest (or index) pushed under `repo:tag`, with the blobs and child manifests the
/// registry must hold before it accepts it.
#[derive(Debug, Clone)]
pub struct TaggedManifest {
    pub repo: String,
    pub tag: String,
    pub media_type: String,
    pub manifest: Blob,
    /// Config and layer blobs this manifest (or its children) references.
    pub blobs: Vec<Blob>,
    /// Child manifests of an index, pushed by digest first: (media type, manifest).
    pub children: Vec<(String, Blob)>,
    /// Config digest of the manifest (for an index: of its linux/amd64 entry).
    pub config_digest: String,
    /// Layers of the manifest (for an index: of its linux/amd64 entry).
    pub layers: Vec<Layer>,
}

/// Builds a deterministic layer tar from a list of entries.
struct LayerTar {
    builder: tar::Builder<Vec<u8>>,
}

impl LayerTar {
    fn new() -> Self {
        let mut builder = tar::Builder::new(Vec::new());
        builder.mode(tar::HeaderMode::Deterministic);
        LayerTar { builder }
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(EPOCH);
        h.set_size(size);
        h
    }

    fn dir(&mut self, path: &str, mode: u32) -> Result<()> {
        let mut h = Self::header(tar::EntryType::Directory, mode, 0);
        self.builder
            .append_data(&mut h, format!("{path}/"), std::io::empty())
            .with_context(|| format!("tar dir {path}"))
    }

    fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> Result<()> {
        let mut h = Self::header(tar::EntryType::Regular, mode, data.len() as u64);
        self.builder
            .append_data(&mut h, path, data)
            .with_context(|| format!("tar file {path}"))
    }

    fn symlink(&mut self, path: &str, target: &str) -> Result<()> {
        let mut h = Self::header(tar::EntryType::Symlink, 0o777, 0);
        self.builder
            .append_link(&mut h, path, target)
            .with_context(|| format!("tar symlink {path}"))
    }

    /// Finishes the tar and gzips it; `level` 0 stores (for incompressible data).
    fn finish(self, level: u32) -> Result<Layer> {
        let tar = self.builder.into_inner().context("finish tar")?;
        let diff_id = sha256_digest(&tar);
        let mut gz = flate2::GzBuilder::new()
            .mtime(0)
            .operating_system(255)
            .write(Vec::new(), flate2::Compression::new(level));
        std::io::Write::write_all(&mut gz, &tar).context("gzip layer")?;
        let data = gz.finish().context("gzip layer")?;
        Ok(Layer {
            diff_id,
            blob: Blob::new(data),
        })
    }
}

/// The busybox base layer: `/bin/busybox` with its applet symlinks, `/etc/passwd`,
/// `/etc/group`, `/tmp` and the usual empty directories.
fn busybox_layer(busybox: &Path) -> Result<Layer> {
    let binary = std::fs::read(busybox).with_context(|| format!("read {}", busybox.display()))?;
    let out = std::process::Command::new(busybox)
        .arg("--list")
        .output()
        .with_context(|| format!("run {} --list", busybox.display()))?;
    anyhow::ensure!(out.status.success(), "{} --list failed", busybox.display());
    let applets: BTreeSet<String> = String::from_utf8(out.stdout)?
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox" && !a.contains('/'))
        .map(str::to_owned)
        .collect();

    let mut t = LayerTar::new();
    t.dir("bin", 0o755)?;
    t.file("bin/busybox", 0o755, &binary)?;
    for applet in &applets {
        t.symlink(&format!("bin/{applet}"), "busybox")?;
    }
    t.dir("dev", 0o755)?;
    t.dir("etc", 0o755)?;
    t.file(
        "etc/group",
        0o644,
        b"root:x:0:\ndaemon:x:1:\nnogroup:x:65534:\n",
    )?;
    t.file(
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/bin/false\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    t.dir("proc", 0o755)?;
    t.dir("root", 0o700)?;
    t.dir("sbin", 0o755)?;
    t.dir("sys", 0o755)?;
    t.dir("tmp", 0o1777)?;
    t.dir("usr", 0o755)?;
    t.dir("usr/bin", 0o755)?;
    t.dir("var", 0o755)?;
    t.finish(6)
}

/// The second layer of `web`: `/www/index.html`.
pub const WEB_INDEX_HTML: &str = "<html><body><h1>hello from web:latest</h1></body></html>\n";

fn web_layer() -> Result<Layer> {
    let mut t = LayerTar::new();
    t.dir("www", 0o755)?;
    t.file("www/index.html", 0o644, WEB_INDEX_HTML.as_bytes())?;
    t.finish(6)
}

/// Deterministic incompressible bytes (splitmix64 stream).
pub fn deterministic_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn big_layer() -> Result<Layer> {
    let mut t = LayerTar::new();
    t.dir("data", 0o755)?;
    t.file(
        "data/random.bin",
        0o644,
        &deterministic_bytes(BIG_LAYER_BYTES, 0xB127),
    )?;
    // Incompressible: store instead of spending seconds on deflate.
    t.finish(0)
}

struct ImageParts {
    config: Blob,
    layers: Vec<Layer>,
}

fn image_config(
    arch: &str,
    variant: Option<&str>,
    config: Value,
    layers: &[Layer],
    history: &[&str],
) -> Blob {
    let mut cfg = json!({
        "created": CREATED,
        "author": "berth-testkit",
        "architecture": arch,
        "os": "linux",
        "config": config,
        "rootfs": {
            "type": "layers",
            "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>(),
        },
        // Steps that add no layer (CMD, ...) are marked empty_layer, as Docker requires.
        "history": history.iter().map(|h| {
            let mut e = json!({"created": CREATED, "author": "berth-testkit", "created_by": h});
            if h.starts_with("CMD") {
                e["empty_layer"] = json!(true);
            }
            e
        }).collect::<Vec<_>>(),
    });
    if let Some(v) = variant {
        cfg["variant"] = json!(v);
    }
    Blob::new(serde_json::to_vec(&cfg).expect("config serialises"))
}

fn manifest(parts: &ImageParts, docker: bool) -> Blob {
    let (mt, cfg_mt, layer_mt) = if docker {
        (DOCKER_MANIFEST, DOCKER_CONFIG, DOCKER_LAYER_GZIP)
    } else {
        (OCI_MANIFEST, OCI_CONFIG, OCI_LAYER_GZIP)
    };
    let m = json!({
        "schemaVersion": 2,
        "mediaType": mt,
        "config": {"mediaType": cfg_mt, "digest": parts.config.digest, "size": parts.config.data.len()},
        "layers": parts.layers.iter().map(|l| json!({
            "mediaType": layer_mt, "digest": l.blob.digest, "size": l.blob.data.len(),
        })).collect::<Vec<_>>(),
    });
    Blob::new(serde_json::to_vec(&m).expect("manifest serialises"))
}

fn tagged(repo: &str, tag: &str, parts: &ImageParts, docker: bool) -> TaggedManifest {
    let mut blobs = vec![parts.config.clone()];
    blobs.extend(parts.layers.iter().map(|l| l.blob.clone()));
    TaggedManifest {
        repo: repo.into(),
        tag: tag.into(),
        media_type: if docker {
            DOCKER_MANIFEST
        } else {
            OCI_MANIFEST
        }
        .into(),
        manifest: manifest(parts, docker),
        blobs,
        children: Vec::new(),
        config_digest: parts.config.digest.clone(),
        layers: parts.layers.clone(),
    }
}

/// An index (or Docker manifest list) of an amd64 image and an arm64 entry with the same
/// layers (its binary is amd64: it exists for platform-selection tests only).
fn multi(base: &ImageParts, arm: &ImageParts, docker: bool) -> TaggedManifest {
    let (index_mt, child_mt) = if docker {
        (DOCKER_MANIFEST_LIST, DOCKER_MANIFEST)
    } else {
        (OCI_INDEX, OCI_MANIFEST)
    };
    let amd = manifest(base, docker);
    let arm_m = manifest(arm, docker);
    let index = json!({
        "schemaVersion": 2,
        "mediaType": index_mt,
        "manifests": [
            {"mediaType": child_mt, "digest": amd.digest, "size": amd.data.len(),
             "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": child_mt, "digest": arm_m.digest, "size": arm_m.data.len(),
             "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}},
        ],
    });
    let mut blobs = vec![base.config.clone(), arm.config.clone()];
    blobs.extend(base.layers.iter().map(|l| l.blob.clone()));
    TaggedManifest {
        repo: "multi".into(),
        tag: if docker { "v2s2" } else { "latest" }.into(),
        media_type: index_mt.into(),
        manifest: Blob::new(serde_json::to_vec(&index).expect("index serialises")),
        blobs,
        children: vec![(child_mt.into(), amd), (child_mt.into(), arm_m)],
        config_digest: base.config.digest.clone(),
        layers: base.layers.clone(),
    }
}

/// Builds every fixture image from the static busybox at `busybox`:
///
/// | ref            | what                                                         |
/// |----------------|--------------------------------------------------------------|
/// | busybox:latest | one layer, Cmd `["sh"]`, OCI media types                     |
/// | busybox:v2s2   | the same image with Docker schema2 media types               |
/// | web:latest     | busybox + `/www/index.html`, Cmd httpd on 8080, port 8080/tcp |
/// | big:latest     | busybox + 50 MiB incompressible layer                        |
/// | multi:latest   | OCI index: linux/amd64 (busybox) + linux/arm64/v8            |
/// | multi:v2s2     | the same as a Docker manifest list                           |
pub fn build_fixture_images(busybox: &Path) -> Result<Vec<TaggedManifest>> {
    let base_layer = busybox_layer(busybox)?;
    let base_cfg = json!({"Env": [PATH_ENV], "Cmd": ["sh"]});
    let base_history = ["busybox-static rootfs", "CMD [\"sh\"]"];
    let busybox = ImageParts {
        config: image_config(
            "amd64",
            None,
            base_cfg.clone(),
            std::slice::from_ref(&base_layer),
            &base_history,
        ),
        layers: vec![base_layer.clone()],
    };
    let arm = ImageParts {
        config: image_config(
            "arm64",
            Some("v8"),
            base_cfg.clone(),
            std::slice::from_ref(&base_layer),
            &base_history,
        ),
        layers: vec![base_layer.clone()],
    };

    let web_layers = vec![base_layer.clone(), web_layer()?];
    let web = ImageParts {
        config: image_config(
            "amd64",
            None,
            json!({
                "Env": [PATH_ENV],
                "Cmd": ["httpd", "-f", "-p", "8080", "-h", "/www"],
                "ExposedPorts": {"8080/tcp": {}},
                "WorkingDir": "/www",
            }),
            &web_layers,
            &[
                base_history[0],
                "ADD www /www",
                "CMD [\"httpd\",\"-f\",\"-p\",\"8080\",\"-h\",\"/www\"]",
            ],
        ),
        layers: web_layers,
    };

    let big_layers = vec![base_layer, big_layer()?];
    let big = ImageParts {
        config: image_config(
            "amd64",
            None,
            base_cfg,
            &big_layers,
            &[
                base_history[0],
                "ADD random.bin /data/random.bin (50MiB)",
                base_history[1],
            ],
        ),
        layers: big_layers,
    };

    Ok(vec![
        tagged("busybox", "latest", &busybox, false),
        tagged("busybox", "v2s2", &busybox, true),
        tagged("web", "latest", &web, false),
        tagged("big", "latest", &big, false),
        multi(&busybox, &arm, false),
        multi(&busybox, &arm, true),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_bytes_are_stable_and_spread() {
        let a = deterministic_bytes(4096, 7);
        assert_eq!(a, deterministic_bytes(4096, 7));
        assert_ne!(a, deterministic_bytes(4096, 8));
        let distinct: BTreeSet<u8> = a.iter().copied().collect();
        assert!(distinct.len() > 250, "bytes should cover the byte range");
    }

    #[test]
    fn layers_are_reproducible() {
        let a = web_layer().unwrap();
        let b = web_layer().unwrap();
        assert_eq!(a.blob.digest, b.blob.digest);
        assert_eq!(a.diff_id, b.diff_id);
        assert_ne!(
            a.blob.digest, a.diff_id,
            "compressed and tar digests differ"
        );
    }

    #[test]
    fn history_has_one_non_empty_entry_per_layer() {
        let layers = vec![web_layer().unwrap()];
        let cfg = image_config(
            "amd64",
            None,
            json!({}),
            &layers,
            &["ADD www /www", "CMD [\"sh\"]"],
        );
        let v: Value = serde_json::from_slice(&cfg.data).unwrap();
        let non_empty = v["history"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h.get("empty_layer").is_none())
            .count();
        assert_eq!(non_empty, layers.len());
    }

    #[test]
    fn web_layer_holds_index_html() {
        let layer = web_layer().unwrap();
        let gz = flate2::read::GzDecoder::new(&layer.blob.data[..]);
        let mut archive = tar::Archive::new(gz);
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["www/", "www/index.html"]);
    }
}
