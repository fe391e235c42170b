//! Root test support: throwaway network namespaces (removed on drop, even when a test
//! fails), running async code inside one, TCP echo-of-peer servers inside a namespace, and
//! ping through busybox.
//!
//! The whole "host" of a test is itself a fresh namespace, so the driver's bridges, veths,
//! sysctls and nftables table never touch the machine's real network namespace.

#![allow(dead_code)]

use std::fs::File;
use std::future::Future;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use nix::sched::CloneFlags;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Fails the test unless it runs as root.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests create network namespaces and need root"
    );
}

/// A named network namespace (`ip netns add berthtest-<pid>-<n>`), deleted on drop.
#[derive(Debug)]
pub struct TestNetns {
    pub name: String,
}

impl TestNetns {
    pub fn new() -> Result<Self> {
        let name = format!(
            "berthtest-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        run("ip", &["netns", "add", &name])?;
        let ns = TestNetns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// `ip -n <name> ...`
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Runs a command inside the namespace (network namespace only) and returns whether
    /// it exited 0.
    pub fn succeeds(&self, cmd: &[&str]) -> bool {
        Command::new("nsenter")
            .arg(format!("--net={}", self.path().display()))
            .args(cmd)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    /// One busybox ping (1 s timeout). For "cannot reach" assertions.
    pub fn ping(&self, ip: &str) -> bool {
        self.succeeds(&["/bin/busybox", "ping", "-c", "1", "-W", "1", ip])
    }

    /// Up to three pings, for "can reach" assertions (the first packet may wait for ARP
    /// on a loaded machine).
    pub fn reaches(&self, ip: &str) -> bool {
        (0..3).any(|_| self.ping(ip))
    }

    /// Runs `f` on a thread inside this namespace, in a current-thread tokio runtime, so
    /// everything it does (netlink sockets, nft children, sysctls, binds) happens here.
    pub fn block_on<F, Fut, T>(&self, f: F) -> T
    where
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = T>,
        T: Send,
    {
        let path = self.path();
        std::thread::scope(|s| {
            s.spawn(move || {
                enter(&path).expect("enter test netns");
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime")
                    .block_on(f())
            })
            .join()
            .expect("test thread panicked")
        })
    }

    /// Runs a blocking closure on a thread inside this namespace.
    pub fn run_in<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = self.path();
        std::thread::scope(|s| {
            s.spawn(move || {
                enter(&path).expect("enter netns");
                f()
            })
            .join()
            .expect("thread panicked")
        })
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Moves the calling thread into the namespace at `path`.
pub fn enter(path: &std::path::Path) -> Result<()> {
    let f = File::open(path).with_context(|| format!("open {}", path.display()))?;
    nix::sched::setns(&f, CloneFlags::CLONE_NEWNET).context("setns")?;
    Ok(())
}

pub fn run(cmd: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .with_context(|| format!("spawn {cmd}"))?;
    if !out.status.success() {
        bail!(
            "{cmd} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A TCP server inside a namespace that answers every connection with the peer address it
/// sees, then closes it. Stops on drop.
pub struct PeerEchoServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl PeerEchoServer {
    pub fn start(ns: &TestNetns, port: u16) -> Result<Self> {
        let path = ns.path();
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            let listener = match enter(&path)
                .and_then(|_| TcpListener::bind(("0.0.0.0", port)).context("bind"))
            {
                Ok(l) => l,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            listener.set_nonblocking(true).expect("nonblocking");
            let _ = tx.send(Ok(()));
            while !stop2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut s, peer)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = s.write_all(peer.ip().to_string().as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        rx.recv().context("server thread died")??;
        Ok(PeerEchoServer {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for PeerEchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Connects (from the calling thread's namespace) and returns what the server said: the
/// peer address it saw.
pub fn peer_seen_by(addr: SocketAddr) -> Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
        .with_context(|| format!("connect {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// Runs a command inside the namespace without blocking the async runtime (for tests whose
/// servers run on the same current-thread runtime). Returns (success, stdout).
pub async fn output_in(ns: &TestNetns, cmd: &[&str]) -> (bool, String) {
    match tokio::process::Command::new("nsenter")
        .arg(format!("--net={}", ns.path().display()))
        .args(cmd)
        .output()
        .await
    {
        Ok(o) => (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        ),
        Err(_) => (false, String::new()),
    }
}

/// A UDP server inside a namespace that answers every datagram with the sender's address.
/// Stops on drop.
pub struct UdpPeerEchoServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpPeerEchoServer {
    pub fn start(ns: &TestNetns, port: u16) -> Result<Self> {
        let path = ns.path();
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            let socket = match enter(&path)
                .and_then(|_| std::net::UdpSocket::bind(("0.0.0.0", port)).context("bind"))
            {
                Ok(s) => s,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            socket
                .set_read_timeout(Some(Duration::from_millis(20)))
                .expect("timeout");
            let _ = tx.send(Ok(()));
            let mut buf = [0u8; 64];
            while !stop2.load(Ordering::SeqCst) {
                if let Ok((_, peer)) = socket.recv_from(&mut buf) {
                    let _ = socket.send_to(peer.ip().to_string().as_bytes(), peer);
                }
            }
        });
        rx.recv().context("server thread died")??;
        Ok(UdpPeerEchoServer {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for UdpPeerEchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sends one datagram (from the calling thread's namespace) and returns the reply: the
/// sender address the server saw.
pub fn udp_peer_seen_by(addr: SocketAddr) -> Result<String> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0")?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    s.send_to(b"?", addr)?;
    let mut buf = [0u8; 64];
    let (n, _) = s
        .recv_from(&mut buf)
        .with_context(|| format!("no reply from {addr}"))?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}
