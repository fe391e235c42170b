//! Task logs between nodes: the `Tasks.Logs` server-streaming RPC, its domain types, and
//! the seam through which the serving node reads its own task containers' logs.
//!
//! Owns: [`TaskLogQuery`] and [`TaskLogLine`] and their protobuf conversions, the
//! [`TaskLogSource`] trait the daemon implements (this crate knows no containers), the
//! server side (lines from the source, batched into chunks) and the client side
//! ([`ClusterNode::task_logs`](crate::ClusterNode::task_logs)).
//!
//! Does not own: which tasks a service has or which nodes to ask (the daemon reads that from
//! the state), reading container logs (the daemon's runtime), Docker's wire shape of log
//! lines (the daemon's API).
//!
//! ```text
//!  asking node ──Tasks.Logs(TaskLogsRequest)──> serving node: TaskLogSource::open(query)
//!       ▲                                              │ mpsc of TaskLogLine (one reader
//!       └──── stream TaskLogsChunk (lines batched) ◄───┘  per task container)
//! ```
//!
//! Cancelling the call (the asking node drops the stream) drops the source's receiver;
//! the source's readers notice the closed channel and stop.

use super::pb::{TaskLogLine as PbLine, TaskLogsChunk, TaskLogsRequest};

/// Most lines sent in one chunk.
pub(crate) const LINES_PER_CHUNK: usize = 256;
/// Capacity of the channel between a source and the RPC (lines).
pub const LINE_CHANNEL: usize = 1024;

/// Which output stream a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputStream {
    /// Standard output (also everything of a TTY container).
    Stdout,
    /// Standard error.
    Stderr,
}

/// Which task containers' logs to send, and how (Docker's `logs` options).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskLogQuery {
    /// Task containers of these services (full ids) ...
    pub service_ids: Vec<String>,
    /// ... and of these tasks (full ids).
    pub task_ids: Vec<String>,
    /// Keep streaming new lines, and the logs of matching tasks that start later, until
    /// the caller goes away.
    pub follow: bool,
    /// Only the last `tail` lines of each task container; `None`: all.
    pub tail: Option<u64>,
    /// Only lines written at or after this time (unix nanoseconds).
    pub since_unix_nanos: Option<i64>,
    /// Send standard output lines.
    pub stdout: bool,
    /// Send standard error lines.
    pub stderr: bool,
}

/// One log line of one task container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskLogLine {
    /// The task.
    pub task_id: String,
    /// Its service.
    pub service_id: String,
    /// Docker-style id (16 hex digits) of the node that ran it.
    pub node_id: String,
    /// Where it was written.
    pub stream: OutputStream,
    /// When the runtime read it (unix nanoseconds).
    pub time_unix_nanos: i64,
    /// The line as written, newline included (a partial line has none).
    pub line: Vec<u8>,
}

/// Why a source could not open a query.
pub type TaskLogSourceError = Box<dyn std::error::Error + Send + Sync>;

/// The serving node's task containers' logs, implemented by the daemon.
pub trait TaskLogSource: std::fmt::Debug + Send + Sync + 'static {
    /// Starts reading the logs `query` selects; lines arrive on the receiver in the order
    /// each container wrote them (containers interleaved). The receiver ends when every
    /// reader is done (never, for a follow); dropping it must stop the readers. Called
    /// inside a Tokio runtime.
    fn open(
        &self,
        query: TaskLogQuery,
    ) -> Result<tokio::sync::mpsc::Receiver<TaskLogLine>, TaskLogSourceError>;
}

impl From<&TaskLogQuery> for TaskLogsRequest {
    fn from(q: &TaskLogQuery) -> Self {
        TaskLogsRequest {
            service_ids: q.service_ids.clone(),
            task_ids: q.task_ids.clone(),
            follow: q.follow,
            tail: q.tail,
            since_unix_nanos: q.since_unix_nanos.unwrap_or(0),
            stdout: q.stdout,
            stderr: q.stderr,
        }
    }
}

impl From<TaskLogsRequest> for TaskLogQuery {
    fn from(r: TaskLogsRequest) -> Self {
        TaskLogQuery {
            service_ids: r.service_ids,
            task_ids: r.task_ids,
            follow: r.follow,
            tail: r.tail,
            since_unix_nanos: (r.since_unix_nanos != 0).then_some(r.since_unix_nanos),
            stdout: r.stdout,
            stderr: r.stderr,
        }
    }
}

impl From<TaskLogLine> for PbLine {
    fn from(l: TaskLogLine) -> Self {
        PbLine {
            task_id: l.task_id,
            service_id: l.service_id,
            node_id: l.node_id,
            stream: match l.stream {
                OutputStream::Stdout => 1,
                OutputStream::Stderr => 2,
            },
            time_unix_nanos: l.time_unix_nanos,
            line: l.line,
        }
    }
}

impl From<PbLine> for TaskLogLine {
    /// Any stream number but 2 is standard output.
    fn from(l: PbLine) -> Self {
        TaskLogLine {
            task_id: l.task_id,
            service_id: l.service_id,
            node_id: l.node_id,
            stream: if l.stream == 2 {
                OutputStream::Stderr
            } else {
                OutputStream::Stdout
            },
            time_unix_nanos: l.time_unix_nanos,
            line: l.line,
        }
    }
}

/// The source's lines as a stream of chunks: each chunk takes whatever lines are waiting
/// (at most [`LINES_PER_CHUNK`]), so a busy log travels in few messages and a quiet one
/// without delay.
pub(crate) fn chunks(
    rx: tokio::sync::mpsc::Receiver<TaskLogLine>,
) -> impl futures::Stream<Item = TaskLogsChunk> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move {
        let mut lines = Vec::new();
        if rx.recv_many(&mut lines, LINES_PER_CHUNK).await == 0 {
            return None;
        }
        let chunk = TaskLogsChunk {
            lines: lines.into_iter().map(PbLine::from).collect(),
        };
        Some((chunk, rx))
    })
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    fn line(n: u8) -> TaskLogLine {
        TaskLogLine {
            task_id: "t".into(),
            service_id: "s".into(),
            node_id: "0000000000000001".into(),
            stream: if n % 2 == 0 {
                OutputStream::Stdout
            } else {
                OutputStream::Stderr
            },
            time_unix_nanos: i64::from(n),
            line: vec![n, b'\n'],
        }
    }

    #[test]
    fn query_and_lines_round_trip_through_protobuf() {
        let q = TaskLogQuery {
            service_ids: vec!["s".into()],
            task_ids: vec![],
            follow: true,
            tail: Some(0),
            since_unix_nanos: Some(5),
            stdout: true,
            stderr: false,
        };
        assert_eq!(TaskLogQuery::from(TaskLogsRequest::from(&q)), q);
        let all = TaskLogQuery {
            tail: None,
            since_unix_nanos: None,
            ..q
        };
        assert_eq!(TaskLogQuery::from(TaskLogsRequest::from(&all)), all);
        for n in 0..2 {
            assert_eq!(TaskLogLine::from(PbLine::from(line(n))), line(n));
        }
    }

    #[tokio::test]
    async fn waiting_lines_travel_together_and_the_stream_ends_with_the_source() {
        let (tx, rx) = tokio::sync::mpsc::channel(LINE_CHANNEL);
        for n in 0..3 {
            tx.send(line(n)).await.unwrap();
        }
        drop(tx);
        let got: Vec<TaskLogsChunk> = chunks(rx).collect().await;
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].lines.len(), 3);
    }
}
