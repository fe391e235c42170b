//! Benchmark (root): iperf3 TCP throughput between two "hosts" (network namespaces on an
//! underlay bridge) over three paths: the underlay itself, container to container over
//! plain VXLAN, and container to container over VXLAN inside WireGuard (berth's
//! [`WgDevice`]: boringtun in this process on a kernel without the module). Everything
//! happens in throwaway namespaces, deleted at the end.
//!
//! `cargo run --release -p berth-overlay-net --example wireguard_throughput -- [seconds]`

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use berth_overlay_net::wireguard::*;
use nix::sched::CloneFlags;

struct Ns(String);

impl Ns {
    fn new(tag: &str) -> Result<Self> {
        let name = format!("berthbench-{}-{tag}", std::process::id());
        run("ip", &["netns", "add", &name])?;
        let ns = Ns(name);
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }
    fn path(&self) -> std::path::PathBuf {
        format!("/run/netns/{}", self.0).into()
    }
    fn ip(&self, args: &[&str]) -> Result<String> {
        let mut all = vec!["-n", &self.0];
        all.extend_from_slice(args);
        run("ip", &all)
    }
    fn spawn(&self, args: &[&str]) -> Result<Child> {
        Ok(Command::new("nsenter")
            .arg(format!("--net={}", self.path().display()))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?)
    }
    /// Runs `f` in a current-thread runtime on a thread inside this namespace.
    fn block_on<T: Send, Fut: Future<Output = T>>(&self, f: impl FnOnce() -> Fut + Send) -> T {
        let path = self.path();
        std::thread::scope(|s| {
            s.spawn(move || {
                let file = std::fs::File::open(&path).expect("open netns");
                nix::sched::setns(&file, CloneFlags::CLONE_NEWNET).expect("setns");
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime")
                    .block_on(f())
            })
            .join()
            .expect("thread panicked")
        })
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

/// iperf3 server in `server`, client in `client` against `ip`; Gbit/s received.
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

fn underlay_ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 213, 0, n)
}
fn tunnel_ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 214, 0, n)
}

/// VXLAN `vx<tag>` (VNI, local/remote addresses given, learning off) on bridge `br<tag>`
/// in `host`, and `eth0` of `container` on it with `10.<subnet>.0.<n>/24`, MTU `mtu`.
#[allow(clippy::too_many_arguments)]
fn overlay(
    host: &Ns,
    container: &Ns,
    tag: &str,
    vni: u32,
    local: Ipv4Addr,
    remote: Ipv4Addr,
    subnet: u8,
    n: u8,
    mtu: u32,
) -> Result<()> {
    let (vx, br, mtu) = (format!("vx{tag}"), format!("br{tag}"), mtu.to_string());
    let mac = |m: u8| format!("02:42:0a:{subnet:02x}:00:{m:02x}");
    let other = 3 - n;
    host.ip(&[
        "link",
        "add",
        &vx,
        "mtu",
        &mtu,
        "type",
        "vxlan",
        "id",
        &vni.to_string(),
        "local",
        &local.to_string(),
        "dstport",
        "4789",
        "nolearning",
    ])?;
    host.ip(&["link", "add", &br, "type", "bridge"])?;
    host.ip(&["link", "set", &vx, "master", &br, "up"])?;
    host.ip(&[
        "link",
        "add",
        &format!("c{tag}"),
        "mtu",
        &mtu,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &container.0,
    ])?;
    host.ip(&["link", "set", &format!("c{tag}"), "master", &br, "up"])?;
    host.ip(&["link", "set", &br, "up"])?;
    run(
        "bridge",
        &[
            "-n",
            &host.0,
            "fdb",
            "add",
            &mac(other),
            "dev",
            &vx,
            "dst",
            &remote.to_string(),
            "self",
            "permanent",
        ],
    )?;
    container.ip(&["link", "set", "eth0", "address", &mac(n)])?;
    container.ip(&[
        "addr",
        "add",
        &format!("10.{subnet}.0.{n}/24"),
        "dev",
        "eth0",
    ])?;
    container.ip(&["link", "set", "eth0", "up"])?;
    container.ip(&[
        "neigh",
        "replace",
        &format!("10.{subnet}.0.{other}"),
        "lladdr",
        &mac(other),
        "dev",
        "eth0",
        "nud",
        "permanent",
    ])?;
    Ok(())
}

