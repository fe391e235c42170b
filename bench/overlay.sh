#!/usr/bin/env bash
# Overlay throughput: iperf3 (Debian package) container to container across two hosts over
# berth's VXLAN overlay and over an encrypted overlay (VXLAN inside berth's WireGuard device:
# the kernel module where present, boringtun in-process otherwise), against the hosts'
# underlay veth, and over a bare kernel VXLAN device host to host (no bridge, veth or container:
# the floor any VXLAN overlay starts from); hosts and containers are network namespaces made and deleted by the
# benchmark (crates/overlay-net/examples/overlay_bench.rs). Needs root. Goal (issue #16):
# the overlay at least 90% of the underlay. Every round checks that the plain overlay sent
# nothing through WireGuard and the encrypted one all of its bytes; load averages printed.
#
#   sudo bash bench/overlay.sh [rounds=5] [seconds=5]
#   sudo BRIDGE_NF_CALL_IPTABLES=0 bash bench/overlay.sh   # the hosts' br_netfilter hooks off
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."
command -v iperf3 >/dev/null || { echo "iperf3 missing (apt-get install iperf3)" >&2; exit 1; }
cargo build -q --release -p berth-overlay-net --example overlay_bench
echo "# $(date -u +%FT%RZ), $(nproc) cores, kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
./target/release/examples/overlay_bench "${1:-5}" "${2:-5}"
echo "# end: $(date -u +%FT%RZ), load $(cut -d' ' -f1-3 /proc/loadavg)"
