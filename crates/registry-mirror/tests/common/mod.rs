//! Shared test glue: a layer sink over `berth_runtime::unpack::unpack_layer` (what berthd
//! does with the runtime's snapshot store), a tiny in-test HTTP registry for cases the real
//! registry cannot play (tampered blobs, hostile layers, auth challenges), and helpers.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use berth_registry_mirror::{ClientConfig, Images, LayerRef, LayerSink, PullEvent, StagedLayer};
use sha2::{Digest as _, Sha256};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Unpacks each layer into `<root>/<chain-id hex>` through a temporary directory that is
/// renamed into place on commit and removed otherwise.
#[derive(Debug)]
pub struct DirSink {
    pub root: PathBuf,
}

impl DirSink {
    pub fn new(root: PathBuf) -> Arc<Self> {
        std::fs::create_dir_all(&root).unwrap();
        Arc::new(DirSink { root })
    }
    pub fn layer_dir(&self, layer_chain_hex: &str) -> PathBuf {
        self.root.join(layer_chain_hex)
    }
    /// Names in the sink root (committed layers and any leftovers).
    pub fn entries(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

struct StagedDir {
    tmp: Option<PathBuf>,
    dest: PathBuf,
}

impl StagedLayer for StagedDir {
    fn commit(mut self: Box<Self>) -> Result<(), BoxError> {
        let tmp = self.tmp.take().expect("commit once");
        if self.dest.is_dir() {
            // Another pull unpacked the same layer first: same content, keep theirs.
            std::fs::remove_dir_all(&tmp)?;
            return Ok(());
        }
        std::fs::rename(&tmp, &self.dest)?;
        Ok(())
    }
}

impl Drop for StagedDir {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            let _ = std::fs::remove_dir_all(tmp);
        }
    }
}

impl LayerSink for DirSink {
    fn is_unpacked(&self, layer: &LayerRef) -> bool {
        self.root.join(layer.chain_id.hex()).is_dir()
    }
    fn unpack(
        &self,
        layer: &LayerRef,
        tar: &mut dyn Read,
    ) -> Result<Box<dyn StagedLayer>, BoxError> {
        let tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempdir_in(&self.root)?
            .keep();
        let staged = StagedDir {
            tmp: Some(tmp.clone()),
            dest: self.root.join(layer.chain_id.hex()),
        };
        berth_runtime::unpack::unpack_layer(tar, &tmp)?;
        Ok(Box::new(staged))
    }
}

/// A data root with an image service and a sink.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub images: Images,
    pub sink: Arc<DirSink>,
}

impl Env {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("berth-images-test-")
            .tempdir()
            .unwrap();
        let images = Images::open(&dir.path().join("root"), ClientConfig::default()).unwrap();
        let sink = DirSink::new(dir.path().join("snapshots"));
        Env { dir, images, sink }
    }
    pub fn reopen(&mut self) {
        self.images = Images::open(&self.dir.path().join("root"), ClientConfig::default()).unwrap();
    }
    pub fn data_root(&self) -> PathBuf {
        self.dir.path().join("root")
    }
    pub fn sink_dyn(&self) -> Option<Arc<dyn LayerSink>> {
        Some(self.sink.clone() as Arc<dyn LayerSink>)
    }
}

/// Collects pull events.
#[derive(Default, Clone)]
pub struct Events(pub Arc<Mutex<Vec<PullEvent>>>);

impl Events {
    pub fn callback(&self) -> impl Fn(PullEvent) + Send + Sync + 'static {
        let v = self.0.clone();
        move |e| v.lock().unwrap().push(e)
    }
    pub fn all(&self) -> Vec<PullEvent> {
        self.0.lock().unwrap().clone()
    }
    pub fn count(&self, f: impl Fn(&PullEvent) -> bool) -> usize {
        self.all().iter().filter(|e| f(e)).count()
    }
}

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A gzip'd single-layer image for the fake registry.
pub struct FakeImage {
    pub manifest: Vec<u8>,
    pub config: Vec<u8>,
    pub layer: Vec<u8>,
}

impl FakeImage {
    /// An OCI image whose one layer is `tar` (uncompressed bytes), gzip'd.
    pub fn from_layer_tar(tar: &[u8]) -> Self {
        Self::with_compression(tar, "gzip")
    }

