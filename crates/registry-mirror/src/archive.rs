//! Image archives: `docker save` (the Docker 25+ layout, which is also an OCI image
//! layout), `docker load` (that layout and the older `<id>/layer.tar` one), and
//! `docker import` of a root filesystem tar as a one-layer image. Blocking functions:
//! run them on a blocking thread.
//!
//! ```text
//!  save.tar
//!  ├── blobs/sha256/<config>       image config (its digest is the image ID)
//!  ├── blobs/sha256/<diff id>      each layer as an uncompressed tar
//!  ├── blobs/sha256/<manifest>     OCI manifest of those (index.json points at it)
//!  ├── index.json, oci-layout
//!  ├── manifest.json               [{"Config", "RepoTags", "Layers"}] (what docker load reads)
//!  └── repositories
//! ```

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::{self, BufReader, Read, Seek, Write};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::digest::Digest;
use crate::error::{ArchiveProblem, Error, Result};
use crate::images::{ImageRecord, ImageStore, LayerRecord};
use crate::manifest::{
    chain_ids, Compression, Descriptor, ImageConfig, ImageManifest, OCI_CONFIG, OCI_LAYER,
    OCI_LAYER_GZIP, OCI_LAYER_ZSTD, OCI_MANIFEST,
};
use crate::pull::{apply_stored, LayerRef, LayerSink};
use crate::reference::Reference;

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SaveManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn append_bytes<W: Write>(tar: &mut tar::Builder<W>, path: &str, data: &[u8]) -> Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut h, path, data)
        .map_err(Error::io("write archive entry", path))
}

/// Writes the images `names` resolve to (references or IDs) to `out` as `docker save` does.
pub fn save(store: &ImageStore, names: &[String], out: impl Write) -> Result<()> {
    let blobs = store.blobs();
    let mut tar = tar::Builder::new(out);
    let mut written: HashSet<Digest> = HashSet::new();
    let mut manifest_json = Vec::new();
    let mut index_manifests = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for name in names {
        let record = store.resolve(name)?;
        let repo_tags: Vec<String> = Reference::parse_normalized(name)
            .ok()
            .filter(|r| {
                r.tag().is_some()
                    && !record
                        .id
                        .hex()
                        .starts_with(name.trim_start_matches("sha256:"))
            })
            .and_then(|r| r.familiar_tagged())
            .into_iter()
            .collect();
        let cfg = blobs.read(&record.id)?;
        if written.insert(record.id.clone()) {
            append_bytes(&mut tar, &format!("blobs/sha256/{}", record.id.hex()), &cfg)?;
        }
        let mut layer_paths = Vec::new();
        let mut layer_descs = Vec::new();
        for l in &record.layers {
            let path = format!("blobs/sha256/{}", l.diff_id.hex());
            if written.insert(l.diff_id.clone()) {
                let f = blobs.open_blob(&l.digest)?;
                let mut raw = BufReader::with_capacity(256 * 1024, f);
                let head = io::BufRead::fill_buf(&mut raw)
                    .map_err(Error::io("read blob", blobs.path(&l.digest)))?;
                let mut dec: Box<dyn Read> = match Compression::sniff(head) {
                    Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(raw)),
                    Compression::Zstd => {
                        Box::new(zstd::stream::read::Decoder::with_buffer(raw).map_err(
                            |source| Error::Decompress {
                                digest: l.digest.clone(),
                                source,
                            },
                        )?)
                    }
                    Compression::None => Box::new(raw),
                };
                let mut h = tar::Header::new_ustar();
                h.set_mode(0o644);
                h.set_size(l.diff_size);
                h.set_mtime(0);
                h.set_uid(0);
                h.set_gid(0);
                h.set_entry_type(tar::EntryType::Regular);
                tar.append_data(&mut h, &path, &mut dec)
                    .map_err(|source| Error::Decompress {
                        digest: l.digest.clone(),
                        source,
                    })?;
            }
            layer_descs.push(json!({"mediaType": OCI_LAYER, "digest": l.diff_id.to_string(), "size": l.diff_size}));
            layer_paths.push(path);
        }
        let oci_manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": record.id.to_string(), "size": cfg.len()},
            "layers": layer_descs,
        }))
        .expect("manifest serialises");
        let md = Digest::of(&oci_manifest);
        if written.insert(md.clone()) {
            append_bytes(
                &mut tar,
                &format!("blobs/sha256/{}", md.hex()),
                &oci_manifest,
            )?;
        }
        let mut annotations = BTreeMap::new();
        if let Some(t) = repo_tags.first() {
            if let Ok(r) = Reference::parse(t) {
                annotations.insert("io.containerd.image.name".to_string(), format!("{r:?}"));
                annotations.insert(
                    "org.opencontainers.image.ref.name".to_string(),
                    r.tag().unwrap_or("latest").to_string(),
                );
                if let Some(last) = record.layers.last() {
                    repositories.entry(r.familiar_name()).or_default().insert(
                        r.tag().unwrap_or("latest").to_string(),
                        last.diff_id.hex().to_string(),
                    );
                }
            }
        }
        index_manifests.push(json!({
            "mediaType": OCI_MANIFEST, "digest": md.to_string(), "size": oci_manifest.len(),
            "annotations": annotations,
        }));
        manifest_json.push(SaveManifestEntry {
            config: format!("blobs/sha256/{}", record.id.hex()),
            repo_tags: Some(repo_tags),
            layers: layer_paths,
        });
    }
    let index = json!({"schemaVersion": 2, "mediaType": crate::manifest::OCI_INDEX, "manifests": index_manifests});
    append_bytes(
        &mut tar,
        "index.json",
        &serde_json::to_vec(&index).expect("index serialises"),
    )?;
    append_bytes(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    append_bytes(
        &mut tar,
        "manifest.json",
        &serde_json::to_vec(&manifest_json).expect("manifest.json serialises"),
    )?;
    append_bytes(
        &mut tar,
        "repositories",
        &serde_json::to_vec(&repositories).expect("repositories serialises"),
    )?;
    tar.into_inner()
        .and_then(|mut w| w.flush())
        .map_err(Error::io("finish archive", "<output>"))?;
    Ok(())
}

