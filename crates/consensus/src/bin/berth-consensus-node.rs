//! berth-consensus-node: one cluster node in its own process, driven over stdin/stdout.
//! A test and debugging tool (the kill -9 durability test runs it); berthd embeds
//! `ClusterNode` instead.
//!
//! ```text
//! berth-consensus-node init    <data dir> <listen addr>
//! berth-consensus-node join    <data dir> <listen addr> <remote addr> <token>
//! berth-consensus-node restart <data dir> <listen addr>
//! stdout: "ready <id hex> <addr>", then for init "manager-token <t>" and "worker-token <t>"
//! stdin:  "set <key> <value>" -> "ack <key>"          (label on this node, via the leader)
//!         "get <key>"         -> "value <key> <value>" (linearizable; "-" when absent)
//!         "nodes"             -> "nodes <count> leader <id hex>"
//!         "debug"             -> "debug <raft metrics and labels>"
//! ```

use std::error::Error;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use berth_consensus::cluster::ClusterConfig;
use berth_consensus::{ClusterNode, NodeUpdate, ReadConsistency};
use tokio::io::{AsyncBufReadExt, BufReader};

type BoxResult<T> = Result<T, Box<dyn Error + Send + Sync>>;

fn usage() -> Box<dyn Error + Send + Sync> {
    "usage: berth-consensus-node init|join|restart <data dir> <listen addr> [remote token]".into()
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    // A closed stdout means the driver is gone; nothing useful is left to do with errors.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

#[tokio::main]
async fn main() -> BoxResult<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mode, dir, listen) = match args.as_slice() {
        [mode, dir, listen, ..] => (
            mode.as_str(),
            PathBuf::from(dir),
            listen.parse::<SocketAddr>()?,
        ),
        _ => return Err(usage()),
    };
    let config = ClusterConfig::new(dir, listen);
    let node = match (mode, args.get(3), args.get(4)) {
        ("init", _, _) => ClusterNode::init(config).await?,
        ("join", Some(remote), Some(token)) => ClusterNode::join(config, remote, token).await?,
        ("restart", _, _) => ClusterNode::restart(config).await?,
        _ => return Err(usage()),
    };
    say(&format!("ready {:x} {}", node.id(), node.local_addr()));
    if mode == "init" {
        let tokens = node.join_tokens().await?;
        say(&format!("manager-token {}", tokens.manager));
        say(&format!("worker-token {}", tokens.worker));
    }
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["set", key, value] => {
                let mut labels = node
                    .state(ReadConsistency::Linearizable)
                    .await?
                    .nodes
                    .get(&node.id())
                    .map(|n| n.labels.clone())
                    .unwrap_or_default();
                labels.insert(key.to_string(), value.to_string());
                node.update_node(
                    node.id(),
                    NodeUpdate {
                        labels: Some(labels),
                        ..NodeUpdate::default()
                    },
                )
                .await?;
                say(&format!("ack {key}"));
            }
            ["get", key] => {
                let state = node.state(ReadConsistency::Linearizable).await?;
                let value = state
                    .nodes
                    .values()
                    .find_map(|n| n.labels.get(*key).cloned())
                    .unwrap_or_else(|| "-".to_string());
                say(&format!("value {key} {value}"));
            }
            ["nodes"] => {
                let count = node.nodes(ReadConsistency::Local).await?.len();
                let leader = node
                    .wait_for_leader(Duration::from_secs(10))
                    .await
                    .map(|l| format!("{l:x}"))
                    .unwrap_or_else(|_| "-".to_string());
                say(&format!("nodes {count} leader {leader}"));
            }
            ["debug"] => {
                let m = node.raft_metrics().borrow().clone();
                let labels: Vec<_> = node
                    .state_view()
                    .read(|s| s.nodes.values().map(|n| n.labels.clone()).collect());
                say(&format!(
                    "debug state={:?} last_log={:?} applied={:?} leader={:?} labels={labels:?}",
                    m.state, m.last_log_index, m.last_applied, m.current_leader
                ));
            }
            _ => say(&format!("error unknown command {line:?}")),
        }
    }
    node.shutdown().await?;
    Ok(())
}
