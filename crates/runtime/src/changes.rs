//! A container's filesystem changes: `docker diff` and the layer tar of `docker commit`.
//!
//! Owns: reading an overlayfs upper directory against its lower directories the way
//! Docker's overlay2 driver does (moby `pkg/archive/changes.go`, `OverlayChanges` and
//! `overlayWhiteoutConverter`), and writing trees of files as tar streams
//! ([`write_layer_tar`] for image layers, [`write_tree_tar`] for `docker export` and
//! `docker cp`). Pure file reading: no mounts, no namespaces.
//!
//! ```text
//!  upper/                      changes()                write_layer_tar()
//!   etc/passwd (file)    -->   C /etc, C /etc/passwd    etc/, etc/passwd
//!   tmp/new (file)       -->   C /tmp, A /tmp/new       tmp/, tmp/new
//!   bin/ls (chr 0/0)     -->   C /bin, D /bin/ls        bin/, bin/.wh.ls
//!   opt/ (opaque xattr)  -->   D /opt                   opt/, opt/.wh..wh..opq
//! ```
//!
//! The upper directory and the lowers belong to berth (host paths under the snapshot
//! store): they are read with plain `lstat`/`readdir`, symlinks are never followed.

use std::collections::{BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs::{self, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Result, RuntimeError};
use crate::unpack::{OPAQUE_MARKER, OVERLAY_OPAQUE_XATTR, WHITEOUT_PREFIX};

/// Docker's change kinds (`docker diff`: C, A, D; Engine API `Kind` 0, 1, 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChangeKind {
    Modified = 0,
    Added = 1,
    Deleted = 2,
}

impl ChangeKind {
    /// The letter `docker diff` prints (`C`, `A`, `D`).
    pub fn letter(self) -> char {
        match self {
            ChangeKind::Modified => 'C',
            ChangeKind::Added => 'A',
            ChangeKind::Deleted => 'D',
        }
    }
}

/// One change of a container's filesystem against its image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Absolute in the container, e.g. `/etc/passwd`.
    pub path: String,
    pub kind: ChangeKind,
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> RuntimeError + 'a {
    move |e| RuntimeError::io(op, path, e)
}

/// Is `m` an overlayfs whiteout (character device 0/0)?
fn is_whiteout(m: &Metadata) -> bool {
    m.file_type().is_char_device() && m.rdev() == 0
}

/// Is the directory at `path` marked opaque (`trusted.overlay.opaque=y`)?
fn is_opaque(path: &Path) -> bool {
    let mut buf = [0u8; 4];
    matches!(rustix::fs::lgetxattr(path, OVERLAY_OPAQUE_XATTR, &mut buf), Ok(1) if buf[0] == b'y')
}

