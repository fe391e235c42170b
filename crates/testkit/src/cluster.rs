//! A multi-host berth cluster for tests: berthd "hosts", each in its own network namespace
//! with its own data root ([`Berthd`]), plugged into one [`Lan`], formed into a cluster with
//! the docker CLI (`swarm init` on host 0, `swarm join` on the others).
//!
//! ```text
//!   Cluster { hosts: [Host { d: Berthd, addr: 10.77.S.1, port: 1 }, ...], lan: Lan }
//!     form(3) on 5 hosts: host 0 `swarm init`; hosts 1, 2 join as managers; 3, 4 as workers
//! ```
//!
//! Drop order: the hosts (each berthd stopped, its netns deleted), then the LAN. With
//! [`Cluster::with_task_cleanup`], drop first removes every service and then every
//! container on every host, restarting a host's berthd if the test killed it: task
//! containers outlive their daemon by design (live restore), so without this they would
//! outlive the test.

use std::time::Duration;

use anyhow::{ensure, Context, Result};

use crate::daemon::{retry, Berthd};
use crate::lan::Lan;

/// One berthd on the LAN.
#[derive(Debug)]
pub struct Host {
    pub d: Berthd,
    /// Its address on the LAN (`10.77.S.N`).
    pub addr: String,
    /// Its 1-based port on the LAN's switch (for [`Lan::cut`] / [`Lan::heal`]).
    pub port: u8,
}

/// The hosts, and the LAN they share (dropped after them).
#[derive(Debug)]
pub struct Cluster {
    pub hosts: Vec<Host>,
    pub lan: Lan,
    task_cleanup: bool,
}

impl Cluster {
    /// `n` berthd on a fresh LAN, not yet in a cluster.
    pub fn new(n: usize) -> Result<Self> {
        let mut c = Cluster {
            hosts: Vec::new(),
            lan: Lan::new()?,
            task_cleanup: false,
        };
        for _ in 0..n {
            c.add_host()?;
        }
        Ok(c)
    }

    /// On drop, remove every service and every container on every host first (restarting
    /// killed hosts to do so). For tests that run services.
    pub fn with_task_cleanup(mut self) -> Self {
        self.task_cleanup = true;
        self
    }

    /// Starts one more berthd and plugs it into the LAN; returns its index.
    pub fn add_host(&mut self) -> Result<usize> {
        let d = Berthd::start(&[])?;
        let addr = self.lan.attach(d.netns_name())?;
        let port = u8::try_from(self.hosts.len() + 1).context("too many hosts")?;
        self.hosts.push(Host { d, addr, port });
        Ok(self.hosts.len() - 1)
    }

    /// The berthd of host `i`.
    pub fn h(&self, i: usize) -> &Berthd {
        &self.hosts[i].d
    }

    /// `swarm init` on host 0; hosts `1..managers` join as managers, the others as workers
    /// (each [`Cluster::join`]).
    pub fn form(&self, managers: usize) -> Result<()> {
        let first = &self.hosts[0];
        let out = first
            .d
            .docker_ok(&["swarm", "init", "--advertise-addr", &first.addr])?;
        ensure!(
            out.contains("Swarm initialized") && out.contains("docker swarm join --token"),
            "swarm init printed: {out}"
        );
        for i in 1..self.hosts.len() {
            self.join(i, i < managers)?;
        }
        Ok(())
    }

    /// Host `i` joins host 0's cluster with a token of the role; fails unless the CLI says
    /// it joined as that role and host 0 then lists at least `i + 1` ready nodes (within
    /// 30 s).
    pub fn join(&self, i: usize, manager: bool) -> Result<()> {
        let first = &self.hosts[0];
        let role = if manager { "manager" } else { "worker" };
        let token = first.d.docker_ok(&["swarm", "join-token", "-q", role])?;
        let remote = format!("{}:2377", first.addr);
        let out =
            self.hosts[i]
                .d
                .docker_ok(&["swarm", "join", "--token", token.trim(), &remote])?;
        ensure!(
            out.contains(&format!("joined a swarm as a {role}")),
            "host {i} join printed: {out}"
        );
        retry(Duration::from_secs(30), || {
            let out = first
                .d
                .docker_ok(&["node", "ls", "--format", "{{.Status}}"])?;
            Ok((out.lines().filter(|l| *l == "Ready").count() > i).then_some(()))
        })
        .with_context(|| format!("host {i} never listed ready: {}", self.h(i).log()))
    }

    /// The node id of host `i` (`docker info`).
    pub fn node_id(&self, i: usize) -> Result<String> {
        Ok(self
            .h(i)
            .docker_ok(&["info", "--format", "{{.Swarm.NodeID}}"])?
            .trim()
            .to_string())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !self.task_cleanup {
            return;
        }
        // A killed berthd leaves its task containers running: bring it back to remove them.
        for h in &mut self.hosts {
            if h.d.pid().is_none() {
                let _ = self.lan.heal(h.port);
                let _ = h.d.restart();
            }
        }
        // No service left, so no agent starts a container while they are removed.
        for h in &self.hosts {
            if let Ok(ids) = h.d.docker_ok(&["service", "ls", "-q"]) {
                for id in ids.split_whitespace() {
                    let _ = h.d.docker(&["service", "rm", id]);
                }
                break;
            }
        }
        for _ in 0..3 {
            let mut left = false;
            for h in &self.hosts {
                if let Ok(ids) = h.d.docker_ok(&["ps", "-aq"]) {
                    for id in ids.split_whitespace() {
                        left = true;
                        let _ = h.d.docker(&["rm", "-f", id]);
                    }
                }
            }
            if !left {
                break;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}
