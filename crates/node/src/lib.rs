//! berthd: the berth daemon, a Docker-compatible engine on one host that can federate into
//! a cluster.
//!
//! Owns: command-line flags (named as dockerd names them), the Engine API server on unix
//! sockets ([`api`]), and the wiring of the service layer to the runtime, image store,
//! networking and cluster crates as they are built.
//!
//! Does not own: container execution (`berth-runtime`), blobs and registries
//! (`berth-registry-mirror`), raft state (`berth-consensus`), links and nftables
//! (`berth-overlay-net`).
//!
//! ```text
//!  docker CLI --HTTP/unix--> api::router --> service traits --> runtime / images / net
//! ```
//!
//! `docker build` (service::build) plans with `berth-builder` and decompresses build
//! contexts with `flate2` (gzip) and `zstd`, the crates the image store already uses; its
//! scratch directories are `tempfile` dirs under `<data-root>/build/tmp`.

mod api;
mod config;
mod error;
mod service;
mod store;
mod tls;

pub mod fuzzing;

use anyhow::{Context, Result};

/// berthd's entry point (`src/bin/berthd.rs`): reads flags and daemon.json, starts the
/// tokio runtime and serves until SIGTERM/SIGINT. Errors are startup failures (bad flags,
/// data root, listeners).
pub fn main() -> Result<()> {
    let cfg = config::Config::load()?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cfg.log_level)
                .context("invalid --log-level")?,
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal: a log file or journald gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    spawn_heap_trimmer();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(run(cfg))
}

/// How often [`spawn_heap_trimmer`] gives free heap memory back to the kernel.
const HEAP_TRIM_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Starts a thread that calls glibc's `malloc_trim(0)` every [`HEAP_TRIM_INTERVAL`]:
/// it returns the free pages of every malloc arena to the kernel (madvise), which glibc
/// otherwise keeps after a burst of load. Measured with bench/load.sh (1,000 concurrent
/// API calls and 100 concurrent `docker run`, 3 rounds, debug build): berthd's anonymous
/// RSS 30 s after the load was 33 MiB without it and 21 MiB with it (idle: 9 MiB).
/// Replacing the allocator instead did worse on the same load (RSS after: mimalloc 554
/// MiB, jemalloc with background purging 122 MiB, glibc 98 MiB), as their per-thread
/// caches grow with the hundreds of short-lived blocking threads the load spawns; the
/// decision and figures are in bench/README.md ("Load"). A trim takes each arena's lock
/// briefly; with berthd's small heap (peak ~12 MB live under that load, heaptrack) it
/// costs well under a millisecond. Other C libraries have no `malloc_trim`: no thread.
fn spawn_heap_trimmer() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let spawned = std::thread::Builder::new()
            .name("heap-trim".into())
            .spawn(|| loop {
                std::thread::sleep(HEAP_TRIM_INTERVAL);
                // SAFETY: malloc_trim only releases free memory of the allocator's
                // arenas; it is thread-safe (it takes each arena's lock).
                unsafe {
                    libc::malloc_trim(0);
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("no heap trimming thread: {e}");
        }
    }
}

