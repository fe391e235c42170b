//! Applying one image layer (an uncompressed tar stream) to an empty directory.
//!
//! Owns: turning a layer tar into the on-disk form an overlayfs lower directory needs —
//! whiteout files (`.wh.NAME`) become overlayfs whiteouts (character device 0/0), opaque
//! markers (`.wh..wh..opq`) become the `trusted.overlay.opaque=y` xattr on their directory;
//! regular files, directories, symlinks, hardlinks, device nodes and FIFOs keep their mode,
//! numeric ownership, mtime and (PAX `SCHILY.xattr.*`) extended attributes.
//!
//! Does not own: decompression and digest checks (the image pull does that before the
//! stream gets here), snapshot bookkeeping (the caller unpacks into a temporary directory
//! and renames it into place only when [`unpack_layer`] returns `Ok`; on `Err` the caller
//! removes that directory, so a rejected layer never becomes a snapshot).
//!
//! Safety against hostile layers: every path is resolved component by component from a
//! file descriptor of `dest` with `O_NOFOLLOW`, and every change is made with `*at` system
//! calls relative to the already-resolved parent directory. Paths that are absolute or
//! contain `..` are rejected; so is any path (or hardlink target) that would pass through
//! a symlink. Symlinks themselves may point anywhere: they are created, never followed.
//!
//! ```text
//!  tar entry "a/b/c" --normalise--> [a, b, c] --openat(NOFOLLOW) a, b--> parent fd
//!                                                  |  (symlink / ".." / "/x" => error)
//!                                                  v
//!                                    mkdirat / openat(O_EXCL) / symlinkat / linkat /
//!                                    mknodat relative to the parent fd
//! ```

use std::cell::Cell;
use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps, XattrFlags};

/// Name prefix of an AUFS-style whiteout file in a layer tar.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// Name of the opaque-directory marker in a layer tar.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// The xattr overlayfs reads to treat a directory as opaque.
pub const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// What one [`unpack_layer`] call wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnpackStats {
    /// Tar entries applied (including whiteouts and the root entry).
    pub entries: u64,
    /// Bytes of regular-file content written.
    pub file_bytes: u64,
    /// Whiteouts created (files removed by this layer).
    pub whiteouts: u64,
    /// Directories marked opaque.
    pub opaque_dirs: u64,
}

/// Why a layer path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnsafePathReason {
    /// The path starts with `/`.
    Absolute,
    /// The path has a `..` component.
    ParentDir,
    /// A leading component of the path is a symlink (the write would go through it).
    ThroughSymlink,
    /// A leading component of the path exists and is not a directory.
    NotADirectory,
    /// A whiteout names nothing (`.wh.`) or `.`/`..`.
    BadWhiteout,
}

impl std::fmt::Display for UnsafePathReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            UnsafePathReason::Absolute => "absolute path",
            UnsafePathReason::ParentDir => "path contains '..'",
            UnsafePathReason::ThroughSymlink => "path passes through a symlink",
            UnsafePathReason::NotADirectory => "path passes through a non-directory",
            UnsafePathReason::BadWhiteout => "whiteout names no file",
        })
    }
}

/// Errors of [`unpack_layer`]. Every variant is fatal for the layer: the caller discards
/// the destination directory.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// Reading the tar stream failed (truncated or corrupt archive, or the producer of the
    /// stream — e.g. a download — failed).
    #[error("read layer tar: {source}")]
    Read {
        #[source]
        source: io::Error,
    },
    /// An entry's path would escape the destination or write through a symlink.
    #[error("unsafe path {path:?} in layer: {reason}")]
    UnsafePath {
        path: PathBuf,
        reason: UnsafePathReason,
    },
    /// A hardlink whose target is outside the layer, through a symlink, or missing.
    #[error("unsafe hardlink {path:?} -> {target:?}: {reason}")]
    UnsafeHardlink {
        path: PathBuf,
        target: PathBuf,
        reason: UnsafePathReason,
    },
    /// The hardlink target does not exist in this layer.
    #[error("hardlink {path:?} -> {target:?}: target not in layer")]
    MissingHardlinkTarget { path: PathBuf, target: PathBuf },
    /// An entry type this applier does not support.
    #[error("unsupported tar entry type {kind:#04x} at {path:?}")]
    UnsupportedEntry { path: PathBuf, kind: u8 },
    /// A filesystem operation failed.
    #[error("{op} {path:?}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(rustix::io::Errno) -> UnpackError + 'a {
    move |e| UnpackError::Io {
        op,
        path: path.to_path_buf(),
        source: e.into(),
    }
}

