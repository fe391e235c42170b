//! Files inside a container's root: `docker cp` (archive GET/PUT/HEAD) and `docker export`.
//!
//! Owns: getting a directory descriptor of a container's root (a running container's is
//! `/proc/<init pid>/root`, which shows its volumes and binds as the container sees them;
//! a stopped or created container's rootfs is mounted for the call only, in a private
//! mount namespace of a dedicated thread, with its binds and volumes bound in), Docker's
//! `docker cp` path rules (moby `daemon/archive.go`, `pkg/archive/copy.go`) and the
//! extraction of a client's tar into the container.
//!
//! Safety: every path is resolved with `openat2(RESOLVE_IN_ROOT)` from the root
//! descriptor, so `..` and symlinks (absolute or relative) never lead outside the
//! container's root; files are created with `*at` calls relative to the resolved parent,
//! `O_NOFOLLOW | O_EXCL` after removing what was there, so a symlink planted at the final
//! component is replaced, never written through. A tar entry whose path climbs above the
//! extraction directory is refused (Docker's "path breakout" rule).
//! Known limit: archiving a directory of a *running* container walks it by path below the
//! resolved directory; a process in the container that swaps a subdirectory for a symlink
//! during the walk is not followed (entries are `lstat`ed), but the swap of a directory
//! between `lstat` and `readdir` is a race this walk does not close.
//!
//! ```text
//!  running:  /proc/<pid>/root --openat2(RESOLVE_IN_ROOT)--> path
//!  stopped:  thread: unshare(CLONE_FS|CLONE_NEWNS), make / private, mount overlay
//!            (own work dir) + binds at a temp dir, open it, run, exit (mounts go with it)
//! ```

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

use crate::error::{Result, RuntimeError};
use crate::runtime::Runtime;
use crate::snapshot::plan_overlay;

/// A bind or volume to show inside a stopped container's root, as the container has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraMount {
    /// Host path.
    pub source: PathBuf,
    /// Absolute path in the container.
    pub destination: String,
    pub read_only: bool,
}

/// What `X-Docker-Container-Path-Stat` carries (moby `types.ContainerPathStat`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PathStat {
    pub name: String,
    pub size: i64,
    /// Go's `os.FileMode` bits (type bits high, e.g. a directory is `1<<31 | perm`).
    pub mode: u32,
    /// RFC 3339 with nanoseconds.
    pub mtime: String,
    /// For a symlink: its target as an absolute path in the container (one level).
    #[serde(rename = "linkTarget")]
    pub link_target: String,
}

/// Errors of the `docker cp` operations that the API reports as the client's problem.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The path does not exist (404 "Could not find the file ...").
    #[error("Could not find the file {0} in container")]
    NotFound(String),
    /// PUT to a path that is not a directory (400).
    #[error("extraction point is not a directory")]
    NotADirectory,
    /// The client's tar is bad or hostile (400).
    #[error("{0}")]
    BadArchive(String),
    /// The container's rootfs is read-only at that place (403).
    #[error("container rootfs is marked read-only")]
    ReadOnly,
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

fn sys<'a>(op: &'static str, path: &'a str) -> impl FnOnce(nix::errno::Errno) -> RuntimeError + 'a {
    move |e| RuntimeError::io(op, path, io::Error::from(e))
}

/// Docker's `PreserveTrailingDotOrSeparator(filepath.Join("/", path), path)`: the cleaned
/// absolute path, with a trailing `/.` or `/` of the request kept.
pub fn container_abs_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    let mut abs = format!("/{}", parts.join("/"));
    if abs != "/" {
        if path.ends_with("/.") || path == "." {
            abs.push_str("/.");
        } else if path.ends_with('/') {
            abs.push('/');
        }
    }
    abs
}

/// Go's `os.FileMode` of a `st_mode`.
pub fn go_file_mode(st_mode: u32) -> u32 {
    let mut m = st_mode & 0o777;
    match st_mode & libc::S_IFMT {
        libc::S_IFDIR => m |= 1 << 31,
        libc::S_IFLNK => m |= 1 << 27,
        libc::S_IFIFO => m |= 1 << 25,
        libc::S_IFSOCK => m |= 1 << 24,
        libc::S_IFCHR => m |= (1 << 26) | (1 << 21),
        libc::S_IFBLK => m |= 1 << 26,
        _ => {}
    }
    if st_mode & libc::S_ISUID != 0 {
        m |= 1 << 23;
    }
    if st_mode & libc::S_ISGID != 0 {
        m |= 1 << 22;
    }
    if st_mode & libc::S_ISVTX != 0 {
        m |= 1 << 20;
    }
    m
}

