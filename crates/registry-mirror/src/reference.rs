//! Image references parsed exactly as Docker parses them (distribution/reference's
//! `ParseNormalizedNamed` + default tag), as plain code with no I/O.
//!
//! ```text
//!  "busybox"                 -> docker.io / library/busybox : latest
//!  "user/app:1.0"            -> docker.io / user/app        : 1.0
//!  "localhost:5000/a/b@sha256:..." -> localhost:5000 / a/b @ sha256:...
//! ```

use std::fmt;

use crate::digest::Digest;
use crate::error::{Error, ReferenceErrorKind};

/// Docker Hub's canonical domain in references.
pub const DEFAULT_DOMAIN: &str = "docker.io";
/// Docker Hub's legacy domain, normalised to [`DEFAULT_DOMAIN`].
pub const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
/// The host that serves Docker Hub's registry API.
pub const DEFAULT_REGISTRY_HOST: &str = "registry-1.docker.io";
/// Namespace of official images on Docker Hub.
pub const OFFICIAL_REPO_PREFIX: &str = "library/";
/// Tag used when a reference has neither tag nor digest.
pub const DEFAULT_TAG: &str = "latest";
const NAME_TOTAL_LENGTH_MAX: usize = 255;

/// A normalised, fully qualified image reference.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

fn err(input: &str, kind: ReferenceErrorKind) -> Error {
    Error::InvalidReference {
        input: input.to_string(),
        kind,
    }
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__" or "-"+, and it must be followed by alnum.
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// A repository path inside a registry (`library/busybox`, `a/b_c/d`): path components
/// joined by `/` (distribution's `remote-name`). Length limits are the caller's.
pub fn valid_repository_path(path: &str) -> bool {
    path.split('/').all(valid_path_component)
}

/// The digest part of a reference (after `@`), with go-digest's verdicts: not the digest
/// grammar `algorithm:encoded` (`[A-Za-z][A-Za-z0-9]*([-_+.][A-Za-z][A-Za-z0-9]*)*` and at
/// least 32 hex digits) is a format error; then an algorithm berth does not verify, a wrong
/// length, or a bad encoding for the algorithm.
fn parse_digest(input: &str, d: &str) -> Result<Digest, Error> {
    let Some((alg, hex)) = d.split_once(':') else {
        return Err(err(input, ReferenceErrorKind::Format));
    };
    let alg_ok = alg.split(['-', '_', '+', '.']).all(|c| {
        let b = c.as_bytes();
        !b.is_empty() && b[0].is_ascii_alphabetic() && b.iter().all(u8::is_ascii_alphanumeric)
    });
    if !alg_ok || hex.len() < 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(err(input, ReferenceErrorKind::Format));
    }
    if alg != "sha256" {
        return Err(err(input, ReferenceErrorKind::DigestUnsupported));
    }
    if hex.len() != 64 {
        return Err(err(input, ReferenceErrorKind::DigestLength));
    }
    Digest::parse(d).map_err(|_| err(input, ReferenceErrorKind::Digest))
}

/// `(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])`
fn valid_domain_component(c: &str) -> bool {
    let b = c.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-')
}

/// host (`a.b.c` or `[ipv6]`) with an optional `:port`.
fn valid_domain(d: &str) -> bool {
    let (host, port) = if let Some(rest) = d.strip_prefix('[') {
        let Some(end) = rest.find(']') else {
            return false;
        };
        let ip = &rest[..end];
        if ip.is_empty() || !ip.bytes().all(|x| x.is_ascii_hexdigit() || x == b':') {
            return false;
        }
        let after = &rest[end + 1..];
        match after.strip_prefix(':') {
            Some(p) => ("", Some(p)),
            None if after.is_empty() => ("", None),
            None => return false,
        }
    } else {
        match d.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (d, None),
        }
    };
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|x| x.is_ascii_digit()) {
            return false;
        }
    }
    host.is_empty() && d.starts_with('[') || host.split('.').all(valid_domain_component)
}

/// `[\w][\w.-]{0,127}`
pub(crate) fn valid_tag(t: &str) -> bool {
    let w = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && w(b[0])
        && b.iter().all(|x| w(*x) || *x == b'.' || *x == b'-')
}

/// Docker's splitDockerDomain.
fn split_domain(name: &str) -> (String, String) {
    let (mut domain, mut remainder) = match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.to_lowercase() != first =>
        {
            (first.to_string(), rest.to_string())
        }
        _ => (DEFAULT_DOMAIN.to_string(), name.to_string()),
    };
    if domain == LEGACY_DEFAULT_DOMAIN {
        domain = DEFAULT_DOMAIN.to_string();
    }
    if domain == DEFAULT_DOMAIN && !remainder.contains('/') {
        remainder = format!("{OFFICIAL_REPO_PREFIX}{remainder}");
    }
    (domain, remainder)
}

