#!/usr/bin/env bash
# 5 hosts cold-pulling the fixture's `big` image (50 MiB layer) at the same moment, in one
# run, three ways (issue #17):
#
#   berth    5 berthd in a cluster (swarm init/join): every node pulls through its own
#            mirror, which routes each blob and tag to its owner node (QUIC over the LAN);
#   direct   5 Debian dockerd 20.10, each pulling from the registry;
#   proxy    5 Debian dockerd 20.10 pulling from Debian's docker-registry in proxy mode
#            (`proxy: remoteurl:`, a pull-through cache) on a 6th host of the LAN.
#
# Layout, per way W (1 berth, 2 direct, 3 proxy):
#
#   switch ns: br0 ─┬─ p1 ── veth ── host ns 1: eth0 10.78.W.1  daemon
#                   ├─ ...                ...
#                   ├─ p5 ── veth ── host ns 5: eth0 10.78.W.5  daemon
#                   └─ p6 ── veth ── host ns 6: eth0 10.78.W.6  docker-registry :5000 (proxy)
#
# The registry (the fixture's, on the host loopback) is reached only through a counting
# proxy (bench/counting_proxy.py) forwarded into the namespaces at 127.0.0.1:PORT
# (bench/netns_forward.py): that path is "the uplink", and the proxy's log gives the
# upstream bytes and GETs. Everything else crosses the veth LAN. Each round starts every
# daemon and the cache from empty data roots (cold), waits until the cluster has formed
# (berth: every mirror sees its 4 peers), then times from the start of the 5 `docker pull`s
# to the end of the last; every node's image ID is checked against the fixture's config
# digest. Rounds alternate the order of the three ways.
#
# dockerd's --registry-mirror applies to Docker Hub only, so in `proxy` the dockerds pull
# `10.78.3.6:5000/big:latest` (the cache's name for the image) with it as an insecure
# registry; berth and `direct` pull `127.0.0.1:PORT/big:latest`.
#
#   bash bench/cluster_mirror.sh                        # builds berthd (release)
#   BERTHD=reltarget/release/berthd RUNS=3 bash bench/cluster_mirror.sh
#   WAYS="berth direct" bash bench/cluster_mirror.sh
#
# Cleans up everything it started on any exit: daemons and their containerd (by PID),
# mounts below its dirs, the namespaces (with them the veths and bridges).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."
WAYS=${WAYS:-"berth direct proxy"}
if [ -z "${BERTH_TEST_FIXTURE:-}" ]; then
    if [[ " $WAYS " == *" berth "* ]] && [ -z "${BERTHD:-}" ]; then
        cargo build -q --release --workspace --bins   # berthd and its berth-shim
    fi
    [ -x target/debug/berth-fixture ] || cargo build -q -p berth-testkit --bin berth-fixture
    exec ./target/debug/berth-fixture run -- bash "$0" "$@"
fi
BERTHD=${BERTHD:-target/release/berthd}
runs=${RUNS:-3}
reg=$BERTH_TEST_REGISTRY
docker=$(command -v docker)
tag=bcm$$
work=$(mktemp -d "${TMPDIR:-/tmp}/berth-bench-cmirror.XXXXXX")
run_dir=$(mktemp -d /run/bcmXXXX)
log() { echo "cluster_mirror.sh: $*" >&2; }
big_config=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['images']['big:latest']['config_digest'])" "$BERTH_TEST_FIXTURE")
big_layer=$(python3 -c "import json,sys; i=json.load(open(sys.argv[1]))['images']['big:latest']; print(max(i['layers'], key=lambda l: l['size'])['digest'])" "$BERTH_TEST_FIXTURE")
image_bytes=$(python3 -c "import json,sys; print(sum(l['size'] for l in json.load(open(sys.argv[1]))['images']['big:latest']['layers']))" "$BERTH_TEST_FIXTURE")

declare -A pid    # "$way$i" -> daemon PID
netns=()
aux_pids=()       # proxies, forwarders, docker-registry

