//! A test LAN: hosts (network namespaces) joined by veth pairs to one bridge that lives in
//! a namespace of its own, so nothing is added to the machine's root namespace.
//!
//! ```text
//!   host ns A: eth0 10.77.S.1 ──veth── p1 ┐
//!   host ns B: eth0 10.77.S.2 ──veth── p2 ┼─ br0 (switch ns)
//!   host ns C: eth0 10.77.S.3 ──veth── p3 ┘
//! ```
//!
//! `cut`/`heal` set a host's switch port down/up: a partition of that host. Everything goes
//! with the switch namespace on drop (the veth pairs die with it).

use std::process::Command;

use anyhow::{ensure, Context, Result};

use crate::daemon::NetnsGuard;

/// A bridge in its own namespace, and the hosts plugged into it.
#[derive(Debug)]
pub struct Lan {
    switch: NetnsGuard,
    subnet: u8,
    hosts: u8,
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip").args(args).output().context("run ip")?;
    ensure!(
        out.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

impl Lan {
    /// A new switch with an empty `10.77.S.0/24` (S differs between LANs of one process).
    pub fn new() -> Result<Self> {
        use std::sync::atomic::{AtomicU8, Ordering};
        static SEQ: AtomicU8 = AtomicU8::new(1);
        let switch = NetnsGuard::create()?;
        ip(&["-n", switch.name(), "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", switch.name(), "link", "set", "br0", "up"])?;
        Ok(Lan {
            switch,
            subnet: SEQ.fetch_add(1, Ordering::Relaxed),
            hosts: 0,
        })
    }

    /// Plugs the namespace `netns` (a name under /run/netns) in as the next host; returns
    /// its address on the LAN.
    pub fn attach(&mut self, netns: &str) -> Result<String> {
        self.hosts += 1;
        let n = self.hosts;
        let port = format!("p{n}");
        let addr = format!("10.77.{}.{n}", self.subnet);
        let sw = self.switch.name();
        ip(&[
            "-n", sw, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", netns,
        ])?;
        ip(&["-n", sw, "link", "set", &port, "master", "br0", "up"])?;
        ip(&[
            "-n",
            netns,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", netns, "link", "set", "eth0", "up"])?;
        Ok(addr)
    }

    /// Cuts host number `n` (1-based, in attach order) off the LAN.
    pub fn cut(&self, n: u8) -> Result<()> {
        self.set_port(n, "down")
    }

    /// Plugs host `n` back in.
    pub fn heal(&self, n: u8) -> Result<()> {
        self.set_port(n, "up")
    }

    fn set_port(&self, n: u8, state: &str) -> Result<()> {
        let port = format!("p{n}");
        ip(&["-n", self.switch.name(), "link", "set", &port, state])
    }
}