/// An image that [`load`] or [`import`] stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedImage {
    pub id: Digest,
    pub tags: Vec<String>,
}

fn safe_rel(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

fn hash_file(path: &Path) -> Result<(Digest, u64)> {
    let mut f = fs::File::open(path).map_err(Error::io("open", path))?;
    let mut h = Sha256::new();
    let n = io::copy(&mut f, &mut h).map_err(Error::io("read", path))?;
    Ok((Digest::from_hasher(h), n))
}

fn layer_media_type(path: &Path) -> Result<&'static str> {
    let mut f = fs::File::open(path).map_err(Error::io("open", path))?;
    let mut head = [0u8; 4];
    let n = f.read(&mut head).map_err(Error::io("read", path))?;
    Ok(match Compression::sniff(&head[..n]) {
        Compression::Gzip => OCI_LAYER_GZIP,
        Compression::Zstd => OCI_LAYER_ZSTD,
        Compression::None => OCI_LAYER,
    })
}

/// Stores a config + layer files as an image with a generated OCI manifest, unpacks the
/// layers into `sink`, and tags it.
fn store_image(
    store: &ImageStore,
    cfg_bytes: &[u8],
    layer_files: &[PathBuf],
    tags: &[Reference],
    sink: Option<&dyn LayerSink>,
) -> Result<ImageRecord> {
    let _activity = store.begin_activity();
    let blobs = store.blobs();
    let id = blobs.put(cfg_bytes)?;
    let config = ImageConfig::parse(cfg_bytes, &id)?;
    if config.rootfs.diff_ids.len() != layer_files.len() {
        return Err(Error::InvalidArchive {
            problem: ArchiveProblem::BadManifest(format!(
                "config {id} has {} diff IDs but {} layers are listed",
                config.rootfs.diff_ids.len(),
                layer_files.len()
            )),
        });
    }
    let chains = chain_ids(&config.rootfs.diff_ids);
    let mut layers = Vec::new();
    for (i, path) in layer_files.iter().enumerate() {
        let (digest, size) = hash_file(path)?;
        let media_type = layer_media_type(path)?;
        let f = fs::File::open(path).map_err(Error::io("open", path))?;
        blobs.put_reader(&digest, f)?;
        let layer = LayerRef {
            index: i,
            digest: digest.clone(),
            diff_id: config.rootfs.diff_ids[i].clone(),
            chain_id: chains[i].clone(),
        };
        let sink = sink.filter(|s| !s.is_unpacked(&layer));
        let diff_size = apply_stored(blobs, &layer, sink)?;
        layers.push(LayerRecord {
            digest,
            media_type: media_type.to_string(),
            size,
            diff_id: layer.diff_id,
            diff_size,
        });
    }
    record_image(store, id, cfg_bytes.len() as u64, layers, tags)
}

