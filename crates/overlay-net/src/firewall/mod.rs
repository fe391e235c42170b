//! nftables as a plan: berth's whole table, computed from the desired state and applied as
//! one atomic `nft -f -` transaction.
//!
//! Owns: [`Ruleset`] (the rules as data), [`Ruleset::from_state`] (pure), the rendered
//! transaction ([`Ruleset::render`]), [`delete_table_script`], the [`Firewall`] seam and
//! its real implementation [`NftCli`].
//!
//! Does not own: links and sysctls (`links`), port choice (`ports`).
//!
//! ```text
//!  NetState --Ruleset::from_state--> Ruleset --render--> "table ip berth / delete table /
//!                                                          table ip berth { ... }"
//!                                                              | Firewall::apply
//!                                                              v
//!                                                          nft -f -  (one transaction)
//! ```
//!
//! Every change rebuilds the table from the desired state: the transaction declares the
//! table (so it exists), deletes it, and adds it again with every chain and rule. nft
//! applies a file atomically, so the kernel goes from the old table to the new one with
//! nothing in between, rules are never duplicated, and a daemon that crashed half way is
//! repaired by the next apply. Nothing outside `table ip berth` is touched; deleting the
//! table removes every berth rule.
//!
//! Decisions recorded here:
//! - **`nft` binary, not a crate.** The nft CLI is installed, its script language is stable
//!   and readable in logs and tests, and `-f -` is one kernel transaction; the Rust crates
//!   either shell out to it as well or hand-build netlink batches.
//! - **Localhost reach: `route_localnet` + DNAT in the `output` hook, not a userland
//!   proxy.** Rules live in the kernel, so published ports keep answering while berthd is
//!   restarting or after kill -9 (a proxy process would die with it), there is no per-port
//!   process and no extra copy. Costs: `route_localnet=1` on berth's bridges (only there),
//!   with raw-hook rules that drop 127.0.0.0/8 arriving from a bridge, and masquerade of
//!   127.0.0.0/8 sources leaving through a bridge (the container sees the gateway as the
//!   peer for localhost clients).
//! - **Real client addresses:** traffic from other hosts is only DNATed; masquerade applies
//!   to container subnets leaving through another interface and to loopback sources, so a
//!   container sees a remote client's own address.
//! - **Isolation:** the forward hook drops traffic from one berth bridge to another, unless
//!   it is DNATed traffic to a published port (as Docker allows through its proxy).

use std::fmt::Write as _;
use std::future::Future;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;

use crate::error::{NetError, Result};
use crate::ipam::Ipv4Net;
use crate::ports::{Protocol, PublishedPort};
use crate::state::NetState;

/// berth's nftables table (family and name).
pub const NFT_TABLE: &str = "ip berth";

/// One bridge's share of the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeRules {
    /// Bridge device.
    pub bridge: String,
    /// Its subnet.
    pub subnet: Ipv4Net,
    /// Internal networks: no outbound NAT, no traffic to or from other interfaces.
    pub internal: bool,
}

/// One published port: DNAT of `host_ip:host_port` to `container:container_port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dnat {
    /// Endpoint id (a comment on the rule, for humans reading `nft list`).
    pub endpoint: String,
    /// The mapping.
    pub port: PublishedPort,
    /// The container's address.
    pub container: Ipv4Addr,
}

/// berth's nftables table as data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    /// Bridges, sorted by name.
    pub bridges: Vec<BridgeRules>,
    /// DNAT rules, sorted.
    pub dnats: Vec<Dnat>,
}