impl Reference {
    /// Parses a reference as `docker pull` does: normalised (Docker Hub defaults) and with
    /// tag `latest` when neither a tag nor a digest is given.
    pub fn parse(s: &str) -> Result<Self, Error> {
        let mut r = Self::parse_normalized(s)?;
        if r.tag.is_none() && r.digest.is_none() {
            r.tag = Some(DEFAULT_TAG.to_string());
        }
        Ok(r)
    }

    /// Parses without adding a default tag (Docker's `ParseNormalizedNamed`).
    pub fn parse_normalized(s: &str) -> Result<Self, Error> {
        if s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(err(s, ReferenceErrorKind::LooksLikeImageId));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(parse_digest(s, d)?)),
            None => (s, None),
        };
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag {
            if !valid_tag(t) {
                return Err(err(s, ReferenceErrorKind::Format));
            }
        }
        if name.is_empty() {
            return Err(err(s, ReferenceErrorKind::Format));
        }
        let (domain, path) = split_domain(name);
        if path.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(err(s, ReferenceErrorKind::Uppercase));
        }
        if !valid_domain(&domain) || !valid_repository_path(&path) {
            return Err(err(s, ReferenceErrorKind::Format));
        }
        if domain.len() + 1 + path.len() > NAME_TOTAL_LENGTH_MAX {
            return Err(err(s, ReferenceErrorKind::NameTooLong));
        }
        Ok(Reference {
            domain,
            path,
            tag: tag.map(str::to_string),
            digest,
        })
    }

    /// `docker.io`, `localhost:5000`, `127.0.0.1:5000`...
    pub fn domain(&self) -> &str {
        &self.domain
    }
    /// Repository path inside the registry (`library/busybox`).
    pub fn path(&self) -> &str {
        &self.path
    }
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }
    /// The host:port to talk the distribution API to.
    pub fn registry_host(&self) -> &str {
        if self.domain == DEFAULT_DOMAIN {
            DEFAULT_REGISTRY_HOST
        } else {
            &self.domain
        }
    }
    /// `docker.io/library/busybox`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }
    /// The name as Docker shows it: `busybox`, `user/app`, `localhost:5000/app`.
    pub fn familiar_name(&self) -> String {
        if self.domain == DEFAULT_DOMAIN {
            self.path
                .strip_prefix(OFFICIAL_REPO_PREFIX)
                .filter(|p| !p.contains('/'))
                .unwrap_or(&self.path)
                .to_string()
        } else {
            self.name()
        }
    }
    /// `familiar_name:tag`, if there is a tag (the key of a tag in the image store).
    pub fn familiar_tagged(&self) -> Option<String> {
        self.tag
            .as_ref()
            .map(|t| format!("{}:{t}", self.familiar_name()))
    }
    /// The tag or digest to ask the registry for (digest wins).
    pub fn manifest_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => DEFAULT_TAG.to_string(),
        }
    }
    /// The same repository with another tag and no digest.
    pub fn with_tag(&self, tag: &str) -> Result<Self, Error> {
        if !valid_tag(tag) {
            return Err(err(tag, ReferenceErrorKind::Format));
        }
        Ok(Reference {
            tag: Some(tag.to_string()),
            digest: None,
            ..self.clone()
        })
    }
    /// The same repository pinned to `digest` (no tag).
    pub fn with_digest(&self, digest: Digest) -> Self {
        Reference {
            tag: None,
            digest: Some(digest),
            ..self.clone()
        }
    }
}

impl fmt::Display for Reference {
    /// The familiar form, as Docker prints references.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.familiar_name())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn p(s: &str) -> Reference {
        Reference::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn docker_hub_defaults() {
        let r = p("busybox");
        assert_eq!(
            (r.domain(), r.path(), r.tag()),
            ("docker.io", "library/busybox", Some("latest"))
        );
        assert_eq!(r.registry_host(), "registry-1.docker.io");
        assert_eq!(r.to_string(), "busybox:latest");
        let r = p("user/app:1.0");
        assert_eq!(
            (r.domain(), r.path(), r.tag()),
            ("docker.io", "user/app", Some("1.0"))
        );
        assert_eq!(r.to_string(), "user/app:1.0");
        let r = p("index.docker.io/library/busybox");
        assert_eq!(r.name(), "docker.io/library/busybox");
        assert_eq!(r.familiar_name(), "busybox");
        let r = p("docker.io/library/a/b");
        assert_eq!(r.familiar_name(), "library/a/b");
    }

