#!/usr/bin/env bash
# Services on 5 hosts (3 managers + 2 workers): berth against Debian's dockerd 20.10 in swarm
# mode, the same layout for both, in one run (one engine's cluster after the other).
#
#   (a) node loss: a worker's link cut and its daemon killed with SIGKILL; the time from the
#       kill until every replica of a 10-replica service runs again on the other nodes
#       (a task counts once the node that runs it reports it running). Median of RUNS.
#   (c) `service create --replicas 50` until all 50 run on the 5 nodes. Median of RUNS.
#   (d) a service on an overlay network, reached by name from a client container on the same
#       network on another host: the time from `docker service create` (one replica, a busybox
#       httpd, constrained to the workers; the client runs on host 1, a manager) until the
#       client gets an answer by the service's name: one `docker exec` started before the
#       create starts a `wget` every 50 ms inside the client and reports the earliest
#       answer's time. berth: the name is the service's VIP
#       (nftables DNAT in the client's namespace) and, as a second row, the same with
#       `--endpoint-mode dnsrr` (the name resolves to the task's address); dockerd: dnsrr
#       only (no IPVS here, so its VIP cannot answer). The time until the task runs (the
#       tasks API, polled from the host) is given beside it. Median of RUNS.
#
# Layout, per engine:
#
#   switch ns: br0 ─┬─ p1 ── veth ── host ns 1: eth0 10.79.E.1  daemon (manager, leader)
#                   ├─ p2 ── ...     host ns 2: eth0 10.79.E.2  daemon (manager)
#                   ├─ p3 ── ...     host ns 3: eth0 10.79.E.3  daemon (manager)
#                   ├─ p4 ── ...     host ns 4: eth0 10.79.E.4  daemon (worker)
#                   └─ p5 ── ...     host ns 5: eth0 10.79.E.5  daemon (worker)
#
# The 10.79.E.0/24 addresses exist only inside those namespaces. Each daemon has its own data
# root, exec root, pidfile and unix socket; the fixture registry (host loopback) is forwarded
# into every host namespace at the same 127.0.0.1:PORT (bench/netns_forward.py). The image is
# pulled on every node before anything is timed, so pulls are not measured.
#
# dockerd in swarm mode on this kernel: there is no IPVS, so the services attach to no network
# and publish no ports (a task without a network has no VIP, so IPVS is never asked for; the
# script passes `--endpoint-mode dnsrr` to dockerd to make that explicit). `--iptables=false`
# is fine for this: swarm forms, joins and schedules (only the ingress/VIP data path would
# need iptables and IPVS). `swarm init`/`join` get `--advertise-addr`, the namespace's veth
# address, on both engines (dockerd refuses to guess when it cannot pick one address).
# dockerd is started with the cgroupfs driver and a cgroup parent of its own per host, and
# with the registry as `--insecure-registry`. Swarm's own timers are left at their defaults
# (dispatcher heartbeat period 5 s, the figure that dominates (a)).
#
#   bash bench/services.sh                    # both engines; builds berthd (release)
#   ENGINES=dockerd RUNS=3 bash bench/services.sh
#   WHAT="d" bash bench/services.sh          # only some of (a), (c), (d); default all
#   HOLD=600 WHAT=d bash bench/services.sh   # on a (d) failure, keep the hosts 600 s to look
#   BERTHD=target/debug/berthd bash bench/services.sh
#
# Cleans up everything it started, on any exit: services, daemons and their containerd/shims
# (by PID), containers (by cgroup), mounts below its dirs, cgroup parents, the namespaces
# (with them the veths, bridges and the nft/iptables state dockerd made inside them).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."
ENGINES=${ENGINES:-"berth dockerd"}
if [ -z "${BERTH_TEST_FIXTURE:-}" ]; then
    if [[ " $ENGINES " == *" berth "* ]] && [ -z "${BERTHD:-}" ]; then
        cargo build -q --release --workspace --bins
    fi
    [ -x target/debug/berth-fixture ] || cargo build -q --workspace --bins
    exec ./target/debug/berth-fixture run -- bash "$0" "$@"
fi
BERTHD=${BERTHD:-target/release/berthd}
runs=${RUNS:-5}
replicas=${REPLICAS:-10}
many=${MANY:-50}
what=" ${WHAT:-a c d} "
reg=$BERTH_TEST_REGISTRY
img=$reg/busybox:latest
docker=$(command -v docker)
tag=bsv$$
work=$(mktemp -d "${TMPDIR:-/tmp}/berth-bench-services.XXXXXX")
run_dir=$(mktemp -d /run/bsXXXX)
log() { echo "services.sh: $*" >&2; }