/// Applies the layer tar read from `reader` to `dest`, an existing (normally empty)
/// directory. Blocking; call it from a blocking thread.
///
/// On error, `dest` may hold part of the layer: the caller removes it. Nothing outside
/// `dest` is ever created, modified or removed.
pub fn unpack_layer(reader: impl Read, dest: &Path) -> Result<UnpackStats, UnpackError> {
    let root = rustix::fs::open(
        dest,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(io_err("open destination", dest))?;
    let mut applier = Applier {
        root,
        stats: UnpackStats::default(),
        dir_times: Vec::new(),
    };
    let data_end = Cell::new(0);
    let mut archive = tar::Archive::new(UnpaddedTail::new(reader, &data_end));
    let entries = archive
        .entries()
        .map_err(|source| UnpackError::Read { source })?;
    for entry in entries {
        let mut entry = entry.map_err(|source| UnpackError::Read { source })?;
        data_end.set(entry_data_end(&entry).map_err(|source| UnpackError::Read { source })?);
        applier.apply(&mut entry)?;
    }
    applier.finish()?;
    Ok(applier.stats)
}

/// Size of a tar block: headers are one block, entry data is padded to whole blocks.
const TAR_BLOCK: u64 = 512;

/// Offset in the tar stream just past `entry`'s stored data (before its padding).
fn entry_data_end<R: Read>(entry: &tar::Entry<'_, R>) -> io::Result<u64> {
    // A GNU sparse entry's `size()` is the expanded size; what is stored is the header's.
    let stored = if entry.header().entry_type() == tar::EntryType::GNUSparse {
        entry.header().entry_size()?
    } else {
        entry.size()
    };
    entry
        .raw_file_position()
        .checked_add(stored)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "tar entry size overflow"))
}

/// A tar stream reader that accepts an archive ending right after the last entry's data,
/// as Go's `archive/tar` (dockerd, containerd) does: when the inner stream ends past the
/// current entry's data (`data_end`, set by the caller for every entry) but inside a
/// 512-byte block, it reads as zeros up to the block's end and then as end of stream. The
/// `tar` crate then finds the padding it skips and a clean end where the next header or
/// the end-of-archive blocks would be.
///
/// A stream that ends anywhere else (inside an entry's data, inside a header, inside an
/// extension header's data) still ends there, so the `tar` crate reports it as truncated:
/// only the last entry's padding and the end-of-archive marker may be missing, never
/// content.
struct UnpaddedTail<'a, R> {
    inner: R,
    /// Bytes handed out so far (inner bytes plus padding zeros).
    pos: u64,
    /// Offset just past the data of the entry being read, shared with the entries loop.
    data_end: &'a Cell<u64>,
    /// The inner stream has ended.
    inner_done: bool,
}

impl<'a, R: Read> UnpaddedTail<'a, R> {
    fn new(inner: R, data_end: &'a Cell<u64>) -> Self {
        UnpaddedTail {
            inner,
            pos: 0,
            data_end,
            inner_done: false,
        }
    }
}

impl<R: Read> Read for UnpaddedTail<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if !self.inner_done {
            let n = self.inner.read(buf)?;
            if n > 0 {
                self.pos += n as u64;
                return Ok(n);
            }
            self.inner_done = true;
        }
        // Only the padding of the current entry may be missing: the bytes from the end of
        // its data up to the next block boundary.
        let data_end = self.data_end.get();
        let pad_end = data_end.div_ceil(TAR_BLOCK) * TAR_BLOCK;
        if self.pos < data_end || self.pos >= pad_end {
            return Ok(0);
        }
        let fill = (pad_end - self.pos).min(buf.len() as u64) as usize;
        buf[..fill].fill(0);
        self.pos += fill as u64;
        Ok(fill)
    }
}