    #[test]
    fn hosts_ports_and_digests() {
        let r = p("localhost:5000/a/b");
        assert_eq!((r.domain(), r.path()), ("localhost:5000", "a/b"));
        let r = p("localhost/app");
        assert_eq!(r.domain(), "localhost");
        let r = p("127.0.0.1:5000/busybox:v2s2");
        assert_eq!(
            (r.domain(), r.path(), r.tag()),
            ("127.0.0.1:5000", "busybox", Some("v2s2"))
        );
        assert_eq!(r.to_string(), "127.0.0.1:5000/busybox:v2s2");
        let r = p(&format!("127.0.0.1:5000/busybox@{D}"));
        assert_eq!(r.tag(), None, "no default tag with a digest");
        assert_eq!(r.manifest_reference(), D);
        let r = p(&format!("busybox:1@{D}"));
        assert_eq!(
            (r.tag(), r.digest().map(|d| d.to_string())),
            (Some("1"), Some(D.to_string()))
        );
        let r = p("[::1]:5000/x:y");
        assert_eq!(
            (r.domain(), r.path(), r.tag()),
            ("[::1]:5000", "x", Some("y"))
        );
        let r = p("Example.com/x");
        assert_eq!(
            r.domain(),
            "Example.com",
            "uppercase first part is a domain"
        );
        let r = p("a.b-c.example:443/x.y__z-w/q_r");
        assert_eq!(r.path(), "x.y__z-w/q_r");
        assert!(Reference::parse_normalized("busybox")
            .unwrap()
            .tag()
            .is_none());
    }

    #[test]
    fn refuses_what_docker_refuses() {
        use ReferenceErrorKind::*;
        let cases = [
            ("Busybox", Uppercase),
            ("user/App", Uppercase),
            ("", Format),
            (":tag", Format),
            ("busybox:", Format),
            ("busybox:-x", Format),
            ("a//b", Format),
            ("a/b/", Format),
            ("-a/b", Format),
            ("a_-b", Format),
            ("a___b", Format),
            ("localhost:abc/x", Format),
            ("busybox@sha256:abc", Format),
            (
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                LooksLikeImageId,
            ),
        ];
        for (input, want) in cases {
            match Reference::parse(input) {
                Err(Error::InvalidReference { kind, .. }) => assert_eq!(kind, want, "{input}"),
                other => panic!("{input}: {other:?}"),
            }
        }
        let long = format!("a/{}", "b".repeat(260));
        assert!(matches!(
            Reference::parse(&long),
            Err(Error::InvalidReference {
                kind: NameTooLong,
                ..
            })
        ));
        let tag = "t".repeat(129);
        assert!(Reference::parse(&format!("a:{tag}")).is_err());
    }

