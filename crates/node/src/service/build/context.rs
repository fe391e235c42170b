//! The build context: the request body (a tar, plain or gzip/zstd compressed, or a
//! Dockerfile alone) unpacked into a directory, with `.dockerignore` applied.
//!
//! Unpacking goes through the runtime's safe layer unpacker
//! ([`berth_runtime::unpack::unpack_layer`]: no `..`, no absolute paths, no writes through
//! symlinks), so a hostile context cannot write outside its directory. bzip2 and xz
//! contexts are refused by name (the docker CLI, docker-py and compose send plain tars).

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use berth_builder::DockerIgnore;

use super::io_at;
use crate::error::ServiceError;

/// What the body held.
#[derive(Debug, PartialEq, Eq)]
pub enum ContextKind {
    /// A tar archive, unpacked.
    Archive,
    /// Not an archive: the body is the Dockerfile (`docker build - < Dockerfile` through
    /// a client that does not wrap it in a tar), written as `Dockerfile`.
    DockerfileOnly,
}

/// Unpacks `body` into `dest` (an empty directory).
pub fn unpack_context(body: impl Read, dest: &Path) -> Result<ContextKind, ServiceError> {
    let mut r = BufReader::with_capacity(64 * 1024, body);
    let head = r
        .fill_buf()
        .map_err(|e| ServiceError::invalid(format!("read build context: {e}")))?
        .to_vec();
    let stream: Box<dyn Read> = if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(r))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(
            zstd::stream::read::Decoder::new(r)
                .map_err(|e| ServiceError::invalid(format!("read build context: {e}")))?,
        )
    } else if head.starts_with(b"BZh") {
        return Err(ServiceError::invalid(
            "bzip2-compressed build contexts are not supported by berth: send a plain or gzip tar",
        ));
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        return Err(ServiceError::invalid(
            "xz-compressed build contexts are not supported by berth: send a plain or gzip tar",
        ));
    } else if is_tar_header(&head) || head.is_empty() {
        Box::new(r)
    } else {
        // A Dockerfile alone.
        let mut text = Vec::new();
        r.read_to_end(&mut text)
            .map_err(|e| ServiceError::invalid(format!("read build context: {e}")))?;
        std::fs::write(dest.join("Dockerfile"), text).map_err(io_at("write", dest))?;
        return Ok(ContextKind::DockerfileOnly);
    };
    berth_runtime::unpack::unpack_layer(stream, dest).map_err(|e| {
        ServiceError::invalid(format!("failed to read the build context archive: {e}"))
    })?;
    Ok(ContextKind::Archive)
}

/// Whether `head` starts with a tar header (ustar magic, or a v7 header whose checksum
/// adds up).
pub fn is_tar_header(head: &[u8]) -> bool {
    if head.len() < 512 {
        return false;
    }
    if &head[257..262] == b"ustar" {
        return true;
    }
    let field = std::str::from_utf8(&head[148..156]).unwrap_or("");
    let Ok(stored) = u32::from_str_radix(field.trim_matches(|c: char| c == '\0' || c == ' '), 8)
    else {
        return false;
    };
    let sum: u32 = head[..512]
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                *b as u32
            }
        })
        .sum();
    sum == stored
}

/// Removes from `root` what `.dockerignore` excludes, so COPY and ADD never see it (the
/// clients already leave such files out; this makes the daemon's answer the same for a
/// client that does not). The Dockerfile and `.dockerignore` themselves stay: the builder
/// reads them, as Docker's does.
pub fn apply_dockerignore(root: &Path, dockerfile: &str) -> Result<(), ServiceError> {
    let Ok(text) = std::fs::read_to_string(root.join(".dockerignore")) else {
        return Ok(());
    };
    let ignore = DockerIgnore::parse(&text);
    let keep = |rel: &str| rel == dockerfile || rel == ".dockerignore";
    walk_remove(root, "", &ignore, &keep)
}

/// Removes the excluded files below `dir` (`rel` inside the context), then excluded dirs
/// left empty.
fn walk_remove(
    dir: &Path,
    rel: &str,
    ignore: &DockerIgnore,
    keep: &dyn Fn(&str) -> bool,
) -> Result<(), ServiceError> {
    let entries = std::fs::read_dir(dir).map_err(io_at("read", dir))?;
    for e in entries {
        let e = e.map_err(io_at("read", dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let child_rel = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let path = e.path();
        let ft = e.file_type().map_err(io_at("stat", &path))?;
        if ft.is_dir() {
            walk_remove(&path, &child_rel, ignore, keep)?;
            let empty = std::fs::read_dir(&path)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
            if empty && ignore.is_excluded(&child_rel) {
                std::fs::remove_dir(&path).map_err(io_at("remove", &path))?;
            }
        } else if ignore.is_excluded(&child_rel) && !keep(&child_rel) {
            std::fs::remove_file(&path).map_err(io_at("remove", &path))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_tar_and_bare_dockerfile() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(3);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, "a.txt", &b"abc"[..]).unwrap();
        let bytes = b.into_inner().unwrap();
        assert!(is_tar_header(&bytes));
        assert_eq!(
            unpack_context(&bytes[..], dir.path()).unwrap(),
            ContextKind::Archive
        );
        assert_eq!(std::fs::read(dir.path().join("a.txt")).unwrap(), b"abc");

        let d2 = tempfile::tempdir().unwrap();
        let kind = unpack_context(&b"FROM scratch\n"[..], d2.path()).unwrap();
        assert_eq!(kind, ContextKind::DockerfileOnly);
        assert!(d2.path().join("Dockerfile").is_file());
        assert!(unpack_context(&b"BZh91AY"[..], d2.path()).is_err());
    }

    #[test]
    fn dockerignore_removes_what_it_excludes() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::fs::create_dir_all(r.join("secret")).unwrap();
        std::fs::write(r.join("secret/key"), "k").unwrap();
        std::fs::write(r.join("keep.txt"), "x").unwrap();
        std::fs::write(r.join("drop.log"), "x").unwrap();
        std::fs::write(r.join("Dockerfile"), "FROM scratch").unwrap();
        std::fs::write(r.join(".dockerignore"), "secret\n*.log\nDockerfile\n").unwrap();
        apply_dockerignore(r, "Dockerfile").unwrap();
        assert!(!r.join("secret").exists());
        assert!(!r.join("drop.log").exists());
        assert!(r.join("keep.txt").exists());
        assert!(r.join("Dockerfile").exists());
    }
}