/// Opens `path` (relative to the root or absolute in the container) with `RESOLVE_IN_ROOT`.
fn open_in_root(root: &File, path: &str, flags: OFlag) -> nix::Result<OwnedFd> {
    let rel = path.trim_start_matches('/');
    let rel = if rel.is_empty() { "." } else { rel };
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT);
    let fd = openat2(root.as_raw_fd(), rel, how)?;
    // SAFETY: openat2 returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Splits an absolute container path into (dir, base) as Go's `filepath.Split` does.
fn split(abs: &str) -> (&str, &str) {
    match abs.rfind('/') {
        Some(i) => (&abs[..=i], &abs[i + 1..]),
        None => ("/", abs),
    }
}

/// The resolved parent dir and the lstat of the last component (not followed), Docker's
/// `ResolvePath` + `StatPath`.
fn resolve_last(
    root: &File,
    abs: &str,
) -> std::result::Result<(OwnedFd, String, nix::sys::stat::FileStat), CopyError> {
    let (dir, base) = split(abs);
    let not_found = || CopyError::NotFound(abs.trim_end_matches("/.").to_string());
    let dfd = match open_in_root(root, dir, OFlag::O_PATH | OFlag::O_DIRECTORY) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT | nix::errno::Errno::ENOTDIR) => return Err(not_found()),
        Err(e) => return Err(sys("open", abs)(e).into()),
    };
    let base = if base.is_empty() { "." } else { base };
    let st = match nix::sys::stat::fstatat(
        Some(dfd.as_raw_fd()),
        base,
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    ) {
        Ok(st) => st,
        Err(nix::errno::Errno::ENOENT | nix::errno::Errno::ENOTDIR) => return Err(not_found()),
        Err(e) => return Err(sys("stat", abs)(e).into()),
    };
    Ok((dfd, base.to_string(), st))
}

fn rfc3339(secs: i64, nsecs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, nsecs as u32)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// `HEAD /containers/{id}/archive?path=`: the stat of `path` in the container (the last
/// component not followed). Errors: [`CopyError::NotFound`].
pub fn stat_path(root: &File, path: &str) -> std::result::Result<PathStat, CopyError> {
    let abs = container_abs_path(path);
    let (dfd, base, st) = resolve_last(root, &abs)?;
    let mut link_target = String::new();
    if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
        let t = nix::fcntl::readlinkat(Some(dfd.as_raw_fd()), base.as_str())
            .map_err(sys("readlink", &abs))?;
        let t = t.to_string_lossy();
        let (dir, _) = split(&abs);
        link_target = if t.starts_with('/') {
            container_abs_path(&t)
        } else {
            container_abs_path(&format!("{dir}{t}"))
        };
    }
    let name_src = abs.trim_end_matches('/');
    let name = if name_src.is_empty() {
        "/".to_string()
    } else {
        split(name_src).1.to_string()
    };
    Ok(PathStat {
        name,
        size: st.st_size,
        mode: go_file_mode(st.st_mode),
        mtime: rfc3339(st.st_mtime, st.st_mtime_nsec),
        link_target,
    })
}

/// `GET /containers/{id}/archive?path=`: writes `path` as a tar whose top entry is named
/// as the request's last component (`.` for a trailing `/.`), and returns its stat.
pub fn archive_path(
    root: &File,
    path: &str,
    out: impl Write,
) -> std::result::Result<PathStat, CopyError> {
    let stat = stat_path(root, path)?;
    let abs = container_abs_path(path);
    let (dfd, base, _) = resolve_last(root, &abs)?;
    let target = if base == "." {
        fd_path(&dfd)
    } else {
        fd_path(&dfd).join(&base)
    };
    let name = if abs.ends_with("/.") {
        ".".to_string()
    } else {
        stat.name.clone()
    };
    let name = if name == "/" { ".".to_string() } else { name };
    crate::changes::write_tree_tar(&target, &name, out)?;
    Ok(stat)
}

