//! Benchmark (root): TCP throughput container-to-container over a berth bridge versus
//! between two namespaces joined by a plain veth pair, measured with iperf3 (Debian's
//! `iperf3`). Everything happens in throwaway network namespaces.
//!
//! `cargo run --release -p berth-overlay-net --example bridge_throughput -- [seconds]`

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use berth_overlay_net::*;
use nix::sched::CloneFlags;

struct Ns(String);

impl Ns {
    fn new(tag: &str) -> Result<Self> {
        let name = format!("berthbench-{}-{tag}", std::process::id());
        run("ip", &["netns", "add", &name])?;
        let ns = Ns(name);
        run("ip", &["-n", &ns.0, "link", "set", "lo", "up"])?;
        Ok(ns)
    }
    fn path(&self) -> std::path::PathBuf {
        format!("/run/netns/{}", self.0).into()
    }
    fn spawn(&self, args: &[&str]) -> Result<Child> {
        Ok(Command::new("nsenter")
            .arg(format!("--net={}", self.path().display()))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?)
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn run(cmd: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(cmd).args(args).output()?;
    if !out.status.success() {
        bail!(
            "{cmd} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs an iperf3 server in `server` and a client in `client` against `ip`; returns Gbit/s
/// received.
fn iperf(server: &Ns, client: &Ns, ip: &str, seconds: u32) -> Result<f64> {
    let mut srv = server.spawn(&["iperf3", "-s", "-1"])?;
    std::thread::sleep(Duration::from_millis(300));
    let out = client
        .spawn(&["iperf3", "-J", "-c", ip, "-t", &seconds.to_string()])?
        .wait_with_output()?;
    let _ = srv.kill();
    let _ = srv.wait();
    if !out.status.success() {
        bail!("iperf3 client: {}", String::from_utf8_lossy(&out.stdout));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("no sum_received in iperf3 output")?;
    Ok(bps / 1e9)
}

fn main() -> Result<()> {
    let seconds: u32 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(5);

    // Plain veth pair between two namespaces.
    let (p1, p2) = (Ns::new("p1")?, Ns::new("p2")?);
    run(
        "ip",
        &[
            "-n", &p1.0, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns",
            &p2.0,
        ],
    )?;
    run(
        "ip",
        &["-n", &p1.0, "addr", "add", "10.249.0.1/24", "dev", "eth0"],
    )?;
    run(
        "ip",
        &["-n", &p2.0, "addr", "add", "10.249.0.2/24", "dev", "eth0"],
    )?;
    run("ip", &["-n", &p1.0, "link", "set", "eth0", "up"])?;
    run("ip", &["-n", &p2.0, "link", "set", "eth0", "up"])?;
    let veth = iperf(&p1, &p2, "10.249.0.1", seconds)?;

    // Two containers on a berth bridge, set up by the driver inside a host namespace.
    let (host, c1, c2) = (Ns::new("host")?, Ns::new("c1")?, Ns::new("c2")?);
    let host_path = host.path();
    let (n1, n2) = (c1.path(), c2.path());
    let server_ip = std::thread::scope(|s| {
        s.spawn(|| -> Result<String> {
            let f = std::fs::File::open(&host_path)?;
            nix::sched::setns(&f, CloneFlags::CLONE_NEWNET).context("setns")?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let mut d = BridgeDriver::new(
                    RtnetlinkExecutor::connect()?,
                    NftCli::default(),
                    BindProbe,
                    NetState::default(),
                    DriverConfig::default(),
                );
                d.ensure_default_network(&"0".repeat(64)).await?;
                let mut ips = Vec::new();
                for (i, netns) in [n1.clone(), n2.clone()].into_iter().enumerate() {
                    let ep = d
                        .connect(EndpointRequest {
                            endpoint_id: format!("{i:064x}"),
                            container_id: format!("{i:064x}"),
                            container_name: format!("c{i}"),
                            aliases: vec![],
                            network: "bridge".into(),
                            netns,
                            address: None,
                            ports: vec![],
                            dns_servers: vec![],
                            taken_ifnames: vec![],
                        })
                        .await?;
                    ips.push(ep.address.to_string());
                }
                anyhow::Ok(ips.remove(0))
            })
        })
        .join()
        .expect("setup thread panicked")
    })?;
    let bridge = iperf(&c1, &c2, &server_ip, seconds)?;
    println!("TCP throughput, {seconds} s, iperf3 single stream:");
    println!("  plain veth pair:          {veth:.1} Gbit/s");
    println!(
        "  berth bridge (veth+br):   {bridge:.1} Gbit/s ({:.0}% of veth)",
        100.0 * bridge / veth
    );
    // Dropping `host` deletes the bridge, the veths and the table with the namespace.
    Ok(())
}
