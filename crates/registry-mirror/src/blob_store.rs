//! The content-addressed blob store: every layer, config and manifest of a node, stored
//! once, by sha256 digest.
//!
//! ```text
//!  <root>/sha256/<hex>                 committed blobs (content always matches the name)
//!  <root>/ingest/<hex>.lock            per-digest writer lock (flock)
//!  <root>/ingest/<hex>.<pid>.<n>.part  a write in progress (flock'd by its writer)
//! ```
//!
//! A write streams into a `.part` file while hashing; only when the bytes hash to the
//! expected digest (and size) is the file fsynced and renamed to `sha256/<hex>`, and the
//! directory fsynced. A crash leaves at most a `.part` file, which [`BlobStore::open`]
//! removes when no live writer holds it. Writers of one digest serialise on the digest's
//! lock file, so the second writer finds the blob present and does nothing: across tasks,
//! threads and processes alike.
//!
//! Does not own: knowing which blobs are referenced (the image store decides what GC keeps).

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::FlockOperation;
use sha2::{Digest as _, Sha256};

use crate::digest::Digest;
use crate::error::{Error, Result};

/// A blob store rooted at one directory.
#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
}

/// Exclusive right to write one digest (held until dropped).
#[derive(Debug)]
pub struct IngestLock {
    _file: File,
    digest: Digest,
}

impl IngestLock {
    pub fn digest(&self) -> &Digest {
        &self.digest
    }
}

/// What [`BlobStore::gc`] removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    pub removed: Vec<Digest>,
    pub bytes_freed: u64,
}

static PART_COUNTER: AtomicU64 = AtomicU64::new(0);