/// Options of [`extract_archive`] (the PUT query).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExtractOptions {
    /// `noOverwriteDirNonDir`: refuse to replace a directory by a non-directory or back.
    pub no_overwrite_dir_non_dir: bool,
    /// `copyUIDGID`: files get this owner instead of the tar's uid/gid.
    pub owner: Option<(u32, u32)>,
}

/// Cleans a tar entry name against the extraction dir: `None` for the dir itself, the
/// components otherwise; a path that climbs above it is a breakout.
fn entry_components(name: &str) -> std::result::Result<Option<Vec<String>>, CopyError> {
    let mut parts: Vec<String> = Vec::new();
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(CopyError::BadArchive(format!(
                        "{name:?} is outside of the extraction directory: path breakout"
                    )));
                }
            }
            c => parts.push(c.to_string()),
        }
    }
    Ok((!parts.is_empty()).then_some(parts))
}

/// `PUT /containers/{id}/archive?path=`: extracts the tar `input` into directory `path`
/// of the container (followed through symlinks, inside the root). Errors:
/// [`CopyError::NotFound`], [`CopyError::NotADirectory`], [`CopyError::BadArchive`]
/// (unreadable tar, `..` breakout, a dir/non-dir overwrite when refused),
/// [`CopyError::ReadOnly`].
pub fn extract_archive(
    root: &File,
    path: &str,
    input: impl Read,
    opts: ExtractOptions,
) -> std::result::Result<(), CopyError> {
    let abs = container_abs_path(path);
    let clean = abs.trim_end_matches("/.").trim_end_matches('/');
    let clean = if clean.is_empty() { "/" } else { clean };
    match open_in_root(root, clean, OFlag::O_PATH) {
        Ok(fd) => {
            let st = nix::sys::stat::fstat(fd.as_raw_fd()).map_err(sys("stat", clean))?;
            if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
                return Err(CopyError::NotADirectory);
            }
        }
        Err(nix::errno::Errno::ENOENT | nix::errno::Errno::ENOTDIR) => {
            return Err(CopyError::NotFound(clean.to_string()))
        }
        Err(e) => return Err(sys("open", clean)(e).into()),
    }
    let bad = |e: io::Error| CopyError::BadArchive(format!("Error processing tar file: {e}"));
    let mut ar = tar::Archive::new(input);
    for entry in ar.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let Some(parts) = entry_components(&raw)? else {
            continue;
        };
        let (name, dirs) = parts.split_last().expect("non-empty");
        // parent: created component by component, each resolved in the root
        let mut parent = clean.to_string();
        for d in dirs {
            parent = format!("{}/{d}", parent.trim_end_matches('/'));
            match open_in_root(root, &parent, OFlag::O_PATH | OFlag::O_DIRECTORY) {
                Ok(_) => {}
                Err(nix::errno::Errno::ENOENT) => {
                    let (pdir, pbase) = split(&parent);
                    let pfd = open_in_root(root, pdir, OFlag::O_PATH | OFlag::O_DIRECTORY)
                        .map_err(sys("open", &parent))?;
                    match nix::sys::stat::mkdirat(
                        Some(pfd.as_raw_fd()),
                        pbase,
                        Mode::from_bits_truncate(0o755),
                    ) {
                        Ok(()) => {}
                        Err(nix::errno::Errno::EEXIST) => {
                            return Err(CopyError::BadArchive(format!(
                                "cannot extract {raw:?}: {parent} is a symlink to nothing"
                            )))
                        }
                        Err(nix::errno::Errno::EROFS) => return Err(CopyError::ReadOnly),
                        Err(e) => return Err(sys("mkdir", &parent)(e).into()),
                    }
                }
                Err(nix::errno::Errno::ENOTDIR) => {
                    return Err(CopyError::BadArchive(format!(
                        "cannot extract {raw:?}: {parent} is not a directory"
                    )))
                }
                Err(e) => return Err(sys("open", &parent)(e).into()),
            }
        }
        let pfd = open_in_root(root, &parent, OFlag::O_PATH | OFlag::O_DIRECTORY)
            .map_err(sys("open", &parent))?;
        let at = Some(pfd.as_raw_fd());
        let shown = format!("{}/{name}", parent.trim_end_matches('/'));
        let h = entry.header().clone();
        let kind = h.entry_type();
        let is_dir = kind == tar::EntryType::Directory;
        let existing =
            nix::sys::stat::fstatat(at, name.as_str(), nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
                .ok();
        if let Some(ex) = existing {
            let ex_dir = ex.st_mode & libc::S_IFMT == libc::S_IFDIR;
            if opts.no_overwrite_dir_non_dir && ex_dir && !is_dir {
                return Err(CopyError::BadArchive(format!(
                    "cannot overwrite directory {shown:?} with non-directory {raw:?}"
                )));
            }
            if opts.no_overwrite_dir_non_dir && !ex_dir && is_dir {
                return Err(CopyError::BadArchive(format!(
                    "cannot overwrite non-directory {shown:?} with directory {raw:?}"
                )));
            }
            if !(ex_dir && is_dir) {
                let flag = if ex_dir {
                    nix::unistd::UnlinkatFlags::RemoveDir
                } else {
                    nix::unistd::UnlinkatFlags::NoRemoveDir
                };
                if ex_dir {
                    // a non-empty dir replaced by a file: remove its tree (inside the root)
                    let dfd = open_in_root(root, &shown, OFlag::O_PATH | OFlag::O_DIRECTORY)
                        .map_err(sys("open", &shown))?;
                    std::fs::remove_dir_all(fd_path(&dfd))
                        .or_else(|e| {
                            if e.kind() == io::ErrorKind::NotFound {
                                Ok(())
                            } else {
                                Err(e)
                            }
                        })
                        .map_err(|e| RuntimeError::io("remove", &shown, e))?;
                } else {
                    match nix::unistd::unlinkat(at, name.as_str(), flag) {
                        Ok(()) | Err(nix::errno::Errno::ENOENT) => {}
                        Err(nix::errno::Errno::EROFS) => return Err(CopyError::ReadOnly),
                        Err(e) => return Err(sys("remove", &shown)(e).into()),
                    }
                }
            }
        }
        let mode = Mode::from_bits_truncate(h.mode().unwrap_or(0o644) & 0o7777);
        let ro = |e: nix::errno::Errno, op: &'static str| -> CopyError {
            if e == nix::errno::Errno::EROFS {
                CopyError::ReadOnly
            } else {
                sys(op, &shown)(e).into()
            }
        };
        match kind {
            tar::EntryType::Directory => match nix::sys::stat::mkdirat(at, name.as_str(), mode) {
                Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                Err(e) => return Err(ro(e, "mkdir")),
            },
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let fd = nix::fcntl::openat(
                    at,
                    name.as_str(),
                    OFlag::O_WRONLY
                        | OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(|e| ro(e, "create"))?;
                // SAFETY: openat returned a fresh descriptor that nothing else owns.
                let mut f = unsafe { File::from_raw_fd(fd) };
                io::copy(&mut entry, &mut f).map_err(bad)?;
            }
            tar::EntryType::Symlink => {
                let target = entry.link_name().map_err(bad)?.ok_or_else(|| {
                    CopyError::BadArchive(format!("symlink {raw:?} has no target"))
                })?;
                nix::unistd::symlinkat(target.as_os_str(), at, name.as_str())
                    .map_err(|e| ro(e, "symlink"))?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(bad)?
                    .ok_or_else(|| CopyError::BadArchive(format!("link {raw:?} has no target")))?;
                let t = target.to_string_lossy().into_owned();
                let Some(tparts) = entry_components(&t)? else {
                    return Err(CopyError::BadArchive(format!(
                        "invalid hardlink {raw:?} -> {t:?}"
                    )));
                };
                let tpath = format!("{}/{}", clean.trim_end_matches('/'), tparts.join("/"));
                let tfd = open_in_root(root, &tpath, OFlag::O_PATH | OFlag::O_NOFOLLOW).map_err(
                    |_| {
                        CopyError::BadArchive(format!(
                            "hardlink {raw:?} -> {t:?}: target not found"
                        ))
                    },
                )?;
                // through the descriptor's magic link (works for O_PATH descriptors)
                nix::unistd::linkat(
                    None,
                    fd_path(&tfd).as_path(),
                    at,
                    Path::new(name.as_str()),
                    nix::fcntl::AtFlags::AT_SYMLINK_FOLLOW,
                )
                .map_err(|e| ro(e, "link"))?;
                continue;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let kind_flag = match kind {
                    tar::EntryType::Char => nix::sys::stat::SFlag::S_IFCHR,
                    tar::EntryType::Block => nix::sys::stat::SFlag::S_IFBLK,
                    _ => nix::sys::stat::SFlag::S_IFIFO,
                };
                let dev = libc::makedev(
                    h.device_major().ok().flatten().unwrap_or(0),
                    h.device_minor().ok().flatten().unwrap_or(0),
                );
                nix::sys::stat::mknodat(at, name.as_str(), kind_flag, mode, dev)
                    .map_err(|e| ro(e, "mknod"))?;
            }
            // PAX/GNU metadata entries are consumed by the reader; others are skipped as
            // Docker's untar skips unknown types.
            _ => continue,
        }
        let (uid, gid) = opts
            .owner
            .unwrap_or((h.uid().unwrap_or(0) as u32, h.gid().unwrap_or(0) as u32));
        nix::unistd::fchownat(
            at,
            name.as_str(),
            Some(uid.into()),
            Some(gid.into()),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| ro(e, "chown"))?;
        if kind != tar::EntryType::Symlink {
            nix::sys::stat::fchmodat(
                at,
                name.as_str(),
                mode,
                nix::sys::stat::FchmodatFlags::FollowSymlink,
            )
            .map_err(|e| ro(e, "chmod"))?;
        }
        let mtime = h.mtime().unwrap_or(0) as i64;
        let t = nix::sys::time::TimeSpec::new(mtime, 0);
        let _ = nix::sys::stat::utimensat(
            at,
            name.as_str(),
            &t,
            &t,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        );
    }
    Ok(())
}

