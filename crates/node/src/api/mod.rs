//! The Docker Engine API server: translates HTTP requests into service calls and typed
//! results back into Docker-shaped responses. It decides nothing itself.
//!
//! ```text
//!  request --strip /v1.NN--> route --> parse --> service --> Result<T, ApiError>
//!                                                               |
//!                                  ApiError -> (status, {"message": ...}) in error.rs
//! ```

mod auth;
mod build;
mod container_fs;
mod containers;
mod error;
pub(crate) mod events;
pub(crate) mod filters;
mod images;
mod networks;
mod objects;
mod service_logs;
mod services;
mod stream;
mod swarm;
mod system;
mod volumes;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::extract::Request;
use axum::Router;
use tokio::net::UnixListener;
use tokio::sync::watch;

pub use error::ApiError;
pub use system::EngineInfo;

use crate::service::build::BuildService;
use crate::service::cluster::ClusterService;
use crate::service::containers::ContainerService;
use crate::service::events::EventBus;
use crate::service::images::ImageService;
use crate::service::networks::NetworkService;
use crate::service::volumes::VolumeService;

/// The newest Engine API version berthd speaks; clients negotiate down from it.
pub const API_VERSION: &str = "1.50";
/// The oldest Engine API version berthd accepts.
pub const MIN_API_VERSION: &str = "1.24";

/// Shared state handed to every route group.
#[derive(Debug, Clone)]
pub struct AppState {
    pub engine: Arc<EngineInfo>,
    pub events: EventBus,
    pub volumes: VolumeService,
    pub images: ImageService,
    pub containers: ContainerService,
    pub networks: NetworkService,
    pub cluster: ClusterService,
    pub builds: BuildService,
    /// This node's registry mirror (`--mirror-addr`), when it runs: its counters and
    /// peers are shown by `/info`.
    pub mirror: Option<NodeMirror>,
}

/// The node's own registry mirror as `/info` reports it.
#[derive(Debug, Clone)]
pub struct NodeMirror {
    pub mirror: berth_registry_mirror::Mirror,
    /// Where its HTTP API listens.
    pub addr: std::net::SocketAddr,
}

/// A JSON request body; malformed JSON is a Docker-shaped 400, not axum's plain text.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S, T> axum::extract::FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        let bytes = buffer_body(req.into_body(), MAX_JSON_BODY).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::BadRequest("request body is empty".into()));
        }
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::BadRequest(format!("invalid JSON: {e}")))
    }
}

/// Largest JSON request body berthd buffers (create bodies, service specs, secrets, exec
/// starts ...), in bytes: 2 MiB. dockerd 20.10 sets no limit (it decodes whatever arrives,
/// tests/load.rs compares); berth refuses larger bodies with a 413 and a Docker-shaped
/// message instead of buffering them. The streaming endpoints (`POST /images/load`,
/// `/images/create?fromSrc=-`, `/build`, `PUT /containers/{id}/archive`) read their bodies
/// as streams and have no such limit.
pub const MAX_JSON_BODY: usize = 2 << 20;

/// Largest request head (request line and header fields) berthd reads, in bytes: Go's
/// `http.DefaultMaxHeaderBytes` (1 MiB) plus the 4096 bytes of slack net/http adds, the
/// limit dockerd 20.10 runs with; a larger head is answered `431 Request Header Fields Too
/// Large` and the connection closed, as dockerd does.
pub const MAX_HEADER_BYTES: usize = (1 << 20) + 4096;

/// Most header fields in one request: 1024 (hyper's default is 100). dockerd limits only
/// their total size ([`MAX_HEADER_BYTES`]); more fields than this are answered 431.
pub const MAX_HEADERS: usize = 1024;

/// Reads a whole request body of at most `limit` bytes: a longer one is a 413
/// ([`ApiError::PayloadTooLarge`]) as soon as the limit is passed, without buffering the rest.
pub async fn buffer_body(
    body: axum::body::Body,
    limit: usize,
) -> Result<axum::body::Bytes, ApiError> {
    use http_body_util::BodyExt;
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::PayloadTooLarge(
            format!("request body too large: the limit is {limit} bytes"),
        )),
        Err(e) => Err(ApiError::BadRequest(format!(
            "failed to read request body: {e}"
        ))),
    }
}

