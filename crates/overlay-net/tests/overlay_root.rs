//! Root tests of the overlay data plane: three "hosts" are network namespaces joined by a
//! veth bridge in a "lan" namespace (192.168.77.0/24; the lan side, .254, plays the
//! outside client); on each host the driver realises the overlays; "containers" are further
//! namespaces attached to a host's bridges. Nothing outside namespaces the tests create is
//! touched; every namespace is deleted on drop, pass or fail. Skipped (with a message) when
//! not run as root.

mod support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use berth_overlay_net::overlay::*;
use berth_overlay_net::Protocol;
use support::*;

const PREFIX: &str = "ot";

fn is_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        true
    } else {
        eprintln!("skipping: overlay root tests need root");
        false
    }
}

fn cfg() -> OverlayConfig {
    OverlayConfig {
        prefix: PREFIX.into(),
        ..OverlayConfig::default()
    }
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// Three hosts on one lan.
struct Lan {
    lan: TestNetns,
    hosts: Vec<TestNetns>,
}

impl Lan {
    fn new() -> Result<Self> {
        let lan = TestNetns::new()?;
        lan.ip(&["link", "add", "lanbr", "type", "bridge"])?;
        lan.ip(&["addr", "add", "192.168.77.254/24", "dev", "lanbr"])?;
        lan.ip(&["link", "set", "lanbr", "up"])?;
        let mut hosts = Vec::new();
        for i in 1..=3 {
            let h = TestNetns::new()?;
            let port = format!("l{i}");
            lan.ip(&[
                "link", "add", &port, "type", "veth", "peer", "name", "uplink", "netns", &h.name,
            ])?;
            lan.ip(&["link", "set", &port, "master", "lanbr", "up"])?;
            h.ip(&[
                "addr",
                "add",
                &format!("192.168.77.{i}/24"),
                "dev",
                "uplink",
            ])?;
            h.ip(&["link", "set", "uplink", "up"])?;
            hosts.push(h);
        }
        Ok(Lan { lan, hosts })
    }

    fn addr(i: usize) -> Ipv4Addr {
        Ipv4Addr::new(192, 168, 77, i as u8 + 1)
    }
}

/// One endpoint of the test cluster.
#[derive(Clone)]
struct Ep {
    id: &'static str,
    net: &'static str,
    ip: Ipv4Addr,
    host: usize,
}

/// The desired model of host `h`: every network, every endpoint.
fn desired(h: usize, nets: &[OverlaySpec], eps: &[Ep]) -> OverlayDesired {
    OverlayDesired {
        local_addr: Lan::addr(h),
        networks: nets.to_vec(),
        endpoints: eps
            .iter()
            .map(|e| OverlayEndpoint {
                id: e.id.into(),
                network_id: e.net.into(),
                ip: e.ip,
                mac: mac_for_ip(e.ip),
                node_addr: Lan::addr(e.host),
                local: e.host == h,
            })
            .collect(),
    }
}

fn reconcile(host: &TestNetns, d: &OverlayDesired) -> Result<()> {
    host.block_on(|| async {
        let mut drv = OverlayDriver::new(cfg())?;
        drv.reconcile(d).await?;
        Ok(())
    })
}

#[allow(clippy::too_many_arguments)]
fn attach(
    host: &TestNetns,
    d: &OverlayDesired,
    net: &str,
    ns: &TestNetns,
    ifname: &str,
    addr: Ipv4Addr,
    gateway: Option<Ipv4Addr>,
) -> Result<()> {
    host.block_on(|| async {
        let mut drv = OverlayDriver::new(cfg())?;
        drv.reconcile(d).await?;
        drv.attach(net, &ns.path(), ifname, addr, 24, mac_for_ip(addr), gateway)
            .await?;
        Ok(())
    })
}

fn observe(host: &TestNetns) -> Result<OverlayObserved> {
    host.block_on(|| async {
        let drv = OverlayDriver::new(cfg())?;
        Ok(drv.observe().await?)
    })
}

fn teardown(host: &TestNetns) -> Result<()> {
    host.block_on(|| async {
        let mut drv = OverlayDriver::new(cfg())?;
        drv.teardown().await?;
        Ok(())
    })
}

/// Links with this prefix's alias, and berth tables, left in a host.
fn residue(host: &TestNetns) -> Result<Vec<String>> {
    let mut out: Vec<String> = host
        .ip(&["-o", "link", "show"])?
        .lines()
        .filter(|l| l.contains("berth-ovl:"))
        .map(str::to_string)
        .collect();
    let tables = run(
        "ip",
        &["netns", "exec", &host.name, "nft", "list", "tables"],
    )?;
    out.extend(
        tables
            .lines()
            .filter(|l| l.contains("berth"))
            .map(str::to_string),
    );
    Ok(out)
}

fn spec(id: &str, vni: u32, subnet: &str, gw: &str) -> OverlaySpec {
    OverlaySpec {
        id: id.into(),
        vni,
        subnet: subnet.into(),
        gateway: Some(ip(gw)),
        mtu: 0,
        internal: false,
        host_address: None,
        encrypted: false,
    }
}

/// A TCP server that answers every connection with its own (local) address.
struct WhoAmI {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl WhoAmI {
    fn start(ns: &TestNetns, port: u16) -> Result<Self> {
        let path = ns.path();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let l = match enter(&path).and_then(|_| Ok(TcpListener::bind(("0.0.0.0", port))?)) {
                Ok(l) => l,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            l.set_nonblocking(true).expect("nonblocking");
            let _ = tx.send(Ok(()));
            while !stop2.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let me = s
                            .local_addr()
                            .map(|a| a.ip().to_string())
                            .unwrap_or_default();
                        let _ = s.write_all(me.as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        rx.recv().context("server thread died")??;
        Ok(WhoAmI {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for WhoAmI {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn fetch(addr: SocketAddr) -> Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
        .with_context(|| format!("connect {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

#[test]
fn containers_on_different_hosts_reach_each_other_and_entries_follow_the_endpoint_set() -> Result<()>
{
    if !is_root() {
        return Ok(());
    }
    let lan = Lan::new()?;
    let h = &lan.hosts;
    let nets = vec![
        spec("neta", 4097, "10.0.1.0/24", "10.0.1.1"),
        spec("netb", 4098, "10.0.2.0/24", "10.0.2.1"),
    ];
    let mut eps = vec![
        Ep {
            id: "a1",
            net: "neta",
            ip: ip("10.0.1.2"),
            host: 0,
        },
        Ep {
            id: "a3",
            net: "neta",
            ip: ip("10.0.1.3"),
            host: 2,
        },
        Ep {
            id: "b1",
            net: "netb",
            ip: ip("10.0.2.2"),
            host: 0,
        },
        Ep {
            id: "a2",
            net: "neta",
            ip: ip("10.0.1.4"),
            host: 1,
        },
    ];
    let (a1, a3, b1, a2) = (
        TestNetns::new()?,
        TestNetns::new()?,
        TestNetns::new()?,
        TestNetns::new()?,
    );
    for (i, host) in h.iter().enumerate() {
        reconcile(host, &desired(i, &nets, &eps))?;
    }
    attach(
        &h[0],
        &desired(0, &nets, &eps),
        "neta",
        &a1,
        "eth0",
        ip("10.0.1.2"),
        Some(ip("10.0.1.1")),
    )?;
    attach(
        &h[2],
        &desired(2, &nets, &eps),
        "neta",
        &a3,
        "eth0",
        ip("10.0.1.3"),
        Some(ip("10.0.1.1")),
    )?;
    attach(
        &h[0],
        &desired(0, &nets, &eps),
        "netb",
        &b1,
        "eth0",
        ip("10.0.2.2"),
        Some(ip("10.0.2.1")),
    )?;
    attach(
        &h[1],
        &desired(1, &nets, &eps),
        "neta",
        &a2,
        "eth0",
        ip("10.0.1.4"),
        Some(ip("10.0.1.1")),
    )?;

    // Attaching again replaces the attachment.
    attach(
        &h[1],
        &desired(1, &nets, &eps),
        "neta",
        &a2,
        "eth0",
        ip("10.0.1.4"),
        Some(ip("10.0.1.1")),
    )?;

    // Across hosts by IP: ping and TCP; the peer sees the real source.
    ensure!(
        a1.reaches("10.0.1.3"),
        "a1 (host 1) cannot ping a3 (host 3)"
    );
    ensure!(
        a3.reaches("10.0.1.4"),
        "a3 (host 3) cannot ping a2 (host 2)"
    );
    {
        let _srv = PeerEchoServer::start(&a3, 8080)?;
        let seen = a1.run_in(|| peer_seen_by("10.0.1.3:8080".parse().unwrap()))?;
        assert_eq!(seen, "10.0.1.2");
    }
    // Another overlay cannot reach it, on the same host or across.
    ensure!(!b1.ping("10.0.1.2"), "netb reached neta on the same host");
    ensure!(!b1.ping("10.0.1.3"), "netb reached neta across hosts");

    // Static entries: host 1 knows a3 and a2, each at its node; nothing for local a1.
    let obs = observe(&h[0])?;
    let vx = "otx001001";
    let fdb = obs.fdb.get(vx).cloned().unwrap_or_default();
    assert_eq!(
        fdb,
        [
            FdbEntry {
                mac: mac_for_ip(ip("10.0.1.3")),
                dst: Lan::addr(2)
            },
            FdbEntry {
                mac: mac_for_ip(ip("10.0.1.4")),
                dst: Lan::addr(1)
            },
        ]
        .into_iter()
        .collect::<BTreeSet<_>>()
    );
    let fdb_text = run("bridge", &["-n", &h[0].name, "fdb", "show", "dev", vx])?;
    assert!(
        fdb_text.contains("02:42:0a:00:01:03 dst 192.168.77.3"),
        "{fdb_text}"
    );
    assert!(
        !fdb_text.contains("00:00:00:00:00:00"),
        "a flooding entry exists: {fdb_text}"
    );

    // Host 3 leaves: every other host drops every entry pointing at it.
    eps.retain(|e| e.host != 2);
    for i in [0, 1] {
        reconcile(&h[i], &desired(i, &nets, &eps))?;
        let obs = observe(&h[i])?;
        let stale: Vec<_> = obs
            .fdb
            .values()
            .flatten()
            .filter(|e| e.dst == Lan::addr(2))
            .collect();
        assert!(
            stale.is_empty(),
            "host {i} still points at host 3: {stale:?}"
        );
        let neigh = h[i].ip(&["neigh", "show", "dev", vx])?;
        assert!(!neigh.contains("10.0.1.3 "), "host {i}: {neigh}");
        let fdb_text = run("bridge", &["-n", &h[i].name, "fdb", "show", "dev", vx])?;
        assert!(!fdb_text.contains("192.168.77.3"), "host {i}: {fdb_text}");
    }
    ensure!(
        !a1.ping("10.0.1.3"),
        "a3 still reachable after its host left"
    );
    ensure!(a1.reaches("10.0.1.4"), "a2 unreachable after host 3 left");

    // Detach and teardown leave nothing.
    h[0].block_on(|| async {
        let mut drv = OverlayDriver::new(cfg())?;
        drv.reconcile(&desired(0, &nets, &eps)).await?;
        drv.detach("neta", &a1.path()).await?;
        drv.detach("neta", &a1.path()).await?; // absent counts as done
        anyhow::Ok(())
    })?;
    ensure!(
        a1.ip(&["link", "show", "eth0"]).is_err(),
        "a1's eth0 survived detach"
    );
    // A second instance (another prefix) on host 1 is left alone by the first's teardown.
    let other = OverlayConfig {
        prefix: "ou".into(),
        ..OverlayConfig::default()
    };
    let mut other_desired = desired(0, &nets, &eps);
    for n in &mut other_desired.networks {
        n.vni += 100;
    }
    h[0].block_on(|| async {
        OverlayDriver::new(other.clone())?
            .reconcile(&other_desired)
            .await?;
        anyhow::Ok(())
    })?;
    for host in h {
        teardown(host)?;
    }
    let kept = h[0].ip(&["-o", "link", "show"])?;
    assert_eq!(kept.matches("berth-ovl:ou").count(), 4, "{kept}");
    h[0].block_on(|| async {
        OverlayDriver::new(other.clone())?.teardown().await?;
        anyhow::Ok(())
    })?;
    for host in h {
        let left = residue(host)?;
        assert!(left.is_empty(), "{} left {left:?}", host.name);
    }
    Ok(())
}

#[test]
fn a_vip_spreads_connections_over_backends_on_several_hosts() -> Result<()> {
    if !is_root() {
        return Ok(());
    }
    let lan = Lan::new()?;
    let h = &lan.hosts;
    let nets = vec![spec("web", 4100, "10.0.5.0/24", "10.0.5.1")];
    let eps = vec![
        Ep {
            id: "client",
            net: "web",
            ip: ip("10.0.5.2"),
            host: 0,
        },
        Ep {
            id: "t1",
            net: "web",
            ip: ip("10.0.5.11"),
            host: 0,
        },
        Ep {
            id: "t2",
            net: "web",
            ip: ip("10.0.5.12"),
            host: 1,
        },
        Ep {
            id: "t3",
            net: "web",
            ip: ip("10.0.5.13"),
            host: 2,
        },
    ];
    let client = TestNetns::new()?;
    let tasks = [TestNetns::new()?, TestNetns::new()?, TestNetns::new()?];
    attach(
        &h[0],
        &desired(0, &nets, &eps),
        "web",
        &client,
        "eth0",
        ip("10.0.5.2"),
        None,
    )?;
    for (i, t) in tasks.iter().enumerate() {
        attach(
            &h[i],
            &desired(i, &nets, &eps),
            "web",
            t,
            "eth0",
            eps[i + 1].ip,
            None,
        )?;
    }
    let _servers: Vec<WhoAmI> = tasks
        .iter()
        .map(|t| WhoAmI::start(t, 80))
        .collect::<Result<_>>()?;
    let vip = ip("10.0.5.100");
    let rule = |backends: Vec<Ipv4Addr>| VipRule {
        network_id: "web".into(),
        vip,
        backends,
    };
    let program = |rules: Vec<VipRule>| {
        h[0].block_on(|| async {
            let drv = OverlayDriver::new(cfg())?;
            drv.program_vips(&client.path(), &rules).await?;
            anyhow::Ok(())
        })
    };
    program(vec![rule(eps[1..].iter().map(|e| e.ip).collect())])?;
    let target: SocketAddr = (vip, 80).into();
    let seen: BTreeSet<String> = client.run_in(|| {
        (0..40)
            .map(|_| fetch(target))
            .collect::<Result<BTreeSet<_>>>()
    })?;
    assert_eq!(
        seen,
        ["10.0.5.11", "10.0.5.12", "10.0.5.13"]
            .into_iter()
            .map(String::from)
            .collect::<BTreeSet<_>>()
    );
    // One transaction changes the backend set.
    program(vec![rule(vec![ip("10.0.5.12")])])?;
    let seen: BTreeSet<String> = client.run_in(|| {
        (0..10)
            .map(|_| fetch(target))
            .collect::<Result<BTreeSet<_>>>()
    })?;
    assert_eq!(seen, ["10.0.5.12".to_string()].into_iter().collect());
    // No backend: refused at once, not a timeout.
    program(vec![rule(vec![])])?;
    let err = client.run_in(|| TcpStream::connect_timeout(&target, Duration::from_secs(3)));
    let err = err.expect_err("connected to a VIP without backends");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    // Removing the table.
    program(vec![])?;
    let tables = run(
        "ip",
        &["netns", "exec", &client.name, "nft", "list", "tables"],
    )?;
    assert!(!tables.contains("berth"), "{tables}");
    for host in h {
        teardown(host)?;
        assert!(residue(host)?.is_empty());
    }
    Ok(())
}

#[test]
fn the_routing_mesh_reaches_a_task_on_another_host_and_keeps_the_client_address() -> Result<()> {
    if !is_root() {
        return Ok(());
    }
    let lan = Lan::new()?;
    let h = &lan.hosts;
    let node_ingress = |i: usize| Ipv4Addr::new(10, 0, 0, 11 + i as u8);
    let ingress_net = |i: usize| OverlaySpec {
        id: "ingress".into(),
        vni: 4096,
        subnet: "10.0.0.0/24".into(),
        gateway: Some(ip("10.0.0.1")),
        mtu: 0,
        internal: false,
        host_address: Some(node_ingress(i)),
        encrypted: false,
    };
    // The nodes' ingress addresses are endpoints too (like Swarm's ingress-sbox).
    let eps = vec![
        Ep {
            id: "sbox1",
            net: "ingress",
            ip: node_ingress(0),
            host: 0,
        },
        Ep {
            id: "sbox2",
            net: "ingress",
            ip: node_ingress(1),
            host: 1,
        },
        Ep {
            id: "sbox3",
            net: "ingress",
            ip: node_ingress(2),
            host: 2,
        },
        Ep {
            id: "task",
            net: "ingress",
            ip: ip("10.0.0.5"),
            host: 2,
        },
    ];
    let task = TestNetns::new()?;
    let rules = vec![IngressRule {
        published: 8080,
        protocol: Protocol::Tcp,
        target_port: 80,
        backends: vec![ip("10.0.0.5")],
    }];
    for (i, host) in h.iter().enumerate() {
        let d = desired(i, &[ingress_net(i)], &eps);
        host.block_on(|| async {
            let mut drv = OverlayDriver::new(cfg())?;
            drv.reconcile(&d).await?;
            drv.set_published(rules.clone(), vec![]).await?;
            if i == 2 {
                // No default route in the task: only the return path can carry replies.
                drv.attach(
                    "ingress",
                    &task.path(),
                    "eth0",
                    ip("10.0.0.5"),
                    24,
                    mac_for_ip(ip("10.0.0.5")),
                    None,
                )
                .await?;
                drv.program_ingress_return(
                    &task.path(),
                    &IngressReturn {
                        ifname: "eth0".into(),
                        nodes: (0..3).map(node_ingress).collect(),
                    },
                )
                .await?;
            }
            anyhow::Ok(())
        })?;
    }
    let _srv = PeerEchoServer::start(&task, 80)?;
    // From the lan, to every host's address: host 1 and 2 forward over the overlay, host 3
    // is the task's own; the task always sees the lan client's own address.
    for i in 0..3 {
        let target: SocketAddr = (Lan::addr(i), 8080).into();
        let seen = lan.lan.run_in(|| peer_seen_by(target))?;
        assert_eq!(seen, "192.168.77.254", "via host {}", i + 1);
    }
    // `mode=host` on host 3: a plain DNAT to the task; the reply finds its way back the same
    // way (the frame came from host 3's own bridge address).
    h[2].block_on(|| async {
        let mut drv = OverlayDriver::new(cfg())?;
        drv.reconcile(&desired(2, &[ingress_net(2)], &eps)).await?;
        drv.set_published(
            rules.clone(),
            vec![HostPortRule {
                published: 9090,
                protocol: Protocol::Tcp,
                target: ip("10.0.0.5"),
                target_port: 80,
            }],
        )
        .await?;
        anyhow::Ok(())
    })?;
    let seen = lan
        .lan
        .run_in(|| peer_seen_by((Lan::addr(2), 9090).into()))?;
    assert_eq!(seen, "192.168.77.254", "mode=host");
    drop(_srv);
    for host in h {
        teardown(host)?;
        assert!(residue(host)?.is_empty());
    }
    Ok(())
}