    /// `compression`: "gzip", "zstd" or "none".
    pub fn with_compression(tar: &[u8], compression: &str) -> Self {
        let (layer, media_type) = match compression {
            "gzip" => {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gz.write_all(tar).unwrap();
                (
                    gz.finish().unwrap(),
                    "application/vnd.oci.image.layer.v1.tar+gzip",
                )
            }
            "zstd" => (
                zstd::encode_all(tar, 3).unwrap(),
                "application/vnd.oci.image.layer.v1.tar+zstd",
            ),
            _ => (tar.to_vec(), "application/vnd.oci.image.layer.v1.tar"),
        };
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
            "rootfs": {"type": "layers", "diff_ids": [sha256(tar)]},
        }))
        .unwrap();
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": config.len()},
            "layers": [{"mediaType": media_type, "digest": sha256(&layer), "size": layer.len()}],
        }))
        .unwrap();
        FakeImage {
            manifest,
            config,
            layer,
        }
    }
}

/// How the fake registry authenticates.
#[derive(Clone, Debug)]
pub enum FakeAuth {
    None,
    Basic { user: String, pass: String },
    Bearer { user: String, pass: String },
}

struct Served {
    /// path -> (content type, body)
    routes: HashMap<String, (String, Vec<u8>)>,
    auth: FakeAuth,
    requests: Vec<String>,
    /// Blob GETs still to answer with 503.
    fail_blob_gets: usize,
    /// Answer `Range: bytes=N-` with 206 and the bytes from N (off: the whole body).
    honour_ranges: bool,
    /// `<path> <Range header>` of every request that sent one.
    ranges: Vec<String>,
}

