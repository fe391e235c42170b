//! Image routes: pull (`/images/create`) with Docker's JSON progress stream, list, inspect,
//! history, tag, remove, push, save (`get`), load, import and prune.

use std::convert::Infallible;
use std::io::Read;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use berth_registry_mirror::{Credentials, PullEvent, PushEvent, Reference};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};

use super::filters::Filters;
use super::stream::{channel_body, unbounded_body};
use super::{query_bool, ApiError, AppState};
use crate::service::containers::blocking;
use crate::service::events::Event;
use crate::service::images::ImageService;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/images/create", post(create))
        .route("/images/json", get(list))
        .route("/images/load", post(load))
        .route("/images/get", get(save_many))
        .route("/images/prune", post(prune))
        .route(
            "/images/{*rest}",
            get(get_dispatch).post(post_dispatch).delete(remove),
        )
}

/// Credentials from `X-Registry-Auth` (base64url JSON of Docker's `AuthConfig`:
/// `username`, `password`, `auth`, `serveraddress`, `identitytoken`, `registrytoken`),
/// anonymous when absent or empty. See [`auth_config`].
pub(super) fn credentials(headers: &HeaderMap) -> Result<Credentials, ApiError> {
    use base64::Engine as _;
    let Some(raw) = headers.get("X-Registry-Auth").and_then(|v| v.to_str().ok()) else {
        return Ok(Credentials::Anonymous);
    };
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(Credentials::Anonymous);
    }
    let bytes = base64::engine::general_purpose::URL_SAFE
        .decode(raw)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(raw))
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(raw))
        .map_err(|_| ApiError::BadRequest("invalid X-Registry-Auth header".into()))?;
    let v: Value = serde_json::from_slice(&bytes)
        .map_err(|_| ApiError::BadRequest("invalid X-Registry-Auth header".into()))?;
    auth_config(&v)
}

/// The credentials of one Docker `AuthConfig` object (the `X-Registry-Auth` JSON and the
/// `POST /auth` body): `registrytoken` (a bearer token sent as is) wins, then
/// `username`/`password`, then `auth` (base64 `user:password`, as in the CLI's
/// config.json). `identitytoken` (an OAuth refresh token some token servers hand out at
/// login) is refused by name: berth's login never asks for one, so only credentials made
/// by another engine carry it.
pub(super) fn auth_config(v: &Value) -> Result<Credentials, ApiError> {
    use base64::Engine as _;
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("");
    if !s("registrytoken").is_empty() {
        return Ok(Credentials::BearerToken(s("registrytoken").to_string()));
    }
    if !s("identitytoken").is_empty() {
        return Err(ApiError::BadRequest(
            "identitytoken credentials are not supported by berth: log in again with a username and password".into(),
        ));
    }
    let (mut user, mut pass) = (s("username").to_string(), s("password").to_string());
    if user.is_empty() && !s("auth").is_empty() {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(s("auth"))
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|p| {
                p.split_once(':')
                    .map(|(u, p)| (u.to_string(), p.to_string()))
            })
            .ok_or_else(|| {
                ApiError::BadRequest("invalid auth configuration: bad \"auth\" field".into())
            })?;
        (user, pass) = decoded;
    }
    Ok(if user.is_empty() {
        Credentials::Anonymous
    } else {
        Credentials::Basic {
            username: user,
            password: pass,
        }
    })
}

pub(super) fn progress_line(v: Value) -> Result<Vec<u8>, Infallible> {
    let mut line = serde_json::to_vec(&v).expect("json");
    line.extend_from_slice(b"\r\n");
    Ok(line)
}

fn error_line(msg: &str) -> Result<Vec<u8>, Infallible> {
    progress_line(json!({"errorDetail": {"message": msg}, "error": msg}))
}

fn progress_bar(done: u64, total: u64) -> String {
    let width = 50u64;
    let filled = (done.min(total) * width).checked_div(total).unwrap_or(0);
    let bar: String = (0..width)
        .map(|i| match i.cmp(&filled) {
            std::cmp::Ordering::Less => '=',
            std::cmp::Ordering::Equal => '>',
            std::cmp::Ordering::Greater => ' ',
        })
        .collect();
    format!("[{bar}] {}/{}", human_bytes(done), human_bytes(total))
}