/// Writes the OCI manifest of config `id` + `layers`, records the image and tags it.
fn record_image(
    store: &ImageStore,
    id: Digest,
    cfg_len: u64,
    layers: Vec<LayerRecord>,
    tags: &[Reference],
) -> Result<ImageRecord> {
    let blobs = store.blobs();
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.into()),
        config: Descriptor {
            media_type: OCI_CONFIG.into(),
            digest: id.clone(),
            size: cfg_len,
            platform: None,
            annotations: None,
        },
        layers: layers
            .iter()
            .map(|l| Descriptor {
                media_type: l.media_type.clone(),
                digest: l.digest.clone(),
                size: l.size,
                platform: None,
                annotations: None,
            })
            .collect(),
    };
    let manifest_bytes = serde_json::to_vec(&manifest).expect("manifest serialises");
    let manifest_digest = blobs.put(&manifest_bytes)?;
    let record = ImageRecord {
        id,
        manifest: manifest_digest,
        manifest_media_type: OCI_MANIFEST.into(),
        index: None,
        layers,
        repo_digests: Vec::new(),
        added: ImageStore::now(),
    };
    store.record(record.clone(), tags)?;
    Ok(record)
}

/// A tar stream that cannot be read: the client's input is bad. The tar reader's message
/// can quote raw header bytes, so it is shown printable only.
fn bad_tar(e: io::Error) -> Error {
    let msg = e.to_string();
    let msg = match msg.find(|c: char| !(c.is_ascii_graphic() || c == ' ')) {
        Some(i) => format!("{}(unprintable bytes)", &msg[..i]),
        None => msg,
    };
    Error::InvalidArchive {
        problem: ArchiveProblem::Tar(msg),
    }
}

/// Copies one archive entry to `f`: a read failure is the archive's fault, a write
/// failure the store's.
fn copy_entry(entry: &mut impl Read, f: &mut fs::File, dest: &Path) -> Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match entry.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(bad_tar(e)),
        };
        io::Write::write_all(f, &buf[..n]).map_err(Error::io("write", dest))?;
    }
}

