//! Request parsing for the mirror's distribution API, as plain code: a method, a path and a
//! query string in, a typed [`MirrorRequest`] out. No I/O, no axum types.
//!
//! Which upstream a request is for, in order:
//! 1. `?ns=<host>` (containerd's mirror protocol): the path is the repository on `<host>`.
//! 2. `/v2/<host>/<repo>/...` where the first path component looks like a registry host as
//!    Docker's reference rules decide (it contains `.` or `:`, or is `localhost`).
//! 3. The configured default upstream (dockerd's `registry-mirrors` sends plain
//!    `/v2/library/busybox/...`: Docker Hub is the only registry it mirrors).

use crate::digest::Digest;
use crate::reference::{DEFAULT_DOMAIN, DEFAULT_REGISTRY_HOST, LEGACY_DEFAULT_DOMAIN};

/// What a request to the mirror asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MirrorRequest {
    /// `GET /v2/`: API version check.
    ApiBase,
    /// `GET /v2/_catalog`: repositories the mirror has cached tags of.
    Catalog,
    /// `GET|HEAD /v2/<name>/manifests/<reference>`.
    Manifest {
        target: UpstreamRepo,
        reference: ManifestRef,
        head: bool,
    },
    /// `GET|HEAD /v2/<name>/blobs/<digest>`.
    Blob {
        target: UpstreamRepo,
        digest: Digest,
        head: bool,
    },
    /// `GET /v2/<name>/tags/list`.
    Tags { target: UpstreamRepo },
    /// `GET /metrics`.
    Metrics,
}

/// A repository on one upstream registry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UpstreamRepo {
    /// The registry's name as clients say it (`docker.io`, `ghcr.io`, `127.0.0.1:5000`):
    /// the key of per-upstream configuration and of the tag cache.
    pub upstream: String,
    /// Repository path on that registry (`library/busybox`).
    pub repository: String,
}

impl UpstreamRepo {
    /// `upstream/repository`, the name the catalog lists.
    pub fn display_name(&self) -> String {
        format!("{}/{}", self.upstream, self.repository)
    }
}

/// A manifest by tag or by digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestRef {
    Tag(String),
    Digest(Digest),
}

impl std::fmt::Display for ManifestRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ManifestRef::Tag(t) => f.write_str(t),
            ManifestRef::Digest(d) => write!(f, "{d}"),
        }
    }
}

/// Why a request could not be parsed; each maps to one distribution error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// No such endpoint (404 `UNSUPPORTED`).
    NotFound,
    /// A write method on a read-only mirror (405 `UNSUPPORTED`).
    MethodNotAllowed,
    /// The repository name is malformed (400 `NAME_INVALID`).
    NameInvalid(String),
    /// No upstream named and no default configured (404 `NAME_UNKNOWN`).
    NoUpstream(String),
    /// The digest is malformed (400 `DIGEST_INVALID`).
    DigestInvalid(String),
    /// The tag is malformed (400 `TAG_INVALID`).
    TagInvalid(String),
}

/// Canonical upstream name: `index.docker.io` and `registry-1.docker.io` are `docker.io`.
pub fn canonical_upstream(host: &str) -> String {
    let h = host.to_ascii_lowercase();
    if h == LEGACY_DEFAULT_DOMAIN || h == DEFAULT_REGISTRY_HOST {
        DEFAULT_DOMAIN.to_string()
    } else {
        h
    }
}

/// The `host[:port]` that serves the API of upstream `name` (Docker Hub's is not
/// `docker.io`).
pub fn api_host(name: &str) -> &str {
    if name == DEFAULT_DOMAIN {
        DEFAULT_REGISTRY_HOST
    } else {
        name
    }
}

/// Whether a first path component names a registry host (Docker's splitDockerDomain).
pub fn looks_like_host(component: &str) -> bool {
    component.contains(['.', ':']) || component == "localhost"
}

/// A repository path as distribution's grammar has it (the same rule as references).
fn valid_repository(path: &str) -> bool {
    !path.is_empty() && path.len() <= 255 && crate::reference::valid_repository_path(path)
}

