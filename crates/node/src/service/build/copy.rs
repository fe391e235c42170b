//! COPY and ADD on the filesystem: source resolution (globs, symlinks kept inside their
//! root), Docker's destination rules, ownership and modes, ADD of a local tar, and the
//! content checksum that goes into the cache key.
//!
//! Rules (moby `builder/dockerfile/copy.go`, `internals.go`, Dockerfile reference "COPY"):
//! - a source is a path in the context (or, with `--from`, in a stage's or image's root),
//!   cleaned; `..` may not climb out ("Forbidden path outside the build context");
//! - a source with `*`, `?` or `[` is a Go `filepath.Match` pattern over every path of the
//!   root ([`berth_builder::glob_match`]); a matched directory is copied whole;
//! - several sources need a destination that ends in `/`;
//! - a file goes to `dest/<name>` when `dest` ends in `/` or is an existing directory,
//!   else to `dest`; a directory's *contents* go into `dest`;
//! - everything copied is owned by the `--chown` identity (default 0:0); directories the
//!   copy creates get mode 0755 and that identity; `--chmod` sets the mode of what is
//!   copied; an existing destination directory keeps its owner and mode;
//! - ADD of a local tar (plain or gzip) unpacks it into `dest`, keeping the archive's
//!   owners, through the runtime's safe unpacker.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::io_at;
use crate::error::ServiceError;

/// One resolved source: its path on disk and the name it is copied under.
#[derive(Debug, Clone)]
pub struct Source {
    pub path: PathBuf,
    pub name: String,
    pub is_dir: bool,
}

