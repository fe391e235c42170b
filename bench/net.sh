#!/bin/sh
# Networking benchmarks of berth-overlay-net (as root; everything runs in throwaway network
# namespaces, nothing on the host's own interfaces changes):
#  - endpoint_latency: time to attach/detach a container endpoint (veth in its netns,
#    addresses, route; with and without a published port, i.e. with and without an nft run),
#    the time bridge networking adds to `docker run --rm`.
#  - bridge_throughput: iperf3 TCP throughput container-to-container over a berth bridge
#    versus two namespaces joined by a plain veth pair (needs Debian's iperf3).
# Usage: bench/net.sh [iterations] [iperf-seconds]
set -eu
cd "$(dirname "$0")/.."
cargo build -q --release -p berth-overlay-net --examples
target="${CARGO_TARGET_DIR:-target}/release/examples"
"$target/endpoint_latency" "${1:-50}"
"$target/bridge_throughput" "${2:-5}"
