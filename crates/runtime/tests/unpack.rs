//! Layer unpacking: what a layer tar becomes on disk, and hostile layers refused without
//! touching anything outside the destination. Runs as root (ownership, device nodes,
//! trusted.* xattrs).

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use berth_runtime::unpack::{unpack_layer, UnpackError, UnsafePathReason};

/// A tar builder that writes names verbatim (so tests can write hostile paths that the
/// `tar` crate's safe setters refuse).
struct RawTar {
    b: tar::Builder<Vec<u8>>,
}

impl RawTar {
    fn new() -> Self {
        RawTar {
            b: tar::Builder::new(Vec::new()),
        }
    }

    fn entry(
        &mut self,
        name: &str,
        kind: tar::EntryType,
        mode: u32,
        link: Option<&str>,
        data: &[u8],
    ) -> &mut Self {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(1234);
        h.set_gid(5678);
        h.set_mtime(1_600_000_000);
        h.set_size(data.len() as u64);
        {
            let old = h.as_old_mut();
            old.name = [0; 100];
            old.name[..name.len()].copy_from_slice(name.as_bytes());
            if let Some(link) = link {
                old.linkname = [0; 100];
                old.linkname[..link.len()].copy_from_slice(link.as_bytes());
            }
        }
        h.set_cksum();
        self.b.append(&h, data).unwrap();
        self
    }

    fn dir(&mut self, name: &str, mode: u32) -> &mut Self {
        self.entry(name, tar::EntryType::Directory, mode, None, b"")
    }
    fn file(&mut self, name: &str, mode: u32, data: &[u8]) -> &mut Self {
        self.entry(name, tar::EntryType::Regular, mode, None, data)
    }
    fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.entry(name, tar::EntryType::Symlink, 0o777, Some(target), b"")
    }
    fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.entry(name, tar::EntryType::Link, 0o644, Some(target), b"")
    }
    fn finish(&mut self) -> Vec<u8> {
        let b = std::mem::replace(&mut self.b, tar::Builder::new(Vec::new()));
        b.into_inner().unwrap()
    }
}

/// A scratch area: `dest/` to unpack into and `outside/victim` that must never change.
struct Scratch {
    dir: tempfile::TempDir,
}

const VICTIM: &[u8] = b"original host content\n";

impl Scratch {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("berth-unpack-test-")
            .tempdir()
            .unwrap();
        fs::create_dir(dir.path().join("dest")).unwrap();
        fs::create_dir(dir.path().join("outside")).unwrap();
        fs::write(dir.path().join("outside/victim"), VICTIM).unwrap();
        Scratch { dir }
    }
    fn dest(&self) -> PathBuf {
        self.dir.path().join("dest")
    }
    fn outside(&self) -> PathBuf {
        self.dir.path().join("outside")
    }
    /// The outside directory holds exactly the untouched victim.
    fn assert_outside_untouched(&self) {
        let names: Vec<_> = fs::read_dir(self.outside())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("victim")]);
        assert_eq!(fs::read(self.outside().join("victim")).unwrap(), VICTIM);
        let md = fs::symlink_metadata(self.outside().join("victim")).unwrap();
        assert_eq!(md.nlink(), 1, "no hardlink to the victim was made");
    }
    fn unpack(&self, tar: &[u8]) -> Result<berth_runtime::unpack::UnpackStats, UnpackError> {
        unpack_layer(tar, &self.dest())
    }
}

fn lxattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    match rustix::fs::lgetxattr(path, name, &mut buf[..]) {
        Ok(n) => Some(buf[..n].to_vec()),
        Err(_) => None,
    }
}

