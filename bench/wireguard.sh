#!/bin/sh
# WireGuard benchmark of berth-overlay-net (as root; everything runs in throwaway network
# namespaces): iperf3 TCP throughput between two hosts (namespaces on an underlay bridge)
# over the underlay itself, container to container over plain VXLAN, and container to
# container over VXLAN inside berth's WireGuard device (kernel module where present,
# boringtun in-process otherwise). Needs Debian's iperf3.
# Usage: bench/wireguard.sh [iperf-seconds]
set -eu
cd "$(dirname "$0")/.."
cargo build -q --release -p berth-overlay-net --example wireguard_throughput
"${CARGO_TARGET_DIR:-target}/release/examples/wireguard_throughput" "${1:-5}"
