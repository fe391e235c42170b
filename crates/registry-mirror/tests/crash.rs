//! A pull killed mid-download (SIGKILL of a child process), then started again: the new
//! pull succeeds and the store holds no corrupt or partial blob.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_registry_mirror::{ClientConfig, Images, PullOptions, Reference};
use berth_testkit::Fixture;
use common::*;

const CHILD_ROOT: &str = "BERTH_CRASH_TEST_CHILD_ROOT";
const CHILD_REF: &str = "BERTH_CRASH_TEST_CHILD_REF";

/// Not a test of its own: the body of the child process that
/// `killed_pull_then_pulled_again_leaves_no_corrupt_blob` starts and kills.
#[test]
#[ignore = "helper process for killed_pull_then_pulled_again_leaves_no_corrupt_blob"]
fn child_pull_helper() {
    let root = PathBuf::from(std::env::var_os(CHILD_ROOT).expect("run by the crash test"));
    let reference = std::env::var(CHILD_REF).expect("run by the crash test");
    let images = Images::open(&root.join("root"), ClientConfig::default()).unwrap();
    let sink = DirSink::new(root.join("snapshots"));
    let r = Reference::parse(&reference).unwrap();
    rt().block_on(
        images
            .puller
            .pull(&r, &PullOptions::default(), Some(sink), &|_| {}),
    )
    .unwrap();
}

/// A TCP proxy that slows responses to about 8 MB/s so a 50 MiB pull takes seconds.
struct SlowProxy {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl SlowProxy {
    fn start(upstream: SocketAddr) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let Ok((client, _)) = l.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                client.set_nonblocking(false).unwrap();
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                let (mut c_r, mut s_w) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c_r, &mut s_w);
                });
                let (mut s_r, mut c_w) = (server, client);
                let s2 = s.clone();
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 * 1024];
                    while !s2.load(Ordering::SeqCst) {
                        let n = match s_r.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if c_w.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(8));
                    }
                    let _ = c_w.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        SlowProxy { addr, stop }
    }
}

impl Drop for SlowProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Kills (by PID) and reaps the child if the test ends early.
struct ChildGuard(Child);

impl ChildGuard {
    fn kill(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            // SAFETY: kill(2) on the PID of our own child, not yet reaped, so the PID
            // cannot have been reused by another process.
            unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGKILL) };
        }
        let _ = self.0.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

fn partials(ingest: &Path) -> Vec<(PathBuf, u64)> {
    let Ok(rd) = std::fs::read_dir(ingest) else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().and_then(|x| x.to_str()) == Some("part"))
        .map(|p| {
            let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            (p, len)
        })
        .collect()
}

#[test]
fn killed_pull_then_pulled_again_leaves_no_corrupt_blob() {
    let fx = Fixture::from_env().expect("fixture registry (run via berth-fixture)");
    let proxy = SlowProxy::start(fx.registry.parse().unwrap());
    let dir = tempfile::Builder::new()
        .prefix("berth-crash-test-")
        .tempdir()
        .unwrap();
    let mut child = ChildGuard(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "child_pull_helper",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ROOT, dir.path())
            .env(CHILD_REF, format!("{}/big:latest", proxy.addr))
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let ingest = dir.path().join("root/blobs/ingest");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            panic!("child pull ended ({status}) before it could be killed mid-download");
        }
        if partials(&ingest).iter().any(|(_, len)| *len >= 4 << 20) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "child never got 4 MiB into a layer"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill();
    drop(proxy);
    let left = partials(&ingest);
    assert!(
        !left.is_empty(),
        "the kill left a partial write behind (the case under test)"
    );
    let big = fx.image("big:latest");
    let big_layer: berth_registry_mirror::Digest = big.layers[1].digest.parse().unwrap();

    // Start again: the store drops the abandoned partial write and holds no such blob.
    let images = Images::open(&dir.path().join("root"), ClientConfig::default()).unwrap();
    let blobs = images.store.blobs();
    assert!(
        blobs.partial_writes().unwrap().is_empty(),
        "abandoned partial removed on open"
    );
    assert!(
        !blobs.contains(&big_layer),
        "no blob claims the digest it did not finish"
    );
    assert!(blobs.fsck().unwrap().is_empty());

    // Pull again, directly: succeeds, every stored blob verifies.
    let sink = DirSink::new(dir.path().join("snapshots"));
    let r = Reference::parse(&fx.reference("big:latest")).unwrap();
    let out = rt()
        .block_on(
            images
                .puller
                .pull(&r, &PullOptions::default(), Some(sink.clone()), &|_| {}),
        )
        .unwrap();
    assert_eq!(out.image_id.to_string(), big.config_digest);
    assert!(blobs.contains(&big_layer));
    assert!(blobs.fsck().unwrap().is_empty());
    let record = images.store.resolve(&fx.reference("big:latest")).unwrap();
    let top = sink.layer_dir(record.chain_ids()[1].hex());
    assert_eq!(
        std::fs::metadata(top.join("data/random.bin"))
            .unwrap()
            .len(),
        berth_testkit::image::BIG_LAYER_BYTES as u64
    );
}
