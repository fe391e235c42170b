//! `GET /services/{id}/logs` and `GET /tasks/{id}/logs` (`docker service logs`): the logs of
//! every task of a service (or of one task) on every node, merged, in Swarm's wire shape.
//!
//! Translates the query into a [`TaskLogQuery`], asks each node that has a task of the
//! service (this node directly, the others over the cluster transport,
//! [`ClusterNode::task_logs`](berth_consensus::ClusterNode::task_logs)) and writes their
//! lines as they arrive, as dockerd's `WriteLogStream` does: `[timestamp ]` then, with
//! `details=1`, the line's attributes `com.docker.swarm.node.id=..,com.docker.swarm.service.id=..,com.docker.swarm.task.id=..`
//! and a space, then the line; framed (stdout 1, stderr 2) unless the service has a TTY.
//! The docker CLI asks for details unless `--raw` and builds its `service.slot.task@node`
//! prefix from them.
//!
//! ```text
//!  client ── GET /services/web/logs?follow=1&details=1 ──> handler
//!     ▲                                  ├─ this node: TaskLogReader::open ──────┐
//!     │                                  └─ node B, C: Tasks.Logs (mTLS) ────────┤ one task per node
//!     └──── framed lines, merged ◄───────────────────────────────────────────────┘
//! ```
//!
//! With `follow`, a node that gets one of the query's tasks later (a scale, a
//! rescheduled task) joins the stream when the replicated state shows it; each node's own
//! reader picks up its new tasks itself. When the client goes away, every per-node task
//! sees its channel closed and drops its stream, which cancels the remote call and stops
//! the readers there.

use std::collections::BTreeSet;
use std::convert::Infallible;

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use berth_consensus::{NodeId, OutputStream, TaskLogLine, TaskLogQuery, TaskLogSource};
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::sync::mpsc;

use super::stream::{channel_body, frame, STDERR, STDOUT};
use super::{query_bool, ApiError, ApiVersion, AppState};
use crate::service::services::ServicesService;
use crate::service::task_logs::TaskLogReader;

/// Query parameters these routes understand (all that the docker CLI and docker-py send).
const KNOWN_PARAMS: &[&str] = &[
    "stdout",
    "stderr",
    "follow",
    "since",
    "timestamps",
    "tail",
    "details",
];
/// dockerd's system-error stream number (the CLI prints the payload and stops).
const SYSERR: u8 = 3;
/// The attribute keys of a task's log line (dockerd's `contextPrefix`).
const NODE_KEY: &str = "com.docker.swarm.node.id";
const SERVICE_KEY: &str = "com.docker.swarm.service.id";
const TASK_KEY: &str = "com.docker.swarm.task.id";

/// The routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/services/{id}/logs", get(service_logs))
        .route("/tasks/{id}/logs", get(task_logs))
}

/// What a request asks for, besides which tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LogsRequest {
    follow: bool,
    stdout: bool,
    stderr: bool,
    timestamps: bool,
    details: bool,
    tail: Option<u64>,
    since_unix_nanos: Option<i64>,
}

