//! System routes: `/_ping`, `/version`, `/info`.

use std::path::PathBuf;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::{AppState, API_VERSION, MIN_API_VERSION};
use crate::config::Config;

/// Facts about this engine that `/version` and `/info` report.
#[derive(Debug, Clone)]
pub struct EngineInfo {
    /// The engine's id (`/info` `ID`): a UUID made on first start and kept in
    /// `<data-root>/engine-id`, as Docker 23+ does (daemon/daemon.go, loadOrCreateID).
    pub id: String,
    pub data_root: PathBuf,
    pub hostname: String,
    pub kernel: String,
    pub cpus: usize,
    pub memory_bytes: u64,
    pub insecure_registries: Vec<String>,
    /// `--registry-mirror` URLs, then this node's own mirror.
    pub registry_mirrors: Vec<String>,
    /// The containers' default logging driver (`--log-driver`).
    pub logging_driver: String,
    /// The daemon's labels (`--label`), `KEY=VALUE`.
    pub labels: Vec<String>,
}

impl EngineInfo {
    /// The facts of this host and `cfg`. Errors when the engine id can neither be read
    /// nor written under the data root.
    pub fn from_config(cfg: &Config) -> anyhow::Result<Self> {
        let uts = nix::sys::utsname::uname().ok();
        let field = |f: fn(&nix::sys::utsname::UtsName) -> &std::ffi::OsStr| {
            uts.as_ref()
                .map(|u| f(u).to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        Ok(EngineInfo {
            id: load_or_create_engine_id(&cfg.data_root)?,
            data_root: cfg.data_root.clone(),
            hostname: field(|u| u.nodename()),
            kernel: field(|u| u.release()),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_bytes: total_memory(),
            insecure_registries: cfg.insecure_registries.clone(),
            registry_mirrors: {
                let mut m = cfg.registry_mirrors.clone();
                if let Ok(Some(addr)) = cfg.mirror_listen() {
                    m.push(crate::config::own_mirror_url(addr));
                }
                m
            },
            logging_driver: cfg.log_driver.clone(),
            labels: cfg.labels.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        })
    }
}

/// Reads `<data_root>/engine-id`, or writes a new random UUID (RFC 4122 version 4,
/// lower-case hyphenated) there first.
fn load_or_create_engine_id(data_root: &std::path::Path) -> anyhow::Result<String> {
    use anyhow::Context;
    let path = data_root.join("engine-id");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    }
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    let id = format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    );
    std::fs::create_dir_all(data_root)
        .with_context(|| format!("create {}", data_root.display()))?;
    let tmp = data_root.join("engine-id.tmp");
    std::fs::write(&tmp, &id).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("rename to {}", path.display()))?;
    Ok(id)
}

/// The host's memory in bytes (`MemTotal`).
pub fn total_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/_ping", get(ping).head(ping))
        .route("/version", get(version))
        .route("/info", get(info))
        .route("/system/df", get(system_df))
}

/// `docker system df`: images, containers and volumes with their sizes.
async fn system_df(State(st): State<AppState>) -> Result<Json<Value>, super::ApiError> {
    let images = st.images.clone();
    let containers = st.containers.clone();
    let volumes = st.volumes.clone();
    let (imgs, ctrs, vols) = crate::service::containers::blocking(move || {
        let imgs = images
            .images
            .store
            .list()
            .map_err(crate::service::images::image_error)?;
        Ok((imgs, containers.all(), volumes.list(&Default::default())))
    })
    .await?;
    let now = super::now_nanos() / 1_000_000_000;
    let layers_size: u64 = imgs.iter().map(|i| i.size).sum();
    let images_json: Vec<Value> = imgs
        .iter()
        .map(|i| {
            let id = i.id.to_string();
            let used = ctrs.iter().filter(|c| c.image_id == id).count();
            json!({
                "Id": id, "ParentId": "", "RepoTags": i.repo_tags, "RepoDigests": i.repo_digests,
                "Created": i.created.as_deref()
                    .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
                    .map_or(0, |t| t.timestamp()),
                "Size": i.size, "SharedSize": 0, "Labels": {}, "Containers": used,
            })
        })
        .collect();
    let svc = st.containers.clone();
    let ctrs2 = ctrs.clone();
    let sizes: Vec<(u64, u64)> = crate::service::containers::blocking(move || {
        Ok(ctrs2
            .iter()
            .map(|c| svc.sizes(&c.id).unwrap_or((0, 0)))
            .collect())
    })
    .await?;
    let containers_json: Vec<Value> = ctrs
        .iter()
        .zip(sizes)
        .map(|(c, (rw, root))| {
            let mut v = c.summary(now);
            v["SizeRw"] = json!(rw);
            v["SizeRootFs"] = json!(root);
            v
        })
        .collect();
    let volumes_json: Vec<Value> = vols
        .iter()
        .map(|v| {
            let refs = st.volumes.users(&v.name).len();
            json!({
                "Name": v.name, "Driver": v.driver, "Mountpoint": v.mountpoint,
                "CreatedAt": v.created_at, "Labels": v.labels, "Scope": "local", "Options": v.options,
                "UsageData": {"Size": crate::service::volumes::dir_size(&v.mountpoint), "RefCount": refs},
            })
        })
        .collect();
    Ok(Json(json!({
        "LayersSize": layers_size,
        "Images": images_json,
        "Containers": containers_json,
        "Volumes": volumes_json,
        "BuildCache": super::build::df_records(&st),
    })))
}

async fn ping(State(st): State<AppState>) -> Response {
    let mut resp = "OK".into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    h.insert(
        "Swarm",
        HeaderValue::from_static(super::swarm::ping_header(&st)),
    );
    resp
}

