//! Encrypted overlay networks (`docker network create -d overlay --opt encrypted`, issue
//! #16), driven with the real docker CLI against a berth cluster of 3 hosts ([`Cluster`]:
//! each berthd in its own network namespace and data root, on one veth LAN):
//!
//! ```text
//!   host 0 10.77.S.1 (client) ──┐
//!   host 1 10.77.S.2          ──┼── LAN switch     tcpdump on host 0's eth0
//!   host 2 10.77.S.3 (server) ──┘
//!   container ─ bridge ─ vxlan ─(UDP 4789 to the peer's tunnel address)─ <prefix>wg ─ UDP 51820
//! ```
//!
//! - A container on host 0 fetches 200 KB holding a marker string from a container on
//!   host 2 over an encrypted overlay; the transfer completes with every byte. A capture on
//!   host 0's underlay during it holds only WireGuard (UDP 51820), cluster traffic (TCP
//!   2377) and link housekeeping (ARP, IPv6 neighbour discovery and multicast listener
//!   reports): never the marker, never VXLAN of the encrypted network's VNI; the WireGuard
//!   device's own counters show the transfer went through the tunnel.
//! - The capture method sees plain text when there is some: the same transfer over a plain
//!   overlay alongside (which still works) shows the marker and VXLAN of its VNI.
//! - A plain VXLAN packet of the encrypted VNI sent from host 1's underlay to host 0 is
//!   dropped at input by host 0's overlay nftables table (its drop rule counts it).
//!
//! The marker is assembled inside the containers (`rev` of its reverse), so it never
//! crosses any wire in a command line. Cleanup: [`Cluster::with_task_cleanup`] removes
//! every container, then every berthd and netns goes; the capture files live in a
//! temporary directory removed on drop; tcpdump is stopped by PID.

use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use berth_testkit::cluster::Cluster;
use berth_testkit::daemon::retry;
use serde_json::Value;

/// Bytes the server serves.
const SIZE: usize = 200 * 1024;

/// How long the cluster gets to converge (3 berthd share 2 cores with other work).
const CONVERGE: Duration = Duration::from_secs(60);

/// A capture running in a host's namespace; stopped (SIGINT by PID) on drop.
struct Capture {
    child: Option<Child>,
    path: std::path::PathBuf,
}

impl Capture {
    /// Starts `tcpdump -i eth0` in host `i`'s namespace writing to `path`; returns once it
    /// listens.
    fn start(c: &Cluster, i: usize, path: &std::path::Path) -> Result<Self> {
        let log = path.with_extension("log");
        let child = c
            .h(i)
            .in_netns(
                "tcpdump",
                &[
                    "-i",
                    "eth0",
                    "-nn",
                    "-U",
                    "--immediate-mode",
                    "-s",
                    "0",
                    "-Z",
                    "root",
                    "-w",
                    path.to_str().context("capture path")?,
                ],
            )
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("spawn tcpdump")?;
        let cap = Capture {
            child: Some(child),
            path: path.to_path_buf(),
        };
        retry(Duration::from_secs(20), || {
            Ok(std::fs::read_to_string(&log)?
                .contains("listening on")
                .then_some(()))
        })
        .context("tcpdump never listened")?;
        Ok(cap)
    }

    /// Stops the capture (after a moment, so the last packets are written) and returns
    /// the file's bytes.
    fn stop(mut self) -> Result<Vec<u8>> {
        std::thread::sleep(Duration::from_millis(500));
        self.halt();
        Ok(std::fs::read(&self.path)?)
    }

    fn halt(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own unreaped child's PID (nsenter exec'd tcpdump).
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
            let _ = child.wait();
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.halt();
    }
}

/// `tcpdump -r FILE -nn [filter]` lines.
fn read_capture(path: &std::path::Path, filter: &[&str]) -> Result<Vec<String>> {
    let out = std::process::Command::new("tcpdump")
        .args(["-r", path.to_str().context("path")?, "-nn"])
        .args(filter)
        .stderr(Stdio::null())
        .output()?;
    ensure!(out.status.success(), "tcpdump -r {}", path.display());
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect())
}

