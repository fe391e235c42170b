//! A container's log files on disk: the shim's rotating writer ([`LogWriter`]) and the
//! reader that `logs` uses across the rotated set ([`LogReader`]).
//!
//! Owns the file set and its naming, Docker's: the live file `<log>`, then `<log>.1` (the
//! newest rotated) up to `<log>.<max-file - 1>`, each `.gz` when compressed. Does not own the
//! record encoding (`logs`) nor the policy's validation (`log_config`).
//!
//! ```text
//!  shim: records --LogWriter--> <log>          (rotate before a write would pass max-size)
//!                                 | rename
//!                               <log>.1[.gz] -> <log>.2[.gz] -> ... (oldest removed)
//!  runtime: LogReader reads <log>.N ... <log>.1, <log>; following, it keeps the live file
//!           open, drains it to its end after a rotation and goes on in the new <log>.
//! ```
//!
//! The shim is the only writer and writes whole records, so a rotation never splits or
//! drops a record: it happens between two writes. A rotation holds an exclusive `flock` on
//! the log's directory; a reader lists and opens the set under a shared one (and reads
//! after releasing it), so it never sees a rotation half done: no file missed or read twice.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::log_config::{LogFormat, LogPolicy};
use crate::logs::{self, LogRecord};

/// The path of rotated file number `n` (1 = newest).
pub fn rotated_path(live: &Path, n: u32, gz: bool) -> PathBuf {
    let mut s = live.as_os_str().to_owned();
    s.push(format!(".{n}"));
    if gz {
        s.push(".gz");
    }
    PathBuf::from(s)
}

/// Whichever of `<log>.n` and `<log>.n.gz` exists, with whether it is compressed.
fn existing_rotated(live: &Path, n: u32) -> Option<(PathBuf, bool)> {
    [false, true]
        .into_iter()
        .map(|gz| (rotated_path(live, n, gz), gz))
        .find(|(p, _)| p.exists())
}

/// Locks the directory of the live file: exclusively while the writer rotates, shared while
/// a reader lists and opens the set, so a reader never sees a rotation half done. The lock
/// goes with the returned handle; `None` when the directory does not exist (nothing to read).
fn lock_dir(live: &Path, exclusive: bool) -> std::io::Result<Option<File>> {
    let dir = live.parent().unwrap_or(Path::new("."));
    let f = match File::open(dir) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let op = if exclusive {
        rustix::fs::FlockOperation::LockExclusive
    } else {
        rustix::fs::FlockOperation::LockShared
    };
    rustix::fs::flock(&f, op)?;
    Ok(Some(f))
}

fn remove_quiet(p: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Appends records to a container's live log file and rotates it by its [`LogPolicy`].
#[derive(Debug)]
pub struct LogWriter {
    path: PathBuf,
    policy: LogPolicy,
    file: File,
    /// Bytes in the live file.
    size: u64,
    /// Whether anything was written since the last [`LogWriter::sync`].
    dirty: bool,
}

impl LogWriter {
    /// Opens (creating it and its directory) the live file for appending.
    pub fn open(path: &Path, policy: LogPolicy) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = File::options().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(LogWriter {
            path: path.to_path_buf(),
            policy,
            file,
            size,
            dirty: false,
        })
    }

    /// Appends records in order, rotating between records when the next one would take
    /// the live file past `max-size` (a single record larger than `max-size` gets a file of
    /// its own). Records between rotations go out in one `write`.
    pub fn write(&mut self, records: &[LogRecord]) -> std::io::Result<()> {
        let mut buf = Vec::new();
        for r in records {
            let bytes = logs::encode(self.policy.format, r);
            let pending = self.size + buf.len() as u64;
            if let Some(max) = self.policy.rotation.max_size {
                if pending > 0 && pending + bytes.len() as u64 > max {
                    self.append(&buf)?;
                    buf.clear();
                    self.rotate()?;
                }
            }
            buf.extend_from_slice(&bytes);
        }
        self.append(&buf)
    }

    fn append(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        self.file.write_all(buf)?;
        self.size += buf.len() as u64;
        self.dirty = true;
        Ok(())
    }

    /// Moves the live file to `<log>.1` (shifting older ones up, dropping the oldest beyond
    /// `max-file`, gzipping the new `.1` when asked), then starts a new live file.
    fn rotate(&mut self) -> std::io::Result<()> {
        let _lock = lock_dir(&self.path, true)?;
        let r = self.policy.rotation;
        let kept = r.max_file.saturating_sub(1);
        if kept == 0 {
            // Only the live file is kept: start it afresh (a new file, so a reader that
            // holds the old one sees a rotation, not a truncation).
            remove_quiet(&self.path)?;
        } else {
            for gz in [false, true] {
                remove_quiet(&rotated_path(&self.path, kept, gz))?;
            }
            // Only the files there are (the set is contiguous from 1), not up to max-file.
            let mut last = 0;
            while last + 1 < kept && existing_rotated(&self.path, last + 1).is_some() {
                last += 1;
            }
            for n in (1..=last).rev() {
                if let Some((p, gz)) = existing_rotated(&self.path, n) {
                    std::fs::rename(&p, rotated_path(&self.path, n + 1, gz))?;
                }
            }
            let first = rotated_path(&self.path, 1, false);
            std::fs::rename(&self.path, &first)?;
            if r.compress {
                gzip_replace(&first, &rotated_path(&self.path, 1, true))?;
            }
        }
        self.file = File::options().create(true).append(true).open(&self.path)?;
        self.size = 0;
        Ok(())
    }

    /// Flushes written data to disk (only if something was written since the last sync).
    pub fn sync(&mut self) -> std::io::Result<()> {
        if self.dirty {
            self.file.sync_data()?;
            self.dirty = false;
        }
        Ok(())
    }
}