fn human_bytes(n: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i < units.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{n}B")
    } else {
        format!("{v:.3}{}", units[i])
    }
}

pub(super) fn pull_event_json(e: &PullEvent, tag: &str, repo_path: &str) -> Value {
    let (id, mut status, detail) = e.docker_status();
    if let PullEvent::Resolved { .. } = e {
        status = format!("Pulling from {repo_path}");
    }
    let mut v = json!({"status": status});
    match (id, e) {
        (Some(id), _) => v["id"] = json!(id),
        (None, PullEvent::Resolved { .. }) => v["id"] = json!(tag),
        _ => {}
    }
    if let Some((done, total)) = detail {
        v["progressDetail"] = json!({"current": done, "total": total});
        v["progress"] = json!(progress_bar(done, total));
    } else if v.get("id").is_some() {
        v["progressDetail"] = json!({});
    }
    v
}

#[derive(Debug, Deserialize)]
struct CreateQuery {
    #[serde(rename = "fromImage")]
    from_image: Option<String>,
    #[serde(rename = "fromSrc")]
    from_src: Option<String>,
    repo: Option<String>,
    tag: Option<String>,
    platform: Option<String>,
}

/// The reference `fromImage` + `tag` name.
pub fn pull_reference(from: &str, tag: Option<&str>) -> Result<Reference, ApiError> {
    let tag = tag.filter(|t| !t.is_empty());
    let joined = match tag {
        Some(t) if t.starts_with("sha256:") => format!("{from}@{t}"),
        Some(t) => format!("{from}:{t}"),
        None => from.to_string(),
    };
    ImageService::parse_reference(&joined).map_err(ApiError::from)
}

async fn create(
    State(st): State<AppState>,
    Query(q): Query<CreateQuery>,
    headers: HeaderMap,
    req: Request,
) -> Result<Response, ApiError> {
    if let Some(src) = q.from_src.as_deref().filter(|s| !s.is_empty()) {
        return import(st, src, q.repo.as_deref(), q.tag.as_deref(), req).await;
    }
    let from = q
        .from_image
        .as_deref()
        .filter(|f| !f.is_empty())
        .ok_or_else(|| ApiError::BadRequest("fromImage or fromSrc is required".into()))?;
    let reference = pull_reference(from, q.tag.as_deref())?;
    let creds = credentials(&headers)?;
    let tag_shown = reference
        .tag()
        .map(str::to_owned)
        .or_else(|| reference.digest().map(|d| d.to_string()))
        .unwrap_or_else(|| "latest".into());
    // Progress lines, or the pull's failure. A failure before the first line (the
    // reference did not resolve: no such manifest, registry unreachable, auth) is answered
    // as an HTTP error, as dockerd does; after it, as an error line in the stream.
    let (tx, mut rx) =
        tokio::sync::mpsc::unbounded_channel::<Result<Vec<u8>, crate::error::ServiceError>>();
    let images = st.images.clone();
    let events = st.events.clone();
    let platform = q.platform.clone();
    tokio::spawn(async move {
        let tx2 = tx.clone();
        let tag2 = tag_shown.clone();
        let path = reference.path().to_string();
        let progress = move |e: PullEvent| {
            let _ = tx2.send(Ok(progress_line(pull_event_json(&e, &tag2, &path))
                .unwrap_or_else(|never| match never {})));
        };
        match images
            .pull(&reference, platform.as_deref(), creds, &progress)
            .await
        {
            Ok(outcome) => {
                let familiar = reference
                    .familiar_tagged()
                    .unwrap_or_else(|| reference.to_string());
                let status = if outcome.new {
                    format!("Status: Downloaded newer image for {familiar}")
                } else {
                    format!("Status: Image is up to date for {familiar}")
                };
                let _ = tx
                    .send(Ok(progress_line(json!({"status": status}))
                        .unwrap_or_else(|never| match never {})));
                events.publish(Event::now(
                    "image",
                    "pull",
                    &reference.to_string(),
                    [("name".to_string(), reference.to_string())].into(),
                ));
            }
            Err(e) => {
                let _ = tx.send(Err(e));
            }
        }
    });
    let first = match rx.recv().await {
        Some(Ok(line)) => line,
        Some(Err(e)) => return Err(e.into()),
        None => return Ok(json_body(Body::empty())),
    };
    let lines = futures::stream::once(async move { Ok::<_, Infallible>(first) }).chain(
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).map(|m| {
            Ok::<_, Infallible>(match m {
                Ok(line) => line,
                Err(e) => error_line(&e.to_string()).unwrap_or_else(|never| match never {}),
            })
        }),
    );
    Ok(json_body(Body::from_stream(lines)))
}

