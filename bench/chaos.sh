#!/usr/bin/env bash
# kill -9 chaos, the long run: tests/chaos.rs with 50 cycles (CI runs 10). Each cycle starts
# a pull, runs, execs, a build or a service scale, kills berthd with SIGKILL at a random
# moment, restarts it and checks every blob, image and container record, the running
# containers and a ticker's log; at the end everything is removed and nothing may be left
# (mounts, cgroups, shims, links, nftables rules). Prints the seed, the per-cycle lines and
# the summary; a failure names the seed to replay with BERTH_CHAOS_SEED.
#
#   bench/chaos.sh [CYCLES]
set -euo pipefail
cd "$(dirname "$0")/.."
cycles=${1:-50}
cargo build --workspace --bins
cargo nextest run -p berth-e2e --test chaos --no-run
BERTH_CHAOS_CYCLES=$cycles ./target/debug/berth-fixture run -- \
    cargo nextest run -p berth-e2e --test chaos --no-capture \
    -E 'test(kill9_during_pulls_runs_execs_builds_and_scaling_loses_and_leaks_nothing)' 2>&1 |
    grep -E '^(chaos|cycle|Error)|Summary|FAIL|PASS'