/// The entries of directory `dir`, sorted by name bytes (Go's `filepath.Walk` order).
fn sorted_entries(dir: &Path) -> Result<Vec<OsString>> {
    let mut names = Vec::new();
    for e in fs::read_dir(dir).map_err(io_err("read dir", dir))? {
        names.push(e.map_err(io_err("read dir", dir))?.file_name());
    }
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

fn join_abs(parent: &str, name: &OsStr) -> String {
    let name = String::from_utf8_lossy(name.as_bytes());
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

/// The changes of an overlay upper dir against its lowers (top first), as `docker diff`
/// lists them (parent dirs of a change are listed as Modified, like Docker).
///
/// Rules (moby `pkg/archive/changes.go` `changes()` with `overlayDeletedFile`): a whiteout
/// (char device 0/0) or an opaque directory is `Deleted`; anything else is `Modified` if a
/// lower has that path and `Added` otherwise, except that a directory whose size, mode and
/// mtime equal the lower's is not listed (it was only copied up). The parent directory of
/// an `Added`/`Deleted` path is listed as `Modified` before it if not listed yet. Order:
/// a depth-first walk with the names of each directory sorted bytewise.
pub fn changes(upper: &Path, lowers: &[PathBuf]) -> Result<Vec<Change>> {
    let mut out = Vec::new();
    let mut changed_dirs = BTreeSet::new();
    walk_changes(upper, "/", lowers, &mut out, &mut changed_dirs)?;
    Ok(out)
}

fn walk_changes(
    dir: &Path,
    rel: &str,
    lowers: &[PathBuf],
    out: &mut Vec<Change>,
    changed_dirs: &mut BTreeSet<String>,
) -> Result<()> {
    for name in sorted_entries(dir)? {
        let path = dir.join(&name);
        let abs = join_abs(rel, &name);
        let m = fs::symlink_metadata(&path).map_err(io_err("stat", &path))?;
        let deleted = is_whiteout(&m) || (m.is_dir() && is_opaque(&path));
        let mut skip = false;
        let kind = if deleted {
            ChangeKind::Deleted
        } else {
            let mut kind = ChangeKind::Added;
            for l in lowers {
                let lp = l.join(abs.trim_start_matches('/'));
                if let Ok(lm) = fs::symlink_metadata(&lp) {
                    if is_whiteout(&lm) {
                        break; // hidden from here down: the path is new
                    }
                    if lm.is_dir()
                        && m.is_dir()
                        && lm.size() == m.size()
                        && lm.mode() == m.mode()
                        && lm.mtime() == m.mtime()
                        && lm.mtime_nsec() == m.mtime_nsec()
                    {
                        skip = true;
                    }
                    kind = ChangeKind::Modified;
                    break;
                }
            }
            kind
        };
        if !skip {
            if m.is_dir() {
                changed_dirs.insert(abs.clone());
            }
            if matches!(kind, ChangeKind::Added | ChangeKind::Deleted)
                && rel != "/"
                && changed_dirs.insert(rel.to_string())
            {
                out.push(Change {
                    path: rel.to_string(),
                    kind: ChangeKind::Modified,
                });
            }
            out.push(Change {
                path: abs.clone(),
                kind,
            });
        }
        if m.is_dir() {
            walk_changes(&path, &abs, lowers, out, changed_dirs)?;
        }
    }
    Ok(())
}

/// The extended attributes of `path` (not following symlinks), names sorted, without
/// overlayfs' own `trusted.overlay.*`.
fn xattrs(path: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut names = vec![0u8; 4096];
    let n = match rustix::fs::llistxattr(path, &mut names) {
        Ok(n) => n,
        Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
        Err(rustix::io::Errno::RANGE) => {
            names = vec![0u8; 65536];
            rustix::fs::llistxattr(path, &mut names)
                .map_err(|e| RuntimeError::io("list xattrs", path, e.into()))?
        }
        Err(e) => return Err(RuntimeError::io("list xattrs", path, e.into())),
    };
    let mut out = Vec::new();
    for raw in names[..n].split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let name = String::from_utf8_lossy(raw).into_owned();
        if name.starts_with("trusted.overlay.") {
            continue;
        }
        let mut val = vec![0u8; 65536];
        match rustix::fs::lgetxattr(path, raw, &mut val) {
            Ok(len) => {
                val.truncate(len);
                out.push((name, val));
            }
            Err(rustix::io::Errno::NODATA) => {}
            Err(e) => return Err(RuntimeError::io("read xattr", path, e.into())),
        }
    }
    out.sort();
    Ok(out)
}

/// A PAX extended header record: `"<len> <key>=<value>\n"`, len counting itself.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

/// How [`TarWriter`] names and converts entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavor {
    /// Overlay whiteouts and opaque dirs become `.wh.` entries (image layers).
    Layer,
    /// Files are written as they are (export, cp of a merged rootfs).
    Plain,
}

/// Writes a directory tree as a deterministic tar stream.
struct TarWriter<W: Write> {
    tar: tar::Builder<W>,
    flavor: Flavor,
    /// (dev, ino) of regular files with several links -> first name written.
    links: HashMap<(u64, u64), String>,
}

