//! OCI and Docker schema2 manifests, indexes / manifest lists, image configs, and platform
//! selection. Plain data and pure functions: no I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::Error;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// The `Accept` header for manifest requests: every kind we can pull.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// An image manifest (OCI or Docker schema2: the same shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// An OCI index or Docker manifest list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
}

/// A manifest as fetched: either an index or an image manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Manifest {
    Index(ImageIndex),
    Image(ImageManifest),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<serde_json::Value>,
    #[serde(default)]
    schema_version: Option<u32>,
}

impl Manifest {
    /// Parses manifest bytes. The kind comes from the body's `mediaType`, else from the
    /// response's `Content-Type`, else from its shape (`manifests` => index).
    pub fn parse(body: &[u8], content_type: Option<&str>, digest: &Digest) -> Result<Self, Error> {
        let bad = |source| Error::InvalidJson {
            what: "manifest",
            digest: digest.clone(),
            source,
        };
        let probe: Probe = serde_json::from_slice(body).map_err(bad)?;
        let content_type = content_type.map(|c| c.split(';').next().unwrap_or("").trim());
        let mt = probe
            .media_type
            .as_deref()
            .or(content_type.filter(|c| !c.is_empty() && *c != "application/json"));
        let is_index = match mt {
            Some(OCI_INDEX) | Some(DOCKER_MANIFEST_LIST) => true,
            Some(OCI_MANIFEST) | Some(DOCKER_MANIFEST) => false,
            None => probe.manifests.is_some(),
            Some(other) => {
                return Err(Error::UnsupportedMediaType {
                    what: "manifest",
                    media_type: other.to_string(),
                })
            }
        };
        if probe.schema_version != Some(2) {
            return Err(Error::UnsupportedMediaType {
                what: "manifest (schema version must be 2)",
                media_type: mt.unwrap_or("").to_string(),
            });
        }
        Ok(if is_index {
            Manifest::Index(serde_json::from_slice(body).map_err(bad)?)
        } else {
            Manifest::Image(serde_json::from_slice(body).map_err(bad)?)
        })
    }

    /// The media type to send with this manifest on push.
    pub fn media_type(&self) -> &str {
        match self {
            Manifest::Index(i) => i.media_type.as_deref().unwrap_or(OCI_INDEX),
            Manifest::Image(m) => m.media_type.as_deref().unwrap_or(OCI_MANIFEST),
        }
    }
}

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// Detects compression from a blob's first bytes (the media type can lie; the
    /// magic numbers cannot).
    pub fn sniff(head: &[u8]) -> Self {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// Whether `media_type` names a layer we can apply.
    pub fn layer_media_type_supported(media_type: &str) -> bool {
        matches!(
            media_type,
            OCI_LAYER
                | OCI_LAYER_GZIP
                | OCI_LAYER_ZSTD
                | DOCKER_LAYER_GZIP
                | "application/vnd.docker.image.rootfs.diff.tar"
                | "application/vnd.oci.image.layer.nondistributable.v1.tar"
                | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
                | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
                | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
        )
    }
}

/// An OS/architecture(/variant) pair, as in `--platform linux/arm64/v8`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(
        default,
        rename = "os.version",
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
}

impl Default for Platform {
    /// linux/amd64, the platform berth runs on.
    fn default() -> Self {
        Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
            os_version: None,
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl Platform {
    /// Parses `os/arch[/variant]` and normalises architecture aliases as containerd does.
    pub fn parse(s: &str) -> Result<Self, Error> {
        let parts: Vec<&str> = s.split('/').collect();
        let bad = || Error::InvalidPlatform { input: s.into() };
        if parts.len() < 2 || parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
            return Err(bad());
        }
        let mut p = Platform {
            os: parts[0].to_lowercase(),
            architecture: parts[1].to_lowercase(),
            variant: parts.get(2).map(|v| v.to_lowercase()),
            os_version: None,
        };
        p.normalise();
        Ok(p)
    }

    fn normalise(&mut self) {
        let arch = match self.architecture.as_str() {
            "x86_64" | "x86-64" => "amd64",
            "aarch64" => "arm64",
            "i386" => "386",
            a => a,
        }
        .to_string();
        self.architecture = arch;
        if self.architecture == "arm64" && self.variant.as_deref() == Some("v8") {
            self.variant = None;
        }
        if self.architecture == "amd64" && self.variant.as_deref() == Some("v1") {
            self.variant = None;
        }
    }

    /// Whether an index entry for `other` can run here when `self` is asked for.
    pub fn matches(&self, other: &Platform) -> bool {
        let mut o = other.clone();
        o.normalise();
        let mut s = self.clone();
        s.normalise();
        s.os == o.os
            && s.architecture == o.architecture
            && (s.variant.is_none() || s.variant == o.variant)
    }
}

/// Picks the manifest for `want` from an index: the first entry whose platform matches,
/// preferring an exact variant match. Entries without a platform never match.
pub fn select_platform<'a>(index: &'a ImageIndex, want: &Platform) -> Option<&'a Descriptor> {
    let candidates = index
        .manifests
        .iter()
        .filter(|d| d.platform.as_ref().is_some_and(|p| want.matches(p)));
    let mut first = None;
    for d in candidates {
        let p = d.platform.as_ref().expect("filtered on platform");
        let mut n = p.clone();
        n.normalise();
        if n.variant == want.variant {
            return Some(d);
        }
        first.get_or_insert(d);
    }
    first
}

