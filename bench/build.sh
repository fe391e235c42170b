#!/usr/bin/env bash
# docker build (the classic builder, DOCKER_BUILDKIT=0) of a 10-step Dockerfile through the
# real docker CLI, berthd and Debian's dockerd 20.10 side by side in one run, interleaved:
# cold (--no-cache) and fully cached. Each daemon gets its own data root, exec root and
# socket and is stopped afterwards. RUN steps use --network none on both (dockerd runs with
# --bridge=none here). Medians in ms over RUNS rounds (default 7). Only loopback traffic.
#
#   bash bench/build.sh          # starts its own fixture registry; needs docker.io for dockerd
#   BERTHD=target/debug/berthd RUNS=1 bash bench/build.sh   # a quick check of the script
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."
if [ -z "${BERTH_TEST_FIXTURE:-}" ]; then
    [ -n "${BERTHD:-}" ] || cargo build -q --release -p berth-node -p berth-runtime --bins
    cargo build -q -p berth-testkit --bin berth-fixture
    exec ./target/debug/berth-fixture run -- bash "$0" "$@"
fi
runs=${RUNS:-7}
reg=$BERTH_TEST_REGISTRY
img=$reg/busybox:latest
docker=$(command -v docker)
work=$(mktemp -d "${TMPDIR:-/tmp}/berth-bench-build.XXXXXX")
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

"${BERTHD:-./target/release/berthd}" --data-root "$work/berth" --exec-root "$run_dir/b" -H "unix://$work/berth.sock" \
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
B() { DOCKER_HOST=unix://$work/berth.sock DOCKER_BUILDKIT=0 "$docker" "$@"; }
D() { DOCKER_HOST=unix://$work/docker.sock DOCKER_BUILDKIT=0 "$docker" "$@"; }
B pull -q "$img" >/dev/null
[ $have_dockerd = 1 ] && D pull -q "$img" >/dev/null

ctx=$work/ctx
mkdir -p "$ctx"
head -c 1048576 /dev/urandom > "$ctx/payload.bin"
echo 'echo hello' > "$ctx/app.sh"
cat > "$ctx/Dockerfile" <<DF
FROM $img
ENV APP=/app
WORKDIR /app
COPY payload.bin app.sh ./
RUN sha256sum payload.bin > sum.txt
RUN mkdir -p /data && cp app.sh /data/
RUN echo built > /built
LABEL bench=build
EXPOSE 8080
CMD ["sh", "/app/app.sh"]
DF

declare -a b_cold b_warm d_cold d_warm
for i in $(seq 1 "$runs"); do
    t=$(date +%s%N); B build -q --no-cache --network none -t bench:b "$ctx" >/dev/null 2>&1; b_cold+=("$(ms "$t")")
    t=$(date +%s%N); B build -q --network none -t bench:b "$ctx" >/dev/null 2>&1; b_warm+=("$(ms "$t")")
    if [ $have_dockerd = 1 ]; then
        t=$(date +%s%N); D build -q --no-cache --network none -t bench:d "$ctx" >/dev/null 2>&1; d_cold+=("$(ms "$t")")
        t=$(date +%s%N); D build -q --network none -t bench:d "$ctx" >/dev/null 2>&1; d_warm+=("$(ms "$t")")
    fi
done
# Both results run.
B run --rm --network none bench:b >/dev/null
[ $have_dockerd = 1 ] && D run --rm --network none bench:d >/dev/null

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }'; }
echo "docker CLI $("$docker" version --format '{{.Client.Version}}' 2>/dev/null), DOCKER_BUILDKIT=0, 10-step Dockerfile (1 MiB COPY, 3 RUN), $runs interleaved rounds, median ms:"
echo
echo "| what | berthd | dockerd | berthd / dockerd |"
echo "|---|---|---|---|"
bc=$(median "${b_cold[@]}"); bw=$(median "${b_warm[@]}")
if [ $have_dockerd = 1 ]; then
    dc=$(median "${d_cold[@]}"); dw=$(median "${d_warm[@]}")
    echo "| build, cold (\`--no-cache\`) | $bc | $dc | $(ratio "$bc" "$dc") |"
    echo "| build, fully cached | $bw | $dw | $(ratio "$bw" "$dw") |"
else
    echo "| build, cold (\`--no-cache\`) | $bc | (dockerd not installed) | - |"
    echo "| build, fully cached | $bw | (dockerd not installed) | - |"
fi
