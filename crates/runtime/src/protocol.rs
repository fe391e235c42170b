//! The wire protocol between the runtime and a shim, and the files a shim keeps.
//!
//! Owns message and frame encodings and the persisted records (shim config, exit record),
//! each versioned. Does not own sockets or processes.
//!
//! ```text
//!  client --connect shim.sock--> one JSON line: Request
//!         <-------------------- one JSON line: Response
//!  (Attach only) then frames both ways until either side closes:
//!     [kind u8][0 0 0][len u32 BE][payload]
//!     client -> shim: STDIN, STDIN_CLOSE, RESIZE(rows u16 BE, cols u16 BE)
//!     shim -> client: STDOUT, STDERR (a tty's output is all STDOUT)
//! ```
//!
//! Output frames use Docker's multiplexed-stream header, so a daemon can forward them to a
//! non-tty Docker client as they are.

use std::io::{Read, Write};
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Result, RuntimeError};

/// Version of [`ShimConfig`] and [`ExitRecord`] on disk.
pub const RECORD_VERSION: u32 = 1;

/// Frame kinds.
pub mod kind {
    pub const STDIN: u8 = 0;
    pub const STDOUT: u8 = 1;
    pub const STDERR: u8 = 2;
    pub const STDIN_CLOSE: u8 = 3;
    pub const RESIZE: u8 = 4;
}

/// Largest accepted frame payload.
pub const MAX_FRAME: u32 = 1 << 20;

/// A request to a shim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// What the shim knows now.
    State,
    /// Signal the process (`all`: every process of the container).
    Kill {
        signal: i32,
        all: bool,
    },
    /// Answer once the process has exited.
    Wait,
    Resize {
        rows: u16,
        cols: u16,
    },
    /// Switch this connection to frames.
    Attach {
        stdin: bool,
        stdout: bool,
        stderr: bool,
    },
}

/// A shim's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    Ok,
    State { pid: i32, exit: Option<ExitStatus> },
    Exited { exit: ExitStatus },
    Error { message: String },
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// Exit code; 128 + signal number when killed by a signal (as Docker reports it).
    pub code: i32,
    pub signal: Option<i32>,
    pub oom_killed: bool,
    pub finished_at: DateTime<Utc>,
    /// Set when the runtime, not the process, ended it (shown as Docker's `State.Error`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<ExitCause>,
}

/// Why the runtime ended a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitCause {
    /// The shim supervising the container died (e.g. `kill -9`) without recording an exit:
    /// the runtime killed the processes left in the container's cgroup.
    ShimDied,
}

impl ExitCause {
    /// The sentence shown as `State.Error`.
    pub fn message(self) -> &'static str {
        match self {
            ExitCause::ShimDied => {
                "the container's shim died without recording an exit: its processes were killed by berthd"
            }
        }
    }
}

impl ExitStatus {
    /// From a wait status.
    pub fn from_wait(exited_code: Option<i32>, signal: Option<i32>, oom_killed: bool) -> Self {
        let code = match (exited_code, signal) {
            (Some(c), _) => c,
            (None, Some(s)) => 128 + s,
            (None, None) => 255,
        };
        ExitStatus {
            code,
            signal,
            oom_killed,
            finished_at: Utc::now(),
            cause: None,
        }
    }
}

/// What a shim supervises.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ShimTask {
    /// The container's init: create and start from the bundle.
    Init { bundle: PathBuf },
    /// An extra process in the running container, from an OCI process JSON file.
    Exec { exec_id: String, process: PathBuf },
}

/// Everything a shim is told, written by the runtime into `shim.json` before spawning it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShimConfig {
    pub version: u32,
    pub id: String,
    pub task: ShimTask,
    /// libcontainer's state root.
    pub state_root: PathBuf,
    /// The unix socket the shim serves.
    pub socket: PathBuf,
    /// Where the shim records the exit status.
    pub exit_file: PathBuf,
    /// The pid file of the shim itself.
    pub pid_file: PathBuf,
    /// Log file (container init only; execs are not logged, as with Docker; none with the
    /// `none` driver).
    pub log_file: Option<PathBuf>,
    /// How the log file is written: record format and rotation (absent in configs written
    /// before log drivers: json-file without rotation).
    #[serde(default)]
    pub log_policy: crate::log_config::LogPolicy,
    /// The container's cgroups path (for the OOM check).
    pub cgroups_path: String,
    /// The rootfs overlay (init only): the shim mounts it in a mount namespace of its own,
    /// so it disappears with the shim and no unmount is ever needed on the host.
    #[serde(default)]
    pub rootfs_mount: Option<crate::snapshot::MountPlan>,
    pub tty: bool,
    pub open_stdin: bool,
    /// How many attach clients (asking for stdout or stderr) are on their way: the shim
    /// reads no output until that many have attached (or [`HOLD_LIMIT_SECS`] passed), so
    /// they see the output from its first byte; meanwhile the process blocks once the pipe
    /// or pty buffer is full, as under Docker's attach-before-start.
    #[serde(default)]
    pub hold_output_for: u32,
}

/// Longest time a shim holds output back for attach clients that do not come (seconds).
pub const HOLD_LIMIT_SECS: u64 = 30;

/// The persisted exit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    pub version: u32,
    pub pid: i32,
    pub exit: ExitStatus,
}

/// What a standby shim (`berth-shim --standby`, started ahead of need) is told on its stdin:
/// the config to run, and where its diagnostics (stderr) go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StandbyOrder {
    pub config: PathBuf,
    pub stderr: PathBuf,
}

