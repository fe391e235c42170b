#!/usr/bin/env bash
# Cold pull of the fixture's `big` image (busybox + 50 MiB incompressible layer) from a
# local registry, side by side in one run: berth (release build, verify + store + unpack),
# `skopeo copy` to a directory, and a plain curl of the 50 MiB blob (the floor).
# Interleaved, RUNS rounds (default 7), medians in ms. Only loopback traffic.
#
#   bash bench/pull.sh            # starts its own fixture registry
#
# dockerd is not in this run yet (it needs its own data root and socket; see the issue).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."
if [ -z "${BERTH_TEST_FIXTURE:-}" ]; then
    cargo build -q --release -p berth-registry-mirror --example pull
    cargo build -q -p berth-testkit --bin berth-fixture
    exec ./target/debug/berth-fixture run -- bash "$0" "$@"
fi
runs=${RUNS:-7}
reg=$BERTH_TEST_REGISTRY
digest=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['images']['big:latest']['layers'][1]['digest'])" "$BERTH_TEST_FIXTURE")
work=$(mktemp -d "${TMPDIR:-/tmp}/berth-bench-pull.XXXXXX")
trap 'rm -rf "$work"' EXIT
ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
declare -a berth skopeo curl_
for i in $(seq 1 "$runs"); do
    rm -rf "$work"/*; sync
    t=$(date +%s%N); ./target/release/examples/pull "$reg/big:latest" "$work/berth" >/dev/null; berth+=("$(ms "$t")")
    t=$(date +%s%N); skopeo copy -q --src-tls-verify=false "docker://$reg/big:latest" "dir:$work/skopeo" >/dev/null; skopeo+=("$(ms "$t")")
    t=$(date +%s%N); curl -sf -o "$work/blob" "http://$reg/v2/big/blobs/$digest"; curl_+=("$(ms "$t")")
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "cold pull of big:latest (50 MiB layer), $runs runs, median ms"
printf '%-32s %6s   runs: %s\n' "berth (pull+verify+unpack)" "$(median "${berth[@]}")" "${berth[*]}"
printf '%-32s %6s   runs: %s\n' "skopeo copy (to dir)" "$(median "${skopeo[@]}")" "${skopeo[*]}"
printf '%-32s %6s   runs: %s\n' "curl of the blob (floor)" "$(median "${curl_[@]}")" "${curl_[*]}"