impl Runtime {
    /// Runs `f` with a directory descriptor of container `id`'s root. A running (or paused)
    /// container: its init's root (`/proc/<pid>/root`, volumes included; `mounts` unused).
    /// Otherwise, or when `rootfs_only`: the overlay of its image layers and upper dir is
    /// mounted at a temporary directory in a private mount namespace of a thread made for
    /// the call, `mounts` bound in unless `rootfs_only`, and everything is gone when `f`
    /// returns. Errors: unknown container, mount failures.
    pub fn with_container_root<T: Send>(
        &self,
        id: &str,
        mounts: &[ExtraMount],
        rootfs_only: bool,
        f: impl FnOnce(&File) -> T + Send,
    ) -> Result<T> {
        let info = self.inspect(id)?;
        if !rootfs_only {
            if let Some(pid) = info.pid.filter(|_| info.status.is_live()) {
                let p = PathBuf::from(format!("/proc/{pid}/root"));
                let root = File::open(&p).map_err(|e| RuntimeError::io("open", &p, e))?;
                return Ok(f(&root));
            }
        }
        let (upper, mut lowers) = self.upper_and_lowers(id)?;
        lowers.reverse(); // bottom first, as plan_overlay takes them
        let active = self.snapshots().active_dir(id);
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let work = active.join(format!("cpwork-{n}"));
        let target = active.join(format!("cproot-{n}"));
        for d in [&work, &target, &upper] {
            std::fs::create_dir_all(d).map_err(|e| RuntimeError::io("create", d, e))?;
        }
        let plan = plan_overlay(&lowers, &upper, &work, &target);
        let result = std::thread::scope(|s| {
            s.spawn(|| -> Result<T> {
                use nix::mount::{mount, MsFlags};
                use nix::sched::{unshare, CloneFlags};
                unshare(CloneFlags::CLONE_FS | CloneFlags::CLONE_NEWNS)
                    .map_err(|e| RuntimeError::io("unshare mount namespace", "/", e.into()))?;
                mount(
                    None::<&str>,
                    "/",
                    None::<&str>,
                    MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                    None::<&str>,
                )
                .map_err(|source| RuntimeError::Mount {
                    target: "/".into(),
                    source,
                })?;
                mount(
                    Some(plan.source.as_str()),
                    &plan.target,
                    Some(plan.fstype.as_str()),
                    MsFlags::empty(),
                    Some(plan.options.as_str()),
                )
                .map_err(|source| RuntimeError::Mount {
                    target: plan.target.clone(),
                    source,
                })?;
                let root = File::open(&target).map_err(|e| RuntimeError::io("open", &target, e))?;
                if !rootfs_only {
                    for m in mounts {
                        // the mount point, resolved inside the root; missing ones are skipped
                        let Ok(fd) = open_in_root(&root, &m.destination, OFlag::O_PATH) else {
                            continue;
                        };
                        let at = fd_path(&fd);
                        mount(
                            Some(&m.source),
                            &at,
                            None::<&str>,
                            MsFlags::MS_BIND | MsFlags::MS_REC,
                            None::<&str>,
                        )
                        .map_err(|source| RuntimeError::Mount {
                            target: m.destination.clone().into(),
                            source,
                        })?;
                        if m.read_only {
                            let _ = mount(
                                None::<&str>,
                                &at,
                                None::<&str>,
                                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                                None::<&str>,
                            );
                        }
                    }
                }
                // reopen: the binds are below the new root
                let root = File::open(&target).map_err(|e| RuntimeError::io("open", &target, e))?;
                Ok(f(&root))
            })
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
        });
        let _ = std::fs::remove_dir(&target);
        let _ = std::fs::remove_dir_all(&work);
        result
    }

