//! Cluster write latency and throughput on 3 managers in one process over loopback mTLS.
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

async fn run() {
    let root = tempfile::tempdir().expect("temp dir");
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let m1 = ClusterNode::init(ClusterConfig::new(root.path().join("m1"), any))
        .await
        .expect("init");
    let token = m1.join_tokens().await.expect("tokens").manager.to_string();
    let remote = m1.local_addr().to_string();
    let m2 = ClusterNode::join(
        ClusterConfig::new(root.path().join("m2"), any),
        &remote,
        &token,
    )
    .await
    .expect("join");
    let m3 = ClusterNode::join(
        ClusterConfig::new(root.path().join("m3"), any),
        &remote,
        &token,
    )
    .await
    .expect("join");
    let leader_id = m1
        .wait_for_leader(Duration::from_secs(10))
        .await
        .expect("leader");
    let nodes = [Arc::new(m1), Arc::new(m2), Arc::new(m3)];
    let leader = nodes
        .iter()
        .find(|n| n.id() == leader_id)
        .expect("leader")
        .clone();
    let follower = nodes
        .iter()
        .find(|n| n.id() != leader_id)
        .expect("follower")
        .clone();

    // Warm up connections and caches.
    sequential(&leader, leader_id, 50).await;
    sequential(&follower, leader_id, 50).await;

    let seq = env("BENCH_SEQ", 500);
    let concurrency = env("BENCH_CONCURRENCY", 64);
    let total = env("BENCH_TOTAL", 5000);
    println!("3 managers, loopback mTLS gRPC, redb fsync per commit");
    let (s, w) = sequential(&leader, leader_id, seq).await;
    report("sequential, on leader", s, w);
    let (s, w) = sequential(&follower, leader_id, seq).await;
    report("sequential, via follower", s, w);
    let (s, w) = concurrent(leader.clone(), leader_id, concurrency, total).await;
    report(&format!("{concurrency} concurrent, on leader"), s, w);
    let (s, w) = concurrent(follower.clone(), leader_id, concurrency, total).await;
    report(&format!("{concurrency} concurrent, via follower"), s, w);

    drop((leader, follower));
    for node in nodes {
        match Arc::try_unwrap(node) {
            Ok(n) => n.shutdown().await.expect("shutdown"),
            Err(_) => panic!("node still shared"),
        }
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}