/// Loads a `docker save` archive from `input`. Layers are unpacked into `sink` if given.
pub fn load(
    store: &ImageStore,
    input: impl Read,
    sink: Option<&dyn LayerSink>,
) -> Result<Vec<LoadedImage>> {
    let scratch = tempfile::Builder::new()
        .prefix("load-")
        .tempdir_in(store.blobs().root())
        .map_err(Error::io("create temp dir", store.blobs().root()))?;
    let mut archive = tar::Archive::new(input);
    let entries = archive.entries().map_err(bad_tar)?;
    for entry in entries {
        let mut entry = entry.map_err(bad_tar)?;
        if !matches!(
            entry.header().entry_type(),
            tar::EntryType::Regular | tar::EntryType::Continuous
        ) {
            continue;
        }
        let raw = entry.path().map_err(bad_tar)?.into_owned();
        let rel = safe_rel(&raw).ok_or_else(|| Error::InvalidArchive {
            problem: ArchiveProblem::UnsafePath(raw.display().to_string()),
        })?;
        let dest = scratch.path().join(&rel);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(Error::io("create", parent))?;
        }
        let mut f = fs::File::create(&dest).map_err(Error::io("create", &dest))?;
        copy_entry(&mut entry, &mut f, &dest)?;
    }
    let mpath = scratch.path().join("manifest.json");
    let mbytes = fs::read(&mpath).map_err(|_| Error::InvalidArchive {
        problem: ArchiveProblem::NoManifest,
    })?;
    let entries: Vec<SaveManifestEntry> =
        serde_json::from_slice(&mbytes).map_err(|e| Error::InvalidArchive {
            problem: ArchiveProblem::BadManifest(e.to_string()),
        })?;
    let file = |p: &str| -> Result<PathBuf> {
        let rel = safe_rel(Path::new(p)).ok_or_else(|| Error::InvalidArchive {
            problem: ArchiveProblem::UnsafePath(p.to_string()),
        })?;
        let full = scratch.path().join(rel);
        if full.is_file() {
            Ok(full)
        } else {
            Err(Error::InvalidArchive {
                problem: ArchiveProblem::MissingFile(p.to_string()),
            })
        }
    };
    let mut out = Vec::new();
    for e in entries {
        let cfg_bytes = fs::read(file(&e.config)?).map_err(Error::io("read", &e.config))?;
        let layer_files = e
            .layers
            .iter()
            .map(|l| file(l))
            .collect::<Result<Vec<_>>>()?;
        let tags = e
            .repo_tags
            .unwrap_or_default()
            .iter()
            .map(|t| Reference::parse(t))
            .collect::<Result<Vec<_>>>()?;
        let record = store_image(store, &cfg_bytes, &layer_files, &tags, sink)?;
        out.push(LoadedImage {
            id: record.id,
            tags: tags.iter().filter_map(|t| t.familiar_tagged()).collect(),
        });
    }
    Ok(out)
}

/// Imports a root filesystem tar (plain, gzip or zstd) as a one-layer linux/amd64 image,
/// like `docker import`, tagged `reference` if given.
pub fn import(
    store: &ImageStore,
    input: impl Read,
    reference: Option<&Reference>,
    sink: Option<&dyn LayerSink>,
) -> Result<LoadedImage> {
    import_with_config(store, input, reference, json!({}), None, sink)
}

/// [`import`] with the image config's "config" object (`docker import --change`) and a
/// comment (`docker import -m`: the image's `comment` and its history entry's; default
/// "Imported from tarball").
pub fn import_with_config(
    store: &ImageStore,
    input: impl Read,
    reference: Option<&Reference>,
    config: serde_json::Value,
    comment: Option<&str>,
    sink: Option<&dyn LayerSink>,
) -> Result<LoadedImage> {
    let scratch = tempfile::Builder::new()
        .prefix("import-")
        .tempdir_in(store.blobs().root())
        .map_err(Error::io("create temp dir", store.blobs().root()))?;
    let layer = scratch.path().join("layer.tar");
    {
        let mut raw = BufReader::with_capacity(256 * 1024, input);
        let head = io::BufRead::fill_buf(&mut raw).map_err(Error::io("read", "<input>"))?;
        let mut dec: Box<dyn Read> = match Compression::sniff(head) {
            Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(raw)),
            Compression::Zstd => Box::new(
                zstd::stream::read::Decoder::with_buffer(raw)
                    .map_err(Error::io("read", "<input>"))?,
            ),
            Compression::None => Box::new(raw),
        };
        let mut f = fs::File::create(&layer).map_err(Error::io("create", &layer))?;
        io::copy(&mut dec, &mut f).map_err(Error::io("write", &layer))?;
        f.rewind().map_err(Error::io("rewind", &layer))?;
    }
    let (diff_id, _) = hash_file(&layer)?;
    let now = ImageStore::now();
    let mut cfg = json!({
        "architecture": "amd64",
        "os": "linux",
        "created": now,
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [diff_id.to_string()]},
        "history": [{"created": now, "created_by": "berth import",
                     "comment": comment.unwrap_or("Imported from tarball")}],
    });
    if let Some(c) = comment {
        cfg["comment"] = json!(c);
    }
    let cfg = serde_json::to_vec(&cfg).expect("config serialises");
    let tags: Vec<Reference> = reference.cloned().into_iter().collect();
    let record = store_image(store, &cfg, &[layer], &tags, sink)?;
    Ok(LoadedImage {
        id: record.id,
        tags: tags.iter().filter_map(|t| t.familiar_tagged()).collect(),
    })
}

