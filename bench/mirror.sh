#!/usr/bin/env bash
# N clients (skopeo copy to a dir) pulling the fixture's `big` image (50 MiB layer) at
# once, cold, through a pull-through mirror in front of the fixture registry: berth's
# `berth-mirror` (release build) vs Debian's docker-registry in proxy mode
# (`proxy: remoteurl:`), side by side in one run, rounds alternating. Each mirror reaches
# the registry through its own counting proxy (bench/counting_proxy.py), which measures
# the bytes it relays back: upstream bytes. Only loopback traffic.
#
#   bash bench/mirror.sh            # starts its own fixture registry
#   N=10 RUNS=3 bash bench/mirror.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."
target=${CARGO_TARGET_DIR:-./target}
if [ -z "${BERTH_TEST_FIXTURE:-}" ]; then
    cargo build -q --release -p berth-registry-mirror --bin berth-mirror
    cargo build -q -p berth-testkit --bin berth-fixture
    exec "$target/debug/berth-fixture" run -- bash "$0" "$@"
fi
n=${N:-10}
runs=${RUNS:-3}
reg=$BERTH_TEST_REGISTRY
bin=${BERTH_MIRROR_BIN:-$target/release/berth-mirror}
big=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['images']['big:latest']['layers'][1]['digest'])" "$BERTH_TEST_FIXTURE")
work=$(mktemp -d "${TMPDIR:-/tmp}/berth-bench-mirror.XXXXXX")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

# start_proxy NAME -> sets proxy_port; log in $work/NAME.log
start_proxy() {
    rm -f "$work/$1.port" "$work/$1.log"; touch "$work/$1.log"
    python3 "$here/counting_proxy.py" "$work/$1.port" "$reg" "$work/$1.log" >/dev/null 2>&1 &
    proxy_pid=$!; pids+=($proxy_pid)
    for _ in $(seq 100); do [ -s "$work/$1.port" ] && break; sleep 0.05; done
    proxy_port=$(cat "$work/$1.port")
}
upstream_bytes() { awk '{s+=$1} END {print s+0}' "$work/$1.log"; }
blob_gets() { grep -c "^[0-9]* GET .*/blobs/$big" "$work/$1.log" || true; }

# pull_all ADDR DIRPREFIX: N skopeo copies at once; prints wall ms.
pull_all() {
    local t; t=$(date +%s%N)
    local cpids=()
    for i in $(seq 1 "$n"); do
        skopeo copy -q --src-tls-verify=false "docker://$1/big:latest" "dir:$2$i" >/dev/null &
        cpids+=($!)
    done
    local fail=0
    for p in "${cpids[@]}"; do wait "$p" || fail=1; done
    local wall; wall=$(ms "$t")
    [ "$fail" = 0 ] || { echo "a client failed pulling through $1" >&2; exit 1; }
    for i in $(seq 1 "$n"); do
        [ "$(sha256sum "$2$i/${big#sha256:}" | cut -d' ' -f1)" = "${big#sha256:}" ] || { echo "bad blob in $2$i" >&2; exit 1; }
    done
    echo "$wall"
}

run_berth() {
    start_proxy berth; local pp=$proxy_port pxp=$proxy_pid
    mkdir -p "$work/berth-root"
    "$bin" --data-root "$work/berth-root" --listen 127.0.0.1:0 --upstream "127.0.0.1:$pp" >"$work/berth.out" 2>"$work/berth.err" &
    local mp=$!; pids+=($mp)
    for _ in $(seq 100); do grep -q listening "$work/berth.out" && break; sleep 0.05; done
    local addr; addr=$(awk '{print $3}' "$work/berth.out")
    local wall; wall=$(pull_all "$addr" "$work/berth-c")
    kill "$mp" "$pxp"; wait "$mp" "$pxp" 2>/dev/null || true
    echo "$wall $(upstream_bytes berth) $(blob_gets berth)" >"$work/result"
}

run_distribution() {
    start_proxy dist; local pp=$proxy_port pxp=$proxy_pid
    local port; port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    mkdir -p "$work/dist-data"
    cat >"$work/dist.yml" <<CONF
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $work/dist-data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
proxy:
  remoteurl: http://127.0.0.1:$pp
CONF
    docker-registry serve "$work/dist.yml" >"$work/dist.out" 2>&1 &
    local rp=$!; pids+=($rp)
    for _ in $(seq 200); do curl -sf "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.05; done
    local wall; wall=$(pull_all "127.0.0.1:$port" "$work/dist-c")
    kill "$rp" "$pxp"; wait "$rp" "$pxp" 2>/dev/null || true
    echo "$wall $(upstream_bytes dist) $(blob_gets dist)" >"$work/result"
}

declare -a bw bb bg dw db dg
for r in $(seq 1 "$runs"); do
    rm -rf "$work"/berth-* "$work"/dist-*; sync
    # Functions run in this shell (not a subshell) so cleanup knows every PID.
    if [ $((r % 2)) = 1 ]; then order="berth dist"; else order="dist berth"; fi
    for who in $order; do
        rm -rf "$work/$who"-*; sync
        if [ "$who" = berth ]; then
            run_berth; read -r w b g <"$work/result"; bw+=("$w"); bb+=("$b"); bg+=("$g")
        else
            run_distribution; read -r w b g <"$work/result"; dw+=("$w"); db+=("$b"); dg+=("$g")
        fi
    done
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mib() { awk -v b="$1" 'BEGIN {printf "%.1f", b/1048576}'; }
bwm=$(median "${bw[@]}"); dwm=$(median "${dw[@]}")
bbm=$(median "${bb[@]}"); dbm=$(median "${db[@]}")
echo "$n clients (skopeo copy) pulling big:latest (50 MiB layer) at once through a cold mirror, $runs rounds, medians:"
echo
echo "| mirror | wall ms | upstream MiB | upstream GETs of the big blob | runs (wall ms) |"
echo "|---|---|---|---|---|"
echo "| berth-mirror | $bwm | $(mib "$bbm") | $(median "${bg[@]}") | ${bw[*]} |"
echo "| docker-registry proxy mode | $dwm | $(mib "$dbm") | $(median "${dg[@]}") | ${dw[*]} |"
echo
awk -v a="$bwm" -v b="$dwm" -v c="$bbm" -v d="$dbm" 'BEGIN {printf "berth / docker-registry: wall %.2fx, upstream bytes %.2fx\n", a/b, c/d}'
echo "Versions: $(docker-registry --version 2>/dev/null | head -1); $(skopeo --version)."
