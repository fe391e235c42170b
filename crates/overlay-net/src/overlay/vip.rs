//! Service VIPs without IPVS: an nftables table of berth's own inside each client
//! container's namespace DNATs every new connection to a VIP (all ports and protocols, as
//! Swarm's VIP does) to one of the service's backends, chosen by `numgen random mod N`
//! through a map; conntrack keeps the rest of the flow on that backend. Updating a backend
//! set is one `nft -f -` transaction that replaces the table (existing flows keep their
//! conntrack entry). A VIP with no backend rejects (TCP reset, ICMP otherwise) instead of
//! timing out. `--endpoint-mode dnsrr` services have no VIP and need nothing here.
//!
//! Why in the client's namespace (not on the host): the DNAT happens in the `output` hook of
//! the client, so the packet leaves the container already addressed to the backend and
//! crosses the overlay like any other; no host hop, no SNAT, the backend sees the client.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::Path;

use super::exec::nft_apply;
use super::{numgen_map, OverlayDriver};
use crate::error::Result;

/// One service VIP on one network, with its current backends (task addresses on that
/// network).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipRule {
    /// The network the VIP is on.
    pub network_id: String,
    /// The service's virtual IP on that network.
    pub vip: Ipv4Addr,
    /// Running (and healthy) task addresses; empty: connections are refused.
    pub backends: Vec<Ipv4Addr>,
}

/// The VIP table of a client container as one transaction replacing the previous one
/// (pure). `table` is the table name (family `ip`). No rules: the transaction only deletes.
pub fn render_vip_table(table: &str, rules: &[VipRule]) -> String {
    let mut s = format!("table ip {table}\ndelete table ip {table}\n");
    if rules.is_empty() {
        return s;
    }
    let mut rules: Vec<&VipRule> = rules.iter().collect();
    rules.sort_by_key(|r| r.vip);
    let _ = writeln!(s, "table ip {table} {{");
    s.push_str("\tchain output {\n\t\ttype nat hook output priority -100; policy accept;\n");
    for r in rules.iter().filter(|r| !r.backends.is_empty()) {
        let _ = writeln!(
            s,
            "\t\tip daddr {} dnat to {}",
            r.vip,
            numgen_map(&r.backends)
        );
    }
    s.push_str("\t}\n");
    let empty: Vec<String> = rules
        .iter()
        .filter(|r| r.backends.is_empty())
        .map(|r| r.vip.to_string())
        .collect();
    s.push_str("\tchain refuse {\n\t\ttype filter hook output priority filter; policy accept;\n");
    if !empty.is_empty() {
        let set = empty.join(", ");
        let _ = writeln!(
            s,
            "\t\tip daddr {{ {set} }} meta l4proto tcp reject with tcp reset"
        );
        let _ = writeln!(s, "\t\tip daddr {{ {set} }} reject");
    }
    s.push_str("\t}\n}\n");
    s
}

impl OverlayDriver {
    /// Name of the VIP table inside client containers.
    pub fn vip_table(&self) -> String {
        format!("berth_vip_{}", self.names().prefix())
    }

    /// Programs the VIPs a client container uses (every VIP of every network it is on), in
    /// its namespace file `netns`, as one transaction; an empty list removes the table.
    pub async fn program_vips(&self, netns: &Path, rules: &[VipRule]) -> Result<()> {
        let script = render_vip_table(&self.vip_table(), rules);
        nft_apply(self.nft_binary(), Some(netns), &script).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dnats_each_vip_to_a_random_backend_and_refuses_empty_ones() {
        let s = render_vip_table(
            "berth_vip_t",
            &[
                VipRule {
                    network_id: "n".into(),
                    vip: "10.0.1.2".parse().unwrap(),
                    backends: vec!["10.0.1.5".parse().unwrap(), "10.0.1.6".parse().unwrap()],
                },
                VipRule {
                    network_id: "n".into(),
                    vip: "10.0.1.3".parse().unwrap(),
                    backends: vec![],
                },
            ],
        );
        assert!(s.starts_with("table ip berth_vip_t\ndelete table ip berth_vip_t\n"));
        assert!(s.contains(
            "ip daddr 10.0.1.2 dnat to numgen random mod 2 map { 0 : 10.0.1.5, 1 : 10.0.1.6 }"
        ));
        assert!(!s.contains("ip daddr 10.0.1.3 dnat"));
        assert!(s.contains("ip daddr { 10.0.1.3 } meta l4proto tcp reject with tcp reset"));
    }

    #[test]
    fn no_rules_only_deletes() {
        assert_eq!(
            render_vip_table("x", &[]),
            "table ip x\ndelete table ip x\n"
        );
    }
}
