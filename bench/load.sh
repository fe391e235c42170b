#!/usr/bin/env bash
# Load (issue #19), berthd and Debian's dockerd 20.10 side by side in one run: 1,000
# concurrent GET /containers/json (what `docker ps -a` sends), then 100 concurrent
# `docker run --rm busybox echo` through the docker CLI; latency p50/p99 per call, each
# daemon's RSS idle, peak and after (from /proc), and the berthd / dockerd ratios. The rounds
# alternate between the daemons (bench/load.py).
#
# Each daemon runs in a network namespace of its own (its default bridge is made there, not
# on the host) with its own data root, exec root, pidfile and socket; dockerd also with its
# own config file (its trust key stays in the work dir), the cgroupfs driver and a cgroup
# parent of its own, and it starts its own containerd (refused when a system containerd's
# socket exists: dockerd would use that one). The fixture registry on the host's loopback is
# forwarded into both namespaces at the same address (bench/netns_forward.py). Both daemons
# are started here and stopped by PID (SIGTERM, SIGKILL after 20 s); whatever they leave
# (containerd, shims, containers: processes naming the work dirs or in dockerd's cgroup
# parent) is killed by PID, mounts below the work dirs are unmounted, the cgroup parent, the
# namespaces and the dirs removed. Only loopback traffic.
#
#   bash bench/load.sh                 # release berthd; starts its own fixture registry
#   PS_CLIENTS=1000 RUNS=100 ROUNDS=3 bash bench/load.sh
#   PROFILE=debug bash bench/load.sh   # the debug berthd (no release build)
#   NO_DOCKERD=1 bash bench/load.sh    # berthd alone
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
reg=$BERTH_TEST_REGISTRY
img=$reg/busybox:latest
docker=$(command -v docker)
with_dockerd=1
[ -n "${NO_DOCKERD:-}" ] && with_dockerd=0
if [ $with_dockerd = 1 ]; then
    command -v dockerd >/dev/null || { echo "load.sh: dockerd not installed (Debian's docker.io); NO_DOCKERD=1 runs berthd alone" >&2; exit 2; }
    if [ -e /run/containerd/containerd.sock ]; then
        echo "load.sh: /run/containerd/containerd.sock exists: dockerd 20.10 would use that containerd, not a private one" >&2
        exit 2
    fi