fn main() -> Result<()> {
    let seconds: u32 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(5);

    let underlay = Ns::new("ul")?;
    underlay.ip(&["link", "add", "ul", "type", "bridge"])?;
    underlay.ip(&["link", "set", "ul", "up"])?;
    let hosts = [Ns::new("h1")?, Ns::new("h2")?];
    let plain = [Ns::new("p1")?, Ns::new("p2")?];
    let enc = [Ns::new("e1")?, Ns::new("e2")?];
    for (i, h) in hosts.iter().enumerate() {
        let n = i as u8 + 1;
        underlay.ip(&[
            "link",
            "add",
            &format!("h{n}"),
            "type",
            "veth",
            "peer",
            "name",
            "ul0",
            "netns",
            &h.0,
        ])?;
        underlay.ip(&["link", "set", &format!("h{n}"), "master", "ul", "up"])?;
        h.ip(&[
            "addr",
            "add",
            &format!("{}/24", underlay_ip(n)),
            "dev",
            "ul0",
        ])?;
        h.ip(&["link", "set", "ul0", "up"])?;
    }

    // WireGuard devices, one per host, peers each other.
    let keys = [WgKeyPair::generate(), WgKeyPair::generate()];
    let mut devices = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        let n = i as u8 + 1;
        let key = keys[i].clone();
        let dev = h.block_on(|| async move {
            WgDevice::start(
                &WgConfig {
                    name: "bwg0".into(),
                    listen_port: DEFAULT_LISTEN_PORT,
                    tunnel_addr: tunnel_ip(n),
                    prefix: 24,
                    mtu: DEFAULT_MTU,
                    backend: WgBackend::Auto,
                },
                &key,
            )
            .await
        })?;
        devices.push(dev);
    }
    for (i, dev) in devices.iter_mut().enumerate() {
        let other = 1 - i;
        dev.set_peers(&[WgPeer {
            public_key: keys[other].public_key(),
            endpoint: SocketAddr::from((underlay_ip(other as u8 + 1), DEFAULT_LISTEN_PORT)),
            tunnel_ip: tunnel_ip(other as u8 + 1),
        }])?;
    }
    let backend = devices[0].backend();

    for (i, h) in hosts.iter().enumerate() {
        let n = i as u8 + 1;
        let o = 3 - n;
        overlay(
            h,
            &plain[i],
            "p",
            100,
            underlay_ip(n),
            underlay_ip(o),
            31,
            n,
            1450,
        )?;
        overlay(
            h,
            &enc[i],
            "e",
            200,
            tunnel_ip(n),
            tunnel_ip(o),
            32,
            n,
            DEFAULT_MTU - 50,
        )?;
    }

    let under = iperf(&hosts[0], &hosts[1], &underlay_ip(1).to_string(), seconds)?;
    let vxlan = iperf(&plain[0], &plain[1], "10.31.0.1", seconds)?;
    let wg = iperf(&enc[0], &enc[1], "10.32.0.1", seconds)?;

    for (dev, h) in devices.into_iter().zip(&hosts) {
        h.block_on(|| async move { dev.teardown().await })?;
    }

    println!("TCP throughput host to host, {seconds} s, iperf3 single stream:");
    println!("  underlay veth + bridge:          {under:6.2} Gbit/s");
    println!(
        "  plain VXLAN (container):         {vxlan:6.2} Gbit/s ({:.0}% of underlay)",
        vxlan / under * 100.0
    );
    println!(
        "  VXLAN in WireGuard ({backend:?}): {wg:6.2} Gbit/s ({:.0}% of underlay, {:.0}% of VXLAN)",
        wg / under * 100.0,
        wg / vxlan * 100.0
    );
    Ok(())
}