/// One history entry of an image config (OCI image spec, config.history[]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryEntry {
    /// The command that made the layer (`docker history`'s CREATED BY), e.g.
    /// `/bin/sh -c echo hi` or `/bin/sh -c #(nop)  ENV A=b`.
    pub created_by: String,
    /// `docker commit -m`, `docker import -m`.
    pub comment: Option<String>,
    /// `docker commit -a`.
    pub author: Option<String>,
    /// True when the step added no layer (metadata only).
    pub empty_layer: bool,
}

/// The platform architecture name (GOARCH) of this build, for images made from scratch.
fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// Stores a new image made of `parent`'s layers (None: from scratch) plus, if given, one
/// more uncompressed layer tar at `layer`, with `config` as the image config's "config"
/// object (Docker's container config: Env, Cmd, Entrypoint, WorkingDir, User, Labels,
/// ExposedPorts, Volumes, StopSignal, Healthcheck, OnBuild, Shell ...) and one more history
/// entry; tags it with `tags`. created time = `created` (RFC 3339). Returns the image.
///
/// The image config keeps the parent's architecture, os and variant (from scratch: this
/// host's `linux/<arch>`), its history and diff IDs, and adds `created`, `author` (from
/// `history.author`), `config` and the new history entry (its `empty_layer` is forced true
/// when `layer` is None, false otherwise). The new layer is stored as an uncompressed OCI
/// layer blob (`application/vnd.oci.image.layer.v1.tar`; its digest is its diff ID) and
/// unpacked into `sink` unless the sink has it. The same inputs give the same image ID.
///
/// Errors: the parent does not resolve ([`Error::NotFound`]-like errors of
/// [`ImageStore::resolve`]), unreadable layer file, store I/O, a sink failure.
#[allow(clippy::too_many_arguments)]
pub fn commit_image(
    store: &ImageStore,
    parent: Option<&str>,
    config: serde_json::Value,
    history: HistoryEntry,
    layer: Option<&Path>,
    created: &str,
    tags: &[Reference],
    sink: Option<&dyn LayerSink>,
) -> Result<LoadedImage> {
    let _activity = store.begin_activity();
    let blobs = store.blobs();
    let (mut layers, base) = match parent {
        Some(p) => {
            let rec = store.resolve(p)?;
            let cfg = ImageConfig::parse(&blobs.read(&rec.id)?, &rec.id)?;
            (rec.layers, Some(cfg))
        }
        None => (Vec::new(), None),
    };
    let mut diff_ids: Vec<Digest> = base
        .as_ref()
        .map(|c| c.rootfs.diff_ids.clone())
        .unwrap_or_default();
    let mut hist: Vec<crate::manifest::History> =
        base.as_ref().map(|c| c.history.clone()).unwrap_or_default();
    if let Some(path) = layer {
        let (digest, size) = hash_file(path)?;
        let f = fs::File::open(path).map_err(Error::io("open", path))?;
        blobs.put_reader(&digest, f)?;
        diff_ids.push(digest.clone());
        let chains = chain_ids(&diff_ids);
        let lref = LayerRef {
            index: diff_ids.len() - 1,
            digest: digest.clone(),
            diff_id: digest.clone(),
            chain_id: chains.last().expect("one layer at least").clone(),
        };
        let sink = sink.filter(|s| !s.is_unpacked(&lref));
        let diff_size = apply_stored(blobs, &lref, sink)?;
        layers.push(LayerRecord {
            digest: digest.clone(),
            media_type: OCI_LAYER.to_string(),
            size,
            diff_id: digest,
            diff_size,
        });
    }
    hist.push(crate::manifest::History {
        created: Some(created.to_string()),
        created_by: Some(history.created_by),
        author: history.author.clone(),
        comment: history.comment.clone(),
        empty_layer: layer.is_none(),
    });
    let mut cfg = serde_json::Map::new();
    let (arch, os, variant) = match &base {
        Some(b) => (b.architecture.clone(), b.os.clone(), b.variant.clone()),
        None => (host_arch().to_string(), "linux".to_string(), None),
    };
    cfg.insert("architecture".into(), json!(arch));
    if let Some(a) = &history.author {
        cfg.insert("author".into(), json!(a));
    }
    if let Some(c) = history
        .comment
        .as_ref()
        .filter(|_| layer.is_some() || parent.is_none())
    {
        // Docker's image `Comment` (`docker commit -m`, `docker import -m`)
        cfg.insert("comment".into(), json!(c));
    }
    cfg.insert("config".into(), config);
    cfg.insert("created".into(), json!(created));
    cfg.insert("history".into(), json!(hist));
    cfg.insert("os".into(), json!(os));
    cfg.insert(
        "rootfs".into(),
        json!({"type": "layers", "diff_ids": diff_ids}),
    );
    if let Some(v) = variant {
        cfg.insert("variant".into(), json!(v));
    }
    let cfg_bytes = serde_json::to_vec(&serde_json::Value::Object(cfg)).expect("config serialises");
    let id = blobs.put(&cfg_bytes)?;
    let record = record_image(store, id, cfg_bytes.len() as u64, layers, tags)?;
    Ok(LoadedImage {
        id: record.id,
        tags: tags.iter().filter_map(|t| t.familiar_tagged()).collect(),
    })
}