declare -A pid    # "$eng$i" -> daemon PID
netns=()          # every namespace made, for cleanup
fwd_pids=()

ns_name() { echo "$tag-$1$2"; }           # ns_name ENGINE HOST (HOST "sw" = the switch)
sock() { echo "$work/$1$2/sock"; }
D() { local e=$1 i=$2; shift 2; DOCKER_HOST=unix://$(sock "$e" "$i") DOCKER_CONFIG=$work/docker-config "$docker" "$@"; }
subnet() { case $1 in berth) echo 1 ;; dockerd) echo 2 ;; esac; }
addr() { echo "10.79.$(subnet "$1").$2"; }
cgroup_parent() { echo "$tag-$1$2"; }

# PIDs of processes a host left behind: naming its dirs on their command line (containerd,
# shims) or living in its cgroup parent (containers).
leftover_pids() {
    local e=$1 i=$2 p cg
    cg="/$(cgroup_parent "$e" "$i")/"
    for p in /proc/[0-9]*; do
        [ "${p#/proc/}" = $$ ] && continue
        if tr '\0' ' ' 2>/dev/null <"$p/cmdline" | grep -qE "($work/$e$i/|$run_dir/$e$i)( |/|$)" \
            || grep -qF "$cg" "$p/cgroup" 2>/dev/null; then
            echo "${p#/proc/}"
        fi
    done
}

kill_leftovers() {
    local e=$1 i=$2 n
    for n in $(seq 1 50); do
        local left
        left=$(leftover_pids "$e" "$i")
        [ -z "$left" ] && return 0
        # shellcheck disable=SC2086
        kill -9 $left 2>/dev/null || true
        sleep 0.1
    done
}

stop_host() {
    local e=$1 i=$2 p=${pid[$1$2]:-}
    if [ -n "$p" ]; then
        kill -TERM "$p" 2>/dev/null || true
        for _ in $(seq 1 200); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$p" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        unset "pid[$e$i]"
    fi
    kill_leftovers "$e" "$i"
}