ns_name() { echo "$tag-$1$2"; }
sock() { echo "$work/$1$2/sock"; }
D() { local w=$1 i=$2; shift 2; DOCKER_HOST=unix://$(sock "$w" "$i") DOCKER_CONFIG=$work/docker-config "$docker" "$@"; }
subnet() { case $1 in berth) echo 1 ;; direct) echo 2 ;; proxy) echo 3 ;; esac; }
addr() { echo "10.78.$(subnet "$1").$2"; }
engine() { [ "$1" = berth ] && echo berth || echo dockerd; }

leftover_pids() {
    local w=$1 i=$2 p
    for p in /proc/[0-9]*; do
        [ "${p#/proc/}" = $$ ] && continue
        if tr '\0' ' ' 2>/dev/null <"$p/cmdline" | grep -qE "($work/$w$i/|$run_dir/$w$i)( |/|$)"; then
            echo "${p#/proc/}"
        fi
    done
}

stop_host() {
    local w=$1 i=$2 p=${pid[$1$2]:-} n left
    if [ -n "$p" ]; then
        kill -TERM "$p" 2>/dev/null || true
        for _ in $(seq 1 200); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$p" 2>/dev/null || true
        unset "pid[$w$i]"
    fi
    for n in $(seq 1 50); do
        left=$(leftover_pids "$w" "$i")
        [ -z "$left" ] && break
        # shellcheck disable=SC2086
        kill -9 $left 2>/dev/null || true
        sleep 0.1
    done
    grep -E " ($work/$w$i|$run_dir/$w$i)" /proc/self/mounts | cut -d' ' -f2 | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
}

stop_aux() {
    local p
    for p in "${aux_pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${aux_pids[@]}"; do wait "$p" 2>/dev/null || true; done
    aux_pids=()
}

cleanup() {
    set +e
    local k n
    for k in "${!pid[@]}"; do stop_host "${k%?}" "${k: -1}"; done
    stop_aux
    grep -E " ($work|$run_dir)" /proc/self/mounts | cut -d' ' -f2 | sort -r | xargs -r -n1 umount -l 2>/dev/null
    for n in "${netns[@]}"; do ip netns del "$n" 2>/dev/null; done
    rm -rf "$work" "$run_dir"
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }'; }
mib() { awk -v b="$1" 'BEGIN {printf "%.1f", b/1048576}'; }

make_lan() {
    local w=$1 sw i ns
    sw=$(ns_name "$w" sw)
    ip netns add "$sw"; netns+=("$sw")
    ip -n "$sw" link set lo up
    ip -n "$sw" link add br0 type bridge
    ip -n "$sw" link set br0 up
    for i in 1 2 3 4 5 6; do
        ns=$(ns_name "$w" "$i")
        ip netns add "$ns"; netns+=("$ns")
        ip -n "$ns" link set lo up
        ip -n "$sw" link add "p$i" type veth peer name eth0 netns "$ns"
        ip -n "$sw" link set "p$i" master br0 up
        ip -n "$ns" addr add "$(addr "$w" "$i")/24" dev eth0
        ip -n "$ns" link set eth0 up
    done
}

# start_uplink W: a counting proxy to the registry, forwarded into W's 6 hosts; sets
# uplink (127.0.0.1:PORT) and uplink_log.
start_uplink() {
    local w=$1 i names=()
    uplink_log=$work/uplink-$w.log
    rm -f "$work/uplink.port" "$uplink_log"; touch "$uplink_log"
    python3 "$here/counting_proxy.py" "$work/uplink.port" "$reg" "$uplink_log" >/dev/null 2>&1 &
    aux_pids+=($!)
    for _ in $(seq 100); do [ -s "$work/uplink.port" ] && break; sleep 0.05; done
    uplink=127.0.0.1:$(cat "$work/uplink.port")
    for i in 1 2 3 4 5 6; do names+=("$(ns_name "$w" "$i")"); done
    python3 "$here/netns_forward.py" "$uplink" "${names[@]}" >"$work/fwd-$w.log" 2>&1 &
    aux_pids+=($!)
    for _ in $(seq 1 100); do grep -q ready "$work/fwd-$w.log" && return 0; sleep 0.05; done
    log "forwarder did not start: $(cat "$work/fwd-$w.log")"; return 1
}

