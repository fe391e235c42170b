//! Container and exec routes: translate requests into [`ContainerService`] calls and
//! results into Docker-shaped responses and streams.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use berth_runtime::logs::{LogRecord, Stream};
use berth_runtime::{AttachOptions, ExecOptions, LogOptions};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::filters::Filters;
use super::stream::{channel_body, frame, hijack, pump_output, pump_stdin, STDOUT};
use super::{query_bool, ApiError, AppState, JsonBody};
use crate::service::containers::list::ListFilter;
use crate::service::containers::{blocking, ExecEntry, WaitCondition};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/containers/create", post(create))
        .route("/containers/json", get(list))
        .route("/containers/prune", post(prune))
        .route("/containers/{id}/json", get(inspect))
        .route("/containers/{id}", axum::routing::delete(remove))
        .route("/containers/{id}/start", post(start))
        .route("/containers/{id}/stop", post(stop))
        .route("/containers/{id}/restart", post(restart))
        .route("/containers/{id}/kill", post(kill))
        .route("/containers/{id}/pause", post(pause))
        .route("/containers/{id}/unpause", post(unpause))
        .route("/containers/{id}/wait", post(wait))
        .route("/containers/{id}/rename", post(rename))
        .route("/containers/{id}/update", post(update))
        .route("/containers/{id}/attach", post(attach))
        .route("/containers/{id}/resize", post(resize))
        .route("/containers/{id}/logs", get(logs))
        .route("/containers/{id}/top", get(top))
        .route("/containers/{id}/stats", get(stats))
        .route("/containers/{id}/exec", post(exec_create))
        .route("/exec/{id}/start", post(exec_start))
        .route("/exec/{id}/json", get(exec_inspect))
        .route("/exec/{id}/resize", post(exec_resize))
}

fn now_secs() -> i64 {
    super::now_nanos() / 1_000_000_000
}

#[derive(Debug, Deserialize)]
struct CreateQuery {
    name: Option<String>,
}

async fn create(
    State(st): State<AppState>,
    Query(q): Query<CreateQuery>,
    JsonBody(body): JsonBody<Value>,
) -> Result<impl IntoResponse, ApiError> {
    let mut nets: Vec<String> = body
        .pointer("/NetworkingConfig/EndpointsConfig")
        .and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    if let Some(mode) = body
        .pointer("/HostConfig/NetworkMode")
        .and_then(Value::as_str)
    {
        nets.push(mode.to_string());
    }
    for n in nets.iter().filter(|n| !n.is_empty() && !n.contains(':')) {
        super::networks::refuse_overlay_attach(&st, n).await?;
    }
    let body = crate::service::containers::config::create_body_from_json(body)?;
    let svc = st.containers.clone();
    let (id, warnings) = blocking(move || svc.create_blocking(q.name.as_deref(), body)).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"Id": id, "Warnings": warnings})),
    ))
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    all: Option<String>,
    limit: Option<i64>,
    filters: Option<String>,
    size: Option<String>,
}

async fn list(
    State(st): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let all = query_bool(q.all.as_deref())?;
    let f = Filters::parse(q.filters.as_deref())?;
    let filter = ListFilter::parse(f.map())?;
    let limit = q.limit.filter(|l| *l > 0).map(|l| l as usize);
    let svc = st.containers.clone();
    let size = query_bool(q.size.as_deref())?;
    let now = now_secs();
    let list = blocking(move || {
        let recs = svc.list(&filter, all, limit)?;
        Ok(recs
            .iter()
            .map(|r| {
                let mut v = r.summary(now);
                if size {
                    // dockerd: both sizes, or none when they cannot be read
                    if let Ok((rw, root)) = svc.sizes(&r.id) {
                        v["SizeRw"] = json!(rw);
                        v["SizeRootFs"] = json!(root);
                    }
                }
                v
            })
            .collect::<Vec<_>>())
    })
    .await?;
    Ok(Json(Value::Array(list)))
}

#[derive(Debug, Deserialize)]
struct InspectQuery {
    size: Option<String>,
}

