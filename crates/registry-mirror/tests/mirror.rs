//! The pull-through mirror against real parts: Debian's docker-registry (the fixture) as
//! upstream behind a counting HTTP proxy in this test, the mirror served on a loopback
//! port, skopeo and berth's own puller as clients. Run through `berth-fixture run -- cargo
//! test`.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use berth_registry_mirror::mirror::{BlobReferences, NoLocalImages};
use berth_registry_mirror::{
    BlobStore, ClientConfig, Credentials, Digest, Images, LayerSink, Mirror, MirrorConfig,
    MirrorEndpoint, PullOptions, Reference, RegistryClient, UpstreamConfig,
};
use berth_testkit::Fixture;
use common::*;
use futures::StreamExt;
use sha2::{Digest as _, Sha256};

fn fixture() -> Fixture {
    Fixture::from_env().expect("fixture registry (run via berth-fixture)")
}

/// The alias under which the path-prefix form reaches the upstream: a docker reference
/// cannot carry `host:port` as a path component.
const ALIAS: &str = "fixture.test";

// ---------------------------------------------------------------------------------------
// A counting proxy: forwards each request to the upstream (one request per connection)
// and records the request line and the bytes it relayed back. Stopping it closes the port.

struct CountingProxy {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
    bytes: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl CountingProxy {
    /// `delay`: pause after each 64 KiB relayed (slows a download so clients overlap).
    fn start(upstream: SocketAddr, delay: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let bytes = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, b, s) = (requests.clone(), bytes.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (r, b) = (r.clone(), b.clone());
                        std::thread::spawn(move || {
                            let _ = relay(conn, upstream, &r, &b, delay);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        CountingProxy {
            addr,
            requests,
            bytes,
            stop,
            thread: Some(thread),
        }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    /// GETs of blobs (not HEADs, not manifests).
    fn blob_gets(&self) -> Vec<String> {
        self.requests()
            .into_iter()
            .filter(|r| r.starts_with("GET ") && r.contains("/blobs/sha256:"))
            .collect()
    }

    fn blob_gets_of(&self, digest: &str) -> usize {
        self.blob_gets()
            .iter()
            .filter(|r| r.contains(digest))
            .count()
    }

    fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::SeqCst)
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.stop();
    }
}

fn relay(
    client: TcpStream,
    upstream: SocketAddr,
    requests: &Mutex<Vec<String>>,
    bytes: &AtomicU64,
    delay: Duration,
) -> std::io::Result<()> {
    client.set_nonblocking(false)?;
    let mut first = [0u8; 1];
    if client.peek(&mut first)? == 0 || first[0] == 0x16 {
        // A TLS ClientHello (the client probes HTTPS first): hang up as an HTTP server
        // would, rather than wait for a request line that never comes.
        return Ok(());
    }
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = String::new();
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let request_line = line.trim_end().to_string();
    let mut target = line.split_whitespace();
    let (method, path) = (
        target.next().unwrap_or("").to_string(),
        target.next().unwrap_or("").to_string(),
    );
    requests.lock().unwrap().push(format!("{method} {path}"));
    head.push_str(&request_line);
    head.push_str("\r\n");
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
        if !h.to_ascii_lowercase().starts_with("connection:") {
            head.push_str(&h);
        }
    }
    head.push_str("Connection: close\r\n\r\n");
    let mut up = TcpStream::connect(upstream)?;
    up.write_all(head.as_bytes())?;
    let mut client = client;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = up.read(&mut buf)?;
        if n == 0 {
            break;
        }
        bytes.fetch_add(n as u64, Ordering::SeqCst);
        client.write_all(&buf[..n])?;
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
    }
    client.shutdown(std::net::Shutdown::Both)
}

// ---------------------------------------------------------------------------------------
// The mirror under test, served on a loopback port from its own runtime.