/// `p` cleaned (`.`, `..`, duplicate and trailing `/` removed) relative to a root, or
/// `None` when `..` climbs above it.
pub fn clean_rel(p: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Resolves `rel` inside `root` following symlinks as if `root` were `/` (moby's
/// `FollowSymlinkInScope`): the result never leaves `root`. The last component is
/// followed too when `follow_last`.
pub fn resolve_in_root(root: &Path, rel: &str, follow_last: bool) -> PathBuf {
    let mut pending: Vec<String> = rel
        .split('/')
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .rev()
        .collect();
    let mut cur: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(c) = pending.pop() {
        match c.as_str() {
            "." => continue,
            ".." => {
                cur.pop();
                continue;
            }
            _ => {}
        }
        let candidate = root.join(cur.join("/")).join(&c);
        let is_last = pending.is_empty();
        match std::fs::symlink_metadata(&candidate) {
            Ok(m) if m.file_type().is_symlink() && (!is_last || follow_last) && hops < 40 => {
                hops += 1;
                let target = std::fs::read_link(&candidate).unwrap_or_default();
                let t = target.to_string_lossy().into_owned();
                if t.starts_with('/') {
                    cur.clear();
                }
                for part in t.split('/').filter(|p| !p.is_empty()).rev() {
                    pending.push(part.to_string());
                }
            }
            _ => cur.push(c),
        }
    }
    root.join(cur.join("/"))
}

/// Resolves the step's sources inside `root`. `context`: the build context (its error
/// texts), else a `--from` root.
pub fn resolve_sources(
    root: &Path,
    sources: &[String],
    context: bool,
    instr: &str,
) -> Result<Vec<Source>, ServiceError> {
    let mut out = Vec::new();
    for s in sources {
        if s.starts_with("http://") || s.starts_with("https://") {
            return Err(ServiceError::invalid(format!(
                "{instr} of a URL ({s}) is not supported by berth: download it in a RUN step, or put it in the build context"
            )));
        }
        let Some(rel) = clean_rel(s) else {
            return Err(ServiceError::invalid(format!(
                "Forbidden path outside the build context: {s} ()"
            )));
        };
        if has_glob(&rel) {
            let mut matched = Vec::new();
            glob_walk(root, "", &rel, &mut matched)?;
            if matched.is_empty() {
                return Err(ServiceError::invalid(format!(
                    "{instr} failed: no source files were specified"
                )));
            }
            for m in matched {
                out.push(source_at(root, &m)?);
            }
            continue;
        }
        let path = resolve_in_root(root, &rel, true);
        if std::fs::symlink_metadata(&path).is_err() {
            return Err(ServiceError::invalid(if context {
                format!("{instr} failed: file not found in build context or excluded by .dockerignore: stat {rel}: file does not exist")
            } else {
                format!("{instr} failed: stat {rel}: file does not exist")
            }));
        }
        out.push(source_at(root, &rel)?);
    }
    Ok(out)
}

fn source_at(root: &Path, rel: &str) -> Result<Source, ServiceError> {
    let path = resolve_in_root(root, rel, true);
    let meta = std::fs::metadata(&path).map_err(io_at("stat", &path))?;
    let name = rel.rsplit('/').next().unwrap_or("").to_string();
    Ok(Source {
        path,
        name,
        is_dir: meta.is_dir(),
    })
}

fn glob_walk(
    root: &Path,
    rel: &str,
    pattern: &str,
    out: &mut Vec<String>,
) -> Result<(), ServiceError> {
    let dir = root.join(rel);
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Ok(());
    };
    let mut names: Vec<(String, bool)> = Vec::new();
    for e in rd {
        let e = e.map_err(io_at("read", &dir))?;
        let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
        names.push((e.file_name().to_string_lossy().into_owned(), is_dir));
    }
    names.sort();
    for (name, is_dir) in names {
        let child = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        if berth_builder::glob_match(pattern, &child) {
            out.push(child);
        } else if is_dir {
            glob_walk(root, &child, pattern, out)?;
        }
    }
    Ok(())
}

/// Docker-style source hash of what is copied: `file:<sha256>` or `dir:<sha256>` per
/// source (over names, types, modes, symlink targets and contents, not times or owners),
/// combined with [`berth_builder::source_hash`].
pub fn content_hash(sources: &[Source]) -> Result<String, ServiceError> {
    let mut hashes = Vec::new();
    for s in sources {
        let mut h = Sha256::new();
        hash_tree(&s.path, "", &mut h)?;
        let kind = if s.is_dir { "dir" } else { "file" };
        hashes.push(format!("{kind}:{}", hex::encode(h.finalize())));
    }
    Ok(berth_builder::source_hash(&hashes))
}

fn hash_tree(path: &Path, rel: &str, h: &mut Sha256) -> Result<(), ServiceError> {
    let m = std::fs::symlink_metadata(path).map_err(io_at("stat", path))?;
    h.update(rel.as_bytes());
    h.update([0]);
    h.update(format!("{:o}", m.mode()).as_bytes());
    h.update([0]);
    if m.file_type().is_symlink() {
        let t = std::fs::read_link(path).map_err(io_at("readlink", path))?;
        h.update(t.as_os_str().as_encoded_bytes());
    } else if m.is_file() {
        let mut f = std::fs::File::open(path).map_err(io_at("open", path))?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = f.read(&mut buf).map_err(io_at("read", path))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
    } else if m.is_dir() {
        let mut names: Vec<String> = std::fs::read_dir(path)
            .map_err(io_at("read", path))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for n in names {
            hash_tree(&path.join(&n), &format!("{rel}/{n}"), h)?;
        }
    }
    h.update([0xff]);
    Ok(())
}

/// Ownership and mode of what a COPY writes.
#[derive(Debug, Clone, Copy)]
pub struct Attrs {
    pub uid: u32,
    pub gid: u32,
    pub chmod: Option<u32>,
}

/// Copies `sources` into the root filesystem at `root` (a mounted overlay of the image)
/// at `dest` (absolute; a trailing `/` means a directory).
pub fn copy_into(
    root: &Path,
    sources: &[Source],
    dest: &str,
    attrs: Attrs,
    add: bool,
    instr: &str,
) -> Result<(), ServiceError> {
    let dest_slash = dest.ends_with('/');
    if sources.len() > 1 && !dest_slash {
        return Err(ServiceError::invalid(format!(
            "When using {instr} with more than one source file, the destination must be a directory and end with a /"
        )));
    }
    let dest_rel = clean_rel(dest).unwrap_or_default();
    let dest_path = resolve_in_root(root, &dest_rel, true);
    let dest_is_dir = dest_slash || dest_path.is_dir();
    for s in sources {
        if add && !s.is_dir {
            if let Some(stream) = archive_stream(&s.path)? {
                let target = resolve_in_root(root, &dest_rel, true);
                mkdir_all(root, &dest_rel, attrs)?;
                berth_runtime::unpack::unpack_layer(stream, &target).map_err(|e| {
                    ServiceError::invalid(format!("{instr} failed: unpack {}: {e}", s.name))
                })?;
                continue;
            }
        }
        if s.is_dir {
            let existed = dest_path.is_dir();
            mkdir_all(root, &dest_rel, attrs)?;
            let target = resolve_in_root(root, &dest_rel, true);
            if !existed {
                apply_attrs(&target, &s.path, attrs, false)?;
            }
            copy_dir_contents(&s.path, &target, attrs)?;
        } else {
            let file_rel = if dest_is_dir {
                format!("{dest_rel}/{}", s.name)
            } else {
                dest_rel.clone()
            };
            let parent = file_rel.rsplit_once('/').map(|(p, _)| p).unwrap_or("");
            mkdir_all(root, parent, attrs)?;
            let target = resolve_in_root(root, &file_rel, false);
            if target.is_dir() {
                return Err(ServiceError::invalid(format!(
                    "{instr} failed: cannot overwrite directory {} with a file",
                    file_rel
                )));
            }
            copy_entry(&s.path, &target, attrs)?;
        }
    }
    Ok(())
}

/// Creates `rel` and its missing parents (0755, owned by `attrs`' identity); existing
/// ones are kept as they are.
pub fn mkdir_all(root: &Path, rel: &str, attrs: Attrs) -> Result<(), ServiceError> {
    let mut cur = String::new();
    for c in rel.split('/').filter(|c| !c.is_empty()) {
        cur = if cur.is_empty() {
            c.to_string()
        } else {
            format!("{cur}/{c}")
        };
        let p = resolve_in_root(root, &cur, true);
        if p.is_dir() {
            continue;
        }
        std::fs::create_dir(&p).map_err(io_at("mkdir", &p))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))
            .map_err(io_at("chmod", &p))?;
        std::os::unix::fs::lchown(&p, Some(attrs.uid), Some(attrs.gid))
            .map_err(io_at("chown", &p))?;
    }
    Ok(())
}