/// The parts of an image config berth reads. The raw config is kept as pulled (its digest
/// is the image ID); this is a view of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// Docker's `Config` (Env, Cmd, Entrypoint, ExposedPorts, ...), kept as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<serde_json::Value>,
    pub rootfs: RootFs,
    #[serde(default)]
    pub history: Vec<History>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    pub diff_ids: Vec<Digest>,
}

/// One step of the image's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
}

impl ImageConfig {
    pub fn parse(body: &[u8], digest: &Digest) -> Result<Self, Error> {
        serde_json::from_slice(body).map_err(|source| Error::InvalidJson {
            what: "image config",
            digest: digest.clone(),
            source,
        })
    }
}

/// Chain IDs of a layer stack (the identity of "these layers applied in this order"):
/// `chain[0] = diff[0]`, `chain[n] = sha256(chain[n-1] + " " + diff[n])`.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => Digest::of(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(arch: &str, variant: Option<&str>, n: u8) -> Descriptor {
        Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: Digest::of(&[n]),
            size: 1,
            platform: Some(Platform {
                os: "linux".into(),
                architecture: arch.into(),
                variant: variant.map(Into::into),
                os_version: None,
            }),
            annotations: None,
        }
    }

    #[test]
    fn selects_platform_like_containerd() {
        let index = ImageIndex {
            schema_version: 2,
            media_type: Some(OCI_INDEX.into()),
            manifests: vec![
                desc("arm", Some("v6"), 1),
                desc("arm", Some("v7"), 2),
                desc("arm64", Some("v8"), 3),
                desc("amd64", None, 4),
            ],
        };
        let pick = |p: &str| {
            select_platform(&index, &Platform::parse(p).unwrap()).map(|d| d.digest.clone())
        };
        assert_eq!(
            select_platform(&index, &Platform::default())
                .unwrap()
                .digest,
            Digest::of(&[4])
        );
        assert_eq!(pick("linux/x86_64"), Some(Digest::of(&[4])));
        assert_eq!(pick("linux/arm64"), Some(Digest::of(&[3])));
        assert_eq!(pick("linux/aarch64/v8"), Some(Digest::of(&[3])));
        assert_eq!(pick("linux/arm/v7"), Some(Digest::of(&[2])));
        assert_eq!(pick("linux/arm"), Some(Digest::of(&[1])));
        assert_eq!(pick("windows/amd64"), None);
        assert!(Platform::parse("linux").is_err());
    }

    #[test]
    fn manifest_kind_from_media_type_header_or_shape() {
        let d = Digest::of(b"x");
        let idx = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert!(matches!(
            Manifest::parse(idx, None, &d).unwrap(),
            Manifest::Index(_)
        ));
        let img = br#"{"schemaVersion":2,"config":{"mediaType":"a","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0},"layers":[]}"#;
        assert!(matches!(
            Manifest::parse(img, Some(DOCKER_MANIFEST), &d).unwrap(),
            Manifest::Image(_)
        ));
        let v1 = br#"{"schemaVersion":1,"name":"x"}"#;
        assert!(Manifest::parse(v1, None, &d).is_err());
        assert!(matches!(
            Manifest::parse(br#"{"schemaVersion":2,"mediaType":"text/plain"}"#, None, &d),
            Err(Error::UnsupportedMediaType { .. })
        ));
    }

    #[test]
    fn chain_ids_follow_the_oci_definition() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let c = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(c[0], a);
        assert_eq!(c[1], Digest::of(format!("{a} {b}").as_bytes()));
    }

    #[test]
    fn compression_is_sniffed() {
        assert_eq!(Compression::sniff(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(
            Compression::sniff(&[0x28, 0xb5, 0x2f, 0xfd]),
            Compression::Zstd
        );
        assert_eq!(Compression::sniff(b"etc/"), Compression::None);
    }
}