#[test]
fn applies_files_dirs_symlinks_hardlinks_with_metadata() {
    let s = Scratch::new();
    let tar = RawTar::new()
        .dir("./", 0o755)
        .dir("./etc/", 0o750)
        .file("./etc/conf", 0o4755, b"hello")
        .symlink("./etc/link", "/etc/conf")
        .hardlink("./etc/hard", "./etc/conf")
        .file("implicit/parent/file", 0o600, b"x")
        .finish();
    let stats = s.unpack(&tar).unwrap();
    assert_eq!(stats.entries, 6);
    assert_eq!(stats.file_bytes, 6);
    let d = s.dest();
    let conf = fs::symlink_metadata(d.join("etc/conf")).unwrap();
    assert_eq!(fs::read(d.join("etc/conf")).unwrap(), b"hello");
    assert_eq!(conf.permissions().mode() & 0o7777, 0o4755, "setuid kept");
    assert_eq!((conf.uid(), conf.gid()), (1234, 5678));
    assert_eq!(conf.mtime(), 1_600_000_000);
    assert_eq!(conf.nlink(), 2);
    let hard = fs::symlink_metadata(d.join("etc/hard")).unwrap();
    assert_eq!(hard.ino(), conf.ino());
    assert_eq!(
        fs::read_link(d.join("etc/link")).unwrap(),
        Path::new("/etc/conf")
    );
    let link = fs::symlink_metadata(d.join("etc/link")).unwrap();
    assert_eq!((link.uid(), link.gid()), (1234, 5678));
    assert_eq!(link.mtime(), 1_600_000_000);
    let etc = fs::symlink_metadata(d.join("etc")).unwrap();
    assert_eq!(etc.permissions().mode() & 0o7777, 0o750);
    assert_eq!(etc.mtime(), 1_600_000_000, "dir mtime set after children");
    assert!(d.join("implicit/parent/file").is_file());
}

#[test]
fn leading_dot_slash_root_entry_is_accepted_and_applied() {
    let s = Scratch::new();
    let tar = RawTar::new()
        .dir("./", 0o711)
        .file("./a", 0o644, b"a")
        .finish();
    s.unpack(&tar).unwrap();
    let root = fs::metadata(s.dest()).unwrap();
    assert_eq!(root.permissions().mode() & 0o7777, 0o711);
    assert_eq!(root.mtime(), 1_600_000_000);
}

#[test]
fn whiteouts_become_overlay_char_devices_and_opaque_xattrs() {
    let s = Scratch::new();
    let tar = RawTar::new()
        .dir("etc/", 0o755)
        .file("etc/.wh.removed", 0o644, b"")
        .dir("var/", 0o755)
        .file("var/.wh..wh..opq", 0o644, b"")
        .finish();
    let stats = s.unpack(&tar).unwrap();
    assert_eq!((stats.whiteouts, stats.opaque_dirs), (1, 1));
    let wh = fs::symlink_metadata(s.dest().join("etc/removed")).unwrap();
    assert!(wh.file_type().is_char_device());
    assert_eq!(wh.rdev(), 0);
    assert!(!s.dest().join("etc/.wh.removed").exists());
    assert!(!s.dest().join("var/.wh..wh..opq").exists());
    assert_eq!(
        lxattr(&s.dest().join("var"), "trusted.overlay.opaque"),
        Some(b"y".to_vec())
    );
}

