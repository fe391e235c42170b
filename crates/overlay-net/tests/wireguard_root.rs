//! Root test of the WireGuard device (boringtun in this process on this kernel, which has
//! no WireGuard module) and of VXLAN riding inside it: three "hosts" as network namespaces
//! on an underlay bridge (itself in a namespace of its own), a device per host, a VXLAN
//! device per host whose remote addresses are the peers' TUNNEL addresses, and a
//! "container" namespace per host on a bridge with the VXLAN device. A tcpdump capture on
//! the underlay during a 200 KB transfer holds WireGuard UDP only and never the marker.
//! Skipped (passes with a note) when not run as root. Everything lives in namespaces the test
//! makes, deleted on drop even when it fails.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, ensure, Context, Result};
use berth_overlay_net::wireguard::*;
use support::*;

const MARKER: &[u8] = b"BERTH-PLAINTEXT-MARKER-7f3a";
/// Ends a capture (see `Capture::finish`); the summary stops at it.
const SENTINEL: &[u8] = b"BERTH-CAPTURE-END";
const WG_PORT: u16 = 51820;
const VNI: &str = "4242";

fn underlay_ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 213, 0, n)
}
fn tunnel_ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 214, 0, n)
}
fn container_ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 9, n)
}
fn container_mac(n: u8) -> String {
    format!("02:42:0a:00:09:{n:02x}")
}

/// The tests of this file run one at a time: the first counts this process's threads.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Threads of this process (boringtun's workers are threads of the test process).
fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(0)
}

fn sysctl(ns: &TestNetns, key: &str, value: &str) -> Result<()> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    let value = value.to_string();
    ns.run_in(move || std::fs::write(&path, value))
        .with_context(|| format!("sysctl {key}"))
}

/// The underlay: a namespace with bridge `ul`, each host joined to it by a veth (`ul0` on
/// the host side), IPv6 off so a capture sees only what the test sends.
fn join_underlay(underlay: &TestNetns, host: &TestNetns, n: u8) -> Result<()> {
    let port = format!("h{n}");
    underlay.ip(&[
        "link", "add", &port, "type", "veth", "peer", "name", "ul0", "netns", &host.name,
    ])?;
    underlay.ip(&["link", "set", &port, "master", "ul", "up"])?;
    sysctl(host, "net.ipv6.conf.all.disable_ipv6", "1")?;
    host.ip(&[
        "addr",
        "add",
        &format!("{}/24", underlay_ip(n)),
        "dev",
        "ul0",
    ])?;
    host.ip(&["link", "set", "ul0", "up"])?;
    Ok(())
}

fn wg_config(n: u8) -> WgConfig {
    WgConfig {
        name: format!("bt{n}wg0"),
        listen_port: WG_PORT,
        tunnel_addr: tunnel_ip(n),
        prefix: 24,
        mtu: DEFAULT_MTU,
        backend: WgBackend::Auto,
    }
}

fn peer(keys: &[WgKeyPair], n: u8) -> WgPeer {
    WgPeer {
        public_key: keys[usize::from(n - 1)].public_key(),
        endpoint: SocketAddr::from((underlay_ip(n), WG_PORT)),
        tunnel_ip: tunnel_ip(n),
    }
}

/// VXLAN `vx0` (remote = peers' tunnel addresses, learning off) on bridge `ov`, and a
/// container namespace with `eth0` on it. FDB: each other container's MAC to its host's
/// TUNNEL address; neighbours static in the containers (no flooding, no learning).
fn overlay(host: &TestNetns, container: &TestNetns, n: u8, hosts: &[u8]) -> Result<()> {
    let mtu = (DEFAULT_MTU - 50).to_string();
    host.ip(&[
        "link",
        "add",
        "vx0",
        "type",
        "vxlan",
        "id",
        VNI,
        "local",
        &tunnel_ip(n).to_string(),
        "dstport",
        "4789",
        "nolearning",
    ])?;
    host.ip(&["link", "set", "vx0", "mtu", &mtu])?;
    host.ip(&["link", "add", "ov", "type", "bridge"])?;
    host.ip(&["link", "set", "vx0", "master", "ov", "up"])?;
    host.ip(&[
        "link",
        "add",
        "c0",
        "mtu",
        &mtu,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &container.name,
    ])?;
    host.ip(&["link", "set", "c0", "master", "ov", "up"])?;
    host.ip(&["link", "set", "ov", "up"])?;
    container.ip(&["link", "set", "eth0", "address", &container_mac(n)])?;
    container.ip(&[
        "addr",
        "add",
        &format!("{}/24", container_ip(n)),
        "dev",
        "eth0",
    ])?;
    container.ip(&["link", "set", "eth0", "up"])?;
    for &m in hosts.iter().filter(|&&m| m != n) {
        run(
            "bridge",
            &[
                "-n",
                &host.name,
                "fdb",
                "add",
                &container_mac(m),
                "dev",
                "vx0",
                "dst",
                &tunnel_ip(m).to_string(),
                "self",
                "permanent",
            ],
        )?;
        container.ip(&[
            "neigh",
            "replace",
            &container_ip(m).to_string(),
            "lladdr",
            &container_mac(m),
            "dev",
            "eth0",
            "nud",
            "permanent",
        ])?;
    }
    Ok(())
}

