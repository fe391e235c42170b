//! berth-overlay-net: container networking.
//!
//! Owns (as it is built): IPAM, bridge networks, veth pairs, nftables NAT and published
//! ports in berth's own table, VXLAN overlays programmed from cluster state, and encryption
//! between hosts.
//!
//! Does not own: the container's namespaces and lifecycle (`berth-runtime`), cluster state
//! (`berth-consensus`), the embedded DNS server and the Engine API (`berth-node`).
