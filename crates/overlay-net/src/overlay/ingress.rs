//! The routing mesh's return path, inside a task's namespace.
//!
//! Every node DNATs its published port to a task address on the ingress network without
//! SNAT (see [`super::render_host_table`]), so the task sees the client's own address
//! (Swarm masquerades here and hides it: moby#25526). The reply must then go back through
//! the node that did the DNAT (its conntrack entry undoes the translation), not out of the
//! task's default route. The node is known from the frame: it arrived from that node's
//! ingress address, whose MAC is [`super::mac_for_ip`] of it (the driver sets it on the
//! bridge). So, in the task's namespace:
//! - nft: a new connection arriving on the ingress interface gets `ct mark` = the index of
//!   the node whose MAC sent it (a map `ether_addr : mark`); in the output (route) hook,
//!   packets of a marked connection get `meta mark` = `ct mark`, which triggers re-routing;
//! - policy routing: `ip rule fwmark <i> lookup <TABLE_BASE + i>` with, in that table,
//!   `default via <node i's ingress address> dev <ingress interface>`;
//! - the incoming packets carry the mark too, and `net.ipv4.tcp_fwmark_accept=1` and
//!   `net.ipv4.fwmark_reflect=1` in the task's namespace make the kernel route a TCP
//!   connection's SYN-ACK and later packets, and ICMP replies and resets, with that mark from
//!   the first lookup on: so the mesh works even for a task with no default route at all.
//!   UDP replies are re-routed by mark in the output hook, which needs a first route to
//!   reach it: a task with no default route at all does not answer UDP through the mesh.
//!
//! Alternatives rejected: SNAT (hides the client, the thing to avoid); DSR / tunnelling the
//! client packet (needs the VIP on every task and direct return, which breaks the node's
//! conntrack); a single gateway per task (every node can be the ingress node of a flow).

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::Path;

use futures::TryStreamExt;
use rtnetlink::packet_route::rule::{RuleAttribute, RuleMessage};
use rtnetlink::{IpVersion, RouteMessageBuilder};

use super::exec::{link_index, nft_apply};
use super::{format_mac, mac_for_ip, OverlayDriver};
use crate::error::{NetError, Result};
use crate::links::rtnetlink_exec::{errno, handle_in_netns};

/// First routing table used for marked replies (table `TABLE_BASE + i` for node `i`, i >= 1).
pub const TABLE_BASE: u32 = 0x4272_0000;
/// Priority of the policy rules (before `main` at 32766).
pub const RULE_PRIORITY: u32 = 100;

/// The return path of a task on the ingress network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngressReturn {
    /// The task's interface on the ingress network (`eth1`, ...).
    pub ifname: String,
    /// Every node's address on the ingress network (including the task's own node).
    pub nodes: Vec<Ipv4Addr>,
}

impl IngressReturn {
    /// Nodes sorted, deduplicated, with their marks (1-based).
    pub fn marks(&self) -> Vec<(u32, Ipv4Addr)> {
        let mut nodes = self.nodes.clone();
        nodes.sort();
        nodes.dedup();
        nodes
            .into_iter()
            .enumerate()
            .map(|(i, ip)| (i as u32 + 1, ip))
            .collect()
    }
}

/// The task-side nft table (pure): one transaction replacing the previous one.
pub fn render_task_return_table(table: &str, ret: &IngressReturn) -> String {
    let mut s = format!("table ip {table}\ndelete table ip {table}\ntable ip {table} {{\n");
    let marks = ret.marks();
    s.push_str("\tmap node_marks {\n\t\ttype ether_addr : mark\n");
    if !marks.is_empty() {
        let elems: Vec<String> = marks
            .iter()
            .map(|(m, ip)| format!("{} : {m}", format_mac(&mac_for_ip(*ip))))
            .collect();
        let _ = writeln!(s, "\t\telements = {{ {} }}", elems.join(", "));
    }
    s.push_str("\t}\n");
    let _ = writeln!(
        s,
        "\tchain prerouting {{\n\t\ttype filter hook prerouting priority mangle; policy accept;\n\t\tiifname \"{}\" ct state new ct mark set ether saddr map @node_marks\n\t\tct mark != 0 meta mark set ct mark\n\t}}",
        ret.ifname
    );
    s.push_str("\tchain output {\n\t\ttype route hook output priority mangle; policy accept;\n\t\tct mark != 0 meta mark set ct mark\n\t}\n}\n");
    s
}

