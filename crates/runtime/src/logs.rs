//! Container logs: one JSON record per line, `{"time","stream","log"}` (Docker's json-file
//! shape), written by the shim and read by the runtime.
//!
//! Owns the record format, the line splitter the shim writes through ([`LineSplitter`]), and
//! the selection of records for `logs` (since/until/tail) as a pure function ([`select`]).
//! Does not own the file's location (the runtime's layout) nor when a follow ends (the
//! runtime knows when the container has exited).

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Result, RuntimeError};

/// Which output stream a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One log record: a line (with its `\n`) or a partial line flushed at a size bound or EOF.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    pub time: DateTime<Utc>,
    pub stream: Stream,
    pub log: String,
}

impl LogRecord {
    /// The record as one JSON line (with trailing newline).
    pub fn to_line(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).unwrap_or_default();
        v.push(b'\n');
        v
    }
}

/// Longest record the splitter holds back waiting for a newline.
pub const MAX_PARTIAL: usize = 16 * 1024;

/// Splits a byte stream into line records, holding back an incomplete last line.
#[derive(Debug, Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// Feeds bytes; returns the complete lines (each ending in `\n`), and partial lines longer
    /// than [`MAX_PARTIAL`].
    pub fn push(&mut self, data: &[u8]) -> Vec<Vec<u8>> {
        self.pending.extend_from_slice(data);
        let mut out = Vec::new();
        while let Some(pos) = self.pending.iter().position(|b| *b == b'\n') {
            let rest = self.pending.split_off(pos + 1);
            out.push(std::mem::replace(&mut self.pending, rest));
        }
        while self.pending.len() > MAX_PARTIAL {
            let rest = self.pending.split_off(MAX_PARTIAL);
            out.push(std::mem::replace(&mut self.pending, rest));
        }
        out
    }

    /// Whatever is left at end of stream.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        (!self.pending.is_empty()).then(|| std::mem::take(&mut self.pending))
    }
}

/// Which records `logs` returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    pub stdout: bool,
    pub stderr: bool,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Only the last n records (after the other filters).
    pub tail: Option<usize>,
    /// Keep reading until the container exits.
    pub follow: bool,
}

impl LogOptions {
    /// Both streams, everything, no follow.
    pub fn all() -> Self {
        LogOptions {
            stdout: true,
            stderr: true,
            ..Default::default()
        }
    }

    fn wants(&self, r: &LogRecord) -> bool {
        let stream_ok = match r.stream {
            Stream::Stdout => self.stdout,
            Stream::Stderr => self.stderr,
        };
        stream_ok
            && self.since.is_none_or(|s| r.time >= s)
            && self.until.is_none_or(|u| r.time <= u)
    }
}

/// Applies stream, since, until and tail filters.
pub fn select(records: Vec<LogRecord>, opts: &LogOptions) -> Vec<LogRecord> {
    let mut v: Vec<LogRecord> = records.into_iter().filter(|r| opts.wants(r)).collect();
    if let Some(n) = opts.tail {
        let skip = v.len().saturating_sub(n);
        v.drain(..skip);
    }
    v
}

/// Parses the complete lines of `text`; returns records and the bytes consumed (a trailing
/// line without newline is left for the next read).
pub fn parse_records(text: &[u8]) -> (Vec<LogRecord>, usize) {
    let mut out = Vec::new();
    let mut consumed = 0;
    for line in text.split_inclusive(|b| *b == b'\n') {
        if !line.ends_with(b"\n") {
            break;
        }
        consumed += line.len();
        if let Ok(r) = serde_json::from_slice::<LogRecord>(line) {
            out.push(r);
        }
    }
    (out, consumed)
}

/// Reads a container log file from the start, and (when following) what is appended later.
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    offset: u64,
}

