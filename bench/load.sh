#!/usr/bin/env bash
# Load on one berthd (issue #19): 1,000 concurrent GET /containers/json (what `docker ps`
# sends), then 100 concurrent `docker run --rm busybox echo` through the docker CLI; latency
# p50/p99 per call, and berthd's RSS idle, peak and after (from /proc). Only loopback
# traffic: berthd's own unix socket and the fixture registry.
#
#   bash bench/load.sh            # starts its own fixture registry; release build
#   PS_CLIENTS=1000 RUNS=100 ROUNDS=3 bash bench/load.sh
#   PROFILE=debug bash bench/load.sh   # the debug berthd (no release build)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."
profile=${PROFILE:-release}
if [ -z "${BERTH_TEST_FIXTURE:-}" ]; then
    if [ "$profile" = release ]; then
        cargo build -q --release -p berth-node -p berth-runtime --bins
    else
        cargo build -q -p berth-node -p berth-runtime --bins
    fi
    cargo build -q -p berth-testkit --bin berth-fixture
    exec ./target/debug/berth-fixture run -- bash "$0" "$@"
fi
img=$BERTH_TEST_REGISTRY/busybox:latest
docker=$(command -v docker)
work=$(mktemp -d "${TMPDIR:-/tmp}/berth-bench-load.XXXXXX")
run_dir=$(mktemp -d /run/blXXXX)
pid=
cleanup() {
    [ -S "$work/berth.sock" ] && DOCKER_HOST=unix://$work/berth.sock "$docker" ps -aq 2>/dev/null \
        | xargs -r env DOCKER_HOST=unix://$work/berth.sock "$docker" rm -f >/dev/null 2>&1 || true
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    grep -E " ($work|$run_dir)" /proc/self/mounts | cut -d' ' -f2 | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    rm -rf "$work" "$run_dir"
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"
./target/$profile/berthd --data-root "$work/berth" --exec-root "$run_dir/b" -H "unix://$work/berth.sock" \
    --pidfile "$work/berthd.pid" --log-level warn 2>"$work/berthd.log" &
pid=$!
for _ in $(seq 1 200); do
    DOCKER_HOST=unix://$work/berth.sock "$docker" version >/dev/null 2>&1 && break
    sleep 0.1
done
DOCKER_HOST=unix://$work/berth.sock "$docker" pull -q "$img" >/dev/null
DOCKER="$docker" python3 bench/load.py "$work/berth.sock" "$pid" "$img" "${PS_CLIENTS:-1000}" "${RUNS:-100}" "${ROUNDS:-3}"