/// The address of container `name` (on host `i`) on `net`.
fn address(c: &Cluster, i: usize, name: &str, net: &str) -> Result<String> {
    let v: Value = serde_json::from_str(&c.h(i).docker_ok(&["inspect", name])?)?;
    Ok(v[0]["NetworkSettings"]["Networks"][net]["IPAddress"]
        .as_str()
        .unwrap_or_default()
        .to_string())
}

/// The VNI of overlay `net`.
fn vni(c: &Cluster, net: &str) -> Result<u32> {
    let v: Value = serde_json::from_str(&c.h(0).docker_ok(&["network", "inspect", net])?)?;
    Ok(
        v[0]["Options"]["com.docker.network.driver.overlay.vxlanid_list"]
            .as_str()
            .unwrap_or_default()
            .parse()?,
    )
}

/// Fetches the server's file from the client; returns (bytes, marker lines) as the client
/// counted them.
fn fetch(c: &Cluster, client: &str, ip: &str, reversed: &str) -> Result<(usize, usize)> {
    let out = c.h(0).docker_ok(&[
        "exec",
        client,
        "sh",
        "-c",
        &format!(
            "rm -f /tmp/big; timeout 120 wget -q -O /tmp/big http://{ip}/big && wc -c < /tmp/big && \
             grep -c \"$(echo {reversed} | rev)\" /tmp/big"
        ),
    ])?;
    let nums: Vec<usize> = out
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    ensure!(nums.len() == 2, "client printed: {out}");
    Ok((nums[0], nums[1]))
}

/// Whether `hay` contains `needle`.
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Sends one plain VXLAN packet of `vni` (an Ethernet broadcast inside) from host `from`'s
/// namespace to `to:4789`.
fn send_plain_vxlan(c: &Cluster, from: usize, to: &str, vni: u32) -> Result<()> {
    use std::os::fd::AsFd;
    let netns = c.h(from).netns();
    let to = format!("{to}:4789");
    std::thread::spawn(move || -> Result<()> {
        let f = std::fs::File::open(&netns)?;
        nix_setns(f.as_fd())?;
        let sock = std::net::UdpSocket::bind("0.0.0.0:0")?;
        let v = vni.to_be_bytes();
        let mut pkt = vec![0x08, 0, 0, 0, v[1], v[2], v[3], 0];
        pkt.extend_from_slice(&[0xff; 6]); // dst: broadcast
        pkt.extend_from_slice(&[0x02, 0x42, 0xde, 0xad, 0xbe, 0xef]); // src
        pkt.extend_from_slice(&[0x08, 0x06]); // ARP
        pkt.extend_from_slice(&[0; 28]);
        sock.send_to(&pkt, &to)?;
        Ok(())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("sender thread panicked"))?
}

fn nix_setns(fd: std::os::fd::BorrowedFd<'_>) -> Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: setns(2) on a valid namespace fd, in a thread of our own that exits after.
    let r = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
    ensure!(r == 0, "setns: {}", std::io::Error::last_os_error());
    Ok(())
}

/// Links, FDB, routes, nft rules and WireGuard log lines of hosts 0 and 2 (for failures).
fn diagnose(c: &Cluster) -> String {
    let mut s = String::new();
    for i in [0, 2] {
        for (p, a) in [
            ("ip", &["-d", "-o", "link", "show"][..]),
            ("ip", &["addr"][..]),
            ("ip", &["route"][..]),
            ("bridge", &["fdb", "show"][..]),
            ("ip", &["neigh"][..]),
            ("nft", &["list", "ruleset"][..]),
        ] {
            if let Ok(out) = c.h(i).in_netns(p, a).output() {
                s.push_str(&format!(
                    "\n--- host {i}: {p} {a:?}\n{}",
                    String::from_utf8_lossy(&out.stdout)
                ));
            }
        }
        let log = c.h(i).log();
        s.push_str(&format!("\n--- host {i}: log (WireGuard, overlay)\n"));
        for l in log
            .lines()
            .filter(|l| l.contains("WireGuard") || l.contains("overlay") || l.contains("WARN"))
        {
            s.push_str(l);
            s.push('\n');
        }
    }
    s
}

/// The packet counter of host `i`'s input drop rule for VXLAN of encrypted networks.
/// Bytes received plus sent by host `i`'s WireGuard device (the TUN link berthd names
/// `<prefix>wg`), from `ip -s -j link`: what went through the tunnel, whatever a capture
/// under load may miss.
/// Waits until client container `cli` on host 0 gets `ready` from `http://{ip}/ready` (the
/// first answer over an encrypted network also completes the tunnel's handshake).
fn wait_ready(c: &Cluster, cli: &str, ip: &str) -> Result<()> {
    retry(CONVERGE, || {
        let out = c.h(0).docker(&[
            "exec",
            cli,
            "sh",
            "-c",
            &format!("timeout 5 wget -q -O - http://{ip}/ready"),
        ])?;
        Ok((String::from_utf8_lossy(&out.stdout).trim() == "ready").then_some(()))
    })
    .with_context(|| format!("the server never answered: {}", diagnose(c)))
}

fn wireguard_bytes(c: &Cluster, i: usize) -> Result<u64> {
    let out = c
        .h(i)
        .in_netns("ip", &["-s", "-j", "link", "show"])
        .output()?;
    ensure!(out.status.success(), "ip -s -j link show on host {i}");
    let links: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let wg = links
        .as_array()
        .into_iter()
        .flatten()
        .find(|l| {
            l["ifname"].as_str().is_some_and(|n| n.ends_with("wg")) && l["link_type"] == "none"
        })
        .with_context(|| format!("host {i} has no WireGuard device: {links}"))?;
    let count = |dir: &str| wg["stats64"][dir]["bytes"].as_u64().unwrap_or(0);
    Ok(count("rx") + count("tx"))
}

fn input_drops(c: &Cluster, i: usize) -> Result<u64> {
    let out = c.h(i).in_netns("nft", &["list", "ruleset"]).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("iifname !=") && l.contains("@th,96,24"))
        .with_context(|| format!("no VXLAN input drop rule on host {i}: {text}"))?;
    let n = line
        .split("counter packets ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no counter in {line}"))?;
    Ok(n)
}