/// Parses the query as dockerd's swarm log router does. Parameters it does not know are
/// refused (400) by name rather than ignored.
fn parse_request(params: &[(String, String)]) -> Result<LogsRequest, ApiError> {
    let unknown: BTreeSet<&str> = params
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| !KNOWN_PARAMS.contains(k))
        .collect();
    if !unknown.is_empty() {
        let names: Vec<&str> = unknown.into_iter().collect();
        return Err(ApiError::BadRequest(format!(
            "query parameter {} not supported by berth for service logs (supported: {})",
            names.join(", "),
            KNOWN_PARAMS.join(", ")
        )));
    }
    let get = |k: &str| {
        params
            .iter()
            .rev()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    let stdout = query_bool(get("stdout"))?;
    let stderr = query_bool(get("stderr"))?;
    if !stdout && !stderr {
        return Err(ApiError::BadRequest(
            "Bad parameters: you must choose at least one stream".into(),
        ));
    }
    // dockerd's `ServiceLogs`: "" and "all" are everything, else a non-negative integer.
    let tail = match get("tail") {
        None | Some("") | Some("all") => None,
        Some(t) => match t.parse::<i64>() {
            Ok(n) if n >= 0 => Some(n as u64),
            Ok(_) => {
                return Err(ApiError::BadRequest(
                    "negative tail values not supported".into(),
                ))
            }
            Err(_) => {
                return Err(ApiError::BadRequest(
                    "tail value must be a positive integer or \"all\"".into(),
                ))
            }
        },
    };
    let since_unix_nanos = match get("since").filter(|s| !s.is_empty() && *s != "0") {
        None => None,
        Some(s) => Some(super::events::parse_timestamp_nanos(s)?),
    };
    Ok(LogsRequest {
        follow: query_bool(get("follow"))?,
        stdout,
        stderr,
        timestamps: query_bool(get("timestamps"))?,
        details: query_bool(get("details"))?,
        tail,
        since_unix_nanos,
    })
}

/// Go's `url.QueryEscape` (attribute keys and values in the details).
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// One line as dockerd writes it: `[timestamp ][details ]line`, framed unless `tty`.
fn payload(line: &TaskLogLine, req: &LogsRequest, tty: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(line.line.len() + 160);
    if req.timestamps {
        let time = chrono::DateTime::from_timestamp_nanos(line.time_unix_nanos);
        out.extend_from_slice(
            time.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
                .as_bytes(),
        );
        out.push(b' ');
    }
    if req.details {
        // Sorted by key, as dockerd's `attrsByteSlice`.
        let attrs = [
            (NODE_KEY, &line.node_id),
            (SERVICE_KEY, &line.service_id),
            (TASK_KEY, &line.task_id),
        ];
        let joined: Vec<String> = attrs
            .iter()
            .map(|(k, v)| format!("{}={}", query_escape(k), query_escape(v)))
            .collect();
        out.extend_from_slice(joined.join(",").as_bytes());
        out.push(b' ');
    }
    out.extend_from_slice(&line.line);
    if tty {
        return out;
    }
    let stream = match line.stream {
        OutputStream::Stdout => STDOUT,
        OutputStream::Stderr => STDERR,
    };
    frame(stream, &out)
}

/// dockerd's message for a stream that failed part way (`Error grabbing logs: ...`).
fn error_payload(message: &str, tty: bool) -> Vec<u8> {
    let text = format!("Error grabbing logs: {message}\n");
    if tty {
        text.into_bytes()
    } else {
        frame(SYSERR, text.as_bytes())
    }
}

/// Whether a task template runs its container with a TTY.
fn template_tty(template: &serde_json::Value) -> bool {
    template["ContainerSpec"]["TTY"].as_bool().unwrap_or(false)
}

async fn service_logs(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
    version: Option<axum::Extension<ApiVersion>>,
) -> Result<Response, ApiError> {
    let req = parse_request(&params)?;
    let services = ServicesService::new(st.cluster.clone(), st.images.clone());
    let view = services.inspect(&id)?;
    let tty = template_tty(&view.service.spec["TaskTemplate"]);
    let query = TaskLogQuery {
        service_ids: vec![view.service.id.clone()],
        ..task_query(&req)
    };
    stream_logs(&st, query, req, tty, version)
}

async fn task_logs(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
    version: Option<axum::Extension<ApiVersion>>,
) -> Result<Response, ApiError> {
    let req = parse_request(&params)?;
    let services = ServicesService::new(st.cluster.clone(), st.images.clone());
    let view = services.task(&id)?;
    let tty = template_tty(&view.template);
    let query = TaskLogQuery {
        task_ids: vec![view.task.id.clone()],
        ..task_query(&req)
    };
    stream_logs(&st, query, req, tty, version)
}