impl<W: Write> TarWriter<W> {
    fn header(&self, m: &Metadata) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_mode(m.mode() & 0o7777);
        h.set_uid(u64::from(m.uid()));
        h.set_gid(u64::from(m.gid()));
        h.set_mtime(u64::try_from(m.mtime()).unwrap_or(0));
        h.set_size(0);
        h
    }

    fn pax(&mut self, name: &str, records: &[(String, Vec<u8>)]) -> io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut data = Vec::new();
        for (k, v) in records {
            data.extend(pax_record(&format!("SCHILY.xattr.{k}"), v));
        }
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        let short: String = format!("PaxHeaders.0/{}", name.trim_end_matches('/'))
            .chars()
            .take(99)
            .collect();
        h.set_path(&short)?;
        h.set_cksum();
        self.tar.append(&h, data.as_slice())
    }

    /// Writes the entry `name` (relative, `/`-separated, dirs without trailing slash) for
    /// the file at `path` with metadata `m`.
    fn entry(&mut self, name: &str, path: &Path, m: &Metadata) -> Result<()> {
        let werr = |e: io::Error| RuntimeError::io("write tar", path, e);
        let ft = m.file_type();
        if self.flavor == Flavor::Layer && is_whiteout(m) {
            let (dir, file) = match name.rsplit_once('/') {
                Some((d, f)) => (format!("{d}/"), f),
                None => (String::new(), name),
            };
            let mut h = self.header(m);
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o600);
            h.set_size(0);
            let wname = format!("{dir}{WHITEOUT_PREFIX}{file}");
            return self
                .tar
                .append_data(&mut h, &wname, io::empty())
                .map_err(werr);
        }
        let x = xattrs(path)?;
        let mut h = self.header(m);
        if ft.is_dir() {
            h.set_entry_type(tar::EntryType::Directory);
            let dname = format!("{name}/");
            self.pax(&dname, &x).map_err(werr)?;
            self.tar
                .append_data(&mut h, &dname, io::empty())
                .map_err(werr)?;
            if self.flavor == Flavor::Layer && is_opaque(path) {
                let mut o = self.header(m);
                o.set_entry_type(tar::EntryType::Regular);
                o.set_mode(m.mode() & 0o777);
                self.tar
                    .append_data(&mut o, format!("{name}/{OPAQUE_MARKER}"), io::empty())
                    .map_err(werr)?;
            }
            return Ok(());
        }
        if ft.is_symlink() {
            let target = fs::read_link(path).map_err(io_err("read link", path))?;
            h.set_entry_type(tar::EntryType::Symlink);
            self.pax(name, &x).map_err(werr)?;
            return self.tar.append_link(&mut h, name, target).map_err(werr);
        }
        if ft.is_file() {
            if m.nlink() > 1 {
                let key = (m.dev(), m.ino());
                if let Some(first) = self.links.get(&key).cloned() {
                    h.set_entry_type(tar::EntryType::Link);
                    return self.tar.append_link(&mut h, name, first).map_err(werr);
                }
                self.links.insert(key, name.to_string());
            }
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(m.len());
            self.pax(name, &x).map_err(werr)?;
            let f = fs::File::open(path).map_err(io_err("open", path))?;
            // A file that changes size while read would corrupt the stream: read exactly
            // the size the header says (zero-padded if it shrank).
            let mut data = f.take(m.len()).chain(io::repeat(0)).take(m.len());
            return self.tar.append_data(&mut h, name, &mut data).map_err(werr);
        }
        let (kind, dev) = if ft.is_char_device() {
            (tar::EntryType::Char, true)
        } else if ft.is_block_device() {
            (tar::EntryType::Block, true)
        } else if ft.is_fifo() {
            (tar::EntryType::Fifo, false)
        } else {
            return Ok(()); // sockets are not archived (Docker skips them too)
        };
        h.set_entry_type(kind);
        if dev {
            let rdev = m.rdev();
            h.set_device_major(libc::major(rdev)).map_err(werr)?;
            h.set_device_minor(libc::minor(rdev)).map_err(werr)?;
        }
        self.pax(name, &x).map_err(werr)?;
        self.tar
            .append_data(&mut h, name, io::empty())
            .map_err(werr)
    }

    fn walk(&mut self, dir: &Path, prefix: &str) -> Result<()> {
        for n in sorted_entries(dir)? {
            let path = dir.join(&n);
            let name = if prefix.is_empty() {
                String::from_utf8_lossy(n.as_bytes()).into_owned()
            } else {
                format!("{prefix}/{}", String::from_utf8_lossy(n.as_bytes()))
            };
            let m = match fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // removed meanwhile
                Err(e) => return Err(RuntimeError::io("stat", &path, e)),
            };
            self.entry(&name, &path, &m)?;
            if m.is_dir() {
                self.walk(&path, &name)?;
            }
        }
        Ok(())
    }
}