/// A streamed JSON-lines response.
pub(super) fn json_body(body: Body) -> Response {
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .expect("valid response")
}

/// Collects a request body into a blocking reader (bounded memory through a channel).
pub(super) fn body_reader(req: Request) -> impl Read + Send + 'static {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(16);
    let mut stream = req.into_body().into_data_stream();
    tokio::spawn(async move {
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(c) => {
                    let tx = tx.clone();
                    let data = c.to_vec();
                    if tokio::task::spawn_blocking(move || tx.send(data))
                        .await
                        .map(|r| r.is_err())
                        .unwrap_or(true)
                    {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    });
    ChannelReader {
        rx,
        buf: Vec::new(),
        pos: 0,
    }
}

struct ChannelReader {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.buf.len() {
            match self.rx.recv() {
                Ok(b) => {
                    self.buf = b;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

async fn import(
    st: AppState,
    src: &str,
    repo: Option<&str>,
    tag: Option<&str>,
    req: Request,
) -> Result<Response, ApiError> {
    if src != "-" {
        return Err(ApiError::BadRequest(
            "import from a URL is not supported: use fromSrc=- with the tar as the body".into(),
        ));
    }
    // As dockerd: a repository without a tag is tagged `latest`; a digest is refused.
    let reference = match repo.filter(|r| !r.is_empty()) {
        Some(r) => {
            let r = pull_reference(r, tag)?;
            if r.digest().is_some() {
                return Err(ApiError::BadRequest(
                    "cannot import digest reference".into(),
                ));
            }
            Some(match r.tag() {
                Some(_) => r,
                None => r
                    .with_tag(berth_registry_mirror::reference::DEFAULT_TAG)
                    .map_err(|e| ApiError::from(crate::service::images::image_error(e)))?,
            })
        }
        None => None,
    };
    // `changes` (repeated) and `message`, from the raw query
    let mut changes = Vec::new();
    let mut message = None;
    for pair in req.uri().query().unwrap_or_default().split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "changes" => changes.push(percent_decode(v)),
            "message" => message = Some(percent_decode(v)).filter(|m| !m.is_empty()),
            _ => {}
        }
    }
    let mut config = serde_json::Map::new();
    if let Err(e) = crate::service::containers::fs::apply_changes(&mut config, &changes) {
        // read the upload first: a client still sending would see a reset, not the error
        let mut reader = body_reader(req);
        let _ =
            tokio::task::spawn_blocking(move || std::io::copy(&mut reader, &mut std::io::sink()))
                .await;
        return Err(e.into());
    }
    let reader = body_reader(req);
    let images = st.images.clone();
    let id = blocking(move || {
        images.import(
            reader,
            reference.as_ref(),
            Value::Object(config),
            message.as_deref(),
        )
    })
    .await?;
    Ok(json_body(Body::from_stream(futures::stream::iter([
        progress_line(json!({"status": id.to_string()})),
    ]))))
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    all: Option<String>,
    filters: Option<String>,
}

async fn list(
    State(st): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let all = query_bool(q.all.as_deref())?;
    // As dockerd: the builder's intermediate images (untagged parents of other build
    // steps) are listed only with `all`.
    let intermediate = if all {
        Default::default()
    } else {
        st.builds.intermediate_images()
    };
    let f = Filters::parse(q.filters.as_deref())?;
    f.only(&["reference", "dangling", "label", "before", "since"])?;
    let images = st.images.clone();
    let (before, since) = (f.get("before"), f.get("since"));
    let list = blocking(move || {
        let list = images
            .images
            .store
            .list()
            .map_err(crate::service::images::image_error)?;
        // `before`/`since`: the named image's creation time (404 if there is none).
        let created_of = |refs: &[String]| -> Result<Option<i64>, crate::error::ServiceError> {
            refs.last()
                .map(|r| {
                    images
                        .inspect(r)
                        .map(|d| created_nanos(d.created.as_deref()))
                })
                .transpose()
        };
        let bounds = (created_of(&before)?, created_of(&since)?);
        // Labels come from each image's config.
        let labelled = list
            .into_iter()
            .map(|i| {
                let labels = images
                    .inspect(&i.id.to_string())
                    .ok()
                    .and_then(|d| d.config)
                    .and_then(|c| c.get("Labels").cloned())
                    .filter(Value::is_object)
                    .unwrap_or(Value::Null);
                (i, labels)
            })
            .collect::<Vec<_>>();
        Ok((labelled, bounds))
    })
    .await?;
    let (list, (before, since)) = list;
    let dangling = f.bool("dangling")?;
    let refs = f.get("reference");
    let labels = f.get("label");
    let out: Vec<Value> = list
        .into_iter()
        .filter(|(i, _)| !i.repo_tags.is_empty() || !intermediate.contains(&i.id.to_string()))
        .filter(|(i, _)| dangling.is_none_or(|d| d == i.repo_tags.is_empty()))
        .filter_map(|(mut i, l)| {
            if refs.is_empty() {
                return Some((i, l));
            }
            // As dockerd: an image matches when one of its tags does, and only the
            // matching tags are listed; the same for the digests (`repo@sha256:...`),
            // which the CLI would otherwise show as `repo:<none>`.
            let matches = |name: &str, repo: &str| {
                refs.iter()
                    .any(|r| name == r || repo == r || glob_match(r, name))
            };
            i.repo_tags.retain(|t| matches(t, repository_of(t)));
            i.repo_digests
                .retain(|d| matches(d, d.split_once('@').map_or(d.as_str(), |(repo, _)| repo)));
            (!i.repo_tags.is_empty() || !i.repo_digests.is_empty()).then_some((i, l))
        })
        .filter(|(i, l)| {
            let created = created_nanos(i.created.as_deref());
            before.is_none_or(|b| created < b)
                && since.is_none_or(|s| created > s)
                && labels_match(&labels, l)
        })
        .map(|(i, labels)| {
            json!({
                "Id": i.id.to_string(),
                "ParentId": "",
                "RepoTags": i.repo_tags,
                "RepoDigests": i.repo_digests,
                "Created": created_secs(i.created.as_deref()),
                "Size": i.size,
                "SharedSize": -1,
                "Labels": labels,
                "Containers": -1,
            })
        })
        .collect();
    Ok(Json(Value::Array(out)))
}

/// The repository part of a `repo:tag` string: the text before the last `:` that comes
/// after the last `/` (`127.0.0.1:5000/app:1` -> `127.0.0.1:5000/app`).
fn repository_of(tagged: &str) -> &str {
    let slash = tagged.rfind('/').map_or(0, |i| i + 1);
    match tagged[slash..].rfind(':') {
        Some(i) => &tagged[..slash + i],
        None => tagged,
    }
}

/// Unix seconds of an RFC 3339 creation time (0 when absent or malformed).
fn created_secs(created: Option<&str>) -> i64 {
    created
        .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
        .map_or(0, |t| t.timestamp())
}

/// Nanoseconds since the epoch of an RFC 3339 creation time, for ordering images.
fn created_nanos(created: Option<&str>) -> i64 {
    created
        .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
        .and_then(|t| t.timestamp_nanos_opt())
        .unwrap_or(0)
}

/// dockerd's `MatchKVList`: every `key` or `key=value` must match `labels` (an object).
fn labels_match(wanted: &[String], labels: &Value) -> bool {
    wanted.iter().all(|w| {
        let (k, v) = w
            .split_once('=')
            .map_or((w.as_str(), None), |(k, v)| (k, Some(v)));
        match (labels.get(k).and_then(Value::as_str), v) {
            (Some(have), Some(want)) => have == want,
            (Some(_), None) => true,
            (None, _) => false,
        }
    })
}

/// `*` wildcards as in `docker images --filter reference=busy*`.
fn glob_match(pattern: &str, s: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == s;
    }
    let mut rest = s;
    for (i, p) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(p) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(p);
        } else {
            match rest.find(p) {
                Some(pos) => rest = &rest[pos + p.len()..],
                None => return false,
            }
        }
    }
    true
}