/// tcpdump on `ul0` of `host`, writing a pcap file; returns once it is capturing.
struct Capture {
    child: Child,
    file: std::path::PathBuf,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Capture {
    fn start(host: &TestNetns, file: std::path::PathBuf) -> Result<Self> {
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &host.name,
                "tcpdump",
                "-i",
                "ul0",
                "-n",
                "--immediate-mode",
                "-U",
                "-s",
                "1600",
                "-B",
                "16384",
                "-w",
            ])
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawn tcpdump (Debian package tcpdump)")?;
        let mut err = BufReader::new(child.stderr.take().context("stderr")?);
        let mut line = String::new();
        loop {
            line.clear();
            if err.read_line(&mut line)? == 0 {
                let _ = child.wait();
                bail!("tcpdump exited before capturing");
            }
            if line.contains("listening on") {
                break;
            }
        }
        // Keep draining stderr so tcpdump never blocks on it.
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text);
            text
        });
        Ok(Capture {
            child,
            file,
            stderr: Some(stderr),
        })
    }

    /// Ends the capture: sends a sentinel datagram from host 1's underlay address to host
    /// 2's, waits until tcpdump has written it (frames of one interface are written in
    /// order, so everything before it is in the file), stops tcpdump (SIGTERM to the PID the
    /// test started) and returns the pcap.
    fn finish(mut self, sender: &TestNetns) -> Result<Vec<u8>> {
        sender.run_in(|| -> Result<()> {
            let s = std::net::UdpSocket::bind((underlay_ip(1), 0))?;
            s.send_to(SENTINEL, (underlay_ip(2), 9))?;
            Ok(())
        })?;
        let mut waited = 0;
        let pcap = loop {
            let pcap = std::fs::read(&self.file).context("read pcap")?;
            if contains(&pcap, SENTINEL) {
                break pcap;
            }
            ensure!(waited < 3000, "tcpdump never wrote the sentinel");
            waited += 1;
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        self.stop();
        // The ring must not have overflowed: a dropped frame could have been plain text.
        let text = self
            .stderr
            .take()
            .map(|t| t.join().unwrap_or_default())
            .unwrap_or_default();
        ensure!(
            text.contains("\n0 packets dropped by kernel"),
            "tcpdump dropped frames: {text}"
        );
        Ok(pcap)
    }

    fn stop(&mut self) {
        // `ip netns exec` execs tcpdump, so the child PID is tcpdump's.
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.stop();
        }
    }
}

/// What a capture holds, frame by frame (pcap, Ethernet link type).
#[derive(Debug, Default)]
struct CaptureSummary {
    frames: usize,
    arp: usize,
    wireguard: usize,
    wireguard_bytes: usize,
    other: Vec<String>,
}

