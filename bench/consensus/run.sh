#!/usr/bin/env bash
# Cluster write latency and throughput of berth-consensus on 3 managers in one process
# (loopback, mutual-TLS gRPC, redb with fsync on every commit).
#   BENCH_SEQ=500 BENCH_CONCURRENCY=64 BENCH_TOTAL=5000 bench/consensus/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
exec cargo bench -p berth-consensus --bench writes