/// `GraphDriver` as dockerd's overlay2 shows it: real paths, lowers top first joined by `:`.
fn graph_driver(d: &crate::service::containers::fs::GraphDirs) -> Value {
    let lowers: Vec<String> = d.lowers.iter().map(|p| p.display().to_string()).collect();
    json!({"Name": "overlay2", "Data": {
        "LowerDir": lowers.join(":"),
        "MergedDir": d.merged.display().to_string(),
        "UpperDir": d.upper.display().to_string(),
        "WorkDir": d.work.display().to_string(),
    }})
}

async fn inspect(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<InspectQuery>,
) -> Result<Json<Value>, ApiError> {
    let size = query_bool(q.size.as_deref())?;
    let svc = st.containers.clone();
    let v = blocking(move || {
        let rec = svc.get(&id)?;
        let mut v = rec.inspect();
        if let Ok(d) = svc.graph_dirs(&rec.id) {
            v["GraphDriver"] = graph_driver(&d);
        }
        if size {
            let (rw, root) = svc.sizes(&rec.id)?;
            v["SizeRw"] = json!(rw);
            v["SizeRootFs"] = json!(root);
        }
        Ok(v)
    })
    .await?;
    Ok(Json(v))
}

#[derive(Debug, Deserialize)]
struct RemoveQuery {
    force: Option<String>,
    v: Option<String>,
}