async fn run(cfg: config::Config) -> Result<()> {
    let listeners = cfg.listeners()?;
    let log_default = cfg.log_default()?;
    std::fs::create_dir_all(&cfg.data_root)
        .with_context(|| format!("create data root {}", cfg.data_root.display()))?;
    std::fs::create_dir_all(&cfg.exec_root)
        .with_context(|| format!("create exec root {}", cfg.exec_root.display()))?;
    let _pidfile = config::PidFile::create(&cfg.pidfile)?;
    let store = store::Store::open(&cfg.data_root)?;
    let shim_path = berth_runtime::RuntimeConfig::shim_next_to_current_exe()
        .context("berth-shim not found next to berthd: build it with `cargo build --bins`")?;
    let runtime = std::sync::Arc::new(
        berth_runtime::Runtime::open(berth_runtime::RuntimeConfig {
            data_root: cfg.data_root.join("runtime"),
            exec_root: cfg.exec_root.join("rt"),
            shim_path,
        })
        .context("open container runtime")?,
    );
    // The node's own pull-through mirror: bound first, so pulls can go through it.
    let mirror_listener = match cfg.mirror_listen()? {
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!("bind the registry mirror on {addr} (--mirror-addr IP:PORT, or none)")
        })?),
        None => None,
    };
    let mut mirrors: Vec<berth_registry_mirror::MirrorEndpoint> = cfg
        .registry_mirrors
        .iter()
        .map(|url| berth_registry_mirror::MirrorEndpoint {
            url: url.clone(),
            shares_blob_store: false,
        })
        .collect();
    if let Some(l) = &mirror_listener {
        mirrors.push(berth_registry_mirror::MirrorEndpoint {
            url: config::own_mirror_url(l.local_addr()?),
            shares_blob_store: true,
        });
    }
    let images = berth_registry_mirror::Images::open(
        &cfg.data_root,
        berth_registry_mirror::ClientConfig {
            insecure_registries: cfg.insecure_registries.clone(),
            mirrors,
            read_timeout: Some(berth_registry_mirror::client::READ_TIMEOUT),
            ..Default::default()
        },
    )
    .context("open image store")?;
    let mirror = match mirror_listener {
        Some(listener) => {
            let mut config = berth_registry_mirror::MirrorConfig::new(cfg.data_root.join("mirror"));
            config.size_cap_bytes = cfg.mirror_size_cap;
            config.tag_ttl = std::time::Duration::from_secs(cfg.mirror_tag_ttl_secs);
            // The mirror's own client goes to the registries, never to a mirror.
            let client =
                berth_registry_mirror::RegistryClient::new(berth_registry_mirror::ClientConfig {
                    insecure_registries: cfg.insecure_registries.clone(),
                    read_timeout: Some(berth_registry_mirror::client::READ_TIMEOUT),
                    ..Default::default()
                })
                .context("registry client of the mirror")?;
            let mirror = berth_registry_mirror::Mirror::new(
                config,
                images.store.blobs().clone(),
                client,
                images.store.clone(),
            )
            .context("open the registry mirror")?;
            tracing::info!(addr = %listener.local_addr()?, "registry mirror listening");
            Some((mirror, listener))
        }
        None => None,
    };
    let events = service::events::EventBus::new();
    let volumes = service::volumes::VolumeService::open(&cfg.data_root, store.clone())?;
    let images = service::images::ImageService::new(images, runtime.clone());
    let networks = service::networks::NetworkService::open(
        &cfg.data_root,
        &cfg.exec_root,
        cfg.network_driver(),
    )
    .await
    .context("set up networking")?;
    let containers = service::containers::ContainerService::open(
        runtime,
        images.clone(),
        volumes.clone(),
        networks.clone(),
        events.clone(),
        store.clone(),
        service::containers::ContainerDefaults {
            init_path: cfg.init_binary(),
            log: log_default,
        },
    )?;
    {
        let c = containers.clone();
        tokio::task::spawn_blocking(move || c.recover()).await?;
    }
    let engine = std::sync::Arc::new(api::EngineInfo::from_config(&cfg)?);
    let cluster = service::cluster::ClusterService::open(
        &cfg.data_root,
        engine.hostname.clone(),
        cfg.force_new_cluster,
        std::sync::Arc::new(service::task_logs::TaskLogReader::new(containers.clone())),
    )
    .await;
    // The node agent and the leader loop run while the cluster is active.
    let agent = service::agent::spawn(
        cluster.clone(),
        service::agent::Agent {
            containers: containers.clone(),
            images: images.clone(),
            task_files: service::task_files::TaskFiles::new(&cfg.exec_root),
            engine: std::sync::Arc::new(service::agent::EngineFacts {
                cpus: engine.cpus as u64,
                memory_bytes: engine.memory_bytes,
                version: env!("CARGO_PKG_VERSION").to_string(),
                labels: cfg.labels.iter().cloned().collect(),
                machine: nix::sys::utsname::uname()
                    .map(|u| u.machine().to_string_lossy().into_owned())
                    .unwrap_or_default(),
            }),
        },
    );
    let builds =
        service::build::BuildService::open(&cfg.data_root, images.clone(), containers.clone())?;
    // The overlay data plane: reconciled from the cluster state while a member.
    let overlay = service::overlay_plane::OverlayPlane::new(
        cluster.clone(),
        &cfg.data_root,
        networks.netns_dir().to_path_buf(),
        berth_overlay_net::netfiles::upstream_nameservers(
            &std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        )
        .into_iter()
        .map(|ip| std::net::SocketAddr::new(ip, 53))
        .collect(),
    )
    .context("overlay data plane")?;
    networks.set_overlay(overlay.clone());
    let overlay_loop = service::overlay_plane::spawn(overlay.clone());
    let state = api::AppState {
        engine,
        events,
        volumes,
        images,
        containers,
        networks: networks.clone(),
        cluster: cluster.clone(),
        mirror: match &mirror {
            Some((mirror, listener)) => Some(api::NodeMirror {
                mirror: mirror.clone(),
                addr: listener.local_addr()?,
            }),
            None => None,
        },
        builds,
    };
    let router = api::router(state);
    let shutdown = api::Shutdown::new();
    let mut servers = Vec::new();
    for l in listeners {
        match l {
            config::Listen::Unix(path) => {
                let listener = api::bind_unix(&path)?;
                tracing::info!(socket = %path.display(), "API listening");
                servers.push(tokio::spawn(api::serve_unix(
                    listener,
                    path,
                    router.clone(),
                    shutdown.clone(),
                )));
            }
            config::Listen::Tls(addr) => {
                let files = cfg.tls_files().context("TLS files")?;
                let tls = tls::server_config(&files.ca, &files.cert, &files.key)?;
                let tcp = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("bind {addr}"))?;
                let listener = tls::TlsListener::new(tcp, tls)?;
                tracing::info!(%addr, "API listening (TLS, client certificates required)");
                servers.push(tokio::spawn(api::serve_listener(
                    listener,
                    router.clone(),
                    shutdown.clone(),
                )));
            }
        }
    }
    if let Some((mirror, listener)) = mirror {
        // In a cluster, misses go to their owner node over QUIC (service::peers).
        tokio::spawn(service::peers::run(cluster.clone(), mirror.clone()));
        let stop = shutdown.clone();
        servers.push(tokio::spawn(async move {
            mirror
                .serve(listener, async move { stop.wait().await })
                .await
                .context("registry mirror")
        }));
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    tracing::info!("shutting down");
    shutdown.trigger();
    // In-flight requests get a moment to finish; long streams (attach, logs -f, events)
    // would hold the shutdown forever, so they are cut after it.
    let drain = async {
        for s in servers {
            s.await??;
        }
        anyhow::Ok(())
    };
    match tokio::time::timeout(std::time::Duration::from_secs(3), drain).await {
        Ok(r) => r?,
        Err(_) => tracing::info!("closing connections still open after 3 s"),
    }
    // Stops the agent and the leader loop first (their tasks' containers keep running).
    overlay_loop.abort();
    // As for bridge networks: the overlay data plane stays while containers use it.
    if !overlay.has_local_endpoints() {
        overlay.teardown().await;
    }
    cluster.shutdown().await;
    agent.abort();
    // Containers keep running (and keep their networking) across a daemon restart; with
    // none left, berth's links and nftables table go.
    networks.teardown_if_idle().await;
    Ok(())
}