# The pull-through cache on host 6 of the proxy LAN, empty.
start_cache() {
    local dir=$work/proxy6
    rm -rf "$dir"   # cold: an empty cache each round
    mkdir -p "$dir/data"
    cat >"$dir/config.yml" <<CONF
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
http:
  addr: 0.0.0.0:5000
proxy:
  remoteurl: http://$uplink
CONF
    nsenter --net=/run/netns/"$(ns_name proxy 6)" docker-registry serve "$dir/config.yml" >"$dir/log" 2>&1 &
    aux_pids+=($!)
    for _ in $(seq 200); do
        nsenter --net=/run/netns/"$(ns_name proxy 6)" curl -sf "http://127.0.0.1:5000/v2/" >/dev/null && return 0
        sleep 0.05
    done
    log "docker-registry did not start: $(cat "$dir/log")"; return 1
}

start_host() {
    local w=$1 i=$2 dir=$work/$1$2 rdir=$run_dir/$1$2
    rm -rf "$dir" "$rdir"; mkdir -p "$dir" "$rdir"
    case $(engine "$w") in
    dockerd)
        echo "{\"deprecated-key-path\": \"$dir/key.json\"}" >"$dir/daemon.json"
        nsenter --net=/run/netns/"$(ns_name "$w" "$i")" dockerd \
            --data-root "$dir/data" --exec-root "$rdir" --pidfile "$dir/pid" \
            -H "unix://$dir/sock" --config-file "$dir/daemon.json" \
            --iptables=false --ip6tables=false --bridge=none \
            --exec-opt native.cgroupdriver=cgroupfs \
            --insecure-registry "$(addr proxy 6):5000" >>"$dir/log" 2>&1 &
        ;;
    berth)
        nsenter --net=/run/netns/"$(ns_name "$w" "$i")" "$BERTHD" \
            --data-root "$dir/data" --exec-root "$rdir" --pidfile "$dir/pid" \
            --host "unix://$dir/sock" --log-level warn >>"$dir/log" 2>&1 &
        ;;
    esac
    pid[$w$i]=$!
    disown "$!"
    for _ in $(seq 1 600); do
        D "$w" "$i" version >/dev/null 2>&1 && return 0
        kill -0 "${pid[$w$i]}" 2>/dev/null || break
        sleep 0.1
    done
    log "$w host $i did not start: $(tail -20 "$dir/log")"; return 1
}

mirror_peers() {
    nsenter --net=/run/netns/"$(ns_name berth "$1")" curl -sf http://127.0.0.1:5001/metrics 2>/dev/null \
        | awk '$1 == "berth_mirror_peers" {print $2}'
}

form_berth() {
    local i t
    D berth 1 swarm init --advertise-addr "$(addr berth 1)" >/dev/null
    t=$(D berth 1 swarm join-token -q worker)
    for i in 2 3 4 5; do
        D berth "$i" swarm join --token "$t" --advertise-addr "$(addr berth "$i")" "$(addr berth 1):2377" >/dev/null
    done
    for i in 1 2 3 4 5; do
        for _ in $(seq 1 600); do [ "$(mirror_peers "$i")" = 4 ] && break; sleep 0.1; done
        [ "$(mirror_peers "$i")" = 4 ] || { log "berth host $i: mirror peers $(mirror_peers "$i")"; return 1; }
    done
}