async fn get_dispatch(
    State(st): State<AppState>,
    Path(rest): Path<String>,
) -> Result<Response, ApiError> {
    if let Some(name) = rest.strip_suffix("/json") {
        return inspect(st, name).await.map(IntoResponse::into_response);
    }
    if let Some(name) = rest.strip_suffix("/history") {
        return history(st, name).await.map(IntoResponse::into_response);
    }
    if let Some(name) = rest.strip_suffix("/get") {
        return save(st, vec![name.to_string()]).await;
    }
    Err(ApiError::NotFound(format!(
        "page not found: /images/{rest}"
    )))
}

#[derive(Debug, Deserialize)]
struct PostQuery {
    repo: Option<String>,
    tag: Option<String>,
}

async fn post_dispatch(
    State(st): State<AppState>,
    Path(rest): Path<String>,
    Query(q): Query<PostQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(name) = rest.strip_suffix("/tag") {
        let repo = q.repo.as_deref().filter(|r| !r.is_empty()).ok_or_else(|| {
            ApiError::BadRequest("repository name must have at least one component".into())
        })?;
        let target = pull_reference(repo, q.tag.as_deref())?;
        if target.digest().is_some() {
            return Err(ApiError::BadRequest(
                "refusing to create a tag with a digest reference".into(),
            ));
        }
        let images = st.images.clone();
        let name = name.to_string();
        let t = target.clone();
        blocking(move || {
            images
                .images
                .store
                .tag(&name, &t)
                .map_err(crate::service::images::image_error)
        })
        .await?;
        st.events.publish(Event::now(
            "image",
            "tag",
            &target.to_string(),
            [("name".to_string(), target.to_string())].into(),
        ));
        return Ok(StatusCode::CREATED.into_response());
    }
    if let Some(name) = rest.strip_suffix("/push") {
        return push(st, name, q.tag.as_deref(), &headers).await;
    }
    Err(ApiError::NotFound(format!(
        "page not found: /images/{rest}"
    )))
}