fn task_query(req: &LogsRequest) -> TaskLogQuery {
    TaskLogQuery {
        service_ids: Vec::new(),
        task_ids: Vec::new(),
        follow: req.follow,
        tail: req.tail,
        since_unix_nanos: req.since_unix_nanos,
        stdout: req.stdout,
        stderr: req.stderr,
    }
}

/// The nodes that have (had) a task `query` selects, with their addresses.
fn nodes_of(state: &berth_consensus::ClusterState, query: &TaskLogQuery) -> Vec<(NodeId, String)> {
    let ids: BTreeSet<NodeId> = state
        .tasks
        .values()
        .filter(|t| query.service_ids.contains(&t.service_id) || query.task_ids.contains(&t.id))
        .filter_map(|t| t.node_id)
        .collect();
    ids.into_iter()
        .filter_map(|id| Some((id, state.nodes.get(&id)?.addr.clone())))
        .collect()
}

/// Lines of one node, or why that node's stream failed.
type NodeLines = BoxStream<'static, Result<Vec<TaskLogLine>, String>>;

fn stream_logs(
    st: &AppState,
    query: TaskLogQuery,
    req: LogsRequest,
    tty: bool,
    version: Option<axum::Extension<ApiVersion>>,
) -> Result<Response, ApiError> {
    let node = st
        .cluster
        .node()
        .ok_or_else(|| ApiError::Unavailable("This node is not part of a swarm".into()))?;
    let nodes = node.state_view().read(|s| nodes_of(s, &query));
    let (tx, rx) = mpsc::channel::<Result<Vec<u8>, Infallible>>(256);
    let mut asked = BTreeSet::new();
    for (id, addr) in nodes {
        asked.insert(id);
        spawn_node_stream(st, &node, id, addr, &query, &req, tty, tx.clone());
    }
    if query.follow {
        // Tasks scheduled later onto nodes that had none of the query's tasks yet: their
        // nodes join the stream as the replicated state shows them.
        let st = st.clone();
        let weak = std::sync::Arc::downgrade(&node);
        let mut applied = node.applied_watch();
        drop(node);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tx.closed() => return,
                    changed = applied.changed() => if changed.is_err() { return },
                }
                // Not held between changes: a leave must not wait for a follow to end.
                let Some(node) = weak.upgrade() else { return };
                let nodes = node.state_view().read(|s| nodes_of(s, &query));
                for (id, addr) in nodes {
                    if asked.insert(id) {
                        spawn_node_stream(&st, &node, id, addr, &query, &req, tty, tx.clone());
                    }
                }
            }
        });
    } else {
        drop(tx);
    }
    // dockerd: a raw stream for a TTY, and for clients older than 1.42.
    let multiplexed = !tty && version.is_none_or(|v| v.0 >= ApiVersion(1, 42));
    let ct = if multiplexed {
        "application/vnd.docker.multiplexed-stream"
    } else {
        "application/vnd.docker.raw-stream"
    };
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, ct)
        .body(channel_body(rx))
        .expect("valid response"))
}

/// Streams node `id`'s lines for `query` into `tx` (this node's reader directly, another
/// node over the cluster transport at `addr`), until that node's stream ends or the client
/// goes away (`tx` closed). A node that cannot be asked adds one error line.
#[allow(clippy::too_many_arguments)]
fn spawn_node_stream(
    st: &AppState,
    node: &std::sync::Arc<berth_consensus::ClusterNode>,
    id: NodeId,
    addr: String,
    query: &TaskLogQuery,
    req: &LogsRequest,
    tty: bool,
    tx: mpsc::Sender<Result<Vec<u8>, Infallible>>,
) {
    let query = query.clone();
    let req = req.clone();
    let node = node.clone();
    let local = (id == node.id()).then(|| TaskLogReader::new(st.containers.clone()));
    tokio::spawn(async move {
        let opened: Result<NodeLines, String> = match local {
            Some(reader) => reader
                .open(query)
                .map(|rx| {
                    futures::stream::unfold(rx, |mut rx| async move {
                        let mut lines = Vec::new();
                        (rx.recv_many(&mut lines, 256).await > 0).then_some((Ok(lines), rx))
                    })
                    .boxed()
                })
                .map_err(|e| e.to_string()),
            None => match node.task_logs(&addr, &query).await {
                Ok(s) => Ok(s.map(|r| r.map_err(|e| error_chain(&e))).boxed()),
                Err(e) => Err(error_chain(&e)),
            },
        };
        // The cluster node is not held while streaming (a leave must not wait for a
        // follow to end).
        drop(node);
        let mut lines = match opened {
            Ok(s) => s,
            Err(e) => {
                let _ = tx.send(Ok(error_payload(&e, tty))).await;
                return;
            }
        };
        loop {
            let next = tokio::select! {
                _ = tx.closed() => return,
                next = lines.next() => next,
            };
            match next {
                None => return,
                Some(Ok(batch)) => {
                    for line in &batch {
                        if tx.send(Ok(payload(line, &req, tty))).await.is_err() {
                            return;
                        }
                    }
                }
                Some(Err(e)) => {
                    let _ = tx.send(Ok(error_payload(&e, tty))).await;
                    return;
                }
            }
        }
    });
}