impl LogFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        LogFile {
            path: path.into(),
            offset: 0,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every complete record appended since the last call.
    pub fn read_new(&mut self) -> Result<Vec<LogRecord>> {
        let file = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(RuntimeError::io("open", &self.path, e)),
        };
        let mut r = BufReader::new(file);
        r.seek(SeekFrom::Start(self.offset))
            .map_err(|e| RuntimeError::io("seek", &self.path, e))?;
        let mut buf = Vec::new();
        r.read_to_end(&mut buf)
            .map_err(|e| RuntimeError::io("read", &self.path, e))?;
        let (records, used) = parse_records(&buf);
        self.offset += used as u64;
        Ok(records)
    }
}

/// Counts the lines of a file (for tests and diagnostics).
pub fn count_lines(path: &Path) -> Result<usize> {
    let f = std::fs::File::open(path).map_err(|e| RuntimeError::io("open", path, e))?;
    Ok(BufReader::new(f).lines().count())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn rec(sec: i64, stream: Stream, log: &str) -> LogRecord {
        LogRecord {
            time: Utc.timestamp_opt(sec, 0).unwrap(),
            stream,
            log: log.into(),
        }
    }

    #[test]
    fn splitter_holds_partial_lines() {
        let mut s = LineSplitter::default();
        assert_eq!(s.push(b"a\nb"), vec![b"a\n".to_vec()]);
        assert_eq!(s.push(b"c\nd\n"), vec![b"bc\n".to_vec(), b"d\n".to_vec()]);
        assert_eq!(s.push(b"tail"), Vec::<Vec<u8>>::new());
        assert_eq!(s.finish(), Some(b"tail".to_vec()));
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn splitter_bounds_long_lines() {
        let mut s = LineSplitter::default();
        let out = s.push(&vec![b'x'; MAX_PARTIAL * 2 + 5]);
        assert_eq!(out.len(), 2);
        assert_eq!(s.finish().unwrap().len(), 5);
    }

    #[test]
    fn select_filters_and_tails() {
        let all = vec![
            rec(1, Stream::Stdout, "a\n"),
            rec(2, Stream::Stderr, "b\n"),
            rec(3, Stream::Stdout, "c\n"),
            rec(4, Stream::Stdout, "d\n"),
        ];
        let only_out = LogOptions {
            stdout: true,
            ..Default::default()
        };
        assert_eq!(select(all.clone(), &only_out).len(), 3);
        let window = LogOptions {
            since: Some(Utc.timestamp_opt(2, 0).unwrap()),
            until: Some(Utc.timestamp_opt(3, 0).unwrap()),
            ..LogOptions::all()
        };
        let got: Vec<_> = select(all.clone(), &window)
            .into_iter()
            .map(|r| r.log)
            .collect();
        assert_eq!(got, ["b\n", "c\n"]);
        let tail = LogOptions {
            tail: Some(2),
            ..LogOptions::all()
        };
        let got: Vec<_> = select(all, &tail).into_iter().map(|r| r.log).collect();
        assert_eq!(got, ["c\n", "d\n"]);
    }

    #[test]
    fn records_round_trip_and_partial_lines_wait() {
        let a = rec(5, Stream::Stderr, "x\n");
        let mut bytes = a.to_line();
        bytes.extend_from_slice(b"{\"time\":");
        let (got, used) = parse_records(&bytes);
        assert_eq!(got, vec![a.clone()]);
        assert_eq!(used, a.to_line().len());
    }

    #[test]
    fn log_file_reads_incrementally() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        let mut lf = LogFile::new(&p);
        assert!(lf.read_new().unwrap().is_empty());
        std::fs::write(&p, rec(1, Stream::Stdout, "1\n").to_line()).unwrap();
        assert_eq!(lf.read_new().unwrap().len(), 1);
        let mut more = rec(1, Stream::Stdout, "1\n").to_line();
        more.extend(rec(2, Stream::Stdout, "2\n").to_line());
        std::fs::write(&p, &more).unwrap();
        let got = lf.read_new().unwrap();
        assert_eq!(got, vec![rec(2, Stream::Stdout, "2\n")]);
    }
}