#[test]
fn an_encrypted_overlay_carries_only_wireguard_on_the_underlay() -> Result<()> {
    let fx = berth_testkit::Fixture::from_env()?;
    let img = fx.reference("busybox:latest");
    let c = Cluster::new(3)?.with_task_cleanup();
    c.form(1)?;
    let pid = std::process::id();
    let (enc, plain) = (format!("enc{pid}"), format!("pln{pid}"));
    let marker = format!("berth-plaintext-marker-{pid}");
    let reversed: String = marker.chars().rev().collect();
    c.h(0).docker_ok(&[
        "network",
        "create",
        "-d",
        "overlay",
        "--attachable",
        "--opt",
        "encrypted",
        &enc,
    ])?;
    c.h(0)
        .docker_ok(&["network", "create", "-d", "overlay", "--attachable", &plain])?;
    let (enc_vni, plain_vni) = (vni(&c, &enc)?, vni(&c, &plain)?);
    for i in [1, 2] {
        retry(CONVERGE, || {
            let out = c
                .h(i)
                .docker_ok(&["network", "ls", "--format", "{{.Name}}"])?;
            Ok((out.contains(&enc) && out.contains(&plain)).then_some(()))
        })?;
    }
    let server = format!(
        "M=$(echo {reversed} | rev); mkdir -p /www && seq 1 10000 | sed \"s/.*/$M/\" | head -c {SIZE} > /www/big && \
         echo ready > /www/ready && exec httpd -f -p 80 -h /www"
    );
    let mut servers = Vec::new();
    for (net, tag) in [(&enc, "e"), (&plain, "p")] {
        let (srv, cli) = (format!("srv{tag}{pid}"), format!("cli{tag}{pid}"));
        c.h(2).docker_ok(&[
            "run",
            "-d",
            "--name",
            &srv,
            "--network",
            net,
            &img,
            "sh",
            "-c",
            &server,
        ])?;
        c.h(0).docker_ok(&[
            "run",
            "-d",
            "--name",
            &cli,
            "--network",
            net,
            &img,
            "sleep",
            "3600",
        ])?;
        let ip = address(&c, 2, &srv, net)?;
        // The server answers (and, encrypted, the tunnel has its handshake).
        let started = std::time::Instant::now();
        wait_ready(&c, &cli, &ip).with_context(|| format!("the server on {net}"))?;
        println!("{net}: first answer after {:?}", started.elapsed());
        servers.push((ip, cli));
    }
    let dir = tempfile::Builder::new().prefix("berth-wgcap").tempdir()?;

    // Encrypted: the transfer completes, the underlay sees only WireGuard and cluster traffic.
    let (ip, cli) = &servers[0];
    let tunnel_before = wireguard_bytes(&c, 0)?;
    let cap = Capture::start(&c, 0, &dir.path().join("enc.pcap"))?;
    let started = std::time::Instant::now();
    let (bytes, lines) = fetch(&c, cli, ip, &reversed)?;
    println!(
        "encrypted transfer of {bytes} bytes took {:?}",
        started.elapsed()
    );
    let raw = cap.stop()?;
    ensure!(bytes == SIZE, "the client got {bytes} of {SIZE} bytes");
    ensure!(lines > 1000, "the client counted {lines} marker lines");
    ensure!(
        !contains(&raw, marker.as_bytes()),
        "the marker crossed host 0's underlay in plain text"
    );
    let path = dir.path().join("enc.pcap");
    let all = read_capture(&path, &[])?;
    let wg = read_capture(&path, &["-q", "udp", "port", "51820"])?;
    let wg_bytes: usize = wg
        .iter()
        .filter_map(|l| l.rsplit("length ").next()?.trim().parse::<usize>().ok())
        .sum();
    println!(
        "capture: {} packets, {} WireGuard ({wg_bytes} bytes)",
        all.len(),
        wg.len()
    );
    // The transfer went through the tunnel: the device's own counters (a capture on a
    // loaded machine can drop packets, so its byte sum is only shown).
    let tunnel = wireguard_bytes(&c, 0)? - tunnel_before;
    println!("WireGuard device of host 0: {tunnel} bytes during the transfer");
    ensure!(
        tunnel >= u64::try_from(SIZE)? && !wg.is_empty(),
        "only {tunnel} bytes through host 0's WireGuard device ({wg_bytes} captured) for a {SIZE}-byte transfer: {:#?}",
        all.iter().take(40).collect::<Vec<_>>()
    );
    let other: Vec<&String> = all
        .iter()
        .filter(|l| {
            !(l.contains(".51820 ")
                || l.contains(".2377 ")
                || l.contains(".2377:")
                || l.contains(" ARP, ")
                || l.contains("ICMP6, neighbor")
                || l.contains("ICMP6, router")
                || l.contains("ICMP6, multicast listener"))
        })
        .collect();
    ensure!(
        other.is_empty(),
        "host 0's underlay carried more than WireGuard and cluster traffic: {other:#?}"
    );
    let vxlan = read_capture(&path, &["udp", "port", "4789"])?;
    ensure!(
        vxlan.is_empty(),
        "plain VXLAN on host 0's underlay during the encrypted transfer: {vxlan:#?}"
    );

    // Plain, alongside: it works, and the same capture method does see its plain text.
    let (ip, cli) = &servers[1];
    let path = dir.path().join("plain.pcap");
    let cap = Capture::start(&c, 0, &path)?;
    let (bytes, _) = fetch(&c, cli, ip, &reversed)?;
    let raw = cap.stop()?;
    ensure!(
        bytes == SIZE,
        "plain overlay: the client got {bytes} of {SIZE}"
    );
    let vxlan = read_capture(&path, &["udp", "port", "4789"])?;
    println!(
        "plain capture: {} bytes, {} VXLAN packets",
        raw.len(),
        vxlan.len()
    );
    ensure!(
        contains(&raw, marker.as_bytes()),
        "the capture did not see the plain overlay's marker: the method is blind: {:#?}",
        read_capture(&path, &[])?
            .iter()
            .take(30)
            .collect::<Vec<_>>()
    );
    ensure!(
        vxlan
            .iter()
            .any(|l| l.contains(&format!("vni {plain_vni}"))),
        "no VXLAN of VNI {plain_vni} seen for the plain overlay: {vxlan:#?}"
    );
    ensure!(
        !vxlan.iter().any(|l| l.contains(&format!("vni {enc_vni}"))),
        "VXLAN of the encrypted VNI {enc_vni} on the underlay: {vxlan:#?}"
    );

    // A forged plain VXLAN packet of the encrypted VNI is dropped at host 0's input.
    let before = input_drops(&c, 0)?;
    send_plain_vxlan(&c, 1, &c.hosts[0].addr, enc_vni)?;
    let after = retry(Duration::from_secs(10), || {
        let n = input_drops(&c, 0)?;
        Ok((n > before).then_some(n))
    })
    .context("the forged VXLAN packet was not counted by the drop rule")?;
    println!("input drop rule: {before} -> {after} packets");
    Ok(())
}