fn summarize(pcap: &[u8]) -> Result<CaptureSummary> {
    ensure!(pcap.len() >= 24, "pcap too short");
    let le = match &pcap[..4] {
        [0xd4, 0xc3, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] => false,
        m => bail!("not a pcap file (magic {m:02x?})"),
    };
    let u32_at = |b: &[u8], i: usize| {
        let a = [b[i], b[i + 1], b[i + 2], b[i + 3]];
        if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    ensure!(u32_at(pcap, 20) == 1, "link type is not Ethernet");
    let mut s = CaptureSummary::default();
    let mut i = 24;
    while i + 16 <= pcap.len() {
        let caplen = u32_at(pcap, i + 8) as usize;
        let frame = &pcap[i + 16..(i + 16 + caplen).min(pcap.len())];
        i += 16 + caplen;
        if contains(frame, SENTINEL) {
            break;
        }
        s.frames += 1;
        if frame.len() < 14 {
            s.other.push(format!("runt frame of {} bytes", frame.len()));
            continue;
        }
        let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
        if ethertype == 0x0806 {
            s.arp += 1;
            continue;
        }
        let ip = &frame[14..];
        let wg = ethertype == 0x0800 && ip.len() >= 20 && ip[9] == 17 && {
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let udp = &ip[ihl.min(ip.len())..];
            udp.len() >= 12 && {
                let sport = u16::from_be_bytes([udp[0], udp[1]]);
                let dport = u16::from_be_bytes([udp[2], udp[3]]);
                let payload = &udp[8..];
                // WireGuard messages: type 1..=4, then three reserved zero bytes.
                sport == WG_PORT
                    && dport == WG_PORT
                    && (1..=4).contains(&payload[0])
                    && payload[1..4] == [0, 0, 0]
                    && {
                        s.wireguard_bytes += payload.len();
                        true
                    }
            }
        };
        if wg {
            s.wireguard += 1;
        } else {
            s.other
                .push(format!("ethertype {ethertype:#06x}, {} bytes", frame.len()));
        }
    }
    Ok(s)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The payload: 200 KB (204 800 bytes) of the marker repeated, padded.
fn payload() -> Vec<u8> {
    MARKER.iter().copied().cycle().take(200 * 1024).collect()
}

/// Sends `data` from namespace `from` to `to_ip:port` where a server in `to` reads it all;
/// returns what the server received.
fn transfer(from: &TestNetns, to: &TestNetns, to_ip: Ipv4Addr, data: &[u8]) -> Result<Vec<u8>> {
    let listener = to.run_in(|| TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)))?;
    let port = listener.local_addr()?.port();
    let server = std::thread::spawn(move || -> Result<Vec<u8>> {
        let (mut s, _) = listener.accept()?;
        let mut got = Vec::new();
        s.read_to_end(&mut got)?;
        Ok(got)
    });
    let sent = from.run_in(|| -> Result<()> {
        let mut s = TcpStream::connect((to_ip, port)).context("connect across the overlay")?;
        s.write_all(data)?;
        s.shutdown(std::net::Shutdown::Write)?;
        Ok(())
    });
    if let Err(e) = sent {
        // Unblock the server's accept before joining it.
        let _ = to.run_in(|| TcpStream::connect((Ipv4Addr::LOCALHOST, port)));
        let _ = server.join();
        return Err(e);
    }
    server
        .join()
        .map_err(|_| anyhow::anyhow!("server panicked"))?
}

/// The receive buffers (`ss` "rb", bytes: twice what `SO_RCVBUF` was given) of the UDP
/// sockets bound to the WireGuard port in `host`.
fn wg_receive_buffers(host: &TestNetns) -> Result<Vec<usize>> {
    let out = Command::new("ip")
        .args(["netns", "exec", &host.name, "ss", "-Hnuam"])
        .args(["sport", "=", &format!(":{WG_PORT}")])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .split("rb")
        .skip(1)
        .filter_map(|t| {
            t.split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse().ok())
        })
        .collect())
}

