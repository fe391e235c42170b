//! Container logs: the records the shim writes and the runtime reads, in two encodings:
//! json-file's one JSON object per line, `{"time","stream","log"}` (Docker's shape), and the
//! `local` driver's length-delimited binary frames that keep the output's exact bytes.
//!
//! Owns the record formats ([`encode`], [`parse_records_as`]), the line splitter the shim
//! writes through ([`LineSplitter`]), and the selection of records for `logs`
//! (since/until/tail) as a pure function ([`select`]). Does not own the files (their
//! location is the runtime's layout; rotation and reading across rotated files are
//! `rotate`'s) nor when a follow ends (the runtime knows when the container has exited).

use std::io::{BufRead, BufReader};
use std::path::Path;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Result, RuntimeError};
pub use crate::log_config::LogFormat;

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
    /// The output's bytes. In JSON (json-file) a string: invalid UTF-8 is replaced by
    /// U+FFFD there, as Docker's json-file does; the binary format keeps them exactly.
    #[serde(with = "lossy_text")]
    pub log: Vec<u8>,
}

/// `log` as a JSON string.
mod lossy_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&String::from_utf8_lossy(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        String::deserialize(d).map(String::into_bytes)
    }
}

impl LogRecord {
    /// The record as one JSON line (with trailing newline).
    pub fn to_line(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// The record as one binary frame: `len: u32 BE`, then `len` bytes of payload (`stream:
    /// u8` 1 stdout / 2 stderr, `time: i64 BE` nanoseconds since the Unix epoch, the output's
    /// bytes), then `len` again, so a damaged tail is detected.
    pub fn to_frame(&self) -> Vec<u8> {
        let len = (1 + 8 + self.log.len()) as u32;
        let mut v = Vec::with_capacity(len as usize + 8);
        v.extend_from_slice(&len.to_be_bytes());
        v.push(match self.stream {
            Stream::Stdout => 1,
            Stream::Stderr => 2,
        });
        let nanos = self.time.timestamp_nanos_opt().unwrap_or(i64::MAX);
        v.extend_from_slice(&nanos.to_be_bytes());
        v.extend_from_slice(&self.log);
        v.extend_from_slice(&len.to_be_bytes());
        v
    }
}

/// A record in the given on-disk format.
pub fn encode(format: LogFormat, r: &LogRecord) -> Vec<u8> {
    match format {
        LogFormat::JsonLines => r.to_line(),
        LogFormat::Binary => r.to_frame(),
    }
}

/// Parses the complete records of `data` in `format`; returns them and the bytes consumed
/// (an incomplete last record is left for the next read).
pub fn parse_records_as(format: LogFormat, data: &[u8]) -> (Vec<LogRecord>, usize) {
    match format {
        LogFormat::JsonLines => parse_records(data),
        LogFormat::Binary => parse_frames(data),
    }
}

fn parse_frames(data: &[u8]) -> (Vec<LogRecord>, usize) {
    let mut out = Vec::new();
    let mut at = 0;
    while data.len() - at >= 8 {
        let len = u32::from_be_bytes(data[at..at + 4].try_into().expect("4 bytes")) as usize;
        let end = at + 4 + len;
        if len < 9 || data.len() < end + 4 {
            break;
        }
        if data[end..end + 4] != data[at..at + 4] {
            break; // damaged: stop here rather than misread what follows
        }
        let p = &data[at + 4..end];
        let nanos = i64::from_be_bytes(p[1..9].try_into().expect("8 bytes"));
        out.push(LogRecord {
            time: Utc.timestamp_nanos(nanos),
            stream: if p[0] == 2 {
                Stream::Stderr
            } else {
                Stream::Stdout
            },
            log: p[9..].to_vec(),
        });
        at = end + 4;
    }
    (out, at)
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

/// Counts the lines of a file (for tests and diagnostics).
pub fn count_lines(path: &Path) -> Result<usize> {
    let f = std::fs::File::open(path).map_err(|e| RuntimeError::io("open", path, e))?;
    Ok(BufReader::new(f).lines().count())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(sec: i64, stream: Stream, log: &str) -> LogRecord {
        LogRecord {
            time: Utc.timestamp_opt(sec, 0).unwrap(),
            stream,
            log: log.as_bytes().to_vec(),
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
        assert_eq!(got, [b"b\n".to_vec(), b"c\n".to_vec()]);
        let tail = LogOptions {
            tail: Some(2),
            ..LogOptions::all()
        };
        let got: Vec<_> = select(all, &tail).into_iter().map(|r| r.log).collect();
        assert_eq!(got, [b"c\n".to_vec(), b"d\n".to_vec()]);
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
    fn frames_keep_bytes_and_wait_for_the_rest() {
        let a = LogRecord {
            time: Utc.timestamp_opt(7, 123).unwrap(),
            stream: Stream::Stderr,
            log: vec![0, 1, 0xff, b'\n'],
        };
        let b = rec(8, Stream::Stdout, "x");
        let mut bytes = a.to_frame();
        bytes.extend(b.to_frame());
        let full = bytes.len();
        bytes.extend(&b.to_frame()[..5]);
        let (got, used) = parse_records_as(LogFormat::Binary, &bytes);
        assert_eq!(got, vec![a, b]);
        assert_eq!(used, full);
    }
}
