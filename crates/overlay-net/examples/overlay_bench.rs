//! iperf3 throughput, container to container across two "hosts", over berth's VXLAN overlay
//! and over an encrypted overlay (VXLAN inside berth's WireGuard device), against the hosts'
//! underlay veth. Run by `bench/overlay.sh` (root).
//!
//! Two hosts are network namespaces joined by a veth bridge in a "lan" namespace; on each
//! host `OverlayDriver` realises two overlays as berthd does: a plain one (VNI 4200, MTU
//! 1450) and an encrypted one (VNI 4201, MTU 1370, FDB entries to the peer's tunnel
//! address, the host table's drop rules), a `WgDevice` (kernel module where present,
//! boringtun in this process otherwise; tunnel addresses in 169.254.64.0/18 as berthd's),
//! and one container namespace on each overlay. Rounds alternate underlay (host 1 -> host
//! 2), bare VXLAN (host 1 -> host 2 over an address right on a kernel VXLAN device with the
//! same static entries: the floor any VXLAN overlay starts from), overlay and encrypted
//! overlay (container on host 1 -> container on host 2),
//! `iperf3 -t SECONDS` each; prints the medians and their ratios. Every namespace is
//! deleted at the end, also on failure.
//!
//! `BRIDGE_NF_CALL_IPTABLES=0` sets that sysctl in the two host namespaces (each namespace
//! has its own; 1, the kernel's default once `br_netfilter` is loaded, otherwise): bridged
//! IPv4 frames then skip the host's IPv4 netfilter hooks. berthd never changes it (Docker's
//! and Kubernetes' bridges rely on it); the switch only measures what those hooks cost.
//!
//! `cargo run --release -p berth-overlay-net --example overlay_bench -- [rounds] [seconds]`

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use berth_overlay_net::overlay::*;
use berth_overlay_net::wireguard::{
    WgBackend, WgConfig, WgDevice, WgKeyPair, WgPeer, DEFAULT_LISTEN_PORT, DEFAULT_MTU,
};

struct Ns(String);

