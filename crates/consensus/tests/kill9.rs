//! Durability across kill -9: three manager processes, an acknowledged write, SIGKILL to
//! every process, restart from the data dirs, the write is there.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

const BIN: &str = env!("CARGO_BIN_EXE_berth-consensus-node");
const WAIT: Duration = Duration::from_secs(30);

/// One node process; killed (SIGKILL) on drop, so a failing test leaves nothing behind.
struct NodeProcess {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    addr: String,
}

impl NodeProcess {
    async fn spawn(args: &[&str]) -> (NodeProcess, Vec<String>) {
        let mut child = Command::new(BIN)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn node process");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut p = NodeProcess {
            child,
            stdin,
            stdout,
            addr: String::new(),
        };
        let ready = p.line().await;
        let words: Vec<&str> = ready.split_whitespace().collect();
        assert_eq!(words.first(), Some(&"ready"), "{ready}");
        p.addr = words[2].to_string();
        let mut extra = Vec::new();
        if args[0] == "init" {
            extra.push(p.line().await);
            extra.push(p.line().await);
        }
        (p, extra)
    }

    async fn line(&mut self) -> String {
        tokio::time::timeout(WAIT, self.stdout.next_line())
            .await
            .expect("node answered in time")
            .expect("read stdout")
            .expect("node process exited")
    }

    async fn ask(&mut self, command: &str) -> String {
        self.stdin
            .write_all(format!("{command}\n").as_bytes())
            .await
            .expect("write stdin");
        self.line().await
    }

    async fn kill9(mut self) {
        self.child.start_kill().expect("SIGKILL");
        let status = self.child.wait().await.expect("wait");
        assert!(!status.success());
    }
}

fn arg(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_write_survives_kill_9_of_every_node() {
    let root = tempfile::tempdir().expect("temp dir");
    let dirs: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|n| root.path().join(n))
        .collect();

    let (mut a, tokens) = NodeProcess::spawn(&["init", arg(&dirs[0]), "127.0.0.1:0"]).await;
    let manager_token = tokens[0]
        .strip_prefix("manager-token ")
        .expect("manager token line")
        .to_string();
    let a_addr = a.addr.clone();
    let (b, _) = NodeProcess::spawn(&[
        "join",
        arg(&dirs[1]),
        "127.0.0.1:0",
        &a_addr,
        &manager_token,
    ])
    .await;
    let (mut c, _) = NodeProcess::spawn(&[
        "join",
        arg(&dirs[2]),
        "127.0.0.1:0",
        &a_addr,
        &manager_token,
    ])
    .await;
    let deadline = Instant::now() + WAIT;
    loop {
        let answer = a.ask("nodes").await;
        if answer.starts_with("nodes 3 leader ") && !answer.ends_with('-') {
            break;
        }
        assert!(Instant::now() < deadline, "cluster did not form: {answer}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Written through a follower or the leader; acknowledged means committed.
    assert_eq!(c.ask("set durable yes").await, "ack durable");
    let addrs = [a.addr.clone(), b.addr.clone(), c.addr.clone()];
    // No graceful shutdown of anything.
    a.kill9().await;
    b.kill9().await;
    c.kill9().await;

    let mut restarted = Vec::new();
    for (dir, addr) in dirs.iter().zip(&addrs) {
        let (p, _) = NodeProcess::spawn(&["restart", arg(dir), addr]).await;
        restarted.push(p);
    }
    for p in restarted.iter_mut() {
        assert_eq!(p.ask("get durable").await, "value durable yes");
    }
    for p in restarted {
        p.kill9().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_acknowledged_writes_survive_kill_9() {
    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path().join("solo");
    let (mut a, _) = NodeProcess::spawn(&["init", arg(&dir), "127.0.0.1:0"]).await;
    for i in 0..5 {
        assert_eq!(a.ask(&format!("set k{i} v{i}")).await, format!("ack k{i}"));
    }
    let addr = a.addr.clone();
    a.kill9().await;
    let (mut a, _) = NodeProcess::spawn(&["restart", arg(&dir), &addr]).await;
    for i in 0..5 {
        assert_eq!(
            a.ask(&format!("get k{i}")).await,
            format!("value k{i} v{i}")
        );
    }
    a.kill9().await;
}