impl BlobStore {
    /// Opens (creating if needed) the store at `root` and removes abandoned partial writes.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        for d in [root.join("sha256"), root.join("ingest")] {
            fs::create_dir_all(&d).map_err(Error::io("create", &d))?;
        }
        let store = BlobStore { root };
        store.remove_abandoned_parts()?;
        Ok(store)
    }

    fn ingest_dir(&self) -> PathBuf {
        self.root.join("ingest")
    }

    /// Removes `.part` files whose writer is gone (their flock is free).
    fn remove_abandoned_parts(&self) -> Result<()> {
        let dir = self.ingest_dir();
        for e in fs::read_dir(&dir).map_err(Error::io("read dir", &dir))? {
            let e = e.map_err(Error::io("read dir", &dir))?;
            let p = e.path();
            if p.extension().and_then(|x| x.to_str()) != Some("part") {
                continue;
            }
            let Ok(f) = File::open(&p) else { continue };
            if rustix::fs::flock(&f, FlockOperation::NonBlockingLockExclusive).is_ok() {
                fs::remove_file(&p).map_err(Error::io("remove partial blob", &p))?;
            }
        }
        Ok(())
    }

    /// The file a committed blob lives in.
    pub fn path(&self, d: &Digest) -> PathBuf {
        self.root.join("sha256").join(d.hex())
    }

    pub fn contains(&self, d: &Digest) -> bool {
        self.path(d).is_file()
    }

    /// Size of a committed blob, or `None` if absent.
    pub fn size(&self, d: &Digest) -> Result<Option<u64>> {
        match fs::metadata(self.path(d)) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("stat blob", self.path(d))(e)),
        }
    }

    /// Opens a committed blob for reading.
    pub fn open_blob(&self, d: &Digest) -> Result<File> {
        File::open(self.path(d)).map_err(Error::io("open blob", self.path(d)))
    }

    /// Reads a (small) blob whole and checks it still hashes to its name.
    pub fn read(&self, d: &Digest) -> Result<Vec<u8>> {
        let data = fs::read(self.path(d)).map_err(Error::io("read blob", self.path(d)))?;
        let actual = Digest::of(&data);
        if &actual != d {
            return Err(Error::DigestMismatch {
                what: "stored blob",
                expected: d.clone(),
                actual,
            });
        }
        Ok(data)
    }

    /// Takes the writer lock of `d`, waiting for another writer to finish. Blocking.
    pub fn lock(&self, d: &Digest) -> Result<IngestLock> {
        let p = self.ingest_dir().join(format!("{}.lock", d.hex()));
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(Error::io("open lock", &p))?;
        loop {
            match rustix::fs::flock(&f, FlockOperation::LockExclusive) {
                Ok(()) => break,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(Error::io("lock", &p)(e.into())),
            }
        }
        Ok(IngestLock {
            _file: f,
            digest: d.clone(),
        })
    }

    /// [`BlobStore::lock`] from async code.
    pub async fn lock_async(&self, d: &Digest) -> Result<IngestLock> {
        let store = self.clone();
        let d = d.clone();
        tokio::task::spawn_blocking(move || store.lock(&d))
            .await
            .map_err(|source| Error::Join { source })?
    }

    /// Starts writing the blob `lock` is for. `expected_size`, if known, is checked too.
    pub fn writer(&self, lock: &IngestLock, expected_size: Option<u64>) -> Result<BlobWriter> {
        let n = PART_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = self.ingest_dir().join(format!(
            "{}.{}.{n}.part",
            lock.digest.hex(),
            std::process::id()
        ));
        let file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&tmp)
            .map_err(Error::io("create partial blob", &tmp))?;
        rustix::fs::flock(&file, FlockOperation::LockExclusive)
            .map_err(|e| Error::io("lock partial blob", &tmp)(e.into()))?;
        Ok(BlobWriter {
            file: Some(io::BufWriter::with_capacity(256 * 1024, file)),
            tmp,
            dest: self.path(&lock.digest),
            hasher: Sha256::new(),
            written: 0,
            expected: lock.digest.clone(),
            expected_size,
            committed: false,
        })
    }

    /// Stores `data` (a manifest, config...) and returns its digest. Blocking.
    pub fn put(&self, data: &[u8]) -> Result<Digest> {
        let d = Digest::of(data);
        self.put_verified(&d, data)?;
        Ok(d)
    }

    /// Stores `data` under `d`, refusing it if it does not hash to `d`. Blocking.
    pub fn put_verified(&self, d: &Digest, data: &[u8]) -> Result<()> {
        if self.contains(d) {
            return Ok(());
        }
        let lock = self.lock(d)?;
        if self.contains(d) {
            return Ok(());
        }
        let mut w = self.writer(&lock, Some(data.len() as u64))?;
        w.write_all(data).map_err(Error::io("write blob", &w.tmp))?;
        w.commit()
    }

    /// Copies a blob from `reader`, verifying it against `d`. Blocking.
    pub fn put_reader(&self, d: &Digest, mut reader: impl Read) -> Result<()> {
        if self.contains(d) {
            return Ok(());
        }
        let lock = self.lock(d)?;
        if self.contains(d) {
            return Ok(());
        }
        let mut w = self.writer(&lock, None)?;
        let tmp = w.tmp.clone();
        io::copy(&mut reader, &mut w).map_err(Error::io("write blob", &tmp))?;
        w.commit()
    }

    /// Every committed blob.
    pub fn list(&self) -> Result<Vec<Digest>> {
        let dir = self.root.join("sha256");
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).map_err(Error::io("read dir", &dir))? {
            let e = e.map_err(Error::io("read dir", &dir))?;
            if let Some(name) = e.file_name().to_str() {
                if let Ok(d) = Digest::parse(&format!("sha256:{name}")) {
                    out.push(d);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Removes a blob; returns whether it was there.
    pub fn delete(&self, d: &Digest) -> Result<bool> {
        match fs::remove_file(self.path(d)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io("remove blob", self.path(d))(e)),
        }
    }

    /// Removes every blob not in `keep`. The caller must make sure no pull that will
    /// reference a new blob is running (the image store does).
    pub fn gc(&self, keep: &HashSet<Digest>) -> Result<GcReport> {
        let mut report = GcReport::default();
        for d in self.list()? {
            if keep.contains(&d) {
                continue;
            }
            let size = self.size(&d)?.unwrap_or(0);
            if self.delete(&d)? {
                report.bytes_freed += size;
                report.removed.push(d);
            }
        }
        Ok(report)
    }

    /// Re-hashes every blob; returns those whose content does not match their name.
    pub fn fsck(&self) -> Result<Vec<Digest>> {
        let mut bad = Vec::new();
        for d in self.list()? {
            let mut f = self.open_blob(&d)?;
            let mut h = Sha256::new();
            io::copy(&mut f, &mut h).map_err(Error::io("read blob", self.path(&d)))?;
            if Digest::from_hasher(h) != d {
                bad.push(d);
            }
        }
        Ok(bad)
    }

    /// Partial writes currently on disk (for tests and diagnostics).
    pub fn partial_writes(&self) -> Result<Vec<PathBuf>> {
        let dir = self.ingest_dir();
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).map_err(Error::io("read dir", &dir))? {
            let p = e.map_err(Error::io("read dir", &dir))?.path();
            if p.extension().and_then(|x| x.to_str()) == Some("part") {
                out.push(p);
            }
        }
        Ok(out)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

/// A blob being written. Hashes as it goes; [`BlobWriter::commit`] verifies and publishes.
/// Dropped without commit, the partial file is removed.
#[derive(Debug)]
pub struct BlobWriter {
    file: Option<io::BufWriter<File>>,
    tmp: PathBuf,
    dest: PathBuf,
    hasher: Sha256,
    written: u64,
    expected: Digest,
    expected_size: Option<u64>,
    committed: bool,
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let f = self.file.as_mut().expect("writer used after commit");
        let n = f.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    /// Hands buffered bytes to the file (no fsync): readers of the partial file see them.
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.file {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl BlobWriter {
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The partial file being written (readers may follow it after [`Write::flush`]).
    pub fn part_path(&self) -> &Path {
        &self.tmp
    }

    /// The digest this writer must produce.
    pub fn digest(&self) -> &Digest {
        &self.expected
    }

    /// Flushes what was written to disk (commit then has little left to sync).
    pub fn sync(&mut self) -> Result<()> {
        if let Some(f) = &mut self.file {
            f.flush().map_err(Error::io("write blob", &self.tmp))?;
            f.get_ref()
                .sync_data()
                .map_err(Error::io("fsync blob", &self.tmp))?;
        }
        Ok(())
    }

    /// Checks size and digest of what was written so far, without publishing.
    pub fn verify(&self) -> Result<()> {
        if let Some(want) = self.expected_size {
            if want != self.written {
                return Err(Error::SizeMismatch {
                    digest: self.expected.clone(),
                    expected: want,
                    actual: self.written,
                });
            }
        }
        let actual = Digest::from_hasher(self.hasher.clone());
        if actual != self.expected {
            return Err(Error::DigestMismatch {
                what: "blob",
                expected: self.expected.clone(),
                actual,
            });
        }
        Ok(())
    }

    /// Checks size and digest, fsyncs, and renames the blob into place.
    pub fn commit(mut self) -> Result<()> {
        if let Some(want) = self.expected_size {
            if want != self.written {
                return Err(Error::SizeMismatch {
                    digest: self.expected.clone(),
                    expected: want,
                    actual: self.written,
                });
            }
        }
        let actual = Digest::from_hasher(std::mem::take(&mut self.hasher));
        if actual != self.expected {
            return Err(Error::DigestMismatch {
                what: "blob",
                expected: self.expected.clone(),
                actual,
            });
        }
        let file = self
            .file
            .take()
            .expect("commit once")
            .into_inner()
            .map_err(|e| Error::io("write blob", &self.tmp)(e.into_error()))?;
        file.sync_all()
            .map_err(Error::io("fsync blob", &self.tmp))?;
        drop(file);
        fs::rename(&self.tmp, &self.dest).map_err(Error::io("publish blob", &self.dest))?;
        self.committed = true;
        let dir = self.dest.parent().expect("blob path has a parent");
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(Error::io("fsync blob dir", dir))?;
        Ok(())
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if !self.committed {
            self.file.take();
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    fn store() -> (tempfile::TempDir, BlobStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = BlobStore::open(dir.path().join("blobs")).unwrap();
        (dir, s)
    }

    #[test]
    fn put_and_read_back() {
        let (_d, s) = store();
        let d = s.put(b"hello").unwrap();
        assert!(s.contains(&d));
        assert_eq!(s.read(&d).unwrap(), b"hello");
        assert_eq!(s.size(&d).unwrap(), Some(5));
        assert!(s.partial_writes().unwrap().is_empty());
    }

    #[test]
    fn wrong_content_is_refused_and_leaves_nothing() {
        let (_d, s) = store();
        let want = Digest::of(b"right");
        let err = s.put_verified(&want, b"wrong").unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
        assert!(!s.contains(&want));
        assert!(s.list().unwrap().is_empty());
        assert!(s.partial_writes().unwrap().is_empty());
        let lock = s.lock(&want).unwrap();
        let mut w = s.writer(&lock, Some(5)).unwrap();
        w.write_all(b"righ").unwrap();
        let err = w.commit().unwrap_err();
        assert!(matches!(err, Error::SizeMismatch { .. }), "{err}");
        assert!(s.partial_writes().unwrap().is_empty());
    }

    #[test]
    fn abandoned_partial_write_is_removed_on_open() {
        let (dir, s) = store();
        let d = Digest::of(b"data");
        let lock = s.lock(&d).unwrap();
        let mut w = s.writer(&lock, None).unwrap();
        w.write_all(b"da").unwrap();
        // Simulate a crash: the file stays, its flock goes with the process (here: the fd).
        let tmp = w.tmp.clone();
        let file = w.file.take().unwrap();
        w.committed = true; // keep Drop from cleaning up: a crash would not
        drop(w);
        assert_eq!(s.partial_writes().unwrap(), vec![tmp.clone()]);
        // While the writer is alive, open() leaves its file alone.
        BlobStore::open(dir.path().join("blobs")).unwrap();
        assert!(tmp.exists());
        drop(file);
        drop(lock);
        let s = BlobStore::open(dir.path().join("blobs")).unwrap();
        assert!(s.partial_writes().unwrap().is_empty());
        assert!(!s.contains(&d));
    }

    #[test]
    fn concurrent_writers_of_one_digest_write_once() {
        let (_d, s) = store();
        let data = vec![7u8; 1 << 20];
        let d = Digest::of(&data);
        let writes = Arc::new(AtomicUsize::new(0));
        std::thread::scope(|scope| {
            for _ in 0..8 {
                let (s, d, data, writes) = (s.clone(), d.clone(), &data, writes.clone());
                scope.spawn(move || {
                    let lock = s.lock(&d).unwrap();
                    if s.contains(&d) {
                        return;
                    }
                    writes.fetch_add(1, Ordering::SeqCst);
                    let mut w = s.writer(&lock, Some(data.len() as u64)).unwrap();
                    for chunk in data.chunks(4096) {
                        w.write_all(chunk).unwrap();
                    }
                    w.commit().unwrap();
                });
            }
        });
        assert_eq!(writes.load(Ordering::SeqCst), 1);
        assert_eq!(s.read(&d).unwrap(), data);
    }

    #[test]
    fn gc_removes_unreferenced_and_fsck_finds_corruption() {
        let (_d, s) = store();
        let a = s.put(b"a").unwrap();
        let b = s.put(b"bb").unwrap();
        let report = s.gc(&[a.clone()].into_iter().collect()).unwrap();
        assert_eq!(report.removed, vec![b.clone()]);
        assert_eq!(report.bytes_freed, 2);
        assert!(s.contains(&a) && !s.contains(&b));
        assert!(s.fsck().unwrap().is_empty());
        fs::write(s.path(&a), b"x").unwrap();
        assert_eq!(s.fsck().unwrap(), vec![a.clone()]);
        assert!(matches!(s.read(&a), Err(Error::DigestMismatch { .. })));
    }
}