/// Docker's boolean query values: `1`, `true`, `True`; `0`, `false`, empty.
pub fn query_bool(v: Option<&str>) -> Result<bool, ApiError> {
    match v {
        None | Some("") | Some("0") | Some("false") | Some("False") => Ok(false),
        Some("1") | Some("true") | Some("True") => Ok(true),
        Some(other) => Err(ApiError::BadRequest(format!(
            "invalid boolean value {other:?}"
        ))),
    }
}

/// Nanoseconds since the Unix epoch.
pub fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// The current time as RFC 3339 with nanoseconds, as Docker prints it.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// All routes, unversioned; [`strip_version`] maps `/v1.NN/...` onto them.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(system::routes())
        .merge(events::routes())
        .merge(volumes::routes())
        .merge(images::routes())
        .merge(auth::routes())
        .merge(build::routes())
        .merge(containers::routes())
        .merge(container_fs::routes())
        .merge(networks::routes())
        .merge(swarm::routes())
        .merge(objects::routes())
        .merge(services::routes())
        .merge(service_logs::routes())
        .fallback(error::not_found)
        .layer(axum::middleware::map_response(error::common_headers))
        .with_state(state)
}

/// The Engine API version a request's path asked for (`/v1.41/...` is `ApiVersion(1, 41)`),
/// put into the request's extensions by [`strip_version`]; absent for an unversioned path,
/// which means the newest version, as with dockerd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ApiVersion(pub u32, pub u32);

/// Rewrites `/v1.NN/rest` to `/rest`, so both path forms reach the same route, and records
/// the version as an [`ApiVersion`] extension.
pub fn strip_version(mut req: Request) -> Request {
    let path = req.uri().path();
    let version = path
        .strip_prefix("/v")
        .and_then(|p| p.split('/').next())
        .and_then(|v| v.split_once('.'))
        .and_then(|(a, b)| Some(ApiVersion(a.parse().ok()?, b.parse().ok()?)));
    if let Some(rest) = versioned_rest(path) {
        let rest = rest.to_string();
        let pq = match req.uri().query() {
            Some(q) => format!("{rest}?{q}"),
            None => rest,
        };
        let mut parts = req.uri().clone().into_parts();
        if let Ok(pq) = pq.parse() {
            parts.path_and_query = Some(pq);
            if let Ok(uri) = axum::http::Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
        }
        if let Some(v) = version {
            req.extensions_mut().insert(v);
        }
    }
    req
}

fn versioned_rest(path: &str) -> Option<&str> {
    let after = path.strip_prefix("/v")?;
    let slash = after.find('/')?;
    let (ver, rest) = after.split_at(slash);
    let (major, minor) = ver.split_once('.')?;
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (numeric(major) && numeric(minor)).then_some(rest)
}