/// A minimal HTTP/1.1 distribution registry on 127.0.0.1:0, one thread per connection.
pub struct FakeRegistry {
    pub addr: SocketAddr,
    state: Arc<Mutex<Served>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

const TOKEN: &str = "fake-token-123";

impl FakeRegistry {
    pub fn start(auth: FakeAuth) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(Served {
            routes: HashMap::new(),
            auth,
            requests: Vec::new(),
            fail_blob_gets: 0,
            honour_ranges: false,
            ranges: Vec::new(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !sp.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let st = st.clone();
                        std::thread::spawn(move || {
                            let _ = serve_conn(conn, &st, addr);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FakeRegistry {
            addr,
            state,
            stop,
            thread: Some(thread),
        }
    }

    /// Serves `img` as `repo:tag` (and by manifest digest); `layer_override` replaces the
    /// layer bytes served (the descriptor still names the original digest).
    pub fn add(&self, repo: &str, tag: &str, img: &FakeImage, layer_override: Option<Vec<u8>>) {
        let mut st = self.state.lock().unwrap();
        let mt = "application/vnd.oci.image.manifest.v1+json".to_string();
        st.routes.insert(
            format!("/v2/{repo}/manifests/{tag}"),
            (mt.clone(), img.manifest.clone()),
        );
        st.routes.insert(
            format!("/v2/{repo}/manifests/{}", sha256(&img.manifest)),
            (mt, img.manifest.clone()),
        );
        let bin = "application/octet-stream".to_string();
        st.routes.insert(
            format!("/v2/{repo}/blobs/{}", sha256(&img.config)),
            (bin.clone(), img.config.clone()),
        );
        st.routes.insert(
            format!("/v2/{repo}/blobs/{}", sha256(&img.layer)),
            (bin, layer_override.unwrap_or_else(|| img.layer.clone())),
        );
    }

    /// Serves `body` as the blob `digest` of `repo`, whatever its real digest.
    pub fn set_blob(&self, repo: &str, digest: &str, body: Vec<u8>) {
        let mut st = self.state.lock().unwrap();
        st.routes.insert(
            format!("/v2/{repo}/blobs/{digest}"),
            ("application/octet-stream".into(), body),
        );
    }

    /// Answers the next `n` blob GETs with 503 Service Unavailable.
    pub fn fail_next_blob_gets(&self, n: usize) {
        self.state.lock().unwrap().fail_blob_gets = n;
    }

    /// From now on, answers `Range: bytes=N-` requests with 206 and the bytes from N, as
    /// Distribution does.
    pub fn honour_ranges(&self) {
        self.state.lock().unwrap().honour_ranges = true;
    }

    /// `<path> <Range header value>` of each request that sent a `Range`.
    pub fn ranges(&self) -> Vec<String> {
        self.state.lock().unwrap().ranges.clone()
    }

    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn reference(&self, repo_tag: &str) -> String {
        format!("{}/{repo_tag}", self.addr)
    }
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn respond(
    conn: &mut TcpStream,
    status: &str,
    headers: &[(&str, String)],
    body: &[u8],
    head_only: bool,
) -> std::io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    conn.write_all(out.as_bytes())?;
    if !head_only {
        conn.write_all(body)?;
    }
    conn.flush()
}

fn serve_conn(mut conn: TcpStream, st: &Mutex<Served>, addr: SocketAddr) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let mut authz = None;
    let mut range = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("authorization") {
                authz = Some(v.trim().to_string());
            }
            if k.eq_ignore_ascii_case("range") {
                range = Some(v.trim().to_string());
            }
        }
    }
    let (auth, route, honour_ranges) = {
        let mut s = st.lock().unwrap();
        s.requests.push(format!("{method} {target}"));
        if let Some(r) = &range {
            s.ranges.push(format!("{target} {r}"));
        }
        if method == "GET" && target.contains("/blobs/") && s.fail_blob_gets > 0 {
            s.fail_blob_gets -= 1;
            drop(s);
            return respond(&mut conn, "503 Service Unavailable", &[], b"busy", false);
        }
        let path = target.split('?').next().unwrap_or("").to_string();
        (
            s.auth.clone(),
            s.routes.get(&path).cloned(),
            s.honour_ranges,
        )
    };
    let basic = |u: &str, p: &str| {
        use base64::Engine as _;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        )
    };
    if target.starts_with("/token") {
        if let FakeAuth::Bearer { user, pass } = &auth {
            if authz.as_deref() == Some(basic(user, pass).as_str()) {
                let body = format!(r#"{{"token":"{TOKEN}"}}"#);
                return respond(
                    &mut conn,
                    "200 OK",
                    &[("Content-Type", "application/json".into())],
                    body.as_bytes(),
                    false,
                );
            }
            return respond(&mut conn, "401 Unauthorized", &[], b"{}", false);
        }
    }
    let challenge = match &auth {
        FakeAuth::None => None,
        FakeAuth::Basic { user, pass } => (authz.as_deref() != Some(basic(user, pass).as_str()))
            .then(|| r#"Basic realm="fake""#.to_string()),
        FakeAuth::Bearer { .. } => (authz.as_deref() != Some(format!("Bearer {TOKEN}").as_str()))
            .then(|| format!(r#"Bearer realm="http://{addr}/token",service="fake""#)),
    };
    if let Some(c) = challenge {
        return respond(
            &mut conn,
            "401 Unauthorized",
            &[("WWW-Authenticate", c)],
            b"{}",
            method == "HEAD",
        );
    }
    if target == "/v2/" {
        return respond(&mut conn, "200 OK", &[], b"{}", method == "HEAD");
    }
    let from = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok());
    match route {
        Some((ct, body)) if honour_ranges && from.is_some_and(|n| n < body.len()) => {
            let n = from.expect("checked");
            respond(
                &mut conn,
                "206 Partial Content",
                &[
                    ("Content-Type", ct),
                    (
                        "Content-Range",
                        format!("bytes {n}-{}/{}", body.len() - 1, body.len()),
                    ),
                ],
                &body[n..],
                method == "HEAD",
            )
        }
        Some((ct, body)) => respond(
            &mut conn,
            "200 OK",
            &[("Content-Type", ct)],
            &body,
            method == "HEAD",
        ),
        None => respond(
            &mut conn,
            "404 Not Found",
            &[],
            br#"{"errors":[{"code":"UNKNOWN"}]}"#,
            method == "HEAD",
        ),
    }
}

/// A tar builder that writes entry names verbatim (hostile paths included).
pub fn raw_tar(entries: &[(&str, tar::EntryType, Option<&str>, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, link, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(*kind);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h.set_size(data.len() as u64);
        let old = h.as_old_mut();
        old.name = [0; 100];
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(l) = link {
            old.linkname = [0; 100];
            old.linkname[..l.len()].copy_from_slice(l.as_bytes());
        }
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

/// Every file under `dir`, recursively, relative.
pub fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(base: &Path, d: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            out.push(p.strip_prefix(base).unwrap().display().to_string());
            if e.file_type().unwrap().is_dir() {
                walk(base, &p, out);
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