async fn inspect(st: AppState, name: &str) -> Result<Json<Value>, ApiError> {
    let images = st.images.clone();
    let name = name.to_string();
    let (d, comment) = blocking(move || {
        let d = images.inspect(&name)?;
        // the image config's top-level "comment" (`docker commit -m`, `import -m`)
        let comment = images
            .images
            .store
            .blobs()
            .read(&d.id)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| v["comment"].as_str().map(str::to_string))
            .unwrap_or_default();
        Ok((d, comment))
    })
    .await?;
    Ok(Json(json!({
        "Id": d.id.to_string(),
        "RepoTags": d.repo_tags,
        "RepoDigests": d.repo_digests,
        "Parent": "",
        "Comment": comment,
        "Created": d.created,
        "DockerVersion": "",
        "Author": d.author.unwrap_or_default(),
        "Config": d.config,
        "Architecture": d.architecture,
        "Variant": d.variant,
        "Os": d.os,
        "Size": d.size,
        "GraphDriver": {"Name": "overlay2", "Data": null},
        "RootFS": {"Type": "layers", "Layers": d.rootfs_layers.iter().map(|l| l.to_string()).collect::<Vec<_>>()},
        "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"},
    })))
}

async fn history(st: AppState, name: &str) -> Result<Json<Value>, ApiError> {
    let images = st.images.clone();
    let name = name.to_string();
    let d = blocking(move || images.inspect(&name)).await?;
    // Newest first; layers are matched to non-empty history entries bottom-up.
    let mut sizes = d.record.layers.iter().map(|l| l.diff_size);
    let mut rows: Vec<Value> = d
        .history
        .iter()
        .map(|h| {
            let size = if h.empty_layer {
                0
            } else {
                sizes.next().unwrap_or(0)
            };
            let created = h
                .created
                .as_deref()
                .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
                .map_or(0, |t| t.timestamp());
            json!({
                "Id": "<missing>",
                "Created": created,
                "CreatedBy": h.created_by.clone().unwrap_or_default(),
                "Tags": null,
                "Size": size,
                "Comment": h.comment.clone().unwrap_or_default(),
            })
        })
        .collect();
    rows.reverse();
    // Rows of the image and, as dockerd shows them, of the images it was built on, down
    // the builder's parent links (each built step is one image with one more history
    // entry); the rest are "<missing>", as for pulled images.
    let builds = st.builds.clone();
    let images = st.images.clone();
    let top = d.id.to_string();
    let tags = d.repo_tags.clone();
    let ids = blocking(move || {
        let mut out = vec![(top.clone(), tags)];
        let mut cur = top;
        while let Some(parent) = builds.parent_of(&cur) {
            let tags = images
                .inspect(&parent)
                .map(|p| p.repo_tags)
                .unwrap_or_default();
            out.push((parent.clone(), tags));
            cur = parent;
        }
        Ok(out)
    })
    .await?;
    for (row, (id, tags)) in rows.iter_mut().zip(ids) {
        row["Id"] = json!(id);
        row["Tags"] = if tags.is_empty() {
            Value::Null
        } else {
            json!(tags)
        };
    }
    Ok(Json(Value::Array(rows)))
}