    /// The cases of distribution/reference's own parse table, read as dockerd reads them
    /// (`ParseNormalizedNamed`: Docker Hub names get `docker.io/library/`, and the 255-byte
    /// limit applies to the normalised name), plus separator and tag edge cases.
    #[test]
    fn distribution_grammar_table() {
        use ReferenceErrorKind::*;
        let f64 = "f".repeat(64);
        let sha = format!("sha256:{f64}");
        let t128 = "t".repeat(128);
        type Want<'a> = (&'a str, &'a str, Option<&'a str>, bool);
        let valid: Vec<(String, Want<'_>)> = vec![
            (
                "test_com".into(),
                ("docker.io", "library/test_com", None, false),
            ),
            (
                "dockerpytest_7c8b".into(),
                ("docker.io", "library/dockerpytest_7c8b", None, false),
            ),
            (
                "test.com:tag".into(),
                ("docker.io", "library/test.com", Some("tag"), false),
            ),
            (
                "test.com:5000".into(),
                ("docker.io", "library/test.com", Some("5000"), false),
            ),
            (
                "test.com/repo:tag".into(),
                ("test.com", "repo", Some("tag"), false),
            ),
            ("test:5000/repo".into(), ("test:5000", "repo", None, false)),
            (
                format!("test:5000/repo@{sha}"),
                ("test:5000", "repo", None, true),
            ),
            (
                format!("test:5000/repo:tag@{sha}"),
                ("test:5000", "repo", Some("tag"), true),
            ),
            (
                "lowercase:Uppercase".into(),
                ("docker.io", "library/lowercase", Some("Uppercase"), false),
            ),
            (
                "sub-dom1.foo.com/bar/baz/quux:some-long-tag".into(),
                (
                    "sub-dom1.foo.com",
                    "bar/baz/quux",
                    Some("some-long-tag"),
                    false,
                ),
            ),
            (
                "b.gcr.io/test.example.com/my-app:test.example.com".into(),
                (
                    "b.gcr.io",
                    "test.example.com/my-app",
                    Some("test.example.com"),
                    false,
                ),
            ),
            (
                "xn--n3h.com/myimage:xn--n3h.com".into(),
                ("xn--n3h.com", "myimage", Some("xn--n3h.com"), false),
            ),
            (
                "foo_bar.com:8080".into(),
                ("docker.io", "library/foo_bar.com", Some("8080"), false),
            ),
            (
                "foo/foo_bar.com:8080".into(),
                ("docker.io", "foo/foo_bar.com", Some("8080"), false),
            ),
            (
                "192.168.1.1".into(),
                ("docker.io", "library/192.168.1.1", None, false),
            ),
            (
                "192.168.1.1:tag".into(),
                ("docker.io", "library/192.168.1.1", Some("tag"), false),
            ),
            (
                "192.168.1.1/repo".into(),
                ("192.168.1.1", "repo", None, false),
            ),
            (
                "192.168.1.1:5000/repo:5050".into(),
                ("192.168.1.1:5000", "repo", Some("5050"), false),
            ),
            (
                "[2001:db8::1]/repo".into(),
                ("[2001:db8::1]", "repo", None, false),
            ),
            (
                "[2001:db8:1:2:3:4:5:6]/repo:tag".into(),
                ("[2001:db8:1:2:3:4:5:6]", "repo", Some("tag"), false),
            ),
            (
                format!("[2001:db8::1]:5000/repo:tag@{sha}"),
                ("[2001:db8::1]:5000", "repo", Some("tag"), true),
            ),
            (
                "[2001:db8::]:5000/repo".into(),
                ("[2001:db8::]:5000", "repo", None, false),
            ),
            (
                "[::1]:5000/repo".into(),
                ("[::1]:5000", "repo", None, false),
            ),
            (
                "test-com:8080/foo".into(),
                ("test-com:8080", "foo", None, false),
            ),
            (
                "xn--n3h.com:18080/foo".into(),
                ("xn--n3h.com:18080", "foo", None, false),
            ),
            (
                "a/b__c/d-e/f---g/h.i/j_k".into(),
                ("docker.io", "a/b__c/d-e/f---g/h.i/j_k", None, false),
            ),
            (
                format!("a:{t128}"),
                ("docker.io", "library/a", Some(t128.as_str()), false),
            ),
            (
                "a:_x.Y-1".into(),
                ("docker.io", "library/a", Some("_x.Y-1"), false),
            ),
        ];
        for (input, (domain, path, tag, digested)) in &valid {
            let r = Reference::parse_normalized(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(
                (r.domain(), r.path(), r.tag(), r.digest().is_some()),
                (*domain, *path, *tag, *digested),
                "{input}"
            );
        }
        let invalid: Vec<(String, ReferenceErrorKind)> = vec![
            ("".into(), Format),
            (":justtag".into(), Format),
            (format!("@{sha}"), Format),
            (format!("repo@sha256:{}", "f".repeat(34)), DigestLength),
            (format!("validname@invaliddigest:{f64}"), DigestUnsupported),
            (format!("repo@sha256:{}", "F".repeat(64)), Digest),
            ("repo@sha256:ffff".into(), Format),
            (format!("repo@1sha:{f64}"), Format),
            ("Uppercase:tag".into(), Uppercase),
            ("test:5000/Uppercase/lowercase:tag".into(), Uppercase),
            (format!("{}a:tag", "a/".repeat(128)), NameTooLong),
            // Valid for distribution's Parse (domain "a"), too long once normalised.
            (
                format!("{}a:tag-puts-this-over-max", "a/".repeat(127)),
                NameTooLong,
            ),
            ("aa/asdf$$^/aa".into(), Format),
            ("[2001:db8::1]".into(), Format),
            ("[2001:db8::1]:5000".into(), Format),
            ("[2001:db8::1]:tag".into(), Format),
            ("[fe80::1%eth0]:5000/repo".into(), Format),
            ("[fe80::1%@invalidzone]:5000/repo".into(), Format),
            ("a..b".into(), Format),
            ("a._b".into(), Format),
            ("a___b".into(), Format),
            ("a_-b".into(), Format),
            ("a-".into(), Format),
            ("a/-b".into(), Format),
            ("a:b:c".into(), Format),
            (format!("a:{}", "t".repeat(129)), Format),
            ("a:.x".into(), Format),
            ("a:-x".into(), Format),
            ("-host.com/a".into(), Format),
            ("host-.com/a".into(), Format),
            ("host.com:/a".into(), Format),
        ];
        for (input, want) in invalid {
            match Reference::parse_normalized(&input) {
                Err(Error::InvalidReference { kind, .. }) => assert_eq!(kind, want, "{input}"),
                other => panic!("{input}: {other:?}"),
            }
        }
        assert!(valid_repository_path("dockerpytest_7c8b/a__b"));
        assert!(!valid_repository_path("a/B"));
        assert!(!valid_repository_path("a//b"));
    }
}