impl OverlayDriver {
    /// Name of the return-path table inside task containers.
    pub fn ingress_table(&self) -> String {
        format!("berth_ing_{}", self.names().prefix())
    }

    /// Programs (or re-programs, when the node set changed) the routing mesh's return path
    /// in a task's namespace file `netns`: the nft table, then the policy rules and routes.
    pub async fn program_ingress_return(&self, netns: &Path, ret: &IngressReturn) -> Result<()> {
        nft_apply(
            self.nft_binary(),
            Some(netns),
            &render_task_return_table(&self.ingress_table(), ret),
        )
        .await?;
        write_sysctls_in(
            netns,
            &[
                ("net/ipv4/tcp_fwmark_accept", "1"),
                ("net/ipv4/fwmark_reflect", "1"),
            ],
        )
        .await?;
        let h = handle_in_netns(netns).await?;
        let nl = |what: String| move |source| NetError::OverlayNetlink { op: what, source };
        // Remove the previous rules of ours, then add the current ones.
        let rules: Vec<RuleMessage> = h
            .rule()
            .get(IpVersion::V4)
            .execute()
            .try_collect()
            .await
            .map_err(|source| NetError::NetlinkDump {
                what: "rules",
                source,
            })?;
        for r in rules {
            let table = r.attributes.iter().find_map(|a| match a {
                RuleAttribute::Table(t) => Some(*t),
                _ => None,
            });
            if table.is_some_and(|t| t > TABLE_BASE && t <= TABLE_BASE + 0xffff) {
                match h.rule().del(r).execute().await {
                    Err(e) if errno(&e) == Some(libc::ENOENT) => {}
                    other => other.map_err(nl("delete rule".into()))?,
                }
            }
        }
        let dev = link_index(&h, &ret.ifname).await?;
        for (mark, node) in ret.marks() {
            let table = TABLE_BASE + mark;
            h.route()
                .add(
                    RouteMessageBuilder::<Ipv4Addr>::new()
                        .table_id(table)
                        .output_interface(dev)
                        .gateway(node)
                        .build(),
                )
                .replace()
                .execute()
                .await
                .map_err(nl(format!("default via {node} table {table}")))?;
            h.rule()
                .add()
                .v4()
                .fw_mark(mark)
                .table_id(table)
                .priority(RULE_PRIORITY)
                .action(rtnetlink::packet_route::rule::RuleAction::ToTable)
                .execute()
                .await
                .map_err(nl(format!("rule fwmark {mark} table {table}")))?;
        }
        Ok(())
    }
}

/// Writes sysctls under /proc/sys inside the namespace file `netns` (a short-lived thread
/// enters it; /proc/sys/net follows the namespace of the thread that opens it).
async fn write_sysctls_in(netns: &Path, values: &[(&str, &str)]) -> Result<()> {
    let path = netns.to_path_buf();
    let values: Vec<(String, String)> = values
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("berth-netns-sysctl".into())
        .spawn(move || {
            let result = (|| {
                let file = std::fs::File::open(&path).map_err(|source| NetError::Netns {
                    path: path.clone(),
                    source,
                })?;
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
                    NetError::Netns {
                        path: path.clone(),
                        source: e.into(),
                    }
                })?;
                for (k, v) in &values {
                    std::fs::write(Path::new("/proc/sys").join(k), v).map_err(|source| {
                        NetError::Sysctl {
                            key: k.clone(),
                            source,
                        }
                    })?;
                }
                Ok(())
            })();
            let _ = tx.send(result);
        })
        .map_err(|source| NetError::NetlinkSocket { source })?;
    rx.await.map_err(|_| NetError::NetlinkSocket {
        source: std::io::Error::other("sysctl thread died"),
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_connections_by_the_ingress_nodes_mac() {
        let ret = IngressReturn {
            ifname: "eth1".into(),
            nodes: vec!["10.0.0.3".parse().unwrap(), "10.0.0.2".parse().unwrap()],
        };
        assert_eq!(
            ret.marks(),
            vec![
                (1, "10.0.0.2".parse().unwrap()),
                (2, "10.0.0.3".parse().unwrap())
            ]
        );
        let s = render_task_return_table("berth_ing_t", &ret);
        assert!(s.contains("elements = { 02:42:0a:00:00:02 : 1, 02:42:0a:00:00:03 : 2 }"));
        assert!(s.contains("iifname \"eth1\" ct state new ct mark set ether saddr map @node_marks"));
        assert!(s.contains("ct mark != 0 meta mark set ct mark"));
    }
}