impl Ruleset {
    /// The ruleset the desired state needs (pure).
    pub fn from_state(state: &NetState) -> Self {
        let mut bridges: Vec<BridgeRules> = state
            .networks
            .values()
            .map(|n| BridgeRules {
                bridge: n.bridge.clone(),
                subnet: n.pool.subnet,
                internal: n.internal,
            })
            .collect();
        bridges.sort_by(|a, b| a.bridge.cmp(&b.bridge));
        let mut dnats: Vec<Dnat> = state
            .endpoints
            .values()
            .filter(|e| {
                state
                    .networks
                    .get(&e.network_id)
                    .is_some_and(|n| !n.internal)
            })
            .flat_map(|e| {
                e.ports.iter().map(move |p| Dnat {
                    endpoint: e.id.clone(),
                    port: *p,
                    container: e.address,
                })
            })
            .collect();
        dnats.sort_by(|a, b| (a.port, &a.endpoint).cmp(&(b.port, &b.endpoint)));
        Ruleset { bridges, dnats }
    }

    /// The whole table as one nft transaction that replaces any previous berth table.
    pub fn render(&self) -> String {
        let mut s = String::new();
        // Declare (no-op if present), delete, re-add: valid whether or not the table exists.
        let _ = writeln!(s, "table {NFT_TABLE}");
        let _ = writeln!(s, "delete table {NFT_TABLE}");
        let _ = writeln!(s, "table {NFT_TABLE} {{");

        s.push_str("\tchain raw_prerouting {\n\t\ttype filter hook prerouting priority raw; policy accept;\n");
        for b in &self.bridges {
            let _ = writeln!(s, "\t\tiifname \"{}\" ip saddr 127.0.0.0/8 drop", b.bridge);
            let _ = writeln!(s, "\t\tiifname \"{}\" ip daddr 127.0.0.0/8 drop", b.bridge);
        }
        s.push_str("\t}\n");

        s.push_str("\tchain prerouting {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n\t\tfib daddr type local jump published\n\t}\n");
        s.push_str("\tchain output {\n\t\ttype nat hook output priority -100; policy accept;\n\t\tfib daddr type local jump published\n\t}\n");

        s.push_str("\tchain published {\n");
        for d in &self.dnats {
            let proto = match d.port.protocol {
                Protocol::Tcp => "tcp",
                Protocol::Udp => "udp",
            };
            let daddr = d
                .port
                .host_ip
                .map(|ip| format!("ip daddr {ip} "))
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "\t\t{daddr}{proto} dport {} dnat to {}:{} comment \"{}\"",
                d.port.host_port,
                d.container,
                d.port.container_port,
                short(&d.endpoint)
            );
        }
        s.push_str("\t}\n");

        s.push_str("\tchain postrouting {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n");
        for b in &self.bridges {
            let br = &b.bridge;
            let _ = writeln!(s, "\t\toifname \"{br}\" ip saddr 127.0.0.0/8 masquerade");
            // A container reaching a published port of itself or of a neighbour through a
            // host address: without masquerade the reply would not come back through the
            // host (`iifname` is not available in postrouting, so match the source subnet).
            let _ = writeln!(
                s,
                "\t\toifname \"{br}\" ip saddr {} ct status dnat masquerade",
                b.subnet
            );
            if !b.internal {
                let _ = writeln!(
                    s,
                    "\t\tip saddr {} oifname != \"{br}\" masquerade",
                    b.subnet
                );
            }
        }
        s.push_str("\t}\n");

