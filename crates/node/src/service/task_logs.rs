//! The logs of this node's task containers, for `docker service logs` (any node asks every
//! node that ran a task of the service, over the cluster transport, and merges).
//!
//! Owns: [`TaskLogReader`], this node's [`TaskLogSource`]: which local containers a query
//! selects (by Swarm's `com.docker.swarm.{service,task,node}.id` labels), one blocking
//! reader per container (the runtime's log reader, as `docker logs` uses it), the rescan
//! that adds tasks started during a follow, and stopping every reader when the asker goes
//! away.
//!
//! Does not own: which nodes to ask and Docker's line format (`api/services.rs`), the
//! transport (`berth-consensus`), the log files (the runtime).
//!
//! ```text
//!  Tasks.Logs / local call ──> TaskLogReader::open(query) ──> scan (every 1 s while following)
//!                                                              └─ reader thread per container
//!  receiver <── TaskLogLine ──────────────────────────────────────┘ (ends when it is dropped)
//! ```

use std::collections::HashSet;
use std::time::Duration;

use berth_consensus::{OutputStream, TaskLogLine, TaskLogQuery, TaskLogSource, TaskLogSourceError};
use berth_runtime::logs::{LogOptions, Stream};
use tokio::sync::mpsc;

use super::agent::{NODE_ID_LABEL, TASK_ID_LABEL};
use super::containers::ContainerService;

/// The label naming a task container's service.
pub const SERVICE_ID_LABEL: &str = "com.docker.swarm.service.id";
/// How often a follow looks for task containers that started since.
const RESCAN_EVERY: Duration = Duration::from_secs(1);

/// Reads this node's task containers' logs; see the module doc.
#[derive(Debug, Clone)]
pub struct TaskLogReader {
    containers: ContainerService,
}

/// A task container a query selects.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Selected {
    container_id: String,
    task_id: String,
    service_id: String,
    node_id: String,
}

/// Whether a container with `labels` belongs to `query`, and as which task.
fn select(
    container_id: &str,
    labels: &std::collections::BTreeMap<String, String>,
    query: &TaskLogQuery,
) -> Option<Selected> {
    let task_id = labels.get(TASK_ID_LABEL)?;
    let service_id = labels.get(SERVICE_ID_LABEL).cloned().unwrap_or_default();
    let wanted = query.task_ids.contains(task_id)
        || (!service_id.is_empty() && query.service_ids.contains(&service_id));
    wanted.then(|| Selected {
        container_id: container_id.to_string(),
        task_id: task_id.clone(),
        service_id,
        node_id: labels.get(NODE_ID_LABEL).cloned().unwrap_or_default(),
    })
}

/// The runtime's options for `query`.
fn log_options(query: &TaskLogQuery) -> LogOptions {
    LogOptions {
        stdout: query.stdout,
        stderr: query.stderr,
        since: query
            .since_unix_nanos
            .map(chrono::DateTime::from_timestamp_nanos),
        until: None,
        tail: query.tail.map(|t| usize::try_from(t).unwrap_or(usize::MAX)),
        follow: query.follow,
    }
}

impl TaskLogReader {
    /// Reads the task containers of `containers`.
    pub fn new(containers: ContainerService) -> Self {
        TaskLogReader { containers }
    }

    /// The task containers `query` selects now, oldest first: those that have started (a
    /// container only created has no log yet; a follow's next scan takes it once it runs).
    fn scan(&self, query: &TaskLogQuery) -> Vec<Selected> {
        let mut recs = self.containers.with_label(TASK_ID_LABEL);
        recs.sort_by(|a, b| a.created.cmp(&b.created));
        recs.iter()
            .filter(|r| r.state.status != "created")
            .filter_map(|r| select(&r.id, &r.labels, query))
            .collect()
    }

    /// One container's reader, on a blocking thread: sends its lines until the log ends
    /// (or, following, until the container is gone or `tx`'s receiver is dropped).
    fn spawn_reader(&self, selected: Selected, opts: LogOptions, tx: mpsc::Sender<TaskLogLine>) {
        let runtime = self.containers.runtime().clone();
        tokio::task::spawn_blocking(move || {
            tracing::debug!(container = %selected.container_id, follow = opts.follow, "task log reader started");
            read_into(&runtime, &selected, opts, &tx);
            tracing::debug!(container = %selected.container_id, "task log reader ended");
        });
    }
}