/// Counts and hashes what goes through it.
struct HashingWriter<W> {
    inner: W,
    hash: Sha256,
    size: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes the OCI layer tar (uncompressed) of an overlay upper dir: whiteout char devices
/// (0/0) become `.wh.<name>`, opaque dirs get `.wh..wh..opq`; entries sorted by path;
/// uid/gid/mode/mtime/xattrs kept, no atime/ctime, so the same upper gives the same bytes
/// (the same diff_id). Returns the diff_id (sha256 of the bytes written) and the size.
///
/// Format: GNU tar headers (long names as GNU long-name entries), extended attributes as
/// PAX `SCHILY.xattr.*` records (overlayfs' `trusted.overlay.*` left out), directories
/// named with a trailing `/`, hardlinked files written once and then as links, sockets
/// skipped. `lowers` (top first) are not read: overlayfs' upper dir records deletions
/// itself (whiteouts, opaque dirs); the parameter keeps the signature of [`changes`].
pub fn write_layer_tar(upper: &Path, lowers: &[PathBuf], out: impl Write) -> Result<(String, u64)> {
    let _ = lowers;
    let hw = HashingWriter {
        inner: out,
        hash: Sha256::new(),
        size: 0,
    };
    let mut w = TarWriter {
        tar: tar::Builder::new(hw),
        flavor: Flavor::Layer,
        links: HashMap::new(),
    };
    w.walk(upper, "")?;
    let mut hw = w
        .tar
        .into_inner()
        .map_err(|e| RuntimeError::io("write tar", upper, e))?;
    hw.flush()
        .map_err(|e| RuntimeError::io("write tar", upper, e))?;
    Ok((
        format!("sha256:{}", hex::encode(hw.hash.finalize())),
        hw.size,
    ))
}

/// Writes the tree at `root` as a plain tar (no whiteout conversion): the entry for `root`
/// itself is named `name` (skipped if `name` is empty, as `docker export` does), its
/// contents `name/...`. A non-directory `root` gives one entry. Returns the bytes written.
pub fn write_tree_tar(root: &Path, name: &str, out: impl Write) -> Result<u64> {
    let hw = HashingWriter {
        inner: out,
        hash: Sha256::new(),
        size: 0,
    };
    let mut w = TarWriter {
        tar: tar::Builder::new(hw),
        flavor: Flavor::Plain,
        links: HashMap::new(),
    };
    let m = fs::symlink_metadata(root).map_err(io_err("stat", root))?;
    if !name.is_empty() {
        w.entry(name, root, &m)?;
    }
    if m.is_dir() {
        w.walk(root, name)?;
    }
    let mut hw = w
        .tar
        .into_inner()
        .map_err(|e| RuntimeError::io("write tar", root, e))?;
    hw.flush()
        .map_err(|e| RuntimeError::io("write tar", root, e))?;
    Ok(hw.size)
}

/// Bytes used by the files below `dir` (regular file and symlink sizes, each inode once),
/// as Docker's `SizeRw` counts an upper dir (moby `pkg/directory.Size`).
pub fn dir_size(dir: &Path) -> Result<u64> {
    let mut seen = std::collections::HashSet::new();
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let rd = match fs::read_dir(&d) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(RuntimeError::io("read dir", &d, e)),
        };
        for e in rd {
            let e = e.map_err(io_err("read dir", &d))?;
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
                continue;
            }
            if m.nlink() > 1 && !seen.insert((m.dev(), m.ino())) {
                continue;
            }
            total += m.size();
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mkwhiteout(p: &Path) {
        nix::sys::stat::mknod(
            p,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
            0,
        )
        .unwrap();
    }

