#!/usr/bin/env bash
# Benchmark (b) of issue #14: berth's pure scheduler placing tasks on simulated nodes
# (1,000 tasks on 1,000 nodes, 10,000 tasks on 1,000 nodes, with and without a constraint
# and a spread preference, and whole plan() passes). No cluster, no root needed.
#
# Usage: bench/scheduler.sh [RUNS]   (default 5 runs per scenario)
# Prints the example's JSON, then one line per scenario.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-5}"
out="$(cargo run --quiet --release -p berth-orchestrator --example schedule_bench -- "$runs")"
echo "$out"
python3 - "$out" <<'PY'
import json, sys
for r in json.loads(sys.argv[1])["scheduler"]:
    parts = []
    if "decisions_per_second" in r:
        parts.append(f"{int(r['decisions_per_second'])} decisions/s")
    if "p50_us" in r:
        parts.append(f"p50 {r['p50_us']} us, p99 {r['p99_us']} us per task")
    else:
        parts.append(f"pass {r['pass_ms']} ms ({r['changes']} changes)")
    print(f"{r['scenario']}: " + ", ".join(parts))
PY