struct Served {
    rt: tokio::runtime::Runtime,
    mirror: Mirror,
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

struct Setup {
    state_dir: PathBuf,
    blobs: BlobStore,
    upstream: String,
    tag_ttl: Duration,
    cap: Option<u64>,
    references: Arc<dyn BlobReferences>,
    /// Credentials for the upstream (by its own name).
    credentials: Credentials,
}

impl Served {
    fn start(s: &Setup) -> Self {
        Self::start_on(s, TcpListener::bind("127.0.0.1:0").unwrap())
    }

    fn start_on(s: &Setup, listener: TcpListener) -> Self {
        let rt = rt();
        let _enter = rt.enter();
        let mut config = MirrorConfig::new(&s.state_dir);
        config.default_upstream = Some(s.upstream.clone());
        config.tag_ttl = s.tag_ttl;
        config.size_cap_bytes = s.cap;
        config.upstreams.insert(
            ALIAS.into(),
            UpstreamConfig {
                endpoint: Some(s.upstream.clone()),
                credentials: s.credentials.clone(),
            },
        );
        config.upstreams.insert(
            s.upstream.clone(),
            UpstreamConfig {
                endpoint: None,
                credentials: s.credentials.clone(),
            },
        );
        let client = RegistryClient::new(ClientConfig::default()).unwrap();
        let mirror = Mirror::new(config, s.blobs.clone(), client, s.references.clone()).unwrap();
        listener.set_nonblocking(true).unwrap();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = rt.spawn(mirror.clone().serve(listener, async {
            let _ = rx.await;
        }));
        Served {
            rt,
            mirror,
            addr,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Stops serving and waits for the server to persist its state.
    fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            self.rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(10), t).await })
                .expect("mirror stops")
                .unwrap()
                .unwrap();
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn metric(&self, line_prefix: &str) -> u64 {
        let text = self.mirror.metrics().render();
        text.lines()
            .find_map(|l| l.strip_prefix(line_prefix)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no metric {line_prefix} in\n{text}"))
    }
}

fn setup(dir: &Path, upstream: &str) -> Setup {
    Setup {
        state_dir: dir.join("mirror"),
        blobs: BlobStore::open(dir.join("blobs")).unwrap(),
        upstream: upstream.to_string(),
        tag_ttl: Duration::from_secs(300),
        cap: None,
        references: Arc::new(NoLocalImages),
        credentials: Credentials::Anonymous,
    }
}

fn tempdir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(prefix).tempdir().unwrap()
}

// ---------------------------------------------------------------------------------------
// Clients.

fn skopeo(args: &[&str]) -> Output {
    Command::new("timeout")
        .arg("120")
        .arg("skopeo")
        .args(args)
        .output()
        .expect("run skopeo")
}