/// Holds UDP port 51820 inside host `i`'s network namespace (as a second berthd or another
/// WireGuard would) until dropped.
fn occupy_wireguard_port(c: &Cluster, i: usize) -> Result<std::net::UdpSocket> {
    use std::os::fd::AsFd;
    let netns = c.h(i).netns();
    std::thread::spawn(move || -> Result<std::net::UdpSocket> {
        let f = std::fs::File::open(&netns)?;
        nix_setns(f.as_fd())?;
        Ok(std::net::UdpSocket::bind("0.0.0.0:51820")?)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("binding thread panicked"))?
}

/// A node whose namespace already has UDP 51820 taken still carries encrypted overlays: its
/// device listens on a port the kernel picks, the port goes into its node record, and the
/// other node's device sends there. Before, the device failed to start (EADDRINUSE) and
/// nothing reached that node's containers.
#[test]
fn a_node_whose_wireguard_port_is_taken_still_carries_encrypted_overlays() -> Result<()> {
    let fx = berth_testkit::Fixture::from_env()?;
    let img = fx.reference("busybox:latest");
    let c = Cluster::new(2)?.with_task_cleanup();
    c.form(1)?;
    let _taken = occupy_wireguard_port(&c, 1)?;
    let pid = std::process::id();
    let enc = format!("encp{pid}");
    c.h(0).docker_ok(&[
        "network",
        "create",
        "-d",
        "overlay",
        "--attachable",
        "--opt",
        "encrypted",
        &enc,
    ])?;
    retry(CONVERGE, || {
        let out = c
            .h(1)
            .docker_ok(&["network", "ls", "--format", "{{.Name}}"])?;
        Ok(out.contains(&enc).then_some(()))
    })?;
    let (srv, cli) = (format!("srvp{pid}"), format!("clip{pid}"));
    c.h(1).docker_ok(&[
        "run",
        "-d",
        "--name",
        &srv,
        "--network",
        &enc,
        &img,
        "sh",
        "-c",
        "mkdir -p /www && seq 1 20000 > /www/big && echo ready > /www/ready && exec httpd -f -p 80 -h /www",
    ])?;
    c.h(0).docker_ok(&[
        "run",
        "-d",
        "--name",
        &cli,
        "--network",
        &enc,
        &img,
        "sleep",
        "3600",
    ])?;
    let ip = address(&c, 1, &srv, &enc)?;
    wait_ready(&c, &cli, &ip)?;
    let out = c.h(0).docker_ok(&[
        "exec",
        &cli,
        "sh",
        "-c",
        &format!("timeout 60 wget -q -O - http://{ip}/big | tail -n 1"),
    ])?;
    ensure!(out.trim() == "20000", "the client got: {out}");
    ensure!(
        wireguard_bytes(&c, 1)? > 100_000,
        "the transfer did not go through host 1's WireGuard device"
    );
    // Host 1's device listens elsewhere, and says so.
    let log = c.h(1).log();
    let started = log
        .lines()
        .find(|l| l.contains("WireGuard device started"))
        .context("host 1 never started its WireGuard device")?;
    let port: u16 = started
        .split("port=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("no port in: {started}"))?;
    ensure!(
        port != 51820,
        "host 1's device claims the taken port: {started}"
    );
    let listening = c.h(1).in_netns("ss", &["-Hnuln"]).output()?;
    ensure!(
        String::from_utf8_lossy(&listening.stdout).contains(&format!(":{port} ")),
        "nothing listens on UDP {port} in host 1's namespace"
    );
    Ok(())
}