cleanup() {
    set +e
    local k e i
    for k in "${!pid[@]}"; do
        e=${k%?}; i=${k: -1}
        [ -S "$(sock "$e" "$i")" ] && D "$e" "$i" ps -aq 2>/dev/null | xargs -r env DOCKER_HOST=unix://$(sock "$e" "$i") "$docker" rm -f >/dev/null 2>&1
    done
    for k in "${!pid[@]}"; do stop_host "${k%?}" "${k: -1}"; done
    for e in berth dockerd; do for i in 1 2 3 4 5; do kill_leftovers "$e" "$i"; done; done
    for p in "${fwd_pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    grep -E " ($work|$run_dir)" /proc/self/mounts | cut -d' ' -f2 | sort -r | xargs -r -n1 umount -l 2>/dev/null
    for e in berth dockerd; do for i in 1 2 3 4 5; do
        for c in /sys/fs/cgroup/*/"$(cgroup_parent "$e" "$i")"; do
            [ -d "$c" ] && find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null
        done
    done; done
    for n in "${netns[@]}"; do ip netns del "$n" 2>/dev/null; done
    rm -rf "$work" "$run_dir"
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }'; }
secs() { awk -v a="$1" 'BEGIN { printf "%.1f", a / 1000 }'; }

# Makes the switch and 5 host namespaces for engine E, and forwards the registry into them.
make_lan() {
    local e=$1 sw i ns
    sw=$(ns_name "$e" sw)
    ip netns add "$sw"; netns+=("$sw")
    ip -n "$sw" link set lo up
    ip -n "$sw" link add br0 type bridge
    ip -n "$sw" link set br0 up
    local names=()
    for i in 1 2 3 4 5; do
        ns=$(ns_name "$e" "$i")
        ip netns add "$ns"; netns+=("$ns")
        ip -n "$ns" link set lo up
        ip -n "$sw" link add "p$i" type veth peer name eth0 netns "$ns"
        ip -n "$sw" link set "p$i" master br0 up
        ip -n "$ns" addr add "$(addr "$e" "$i")/24" dev eth0
        ip -n "$ns" link set eth0 up
        names+=("$ns")
    done
    python3 "$here/netns_forward.py" "$reg" "${names[@]}" >"$work/fwd-$e.log" 2>&1 &
    fwd_pids+=($!)
    for _ in $(seq 1 100); do grep -q ready "$work/fwd-$e.log" && return 0; sleep 0.05; done
    log "forwarder did not start: $(cat "$work/fwd-$e.log")"; return 1
}

cut_link() { ip -n "$(ns_name "$1" sw)" link set "p$2" down; }
heal_link() { ip -n "$(ns_name "$1" sw)" link set "p$2" up; }

start_host() {
    local e=$1 i=$2 dir=$work/$1$2 rdir=$run_dir/$1$2
    mkdir -p "$dir" "$rdir"
    case $e in
    dockerd)
        # dockerd 20.10 would otherwise write its libtrust key to /etc/docker/key.json.
        echo "{\"deprecated-key-path\": \"$dir/key.json\"}" >"$dir/daemon.json"
        nsenter --net=/run/netns/"$(ns_name "$e" "$i")" dockerd \
            --data-root "$dir/data" --exec-root "$rdir" --pidfile "$dir/pid" \
            -H "unix://$dir/sock" --config-file "$dir/daemon.json" \
            --iptables=false --ip6tables=false \
            --exec-opt native.cgroupdriver=cgroupfs --cgroup-parent "/$(cgroup_parent "$e" "$i")" \
            --insecure-registry "$reg" >>"$dir/log" 2>&1 &
        ;;
    berth)
        nsenter --net=/run/netns/"$(ns_name "$e" "$i")" "$BERTHD" \
            --data-root "$dir/data" --exec-root "$rdir" --pidfile "$dir/pid" \
            --host "unix://$dir/sock" --log-level info >>"$dir/log" 2>&1 &
        ;;
    esac
    pid[$e$i]=$!
    disown "$!"   # no job-control noise when a test kills it; reaped by bash anyway
    for _ in $(seq 1 600); do
        D "$e" "$i" version >/dev/null 2>&1 && return 0
        kill -0 "${pid[$e$i]}" 2>/dev/null || break
        sleep 0.1
    done
    log "$e host $i did not start: $(tail -20 "$dir/log")"; return 1
}

node_id() { D "$1" "$2" info --format '{{.Swarm.NodeID}}'; }

form() {
    local e=$1 i mt wt
    D "$e" 1 swarm init --advertise-addr "$(addr "$e" 1)" >/dev/null
    mt=$(D "$e" 1 swarm join-token -q manager)
    wt=$(D "$e" 1 swarm join-token -q worker)
    for i in 2 3 4 5; do
        local t=$wt; [ "$i" -le 3 ] && t=$mt
        D "$e" "$i" swarm join --token "$t" --advertise-addr "$(addr "$e" "$i")" "$(addr "$e" 1):2377" >/dev/null
    done
    for _ in $(seq 1 600); do
        [ "$(D "$e" 1 node ls --format '{{.Status}}' 2>/dev/null | grep -c '^Ready$')" = 5 ] && return 0
        sleep 0.1
    done
    log "$e: 5 nodes never ready: $(D "$e" 1 node ls)"; return 1
}

# "NODEID STATE" for every task of service $3 whose desired state is running (one API call).
tasks() {
    local e=$1 i=$2 svc=$3
    curl -sf --unix-socket "$(sock "$e" "$i")" -G "http://x/tasks" \
        --data-urlencode "filters={\"service\":[\"$svc\"],\"desired-state\":[\"running\"]}" \
        | jq -r '.[] | "\(.NodeID) \(.Status.State)"'
}

# Waits until service $3 has $4 running tasks, none on node $5 (may be empty); prints the
# elapsed ms since $6 (date +%s%N), or fails after 180 s.
wait_running() {
    local e=$1 i=$2 svc=$3 want=$4 not=${5:-} t0=$6 n
    for _ in $(seq 1 3600); do
        n=$(tasks "$e" "$i" "$svc" 2>/dev/null | awk -v not="$not" '$2 == "running" && $1 != not' | wc -l)
        if [ "$n" = "$want" ]; then ms "$t0"; return 0; fi
        sleep 0.05
    done
    log "$e: $svc never reached $want running (last $n): $(D "$e" "$i" service ps "$svc" 2>&1 | head -30)"
    return 1
}

# Removes service $3 and waits until no node runs a container of it.
remove_service() {
    local e=$1 i=$2 svc=$3 h
    D "$e" "$i" service rm "$svc" >/dev/null
    for h in 1 2 3 4 5; do
        for _ in $(seq 1 600); do
            [ -z "$(D "$e" "$h" ps -q --filter "label=com.docker.swarm.service.name=$svc" 2>/dev/null)" ] && break
            sleep 0.1
        done
    done
}

svc_flags() { [ "$1" = dockerd ] && echo "--endpoint-mode dnsrr"; return 0; }

declare -A a_ms c_ms
bench_engine() {
    local e=$1 i r
    log "$e: starting 5 hosts"
    make_lan "$e"
    for i in 1 2 3 4 5; do start_host "$e" "$i"; done
    form "$e"
    for i in 1 2 3 4 5; do D "$e" "$i" pull -q "$img" >/dev/null; done
    [[ $what == *" d "* ]] && bench_vip "$e"
    [[ $what == *" c "* ]] && bench_create "$e"
    [[ $what == *" a "* ]] && bench_node_loss "$e"
    for i in 1 2 3 4 5; do
        D "$e" "$i" ps -aq 2>/dev/null | xargs -r env DOCKER_HOST=unix://$(sock "$e" "$i") "$docker" rm -f >/dev/null 2>&1 || true
    done
    for i in 1 2 3 4 5; do stop_host "$e" "$i"; done
}

bench_create() {
    local e=$1 r
    log "$e: (c) create --replicas $many, $runs runs"
    local cs=()
    for r in $(seq 1 "$runs"); do
        local t0 v
        t0=$(date +%s%N)
        # shellcheck disable=SC2046
        D "$e" 1 service create --detach -q --name "c$r" --replicas "$many" $(svc_flags "$e") "$img" sleep 1000000 >/dev/null
        v=$(wait_running "$e" 1 "c$r" "$many" "" "$t0")
        cs+=("$v"); log "$e: (c) run $r: $v ms"
        remove_service "$e" 1 "c$r"
    done
    c_ms[$e]="${cs[*]}"
}

bench_node_loss() {
    local e=$1 r
    log "$e: (a) node loss, $runs runs"
    local as=()
    for r in $(seq 1 "$runs"); do
        local victim=$(( 4 + (r % 2) )) vid t0 v
        vid=$(node_id "$e" "$victim")
        # shellcheck disable=SC2046
        D "$e" 1 service create --detach -q --name "a$r" --replicas "$replicas" $(svc_flags "$e") "$img" sleep 1000000 >/dev/null
        wait_running "$e" 1 "a$r" "$replicas" "" "$(date +%s%N)" >/dev/null
        local on_victim
        on_victim=$(tasks "$e" 1 "a$r" | awk -v v="$vid" '$1 == v' | wc -l)
        cut_link "$e" "$victim"
        t0=$(date +%s%N)
        kill -9 "${pid[$e$victim]}"
        v=$(wait_running "$e" 1 "a$r" "$replicas" "$vid" "$t0")
        as+=("$v"); log "$e: (a) run $r: $v ms (host $victim had $on_victim of $replicas)"
        for _ in $(seq 1 50); do kill -0 "${pid[$e$victim]}" 2>/dev/null || break; sleep 0.1; done
        unset "pid[$e$victim]"
        # The host comes back: its daemon restarted on the same data root (dockerd's
        # containerd and shims went with the kill; berth's task containers live on).
        [ "$e" = dockerd ] && kill_leftovers "$e" "$victim"
        heal_link "$e" "$victim"
        start_host "$e" "$victim"
        for _ in $(seq 1 600); do
            [ "$(D "$e" 1 node ls --format '{{.Status}}' 2>/dev/null | grep -c '^Ready$')" = 5 ] && break
            sleep 0.1
        done
        remove_service "$e" 1 "a$r"
    done
    a_ms[$e]="${as[*]}"
}

# (d) for engine $1 in endpoint mode $2 (vip or dnsrr): RUNS times a 1-replica httpd service
# on the overlay network, the client on host 1 polling http://NAME:8080/ by name.
declare -A d_ms d_run_ms
bench_vip_mode() {
    local e=$1 mode=$2 r key=$1-$2
    local ds=() rs=()
    for r in $(seq 1 "$runs"); do
        local svc=d$mode$r t0 v run_ms
        rm -f "$work/d-done"
        # The poller starts first and fails (the name is unknown, or nothing answers yet) until
        # the service answers. It starts an attempt every 50 ms without waiting for the last
        # (an attempt sent before the path exists can hang until its timeout: busybox's
        # timeout counts whole seconds, and Debian's busybox 1.35 wget crashes with its own
        # -T), and prints the uptime (/proc/uptime, the same clock inside the container,
        # 10 ms steps) at the earliest answer, so the exec's own latency is not counted.
        D "$e" 1 exec vipclient sh -c "
            rm -f /tmp/ok.*; i=0
            while ! ls /tmp/ok.* >/dev/null 2>&1; do
                i=\$((i + 1))
                (timeout 3 wget -q -O /dev/null http://$svc:8080/ && cut -d' ' -f1 /proc/uptime >/tmp/ok.\$i) >/dev/null 2>&1 </dev/null &
                sleep 0.05
            done
            sleep 0.2; cat /tmp/ok.* | sort -n | head -1" >"$work/d-done" &
        local poller=$!
        sleep 0.5
        local up0
        up0=$(cut -d' ' -f1 /proc/uptime)
        t0=$(date +%s%N)
        # shellcheck disable=SC2046
        D "$e" 1 service create --detach -q --name "$svc" --replicas 1 --network vipnet \
            --constraint node.role==worker $( [ "$mode" = dnsrr ] && echo "--endpoint-mode dnsrr" ) \
            "$img" sh -c 'mkdir -p /www && hostname >/www/index.html && exec httpd -f -p 8080 -h /www' >/dev/null
        run_ms=$(wait_running "$e" 1 "$svc" 1 "" "$t0")
        local waited=0
        while kill -0 "$poller" 2>/dev/null && [ "$waited" -lt 1200 ]; do sleep 0.05; waited=$((waited + 1)); done
        if [ ! -s "$work/d-done" ]; then
            kill "$poller" 2>/dev/null || true
            log "$e ($mode): $svc never answered by name: $(D "$e" 1 service ps "$svc" 2>&1 | head)"
            log "client: $(D "$e" 1 exec vipclient sh -c "cat /etc/resolv.conf; ip -4 addr; ip route; nslookup $svc; timeout 2 wget -O - http://$svc:8080/ 2>&1" 2>&1)"
            [ -n "${HOLD:-}" ] && { log "holding for $HOLD s (work dir $work)"; sleep "$HOLD"; }
            return 1
        fi
        wait "$poller" 2>/dev/null || true
        v=$(awk -v a="$(cat "$work/d-done")" -v b="$up0" 'BEGIN { printf "%d", (a - b) * 1000 }')
        ds+=("$v"); rs+=("$run_ms")
        log "$e: (d, $mode) run $r: answering after $v ms (task running after $run_ms ms); load $(cut -d' ' -f1 /proc/loadavg)"
        remove_service "$e" 1 "$svc"
    done
    d_ms[$key]="${ds[*]}"
    d_run_ms[$key]="${rs[*]}"
}

bench_vip() {
    local e=$1
    log "$e: (d) service answering by name on an overlay, $runs runs"
    D "$e" 1 network create -d overlay --attachable vipnet >/dev/null
    D "$e" 1 run -d -q --name vipclient --network vipnet "$img" sleep 1000000 >/dev/null
    case $e in
    berth) bench_vip_mode "$e" vip; bench_vip_mode "$e" dnsrr ;;
    dockerd) bench_vip_mode "$e" dnsrr ;;
    esac
    D "$e" 1 rm -f vipclient >/dev/null
    D "$e" 1 network rm vipnet >/dev/null || true
}

for e in $ENGINES; do bench_engine "$e"; done

echo "5 hosts (3 managers + 2 workers), each daemon in its own network namespace on a veth LAN;"
echo "$runs runs each, median ms (runs in order). Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
echo
echo "| what | berth | dockerd (swarm) | berth / dockerd |"
echo "|---|---|---|---|"
row() {
    local what=$1 b=$2 d=$3 bm=- dm=-
    # shellcheck disable=SC2086
    [ -n "$b" ] && bm=$(median $b)
    # shellcheck disable=SC2086
    [ -n "$d" ] && dm=$(median $d)
    echo "| $what | $bm (${b:-not run}) | $dm (${d:-not run}) | $( [ "$bm" != - ] && [ "$dm" != - ] && ratio "$bm" "$dm" || echo -) |"
}
[[ $what == *" a "* ]] && row "(a) node loss: kill -9 + link cut of a worker until $replicas/$replicas run elsewhere" "${a_ms[berth]:-}" "${a_ms[dockerd]:-}"
[[ $what == *" c "* ]] && row "(c) \`service create --replicas $many\` until $many run" "${c_ms[berth]:-}" "${c_ms[dockerd]:-}"
if [[ $what == *" d "* ]]; then
    row "(d) \`service create\` on an overlay until the client on another host gets an answer by name: berth VIP vs dockerd dnsrr" "${d_ms[berth-vip]:-}" "${d_ms[dockerd-dnsrr]:-}"
    row "(d) the same, both dnsrr" "${d_ms[berth-dnsrr]:-}" "${d_ms[dockerd-dnsrr]:-}"
    row "(d) \`service create\` until its task runs (berth VIP runs / dockerd)" "${d_run_ms[berth-vip]:-}" "${d_run_ms[dockerd-dnsrr]:-}"
fi
echo
echo "Versions: docker CLI $("$docker" version --format '{{.Client.Version}}' 2>/dev/null); $(dockerd --version); berthd: $BERTHD."