fn apply_attrs(target: &Path, src: &Path, attrs: Attrs, symlink: bool) -> Result<(), ServiceError> {
    std::os::unix::fs::lchown(target, Some(attrs.uid), Some(attrs.gid))
        .map_err(io_at("chown", target))?;
    if symlink {
        return Ok(());
    }
    let mode = match attrs.chmod {
        Some(m) => m,
        None => {
            std::fs::symlink_metadata(src)
                .map_err(io_at("stat", src))?
                .mode()
                & 0o7777
        }
    };
    std::fs::set_permissions(target, std::fs::Permissions::from_mode(mode))
        .map_err(io_at("chmod", target))
}

fn copy_entry(src: &Path, target: &Path, attrs: Attrs) -> Result<(), ServiceError> {
    let m = std::fs::symlink_metadata(src).map_err(io_at("stat", src))?;
    if let Ok(old) = std::fs::symlink_metadata(target) {
        if !old.is_dir() {
            std::fs::remove_file(target).map_err(io_at("remove", target))?;
        }
    }
    let ft = m.file_type();
    if ft.is_symlink() {
        let t = std::fs::read_link(src).map_err(io_at("readlink", src))?;
        std::os::unix::fs::symlink(&t, target).map_err(io_at("symlink", target))?;
        return apply_attrs(target, src, attrs, true);
    }
    if ft.is_dir() {
        if !target.is_dir() {
            std::fs::create_dir(target).map_err(io_at("mkdir", target))?;
        }
        apply_attrs(target, src, attrs, false)?;
        return copy_dir_contents(src, target, attrs);
    }
    if ft.is_file() {
        let mut input = std::fs::File::open(src).map_err(io_at("open", src))?;
        let mut out = std::fs::File::create(target).map_err(io_at("create", target))?;
        std::io::copy(&mut input, &mut out).map_err(io_at("write", target))?;
        if let Ok(mtime) = m.modified() {
            let _ = out.set_modified(mtime);
        }
        return apply_attrs(target, src, attrs, false);
    }
    // FIFOs, sockets and devices in a context are not copied (Docker copies them; they
    // cannot come from the docker CLI's context tar anyway).
    tracing::debug!(path = %src.display(), "special file not copied");
    Ok(())
}