#[cfg(test)]
mod commit_tests {
    use super::*;

    fn layer_file(dir: &Path, name: &str, content: &str) -> PathBuf {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(content.len() as u64);
        h.set_mtime(1);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, content.as_bytes()).unwrap();
        let path = dir.join(format!("{name}.tar"));
        fs::write(&path, b.into_inner().unwrap()).unwrap();
        path
    }

    #[test]
    fn commit_adds_a_layer_and_a_history_entry_on_the_parent() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ImageStore::open(tmp.path()).unwrap();
        let l1 = layer_file(tmp.path(), "a", "one");
        let tag = Reference::parse_normalized("base:1").unwrap();
        let base = commit_image(
            &store,
            None,
            json!({"Cmd": ["sh"]}),
            HistoryEntry {
                created_by: "first".into(),
                ..HistoryEntry::default()
            },
            Some(&l1),
            "2026-01-01T00:00:00Z",
            std::slice::from_ref(&tag),
            None,
        )
        .unwrap();
        assert_eq!(base.tags, ["base:1"]);
        let l2 = layer_file(tmp.path(), "b", "two");
        let commit = |layer: Option<&Path>| {
            commit_image(
                &store,
                Some("base:1"),
                json!({"Cmd": ["echo", "hi"], "Env": ["A=b"]}),
                HistoryEntry {
                    created_by: "second".into(),
                    comment: Some("msg".into()),
                    author: Some("me".into()),
                    empty_layer: false,
                },
                layer,
                "2026-01-02T00:00:00Z",
                &[],
                None,
            )
            .unwrap()
        };
        let child = commit(Some(&l2));
        assert_eq!(commit(Some(&l2)).id, child.id, "same inputs, same image ID");
        let d = store.inspect(&child.id.to_string()).unwrap();
        assert_eq!(d.rootfs_layers.len(), 2);
        assert_eq!(d.author.as_deref(), Some("me"));
        assert_eq!(d.config.unwrap()["Cmd"], json!(["echo", "hi"]));
        assert_eq!(d.history.len(), 2);
        assert_eq!(d.history[1].comment.as_deref(), Some("msg"));
        assert!(!d.history[1].empty_layer);
        // the new layer's blob is the uncompressed tar: its digest is the diff ID
        let rec = store.resolve(&child.id.to_string()).unwrap();
        assert_eq!(rec.layers[1].digest, rec.layers[1].diff_id);
        assert_eq!(rec.layers[1].media_type, OCI_LAYER);
        // metadata only: no new layer, an empty_layer entry
        let meta = commit(None);
        let d = store.inspect(&meta.id.to_string()).unwrap();
        assert_eq!(d.rootfs_layers.len(), 1);
        assert!(d.history[1].empty_layer);
        // an unknown parent
        assert!(matches!(
            commit_image(
                &store,
                Some("nope:1"),
                json!({}),
                HistoryEntry::default(),
                None,
                "2026-01-02T00:00:00Z",
                &[],
                None
            ),
            Err(Error::ImageNotFound { .. })
        ));
    }
}