#[test]
fn device_nodes_and_fifos_are_created() {
    let s = Scratch::new();
    let mut t = RawTar::new();
    t.dir("dev/", 0o755);
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Char);
    h.set_path("dev/null").unwrap();
    h.set_mode(0o666);
    h.set_device_major(1).unwrap();
    h.set_device_minor(3).unwrap();
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(0);
    h.set_cksum();
    t.b.append(&h, &b""[..]).unwrap();
    t.entry("dev/fifo", tar::EntryType::Fifo, 0o640, None, b"");
    s.unpack(&t.finish()).unwrap();
    let null = fs::symlink_metadata(s.dest().join("dev/null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), rustix::fs::makedev(1, 3));
    assert_eq!(null.permissions().mode() & 0o7777, 0o666);
    let fifo = fs::symlink_metadata(s.dest().join("dev/fifo")).unwrap();
    assert!(fifo.file_type().is_fifo());
    assert_eq!(fifo.permissions().mode() & 0o7777, 0o640);
}

#[test]
fn pax_xattrs_are_kept() {
    let s = Scratch::new();
    let mut b = tar::Builder::new(Vec::new());
    b.append_pax_extensions([("SCHILY.xattr.trusted.berth", &b"v1"[..])])
        .unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_path("f").unwrap();
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(1);
    h.set_cksum();
    b.append(&h, &b"x"[..]).unwrap();
    s.unpack(&b.into_inner().unwrap()).unwrap();
    assert_eq!(
        lxattr(&s.dest().join("f"), "trusted.berth"),
        Some(b"v1".to_vec())
    );
}

#[test]
fn hostile_dotdot_path_is_rejected() {
    let s = Scratch::new();
    let tar = RawTar::new()
        .file("../outside/victim", 0o644, b"pwned")
        .finish();
    let err = s.unpack(&tar).unwrap_err();
    assert!(
        matches!(
            err,
            UnpackError::UnsafePath {
                reason: UnsafePathReason::ParentDir,
                ..
            }
        ),
        "{err}"
    );
    s.assert_outside_untouched();
}

#[test]
fn hostile_absolute_path_is_rejected() {
    let s = Scratch::new();
    let victim = s.outside().join("victim");
    let tar = RawTar::new()
        .file(victim.to_str().unwrap(), 0o644, b"pwned")
        .finish();
    let err = s.unpack(&tar).unwrap_err();
    assert!(
        matches!(
            err,
            UnpackError::UnsafePath {
                reason: UnsafePathReason::Absolute,
                ..
            }
        ),
        "{err}"
    );
    s.assert_outside_untouched();
}

#[test]
fn hostile_write_through_symlink_is_rejected() {
    for target in [s_abs_outside as fn(&Scratch) -> String, |_| {
        "../outside".into()
    }] {
        let s = Scratch::new();
        let tar = RawTar::new()
            .symlink("escape", &target(&s))
            .file("escape/victim", 0o644, b"pwned")
            .finish();
        let err = s.unpack(&tar).unwrap_err();
        assert!(
            matches!(
                err,
                UnpackError::UnsafePath {
                    reason: UnsafePathReason::ThroughSymlink,
                    ..
                }
            ),
            "{err}"
        );
        s.assert_outside_untouched();
        // A new file through the symlink is refused too.
        let s = Scratch::new();
        let tar = RawTar::new()
            .symlink("escape", &target(&s))
            .file("escape/new", 0o644, b"pwned")
            .finish();
        assert!(s.unpack(&tar).is_err());
        s.assert_outside_untouched();
    }
}

fn s_abs_outside(s: &Scratch) -> String {
    s.outside().to_str().unwrap().to_string()
}

#[test]
fn hostile_whiteout_through_symlink_is_rejected() {
    let s = Scratch::new();
    let tar = RawTar::new()
        .symlink("escape", &s_abs_outside(&s))
        .file("escape/.wh.victim", 0o644, b"")
        .finish();
    assert!(s.unpack(&tar).is_err());
    s.assert_outside_untouched();
}

#[test]
fn hostile_hardlink_to_outside_file_is_rejected() {
    let s = Scratch::new();
    let abs = s.outside().join("victim");
    let cases: Vec<(String, UnsafePathReason)> = vec![
        ("../outside/victim".into(), UnsafePathReason::ParentDir),
        (abs.to_str().unwrap().into(), UnsafePathReason::Absolute),
    ];
    for (target, reason) in cases {
        let tar = RawTar::new().hardlink("stolen", &target).finish();
        let err = s.unpack(&tar).unwrap_err();
        assert!(
            matches!(&err, UnpackError::UnsafeHardlink { reason: r, .. } if *r == reason),
            "{target}: {err}"
        );
        s.assert_outside_untouched();
    }
    // Through a symlink inside the layer.
    let s = Scratch::new();
    let tar = RawTar::new()
        .symlink("escape", &s_abs_outside(&s))
        .hardlink("stolen", "escape/victim")
        .finish();
    let err = s.unpack(&tar).unwrap_err();
    assert!(
        matches!(
            err,
            UnpackError::UnsafeHardlink {
                reason: UnsafePathReason::ThroughSymlink,
                ..
            }
        ),
        "{err}"
    );
    s.assert_outside_untouched();
    assert!(!s.dest().join("stolen").exists());
}

#[test]
fn truncated_tar_is_a_read_error() {
    let s = Scratch::new();
    let tar = RawTar::new().file("big", 0o644, &[7u8; 4096]).finish();
    let err = s.unpack(&tar[..1024]).unwrap_err();
    assert!(matches!(err, UnpackError::Read { .. }), "{err}");
}

/// The bytes of `tar` up to the end of its last entry's data: no padding and no
/// end-of-archive blocks, as Debian's umoci 0.4.7 `insert` writes layers. `last_len` is
/// the last entry's data length.
fn without_tail(tar: &[u8], last_len: usize) -> Vec<u8> {
    // tar::Builder::into_inner appends two zero blocks; before them the last entry's data
    // is padded to a whole block.
    let body = tar.len() - 1024;
    let padded = last_len.div_ceil(512) * 512;
    tar[..body - padded + last_len].to_vec()
}

#[test]
fn layer_ending_right_after_last_file_data_is_accepted() {
    // dockerd and containerd (Go's archive/tar) accept a layer whose stream ends right
    // after the last file's data, or anywhere in its padding.
    let data = b"<html>hello</html>\n";
    let full = RawTar::new()
        .dir("var/", 0o755)
        .file("var/index.html", 0o644, data)
        .finish();
    let short = without_tail(&full, data.len());
    assert_eq!(short.len() % 512, data.len());
    for cut in [
        short.len(),
        short.len() + 1,
        short.len() + 200,
        full.len() - 1024,
    ] {
        let s = Scratch::new();
        let stats = s
            .unpack(&full[..cut])
            .unwrap_or_else(|e| panic!("stream cut at {cut}: {e}"));
        assert_eq!(stats.entries, 2, "cut at {cut}");
        assert_eq!(stats.file_bytes, data.len() as u64);
        assert_eq!(fs::read(s.dest().join("var/index.html")).unwrap(), data);
        let mode = fs::metadata(s.dest().join("var/index.html"))
            .unwrap()
            .mode();
        assert_eq!(mode & 0o7777, 0o644);
    }
}

#[test]
fn layer_ending_inside_data_or_header_is_still_refused() {
    let data = [7u8; 700];
    let full = RawTar::new()
        .file("a", 0o644, &data)
        .file("b", 0o644, b"bee")
        .finish();
    // Cuts inside a's data (also inside its last block), inside b's header, and inside b's
    // data: content would be missing, so each is a read error.
    let b_header = 512 + 1024;
    for cut in [
        512 + 100,
        512 + 600,
        512 + 699,
        b_header + 1,
        b_header + 300,
        b_header + 512 + 2,
    ] {
        let s = Scratch::new();
        let err = s.unpack(&full[..cut]).unwrap_err();
        assert!(
            matches!(err, UnpackError::Read { .. }),
            "cut at {cut}: {err}"
        );
    }
}

#[test]
fn hostile_layer_without_tail_is_still_rejected() {
    let s = Scratch::new();
    let full = RawTar::new()
        .file("../outside/victim", 0o644, b"pwned")
        .finish();
    let err = s.unpack(&without_tail(&full, 5)).unwrap_err();
    assert!(
        matches!(
            err,
            UnpackError::UnsafePath {
                reason: UnsafePathReason::ParentDir,
                ..
            }
        ),
        "{err}"
    );
    s.assert_outside_untouched();
}