fn listens_on_wg_port(host: &TestNetns) -> bool {
    Command::new("ip")
        .args(["netns", "exec", &host.name, "ss", "-Hnuln"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(&format!(":{WG_PORT} ")))
        .unwrap_or(false)
}

#[test]
fn encrypted_overlay_crosses_the_underlay_only_as_wireguard() -> Result<()> {
    if !is_root() {
        eprintln!("skipped: needs root (network namespaces, TUN devices)");
        return Ok(());
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let underlay = TestNetns::new()?;
    underlay.ip(&["link", "add", "ul", "type", "bridge"])?;
    underlay.ip(&["link", "set", "ul", "up"])?;
    let hosts: Vec<TestNetns> = (0..3).map(|_| TestNetns::new()).collect::<Result<_>>()?;
    let containers: Vec<TestNetns> = (0..3).map(|_| TestNetns::new()).collect::<Result<_>>()?;
    for (i, h) in hosts.iter().enumerate() {
        join_underlay(&underlay, h, i as u8 + 1)?;
    }
    let keys: Vec<WgKeyPair> = (0..3).map(|_| WgKeyPair::generate()).collect();
    let threads_before = thread_count();

    // A device per host, started inside the host's namespace (its threads stay there).
    let mut devices = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        let n = i as u8 + 1;
        let key = keys[i].clone();
        let dev = h.block_on(|| async move { WgDevice::start(&wg_config(n), &key).await })?;
        assert_eq!(
            dev.backend(),
            WgBackend::Userspace,
            "this kernel has no module"
        );
        devices.push(dev);
    }
    assert!(
        threads_before < thread_count(),
        "the devices run worker threads"
    );
    for (i, dev) in devices.iter_mut().enumerate() {
        let n = i as u8 + 1;
        let peers: Vec<WgPeer> = [1u8, 2, 3]
            .iter()
            .filter(|&&m| m != n)
            .map(|&m| peer(&keys, m))
            .collect();
        let ops = dev.set_peers(&peers)?;
        assert_eq!(ops.len(), 2, "two peers added: {ops:?}");
        assert!(
            dev.set_peers(&peers)?.is_empty(),
            "a second call changes nothing"
        );
        assert!(
            listens_on_wg_port(&hosts[i]),
            "device listens on UDP {WG_PORT}"
        );
        // boringtun reads more slowly than the kernel delivers: with the default receive
        // buffer a single TCP stream lost a fifth of its datagrams (bench/README.md).
        let buffers = wg_receive_buffers(&hosts[i])?;
        assert!(
            buffers.len() >= 2 && buffers.iter().all(|&b| b >= USERSPACE_UDP_RECEIVE_BUFFER),
            "the IPv4 and IPv6 listen sockets have enlarged receive buffers: {buffers:?}"
        );
        assert!(
            !std::path::Path::new(&format!("/var/run/wireguard/{}.sock", dev.name())).exists(),
            "no UAPI socket file: configuration goes over a private socketpair"
        );
    }

    // Tunnel addresses reach each other (the first ping also makes the handshake).
    for (a, b) in [(0usize, 2u8), (1, 3), (2, 1)] {
        assert!(
            hosts[a].reaches(&tunnel_ip(b).to_string()),
            "host {} -> tunnel {b}",
            a + 1
        );
    }
    let stats = devices[0].stats()?;
    assert_eq!(stats.listen_port, Some(WG_PORT));
    assert_eq!(stats.backend, WgBackend::Userspace);
    let to3 = stats
        .peers
        .iter()
        .find(|p| p.public_key == keys[2].public_key())
        .context("peer 3")?;
    assert!(
        to3.handshake_completed && to3.tx_bytes > 0 && to3.rx_bytes > 0,
        "{to3:?}"
    );
    assert_eq!(to3.allowed_ips, vec![(tunnel_ip(3).into(), 32)]);

    // VXLAN over the tunnel addresses, a container per host.
    for (i, (h, c)) in hosts.iter().zip(&containers).enumerate() {
        overlay(h, c, i as u8 + 1, &[1, 2, 3])?;
    }
    assert!(
        containers[0].reaches(&container_ip(2).to_string()),
        "container 1 -> 2"
    );
    assert!(
        containers[2].reaches(&container_ip(1).to_string()),
        "container 3 -> 1"
    );

    // The capture method can fail: a plain UDP datagram with the marker is seen as such.
    let dir = tempfile::tempdir()?;
    let control = Capture::start(&hosts[1], dir.path().join("control.pcap"))?;
    hosts[0].run_in(|| -> Result<()> {
        let s = std::net::UdpSocket::bind((underlay_ip(1), 0))?;
        s.send_to(MARKER, (underlay_ip(2), 9))?;
        Ok(())
    })?;
    let control = control.finish(&hosts[0])?;
    assert!(
        contains(&control, MARKER),
        "control capture holds the plain marker: {} bytes, {:?}",
        control.len(),
        summarize(&control)
    );
    assert!(
        !summarize(&control)?.other.is_empty(),
        "control capture flags a non-WireGuard packet"
    );

    // 200 KB container 1 -> container 2 while capturing on host 2's underlay link.
    let capture = Capture::start(&hosts[1], dir.path().join("encrypted.pcap"))?;
    let data = payload();
    let got = transfer(&containers[0], &containers[1], container_ip(2), &data)?;
    let pcap = capture.finish(&hosts[0])?;
    assert!(
        got == data,
        "transfer complete and intact ({} of {} bytes)",
        got.len(),
        data.len()
    );
    let summary = summarize(&pcap)?;
    assert!(
        summary.other.is_empty(),
        "non-WireGuard traffic on the underlay: {:?}",
        summary.other
    );
    assert!(
        summary.wireguard_bytes >= data.len(),
        "the transfer crossed inside WireGuard: {summary:?}"
    );
    assert!(
        !contains(&pcap, MARKER),
        "the marker appeared in plain text on the underlay"
    );

    // A removed peer is dropped: host 1 keeps only host 2.
    let ops = devices[0].set_peers(&[peer(&keys, 2)])?;
    assert_eq!(ops, vec![PeerOp::Remove(keys[2].public_key())]);
    let keys_left: Vec<_> = devices[0]
        .stats()?
        .peers
        .iter()
        .map(|p| p.public_key)
        .collect();
    assert_eq!(keys_left, vec![keys[1].public_key()]);
    assert!(
        !hosts[0].ping(&tunnel_ip(3).to_string()),
        "host 3 must be unreachable from host 1"
    );
    assert!(
        hosts[0].reaches(&tunnel_ip(2).to_string()),
        "host 2 still reachable"
    );

    // Teardown leaves no device, route, socket or thread.
    for (i, dev) in devices.drain(..).enumerate() {
        let name = dev.name().to_string();
        let h = &hosts[i];
        h.block_on(|| async move { dev.teardown().await })?;
        assert!(
            h.ip(&["link", "show", &name]).is_err(),
            "link {name} left behind"
        );
        let routes = h.ip(&["route", "show"])?;
        assert!(!routes.contains("10.214.0."), "tunnel route left: {routes}");
        assert!(!listens_on_wg_port(h), "UDP socket left on host {}", i + 1);
    }
    // At most as many as before (under libtest the other test's thread may have ended).
    assert!(
        thread_count() <= threads_before,
        "every device thread joined"
    );
    assert!(!std::path::Path::new("/var/run/wireguard/bt1wg0.sock").exists());
    Ok(())
}

#[test]
fn start_refuses_bad_names_and_a_missing_kernel_module() -> Result<()> {
    if !is_root() {
        eprintln!("skipped: needs root");
        return Ok(());
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let host = TestNetns::new()?;
    let key = WgKeyPair::generate();
    let mut bad = wg_config(1);
    bad.name = "a-name-longer-than-15".into();
    let r = host.block_on(|| async { WgDevice::start(&bad, &key).await });
    assert!(matches!(r, Err(WgError::InvalidName { .. })), "{r:?}");
    if !kernel_module_present() {
        let mut kernel = wg_config(1);
        kernel.backend = WgBackend::Kernel;
        let r = host.block_on(|| async { WgDevice::start(&kernel, &key).await });
        // Either the module cannot be loaded at all, or the kernel autoloaded it.
        match r {
            Err(WgError::KernelModuleMissing) => {
                assert!(
                    host.ip(&["link", "show", "bt1wg0"]).is_err(),
                    "nothing left"
                );
            }
            Ok(dev) => host.block_on(|| async move { dev.teardown().await })?,
            Err(e) => return Err(e.into()),
        }
    }
    // The listen port in use is reported, and nothing is left behind.
    let sock = host.run_in(|| std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, WG_PORT)))?;
    let mut userspace = wg_config(1);
    userspace.backend = WgBackend::Userspace;
    let r = host.block_on(|| async { WgDevice::start(&userspace, &key).await });
    assert!(matches!(r, Err(WgError::UapiErrno { .. })), "{r:?}");
    assert!(
        host.ip(&["link", "show", "bt1wg0"]).is_err(),
        "no link left after a failed start"
    );
    drop(sock);
    host.ip(&["link", "add", "bt1wg0", "type", "bridge"])?;
    let dev = host.block_on(|| async { WgDevice::start(&userspace, &key).await })?;
    assert_eq!(dev.stats()?.listen_port, Some(WG_PORT));
    host.block_on(|| async move { dev.teardown().await })?;
    assert!(host.ip(&["link", "show", "bt1wg0"]).is_err());
    Ok(())
}