pub const ENGINE_VERSION: &str = env!("CARGO_PKG_VERSION");

async fn version(State(st): State<AppState>) -> Json<Value> {
    let e = &st.engine;
    Json(json!({
        "Platform": {"Name": "berth"},
        "Components": [{
            "Name": "Engine",
            "Version": ENGINE_VERSION,
            "Details": {
                "ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION,
                "Arch": go_arch(), "Os": "linux", "KernelVersion": e.kernel,
            },
        }],
        "Version": ENGINE_VERSION,
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "GitCommit": "",
        "GoVersion": "",
        "Os": "linux",
        "Arch": go_arch(),
        "KernelVersion": e.kernel,
    }))
}

/// The node mirror's figures as `/info`'s `SystemStatus` pairs, which the docker CLI
/// prints one per line (` KEY: VALUE`) after the storage driver's lines; a key's leading
/// spaces indent it under the one before (the layout Docker's classic Swarm used for its
/// nodes). Shape:
///
/// ```text
///  Node Mirror: 127.0.0.1:5001          (where the mirror's HTTP API listens)
///   Upstream Bytes: 53476577            (received from registries, blobs and manifests)
///   Bytes From Peers: 0                 (received from cluster peers over QUIC)
///   Bytes Served To Peers: 0            (sent to cluster peers)
///   Bytes Served To Clients: 0          (sent to pullers over HTTP)
///   Cache Hits: 3 (blobs 2, manifests 1)
///   Cache Misses: 3 (blobs 2, manifests 1)
///   Peers: 4                            (live cluster members this mirror routes to)
///    <node id>: <peer address>          (one line per peer, QUIC over UDP)
/// ```
///
/// Byte counts are exact integers since the daemon started; the same counters are on the
/// mirror's Prometheus `/metrics` (`berth_mirror_*`).
fn mirror_status(m: &super::NodeMirror) -> Vec<[String; 2]> {
    use std::sync::atomic::Ordering::Relaxed;
    let c = m.mirror.metrics();
    let pair = |k: &str, v: String| [k.to_string(), v];
    let (bh, mh) = (c.blob_hits.load(Relaxed), c.manifest_hits.load(Relaxed));
    let (bm, mm) = (c.blob_misses.load(Relaxed), c.manifest_misses.load(Relaxed));
    let peers = m
        .mirror
        .peer_transport()
        .map(|t| t.members().peers())
        .unwrap_or_default();
    let mut out = vec![
        pair("Node Mirror", m.addr.to_string()),
        pair(
            " Upstream Bytes",
            c.upstream_bytes.load(Relaxed).to_string(),
        ),
        pair(" Bytes From Peers", c.peer_bytes.load(Relaxed).to_string()),
        pair(
            " Bytes Served To Peers",
            c.peer_served_bytes.load(Relaxed).to_string(),
        ),
        pair(
            " Bytes Served To Clients",
            c.served_bytes.load(Relaxed).to_string(),
        ),
        pair(
            " Cache Hits",
            format!("{} (blobs {bh}, manifests {mh})", bh + mh),
        ),
        pair(
            " Cache Misses",
            format!("{} (blobs {bm}, manifests {mm})", bm + mm),
        ),
        pair(" Peers", peers.len().to_string()),
    ];
    out.extend(
        peers
            .into_iter()
            .map(|p| pair(&format!("  {}", p.id), p.addr.to_string())),
    );
    out
}

/// Architecture names as Go (and so Docker) spells them.
pub fn go_arch() -> &'static str {
    berth_orchestrator::constraint::normalize_arch(std::env::consts::ARCH)
}

async fn info(State(st): State<AppState>) -> Json<Value> {
    let e = &st.engine;
    let containers = st.containers.clone();
    let images = st.images.clone();
    let (ctrs, n_images) = tokio::task::spawn_blocking(move || {
        (
            containers.all(),
            images.images.store.list().map_or(0, |l| l.len()),
        )
    })
    .await
    .unwrap_or_default();
    let count = |s: &str| ctrs.iter().filter(|c| c.state.status == s).count();
    Json(json!({
        "ID": e.id,
        "Containers": ctrs.len(),
        "ContainersRunning": count("running"),
        "ContainersPaused": count("paused"),
        "ContainersStopped": ctrs.len() - count("running") - count("paused"),
        "Images": n_images,
        "Driver": "overlay2",
        "DockerRootDir": e.data_root,
        "Name": e.hostname,
        "KernelVersion": e.kernel,
        "OperatingSystem": "linux",
        "OSType": "linux",
        "Architecture": std::env::consts::ARCH,
        "NCPU": e.cpus,
        "MemTotal": e.memory_bytes,
        "ServerVersion": ENGINE_VERSION,
        // The daemon's clock (Go's RFC 3339 with nanoseconds): `docker events --since/--until`
        // with a relative or `SystemTime`-based value needs it.
        "SystemTime": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        "CgroupDriver": "cgroupfs",
        "LoggingDriver": e.logging_driver,
        "DefaultRuntime": "berth",
        "Runtimes": {"berth": {"path": "libcontainer"}},
        "Swarm": super::swarm::info_json(&st),
        "RegistryConfig": {
            "InsecureRegistryCIDRs": ["127.0.0.0/8", "::1/128"],
            "IndexConfigs": {},
            "Mirrors": e.registry_mirrors,
        },
        "InsecureRegistries": e.insecure_registries,
        "Labels": e.labels,
        "SystemStatus": st.mirror.as_ref().map(mirror_status),
        "ExperimentalBuild": false,
        "SecurityOptions": ["name=seccomp,profile=builtin"],
        "Warnings": [],
    }))
}