/// Finds the value of `key` in a query string (`a=b&ns=docker.io`), percent-decoded.
fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// Splits a repository name into (upstream, repository) by the rules in the module docs.
pub fn resolve_upstream(
    name: &str,
    ns: Option<&str>,
    default_upstream: Option<&str>,
) -> Result<UpstreamRepo, RouteError> {
    let (upstream, repository) = match ns.filter(|n| !n.is_empty()) {
        Some(ns) => (canonical_upstream(ns), name.to_string()),
        None => match name.split_once('/') {
            Some((first, rest)) if looks_like_host(first) => {
                (canonical_upstream(first), rest.to_string())
            }
            _ => match default_upstream {
                Some(d) => (canonical_upstream(d), name.to_string()),
                None => return Err(RouteError::NoUpstream(name.to_string())),
            },
        },
    };
    if !valid_repository(&repository) {
        return Err(RouteError::NameInvalid(name.to_string()));
    }
    // Docker Hub's official images live under `library/`.
    let repository = if upstream == DEFAULT_DOMAIN && !repository.contains('/') {
        format!("library/{repository}")
    } else {
        repository
    };
    Ok(UpstreamRepo {
        upstream,
        repository,
    })
}

/// Parses one request. `method` is the HTTP method in upper case.
pub fn parse_request(
    method: &str,
    path: &str,
    query: Option<&str>,
    default_upstream: Option<&str>,
) -> Result<MirrorRequest, RouteError> {
    let head = match method {
        "GET" => false,
        "HEAD" => true,
        "PUT" | "POST" | "PATCH" | "DELETE" => return Err(RouteError::MethodNotAllowed),
        _ => return Err(RouteError::NotFound),
    };
    if path == "/metrics" {
        return Ok(MirrorRequest::Metrics);
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return if path == "/v2" {
            Ok(MirrorRequest::ApiBase)
        } else {
            Err(RouteError::NotFound)
        };
    };
    if rest.is_empty() {
        return Ok(MirrorRequest::ApiBase);
    }
    if rest == "_catalog" {
        return Ok(MirrorRequest::Catalog);
    }
    let ns = query_param(query, "ns");
    let target = |name: &str| resolve_upstream(name, ns.as_deref(), default_upstream);
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Ok(MirrorRequest::Tags {
            target: target(name)?,
        });
    }
    if let Some((name, reference)) = rest.rsplit_once("/manifests/") {
        let reference = if reference.contains(':') {
            ManifestRef::Digest(
                Digest::parse(reference)
                    .map_err(|_| RouteError::DigestInvalid(reference.to_string()))?,
            )
        } else if crate::reference::valid_tag(reference) {
            ManifestRef::Tag(reference.to_string())
        } else {
            return Err(RouteError::TagInvalid(reference.to_string()));
        };
        return Ok(MirrorRequest::Manifest {
            target: target(name)?,
            reference,
            head,
        });
    }
    if let Some((name, digest)) = rest.rsplit_once("/blobs/") {
        if digest.starts_with("uploads") {
            return Err(RouteError::MethodNotAllowed);
        }
        let digest =
            Digest::parse(digest).map_err(|_| RouteError::DigestInvalid(digest.to_string()))?;
        return Ok(MirrorRequest::Blob {
            target: target(name)?,
            digest,
            head,
        });
    }
    Err(RouteError::NotFound)
}

/// What a `Range` header asks of a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// No (usable) range: send the whole blob, 200.
    Whole,
    /// The inclusive byte range `start..=end`, 206.
    Part { start: u64, end: u64 },
    /// Outside the blob, 416.
    Unsatisfiable,
}