/// Binds a unix socket at `path` with mode 0660, replacing a stale socket file.
pub fn bind_unix(path: &Path) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("remove stale {}", path.display())),
    }
    let listener = UnixListener::bind(path).with_context(|| format!("bind {}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("chmod {}", path.display()))?;
    Ok(listener)
}

/// Tells every server to stop accepting and finish in-flight requests.
#[derive(Debug, Clone)]
pub struct Shutdown {
    tx: Arc<watch::Sender<bool>>,
}

impl Shutdown {
    pub fn new() -> Self {
        Shutdown {
            tx: Arc::new(watch::channel(false).0),
        }
    }

    pub fn trigger(&self) {
        let _ = self.tx.send(true);
    }

    pub async fn wait(&self) {
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(|v| *v).await;
    }
}

/// Serves `router` on `listener` until `shutdown`, then removes the socket file.
pub async fn serve_unix(
    listener: UnixListener,
    path: PathBuf,
    router: Router,
    shutdown: Shutdown,
) -> Result<()> {
    serve_listener(listener, router, shutdown).await?;
    let _ = std::fs::remove_file(&path);
    Ok(())
}

/// The size of a request's head as it came on the wire, near enough: the request line and
/// every `name: value\r\n`. hyper's `max_buf_size` bounds its read buffer, but one read
/// can take more than that when the bytes are already waiting (seen under load: a 1.1 MiB
/// head parsed whole and answered 200), so [`serve_listener`] checks the parsed head too.
fn head_bytes<B>(req: &Request<B>) -> usize {
    let target = req.uri().path_and_query().map_or(1, |p| p.as_str().len());
    let line = req.method().as_str().len() + target + 12;
    req.headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum::<usize>()
        + line
}

/// hyper's answer to a head over its limit: `431 Request Header Fields Too Large`, no body
/// (what dockerd 20.10 answers beyond Go's `DefaultMaxHeaderBytes`).
fn head_too_large() -> axum::response::Response {
    let mut response = axum::response::Response::new(axum::body::Body::empty());
    *response.status_mut() = axum::http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
    response
}

/// Serves `router` on any listener (unix socket, TLS) until `shutdown`, then waits for the
/// open connections to finish their requests.
///
/// One hyper connection per accepted stream (HTTP/1.1 with upgrades for attach/exec, and
/// h2c), with explicit limits: [`MAX_HEADER_BYTES`] and [`MAX_HEADERS`] for the request
/// head (431 beyond; the size is checked again on the parsed head, [`head_bytes`]); bodies
/// are limited per endpoint ([`MAX_JSON_BODY`]).
pub async fn serve_listener<L>(mut listener: L, router: Router, shutdown: Shutdown) -> Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;
    use tower::ServiceExt as _;

    let app = tower::util::MapRequestLayer::new(strip_version);
    let app = tower::Layer::layer(&app, router);
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .max_buf_size(MAX_HEADER_BYTES)
        .max_headers(MAX_HEADERS);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (io, _addr) = tokio::select! {
            conn = listener.accept() => conn,
            () = shutdown.wait() => break,
        };
        let app = app.clone();
        let service = TowerToHyperService::new(tower::service_fn(
            move |req: Request<hyper::body::Incoming>| {
                let app = app.clone();
                async move {
                    if head_bytes(&req) > MAX_HEADER_BYTES {
                        return Ok(head_too_large());
                    }
                    app.oneshot(req.map(axum::body::Body::new)).await
                }
            },
        ));
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(io), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::trace!(error = %e, "API connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_is_measured_by_its_line_and_fields() {
        let req = Request::builder()
            .uri("/containers/json")
            .header("X-Big", "a".repeat(100))
            .body(())
            .unwrap();
        // "GET" + "/containers/json" + " HTTP/1.1\r\n" + "X-Big: " + 100 + "\r\n"
        assert_eq!(head_bytes(&req), 3 + 16 + 12 + 5 + 100 + 4);
        let big = Request::builder()
            .uri("/")
            .header("X-Big", "a".repeat(MAX_HEADER_BYTES))
            .body(())
            .unwrap();
        assert!(head_bytes(&big) > MAX_HEADER_BYTES);
        assert_eq!(
            head_too_large().status(),
            axum::http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
    }

    #[test]
    fn versioned_paths_lose_their_prefix() {
        assert_eq!(
            versioned_rest("/v1.44/containers/json"),
            Some("/containers/json")
        );
        assert_eq!(versioned_rest("/v1.50/_ping"), Some("/_ping"));
        assert_eq!(versioned_rest("/_ping"), None);
        assert_eq!(versioned_rest("/volumes/v1.2/x"), None);
        assert_eq!(versioned_rest("/vx.1/a"), None);
        assert_eq!(versioned_rest("/v1./a"), None);
    }

    #[tokio::test]
    async fn bodies_over_the_limit_are_a_413_at_the_limit_fine() {
        let body = |n: usize| axum::body::Body::from(vec![b'x'; n]);
        assert_eq!(buffer_body(body(100), 100).await.unwrap().len(), 100);
        let err = buffer_body(body(101), 100).await.unwrap_err();
        assert!(matches!(err, ApiError::PayloadTooLarge(_)), "{err:?}");
        assert_eq!(err.status(), axum::http::StatusCode::PAYLOAD_TOO_LARGE);
    }
}
