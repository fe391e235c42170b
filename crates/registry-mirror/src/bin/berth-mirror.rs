//! `berth-mirror`: the pull-through registry mirror on its own (berthd embeds the same
//! [`Mirror`]).
//!
//! ```text
//! berth-mirror --data-root DIR --listen ADDR [--upstream HOST] [--insecure-registry HOST:PORT]...
//!              [--size-cap BYTES] [--tag-ttl SECONDS] [--alias NAME=HOST:PORT]...
//!              [--basic HOST=USER:PASSWORD]... [--bearer HOST=TOKEN]...
//! ```
//!
//! Blobs go to `DIR/blobs` (the layout of berthd's data root, so a node's store can be
//! served as is), state to `DIR/mirror`. Prints `listening on ADDR` once it accepts
//! connections; stops on SIGINT or SIGTERM. Logs to stderr (`RUST_LOG`, default `info`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use berth_registry_mirror::mirror::NoLocalImages;
use berth_registry_mirror::{
    BlobStore, ClientConfig, Credentials, Mirror, MirrorConfig, RegistryClient,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const USAGE: &str = "usage: berth-mirror --data-root DIR --listen ADDR [--upstream HOST] \
[--insecure-registry HOST:PORT]... [--size-cap BYTES] [--tag-ttl SECONDS] \
[--alias NAME=HOST:PORT]... [--basic HOST=USER:PASSWORD]... [--bearer HOST=TOKEN]...";

struct Args {
    data_root: PathBuf,
    listen: String,
    config: MirrorConfig,
    insecure: Vec<String>,
}

fn split_eq(v: &str, flag: &str) -> Result<(String, String), BoxError> {
    v.split_once('=')
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .ok_or_else(|| format!("{flag} wants NAME=VALUE, got {v:?}").into())
}

fn parse_args() -> Result<Args, BoxError> {
    let mut it = std::env::args().skip(1);
    let (mut data_root, mut listen) = (None, None);
    let mut config = MirrorConfig::new("");
    let mut insecure = Vec::new();
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--data-root" => data_root = Some(PathBuf::from(value)),
            "--listen" => listen = Some(value),
            "--upstream" => config.default_upstream = Some(value),
            "--insecure-registry" => insecure.push(value),
            "--size-cap" => config.size_cap_bytes = Some(value.parse()?),
            "--tag-ttl" => config.tag_ttl = Duration::from_secs(value.parse()?),
            "--alias" => {
                let (name, endpoint) = split_eq(&value, "--alias")?;
                config.upstreams.entry(name).or_default().endpoint = Some(endpoint);
            }
            "--basic" => {
                let (host, cred) = split_eq(&value, "--basic")?;
                let (username, password) = cred
                    .split_once(':')
                    .ok_or("--basic wants HOST=USER:PASSWORD")?;
                config.upstreams.entry(host).or_default().credentials = Credentials::Basic {
                    username: username.into(),
                    password: password.into(),
                };
            }
            "--bearer" => {
                let (host, token) = split_eq(&value, "--bearer")?;
                config.upstreams.entry(host).or_default().credentials =
                    Credentials::BearerToken(token);
            }
            other => return Err(format!("unknown flag {other}\n{USAGE}").into()),
        }
    }
    let data_root = data_root.ok_or(USAGE)?;
    config.state_dir = data_root.join("mirror");
    // Aliases are reached over plain HTTP only if the client's policy allows their endpoint.
    Ok(Args {
        data_root,
        listen: listen.ok_or(USAGE)?,
        config,
        insecure,
    })
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = parse_args()?;
    let blobs = BlobStore::open(args.data_root.join("blobs"))?;
    let client = RegistryClient::new(ClientConfig {
        insecure_registries: args.insecure,
        read_timeout: Some(berth_registry_mirror::client::READ_TIMEOUT),
        ..ClientConfig::default()
    })?;
    let mirror = Mirror::new(args.config, blobs, client, Arc::new(NoLocalImages))?;
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    println!("listening on {}", listener.local_addr()?);
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    mirror.serve(listener, shutdown).await?;
    Ok(())
}