fn skopeo_ok(args: &[&str]) -> String {
    let out = skopeo(args);
    assert!(
        out.status.success(),
        "skopeo {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn inspect_digest(image: &str) -> String {
    let out = skopeo_ok(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{image}"),
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["Digest"].as_str().unwrap().to_string()
}

fn copy_to_dir(image: &str, dest: &Path) -> Output {
    skopeo(&[
        "copy",
        "-q",
        "--src-tls-verify=false",
        &format!("docker://{image}"),
        &format!("dir:{}", dest.display()),
    ])
}

/// Checks every blob skopeo wrote to a `dir:` destination hashes to its name; returns the
/// digests.
fn verified_dir_blobs(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.len() == 64 {
            let data = std::fs::read(&p).unwrap();
            assert_eq!(sha256(&data), format!("sha256:{name}"), "{}", p.display());
            out.push(format!("sha256:{name}"));
        }
    }
    out.sort();
    out
}

/// A berth node's image service pulling through `mirrors`.
fn node(dir: &Path, mirrors: Vec<MirrorEndpoint>) -> (Images, Arc<DirSink>) {
    let images = Images::open(
        &dir.join("root"),
        ClientConfig {
            mirrors,
            ..ClientConfig::default()
        },
    )
    .unwrap();
    (images, DirSink::new(dir.join("snapshots")))
}

fn berth_pull(
    rt: &tokio::runtime::Runtime,
    images: &Images,
    sink: &Arc<DirSink>,
    reference: &str,
) -> berth_registry_mirror::PullOutcome {
    let r = Reference::parse(reference).unwrap();
    let sink = Some(sink.clone() as Arc<dyn LayerSink>);
    rt.block_on(
        images
            .puller
            .pull(&r, &PullOptions::default(), sink, &|_| {}),
    )
    .unwrap_or_else(|e| panic!("pull {reference}: {e}"))
}

async fn get(url: &str) -> reqwest::Response {
    reqwest::Client::new().get(url).send().await.unwrap()
}

// ---------------------------------------------------------------------------------------

#[test]
fn skopeo_and_berth_pull_through_every_form_and_a_fresh_pull_makes_no_upstream_blob_request() {
    let fx = fixture();
    let proxy = CountingProxy::start(fx.registry.parse().unwrap(), Duration::ZERO);
    let up = proxy.addr.to_string();
    let dir = tempdir("berth-mirror-forms-");
    let served = Served::start(&setup(dir.path(), &up));
    let m = served.addr;

    // Path-prefix form (plain clients) and the default upstream (dockerd's form).
    assert_eq!(
        inspect_digest(&format!("{m}/{ALIAS}/busybox:latest")),
        fx.image("busybox:latest").manifest_digest
    );
    assert_eq!(
        inspect_digest(&format!("{m}/web:latest")),
        fx.image("web:latest").manifest_digest
    );
    let d1 = dir.path().join("copy1");
    let out = copy_to_dir(&format!("{m}/{ALIAS}/big:latest"), &d1);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let big = fx.image("big:latest");
    let blobs = verified_dir_blobs(&d1);
    for l in &big.layers {
        assert!(
            blobs.contains(&l.digest),
            "{} missing from the copy",
            l.digest
        );
    }

    // containerd's form: ?ns=<upstream>, raw, then berth's puller using it as its mirror.
    served.rt.block_on(async {
        let resp = get(&format!("{}/v2/big/manifests/latest?ns={up}", served.url())).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()["docker-content-digest"].to_str().unwrap(),
            big.manifest_digest
        );
        // Range on a cached blob.
        let layer = &big.layers[1].digest;
        let resp = reqwest::Client::new()
            .get(format!("{}/v2/big/blobs/{layer}?ns={up}", served.url()))
            .header("Range", "bytes=10-19")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 206);
        assert_eq!(
            resp.headers()["content-range"].to_str().unwrap(),
            format!("bytes 10-19/{}", big.layers[1].size)
        );
        assert_eq!(resp.bytes().await.unwrap().len(), 10);
        // Tags (upstream's list) and the catalog (what the mirror has cached tags of).
        let resp = get(&format!("{}/v2/{ALIAS}/busybox/tags/list", served.url())).await;
        assert_eq!(resp.status(), 200);
        let v: serde_json::Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
        assert!(
            v["tags"].as_array().unwrap().contains(&"v2s2".into()),
            "{v}"
        );
        let resp = get(&format!("{}/v2/_catalog", served.url())).await;
        let v: serde_json::Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
        let repos = v["repositories"].as_array().unwrap();
        for r in [
            format!("{ALIAS}/busybox"),
            format!("{up}/big"),
            format!("{up}/web"),
        ] {
            assert!(repos.contains(&r.clone().into()), "{r} not in {v}");
        }
        // Writes are refused: the mirror is read-only.
        let resp = reqwest::Client::new()
            .post(format!("{}/v2/busybox/blobs/uploads/", served.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 405);
    });
    let node_a = tempdir("berth-mirror-node-a-");
    let remote = vec![MirrorEndpoint {
        url: served.url(),
        shares_blob_store: false,
    }];
    let (images, sink) = node(node_a.path(), remote.clone());
    let out = berth_pull(&served.rt, &images, &sink, &format!("{up}/big:latest"));
    assert_eq!(out.image_id.to_string(), big.config_digest);
    assert_eq!(out.digest.to_string(), big.manifest_digest);

    let blob_gets = proxy.blob_gets();
    assert!(!blob_gets.is_empty());
    for g in &blob_gets {
        assert_eq!(
            blob_gets.iter().filter(|x| *x == g).count(),
            1,
            "each blob fetched upstream once: {blob_gets:#?}"
        );
    }

    // Fresh destinations and a fresh node data root: everything comes from the mirror.
    let out = copy_to_dir(
        &format!("{m}/{ALIAS}/big:latest"),
        &dir.path().join("copy2"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = copy_to_dir(&format!("{m}/big:latest"), &dir.path().join("copy3"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(verified_dir_blobs(&dir.path().join("copy3")), blobs);
    let node_b = tempdir("berth-mirror-node-b-");
    let (images_b, sink_b) = node(node_b.path(), remote);
    let out = berth_pull(&served.rt, &images_b, &sink_b, &format!("{up}/big:latest"));
    assert_eq!(out.image_id.to_string(), big.config_digest);
    assert!(images_b.store.blobs().fsck().unwrap().is_empty());
    assert_eq!(
        proxy.blob_gets(),
        blob_gets,
        "the second round made upstream blob requests"
    );
    assert!(served.metric("berth_mirror_hits_total{kind=\"blob\"}") >= 6);
    assert!(served.metric("berth_mirror_served_bytes_total") > 3 * big.layers[1].size);
    served.stop();
}

#[test]
fn berth_pull_falls_back_to_the_registry_when_the_mirror_is_unreachable() {
    let fx = fixture();
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = tempdir("berth-mirror-fallback-");
    let (images, sink) = node(
        dir.path(),
        vec![MirrorEndpoint {
            url: format!("http://{dead}"),
            shares_blob_store: false,
        }],
    );
    let rt = rt();
    let out = berth_pull(&rt, &images, &sink, &fx.reference("busybox:latest"));
    assert_eq!(
        out.digest.to_string(),
        fx.image("busybox:latest").manifest_digest
    );
}

#[test]
fn ten_concurrent_cold_pulls_of_big_make_one_upstream_fetch() {
    let fx = fixture();
    // 64 KiB per 2 ms: the 50 MiB download takes about 1.6 s, so the clients overlap it.
    let proxy = CountingProxy::start(fx.registry.parse().unwrap(), Duration::from_millis(2));
    let dir = tempdir("berth-mirror-flight-");
    let served = Served::start(&setup(dir.path(), &proxy.addr.to_string()));
    let big = fx.image("big:latest");
    let layer = big.layers[1].digest.clone();
    let m = served.addr;
    let dirs: Vec<PathBuf> = (0..10).map(|i| dir.path().join(format!("c{i}"))).collect();
    let children: Vec<_> = dirs
        .iter()
        .map(|d| {
            Command::new("timeout")
                .arg("120")
                .arg("skopeo")
                .args(["copy", "-q", "--src-tls-verify=false"])
                .arg(format!("docker://{m}/big:latest"))
                .arg(format!("dir:{}", d.display()))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for d in &dirs {
        assert!(verified_dir_blobs(d).contains(&layer), "{}", d.display());
    }
    assert_eq!(proxy.blob_gets_of(&layer), 1, "{:#?}", proxy.blob_gets());
    assert_eq!(served.metric("berth_mirror_upstream_blob_fetches_total"), 3);
    // The clients joined the download rather than each waiting for it to end.
    assert!(
        served.metric("berth_mirror_misses_total{kind=\"blob\"}") >= 2,
        "{}",
        served.mirror.metrics().render()
    );
    // Upstream sent the big blob once.
    assert!(proxy.bytes() < big.layers[1].size * 3 / 2);

    // And ten raw clients at once, cold, on a fresh store: each hashes what it got.
    let dir2 = tempdir("berth-mirror-flight2-");
    let served2 = Served::start(&setup(dir2.path(), &proxy.addr.to_string()));
    let before = proxy.blob_gets_of(&layer);
    let url = format!("{}/v2/big/blobs/{layer}", served2.url());
    let digests: Vec<String> = served2.rt.block_on(async {
        let jobs = (0..10).map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let resp = get(&url).await;
                assert_eq!(resp.status(), 200);
                let mut h = Sha256::new();
                let mut s = resp.bytes_stream();
                while let Some(c) = s.next().await {
                    h.update(c.unwrap());
                }
                format!("sha256:{}", hex::encode(h.finalize()))
            })
        });
        futures::future::join_all(jobs)
            .await
            .into_iter()
            .map(|r| r.unwrap())
            .collect()
    });
    assert!(digests.iter().all(|d| *d == layer), "{digests:?}");
    assert_eq!(proxy.blob_gets_of(&layer), before + 1);
    assert_eq!(
        served2.metric("berth_mirror_misses_total{kind=\"blob\"}"),
        10
    );
    served2.stop();
    served.stop();
}

#[test]
fn upstream_down_serves_the_last_known_tag_even_after_a_restart_and_unseen_tags_fail_clearly() {
    let fx = fixture();
    let mut proxy = CountingProxy::start(fx.registry.parse().unwrap(), Duration::ZERO);
    let dir = tempdir("berth-mirror-stale-");
    let mut s = setup(dir.path(), &proxy.addr.to_string());
    s.tag_ttl = Duration::ZERO; // every tag request revalidates upstream
    let served = Served::start(&s);
    let m = served.addr;
    let out = copy_to_dir(&format!("{m}/busybox:latest"), &dir.path().join("warm"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    proxy.stop();
    let out = copy_to_dir(&format!("{m}/busybox:latest"), &dir.path().join("again"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    verified_dir_blobs(&dir.path().join("again"));
    assert!(served.metric("berth_mirror_stale_served_total") >= 1);

    let out = copy_to_dir(&format!("{m}/web:latest"), &dir.path().join("never"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("manifest unknown"), "{err}");
    served.rt.block_on(async {
        let resp = get(&format!("{}/v2/web/manifests/latest", served.url())).await;
        assert_eq!(resp.status(), 404);
        let v: serde_json::Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
        assert_eq!(v["errors"][0]["code"], "MANIFEST_UNKNOWN");
        let msg = v["errors"][0]["message"].as_str().unwrap();
        assert!(
            msg.contains("never cached") && msg.contains("web:latest"),
            "{msg}"
        );
    });
    served.stop();

    // A restarted mirror still knows the tag (persisted) and still has no upstream.
    let served = Served::start(&s);
    let out = copy_to_dir(
        &format!("{}/busybox:latest", served.addr),
        &dir.path().join("after-restart"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let blobs = verified_dir_blobs(&dir.path().join("after-restart"));
    assert!(blobs.contains(&fx.image("busybox:latest").layers[0].digest));
    served.stop();
}

#[test]
fn a_corrupted_upstream_blob_fails_every_client_and_caches_nothing() {
    let fake = FakeRegistry::start(FakeAuth::None);
    // Incompressible content, so the layer is large enough to stream before it fails.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let noise: Vec<u8> = (0..1_000_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let tar = raw_tar(&[("noise.bin", tar::EntryType::Regular, None, &noise)]);
    let img = FakeImage::from_layer_tar(&tar);
    let mut bad = img.layer.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff; // same length, wrong content
    fake.add("evil", "latest", &img, Some(bad));
    let layer = Digest::parse(&sha256(&img.layer)).unwrap();

    let dir = tempdir("berth-mirror-corrupt-");
    let s = setup(dir.path(), &fake.addr.to_string());
    let served = Served::start(&s);
    let out = copy_to_dir(
        &format!("{}/evil:latest", served.addr),
        &dir.path().join("c"),
    );
    assert!(!out.status.success(), "skopeo accepted a corrupted layer");

    // Raw clients: the body ends in an error before the last byte.
    served.rt.block_on(async {
        for _ in 0..2 {
            let url = format!("{}/v2/evil/blobs/{layer}", served.url());
            // A small blob may fail before the response head is even sent.
            let resp = match reqwest::Client::new().get(&url).send().await {
                Ok(r) => r,
                Err(_) => continue,
            };
            if resp.status() != 200 {
                assert!(resp.status().is_server_error(), "{}", resp.status());
                continue;
            }
            let mut s = resp.bytes_stream();
            let mut got = 0usize;
            let mut failed = false;
            while let Some(c) = s.next().await {
                match c {
                    Ok(c) => got += c.len(),
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
            assert!(failed, "body completed ({got} bytes) for a corrupted blob");
            assert!(got < img.layer.len());
        }
    });
    assert!(!s.blobs.contains(&layer));
    assert!(s.blobs.partial_writes().unwrap().is_empty());
    assert!(!s.blobs.list().unwrap().contains(&layer));
    // Metrics agree: every blob attempt failed upstream, none was a hit.
    let fetches = served.metric("berth_mirror_upstream_blob_fetches_total");
    let failures = served.metric("berth_mirror_upstream_blob_failures_total");
    assert!(failures >= 3, "{}", served.mirror.metrics().render());
    // Only the (good) config blob may have been fetched without failing.
    assert!(
        fetches - failures <= 1,
        "{}",
        served.mirror.metrics().render()
    );
    assert_eq!(served.metric("berth_mirror_hits_total{kind=\"blob\"}"), 0);
    let layer_gets = fake
        .requests()
        .iter()
        .filter(|r| r.starts_with("GET") && r.contains(&layer.to_string()))
        .count();
    assert_eq!(layer_gets as u64, failures);
    served.stop();
}

#[test]
fn a_small_size_cap_evicts_lru_blobs_but_never_ones_in_use_or_referenced() {
    let fx = fixture();
    let proxy = CountingProxy::start(fx.registry.parse().unwrap(), Duration::ZERO);
    let up = proxy.addr.to_string();
    let dir = tempdir("berth-mirror-cap-");
    let busybox = fx.image("busybox:latest");
    let big = fx.image("big:latest");
    // A node as berthd sets it up: the mirror's port first, then the image service that
    // pulls through it, then the mirror over the same store and image metadata.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let own = format!("http://{}", listener.local_addr().unwrap());
    let (images, sink) = node(
        dir.path(),
        vec![MirrorEndpoint {
            url: own,
            shares_blob_store: true,
        }],
    );
    let s = Setup {
        state_dir: dir.path().join("root/mirror"),
        blobs: images.store.blobs().clone(),
        upstream: up.clone(),
        tag_ttl: Duration::from_secs(300),
        // Room for busybox (about 1 MiB) but not for big's 50 MiB layer.
        cap: Some(3 << 20),
        references: images.store.clone(),
        credentials: Credentials::Anonymous,
    };
    let served = Served::start_on(&s, listener);

    // The node pulls busybox through its own mirror: fetched upstream once, by the
    // mirror, stored once (the puller only unpacks the stream).
    let out = berth_pull(&served.rt, &images, &sink, &format!("{up}/busybox:latest"));
    assert_eq!(out.image_id.to_string(), busybox.config_digest);
    assert_eq!(out.blobs_fetched, 2);
    assert_eq!(proxy.blob_gets().len(), 2, "{:#?}", proxy.blob_gets());
    assert_eq!(served.metric("berth_mirror_upstream_blob_fetches_total"), 2);
    let record = images
        .store
        .resolve(&format!("{up}/busybox:latest"))
        .unwrap();
    assert!(sink
        .layer_dir(record.chain_ids()[0].hex())
        .join("bin/busybox")
        .exists());

    // A client copies big through the mirror: correct content, then evicted (the cap).
    let out = copy_to_dir(
        &format!("{}/big:latest", served.addr),
        &dir.path().join("big1"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let big_layer = Digest::parse(&big.layers[1].digest).unwrap();
    assert!(verified_dir_blobs(&dir.path().join("big1")).contains(&big.layers[1].digest));
    let store = images.store.blobs().clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    while store.contains(&big_layer) {
        assert!(Instant::now() < deadline, "big layer never evicted");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(served.metric("berth_mirror_evicted_blobs_total") >= 1);
    // The image in use keeps every blob; the store is consistent.
    for d in [
        &busybox.config_digest,
        &busybox.manifest_digest,
        &busybox.layers[0].digest,
    ] {
        assert!(store.contains(&Digest::parse(d).unwrap()), "{d} evicted");
    }
    assert!(store.fsck().unwrap().is_empty());
    assert!(store.partial_writes().unwrap().is_empty());
    let out = berth_pull(&served.rt, &images, &sink, &format!("{up}/busybox:latest"));
    assert_eq!(out.blobs_fetched, 0);

    // A blob being served is not evicted, even far above the cap.
    let url = format!("{}/v2/big/blobs/{big_layer}", served.url());
    let mirror = served.mirror.clone();
    let store2 = store.clone();
    let layer2 = big_layer.clone();
    let digest = served.rt.block_on(async move {
        let resp = get(&url).await;
        let mut body = resp.bytes_stream();
        let mut h = Sha256::new();
        h.update(body.next().await.unwrap().unwrap());
        // Wait for the download to finish and commit, then try to evict.
        while !store2.contains(&layer2) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let report = loop {
            let m = mirror.clone();
            // Busy: the background evictor runs a pass right now.
            match tokio::task::spawn_blocking(move || m.evict())
                .await
                .unwrap()
            {
                Err(berth_registry_mirror::Error::Busy { .. }) => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                r => break r.unwrap(),
            }
        };
        assert!(!report.removed.contains(&layer2), "evicted while served");
        assert!(store2.contains(&layer2));
        while let Some(c) = body.next().await {
            h.update(c.unwrap());
        }
        format!("sha256:{}", hex::encode(h.finalize()))
    });
    assert_eq!(digest, big.layers[1].digest);
    // Once the body is gone, it is evictable again.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        served.mirror.evict().ok();
        if !store.contains(&big_layer) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "big layer kept after serving ended"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(store.contains(&Digest::parse(&busybox.layers[0].digest).unwrap()));
    served.stop();
}

#[test]
fn a_restarted_mirror_keeps_its_lru_order() {
    let fx = fixture();
    let dir = tempdir("berth-mirror-lru-");
    let mut s = setup(dir.path(), &fx.registry);
    let web_layer = fx.image("web:latest").layers[1].digest.clone();
    let big_config = fx.image("big:latest").config_digest.clone();
    // Digest order is the tie-break when access times are unknown; the test needs the
    // older blob to be the one that sorts later, or a lost LRU state would pass unnoticed.
    assert!(big_config < web_layer);
    let served = Served::start(&s);
    served.rt.block_on(async {
        for (repo, d) in [("web", &web_layer), ("big", &big_config)] {
            let resp = get(&format!("{}/v2/{repo}/blobs/{d}", served.url())).await;
            assert_eq!(resp.status(), 200);
            resp.bytes().await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    // Bodies end once verified; wait for the commits before stopping.
    for d in [&web_layer, &big_config] {
        let d = Digest::parse(d).unwrap();
        while !s.blobs.contains(&d) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    served.stop();

    // 162 + 714 bytes stored; a cap of 800 forces one eviction: the least recently used.
    s.cap = Some(800);
    let served = Served::start(&s);
    let report = loop {
        match served.mirror.evict() {
            Err(berth_registry_mirror::Error::Busy { .. }) => {
                std::thread::sleep(Duration::from_millis(20))
            }
            r => break r.unwrap(),
        }
    };
    let web = Digest::parse(&web_layer).unwrap();
    let cfg = Digest::parse(&big_config).unwrap();
    assert!(!s.blobs.contains(&web), "{report:?}");
    assert!(s.blobs.contains(&cfg), "{report:?}");
    served.stop();
}

#[test]
fn upstream_credentials_come_from_the_mirror_configuration_basic_and_bearer() {
    let tar = raw_tar(&[("a.txt", tar::EntryType::Regular, None, b"private")]);
    let img = FakeImage::from_layer_tar(&tar);
    let manifest = sha256(&img.manifest);
    let user = || ("mirror".to_string(), "s3cret".to_string());
    let cases = [
        (
            FakeAuth::Basic {
                user: user().0,
                pass: user().1,
            },
            Credentials::Basic {
                username: user().0,
                password: user().1,
            },
        ),
        // Bearer challenge answered through the token endpoint with basic credentials.
        (
            FakeAuth::Bearer {
                user: user().0,
                pass: user().1,
            },
            Credentials::Basic {
                username: user().0,
                password: user().1,
            },
        ),
        // A static bearer token, sent with every request.
        (
            FakeAuth::Bearer {
                user: user().0,
                pass: user().1,
            },
            Credentials::BearerToken("fake-token-123".into()),
        ),
    ];
    for (auth, creds) in cases {
        let fake = FakeRegistry::start(auth.clone());
        fake.add("private/app", "v1", &img, None);
        for (with_creds, want) in [(false, 403), (true, 200)] {
            let dir = tempdir("berth-mirror-auth-");
            let mut s = setup(dir.path(), &fake.addr.to_string());
            if with_creds {
                s.credentials = creds.clone();
            }
            let served = Served::start(&s);
            served.rt.block_on(async {
                let url = format!("{}/v2/private/app/manifests/v1", served.url());
                let resp = get(&url).await;
                assert_eq!(resp.status(), want, "{auth:?} with {creds:?}: {with_creds}");
                if want == 200 {
                    assert_eq!(resp.headers()["docker-content-digest"], manifest.as_str());
                    let layer = sha256(&img.layer);
                    let resp = get(&format!("{}/v2/private/app/blobs/{layer}", served.url())).await;
                    assert_eq!(resp.status(), 200);
                    assert_eq!(sha256(&resp.bytes().await.unwrap()), layer);
                } else {
                    let body = resp.bytes().await.unwrap();
                    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    assert_eq!(v["errors"][0]["code"], "DENIED");
                }
            });
            served.stop();
        }
    }
}

#[test]
fn a_blob_damaged_on_disk_is_not_served_and_is_fetched_again() {
    let fx = fixture();
    let proxy = CountingProxy::start(fx.registry.parse().unwrap(), Duration::ZERO);
    let dir = tempdir("berth-mirror-damaged-");
    let s = setup(dir.path(), &proxy.addr.to_string());
    let served = Served::start(&s);
    let layer = fx.image("busybox:latest").layers[0].digest.clone();
    let d = Digest::parse(&layer).unwrap();
    let url = format!("{}/v2/busybox/blobs/{layer}", served.url());
    let fetch = |url: String| async move {
        let resp = get(&url).await;
        assert_eq!(resp.status(), 200);
        let mut s = resp.bytes_stream();
        let mut data = Vec::new();
        while let Some(c) = s.next().await {
            match c {
                Ok(c) => data.extend_from_slice(&c),
                Err(_) => return None,
            }
        }
        Some(data)
    };
    let first = served.rt.block_on(fetch(url.clone())).unwrap();
    assert_eq!(sha256(&first), layer);
    // The body ends once the content verified; the commit (fsync, rename) may still run.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !s.blobs.contains(&d) {
        assert!(Instant::now() < deadline, "blob never committed");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Flip one byte of the stored copy.
    let path = s.blobs.path(&d);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[1000] ^= 0x55;
    std::fs::write(&path, &bytes).unwrap();
    assert!(
        served.rt.block_on(fetch(url.clone())).is_none(),
        "damaged blob served"
    );
    assert!(!s.blobs.contains(&d), "damaged blob kept");
    let again = served.rt.block_on(fetch(url)).unwrap();
    assert_eq!(sha256(&again), layer);
    assert_eq!(proxy.blob_gets_of(&layer), 2);
    served.stop();
}
