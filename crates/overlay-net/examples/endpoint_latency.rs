//! Benchmark (root): how long attaching and detaching a container endpoint takes with the
//! real executor (rtnetlink + nft), i.e. the time bridge networking adds to
//! `docker run --rm`. Everything happens in throwaway network namespaces.
//!
//! `cargo run --release -p berth-overlay-net --example endpoint_latency -- [iterations]`

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use berth_overlay_net::*;
use nix::sched::CloneFlags;

/// Wraps an executor and sums the time spent per kind of step.
struct Timed<L> {
    inner: L,
    spent: std::sync::Mutex<std::collections::BTreeMap<String, (Duration, u32)>>,
}

impl<L: LinkExecutor> LinkExecutor for Timed<L> {
    async fn apply(&self, op: &LinkOp) -> berth_overlay_net::error::Result<()> {
        let t = Instant::now();
        let r = self.inner.apply(op).await;
        let kind = format!("{op:?}");
        let kind = kind.split([' ', '{']).next().unwrap_or("?").to_string();
        let mut spent = self.spent.lock().unwrap();
        let e = spent.entry(kind).or_default();
        e.0 += t.elapsed();
        e.1 += 1;
        r
    }
    async fn list_links(&self) -> berth_overlay_net::error::Result<Vec<ObservedLink>> {
        self.inner.list_links().await
    }
    async fn list_routes(&self) -> berth_overlay_net::error::Result<Vec<Ipv4Net>> {
        self.inner.list_routes().await
    }
}

struct Ns(String);

impl Ns {
    fn new(tag: &str) -> Result<Self> {
        let name = format!("berthbench-{}-{tag}", std::process::id());
        if !Command::new("ip")
            .args(["netns", "add", &name])
            .status()?
            .success()
        {
            bail!("ip netns add {name} failed");
        }
        Ok(Ns(name))
    }
    fn path(&self) -> std::path::PathBuf {
        format!("/run/netns/{}", self.0).into()
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(50);
    let host = Ns::new("host")?;
    let container = Ns::new("c")?;
    let host_path = host.path();
    let netns = container.path();
    let (mut up, mut down) = std::thread::scope(|s| {
        s.spawn(|| -> Result<(Vec<Duration>, Vec<Duration>)> {
            let f = std::fs::File::open(&host_path)?;
            nix::sched::setns(&f, CloneFlags::CLONE_NEWNET).context("setns")?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let mut d = BridgeDriver::new(
                    Timed {
                        inner: RtnetlinkExecutor::connect()?,
                        spent: Default::default(),
                    },
                    NftCli::default(),
                    BindProbe,
                    NetState::default(),
                    DriverConfig::default(),
                );
                let t = Instant::now();
                d.ensure_default_network(&"0".repeat(64)).await?;
                println!("default network (bridge + table): {:?}", t.elapsed());
                let (mut up, mut down) = (Vec::new(), Vec::new());
                let (mut up_plain, mut down_plain) = (Vec::new(), Vec::new());
                for i in 0..2 * n {
                    let with_port = i % 2 == 0;
                    let req = EndpointRequest {
                        endpoint_id: format!("{i:064x}"),
                        container_id: format!("{i:064x}"),
                        container_name: format!("c{i}"),
                        aliases: vec![],
                        network: "bridge".into(),
                        netns: netns.clone(),
                        address: None,
                        ports: if with_port {
                            vec![PortRequest::parse("18080:80")?]
                        } else {
                            vec![]
                        },
                        dns_servers: vec![],
                        taken_ifnames: Vec::new(),
                    };
                    let t = Instant::now();
                    let ep = d.connect(req).await?;
                    let connect = t.elapsed();
                    let t = Instant::now();
                    d.disconnect(&ep.id).await?;
                    let disconnect = t.elapsed();
                    if with_port {
                        up.push(connect);
                        down.push(disconnect);
                    } else {
                        up_plain.push(connect);
                        down_plain.push(disconnect);
                    }
                }
                println!(
                    "{n} iterations without ports: connect median {:?}, disconnect median {:?}",
                    median(&mut up_plain),
                    median(&mut down_plain)
                );
                for (kind, (total, count)) in d.links().spent.lock().unwrap().iter() {
                    println!(
                        "  {kind:<16} {:>5} calls, mean {:?}",
                        count,
                        *total / *count
                    );
                }
                d.teardown_host().await?;
                anyhow::Ok((up, down))
            })
        })
        .join()
        .expect("bench thread panicked")
    })?;
    println!(
        "{n} iterations with 1 published port: connect median {:?}, disconnect median {:?}",
        median(&mut up),
        median(&mut down)
    );
    Ok(())
}