    /// The uid and gid container `id`'s process runs as (its OCI spec's `process.user`),
    /// for `docker cp -a` (`copyUIDGID`).
    pub fn process_owner(&self, id: &str) -> Result<(u32, u32)> {
        let _ = self.inspect(id)?;
        let path = self
            .config()
            .data_root
            .join("containers")
            .join(id)
            .join("bundle")
            .join("config.json");
        let v: serde_json::Value = serde_json::from_slice(
            &std::fs::read(&path).map_err(|e| RuntimeError::io("read", &path, e))?,
        )
        .map_err(|source| RuntimeError::Json {
            what: "OCI runtime spec",
            source,
        })?;
        let u = &v["process"]["user"];
        Ok((
            u["uid"].as_u64().unwrap_or(0) as u32,
            u["gid"].as_u64().unwrap_or(0) as u32,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abs_paths_keep_trailing_dot_and_slash() {
        assert_eq!(container_abs_path("etc/passwd"), "/etc/passwd");
        assert_eq!(container_abs_path("/etc/"), "/etc/");
        assert_eq!(container_abs_path("/etc/."), "/etc/.");
        assert_eq!(container_abs_path("/../../etc"), "/etc");
        assert_eq!(container_abs_path("/"), "/");
    }

    #[test]
    fn go_modes() {
        assert_eq!(go_file_mode(libc::S_IFDIR | 0o755), (1 << 31) | 0o755);
        assert_eq!(go_file_mode(libc::S_IFREG | 0o644), 0o644);
        assert_eq!(go_file_mode(libc::S_IFLNK | 0o777), (1 << 27) | 0o777);
    }

    #[test]
    fn hostile_archive_stays_in_root() {
        let tmp = tempfile::tempdir().unwrap();
        let root_dir = tmp.path().join("root");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(root_dir.join("dst")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        b.append_link(&mut h, "up", "/").unwrap();
        let evil = format!("berth-unit-evil-{}", std::process::id());
        let rel = outside.strip_prefix("/").unwrap().join(&evil);
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(1);
        h.set_mode(0o644);
        b.append_data(&mut h, format!("up/{evil}"), &b"x"[..])
            .unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(1);
        h.set_mode(0o644);
        b.append_data(&mut h, Path::new("up").join(&rel), &b"x"[..])
            .unwrap();
        let data = b.into_inner().unwrap();
        let root = File::open(&root_dir).unwrap();
        extract_archive(&root, "/dst", data.as_slice(), ExtractOptions::default()).unwrap();
        assert!(!Path::new("/").join(&evil).exists());
        assert!(!outside.join(&evil).exists());
        // both landed where the symlink points inside the root
        assert!(root_dir.join(&evil).is_file());
        assert!(root_dir.join(&rel).is_file());

        // a ../ entry is a breakout error and writes nothing
        let mut raw = Vec::new();
        {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(1);
            h.set_mode(0o644);
            h.as_gnu_mut().unwrap().name[..10].copy_from_slice(b"../../evil");
            h.set_cksum();
            raw.extend_from_slice(h.as_bytes());
            let mut block = [0u8; 512];
            block[0] = b'x';
            raw.extend_from_slice(&block);
            raw.extend_from_slice(&[0u8; 1024]);
        }
        let err =
            extract_archive(&root, "/dst", raw.as_slice(), ExtractOptions::default()).unwrap_err();
        assert!(matches!(err, CopyError::BadArchive(_)), "{err}");
        assert!(!tmp.path().join("evil").exists());
        assert!(!root_dir.join("evil").exists());
    }
}