fi
tag=bload$$
work=$(mktemp -d "${TMPDIR:-/tmp}/berth-bench-load.XXXXXX")
run_dir=$(mktemp -d /run/blXXXX)
cgroup_parent=$tag-dockerd
declare -A pid
netns=()
fwd=
log() { echo "load.sh: $*" >&2; }
B() { DOCKER_HOST=unix://$work/berth.sock DOCKER_CONFIG=$work/docker-config "$docker" "$@"; }
D() { DOCKER_HOST=unix://$work/docker.sock DOCKER_CONFIG=$work/docker-config "$docker" "$@"; }

# PIDs of processes a daemon left: naming the work dirs on their command line (containerd,
# shims) or living in dockerd's cgroup parent (its containers).
leftover_pids() {
    local p
    for p in /proc/[0-9]*; do
        [ "${p#/proc/}" = $$ ] && continue
        if tr '\0' ' ' 2>/dev/null <"$p/cmdline" | grep -qE "($work|$run_dir)(/| |$)" \
            || grep -qF "/$cgroup_parent/" "$p/cgroup" 2>/dev/null; then
            echo "${p#/proc/}"
        fi
    done
}

stop_daemon() {
    local p=${pid[$1]:-}
    [ -n "$p" ] || return 0
    kill -TERM "$p" 2>/dev/null || true
    for _ in $(seq 1 200); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
    unset "pid[$1]"
}

cleanup() {
    set +e
    [ -S "$work/berth.sock" ] && B ps -aq 2>/dev/null | xargs -r env DOCKER_HOST=unix://$work/berth.sock "$docker" rm -f >/dev/null 2>&1
    [ -S "$work/docker.sock" ] && D ps -aq 2>/dev/null | xargs -r env DOCKER_HOST=unix://$work/docker.sock "$docker" rm -f >/dev/null 2>&1
    stop_daemon berthd
    stop_daemon dockerd
    local left
    for _ in $(seq 1 50); do
        left=$(leftover_pids)
        [ -z "$left" ] && break
        # shellcheck disable=SC2086
        kill -9 $left 2>/dev/null
        sleep 0.1
    done
    if [ -n "$fwd" ]; then kill "$fwd" 2>/dev/null; wait "$fwd" 2>/dev/null; fi
    grep -E " ($work|$run_dir)" /proc/self/mounts | cut -d' ' -f2 | sort -r | xargs -r -n1 umount -l 2>/dev/null
    for c in /sys/fs/cgroup/*/"$cgroup_parent" /sys/fs/cgroup/"$cgroup_parent"; do
        [ -d "$c" ] && find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null
    done
    for n in "${netns[@]}"; do ip netns del "$n" 2>/dev/null; done
    rm -rf "$work" "$run_dir"
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM
ulimit -n "$(ulimit -Hn)"

wait_ready() {
    local name=$1 sock=$2
    for _ in $(seq 1 600); do
        [ -S "$sock" ] && DOCKER_HOST=unix://$sock "$docker" version >/dev/null 2>&1 && return 0
        kill -0 "${pid[$name]}" 2>/dev/null || break
        sleep 0.1
    done
    log "$name did not start: $(tail -20 "$work/$name.log")"
    return 1
}

engines=(berthd)
[ $with_dockerd = 1 ] && engines+=(dockerd)
for e in "${engines[@]}"; do
    ip netns add "$tag-$e"
    netns+=("$tag-$e")
    ip -n "$tag-$e" link set lo up
done
python3 "$here/netns_forward.py" "$reg" "${netns[@]}" >"$work/fwd.log" 2>&1 &
fwd=$!
for _ in $(seq 1 100); do grep -q ready "$work/fwd.log" && break; sleep 0.05; done
grep -q ready "$work/fwd.log" || { log "forwarder did not start: $(cat "$work/fwd.log")"; exit 1; }

nsenter --net=/run/netns/"$tag-berthd" ./target/"$profile"/berthd \
    --data-root "$work/berth" --exec-root "$run_dir/b" -H "unix://$work/berth.sock" \
    --pidfile "$work/berthd.pid" --log-level warn 2>"$work/berthd.log" &
pid[berthd]=$!
wait_ready berthd "$work/berth.sock"
B pull -q "$img" >/dev/null
targets=("berthd=$work/berth.sock,${pid[berthd]}")
if [ $with_dockerd = 1 ]; then
    # dockerd 20.10 would otherwise write its libtrust key to /etc/docker/key.json.
    echo "{\"deprecated-key-path\": \"$work/dockerd-key.json\"}" >"$work/daemon.json"
    nsenter --net=/run/netns/"$tag-dockerd" dockerd \
        --data-root "$work/dockerd" --exec-root "$run_dir/d" -H "unix://$work/docker.sock" \
        --pidfile "$work/dockerd.pid" --config-file "$work/daemon.json" \
        --iptables=false --ip6tables=false \
        --exec-opt native.cgroupdriver=cgroupfs --cgroup-parent "/$cgroup_parent" \
        --insecure-registry "$reg" >"$work/dockerd.log" 2>&1 &
    pid[dockerd]=$!
    wait_ready dockerd "$work/docker.sock"
    D pull -q "$img" >/dev/null
    # dockerd's own containerd (its child): a daemon of dockerd's, counted beside it.
    containerd=$(ps -o pid= --ppid "${pid[dockerd]}" -o comm= | awk '$2 == "containerd" {print $1}')
    [ -n "$containerd" ] || { log "dockerd's containerd not found"; exit 1; }
    targets+=("dockerd=$work/docker.sock,${pid[dockerd]},$containerd")
fi
"$docker" version --format 'docker CLI {{.Client.Version}}' 2>/dev/null || true
[ $with_dockerd = 1 ] && D version --format 'dockerd {{.Server.Version}}' 2>/dev/null
echo "berthd: target/$profile/berthd"
DOCKER="$docker" DOCKER_CONFIG=$work/docker-config python3 bench/load.py "$img" "${PS_CLIENTS:-1000}" "${RUNS:-100}" "${ROUNDS:-3}" "${targets[@]}"