/// `error: cause: cause`.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(q: &str) -> Vec<(String, String)> {
        q.split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (k.to_string(), v.to_string())
            })
            .collect()
    }

    fn bad(q: &str) -> String {
        match parse_request(&params(q)) {
            Err(ApiError::BadRequest(m)) => m,
            other => panic!("{q}: {other:?}"),
        }
    }

    #[test]
    fn the_cli_query_parses_and_others_are_refused_by_name() {
        // What `docker service logs -f --tail 5 --since 1700000000 -t` sends.
        let r = parse_request(&params(
            "details=1&follow=1&since=1700000000&stderr=1&stdout=1&tail=5&timestamps=1",
        ))
        .unwrap();
        assert_eq!(
            r,
            LogsRequest {
                follow: true,
                stdout: true,
                stderr: true,
                timestamps: true,
                details: true,
                tail: Some(5),
                since_unix_nanos: Some(1_700_000_000_000_000_000),
            }
        );
        let all = parse_request(&params("stdout=1&tail=all")).unwrap();
        assert_eq!(all.tail, None);
        assert!(!all.follow && !all.details);
        let m = bad("stdout=1&until=10&foo=1");
        assert!(m.contains("foo, until"), "{m}");
        assert_eq!(
            bad("tail=1"),
            "Bad parameters: you must choose at least one stream"
        );
        assert_eq!(
            bad("stdout=1&tail=-2"),
            "negative tail values not supported"
        );
        assert_eq!(
            bad("stdout=1&tail=x"),
            "tail value must be a positive integer or \"all\""
        );
    }

    fn line(stream: OutputStream) -> TaskLogLine {
        TaskLogLine {
            task_id: "t1".into(),
            service_id: "s1".into(),
            node_id: "00000000000000aa".into(),
            stream,
            time_unix_nanos: 1_700_000_000_000_000_005,
            line: b"hello\n".to_vec(),
        }
    }

    #[test]
    fn lines_carry_timestamp_then_details_as_dockerd_writes_them() {
        let mut req = parse_request(&params("stdout=1&stderr=1&details=1&timestamps=1")).unwrap();
        let text = payload(&line(OutputStream::Stdout), &req, true);
        assert_eq!(
            String::from_utf8(text).unwrap(),
            "2023-11-14T22:13:20.000000005Z com.docker.swarm.node.id=00000000000000aa,\
             com.docker.swarm.service.id=s1,com.docker.swarm.task.id=t1 hello\n"
        );
        req.details = false;
        req.timestamps = false;
        let framed = payload(&line(OutputStream::Stderr), &req, false);
        assert_eq!(
            framed,
            [&[2u8, 0, 0, 0, 0, 0, 0, 6][..], b"hello\n"].concat()
        );
        assert_eq!(error_payload("x", false)[0], SYSERR);
        assert_eq!(query_escape("a b/c=d"), "a+b%2Fc%3Dd");
    }
}