/// The live file as a reader holds it.
#[derive(Debug)]
struct Live {
    file: File,
    /// Device and inode (the length and time in it are those at opening).
    inode: FileId,
    offset: u64,
}

/// A file's identity: device, inode, length and modification time. A compressed rotated
/// file carries the identity of the file it was made from in its gzip header comment, so a
/// reader can tell which live file it was (the length and time tell it apart from a file
/// that had the same inode number before).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i64,
}

impl FileId {
    fn of(m: &std::fs::Metadata) -> Self {
        FileId {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
        }
    }

    fn same_inode(&self, other: &FileId) -> bool {
        self.dev == other.dev && self.ino == other.ino
    }

    fn to_comment(self) -> Vec<u8> {
        format!(
            "berth-log {} {} {} {}",
            self.dev, self.ino, self.len, self.mtime_ns
        )
        .into_bytes()
    }

    fn from_comment(c: &[u8]) -> Option<Self> {
        let c = std::str::from_utf8(c).ok()?.strip_prefix("berth-log ")?;
        let mut it = c.split(' ');
        Some(FileId {
            dev: it.next()?.parse().ok()?,
            ino: it.next()?.parse().ok()?,
            len: it.next()?.parse().ok()?,
            mtime_ns: it.next()?.parse().ok()?,
        })
    }
}

/// Compresses `src` into `dst` (through a temporary name, so a reader never sees a partial
/// `.gz`; the header comment names `src`'s identity), then removes `src`.
fn gzip_replace(src: &Path, dst: &Path) -> std::io::Result<()> {
    let mut tmp = dst.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut input = File::open(src)?;
    let id = FileId::of(&input.metadata()?);
    let out = File::create(&tmp)?;
    let mut gz = flate2::GzBuilder::new()
        .comment(id.to_comment())
        .write(out, flate2::Compression::fast());
    std::io::copy(&mut input, &mut gz)?;
    gz.finish()?;
    std::fs::rename(&tmp, dst)?;
    std::fs::remove_file(src)
}

/// A rotated file found on disk, opened.
struct Rotated {
    file: File,
    gz: bool,
    id: Option<FileId>,
}

impl Rotated {
    fn open(path: &Path, gz: bool) -> std::io::Result<Option<Self>> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let id = if gz {
            let mut f = file.try_clone()?;
            let d = flate2::read::GzDecoder::new(&mut f);
            d.header()
                .and_then(|h| h.comment())
                .and_then(FileId::from_comment)
        } else {
            Some(FileId::of(&file.metadata()?))
        };
        Ok(Some(Rotated { file, gz, id }))
    }

    fn read(mut self) -> std::io::Result<Vec<u8>> {
        let mut data = Vec::new();
        self.file.seek(SeekFrom::Start(0))?;
        if self.gz {
            flate2::read::GzDecoder::new(self.file).read_to_end(&mut data)?;
        } else {
            self.file.read_to_end(&mut data)?;
        }
        Ok(data)
    }
}

