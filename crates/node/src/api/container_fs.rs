//! Container filesystem routes: `docker diff` (`GET /containers/{id}/changes`), `docker cp`
//! (`HEAD`/`GET`/`PUT /containers/{id}/archive`), `docker export`
//! (`GET /containers/{id}/export`) and `docker commit` (`POST /commit`). Shapes and
//! errors as dockerd 20.10 gives them (moby `api/server/router/container`).

use std::convert::Infallible;

use axum::extract::{Path, Query, RawQuery, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use berth_runtime::container_fs::{self, ExtractOptions, PathStat};
use serde::Deserialize;
use serde_json::{json, Value};

use super::images::{body_reader, percent_decode, ChannelWriter};
use super::{query_bool, ApiError, AppState};
use crate::service::containers::blocking;
use crate::service::containers::fs::CommitRequest;
use crate::service::images::ImageService;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/containers/{id}/changes", get(changes))
        .route("/containers/{id}/export", get(export))
        .route(
            "/containers/{id}/archive",
            get(archive_get).head(archive_head).put(archive_put),
        )
        .route("/commit", post(commit))
}

async fn changes(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let svc = st.containers.clone();
    let list = blocking(move || svc.changes_blocking(&id)).await?;
    Ok(Json(Value::Array(
        list.iter()
            .map(|c| json!({"Path": c.path, "Kind": c.kind as u8}))
            .collect(),
    )))
}

async fn export(State(st): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let svc = st.containers.clone();
    let key = id.clone();
    blocking(move || svc.resolve(&key)).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, Infallible>>(16);
    let svc = st.containers.clone();
    tokio::task::spawn_blocking(move || {
        let r = svc.with_root(&id, true, |root| {
            let w = ChannelWriter { tx };
            berth_runtime::changes::write_tree_tar(
                // "/." : the magic link itself is a symlink to lstat
                &std::path::PathBuf::from(format!(
                    "/proc/self/fd/{}/.",
                    std::os::fd::AsRawFd::as_raw_fd(root)
                )),
                "",
                w,
            )
            .map_err(container_fs::CopyError::Runtime)
        });
        if let Err(e) = r {
            tracing::warn!(error = %e, "container export failed mid-stream");
        }
    });
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "application/x-tar")
        .body(super::stream::channel_body(rx))
        .expect("valid response"))
}

#[derive(Debug, Deserialize)]
struct ArchiveQuery {
    path: Option<String>,
    #[serde(rename = "noOverwriteDirNonDir")]
    no_overwrite_dir_non_dir: Option<String>,
    #[serde(rename = "copyUIDGID")]
    copy_uid_gid: Option<String>,
}

fn archive_path_arg(q: &ArchiveQuery) -> Result<String, ApiError> {
    q.path
        .clone()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| ApiError::BadRequest("Path cannot be empty".into()))
}

fn stat_header(stat: &PathStat) -> HeaderValue {
    let json = serde_json::to_vec(stat).expect("stat serialises");
    HeaderValue::from_str(&base64::engine::general_purpose::STANDARD.encode(json))
        .expect("base64 is a valid header")
}

async fn stat(st: &AppState, id: &str, path: &str) -> Result<PathStat, ApiError> {
    let svc = st.containers.clone();
    let (id, path) = (id.to_string(), path.to_string());
    Ok(
        blocking(move || svc.with_root(&id, false, |root| container_fs::stat_path(root, &path)))
            .await?,
    )
}

async fn archive_head(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<ArchiveQuery>,
) -> Result<Response, ApiError> {
    let path = archive_path_arg(&q)?;
    let s = stat(&st, &id, &path).await?;
    let mut r = StatusCode::OK.into_response();
    r.headers_mut()
        .insert("X-Docker-Container-Path-Stat", stat_header(&s));
    Ok(r)
}

async fn archive_get(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<ArchiveQuery>,
) -> Result<Response, ApiError> {
    let path = archive_path_arg(&q)?;
    let s = stat(&st, &id, &path).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, Infallible>>(16);
    let svc = st.containers.clone();
    tokio::task::spawn_blocking(move || {
        let r = svc.with_root(&id, false, |root| {
            container_fs::archive_path(root, &path, ChannelWriter { tx })
        });
        if let Err(e) = r {
            tracing::warn!(error = %e, "container archive failed mid-stream");
        }
    });
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "application/x-tar")
        .header("X-Docker-Container-Path-Stat", stat_header(&s))
        .body(super::stream::channel_body(rx))
        .expect("valid response"))
}

async fn archive_put(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<ArchiveQuery>,
    req: Request,
) -> Result<StatusCode, ApiError> {
    let path = archive_path_arg(&q)?;
    let no_overwrite = query_bool(q.no_overwrite_dir_non_dir.as_deref())?;
    let copy_owner = query_bool(q.copy_uid_gid.as_deref())?;
    let svc = st.containers.clone();
    let reader = body_reader(req);
    blocking(move || {
        let owner = if copy_owner {
            Some(svc.process_owner(&id)?)
        } else {
            None
        };
        let opts = ExtractOptions {
            no_overwrite_dir_non_dir: no_overwrite,
            owner,
        };
        svc.with_root(&id, false, |root| {
            container_fs::extract_archive(root, &path, reader, opts)
        })
    })
    .await?;
    Ok(StatusCode::OK)
}

/// `POST /commit?container=&repo=&tag=&comment=&author=&pause=&changes=...` (changes
/// repeated), body: an optional container config.
async fn commit(
    State(st): State<AppState>,
    RawQuery(raw): RawQuery,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let mut req = CommitRequest {
        pause: true,
        ..CommitRequest::default()
    };
    let (mut repo, mut tag) = (None::<String>, None::<String>);
    for pair in raw.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v);
        match k {
            "container" => req.container = v,
            "repo" => repo = Some(v).filter(|s| !s.is_empty()),
            "tag" => tag = Some(v).filter(|s| !s.is_empty()),
            "comment" | "m" => req.comment = Some(v),
            "author" => req.author = Some(v),
            "pause" => req.pause = v.is_empty() || query_bool(Some(&v))?,
            "changes" => req.changes.push(v),
            _ => {}
        }
    }
    if req.container.is_empty() {
        return Err(ApiError::NotFound("No such container: ".into()));
    }
    if let Some(r) = repo {
        let full = match &tag {
            Some(t) => format!("{r}:{t}"),
            None => r,
        };
        let reference = ImageService::parse_reference(&full)?;
        req.reference = Some(reference);
    }
    let text = String::from_utf8_lossy(&body);
    let text = text.trim();
    if !text.is_empty() && text != "null" {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?;
        req.config = Some(v);
    }
    let svc = st.containers.clone();
    let id = blocking(move || svc.commit_blocking(req)).await?;
    Ok((StatusCode::CREATED, Json(json!({"Id": id}))))
}