impl Ns {
    fn new(tag: &str) -> Result<Self> {
        let name = format!("bovb-{}-{tag}", std::process::id());
        sh("ip", &["netns", "add", &name])?;
        let ns = Ns(name);
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }
    fn path(&self) -> std::path::PathBuf {
        format!("/run/netns/{}", self.0).into()
    }
    fn ip(&self, args: &[&str]) -> Result<String> {
        let mut a = vec!["-n", self.0.as_str()];
        a.extend_from_slice(args);
        sh("ip", &a)
    }
    /// Runs `f` on a thread inside this namespace with a tokio runtime.
    fn block_on<T: Send>(
        &self,
        f: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<T>>>> + Send,
    ) -> Result<T> {
        let path = self.path();
        std::thread::scope(|s| {
            s.spawn(move || -> Result<T> {
                let file = std::fs::File::open(&path)?;
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)?;
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?
                    .block_on(f())
            })
            .join()
            .map_err(|_| anyhow::anyhow!("thread panicked"))?
        })
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn sh(cmd: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .with_context(|| format!("spawn {cmd}"))?;
    if !out.status.success() {
        bail!(
            "{cmd} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One iperf3 run's result.
struct Run {
    /// Gbit/s received.
    gbits: f64,
    /// Bytes received.
    bytes: f64,
    /// TCP retransmissions of the sender.
    retransmits: u64,
}

/// One iperf3 run from `client` to `server_ip` served in `server`.
fn iperf(server: &Ns, client: &Ns, server_ip: &str, seconds: u32) -> Result<Run> {
    let mut srv = Command::new("ip")
        .args([
            "netns", "exec", &server.0, "iperf3", "-s", "-1", "-B", server_ip,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let mut json = None;
    for _ in 0..50 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let out = Command::new("ip")
            .args(["netns", "exec", &client.0, "iperf3", "-J", "-c", server_ip])
            .args(["-t", &seconds.to_string()])
            .output()?;
        if out.status.success() {
            json = Some(String::from_utf8_lossy(&out.stdout).into_owned());
            break;
        }
    }
    let _ = srv.kill();
    let _ = srv.wait();
    let json = json.context("iperf3 client never succeeded")?;
    let v: serde_json::Value = serde_json::from_str(&json)?;
    let sum = &v["end"]["sum_received"];
    let bps = sum["bits_per_second"]
        .as_f64()
        .context("no end.sum_received.bits_per_second")?;
    let bytes = sum["bytes"].as_f64().context("no end.sum_received.bytes")?;
    let retransmits = v["end"]["sum_sent"]["retransmits"].as_u64().unwrap_or(0);
    Ok(Run {
        gbits: bps / 1e9,
        bytes,
        retransmits,
    })
}

/// Bytes host 1's WireGuard device has sent to its peer so far.
fn wg_tx(dev: &WgDevice) -> Result<u64> {
    Ok(dev.stats()?.peers.iter().map(|p| p.tx_bytes).sum())
}

/// The 1-minute load average (`/proc/loadavg`).
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_default()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(5);
    let seconds: u32 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(5);

    let bridge_nf = std::env::var("BRIDGE_NF_CALL_IPTABLES").ok();
    let lan = Ns::new("lan")?;
    lan.ip(&["link", "add", "lanbr", "type", "bridge"])?;
    lan.ip(&["link", "set", "lanbr", "up"])?;
    let hosts = [Ns::new("h1")?, Ns::new("h2")?];
    let under = |i: usize| Ipv4Addr::new(192, 168, 79, i as u8 + 1);
    for (i, h) in hosts.iter().enumerate() {
        let port = format!("l{i}");
        lan.ip(&[
            "link", "add", &port, "type", "veth", "peer", "name", "uplink", "netns", &h.0,
        ])?;
        lan.ip(&["link", "set", &port, "master", "lanbr", "up"])?;
        h.ip(&["addr", "add", &format!("{}/24", under(i)), "dev", "uplink"])?;
        h.ip(&["link", "set", "uplink", "up"])?;
        if let Some(v) = &bridge_nf {
            sh(
                "ip",
                &[
                    "netns",
                    "exec",
                    &h.0,
                    "sysctl",
                    "-qw",
                    &format!("net.bridge.bridge-nf-call-iptables={v}"),
                ],
            )?;
        }
    }
    eprintln!(
        "bridge-nf-call-iptables in the hosts: {}",
        bridge_nf.as_deref().unwrap_or("kernel default")
    );
    // The kernel's VXLAN alone, for the overlay's floor: an address right on a VXLAN device
    // in each host namespace (no bridge, no veth, no container namespace), with the same
    // static FDB and neighbour entries the driver programs.
    let bare = |i: usize| Ipv4Addr::new(10, 0, 44, i as u8 + 1);
    for (i, h) in hosts.iter().enumerate() {
        let local = under(i).to_string();
        h.ip(&[
            "link",
            "add",
            "barevx",
            "type",
            "vxlan",
            "id",
            "4299",
            "dstport",
            "4789",
            "local",
            &local,
            "nolearning",
            "proxy",
        ])?;
        let mac = format_mac(&mac_for_ip(bare(i)));
        h.ip(&[
            "link", "set", "barevx", "address", &mac, "mtu", "1450", "up",
        ])?;
        h.ip(&["addr", "add", &format!("{}/24", bare(i)), "dev", "barevx"])?;
        let peer_mac = format_mac(&mac_for_ip(bare(1 - i)));
        let peer = under(1 - i).to_string();
        sh(
            "ip",
            &[
                "netns",
                "exec",
                &h.0,
                "bridge",
                "fdb",
                "append",
                &peer_mac,
                "dev",
                "barevx",
                "dst",
                &peer,
                "self",
                "permanent",
            ],
        )?;
        h.ip(&[
            "neigh",
            "add",
            &bare(1 - i).to_string(),
            "lladdr",
            &peer_mac,
            "dev",
            "barevx",
            "nud",
            "permanent",
        ])?;
    }
    let containers = [Ns::new("c1")?, Ns::new("c2")?];
    let enc_containers = [Ns::new("e1")?, Ns::new("e2")?];
    let cip = |i: usize| Ipv4Addr::new(10, 0, 42, i as u8 + 2);
    let eip = |i: usize| Ipv4Addr::new(10, 0, 43, i as u8 + 2);
    let tunnel = |i: usize| Ipv4Addr::new(169, 254, 64, i as u8 + 1);
    // As berthd: the gateway on every node's bridge (outbound NAT in the host table), the
    // default route of a task through it.
    let (gw, egw) = (Ipv4Addr::new(10, 0, 42, 1), Ipv4Addr::new(10, 0, 43, 1));
    let spec = OverlaySpec {
        id: "bench".into(),
        vni: 4200,
        subnet: "10.0.42.0/24".into(),
        gateway: Some(gw),
        ..OverlaySpec::default()
    };
    let enc_spec = OverlaySpec {
        id: "benchenc".into(),
        vni: 4201,
        subnet: "10.0.43.0/24".into(),
        gateway: Some(egw),
        mtu: DEFAULT_MTU - 50,
        encrypted: true,
        ..OverlaySpec::default()
    };
    // One WireGuard device per host, named as the driver's names give it, peering the other.
    let keys = [WgKeyPair::generate(), WgKeyPair::generate()];
    let mut devices = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        let key = keys[i].clone();
        let peer = WgPeer {
            public_key: keys[1 - i].public_key(),
            endpoint: std::net::SocketAddr::from((under(1 - i), DEFAULT_LISTEN_PORT)),
            tunnel_ip: tunnel(1 - i),
        };
        let mut dev = h.block_on(move || {
            Box::pin(async move {
                let dev = WgDevice::start(
                    &WgConfig {
                        name: OverlayNames::new("bb")?.wireguard(),
                        listen_port: DEFAULT_LISTEN_PORT,
                        tunnel_addr: tunnel(i),
                        prefix: 18,
                        mtu: DEFAULT_MTU,
                        backend: WgBackend::Auto,
                    },
                    &key,
                )
                .await?;
                Ok(dev)
            })
        })?;
        dev.set_peers(&[peer])?;
        devices.push(dev);
    }
    let backend = devices[0].backend();
    for (i, h) in hosts.iter().enumerate() {
        let mut endpoints: Vec<OverlayEndpoint> = (0..2)
            .map(|j| OverlayEndpoint {
                id: format!("c{j}"),
                network_id: "bench".into(),
                ip: cip(j),
                mac: mac_for_ip(cip(j)),
                node_addr: under(j),
                local: i == j,
            })
            .collect();
        endpoints.extend((0..2).map(|j| OverlayEndpoint {
            id: format!("e{j}"),
            network_id: "benchenc".into(),
            ip: eip(j),
            mac: mac_for_ip(eip(j)),
            node_addr: if i == j { under(j) } else { tunnel(j) },
            local: i == j,
        }));
        let desired = OverlayDesired {
            local_addr: under(i),
            networks: vec![spec.clone(), enc_spec.clone()],
            endpoints,
        };
        let (c, e) = (containers[i].path(), enc_containers[i].path());
        h.block_on(move || {
            Box::pin(async move {
                let mut d = OverlayDriver::new(OverlayConfig {
                    prefix: "bb".into(),
                    ..OverlayConfig::default()
                })?;
                d.reconcile(&desired).await?;
                d.attach(
                    "bench",
                    &c,
                    "eth0",
                    cip(i),
                    24,
                    mac_for_ip(cip(i)),
                    Some(gw),
                )
                .await?;
                d.attach(
                    "benchenc",
                    &e,
                    "eth0",
                    eip(i),
                    24,
                    mac_for_ip(eip(i)),
                    Some(egw),
                )
                .await?;
                Ok(())
            })
        })?;
    }

    // Sanity: the plain overlay must not touch the WireGuard device, the encrypted one
    // must carry all of its bytes through it (WireGuard's bytes over iperf3's payload bytes:
    // at least 1, plus the TCP/IP, VXLAN and WireGuard headers).
    let (mut u, mut b, mut o, mut w) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut wg_share = Vec::new();
    for r in 0..rounds {
        let load_before = load();
        let ru = iperf(&hosts[1], &hosts[0], &under(1).to_string(), seconds)?;
        let rb = iperf(&hosts[1], &hosts[0], &bare(1).to_string(), seconds)?;
        let tx0 = wg_tx(&devices[0])?;
        let ro = iperf(&containers[1], &containers[0], &cip(1).to_string(), seconds)?;
        let tx1 = wg_tx(&devices[0])?;
        let rw = iperf(
            &enc_containers[1],
            &enc_containers[0],
            &eip(1).to_string(),
            seconds,
        )?;
        let tx2 = wg_tx(&devices[0])?;
        u.push(ru.gbits);
        b.push(rb.gbits);
        o.push(ro.gbits);
        w.push(rw.gbits);
        // Keepalives and handshakes are a few hundred bytes at most.
        if tx1.saturating_sub(tx0) > 4096 {
            bail!(
                "the plain overlay sent {} bytes through WireGuard",
                tx1.saturating_sub(tx0)
            );
        }
        let share = tx2.saturating_sub(tx1) as f64 / rw.bytes;
        if share < 1.0 {
            bail!("the encrypted overlay sent only {share:.3}x its payload through WireGuard");
        }
        wg_share.push(share);
        eprintln!(
            "round {}: underlay {:.2} Gbit/s ({} retransmits), bare VXLAN {:.2} Gbit/s ({}), overlay {:.2} Gbit/s ({}), encrypted overlay ({backend:?} WireGuard) {:.2} Gbit/s ({}; WireGuard sent {share:.3}x the payload); load {load_before} -> {}",
            r + 1,
            ru.gbits,
            ru.retransmits,
            rb.gbits,
            rb.retransmits,
            ro.gbits,
            ro.retransmits,
            rw.gbits,
            rw.retransmits,
            load()
        );
    }
    for (dev, h) in devices.into_iter().zip(&hosts) {
        h.block_on(move || {
            Box::pin(async move {
                dev.teardown().await?;
                Ok(())
            })
        })?;
    }
    let (mu, mb, mo, mw) = (median(u), median(b), median(o), median(w));
    println!(
        "| iperf3 TCP, {rounds} rounds x {seconds} s, alternating | underlay veth {mu:.2} Gbit/s | bare VXLAN (kernel device, host to host) {mb:.2} Gbit/s | bare VXLAN / underlay {:.2}, overlay / bare VXLAN {:.2} |",
        mb / mu,
        mo / mb
    );
    println!(
        "| iperf3 TCP, {rounds} rounds x {seconds} s, alternating | underlay veth {mu:.2} Gbit/s | VXLAN overlay {mo:.2} Gbit/s | overlay / underlay {:.2} |",
        mo / mu
    );
    println!(
        "| iperf3 TCP, {rounds} rounds x {seconds} s, alternating | underlay veth {mu:.2} Gbit/s | encrypted overlay ({backend:?} WireGuard) {mw:.2} Gbit/s | encrypted / underlay {:.3}, encrypted / overlay {:.3} |",
        mw / mu,
        mw / mo
    );
    println!(
        "WireGuard bytes sent / iperf3 payload bytes, encrypted rounds: {}",
        wg_share
            .iter()
            .map(|s| format!("{s:.3}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    Ok(())
}
