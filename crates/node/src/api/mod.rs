//! The Docker Engine API server: translates HTTP requests into service calls and typed
//! results back into Docker-shaped responses. It decides nothing itself.
//!
//! ```text
//!  request --strip /v1.NN--> route --> parse --> service --> Result<T, ApiError>
//!                                                               |
//!                                  ApiError -> (status, {"message": ...}) in error.rs
//! ```

mod error;
mod system;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::extract::Request;
use axum::Router;
use tokio::net::UnixListener;
use tokio::sync::watch;

pub use system::EngineInfo;

/// The newest Engine API version berthd speaks; clients negotiate down from it.
pub const API_VERSION: &str = "1.50";
/// The oldest Engine API version berthd accepts.
pub const MIN_API_VERSION: &str = "1.24";

/// Shared state handed to every route group.
#[derive(Debug, Clone)]
pub struct AppState {
    pub engine: Arc<EngineInfo>,
}

impl AppState {
    pub fn new(engine: EngineInfo) -> Self {
        AppState {
            engine: Arc::new(engine),
        }
    }
}

/// All routes, unversioned; [`strip_version`] maps `/v1.NN/...` onto them.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(system::routes())
        .fallback(error::not_found)
        .layer(axum::middleware::map_response(error::common_headers))
        .with_state(state)
}

/// Rewrites `/v1.NN/rest` to `/rest`, so both path forms reach the same route.
pub fn strip_version(mut req: Request) -> Request {
    let path = req.uri().path();
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
    use axum::ServiceExt;
    let app = tower::util::MapRequestLayer::new(strip_version);
    let app = tower::Layer::layer(&app, router);
    axum::serve(listener, ServiceExt::<Request>::into_make_service(app))
        .with_graceful_shutdown(async move { shutdown.wait().await })
        .await
        .context("API server")?;
    let _ = std::fs::remove_file(&path);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