    fn set_mtime(p: &Path, secs: i64) {
        let t = rustix::fs::Timespec {
            tv_sec: secs,
            tv_nsec: 0,
        };
        rustix::fs::utimensat(
            rustix::fs::CWD,
            p,
            &rustix::fs::Timestamps {
                last_access: t,
                last_modification: t,
            },
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .unwrap();
    }

    /// lower: etc/passwd, bin/ls, opt/a, usr/ ; upper: modified passwd, new tmp/new,
    /// whiteout bin/ls, opaque opt, copied-up unchanged usr/.
    fn fixture() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let lower = tmp.path().join("lower");
        let upper = tmp.path().join("upper");
        for d in ["etc", "bin", "opt", "usr", "tmp"] {
            fs::create_dir_all(lower.join(d)).unwrap();
        }
        fs::write(lower.join("etc/passwd"), "root").unwrap();
        fs::write(lower.join("bin/ls"), "ls").unwrap();
        fs::write(lower.join("opt/a"), "a").unwrap();
        for d in ["etc", "bin", "opt", "usr", "tmp"] {
            fs::create_dir_all(upper.join(d)).unwrap();
        }
        fs::write(upper.join("etc/passwd"), "root2").unwrap();
        fs::write(upper.join("tmp/new"), "n").unwrap();
        mkwhiteout(&upper.join("bin/ls"));
        rustix::fs::lsetxattr(
            upper.join("opt"),
            OVERLAY_OPAQUE_XATTR,
            b"y",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        for d in ["etc", "bin", "opt", "usr", "tmp"] {
            set_mtime(&lower.join(d), 1000);
            set_mtime(&upper.join(d), 1000);
        }
        set_mtime(&upper.join("tmp"), 2000);
        (tmp, upper, lower)
    }

    #[test]
    fn changes_follow_dockers_rules() {
        let (_tmp, upper, lower) = fixture();
        let got: Vec<String> = changes(&upper, &[lower])
            .unwrap()
            .iter()
            .map(|c| format!("{} {}", c.kind.letter(), c.path))
            .collect();
        assert_eq!(
            got,
            [
                "C /bin",
                "D /bin/ls",
                "C /etc/passwd",
                "D /opt",
                "C /tmp",
                "A /tmp/new"
            ]
        );
    }

    #[test]
    fn layer_tar_converts_whiteouts_and_is_deterministic() {
        let (_tmp, upper, lower) = fixture();
        let mut a = Vec::new();
        let (id_a, size_a) = write_layer_tar(&upper, std::slice::from_ref(&lower), &mut a).unwrap();
        let mut b = Vec::new();
        let (id_b, _) = write_layer_tar(&upper, &[lower], &mut b).unwrap();
        assert_eq!(a, b);
        assert_eq!(id_a, id_b);
        assert_eq!(size_a, a.len() as u64);
        assert_eq!(id_a, format!("sha256:{}", hex::encode(Sha256::digest(&a))));
        let mut names = Vec::new();
        for e in tar::Archive::new(a.as_slice()).entries().unwrap() {
            let e = e.unwrap();
            names.push(e.path().unwrap().display().to_string());
        }
        assert_eq!(
            names,
            [
                "bin/",
                "bin/.wh.ls",
                "etc/",
                "etc/passwd",
                "opt/",
                "opt/.wh..wh..opq",
                "tmp/",
                "tmp/new",
                "usr/"
            ]
        );
        // and the runtime's own unpacker turns it back into the same upper
        let tmp2 = tempfile::tempdir().unwrap();
        crate::unpack::unpack_layer(a.as_slice(), tmp2.path()).unwrap();
        let m = fs::symlink_metadata(tmp2.path().join("bin/ls")).unwrap();
        assert!(is_whiteout(&m));
        assert!(is_opaque(&tmp2.path().join("opt")));
        assert_eq!(fs::read(tmp2.path().join("etc/passwd")).unwrap(), b"root2");
    }

    #[test]
    fn pax_record_length_counts_itself() {
        let r = pax_record("a", b"b");
        assert_eq!(r, b"6 a=b\n");
        let r = pax_record("SCHILY.xattr.user.x", &[b'v'; 90]);
        let s = String::from_utf8(r.clone()).unwrap();
        let n: usize = s.split(' ').next().unwrap().parse().unwrap();
        assert_eq!(n, r.len());
    }

    #[test]
    fn dir_size_counts_hardlinks_once() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("a"), [0u8; 100]).unwrap();
        fs::hard_link(tmp.path().join("a"), tmp.path().join("b")).unwrap();
        fs::create_dir(tmp.path().join("d")).unwrap();
        fs::write(tmp.path().join("d/c"), [0u8; 10]).unwrap();
        assert_eq!(dir_size(tmp.path()).unwrap(), 110);
    }
}
