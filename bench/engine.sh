#!/usr/bin/env bash
# Engine benchmarks through the real docker CLI, berthd and Debian's dockerd side by side in
# one run, interleaved. Each daemon gets its own data root, exec root and socket and is
# stopped afterwards. Medians in ms over RUNS rounds (default 15). Only loopback traffic.
#
#   docker run --rm --network none busybox true    berthd vs dockerd
#   docker run --rm busybox true                   berthd, default bridge (networking cost)
#   docker ps -a with 100 containers               berthd vs dockerd
#   docker pull of big (50 MiB layer), cold         berthd vs dockerd (image removed each round)
#
#   bash bench/engine.sh          # starts its own fixture registry; needs docker.io for dockerd
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."
if [ -z "${BERTH_TEST_FIXTURE:-}" ]; then
    cargo build -q --release -p berth-node -p berth-runtime --bins
    cargo build -q -p berth-testkit --bin berth-fixture
    exec ./target/debug/berth-fixture run -- bash "$0" "$@"
fi
runs=${RUNS:-15}
reg=$BERTH_TEST_REGISTRY
img=$reg/busybox:latest
docker=$(command -v docker)
work=$(mktemp -d "${TMPDIR:-/tmp}/berth-bench-engine.XXXXXX")
run_dir=$(mktemp -d /run/bbXXXX)
pids=()
cleanup() {
    for h in "$work/berth.sock" "$work/docker.sock"; do
        [ -S "$h" ] && DOCKER_HOST=unix://$h "$docker" ps -aq 2>/dev/null \
            | xargs -r env DOCKER_HOST=unix://$h "$docker" rm -f >/dev/null 2>&1 || true
    done
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    grep -E " ($work|$run_dir)" /proc/self/mounts | cut -d' ' -f2 | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    rm -rf "$work" "$run_dir"
}
trap cleanup EXIT

ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
wait_sock() { for _ in $(seq 1 200); do [ -S "$1" ] && DOCKER_HOST=unix://$1 "$docker" version >/dev/null 2>&1 && return 0; sleep 0.1; done; return 1; }

./target/release/berthd --data-root "$work/berth" --exec-root "$run_dir/b" -H "unix://$work/berth.sock" \
    --pidfile "$work/berthd.pid" --mirror-addr 127.0.0.1:0 --log-level warn 2>"$work/berthd.log" &
pids+=($!)
wait_sock "$work/berth.sock"
have_dockerd=0
if command -v dockerd >/dev/null; then
    dockerd --data-root "$work/dockerd" --exec-root "$run_dir/d" -H "unix://$work/docker.sock" \
        --pidfile "$work/dockerd.pid" --iptables=false --ip6tables=false --bridge=none \
        --userland-proxy=false >"$work/dockerd.log" 2>&1 &
    pids+=($!)
    wait_sock "$work/docker.sock" && have_dockerd=1
fi
B() { DOCKER_HOST=unix://$work/berth.sock "$docker" "$@"; }
D() { DOCKER_HOST=unix://$work/docker.sock "$docker" "$@"; }
B pull -q "$img" >/dev/null
[ $have_dockerd = 1 ] && D pull -q "$img" >/dev/null

declare -a b_none b_bridge d_none
for i in $(seq 1 "$runs"); do
    t=$(date +%s%N); B run --rm --network none "$img" true; b_none+=("$(ms "$t")")
    if [ $have_dockerd = 1 ]; then t=$(date +%s%N); D run --rm --network none "$img" true; d_none+=("$(ms "$t")"); fi
    t=$(date +%s%N); B run --rm "$img" true; b_bridge+=("$(ms "$t")")
done
declare -a b_pull d_pull s_pull c_pull
big=$reg/big:latest
big_blob=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['images']['big:latest']['layers'][1]['digest'])" "$BERTH_TEST_FIXTURE")
for i in $(seq 1 "$runs"); do
    t=$(date +%s%N); B pull -q "$big" >/dev/null; b_pull+=("$(ms "$t")")
    B rmi -f "$big" >/dev/null
    if [ $have_dockerd = 1 ]; then
        t=$(date +%s%N); D pull -q "$big" >/dev/null; d_pull+=("$(ms "$t")")
        D rmi -f "$big" >/dev/null
    fi
    if command -v skopeo >/dev/null; then
        rm -rf "$work/skopeo"
        t=$(date +%s%N); skopeo copy -q --src-tls-verify=false "docker://$big" "dir:$work/skopeo" >/dev/null; s_pull+=("$(ms "$t")")
    fi
    t=$(date +%s%N); curl -sf -o "$work/blob" "http://$reg/v2/big/blobs/$big_blob"; c_pull+=("$(ms "$t")")
    rm -rf "$work/skopeo" "$work/blob"
done
for i in $(seq 1 100); do
    B create --network none "$img" true >/dev/null
    [ $have_dockerd = 1 ] && D create --network none "$img" true >/dev/null
done
declare -a b_ps d_ps
for i in $(seq 1 "$runs"); do
    t=$(date +%s%N); B ps -a >/dev/null; b_ps+=("$(ms "$t")")
    if [ $have_dockerd = 1 ]; then t=$(date +%s%N); D ps -a >/dev/null; d_ps+=("$(ms "$t")"); fi
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }'; }
echo "docker CLI $("$docker" version --format '{{.Client.Version}}' 2>/dev/null) against each daemon, $runs interleaved rounds, median ms:"
echo
echo "| what | berthd | dockerd | berthd / dockerd |"
echo "|---|---|---|---|"
bn=$(median "${b_none[@]}"); bp=$(median "${b_ps[@]}")
if [ $have_dockerd = 1 ]; then
    dn=$(median "${d_none[@]}"); dp=$(median "${d_ps[@]}")
    echo "| \`run --rm --network none busybox true\` | $bn | $dn | $(ratio "$bn" "$dn") |"
    echo "| \`ps -a\`, 100 containers | $bp | $dp | $(ratio "$bp" "$dp") |"
    bl=$(median "${b_pull[@]}"); dl=$(median "${d_pull[@]}")
    echo "| \`pull\` of big (50 MiB layer), cold | $bl | $dl | $(ratio "$bl" "$dl") |"
else
    echo "| \`run --rm --network none busybox true\` | $bn | (dockerd not installed) | - |"
    echo "| \`ps -a\`, 100 containers | $bp | (dockerd not installed) | - |"
fi
bl=$(median "${b_pull[@]}"); cl=$(median "${c_pull[@]}")
echo
echo "Cold pull of big, same rounds: berthd $bl ms, curl of the 50 MiB blob $cl ms ($(ratio "$bl" "$cl") the plain download)${s_pull:+, skopeo copy $(median "${s_pull[@]}") ms}."
bb=$(median "${b_bridge[@]}")
echo
echo "Networking cost: \`run --rm busybox true\` on berth's default bridge $bb ms vs $bn ms with"
echo "\`--network none\`: $((bb - bn)) ms for the namespace, veth pair, address and files."
