#!/usr/bin/env bash
# The cluster mirror's peer transport on a LAN: a 50 MiB blob fetched from one node by
# another, QUIC (quinn, the peer transport) against HTTP/2 over mutual TLS (hyper +
# rustls over TCP), with crates/registry-mirror/examples/peer_transfer.rs. The serving
# side lives in one network namespace, the fetching side in another, joined by a veth pair
# (MTU 1500, the kernel's defaults: TSO/GSO on the veth); every byte crosses it.
#
#   bash bench/peer_transfer.sh                 # builds the example (release)
#   PEER_TRANSFER=reltarget/release/examples/peer_transfer RUNS=9 bash bench/peer_transfer.sh
#
# Removes its namespaces (and with them the veth pair) on any exit.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."
bin=${PEER_TRANSFER:-}
if [ -z "$bin" ]; then
    cargo build -q --release -p berth-registry-mirror --example peer_transfer
    bin=${CARGO_TARGET_DIR:-target}/release/examples/peer_transfer
fi
tag=bpt$$
a=$tag-a
b=$tag-b
cleanup() { ip netns del "$a" 2>/dev/null || true; ip netns del "$b" 2>/dev/null || true; }
trap cleanup EXIT
trap 'exit 130' INT TERM
ip netns add "$a"
ip netns add "$b"
ip -n "$a" link set lo up
ip -n "$b" link set lo up
ip -n "$a" link add eth0 type veth peer name eth0 netns "$b"
ip -n "$a" addr add 10.77.0.1/24 dev eth0
ip -n "$b" addr add 10.77.0.2/24 dev eth0
ip -n "$a" link set eth0 up
ip -n "$b" link set eth0 up
echo "50 MiB blob, server in netns A (10.77.0.1), client in netns B (10.77.0.2), veth pair, MTU $(ip -n "$a" -o link show eth0 | sed -n "s/.* mtu \([0-9]*\).*/\1/p");"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
SERVER_NS=$a CLIENT_NS=$b RUNS=${RUNS:-7} "$bin" 10.77.0.1
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