fn copy_dir_contents(src: &Path, target: &Path, attrs: Attrs) -> Result<(), ServiceError> {
    let mut names: Vec<_> = std::fs::read_dir(src)
        .map_err(io_at("read", src))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    names.sort();
    for n in names {
        copy_entry(&src.join(&n), &target.join(&n), attrs)?;
    }
    Ok(())
}

/// A reader of the tar inside `path` when ADD should unpack it (a tar, plain or gzip);
/// `None` for any other file (copied as is).
fn archive_stream(path: &Path) -> Result<Option<Box<dyn Read>>, ServiceError> {
    let mut f = std::fs::File::open(path).map_err(io_at("open", path))?;
    let mut head = vec![0u8; 512];
    let mut n = 0;
    while n < head.len() {
        let r = f.read(&mut head[n..]).map_err(io_at("read", path))?;
        if r == 0 {
            break;
        }
        n += r;
    }
    head.truncate(n);
    let f = std::fs::File::open(path).map_err(io_at("open", path))?;
    if head.starts_with(&[0x1f, 0x8b]) {
        // A gzip file that is not a tar is copied as is, as Docker does.
        let mut probe = flate2::read::MultiGzDecoder::new(
            std::fs::File::open(path).map_err(io_at("open", path))?,
        );
        let mut inner = vec![0u8; 512];
        let mut m = 0;
        while m < inner.len() {
            match probe.read(&mut inner[m..]) {
                Ok(0) | Err(_) => break,
                Ok(r) => m += r,
            }
        }
        if super::context::is_tar_header(&inner[..m]) {
            return Ok(Some(Box::new(flate2::read::MultiGzDecoder::new(f))));
        }
        return Ok(None);
    }
    if super::context::is_tar_header(&head) {
        return Ok(Some(Box::new(f)));
    }
    Ok(None)
}

/// Resolves `--chown=user[:group]` in the image root `root` (its `/etc/passwd` and
/// `/etc/group`), as moby's `parseChownFlag`: a lone user is used as the group too;
/// numbers are taken as they are.
pub fn resolve_chown(root: &Path, spec: &str) -> Result<(u32, u32), ServiceError> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (user, group) = match parts.as_slice() {
        [u] => (*u, *u),
        [u, g] => (*u, *g),
        _ => {
            return Err(ServiceError::invalid(format!(
                "invalid chown string format: {spec}"
            )))
        }
    };
    let lookup = |file: &str, name: &str| -> Option<u32> {
        if let Ok(n) = name.parse::<u32>() {
            return Some(n);
        }
        let path = resolve_in_root(root, file, true);
        let text = std::fs::read_to_string(path).ok()?;
        text.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 3 && f[0] == name)
                .then(|| f[2].parse().ok())
                .flatten()
        })
    };
    let err = |what: &str, n: &str| {
        ServiceError::invalid(format!(
            "unable to convert uid/gid chown string to host mapping: can't find {what} {n}: no such {}: {n}",
            if what == "uid for user" { "user" } else { "group" }
        ))
    };
    let uid = lookup("etc/passwd", user).ok_or_else(|| err("uid for user", user))?;
    let gid = lookup("etc/group", group).ok_or_else(|| err("gid for group", group))?;
    Ok((uid, gid))
}