        s.push_str(
            "\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n",
        );
        for b in self.bridges.iter().filter(|b| b.internal) {
            let br = &b.bridge;
            let _ = writeln!(s, "\t\tiifname \"{br}\" oifname != \"{br}\" drop");
            let _ = writeln!(s, "\t\toifname \"{br}\" iifname != \"{br}\" drop");
        }
        if self.bridges.len() > 1 {
            s.push_str("\t\tct status dnat accept\n");
            for b in &self.bridges {
                let others: Vec<String> = self
                    .bridges
                    .iter()
                    .filter(|o| o.bridge != b.bridge)
                    .map(|o| format!("\"{}\"", o.bridge))
                    .collect();
                let _ = writeln!(
                    s,
                    "\t\tiifname \"{}\" oifname {{ {} }} drop",
                    b.bridge,
                    others.join(", ")
                );
            }
        }
        s.push_str("\t}\n}\n");
        s
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// A transaction that removes berth's table if it exists (and is a no-op otherwise).
pub fn delete_table_script() -> String {
    format!("table {NFT_TABLE}\ndelete table {NFT_TABLE}\n")
}

/// The kernel seam for nftables. One real implementation ([`NftCli`]) and a fake in
/// `testing` (feature `testing`).
pub trait Firewall: Send + Sync {
    /// Applies an nft script as one transaction; all or nothing.
    fn apply(&self, script: &str) -> impl Future<Output = Result<()>> + Send;
    /// Whether berth's table exists.
    fn table_present(&self) -> impl Future<Output = Result<bool>> + Send;
}

/// Runs the `nft` binary: `nft -f -` with the script on stdin, checking the exit status.
/// Acts in the network namespace of the calling thread.
#[derive(Debug, Clone)]
pub struct NftCli {
    binary: PathBuf,
}

impl Default for NftCli {
    fn default() -> Self {
        NftCli {
            binary: PathBuf::from("nft"),
        }
    }
}

impl NftCli {
    /// Uses a specific `nft` binary.
    pub fn with_binary(binary: impl Into<PathBuf>) -> Self {
        NftCli {
            binary: binary.into(),
        }
    }