/// Reads a container's log: first everything on disk in order (rotated files oldest first,
/// then the live file), then, when following, what is appended, across rotations.
#[derive(Debug)]
pub struct LogReader {
    path: PathBuf,
    format: LogFormat,
    live: Option<Live>,
    /// The last live file read to its end and left (after a rotation).
    left: Option<FileId>,
}

impl LogReader {
    /// A reader of the log whose live file is `path`, in `format`.
    pub fn new(path: impl Into<PathBuf>, format: LogFormat) -> Self {
        LogReader {
            path: path.into(),
            format,
            live: None,
            left: None,
        }
    }

    /// The live file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn open_live(&self) -> std::io::Result<Option<Live>> {
        match File::open(&self.path) {
            Ok(file) => {
                let inode = FileId::of(&file.metadata()?);
                Ok(Some(Live {
                    file,
                    inode,
                    offset: 0,
                }))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn live_id(&self) -> Option<FileId> {
        std::fs::metadata(&self.path).ok().map(|m| FileId::of(&m))
    }

    /// The records of the rotated files newer than the file `after` (all of them when
    /// `None` or when it is no longer on disk), oldest first; then holds the live file they
    /// precede (keeps the one it has when there is none). The set is listed and opened
    /// under the directory's shared lock, so no rotation happens meanwhile; it is read
    /// after. Returns whether a live file is held.
    fn catch_up(&mut self, after: Option<FileId>) -> std::io::Result<(Vec<LogRecord>, bool)> {
        let (live, newer) = {
            let Some(_lock) = lock_dir(&self.path, false)? else {
                return Ok((Vec::new(), false));
            };
            let live = self.open_live()?;
            let mut newer = Vec::new();
            let mut n = 1;
            while let Some((p, gz)) = existing_rotated(&self.path, n) {
                match Rotated::open(&p, gz)? {
                    Some(r) if r.id.is_some() && r.id == after => break,
                    Some(r) => newer.push(r),
                    None => break,
                }
                n += 1;
            }
            (live, newer)
        };
        let mut out = Vec::new();
        for r in newer.into_iter().rev() {
            out.extend(logs::parse_records_as(self.format, &r.read()?).0);
        }
        let found = live.is_some();
        if found {
            self.live = live;
        }
        Ok((out, found))
    }

    /// Every record on disk, oldest first; the reader then follows from the end.
    pub fn read_all(&mut self) -> std::io::Result<Vec<LogRecord>> {
        let (mut out, _) = self.catch_up(None)?;
        out.extend(self.read_new()?);
        Ok(out)
    }

    /// The records appended since the last read. After rotations the old live file is read
    /// to its end, then the rotated files newer than it, then the new live file.
    pub fn read_new(&mut self) -> std::io::Result<Vec<LogRecord>> {
        let mut out = Vec::new();
        loop {
            // Look at the path before draining: whatever the writer wrote to the old file
            // was written before it was renamed.
            let now = self.live_id();
            let Some(live) = &mut self.live else {
                let (records, found) = self.catch_up(self.left)?;
                out.extend(records);
                if !found {
                    return Ok(out);
                }
                continue;
            };
            live.file.seek(SeekFrom::Start(live.offset))?;
            let mut data = Vec::new();
            live.file.read_to_end(&mut data)?;
            let (records, used) = logs::parse_records_as(self.format, &data);
            live.offset += used as u64;
            out.extend(records);
            if now.is_some_and(|n| n.same_inode(&live.inode)) {
                return Ok(out);
            }
            // Rotated: the files after this one, then the new live one. The old one stays
            // open until then, so its inode (part of its identity) is not reused meanwhile.
            let left = FileId::of(&live.file.metadata()?);
            self.left = Some(left);
            let (records, found) = self.catch_up(Some(left))?;
            out.extend(records);
            if !found {
                return Ok(out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log_config::Rotation;
    use crate::logs::Stream;
    use chrono::Utc;

    fn rec(i: usize) -> LogRecord {
        LogRecord {
            time: Utc::now(),
            stream: Stream::Stdout,
            log: format!("line {i:06}\n").into_bytes(),
        }
    }

    fn policy(format: LogFormat, max_size: u64, max_file: u32, compress: bool) -> LogPolicy {
        LogPolicy {
            format,
            rotation: Rotation {
                max_size: Some(max_size),
                max_file,
                compress,
            },
        }
    }

    fn numbers(records: &[LogRecord]) -> Vec<usize> {
        records
            .iter()
            .map(|r| {
                String::from_utf8_lossy(&r.log)
                    .trim()
                    .trim_start_matches("line ")
                    .parse()
                    .unwrap()
            })
            .collect()
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn sizes_and_file_count_are_respected_and_the_newest_lines_kept() {
        for format in [LogFormat::JsonLines, LogFormat::Binary] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("c.log");
            let one = logs::encode(format, &rec(0)).len() as u64;
            let max = one * 10 + one / 2; // ten records per file
            let mut w = LogWriter::open(&path, policy(format, max, 3, false)).unwrap();
            for i in 0..95 {
                w.write(&[rec(i)]).unwrap();
            }
            assert_eq!(files(dir.path()), ["c.log", "c.log.1", "c.log.2"]);
            for f in files(dir.path()) {
                let len = std::fs::metadata(dir.path().join(&f)).unwrap().len();
                assert!(len <= max, "{f} has {len} bytes, max {max}");
            }
            let got = numbers(&LogReader::new(&path, format).read_all().unwrap());
            assert_eq!(got, (70..95).collect::<Vec<_>>(), "{format:?}");
        }
    }

    #[test]
    fn batches_rotate_between_records_and_max_file_1_starts_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let one = rec(0).to_line().len() as u64;
        let mut w =
            LogWriter::open(&path, policy(LogFormat::JsonLines, one * 4, 1, false)).unwrap();
        let batch: Vec<LogRecord> = (0..10).map(rec).collect();
        w.write(&batch).unwrap();
        assert_eq!(files(dir.path()), ["c.log"]);
        let got = numbers(
            &LogReader::new(&path, LogFormat::JsonLines)
                .read_all()
                .unwrap(),
        );
        assert_eq!(got, [8, 9]);
    }

    #[test]
    fn compressed_rotations_read_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let one = rec(0).to_frame().len() as u64;
        let mut w = LogWriter::open(&path, policy(LogFormat::Binary, one * 5, 4, true)).unwrap();
        for i in 0..23 {
            w.write(&[rec(i)]).unwrap();
        }
        assert_eq!(
            files(dir.path()),
            ["c.log", "c.log.1.gz", "c.log.2.gz", "c.log.3.gz"]
        );
        let gz = std::fs::read(dir.path().join("c.log.1.gz")).unwrap();
        assert_eq!(&gz[..2], &[0x1f, 0x8b], "gzip magic");
        let got = numbers(&LogReader::new(&path, LogFormat::Binary).read_all().unwrap());
        assert_eq!(got, (5..23).collect::<Vec<_>>());
    }

    /// A writer thread writes numbered lines with a small max-size while a follower reads:
    /// the follower sees every line exactly once, in order, across all rotations.
    #[test]
    fn concurrent_write_and_rotate_lose_and_duplicate_nothing() {
        for compress in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("c.log");
            let one = rec(0).to_line().len() as u64;
            const N: usize = 2_000;
            // Some 200 rotations, and enough files kept that none is dropped.
            let mut w = LogWriter::open(
                &path,
                policy(LogFormat::JsonLines, one * 10, 1_000, compress),
            )
            .unwrap();
            let mut reader = LogReader::new(&path, LogFormat::JsonLines);
            let mut seen = reader.read_all().unwrap();
            let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let writer = {
                let done = done.clone();
                std::thread::spawn(move || {
                    let mut i = 0;
                    while i < N {
                        let n = (i % 5 + 1).min(N - i);
                        let batch: Vec<LogRecord> = (i..i + n).map(rec).collect();
                        w.write(&batch).unwrap();
                        i += n;
                    }
                    done.store(true, std::sync::atomic::Ordering::SeqCst);
                })
            };
            loop {
                let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                seen.extend(reader.read_new().unwrap());
                if finished {
                    break;
                }
            }
            writer.join().unwrap();
            assert_eq!(
                numbers(&seen),
                (0..N).collect::<Vec<_>>(),
                "compress {compress}"
            );
            // And a fresh reader reads the same from the rotated set.
            let again = LogReader::new(&path, LogFormat::JsonLines)
                .read_all()
                .unwrap();
            assert_eq!(numbers(&again), (0..N).collect::<Vec<_>>());
        }
    }
}
