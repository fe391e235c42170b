#!/usr/bin/env bash
# Cluster write latency and throughput of berth-consensus on 3 managers, each in its own
# network namespace on a veth LAN, in one process
# (mutual-TLS gRPC, redb with fsync on every commit; needs root).
#   BENCH_SEQ=500 BENCH_CONCURRENCY=64 BENCH_TOTAL=5000 bench/consensus/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
exec cargo bench -p berth-consensus --bench writes
