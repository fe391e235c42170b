//! Cluster write latency and throughput on 3 managers, each in its own network namespace on a
//! veth LAN (a bridge in a switch namespace), in one process: each node runs on a thread
//! of its own that entered its host's namespace. Needs root.
//!
//! `cargo bench -p berth-consensus --bench writes`; knobs: BENCH_SEQ (sequential writes,
//! default 500), BENCH_CONCURRENCY (default 64), BENCH_TOTAL (concurrent writes, 5000).
//! Every write is fsync'd by the leader and a quorum before it is acknowledged.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_consensus::cluster::ClusterConfig;
use berth_consensus::{ClusterNode, Command, NodeUpdate};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn write(id: u64, i: usize) -> Command {
    Command::UpdateNode {
        id,
        update: NodeUpdate {
            labels: Some(BTreeMap::from([("seq".to_string(), i.to_string())])),
            ..NodeUpdate::default()
        },
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

fn report(name: &str, mut samples: Vec<Duration>, wall: Duration) {
    samples.sort();
    let n = samples.len();
    println!(
        "{name:<28} n={n:<6} p50={:>8.2?} p99={:>8.2?} max={:>8.2?} throughput={:>8.0} writes/s",
        percentile(&samples, 0.50),
        percentile(&samples, 0.99),
        samples[n - 1],
        n as f64 / wall.as_secs_f64()
    );
}

async fn sequential(node: &ClusterNode, target: u64, n: usize) -> (Vec<Duration>, Duration) {
    let start = Instant::now();
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        node.write(write(target, i)).await.expect("write");
        samples.push(t.elapsed());
    }
    (samples, start.elapsed())
}

async fn concurrent(
    node: Arc<ClusterNode>,
    target: u64,
    concurrency: usize,
    total: usize,
) -> (Vec<Duration>, Duration) {
    let start = Instant::now();
    let per_task = total / concurrency;
    let mut tasks = Vec::new();
    for t in 0..concurrency {
        let node = node.clone();
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::with_capacity(per_task);
            for i in 0..per_task {
                let s = Instant::now();
                node.write(write(target, t * per_task + i))
                    .await
                    .expect("write");
                samples.push(s.elapsed());
            }
            samples
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    (all, start.elapsed())
}

/// A cluster node on a thread of its own whose network namespace is its host's: every
/// socket the node opens (listener, peer connections) lives in that namespace.
struct Host {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Host {
    fn start(netns: &std::path::Path) -> Host {
        let ns = std::fs::File::open(netns).expect("open netns");
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            // SAFETY: setns(2) on a valid namespace fd; it changes only this thread.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            tx.send(rt.handle().clone()).expect("send handle");
            rt.block_on(async {
                let _ = stopped.await;
            });
        });
        Host {
            handle: rx.recv().expect("handle"),
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Runs `f` on this host's runtime.
    async fn run<T: Send + 'static>(
        &self,
        f: impl std::future::Future<Output = T> + Send + 'static,
    ) -> T {
        self.handle.spawn(f).await.expect("host task")
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn run() {
    use berth_testkit::daemon::NetnsGuard;
    use berth_testkit::lan::Lan;

    let root = tempfile::tempdir().expect("temp dir");
    let mut lan = Lan::new().expect("lan");
    let mut namespaces = Vec::new();
    let mut hosts = Vec::new();
    let mut addrs = Vec::new();
    for _ in 0..3 {
        let ns = NetnsGuard::create().expect("netns");
        addrs.push(lan.attach(ns.name()).expect("attach"));
        hosts.push(Host::start(&ns.path()));
        namespaces.push(ns);
    }
    let config = |i: usize| {
        let mut c = ClusterConfig::new(
            root.path().join(format!("m{i}")),
            format!("{}:2377", addrs[i]).parse().expect("addr"),
        );
        c.hostname = format!("m{i}");
        c
    };
    let c0 = config(0);
    let m1 = hosts[0]
        .run(async move { ClusterNode::init(c0).await })
        .await
        .expect("init");
    let token = m1.join_tokens().await.expect("tokens").manager.to_string();
    let remote = format!("{}:2377", addrs[0]);
    let mut nodes = vec![Arc::new(m1)];
    for (i, host) in hosts.iter().enumerate().skip(1) {
        let (c, remote, token) = (config(i), remote.clone(), token.clone());
        let m = host
            .run(async move { ClusterNode::join(c, &remote, &token).await })
            .await
            .expect("join");
        nodes.push(Arc::new(m));
    }
    let leader_id = nodes[0]
        .wait_for_leader(Duration::from_secs(10))
        .await
        .expect("leader");
    let li = nodes
        .iter()
        .position(|n| n.id() == leader_id)
        .expect("leader");
    let fi = (li + 1) % nodes.len();
    let (leader, follower) = (nodes[li].clone(), nodes[fi].clone());
    let (lh, fh) = (&hosts[li], &hosts[fi]);

    // Warm up connections and caches.
    let n = leader.clone();
    lh.run(async move { sequential(&n, leader_id, 50).await })
        .await;
    let n = follower.clone();
    fh.run(async move { sequential(&n, leader_id, 50).await })
        .await;

    let seq = env("BENCH_SEQ", 500);
    let concurrency = env("BENCH_CONCURRENCY", 64);
    let total = env("BENCH_TOTAL", 5000);
    println!(
        "3 managers, each in its own network namespace on a veth LAN, mTLS gRPC, redb fsync per commit"
    );
    let n = leader.clone();
    let (s, w) = lh
        .run(async move { sequential(&n, leader_id, seq).await })
        .await;
    report("sequential, on leader", s, w);
    let n = follower.clone();
    let (s, w) = fh
        .run(async move { sequential(&n, leader_id, seq).await })
        .await;
    report("sequential, via follower", s, w);
    let n = leader.clone();
    let (s, w) = lh
        .run(async move { concurrent(n, leader_id, concurrency, total).await })
        .await;
    report(&format!("{concurrency} concurrent, on leader"), s, w);
    let n = follower.clone();
    let (s, w) = fh
        .run(async move { concurrent(n, leader_id, concurrency, total).await })
        .await;
    report(&format!("{concurrency} concurrent, via follower"), s, w);

    drop((leader, follower));
    for (node, host) in nodes.into_iter().zip(&hosts) {
        match Arc::try_unwrap(node) {
            Ok(n) => host
                .run(async move { n.shutdown().await })
                .await
                .expect("shutdown"),
            Err(_) => panic!("node still shared"),
        }
    }
    drop(hosts);
    drop(namespaces);
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}
