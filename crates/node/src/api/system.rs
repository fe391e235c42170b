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
    pub data_root: PathBuf,
    pub hostname: String,
    pub kernel: String,
    pub cpus: usize,
    pub memory_bytes: u64,
    pub insecure_registries: Vec<String>,
}

impl EngineInfo {
    pub fn from_config(cfg: &Config) -> Self {
        let uts = nix::sys::utsname::uname().ok();
        let field = |f: fn(&nix::sys::utsname::UtsName) -> &std::ffi::OsStr| {
            uts.as_ref()
                .map(|u| f(u).to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        EngineInfo {
            data_root: cfg.data_root.clone(),
            hostname: field(|u| u.nodename()),
            kernel: field(|u| u.release()),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_bytes: total_memory(),
            insecure_registries: cfg.insecure_registries.clone(),
        }
    }
}

fn total_memory() -> u64 {
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
}

async fn ping() -> Response {
    let mut resp = "OK".into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    h.insert("Swarm", HeaderValue::from_static("inactive"));
    resp
}

const ENGINE_VERSION: &str = env!("CARGO_PKG_VERSION");

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

/// Architecture names as Go (and so Docker) spells them.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

async fn info(State(st): State<AppState>) -> Json<Value> {
    let e = &st.engine;
    Json(json!({
        "ID": "",
        "Containers": 0, "ContainersRunning": 0, "ContainersPaused": 0, "ContainersStopped": 0,
        "Images": 0,
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
        "CgroupDriver": "cgroupfs",
        "LoggingDriver": "json-file",
        "DefaultRuntime": "berth",
        "Runtimes": {"berth": {"path": "libcontainer"}},
        "Swarm": {"LocalNodeState": "inactive", "NodeID": "", "NodeAddr": "",
                  "ControlAvailable": false, "Error": "", "RemoteManagers": null},
        "RegistryConfig": {
            "InsecureRegistryCIDRs": ["127.0.0.0/8", "::1/128"],
            "IndexConfigs": {},
            "Mirrors": [],
        },
        "InsecureRegistries": e.insecure_registries,
        "Labels": [],
        "ExperimentalBuild": false,
        "SecurityOptions": ["name=seccomp,profile=builtin"],
        "Warnings": [],
    }))
}