#[derive(Debug, Deserialize)]
struct RemoveQuery {
    force: Option<String>,
}

async fn remove(
    State(st): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<RemoveQuery>,
) -> Result<Json<Value>, ApiError> {
    let force = query_bool(q.force.as_deref())?;
    let images = st.images.clone();
    let containers = st.containers.clone();
    let report =
        blocking(move || images.remove(&name, force, &|id| containers.image_user(&id.to_string())))
            .await?;
    let mut out: Vec<Value> = report
        .untagged
        .iter()
        .map(|u| json!({"Untagged": u}))
        .collect();
    for d in &report.deleted {
        out.push(json!({"Deleted": d.to_string()}));
        st.events.publish(Event::now(
            "image",
            "delete",
            &d.to_string(),
            Default::default(),
        ));
    }
    for u in &report.untagged {
        st.events
            .publish(Event::now("image", "untag", u, Default::default()));
    }
    Ok(Json(Value::Array(out)))
}

async fn push(
    st: AppState,
    name: &str,
    tag: Option<&str>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let reference = pull_reference(name, tag)?;
    let creds = credentials(headers)?;
    // Fail before the 200 when the image is not here.
    st.images.inspect(&reference.to_string())?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Result<Vec<u8>, Infallible>>();
    let images = st.images.clone();
    let events = st.events.clone();
    let _ = tx.send(progress_line(json!({
        "status": format!("The push refers to repository [{}]", reference.name())
    })));
    tokio::spawn(async move {
        let tx2 = tx.clone();
        let progress = move |e: PushEvent| {
            let v = match e {
                PushEvent::BlobExists { digest } => {
                    json!({"status": "Layer already exists", "progressDetail": {}, "id": digest.short()})
                }
                PushEvent::BlobUploading { digest, size } => json!({
                    "status": "Pushing", "id": digest.short(),
                    "progressDetail": {"current": 0, "total": size},
                }),
                PushEvent::BlobPushed { digest } => {
                    json!({"status": "Pushed", "progressDetail": {}, "id": digest.short()})
                }
                PushEvent::Done { tag, digest, size } => {
                    let _ = tx2.send(progress_line(json!({
                        "status": format!("{tag}: digest: {digest} size: {size}")
                    })));
                    json!({"progressDetail": {}, "aux": {"Tag": tag, "Digest": digest.to_string(), "Size": size}})
                }
            };
            let _ = tx2.send(progress_line(v));
        };
        match images.push(&reference, creds, &progress).await {
            Ok(()) => events.publish(Event::now(
                "image",
                "push",
                &reference.to_string(),
                Default::default(),
            )),
            Err(e) => {
                let _ = tx.send(error_line(&e.to_string()));
            }
        }
    });
    Ok(json_body(unbounded_body(rx)))
}

async fn save_many(
    State(st): State<AppState>,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
) -> Result<Response, ApiError> {
    let mut names = Vec::new();
    for pair in raw.unwrap_or_default().split('&') {
        if let Some(v) = pair.strip_prefix("names=") {
            names.push(percent_decode(v));
        }
    }
    if names.is_empty() {
        return Err(ApiError::BadRequest("names is required".into()));
    }
    save(st, names).await
}