async fn remove(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<RemoveQuery>,
) -> Result<StatusCode, ApiError> {
    let force = query_bool(q.force.as_deref())?;
    let volumes = query_bool(q.v.as_deref())?;
    let svc = st.containers.clone();
    blocking(move || svc.remove_blocking(&id, force, volumes)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn start(State(st): State<AppState>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    let svc = st.containers.clone();
    blocking(move || svc.start_blocking(&id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
struct StopQuery {
    t: Option<i64>,
    signal: Option<String>,
}

fn timeout(t: Option<i64>) -> Option<Duration> {
    t.filter(|t| *t >= 0).map(|t| Duration::from_secs(t as u64))
}

/// The `signal` query of stop and restart (API 1.42+): a name or number; empty or absent:
/// the container's stop signal.
fn stop_signal(s: Option<&str>) -> Result<Option<i32>, ApiError> {
    match s.filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => Ok(Some(crate::service::containers::parse_signal(s)?)),
    }
}

async fn stop(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<StopQuery>,
) -> Result<StatusCode, ApiError> {
    let signal = stop_signal(q.signal.as_deref())?;
    let svc = st.containers.clone();
    blocking(move || svc.stop_blocking(&id, timeout(q.t), signal)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn restart(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<StopQuery>,
) -> Result<StatusCode, ApiError> {
    let signal = stop_signal(q.signal.as_deref())?;
    let svc = st.containers.clone();
    blocking(move || svc.restart_blocking(&id, timeout(q.t), signal)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn kill(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<StopQuery>,
) -> Result<StatusCode, ApiError> {
    let svc = st.containers.clone();
    let sig = q.signal.unwrap_or_default();
    blocking(move || svc.kill_blocking(&id, &sig)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn pause(State(st): State<AppState>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    let svc = st.containers.clone();
    blocking(move || svc.pause_blocking(&id, true)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn unpause(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let svc = st.containers.clone();
    blocking(move || svc.pause_blocking(&id, false)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
struct WaitQuery {
    condition: Option<String>,
}

/// Headers go out at once (the CLI waits for them before `start`); the body follows when
/// the condition is met.
async fn wait(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<WaitQuery>,
) -> Result<Response, ApiError> {
    let cond = WaitCondition::parse(q.condition.as_deref())?;
    let svc = st.containers.clone();
    // Resolve first, so a missing container is a plain 404.
    let id = svc.resolve(&id)?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, Infallible>>(1);
    tokio::spawn(async move {
        let body = match svc.wait(&id, cond).await {
            Ok(code) => json!({"StatusCode": code, "Error": null}),
            Err(e) => json!({"StatusCode": -1, "Error": {"Message": e.to_string()}}),
        };
        let _ = tx.send(Ok(serde_json::to_vec(&body).expect("json"))).await;
    });
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(channel_body(rx))
        .expect("valid response"))
}

#[derive(Debug, Deserialize)]
struct RenameQuery {
    name: Option<String>,
}

async fn rename(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<RenameQuery>,
) -> Result<StatusCode, ApiError> {
    let name = q
        .name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::BadRequest("name cannot be empty".into()))?;
    st.containers.rename(&id, &name)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /containers/{id}/update` (`docker update`): answers `{"Warnings": [...]}`.
async fn update(
    State(st): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    let svc = st.containers.clone();
    let warnings = blocking(move || svc.update_blocking(&id, &body)).await?;
    Ok(Json(json!({ "Warnings": warnings })))
}

#[derive(Debug, Deserialize)]
struct PruneQuery {
    filters: Option<String>,
}

async fn prune(
    State(st): State<AppState>,
    Query(q): Query<PruneQuery>,
) -> Result<Json<Value>, ApiError> {
    let f = Filters::parse(q.filters.as_deref())?;
    f.only(&["label", "label!", "until"])?;
    let until = f.until(super::now_nanos())?;
    let svc = st.containers.clone();
    let removed = blocking(move || {
        svc.prune_blocking(&|labels, created| {
            let created = chrono::DateTime::parse_from_rfc3339(created)
                .ok()
                .and_then(|c| c.timestamp_nanos_opt())
                .unwrap_or(i64::MIN);
            super::filters::labels_match(&f, labels) && until.is_none_or(|u| created < u)
        })
    })
    .await?;
    Ok(Json(
        json!({"ContainersDeleted": removed, "SpaceReclaimed": 0}),
    ))
}

// ---- attach, resize ---------------------------------------------------------------------------

/// Stdin kept for a container that has not started yet, at most (bytes).
const EARLY_STDIN_MAX: usize = 1 << 20;

#[derive(Debug, Deserialize)]
struct AttachQuery {
    stdin: Option<String>,
    stdout: Option<String>,
    stderr: Option<String>,
    logs: Option<String>,
    /// `stream=0`: only the logs (with `logs=1`), then the connection ends.
    stream: Option<String>,
    /// `--detach-keys`: not supported, refused when set.
    #[serde(rename = "detachKeys")]
    detach_keys: Option<String>,
}

async fn attach(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<AttachQuery>,
    req: Request,
) -> Result<Response, ApiError> {
    let opts = AttachOptions {
        stdin: query_bool(q.stdin.as_deref())?,
        stdout: query_bool(q.stdout.as_deref())?,
        stderr: query_bool(q.stderr.as_deref())?,
    };
    let with_logs = query_bool(q.logs.as_deref())?;
    // dockerd streams unless told not to.
    let stream = q
        .stream
        .as_deref()
        .map_or(Ok(true), |v| query_bool(Some(v)))?;
    if q.detach_keys.as_deref().is_some_and(|k| !k.is_empty()) {
        return Err(ApiError::BadRequest(
            "detachKeys is not supported by berth: remove --detach-keys (or detachKeys in the client's config.json)".into(),
        ));
    }
    let svc = st.containers.clone();
    let rec = {
        let svc = svc.clone();
        blocking(move || svc.get(&id)).await?
    };
    let tty = rec.spec.run.tty;
    let stdin_once = rec.spec.stdin_once;
    let open_stdin = rec.spec.run.open_stdin;
    let id = rec.id.clone();
    let mut life = svc.life(&id)?;
    let guard = svc.attach_guard(&id)?;
    let starts_before = life.borrow_and_update().starts;
    let running = matches!(rec.state.status.as_str(), "running" | "paused");
    // Counted before the 101 goes out, so before the client can send the start: the start
    // then has the shim hold the output until this stream is connected to it.
    let awaiting = if !running && (opts.stdout || opts.stderr) {
        Some(svc.await_start_guard(&id)?)
    } else {
        None
    };
    hijack(req, tty, move |conn| async move {
        let _guard = guard;
        let mut awaiting = awaiting;
        let (mut client_rd, mut client_wr) = tokio::io::split(conn);
        if with_logs {
            let rt = svc.runtime().clone();
            let lid = id.clone();
            let past = tokio::task::spawn_blocking(move || {
                rt.logs(&lid, LogOptions::all())
                    .map(|s| s.filter_map(Result::ok).collect::<Vec<_>>())
                    .unwrap_or_default()
            })
            .await
            .unwrap_or_default();
            for r in past {
                if client_wr
                    .write_all(&log_payload(&r, tty, false))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
        if !stream {
            let _ = client_wr.flush().await;
            let _ = client_wr.shutdown().await;
            return;
        }
        // Stdin that arrives before the container starts is kept for it.
        let mut early_stdin: Vec<u8> = Vec::new();
        let mut client_eof = false;
        if !running {
            // Wait for the start, reading (and keeping) stdin meanwhile.
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                if life.borrow_and_update().starts > starts_before {
                    break;
                }
                if life.borrow().removed {
                    return;
                }
                tokio::select! {
                    r = life.changed() => if r.is_err() { return },
                    // Beyond a buffer's worth, input waits in the connection.
                    n = client_rd.read(&mut buf), if !client_eof && early_stdin.len() < EARLY_STDIN_MAX => match n {
                        Ok(0) | Err(_) => client_eof = true,
                        Ok(n) => if opts.stdin { early_stdin.extend_from_slice(&buf[..n]) },
                    },
                }
            }
        }
        // Output: live from the shim, byte for byte. A container started under this attach
        // holds its output until the stream is connected (see `await_start_guard`).
        let shim_opts = AttachOptions {
            stdin: opts.stdin && open_stdin,
            stdout: opts.stdout,
            stderr: opts.stderr,
        };
        let rt = svc.runtime().clone();
        let aid = id.clone();
        let shim = if shim_opts.stdin || shim_opts.stdout || shim_opts.stderr {
            match tokio::task::spawn_blocking(move || rt.attach(&aid, shim_opts)).await {
                Ok(Ok(s)) => {
                    let _ = s.set_nonblocking(true);
                    tokio::net::UnixStream::from_std(s).ok()
                }
                Ok(Err(e)) => {
                    tracing::warn!(container = %id, error = %e, "attach to shim failed");
                    None
                }
                Err(_) => None,
            }
        } else {
            None
        };
        // Connected (or given up): no longer holding the output back.
        awaiting.take();
        let (shim_rd, shim_wr) = match shim {
            Some(s) => {
                let (r, w) = s.into_split();
                (Some(r), Some(w))
            }
            None => (None, None),
        };
        // stdin pump: client -> shim. A client half-close is not a detach. Without stdin
        // the write half is held (not dropped: that would half-close the shim's stream).
        let (stdin_wr, _held_wr) = if shim_opts.stdin {
            (shim_wr, None)
        } else {
            (None, shim_wr)
        };
        let close = stdin_once || !tty;
        let stdin_task = stdin_wr
            .map(|w| tokio::spawn(pump_stdin(client_rd, w, early_stdin, client_eof, close)));
        if let Some(r) = shim_rd {
            pump_output(r, &mut client_wr, tty).await;
        }
        let _ = client_wr.flush().await;
        let _ = client_wr.shutdown().await;
        if let Some(t) = stdin_task {
            t.abort();
        }
    })
}

/// One log record as attach and logs send it.
fn log_payload(r: &LogRecord, tty: bool, timestamps: bool) -> Vec<u8> {
    let mut payload = Vec::with_capacity(r.log.len() + 40);
    if timestamps {
        payload.extend_from_slice(
            r.time
                .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
                .as_bytes(),
        );
        payload.push(b' ');
    }
    payload.extend_from_slice(&r.log);
    if tty {
        payload
    } else {
        let stream = match r.stream {
            Stream::Stdout => super::stream::STDOUT,
            Stream::Stderr => super::stream::STDERR,
        };
        frame(stream, &payload)
    }
}

#[derive(Debug, Deserialize)]
struct ResizeQuery {
    h: Option<u16>,
    w: Option<u16>,
}

async fn resize(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<ResizeQuery>,
) -> Result<StatusCode, ApiError> {
    let (rows, cols) = (q.h.unwrap_or(0), q.w.unwrap_or(0));
    let svc = st.containers.clone();
    blocking(move || {
        let rec = svc.get(&id)?;
        svc.runtime()
            .resize(&rec.id, rows, cols)
            .map_err(crate::error::ServiceError::runtime)
    })
    .await?;
    Ok(StatusCode::OK)
}

// ---- logs, top, stats -------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct LogsQuery {
    follow: Option<String>,
    stdout: Option<String>,
    stderr: Option<String>,
    since: Option<String>,
    until: Option<String>,
    timestamps: Option<String>,
    tail: Option<String>,
}

fn log_time(s: Option<&str>) -> Result<Option<chrono::DateTime<chrono::Utc>>, ApiError> {
    match s.filter(|s| !s.is_empty() && *s != "0") {
        None => Ok(None),
        Some(s) => {
            let nanos = super::events::parse_timestamp_nanos(s)?;
            Ok(Some(chrono::DateTime::from_timestamp_nanos(nanos)))
        }
    }
}

async fn logs(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<LogsQuery>,
) -> Result<Response, ApiError> {
    let stdout = query_bool(q.stdout.as_deref())?;
    let stderr = query_bool(q.stderr.as_deref())?;
    if !stdout && !stderr {
        return Err(ApiError::BadRequest(
            "Bad parameters: you must choose at least one stream".into(),
        ));
    }
    let tail = match q.tail.as_deref() {
        None | Some("") | Some("all") => None,
        Some(t) => match t.parse::<i64>() {
            Ok(n) if n >= 0 => Some(n as usize),
            Ok(_) => None,
            Err(_) => return Err(ApiError::BadRequest(format!("invalid tail value {t:?}"))),
        },
    };
    let opts = LogOptions {
        stdout,
        stderr,
        since: log_time(q.since.as_deref())?,
        until: log_time(q.until.as_deref())?,
        tail,
        follow: query_bool(q.follow.as_deref())?,
    };
    let timestamps = query_bool(q.timestamps.as_deref())?;
    let svc = st.containers.clone();
    let rec = {
        let svc = svc.clone();
        blocking(move || svc.get(&id)).await?
    };
    let tty = rec.spec.run.tty;
    let rt = svc.runtime().clone();
    // Fail before the 200 if the runtime cannot read the log.
    let cid = rec.id.clone();
    {
        let rt = rt.clone();
        let cid = cid.clone();
        blocking(move || {
            rt.logs(&cid, LogOptions::default())
                .map(|_| ())
                .map_err(crate::error::ServiceError::runtime)
        })
        .await?;
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, Infallible>>(256);
    tokio::task::spawn_blocking(move || {
        let Ok(stream) = rt.logs(&cid, opts) else {
            return;
        };
        // A follow of a quiet container ends when the client goes away.
        let client = tx.clone();
        for r in stream.cancel_when(move || client.is_closed()).flatten() {
            if tx
                .blocking_send(Ok(log_payload(&r, tty, timestamps)))
                .is_err()
            {
                return;
            }
        }
    });
    let ct = if tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    };
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, ct)
        .body(channel_body(rx))
        .expect("valid response"))
}

async fn top(State(st): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let svc = st.containers.clone();
    let t = blocking(move || {
        let rec = svc.get(&id)?;
        if rec.state.status != "running" && rec.state.status != "paused" {
            return Err(crate::error::ServiceError::conflict(format!(
                "container {} is not running",
                rec.id
            )));
        }
        svc.runtime()
            .top(&rec.id)
            .map_err(crate::error::ServiceError::runtime)
    })
    .await?;
    Ok(Json(json!({"Titles": t.titles, "Processes": t.processes})))
}

#[derive(Debug, Deserialize)]
struct StatsQuery {
    stream: Option<String>,
    #[serde(rename = "one-shot")]
    one_shot: Option<String>,
}

/// Total CPU time of the host in nanoseconds (from /proc/stat), Docker's `system_cpu_usage`.
fn system_cpu_ns() -> u64 {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else {
        return 0;
    };
    let ticks: u64 = line
        .split_whitespace()
        .skip(1)
        .take(7)
        .filter_map(|v| v.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    ticks * (1_000_000_000 / hz)
}

fn stats_json(
    rec: &crate::service::containers::record::ContainerRecord,
    s: &berth_runtime::Stats,
    pre: Option<&(berth_runtime::Stats, u64)>,
    system: u64,
) -> Value {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpu = |s: &berth_runtime::Stats, system: u64| {
        json!({
            "cpu_usage": {"total_usage": s.cpu_total_ns, "usage_in_kernelmode": s.cpu_kernel_ns,
                          "usage_in_usermode": s.cpu_user_ns},
            "system_cpu_usage": system,
            "online_cpus": cpus,
            "throttling_data": {"periods": s.cpu_periods, "throttled_periods": s.cpu_throttled_periods,
                                "throttled_time": s.cpu_throttled_ns},
        })
    };
    let limit = if s.memory_limit == 0 || s.memory_limit > (1u64 << 62) {
        super::system::total_memory()
    } else {
        s.memory_limit
    };
    json!({
        "read": s.read_at.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        "preread": pre.map(|p| p.0.read_at.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
            .unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
        "name": format!("/{}", rec.name),
        "id": rec.id,
        "pids_stats": {"current": s.pids_current, "limit": s.pids_limit},
        "cpu_stats": cpu(s, system),
        "precpu_stats": pre.map(|p| cpu(&p.0, p.1)).unwrap_or_else(|| json!({"cpu_usage": {"total_usage": 0}, "throttling_data": {}})),
        "memory_stats": {"usage": s.memory_usage, "max_usage": s.memory_max_usage, "limit": limit,
                         "failcnt": s.memory_failcnt, "stats": {}},
        "blkio_stats": {},
        "networks": {},
    })
}

async fn stats(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<StatsQuery>,
) -> Result<Response, ApiError> {
    let stream = q
        .stream
        .as_deref()
        .map_or(Ok(true), |s| query_bool(Some(s)))?;
    let one_shot = query_bool(q.one_shot.as_deref())?;
    let svc = st.containers.clone();
    let rec = {
        let svc = svc.clone();
        blocking(move || svc.get(&id)).await?
    };
    let rt = svc.runtime().clone();
    let read = move |rt: &berth_runtime::Runtime, id: &str| rt.stats(id).ok();
    if !stream {
        let id = rec.id.clone();
        let rt2 = rt.clone();
        let (first, sys1) = tokio::task::spawn_blocking(move || (read(&rt2, &id), system_cpu_ns()))
            .await
            .unwrap_or((None, 0));
        let Some(first) = first else {
            // Not running: Docker answers with zeroed stats.
            return Ok(Json(json!({"name": format!("/{}", rec.name), "id": rec.id,
                "read": "0001-01-01T00:00:00Z", "cpu_stats": {"cpu_usage": {"total_usage": 0}},
                "precpu_stats": {"cpu_usage": {"total_usage": 0}}, "memory_stats": {},
                "pids_stats": {}, "networks": {}}))
            .into_response());
        };
        if one_shot {
            return Ok(Json(stats_json(&rec, &first, None, sys1)).into_response());
        }
        // Two samples so the CLI can compute a CPU percentage.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let id = rec.id.clone();
        let (second, sys2) = tokio::task::spawn_blocking(move || (read(&rt, &id), system_cpu_ns()))
            .await
            .unwrap_or((None, 0));
        let body = match second {
            Some(s) => stats_json(&rec, &s, Some(&(first, sys1)), sys2),
            None => stats_json(&rec, &first, None, sys1),
        };
        return Ok(Json(body).into_response());
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, Infallible>>(4);
    tokio::spawn(async move {
        let mut pre: Option<(berth_runtime::Stats, u64)> = None;
        loop {
            let rt2 = rt.clone();
            let id = rec.id.clone();
            let (s, sys) = tokio::task::spawn_blocking(move || (read(&rt2, &id), system_cpu_ns()))
                .await
                .unwrap_or((None, 0));
            let Some(s) = s else { return };
            let mut line =
                serde_json::to_vec(&stats_json(&rec, &s, pre.as_ref(), sys)).expect("json");
            line.push(b'\n');
            if tx.send(Ok(line)).await.is_err() {
                return;
            }
            pre = Some((s, sys));
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(channel_body(rx))
        .expect("valid response"))
}

// ---- exec -------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ExecCreateBody {
    attach_stdin: Option<bool>,
    attach_stdout: Option<bool>,
    attach_stderr: Option<bool>,
    tty: Option<bool>,
    env: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    working_dir: Option<String>,
    user: Option<String>,
    console_size: Option<Vec<u64>>,
}

async fn exec_create(
    State(st): State<AppState>,
    Path(id): Path<String>,
    JsonBody(raw): JsonBody<Value>,
) -> Result<impl IntoResponse, ApiError> {
    use crate::service::containers::config::{refuse_fields, EXEC_REFUSED};
    refuse_fields(&raw, "", EXEC_REFUSED)?;
    let b: ExecCreateBody = serde_json::from_value(raw)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON: {e}")))?;
    let console_size = console_size(b.console_size.as_deref())?;
    let attach_stdin = b.attach_stdin.unwrap_or(false);
    let entry = ExecEntry {
        id: String::new(),
        container: String::new(),
        opts: ExecOptions {
            cmd: b.cmd.unwrap_or_default(),
            env: b.env.unwrap_or_default(),
            working_dir: b.working_dir.filter(|w| !w.is_empty()),
            user: b.user.filter(|u| !u.is_empty()),
            tty: b.tty.unwrap_or(false),
            open_stdin: attach_stdin,
            detached: false,
        },
        attach_stdin,
        attach_stdout: b.attach_stdout.unwrap_or(false),
        attach_stderr: b.attach_stderr.unwrap_or(false),
        runtime_id: None,
        running: false,
        exit_code: None,
        start_error: None,
        console_size,
    };
    let svc = st.containers.clone();
    let exec_id = blocking(move || svc.exec_create(&id, entry)).await?;
    Ok((StatusCode::CREATED, Json(json!({"Id": exec_id}))))
}

/// `ConsoleSize` of an exec create or start body, `[height, width]`; `[0, 0]` or absent:
/// none.
fn console_size(v: Option<&[u64]>) -> Result<Option<(u16, u16)>, ApiError> {
    match v {
        None | Some([0, 0]) => Ok(None),
        Some([h, w]) => Ok(Some((
            u16::try_from(*h).unwrap_or(u16::MAX),
            u16::try_from(*w).unwrap_or(u16::MAX),
        ))),
        Some(_) => Err(ApiError::BadRequest(
            "ConsoleSize must be [height, width]".into(),
        )),
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct ExecStartBody {
    detach: Option<bool>,
    tty: Option<bool>,
    /// The tty's first size; the docker CLI sends it here (API >= 1.42) rather than at
    /// create. Overrides the create body's.
    console_size: Option<Vec<u64>>,
}

async fn exec_start(
    State(st): State<AppState>,
    Path(exec_id): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let bytes = super::buffer_body(body, super::MAX_JSON_BODY).await?;
    let b: ExecStartBody = if bytes.iter().all(u8::is_ascii_whitespace) {
        ExecStartBody::default()
    } else {
        serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::BadRequest(format!("invalid JSON: {e}")))?
    };
    let req = Request::from_parts(parts, Body::empty());
    let svc = st.containers.clone();
    if let Some(size) = console_size(b.console_size.as_deref())? {
        svc.exec_set_console_size(&exec_id, size)?;
    }
    let detach = b.detach.unwrap_or(false);
    if detach {
        let entry = {
            let svc = svc.clone();
            let exec_id = exec_id.clone();
            blocking(move || svc.exec_start_blocking(&exec_id, true)).await?
        };
        if let Some(message) = entry.start_error {
            return Err(ApiError::BadRequest(message));
        }
        tokio::task::spawn_blocking(move || svc.exec_wait_blocking(&exec_id));
        return Ok(StatusCode::OK.into_response());
    }
    // As dockerd: what can be checked without starting is answered as HTTP; the process
    // starts once the connection is upgraded (so a client reading the 101 through a
    // buffer gets no output with it), and a start that fails is reported on the stream.
    let entry = svc.exec_get(&exec_id)?;
    if entry.runtime_id.is_some() || entry.start_error.is_some() {
        return Err(ApiError::Conflict(format!(
            "exec {exec_id} has already been started"
        )));
    }
    let container = {
        let svc = svc.clone();
        let id = entry.container.clone();
        blocking(move || svc.get(&id)).await?
    };
    if container.state.status != "running" {
        return Err(ApiError::Conflict(format!(
            "Container {} is not running",
            container.id
        )));
    }
    let tty = b.tty.unwrap_or(entry.opts.tty);
    hijack(req, tty, move |conn| async move {
        let (client_rd, mut client_wr) = tokio::io::split(conn);
        let started = {
            let svc = svc.clone();
            let exec_id = exec_id.clone();
            blocking(move || svc.exec_start_blocking(&exec_id, false)).await
        };
        let failure = match &started {
            Ok(entry) => entry.start_error.clone(),
            Err(e) => Some(e.to_string()),
        };
        if let Some(message) = failure {
            // On stdout, with a CRLF; the exec's exit code is 126.
            let text = format!("{message}\r\n").into_bytes();
            let bytes = if tty { text } else { frame(STDOUT, &text) };
            let _ = client_wr.write_all(&bytes).await;
            let _ = client_wr.flush().await;
            let _ = client_wr.shutdown().await;
            return;
        }
        let Ok(entry) = started else { return };
        let container = entry.container.clone();
        let rid = entry.runtime_id.clone().unwrap_or_default();
        let opts = AttachOptions {
            stdin: entry.attach_stdin,
            stdout: entry.attach_stdout,
            stderr: entry.attach_stderr,
        };
        let rt = svc.runtime().clone();
        let attached = tokio::task::spawn_blocking(move || rt.exec_attach(&container, &rid, opts))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        let shim = match attached {
            Ok(s) => s,
            Err(e) => {
                // A process that exits at once with no output may be gone (with its
                // shim) before the attach: then there is nothing to stream.
                let svc2 = svc.clone();
                let exec_id2 = exec_id.clone();
                if let Err(we) = blocking(move || svc2.exec_wait_blocking(&exec_id2)).await {
                    tracing::warn!(exec = %exec_id, attach = %e, wait = %we, "exec attach failed");
                }
                let _ = client_wr.shutdown().await;
                return;
            }
        };
        let _ = shim.set_nonblocking(true);
        let Ok(shim) = tokio::net::UnixStream::from_std(shim) else {
            return;
        };
        let (shim_rd, shim_wr) = shim.into_split();
        let (stdin_wr, _held_wr) = if opts.stdin {
            (Some(shim_wr), None)
        } else {
            (None, Some(shim_wr))
        };
        let stdin_task =
            stdin_wr.map(|w| tokio::spawn(pump_stdin(client_rd, w, Vec::new(), false, true)));
        pump_output(shim_rd, &mut client_wr, tty).await;
        // Record the exit code before the client asks for it.
        let _ = tokio::task::spawn_blocking(move || svc.exec_wait_blocking(&exec_id)).await;
        let _ = client_wr.flush().await;
        let _ = client_wr.shutdown().await;
        if let Some(t) = stdin_task {
            t.abort();
        }
    })
}

async fn exec_inspect(
    State(st): State<AppState>,
    Path(exec_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let e = st.containers.exec_get(&exec_id)?;
    Ok(Json(json!({
        "ID": e.id,
        "ContainerID": e.container,
        "Running": e.running,
        "ExitCode": e.exit_code,
        "OpenStdin": e.attach_stdin,
        "OpenStdout": e.attach_stdout,
        "OpenStderr": e.attach_stderr,
        "CanRemove": false,
        "DetachKeys": "",
        "Pid": 0,
        "ProcessConfig": {
            "tty": e.opts.tty,
            "entrypoint": e.opts.cmd.first(),
            "arguments": e.opts.cmd.iter().skip(1).collect::<Vec<_>>(),
            "privileged": false,
            "user": e.opts.user,
        },
    })))
}

async fn exec_resize(
    State(st): State<AppState>,
    Path(exec_id): Path<String>,
    Query(q): Query<ResizeQuery>,
) -> Result<StatusCode, ApiError> {
    let e = st.containers.exec_get(&exec_id)?;
    let Some(rid) = e.runtime_id else {
        return Err(ApiError::Conflict(format!("exec {exec_id} is not running")));
    };
    let (rows, cols) = (q.h.unwrap_or(0), q.w.unwrap_or(0));
    let rt = st.containers.runtime().clone();
    blocking(move || {
        rt.exec_resize(&e.container, &rid, rows, cols)
            .map_err(crate::error::ServiceError::runtime)
    })
    .await?;
    Ok(StatusCode::OK)
}