# round W: one cold 5-host pull; appends "wall bytes gets" to $work/result-W.
round() {
    local w=$1 i ref t0 wall fail=0 ps=()
    start_uplink "$w"
    ref=$uplink/big:latest
    if [ "$w" = proxy ]; then start_cache; ref=$(addr proxy 6):5000/big:latest; fi
    for i in 1 2 3 4 5; do start_host "$w" "$i" & ps+=($!); done
    for p in "${ps[@]}"; do wait "$p" || fail=1; done
    # start_host ran in subshells: find the daemons' PIDs from their pidfiles.
    for i in 1 2 3 4 5; do
        for _ in $(seq 1 100); do [ -s "$work/$w$i/pid" ] && break; sleep 0.05; done
        pid[$w$i]=$(cat "$work/$w$i/pid")
    done
    [ "$fail" = 0 ] || { log "$w: a daemon did not start"; return 1; }
    [ "$w" = berth ] && form_berth
    ps=()
    t0=$(date +%s%N)
    for i in 1 2 3 4 5; do D "$w" "$i" pull -q "$ref" >"$work/pull-$w$i.out" 2>&1 & ps+=($!); done
    for p in "${ps[@]}"; do wait "$p" || fail=1; done
    wall=$(ms "$t0")
    [ "$fail" = 0 ] || { log "$w: a pull failed: $(cat "$work"/pull-"$w"*.out)"; return 1; }
    for i in 1 2 3 4 5; do
        local id; id=$(D "$w" "$i" image inspect --format '{{.Id}}' "$ref")
        [ "$id" = "$big_config" ] || { log "$w host $i: image id $id, want $big_config"; return 1; }
    done
    local bytes gets
    bytes=$(awk '{s+=$1} END {print s+0}' "$uplink_log")
    gets=$(grep -c "^[0-9]* GET .*/blobs/$big_layer" "$uplink_log" || true)
    echo "$wall $bytes $gets" >>"$work/result-$w"
    log "$w: wall $wall ms, upstream $bytes bytes, $gets GETs of the big layer"
    for i in 1 2 3 4 5; do stop_host "$w" "$i"; done
    stop_aux
}

for w in $WAYS; do make_lan "$w"; done
order=($WAYS)
for r in $(seq 1 "$runs"); do
    for w in "${order[@]}"; do round "$w"; done
    order=("${order[@]:1}" "${order[0]}")   # rotate who goes first
done

echo "5 hosts cold-pulling big:latest (${image_bytes} bytes of layers) at once, each in its own network namespace on a veth LAN;"
echo "$runs rounds, the ways taking turns; medians (runs in order). Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
echo
echo "| way | wall ms | upstream MiB | upstream / image | GETs of the big layer | runs (wall ms) |"
echo "|---|---|---|---|---|---|"
declare -A wm
for w in $WAYS; do
    walls=$(awk '{print $1}' "$work/result-$w" | xargs)
    bytes=$(awk '{print $2}' "$work/result-$w" | xargs)
    gets=$(awk '{print $3}' "$work/result-$w" | xargs)
    # shellcheck disable=SC2086
    wm[$w]=$(median $walls)
    # shellcheck disable=SC2086
    b=$(median $bytes)
    case $w in
    berth) what="berth: 5 berthd in a cluster" ;;
    direct) what="5 dockerd pulling directly" ;;
    proxy) what="5 dockerd behind docker-registry (proxy mode)" ;;
    esac
    # shellcheck disable=SC2086
    echo "| $what | ${wm[$w]} | $(mib "$b") | $(ratio "$b" "$image_bytes") | $(median $gets) | $walls |"
done
echo
for o in direct proxy; do
    if [ -n "${wm[berth]:-}" ] && [ -n "${wm[$o]:-}" ]; then
        echo "berth / $o: wall $(ratio "${wm[berth]}" "${wm[$o]}")"
    fi
done
echo "Versions: docker CLI $("$docker" version --format '{{.Client.Version}}' 2>/dev/null); $(dockerd --version); $(docker-registry --version 2>/dev/null | head -1); berthd: $BERTHD."