pub(super) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = (b[i] == b'%' && i + 2 < b.len())
            .then(|| std::str::from_utf8(&b[i + 1..i + 3]).ok())
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (hex, b[i]) {
            (Some(v), _) => {
                out.push(v);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, c) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn save(st: AppState, names: Vec<String>) -> Result<Response, ApiError> {
    // Resolve everything first: a missing image is a 404, not a broken tar.
    for n in &names {
        st.images.inspect(n)?;
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, Infallible>>(16);
    let images = st.images.clone();
    tokio::task::spawn_blocking(move || {
        let w = ChannelWriter { tx };
        if let Err(e) = images.save(&names, w) {
            tracing::warn!(error = %e, "image save failed mid-stream");
        }
    });
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "application/x-tar")
        .body(channel_body(rx))
        .expect("valid response"))
}

pub(super) struct ChannelWriter {
    pub(super) tx: tokio::sync::mpsc::Sender<Result<Vec<u8>, Infallible>>,
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tx
            .blocking_send(Ok(buf.to_vec()))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
struct LoadQuery {
    quiet: Option<String>,
}

async fn load(
    State(st): State<AppState>,
    Query(q): Query<LoadQuery>,
    req: Request,
) -> Result<Response, ApiError> {
    let _quiet = query_bool(q.quiet.as_deref())?;
    let reader = body_reader(req);
    let images = st.images.clone();
    let loaded = blocking(move || images.load(reader)).await?;
    let mut lines = Vec::new();
    for (id, tags) in loaded {
        if tags.is_empty() {
            lines.push(progress_line(
                json!({"stream": format!("Loaded image ID: {id}\n")}),
            ));
        }
        for t in tags {
            lines.push(progress_line(
                json!({"stream": format!("Loaded image: {t}\n")}),
            ));
            st.events
                .publish(Event::now("image", "load", &t, Default::default()));
        }
    }
    Ok(json_body(Body::from_stream(futures::stream::iter(lines))))
}

#[derive(Debug, Deserialize)]
struct PruneQuery {
    filters: Option<String>,
}

/// `POST /build/prune` (part of `docker system prune`): berthd has no builder, so there is
/// never a build cache to remove: `CachesDeleted` is null and `SpaceReclaimed` 0, as
/// dockerd answers with an empty cache. Filters are checked against BuildKit's keys.
/// `POST /images/prune`, as dockerd: images no container (running or not) uses; only
/// dangling (untagged) ones unless the `dangling=false` filter (`docker image prune -a`);
/// `until` (created before) and `label` / `label!` (image config labels) narrow it. A
/// tagged image is untagged reference by reference, the last one deleting it.
async fn prune(
    State(st): State<AppState>,
    Query(q): Query<PruneQuery>,
) -> Result<Json<Value>, ApiError> {
    let f = super::filters::Filters::parse(q.filters.as_deref())?;
    f.only(&["dangling", "until", "label", "label!"])?;
    let dangling_only = f.bool("dangling")?.unwrap_or(true);
    let until = f.until(super::now_nanos())?;
    let by_label = !f.get("label").is_empty() || !f.get("label!").is_empty();
    let images = st.images.clone();
    let containers = st.containers.clone();
    let (untagged, deleted, bytes, items) = blocking(move || {
        let list = images
            .images
            .store
            .list()
            .map_err(crate::service::images::image_error)?;
        let user_of = |d: &berth_registry_mirror::Digest| containers.image_user(&d.to_string());
        let in_use = |d: &berth_registry_mirror::Digest| user_of(d).is_some();
        let (mut untagged, mut deleted, mut bytes) = (Vec::new(), Vec::new(), 0u64);
        let mut items: Vec<Value> = Vec::new();
        for i in list {
            if (dangling_only && !i.repo_tags.is_empty()) || in_use(&i.id) {
                continue;
            }
            if let Some(until) = until {
                let created = i
                    .created
                    .as_deref()
                    .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
                    .and_then(|c| c.timestamp_nanos_opt())
                    .unwrap_or(i64::MIN);
                if created >= until {
                    continue;
                }
            }
            if by_label {
                let details = images
                    .images
                    .store
                    .inspect(&i.id.to_string())
                    .map_err(crate::service::images::image_error)?;
                let labels: std::collections::BTreeMap<String, String> = details
                    .config
                    .as_ref()
                    .and_then(|c| c.get("Labels"))
                    .and_then(|l| serde_json::from_value(l.clone()).ok())
                    .unwrap_or_default();
                if !super::filters::labels_match(&f, &labels) {
                    continue;
                }
            }
            let refs = if i.repo_tags.is_empty() {
                vec![i.id.to_string()]
            } else {
                i.repo_tags.clone()
            };
            for r in refs {
                // Taken into use or removed since it was listed: keep going, as dockerd.
                let Ok(report) = images.remove(&r, false, &user_of) else {
                    continue;
                };
                // Per image, as dockerd lists them: its references, then its ID.
                items.extend(report.untagged.iter().map(|u| json!({"Untagged": u})));
                items.extend(
                    report
                        .deleted
                        .iter()
                        .map(|d| json!({"Deleted": d.to_string()})),
                );
                untagged.extend(report.untagged);
                deleted.extend(report.deleted);
                bytes += report.unused_bytes;
            }
        }
        Ok::<_, crate::error::ServiceError>((untagged, deleted, bytes, items))
    })
    .await?;
    for u in &untagged {
        st.events
            .publish(Event::now("image", "untag", u, Default::default()));
    }
    for d in &deleted {
        st.events.publish(Event::now(
            "image",
            "delete",
            &d.to_string(),
            Default::default(),
        ));
    }
    Ok(Json(json!({
        "ImagesDeleted": if items.is_empty() { Value::Null } else { Value::Array(items) },
        "SpaceReclaimed": bytes,
    })))
}

#[cfg(test)]
mod reference_filter_tests {
    use super::repository_of;