/// A layer path split into normal components (no empty, `.` or `..` parts).
fn normalise(raw: &[u8]) -> Result<Vec<OsString>, UnsafePathReason> {
    if raw.first() == Some(&b'/') {
        return Err(UnsafePathReason::Absolute);
    }
    let mut out = Vec::new();
    for comp in raw.split(|b| *b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => return Err(UnsafePathReason::ParentDir),
            c => out.push(OsStr::from_bytes(c).to_os_string()),
        }
    }
    Ok(out)
}

struct Applier {
    root: OwnedFd,
    stats: UnpackStats,
    /// Directory mtimes, applied after every entry (creating children changes them).
    dir_times: Vec<(Vec<OsString>, Timestamps)>,
}

fn timestamps(mtime: u64) -> Timestamps {
    let t = Timespec {
        tv_sec: mtime.min(i64::MAX as u64) as i64,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// `/proc/self/fd/<dirfd>/<name>`: a path naming `name` inside an open directory, for the
/// few calls (`lsetxattr`) that have no `*at` form. The directory part is the magic link
/// of an fd we resolved safely; the final component is never followed by `l*` calls.
fn proc_path(dir: &OwnedFd, name: &OsStr) -> PathBuf {
    let mut p = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    p.push(name);
    p
}

impl Applier {
    /// Opens the directory `comps` (relative to dest) without following symlinks; missing
    /// directories are created (mode 0755) when `create` is set.
    fn open_dir(
        &self,
        comps: &[OsString],
        create: bool,
        shown: &Path,
    ) -> Result<OwnedFd, Result<UnsafePathReason, UnpackError>> {
        let mut fd = rustix::fs::openat(
            &self.root,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Err(io_err("open", shown)(e)))?;
        for comp in comps {
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let next = match rustix::fs::openat(&fd, comp.as_os_str(), flags, Mode::empty()) {
                Ok(next) => next,
                Err(rustix::io::Errno::NOENT) if create => {
                    match rustix::fs::mkdirat(&fd, comp.as_os_str(), Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                        Err(e) => return Err(Err(io_err("mkdir", shown)(e))),
                    }
                    rustix::fs::openat(&fd, comp.as_os_str(), flags, Mode::empty())
                        .map_err(|e| Err(io_err("open", shown)(e)))?
                }
                Err(rustix::io::Errno::LOOP) | Err(rustix::io::Errno::NOTDIR) => {
                    let st = rustix::fs::statat(&fd, comp.as_os_str(), AtFlags::SYMLINK_NOFOLLOW)
                        .map_err(|e| Err(io_err("stat", shown)(e)))?;
                    let kind = FileType::from_raw_mode(st.st_mode);
                    return Err(Ok(if kind == FileType::Symlink {
                        UnsafePathReason::ThroughSymlink
                    } else {
                        UnsafePathReason::NotADirectory
                    }));
                }
                Err(e) => return Err(Err(io_err("open", shown)(e))),
            };
            fd = next;
        }
        Ok(fd)
    }

    fn parent_of(&self, comps: &[OsString], shown: &Path) -> Result<OwnedFd, UnpackError> {
        self.open_dir(&comps[..comps.len() - 1], true, shown)
            .map_err(|e| match e {
                Ok(reason) => UnpackError::UnsafePath {
                    path: shown.to_path_buf(),
                    reason,
                },
                Err(e) => e,
            })
    }

    /// Removes whatever is at `name` in `parent` (a file, symlink, node or a whole tree),
    /// unless it is a directory and `keep_dir` is set. Returns whether a directory was kept.
    fn clear(
        &self,
        parent: &OwnedFd,
        name: &OsStr,
        keep_dir: bool,
        shown: &Path,
    ) -> Result<bool, UnpackError> {
        let st = match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(rustix::io::Errno::NOENT) => return Ok(false),
            Err(e) => return Err(io_err("stat", shown)(e)),
        };
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
            if keep_dir {
                return Ok(true);
            }
            // remove_dir_all opens every level with O_NOFOLLOW; the final component was
            // just seen to be a real directory inside a directory we resolved safely.
            std::fs::remove_dir_all(proc_path(parent, name)).map_err(|source| UnpackError::Io {
                op: "remove directory",
                path: shown.to_path_buf(),
                source,
            })?;
        } else {
            rustix::fs::unlinkat(parent, name, AtFlags::empty())
                .map_err(io_err("remove", shown))?;
        }
        Ok(false)
    }

    fn apply<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), UnpackError> {
        let raw = entry.path_bytes().into_owned();
        let shown = PathBuf::from(OsStr::from_bytes(&raw));
        let comps = normalise(&raw).map_err(|reason| UnpackError::UnsafePath {
            path: shown.clone(),
            reason,
        })?;
        let header = entry.header().clone();
        let kind = header.entry_type();
        let mode = header
            .mode()
            .map_err(|source| UnpackError::Read { source })?
            & 0o7777;
        let uid = header
            .uid()
            .map_err(|source| UnpackError::Read { source })?;
        let gid = header
            .gid()
            .map_err(|source| UnpackError::Read { source })?;
        let mtime = header
            .mtime()
            .map_err(|source| UnpackError::Read { source })?;
        let xattrs = pax_xattrs(entry)?;
        let owner = Some(rustix::fs::Uid::from_raw(uid as u32));
        let group = Some(rustix::fs::Gid::from_raw(gid as u32));
        self.stats.entries += 1;

        if comps.is_empty() {
            // The root entry ("./"): its metadata applies to dest itself.
            if !kind.is_dir() {
                return Err(UnpackError::UnsupportedEntry {
                    path: shown,
                    kind: kind.as_byte(),
                });
            }
            rustix::fs::fchown(&self.root, owner, group).map_err(io_err("chown", &shown))?;
            rustix::fs::fchmod(&self.root, Mode::from_raw_mode(mode))
                .map_err(io_err("chmod", &shown))?;
            for (k, v) in &xattrs {
                rustix::fs::fsetxattr(&self.root, k.as_os_str(), v, XattrFlags::empty())
                    .map_err(io_err("set xattr", &shown))?;
            }
            self.dir_times.push((Vec::new(), timestamps(mtime)));
            return Ok(());
        }

        let name = comps[comps.len() - 1].clone();
        let name_bytes = name.as_bytes();
        if name_bytes.starts_with(WHITEOUT_PREFIX.as_bytes()) {
            let parent = self.parent_of(&comps, &shown)?;
            if name_bytes == OPAQUE_MARKER.as_bytes() {
                rustix::fs::fsetxattr(&parent, OVERLAY_OPAQUE_XATTR, b"y", XattrFlags::empty())
                    .map_err(io_err("set opaque xattr", &shown))?;
                self.stats.opaque_dirs += 1;
                return Ok(());
            }
            let target = OsStr::from_bytes(&name_bytes[WHITEOUT_PREFIX.len()..]);
            if target.is_empty() || target == "." || target == ".." {
                return Err(UnpackError::UnsafePath {
                    path: shown,
                    reason: UnsafePathReason::BadWhiteout,
                });
            }
            self.clear(&parent, target, false, &shown)?;
            rustix::fs::mknodat(
                &parent,
                target,
                FileType::CharacterDevice,
                Mode::empty(),
                rustix::fs::makedev(0, 0),
            )
            .map_err(io_err("create whiteout", &shown))?;
            self.stats.whiteouts += 1;
            return Ok(());
        }

        let parent = self.parent_of(&comps, &shown)?;
        let perm = Mode::from_raw_mode(mode);
        match kind {
            tar::EntryType::Directory => {
                let kept = self.clear(&parent, &name, true, &shown)?;
                if !kept {
                    rustix::fs::mkdirat(&parent, name.as_os_str(), Mode::from_raw_mode(0o700))
                        .map_err(io_err("mkdir", &shown))?;
                }
                let dir = rustix::fs::openat(
                    &parent,
                    name.as_os_str(),
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(io_err("open directory", &shown))?;
                rustix::fs::fchown(&dir, owner, group).map_err(io_err("chown", &shown))?;
                rustix::fs::fchmod(&dir, perm).map_err(io_err("chmod", &shown))?;
                for (k, v) in &xattrs {
                    rustix::fs::fsetxattr(&dir, k.as_os_str(), v, XattrFlags::empty())
                        .map_err(io_err("set xattr", &shown))?;
                }
                self.dir_times.push((comps, timestamps(mtime)));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                self.clear(&parent, &name, false, &shown)?;
                let fd = rustix::fs::openat(
                    &parent,
                    name.as_os_str(),
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(io_err("create file", &shown))?;
                let mut file = std::fs::File::from(fd);
                let mut buf = vec![0u8; 256 * 1024];
                let mut written = 0u64;
                loop {
                    let n = match entry.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(source) => return Err(UnpackError::Read { source }),
                    };
                    file.write_all(&buf[..n])
                        .map_err(|source| UnpackError::Io {
                            op: "write file",
                            path: shown.clone(),
                            source,
                        })?;
                    self.stats.file_bytes += n as u64;
                    written += n as u64;
                }
                if kind != tar::EntryType::GNUSparse && written != entry.size() {
                    return Err(UnpackError::Read {
                        source: io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!(
                                "{shown:?}: layer ends after {written} of {} bytes",
                                entry.size()
                            ),
                        ),
                    });
                }
                rustix::fs::fchown(&file, owner, group).map_err(io_err("chown", &shown))?;
                rustix::fs::fchmod(&file, perm).map_err(io_err("chmod", &shown))?;
                for (k, v) in &xattrs {
                    rustix::fs::fsetxattr(&file, k.as_os_str(), v, XattrFlags::empty())
                        .map_err(io_err("set xattr", &shown))?;
                }
                rustix::fs::futimens(&file, &timestamps(mtime))
                    .map_err(io_err("set times", &shown))?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                self.clear(&parent, &name, false, &shown)?;
                rustix::fs::symlinkat(OsStr::from_bytes(&target), &parent, name.as_os_str())
                    .map_err(io_err("symlink", &shown))?;
                self.finish_node(&parent, &name, owner, group, None, &xattrs, mtime, &shown)?;
            }
            tar::EntryType::Link => {
                let raw_target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                let target_shown = PathBuf::from(OsStr::from_bytes(&raw_target));
                let bad = |reason| UnpackError::UnsafeHardlink {
                    path: shown.clone(),
                    target: target_shown.clone(),
                    reason,
                };
                let tcomps = normalise(&raw_target).map_err(bad)?;
                if tcomps.is_empty() {
                    return Err(UnpackError::MissingHardlinkTarget {
                        path: shown.clone(),
                        target: target_shown,
                    });
                }
                let tparent = self
                    .open_dir(&tcomps[..tcomps.len() - 1], false, &target_shown)
                    .map_err(|e| match e {
                        Ok(reason) => bad(reason),
                        Err(UnpackError::Io { source, .. })
                            if source.kind() == io::ErrorKind::NotFound =>
                        {
                            UnpackError::MissingHardlinkTarget {
                                path: shown.clone(),
                                target: target_shown.clone(),
                            }
                        }
                        Err(e) => e,
                    })?;
                let tname = &tcomps[tcomps.len() - 1];
                if rustix::fs::statat(&tparent, tname.as_os_str(), AtFlags::SYMLINK_NOFOLLOW)
                    .is_err()
                {
                    return Err(UnpackError::MissingHardlinkTarget {
                        path: shown.clone(),
                        target: target_shown,
                    });
                }
                if tcomps == comps {
                    // A link to itself: nothing to do.
                    return Ok(());
                }
                self.clear(&parent, &name, false, &shown)?;
                // Flags empty: a symlink target is linked itself, never followed.
                rustix::fs::linkat(
                    &tparent,
                    tname.as_os_str(),
                    &parent,
                    name.as_os_str(),
                    AtFlags::empty(),
                )
                .map_err(io_err("hardlink", &shown))?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                // FIFOs carry no device numbers (some writers leave the fields empty).
                let (major, minor) = if kind == tar::EntryType::Fifo {
                    (0, 0)
                } else {
                    let num = |r: io::Result<Option<u32>>| {
                        r.map(|v| v.unwrap_or(0))
                            .map_err(|source| UnpackError::Read { source })
                    };
                    (num(header.device_major())?, num(header.device_minor())?)
                };
                let ft = match kind {
                    tar::EntryType::Char => FileType::CharacterDevice,
                    tar::EntryType::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                self.clear(&parent, &name, false, &shown)?;
                rustix::fs::mknodat(
                    &parent,
                    name.as_os_str(),
                    ft,
                    Mode::from_raw_mode(0o600),
                    rustix::fs::makedev(major, minor),
                )
                .map_err(io_err("mknod", &shown))?;
                self.finish_node(
                    &parent,
                    &name,
                    owner,
                    group,
                    Some(perm),
                    &xattrs,
                    mtime,
                    &shown,
                )?;
            }
            other => {
                return Err(UnpackError::UnsupportedEntry {
                    path: shown,
                    kind: other.as_byte(),
                })
            }
        }
        Ok(())
    }

    /// Ownership, mode (not for symlinks), xattrs and mtime of a node we just created at
    /// `parent/name` (a symlink, device or FIFO), without following it.
    #[allow(clippy::too_many_arguments)]
    fn finish_node(
        &self,
        parent: &OwnedFd,
        name: &OsStr,
        owner: Option<rustix::fs::Uid>,
        group: Option<rustix::fs::Gid>,
        perm: Option<Mode>,
        xattrs: &[(OsString, Vec<u8>)],
        mtime: u64,
        shown: &Path,
    ) -> Result<(), UnpackError> {
        rustix::fs::chownat(parent, name, owner, group, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(io_err("chown", shown))?;
        if let Some(perm) = perm {
            // `name` was just created by us as a device/FIFO (not a symlink) in a
            // directory only this applier writes, so following is not possible here.
            rustix::fs::chmodat(parent, name, perm, AtFlags::empty())
                .map_err(io_err("chmod", shown))?;
        }
        if !xattrs.is_empty() {
            let p = proc_path(parent, name);
            for (k, v) in xattrs {
                rustix::fs::lsetxattr(&p, k.as_os_str(), v, XattrFlags::empty())
                    .map_err(io_err("set xattr", shown))?;
            }
        }
        rustix::fs::utimensat(parent, name, &timestamps(mtime), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(io_err("set times", shown))?;
        Ok(())
    }

    /// Applies the directory mtimes, deepest first.
    fn finish(&mut self) -> Result<(), UnpackError> {
        let mut times = std::mem::take(&mut self.dir_times);
        times.sort_by_key(|(c, _)| std::cmp::Reverse(c.len()));
        for (comps, ts) in times {
            let shown: PathBuf = comps.iter().collect();
            match self.open_dir(&comps, false, &shown) {
                Ok(fd) => rustix::fs::futimens(&fd, &ts).map_err(io_err("set times", &shown))?,
                // Replaced by a later entry or removed by a whiteout: nothing to stamp.
                Err(_) => continue,
            }
        }
        Ok(())
    }
}

/// The `SCHILY.xattr.NAME` PAX records of an entry, as (NAME, value).
fn pax_xattrs<R: Read>(
    entry: &mut tar::Entry<'_, R>,
) -> Result<Vec<(OsString, Vec<u8>)>, UnpackError> {
    let mut out = Vec::new();
    let Some(exts) = entry
        .pax_extensions()
        .map_err(|source| UnpackError::Read { source })?
    else {
        return Ok(out);
    };
    for ext in exts {
        let ext = ext.map_err(|source| UnpackError::Read { source })?;
        if let Some(name) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") {
            out.push((
                OsStr::from_bytes(name).to_os_string(),
                ext.value_bytes().to_vec(),
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalise_strips_dot_and_empty_components() {
        assert_eq!(
            normalise(b"./a//b/./c/").unwrap(),
            vec![OsString::from("a"), "b".into(), "c".into()]
        );
        assert!(normalise(b"./").unwrap().is_empty());
        assert_eq!(normalise(b"/etc/passwd"), Err(UnsafePathReason::Absolute));
        assert_eq!(normalise(b"a/../../b"), Err(UnsafePathReason::ParentDir));
        assert_eq!(normalise(b".."), Err(UnsafePathReason::ParentDir));
    }
}
