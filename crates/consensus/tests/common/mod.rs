//! Harness for multi-node tests: nodes in one process on loopback ports over real mTLS.

#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use berth_consensus::cluster::{ClusterConfig, RaftTuning};
use berth_consensus::{ClusterNode, NodeId};
use tempfile::TempDir;

/// One node's data dir and fixed address (kept across restarts).
pub struct Slot {
    pub name: String,
    pub dir: PathBuf,
    pub addr: SocketAddr,
    pub tuning: RaftTuning,
    pub node: Option<ClusterNode>,
}

impl Slot {
    pub fn node(&self) -> &ClusterNode {
        self.node.as_ref().expect("node running")
    }

    pub fn id(&self) -> NodeId {
        self.node().id()
    }

    pub fn config(&self) -> ClusterConfig {
        let mut c = ClusterConfig::new(&self.dir, self.addr);
        c.hostname = self.name.clone();
        c.raft = self.tuning;
        c
    }

    pub async fn stop(&mut self) {
        if let Some(node) = self.node.take() {
            node.shutdown().await.expect("shutdown");
        }
    }

    pub async fn restart(&mut self) {
        assert!(self.node.is_none());
        let node = ClusterNode::restart(self.config()).await.expect("restart");
        self.node = Some(node);
    }
}

/// Temp root holding every node's data dir; removed on drop (also on panic).
pub struct Harness {
    pub root: TempDir,
}

impl Harness {
    pub fn new() -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("BERTH_TEST_LOG")
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
            )
            .with_test_writer()
            .try_init();
        Harness {
            root: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    fn any_port() -> SocketAddr {
        "127.0.0.1:0".parse().expect("addr")
    }

    /// `init` a new cluster on a fresh loopback port.
    pub async fn init(&self, name: &str) -> Slot {
        self.init_with(name, RaftTuning::default()).await
    }

    /// `init` with custom Raft tuning.
    pub async fn init_with(&self, name: &str, tuning: RaftTuning) -> Slot {
        let mut config = ClusterConfig::new(self.dir(name), Self::any_port());
        config.hostname = name.to_string();
        config.raft = tuning;
        let node = ClusterNode::init(config).await.expect("init");
        let node_tuning = tuning;
        Slot {
            name: name.to_string(),
            dir: self.dir(name),
            addr: node.local_addr(),
            tuning: node_tuning,
            node: Some(node),
        }
    }

    /// `join` via `remote` with `token`.
    pub async fn join(&self, name: &str, remote: &Slot, token: &str) -> Slot {
        let node = self.try_join(name, remote, token).await.expect("join");
        let node_tuning = remote.tuning;
        Slot {
            name: name.to_string(),
            dir: self.dir(name),
            addr: node.local_addr(),
            tuning: node_tuning,
            node: Some(node),
        }
    }

    pub async fn try_join(
        &self,
        name: &str,
        remote: &Slot,
        token: &str,
    ) -> Result<ClusterNode, berth_consensus::ConsensusError> {
        let mut config = ClusterConfig::new(self.dir(name), Self::any_port());
        config.hostname = name.to_string();
        config.raft = remote.tuning;
        ClusterNode::join(config, &remote.addr.to_string(), token).await
    }
}

/// Poll `check` until it returns `Some`, or panic after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Shut down every running node (collects all errors, reports the first).
pub async fn stop_all(slots: &mut [&mut Slot]) {
    for slot in slots.iter_mut() {
        slot.stop().await;
    }
}