    #[test]
    fn the_repository_of_a_tag_keeps_a_registry_port() {
        assert_eq!(repository_of("127.0.0.1:5000/app:1"), "127.0.0.1:5000/app");
        assert_eq!(repository_of("busybox:latest"), "busybox");
        assert_eq!(repository_of("localhost:5000/a/b"), "localhost:5000/a/b");
    }
}

#[cfg(test)]
mod auth_config_tests {
    use super::{auth_config, credentials};
    use axum::http::HeaderMap;
    use berth_registry_mirror::Credentials;
    use serde_json::json;

    fn basic(u: &str, p: &str) -> Credentials {
        Credentials::Basic {
            username: u.into(),
            password: p.into(),
        }
    }

    #[test]
    fn docker_auth_configs_become_credentials() {
        assert_eq!(
            auth_config(&json!({"username": "a", "password": "b", "serveraddress": "h"})).unwrap(),
            basic("a", "b")
        );
        // `auth` is base64 "user:password", as in the CLI's config.json.
        assert_eq!(
            auth_config(&json!({"auth": "YTpiOmM="})).unwrap(),
            basic("a", "b:c")
        );
        assert_eq!(
            auth_config(&json!({"registrytoken": "t", "username": "a"})).unwrap(),
            Credentials::BearerToken("t".into())
        );
        assert_eq!(
            auth_config(&json!({"username": "", "password": ""})).unwrap(),
            Credentials::Anonymous
        );
        let e = auth_config(&json!({"identitytoken": "r"})).unwrap_err();
        assert!(e.to_string().contains("identitytoken"), "{e}");
        assert!(auth_config(&json!({"auth": "not base64!"})).is_err());
    }

    #[test]
    fn the_header_is_base64url_json() {
        let mut h = HeaderMap::new();
        assert_eq!(credentials(&h).unwrap(), Credentials::Anonymous);
        // {"username":"a?","password":"b>"} has '-' and '_' in base64url.
        use base64::Engine as _;
        let v = base64::engine::general_purpose::URL_SAFE
            .encode(br#"{"username":"a??","password":"b>>"}"#);
        h.insert("X-Registry-Auth", v.parse().unwrap());
        assert_eq!(credentials(&h).unwrap(), basic("a??", "b>>"));
        h.insert("X-Registry-Auth", "%%%".parse().unwrap());
        assert!(credentials(&h).is_err());
    }
}