/// Removes what the runtime put into a RUN container's upper dir only to mount over it
/// (Docker keeps these in the container's init layer, never in an image): `/etc/hosts`,
/// `/etc/resolv.conf`, `/etc/hostname` always (Docker bind-mounts them, so a RUN's
/// writes to them never reach a layer), then the directories `/proc`, `/sys`, `/dev/*`
/// and `/etc` when they are left empty and were either created by the runtime (absent
/// from every lower: mount points) or only copied up (a lower has them with the same mode
/// and owner), so `RUN true` gives an empty layer as with dockerd.
pub fn scrub_mount_points(upper: &Path, lowers: &[PathBuf]) {
    for f in ["etc/hosts", "etc/resolv.conf", "etc/hostname"] {
        let p = upper.join(f);
        if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_file()) {
            let _ = std::fs::remove_file(&p);
        }
    }
    for d in [
        "dev/pts",
        "dev/shm",
        "dev/mqueue",
        "proc",
        "sys",
        "dev",
        "etc",
    ] {
        let p = upper.join(d);
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        let empty = std::fs::read_dir(&p).is_ok_and(|mut r| r.next().is_none());
        // The topmost lower that has it decides what the directory was.
        let lower = lowers
            .iter()
            .find_map(|l| std::fs::symlink_metadata(l.join(d)).ok());
        let only_copied_up = match lower {
            None => true,
            Some(l) => {
                l.is_dir()
                    && l.mode() == meta.mode()
                    && l.uid() == meta.uid()
                    && l.gid() == meta.gid()
            }
        };
        if meta.is_dir() && empty && only_copied_up {
            let _ = std::fs::remove_dir(&p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs() -> Attrs {
        Attrs {
            uid: 0,
            gid: 0,
            chmod: None,
        }
    }

    #[test]
    fn clean_and_resolve_stay_inside() {
        assert_eq!(clean_rel("/a/./b/"), Some("a/b".into()));
        assert_eq!(clean_rel("../x"), None);
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("l")).unwrap();
        assert_eq!(
            resolve_in_root(dir.path(), "l/x", true),
            dir.path().join("etc/x")
        );
        std::os::unix::fs::symlink("../../..", dir.path().join("up")).unwrap();
        assert_eq!(
            resolve_in_root(dir.path(), "up/y", true),
            dir.path().join("y")
        );
    }

    #[test]
    fn docker_destination_rules() {
        let ctx = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::write(ctx.path().join("a.txt"), "a").unwrap();
        std::fs::write(ctx.path().join("b.txt"), "b").unwrap();
        std::fs::create_dir_all(ctx.path().join("d/sub")).unwrap();
        std::fs::write(ctx.path().join("d/sub/c"), "c").unwrap();
        std::fs::create_dir_all(root.path().join("existing")).unwrap();

        let one = resolve_sources(ctx.path(), &["a.txt".into()], true, "COPY").unwrap();
        copy_into(root.path(), &one, "/file", attrs(), false, "COPY").unwrap();
        assert_eq!(std::fs::read(root.path().join("file")).unwrap(), b"a");
        copy_into(root.path(), &one, "/existing", attrs(), false, "COPY").unwrap();
        assert!(root.path().join("existing/a.txt").is_file());

        let globbed = resolve_sources(ctx.path(), &["*.txt".into()], true, "COPY").unwrap();
        assert_eq!(globbed.len(), 2);
        let e = copy_into(root.path(), &globbed, "/multi", attrs(), false, "COPY").unwrap_err();
        assert!(e
            .to_string()
            .contains("must be a directory and end with a /"));
        copy_into(root.path(), &globbed, "/multi/", attrs(), false, "COPY").unwrap();
        assert!(root.path().join("multi/b.txt").is_file());

        let d = resolve_sources(ctx.path(), &["d".into()], true, "COPY").unwrap();
        copy_into(root.path(), &d, "/dd", attrs(), false, "COPY").unwrap();
        assert!(
            root.path().join("dd/sub/c").is_file(),
            "contents, not the dir"
        );

        let missing = resolve_sources(ctx.path(), &["nope".into()], true, "COPY").unwrap_err();
        assert!(missing
            .to_string()
            .starts_with("COPY failed: file not found in build context"));
        assert!(resolve_sources(ctx.path(), &["../x".into()], true, "COPY").is_err());

        let h1 = content_hash(&one).unwrap();
        std::fs::write(ctx.path().join("a.txt"), "changed").unwrap();
        assert_ne!(h1, content_hash(&one).unwrap());
    }

    #[test]
    fn chown_names_from_the_image() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("etc")).unwrap();
        std::fs::write(
            root.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            root.path().join("etc/group"),
            "root:x:0:\napp:x:1000:\nstaff:x:50:\n",
        )
        .unwrap();
        assert_eq!(resolve_chown(root.path(), "app").unwrap(), (1000, 1000));
        assert_eq!(resolve_chown(root.path(), "app:staff").unwrap(), (1000, 50));
        assert_eq!(resolve_chown(root.path(), "7:8").unwrap(), (7, 8));
        let e = resolve_chown(root.path(), "nobody2")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no such user: nobody2"), "{e}");
    }
}