/// Parses a `Range: bytes=a-b` header against a blob of `size` bytes.
pub fn parse_range(header: Option<&str>, size: u64) -> ByteRange {
    let Some(h) = header else {
        return ByteRange::Whole;
    };
    let Some(spec) = h.trim().strip_prefix("bytes=") else {
        return ByteRange::Whole;
    };
    if spec.contains(',') {
        // Multipart ranges: not supported, answer with the whole blob as HTTP allows.
        return ByteRange::Whole;
    }
    let Some((a, b)) = spec.split_once('-') else {
        return ByteRange::Unsatisfiable;
    };
    let (a, b) = (a.trim(), b.trim());
    let parsed = if a.is_empty() {
        // Suffix: the last `b` bytes.
        match b.parse::<u64>() {
            Ok(n) if n > 0 && size > 0 => Some((size.saturating_sub(n), size - 1)),
            _ => None,
        }
    } else {
        let end = if b.is_empty() {
            Ok(size.saturating_sub(1))
        } else {
            b.parse::<u64>().map(|e| e.min(size.saturating_sub(1)))
        };
        match (a.parse::<u64>(), end) {
            (Ok(start), Ok(end)) => Some((start, end)),
            _ => None,
        }
    };
    match parsed {
        Some((start, end)) if start < size && start <= end => ByteRange::Part { start, end },
        _ => ByteRange::Unsatisfiable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn repo(u: &str, r: &str) -> UpstreamRepo {
        UpstreamRepo {
            upstream: u.into(),
            repository: r.into(),
        }
    }

    #[test]
    fn ns_parameter_names_the_upstream() {
        let r = parse_request(
            "GET",
            "/v2/library/busybox/manifests/latest",
            Some("ns=docker.io"),
            None,
        )
        .unwrap();
        assert_eq!(
            r,
            MirrorRequest::Manifest {
                target: repo("docker.io", "library/busybox"),
                reference: ManifestRef::Tag("latest".into()),
                head: false,
            }
        );
        // ns wins over a host-looking first component.
        let r = parse_request(
            "HEAD",
            &format!("/v2/a.b/c/blobs/{D}"),
            Some("ns=127.0.0.1%3A5000"),
            None,
        )
        .unwrap();
        assert_eq!(
            r,
            MirrorRequest::Blob {
                target: repo("127.0.0.1:5000", "a.b/c"),
                digest: Digest::parse(D).unwrap(),
                head: true,
            }
        );
    }

    #[test]
    fn path_prefix_names_the_upstream_when_it_looks_like_a_host() {
        for (path, want) in [
            ("/v2/ghcr.io/org/app/tags/list", repo("ghcr.io", "org/app")),
            (
                "/v2/localhost:5000/app/tags/list",
                repo("localhost:5000", "app"),
            ),
            ("/v2/localhost/app/tags/list", repo("localhost", "app")),
            (
                "/v2/index.docker.io/busybox/tags/list",
                repo("docker.io", "library/busybox"),
            ),
            (
                "/v2/registry-1.docker.io/user/app/tags/list",
                repo("docker.io", "user/app"),
            ),
        ] {
            assert_eq!(
                parse_request("GET", path, None, None).unwrap(),
                MirrorRequest::Tags { target: want },
                "{path}"
            );
        }
    }

    #[test]
    fn plain_names_go_to_the_default_upstream() {
        let r = parse_request("GET", "/v2/user/app/tags/list", None, Some("docker.io"));
        assert_eq!(
            r.unwrap(),
            MirrorRequest::Tags {
                target: repo("docker.io", "user/app")
            }
        );
        let r = parse_request("GET", "/v2/busybox/tags/list", None, Some("docker.io"));
        assert_eq!(
            r.unwrap(),
            MirrorRequest::Tags {
                target: repo("docker.io", "library/busybox")
            }
        );
        assert_eq!(
            parse_request("GET", "/v2/user/app/tags/list", None, None),
            Err(RouteError::NoUpstream("user/app".into()))
        );
    }

    #[test]
    fn refuses_writes_and_bad_names() {
        assert_eq!(
            parse_request("PUT", "/v2/a/manifests/x", None, Some("r.io")),
            Err(RouteError::MethodNotAllowed)
        );
        assert_eq!(
            parse_request("GET", "/v2/a/blobs/uploads/123", None, Some("r.io")),
            Err(RouteError::MethodNotAllowed)
        );
        assert!(matches!(
            parse_request("GET", "/v2/A/manifests/x", None, Some("r.io")),
            Err(RouteError::NameInvalid(_))
        ));
        assert!(matches!(
            parse_request("GET", "/v2/a/blobs/sha256:zz", None, Some("r.io")),
            Err(RouteError::DigestInvalid(_))
        ));
        assert!(matches!(
            parse_request("GET", "/v2/a/manifests/-x", None, Some("r.io")),
            Err(RouteError::TagInvalid(_))
        ));
        assert_eq!(
            parse_request("GET", "/v3/", None, None),
            Err(RouteError::NotFound)
        );
        assert_eq!(
            parse_request("GET", "/v2/", None, None),
            Ok(MirrorRequest::ApiBase)
        );
        assert_eq!(
            parse_request("GET", "/v2/_catalog", None, None),
            Ok(MirrorRequest::Catalog)
        );
    }

    #[test]
    fn ranges() {
        use ByteRange::*;
        let part = |start, end| Part { start, end };
        assert_eq!(parse_range(None, 10), Whole);
        assert_eq!(parse_range(Some("bytes=0-4"), 10), part(0, 4));
        assert_eq!(parse_range(Some("bytes=5-"), 10), part(5, 9));
        assert_eq!(parse_range(Some("bytes=-3"), 10), part(7, 9));
        assert_eq!(parse_range(Some("bytes=8-100"), 10), part(8, 9));
        assert_eq!(parse_range(Some("bytes=10-"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=5-2"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=x-2"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-1,3-4"), 10), Whole);
    }
}