/// The first line a shim writes to its starter: started (with pid) or why not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Ready {
    Started { pid: i32, shim_pid: i32 },
    Failed { message: String },
}

/// Writes one JSON line.
pub fn write_line<T: Serialize>(w: &mut impl Write, msg: &T) -> std::io::Result<()> {
    let mut v = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    v.push(b'\n');
    w.write_all(&v)?;
    w.flush()
}

/// Reads one JSON line byte by byte (so no frame data after it is consumed).
pub fn read_line<T: for<'de> Deserialize<'de>>(r: &mut impl Read) -> Result<T> {
    let mut buf = Vec::new();
    let mut b = [0u8; 1];
    loop {
        match r.read(&mut b) {
            Ok(0) => {
                return Err(RuntimeError::Protocol {
                    detail: "connection closed before a complete message",
                })
            }
            Ok(_) if b[0] == b'\n' => break,
            Ok(_) => {
                buf.push(b[0]);
                if buf.len() > 64 * 1024 {
                    return Err(RuntimeError::Protocol {
                        detail: "message too long",
                    });
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(RuntimeError::io("read", "shim socket", e)),
        }
    }
    serde_json::from_slice(&buf).map_err(|source| RuntimeError::Json {
        what: "shim message",
        source,
    })
}

/// Encodes one frame.
pub fn encode_frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + payload.len());
    v.push(kind);
    v.extend_from_slice(&[0, 0, 0]);
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// Encodes `payload` as as many frames as [`MAX_FRAME`] requires (one for a short payload;
/// none for an empty one).
pub fn encode_frames(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(payload.len() + 8 * (payload.len() / MAX_FRAME as usize + 1));
    for chunk in payload.chunks(MAX_FRAME as usize) {
        v.push(kind);
        v.extend_from_slice(&[0, 0, 0]);
        v.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
        v.extend_from_slice(chunk);
    }
    v
}

/// A resize frame.
pub fn resize_frame(rows: u16, cols: u16) -> Vec<u8> {
    let mut p = rows.to_be_bytes().to_vec();
    p.extend_from_slice(&cols.to_be_bytes());
    encode_frame(kind::RESIZE, &p)
}

/// Incremental frame decoder.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
}

impl FrameDecoder {
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete frame, if any.
    pub fn next_frame(&mut self) -> Result<Option<(u8, Vec<u8>)>> {
        if self.buf.len() < 8 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[4], self.buf[5], self.buf[6], self.buf[7]]);
        if len > MAX_FRAME {
            return Err(RuntimeError::Protocol {
                detail: "frame too large",
            });
        }
        let total = 8 + len as usize;
        if self.buf.len() < total {
            return Ok(None);
        }
        let kind = self.buf[0];
        let payload = self.buf[8..total].to_vec();
        self.buf.drain(..total);
        Ok(Some((kind, payload)))
    }
}

/// Parses a resize payload.
pub fn parse_resize(payload: &[u8]) -> Option<(u16, u16)> {
    (payload.len() == 4).then(|| {
        (
            u16::from_be_bytes([payload[0], payload[1]]),
            u16::from_be_bytes([payload[2], payload[3]]),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_in_pieces() {
        let mut bytes = encode_frame(kind::STDOUT, b"hello");
        bytes.extend(resize_frame(24, 80));
        let mut d = FrameDecoder::default();
        for chunk in bytes.chunks(3) {
            d.push(chunk);
        }
        assert_eq!(
            d.next_frame().unwrap(),
            Some((kind::STDOUT, b"hello".to_vec()))
        );
        let (k, p) = d.next_frame().unwrap().unwrap();
        assert_eq!(k, kind::RESIZE);
        assert_eq!(parse_resize(&p), Some((24, 80)));
        assert_eq!(d.next_frame().unwrap(), None);
    }

    #[test]
    fn long_payloads_split_into_frames_the_decoder_accepts() {
        let payload: Vec<u8> = (0..(2 * MAX_FRAME as usize + 5)).map(|i| i as u8).collect();
        let bytes = encode_frames(kind::STDIN, &payload);
        let mut d = FrameDecoder::default();
        d.push(&bytes);
        let mut got = Vec::new();
        while let Some((k, p)) = d.next_frame().unwrap() {
            assert_eq!(k, kind::STDIN);
            assert!(p.len() <= MAX_FRAME as usize);
            got.extend(p);
        }
        assert_eq!(got, payload);
        assert!(encode_frames(kind::STDIN, &[]).is_empty());
    }

    #[test]
    fn oversized_frame_is_rejected() {
        let mut d = FrameDecoder::default();
        d.push(&[1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
        assert!(d.next_frame().is_err());
    }

    #[test]
    fn lines_round_trip() {
        let mut buf = Vec::new();
        write_line(
            &mut buf,
            &Request::Kill {
                signal: 9,
                all: false,
            },
        )
        .unwrap();
        buf.extend_from_slice(b"trailing");
        let mut r = &buf[..];
        let req: Request = read_line(&mut r).unwrap();
        assert_eq!(
            req,
            Request::Kill {
                signal: 9,
                all: false
            }
        );
        assert_eq!(r, b"trailing");
    }

    #[test]
    fn exit_code_from_signal() {
        assert_eq!(ExitStatus::from_wait(Some(3), None, false).code, 3);
        assert_eq!(ExitStatus::from_wait(None, Some(9), true).code, 137);
    }
}