/// Sends the lines of `selected`'s log on `tx` until the log ends or `tx` closes.
fn read_into(
    runtime: &berth_runtime::Runtime,
    selected: &Selected,
    opts: LogOptions,
    tx: &mpsc::Sender<TaskLogLine>,
) {
    let stream = match runtime.logs(&selected.container_id, opts) {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(container = %selected.container_id, error = %e, "task log not readable");
            return;
        }
    };
    let client = tx.clone();
    for record in stream.cancel_when(move || client.is_closed()).flatten() {
        let line = TaskLogLine {
            task_id: selected.task_id.clone(),
            service_id: selected.service_id.clone(),
            node_id: selected.node_id.clone(),
            stream: match record.stream {
                Stream::Stdout => OutputStream::Stdout,
                Stream::Stderr => OutputStream::Stderr,
            },
            time_unix_nanos: record.time.timestamp_nanos_opt().unwrap_or(0),
            line: record.log,
        };
        if tx.blocking_send(line).is_err() {
            return;
        }
    }
}

impl TaskLogSource for TaskLogReader {
    fn open(&self, query: TaskLogQuery) -> Result<mpsc::Receiver<TaskLogLine>, TaskLogSourceError> {
        let (tx, rx) = mpsc::channel(berth_consensus::transport::task_logs::LINE_CHANNEL);
        let opts = log_options(&query);
        let mut started: HashSet<String> = HashSet::new();
        for selected in self.scan(&query) {
            started.insert(selected.container_id.clone());
            self.spawn_reader(selected, opts.clone(), tx.clone());
        }
        if query.follow {
            // Tasks that start later (a replacement, a scale-up) join the stream, from
            // their first line.
            let this = self.clone();
            let mut later = opts;
            later.tail = None;
            later.since = None;
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = tx.closed() => {
                            tracing::debug!("task log follow ended");
                            return;
                        }
                        _ = tokio::time::sleep(RESCAN_EVERY) => {}
                    }
                    for selected in this.scan(&query) {
                        if started.insert(selected.container_id.clone()) {
                            this.spawn_reader(selected, later.clone(), tx.clone());
                        }
                    }
                }
            });
        }
        Ok(rx)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn labels(task: &str, service: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (TASK_ID_LABEL.to_string(), task.to_string()),
            (SERVICE_ID_LABEL.to_string(), service.to_string()),
            (NODE_ID_LABEL.to_string(), "00000000000000aa".to_string()),
        ])
    }

    #[test]
    fn a_query_selects_task_containers_by_service_or_task() {
        let by_service = TaskLogQuery {
            service_ids: vec!["svc1".into()],
            ..TaskLogQuery::default()
        };
        let got = select("c1", &labels("t1", "svc1"), &by_service).unwrap();
        assert_eq!(
            got,
            Selected {
                container_id: "c1".into(),
                task_id: "t1".into(),
                service_id: "svc1".into(),
                node_id: "00000000000000aa".into(),
            }
        );
        assert_eq!(select("c2", &labels("t2", "svc2"), &by_service), None);
        let by_task = TaskLogQuery {
            task_ids: vec!["t2".into()],
            ..TaskLogQuery::default()
        };
        assert!(select("c2", &labels("t2", "svc2"), &by_task).is_some());
        assert_eq!(select("c1", &labels("t1", "svc1"), &by_task), None);
        // Not a task container.
        assert_eq!(select("c3", &BTreeMap::new(), &by_service), None);
    }

    #[test]
    fn query_options_map_onto_the_runtime_reader() {
        let q = TaskLogQuery {
            follow: true,
            tail: Some(3),
            since_unix_nanos: Some(1_000_000_000),
            stdout: true,
            stderr: false,
            ..TaskLogQuery::default()
        };
        let o = log_options(&q);
        assert!(o.follow && o.stdout && !o.stderr);
        assert_eq!(o.tail, Some(3));
        assert_eq!(o.since.unwrap().timestamp(), 1);
        assert_eq!(o.until, None);
    }
}