    async fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<(Option<i32>, String)> {
        let mut child = tokio::process::Command::new(&self.binary)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| NetError::NftSpawn { source })?;
        if let (Some(script), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(script.as_bytes())
                .await
                .map_err(|source| NetError::NftSpawn { source })?;
            // Dropping the pipe closes it: nft reads to end of file.
        }
        let out = child
            .wait_with_output()
            .await
            .map_err(|source| NetError::NftSpawn { source })?;
        Ok((
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

impl Firewall for NftCli {
    async fn apply(&self, script: &str) -> Result<()> {
        let (status, stderr) = self.run(&["-f", "-"], Some(script)).await?;
        if status == Some(0) {
            Ok(())
        } else {
            Err(NetError::NftFailed { status, stderr })
        }
    }

    async fn table_present(&self) -> Result<bool> {
        let (family, name) = NFT_TABLE
            .split_once(' ')
            .expect("NFT_TABLE is 'family name'");
        let (status, stderr) = self.run(&["list", "table", family, name], None).await?;
        match status {
            Some(0) => Ok(true),
            _ if stderr.contains("No such file or directory") => Ok(false),
            _ => Err(NetError::NftFailed { status, stderr }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::AddressPool;
    use crate::state::{Endpoint, Network};

    fn state() -> NetState {
        let mut s = NetState::default();
        for (id, name, bridge, subnet, internal) in [
            ("a".repeat(64), "bridge", "berth0", "172.17.0.0/16", false),
            (
                "b".repeat(64),
                "web",
                "br-bbbbbbbbbbbb",
                "172.18.0.0/16",
                false,
            ),
            (
                "c".repeat(64),
                "secret",
                "br-cccccccccccc",
                "172.19.0.0/16",
                true,
            ),
        ] {
            s.networks.insert(
                id.clone(),
                Network {
                    id,
                    name: name.into(),
                    bridge: bridge.into(),
                    pool: AddressPool::new(subnet.parse().unwrap(), None).unwrap(),
                    is_default: name == "bridge",
                    internal,
                    mtu: None,
                    icc: true,
                },
            );
        }
        let ep = |id: &str, net: &str, ip: [u8; 4], ports: Vec<PublishedPort>| Endpoint {
            id: id.into(),
            container_id: id.into(),
            container_name: id.into(),
            aliases: vec![],
            network_id: net.repeat(64),
            netns: "/proc/1/ns/net".into(),
            netns_inode: None,
            default_route: true,
            ifname: "eth0".into(),
            host_veth: Endpoint::host_veth_for(id),
            address: ip.into(),
            ports,
            dns_servers: vec![],
        };
        let web = PublishedPort {
            host_ip: None,
            host_port: 18080,
            container_port: 8080,
            protocol: Protocol::Tcp,
        };
        let dns = PublishedPort {
            host_ip: Some(Ipv4Addr::LOCALHOST),
            host_port: 5353,
            container_port: 53,
            protocol: Protocol::Udp,
        };
        s.endpoints
            .insert("e1".into(), ep("e1", "a", [172, 17, 0, 2], vec![web, dns]));
        s.endpoints.insert(
            "e2".into(),
            ep(
                "e2",
                "c",
                [172, 19, 0, 2],
                vec![PublishedPort {
                    host_port: 9999,
                    ..web
                }],
            ),
        );
        s
    }

    #[test]
    fn rebuilds_the_table_in_one_transaction() {
        let script = Ruleset::from_state(&state()).render();
        let lines: Vec<&str> = script.lines().collect();
        assert_eq!(lines[0], "table ip berth");
        assert_eq!(lines[1], "delete table ip berth");
        assert_eq!(lines[2], "table ip berth {");
        assert_eq!(script.matches("delete").count(), 1);
        assert!(!script.contains("flush ruleset"));
    }

    #[test]
    fn publishes_ports_by_dnat_from_prerouting_and_output() {
        let script = Ruleset::from_state(&state()).render();
        assert!(script.contains("type nat hook prerouting priority dstnat; policy accept;\n\t\tfib daddr type local jump published"));
        assert!(script.contains("type nat hook output priority -100; policy accept;\n\t\tfib daddr type local jump published"));
        assert!(script.contains("\t\ttcp dport 18080 dnat to 172.17.0.2:8080 comment \"e1\""));
        assert!(script.contains("\t\tip daddr 127.0.0.1 udp dport 5353 dnat to 172.17.0.2:53"));
        // Internal networks publish nothing.
        assert!(!script.contains("9999"));
    }

    #[test]
    fn masquerades_outbound_and_loopback_but_not_remote_clients() {
        let script = Ruleset::from_state(&state()).render();
        assert!(script.contains("ip saddr 172.17.0.0/16 oifname != \"berth0\" masquerade"));
        assert!(script.contains("oifname \"berth0\" ip saddr 127.0.0.0/8 masquerade"));
        assert!(
            !script.contains("ip saddr 172.19.0.0/16 oifname"),
            "internal network NATed"
        );
        assert!(
            script.contains("oifname \"berth0\" ip saddr 172.17.0.0/16 ct status dnat masquerade")
        );
        let post = &script[script.find("chain postrouting").unwrap()..];
        let post = &post[..post.find("\t}").unwrap()];
        assert!(
            !post.contains("iifname"),
            "iifname never matches in postrouting"
        );
        // No rule masquerades traffic merely because it goes into a bridge.
        for line in script.lines().filter(|l| l.contains("masquerade")) {
            assert!(
                line.contains("ip saddr") || line.contains("ct status dnat"),
                "unexpected masquerade rule: {line}"
            );
        }
    }

    #[test]
    fn drops_forwarding_between_bridges() {
        let script = Ruleset::from_state(&state()).render();
        assert!(script.contains(
            "iifname \"berth0\" oifname { \"br-bbbbbbbbbbbb\", \"br-cccccccccccc\" } drop"
        ));
        assert!(script.contains(
            "iifname \"br-bbbbbbbbbbbb\" oifname { \"berth0\", \"br-cccccccccccc\" } drop"
        ));
        assert!(script.contains("iifname \"br-cccccccccccc\" oifname != \"br-cccccccccccc\" drop"));
        assert!(script.contains("iifname \"berth0\" ip daddr 127.0.0.0/8 drop"));
    }

    #[test]
    fn empty_state_renders_a_valid_empty_table() {
        let script = Ruleset::from_state(&NetState::default()).render();
        assert!(script.contains("chain published {\n\t}"));
        assert!(!script.contains("drop"));
        assert_eq!(
            delete_table_script(),
            "table ip berth\ndelete table ip berth\n"
        );
    }
}
