#!/usr/bin/env python3
"""Load figures for bench/load.sh (issue #19): N concurrent GET /containers/json on the
daemon's unix socket (threads, one connection each, as the docker CLI sends it), M
concurrent `docker run --rm` through the docker CLI, and the daemon's RSS sampled from
/proc every 20 ms. Prints a Markdown table: latency p50/p99 per call, failures, idle,
peak and after RSS.

    load.py SOCKET PID IMAGE [PS_CLIENTS [RUNS [ROUNDS]]]

With ROUNDS > 1 the whole load repeats; the table is the first round's, and the RSS after
each round is printed (growth from round to round would be a leak, a constant offset is
the allocator keeping pages).
"""
import os
import socket
import subprocess
import sys
import threading
import time

sock, pid, image = sys.argv[1], int(sys.argv[2]), sys.argv[3]
n_ps = int(sys.argv[4]) if len(sys.argv) > 4 else 1000
n_run = int(sys.argv[5]) if len(sys.argv) > 5 else 100
rounds = int(sys.argv[6]) if len(sys.argv) > 6 else 1
docker = os.environ.get("DOCKER", "docker")
env = dict(os.environ, DOCKER_HOST="unix://" + sock)


def status_field(name):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    return 0


def rss_kib():
    return status_field("VmRSS")


def threads():
    return status_field("Threads")


def anon_file():
    """RssAnon and RssFile (KiB): the daemon's own memory, and the pages of files it has
    mapped (its executable's code among them, which stay resident once run and are
    reclaimed by the kernel under pressure)."""
    return status_field("RssAnon"), status_field("RssFile")


peak = [0]
stop = threading.Event()


def sampler():
    while not stop.is_set():
        peak[0] = max(peak[0], rss_kib())
        time.sleep(0.02)


def ps_call():
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock)
    s.sendall(b"GET /v1.50/containers/json?all=1 HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n")
    out = b""
    while True:
        c = s.recv(65536)
        if not c:
            break
        out += c
    s.close()
    return out.startswith(b"HTTP/1.1 200")


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p / 100))] if xs else float("nan")


def run_ps(n):
    lat, fails = [], [0]
    lock = threading.Lock()
    go = threading.Barrier(n)

    def one():
        go.wait()
        t = time.monotonic()
        ok = False
        try:
            ok = ps_call()
        except OSError:
            pass
        d = (time.monotonic() - t) * 1000
        with lock:
            lat.append(d)
            if not ok:
                fails[0] += 1

    threading.stack_size(256 * 1024)
    ts = [threading.Thread(target=one) for _ in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return lat, fails[0]


def run_runs(n):
    lat, fails = [], 0
    procs = []
    for i in range(n):
        procs.append((time.monotonic(), subprocess.Popen(
            [docker, "run", "--rm", image, "echo", f"run-{i}"], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)))
    for t, p in procs:
        out, _ = p.communicate()
        lat.append((time.monotonic() - t) * 1000)
        if p.returncode != 0 or not out.strip().startswith(b"run-"):
            fails += 1
    return lat, fails


for _ in range(20):
    ps_call()
subprocess.run([docker, "run", "--rm", image, "true"], env=env, check=True, capture_output=True)
time.sleep(1)
idle = rss_kib()
idle_threads = threads()
idle_anon, idle_file = anon_file()
threading.Thread(target=sampler, daemon=True).start()
afters = []
for r in range(rounds):
    lat_fail = run_ps(n_ps), run_runs(n_run)
    if r == 0:
        (ps_lat, ps_fail), (run_lat, run_fail) = lat_fail
    else:
        ps_fail += lat_fail[0][1]
        run_fail += lat_fail[1][1]
    time.sleep(5)
    afters.append(rss_kib() // 1024)
after_threads = threads()
# tokio's blocking-pool threads exit 10 s after their last job: measure again once they have.
time.sleep(25)
settled = rss_kib()
settled_threads = threads()
settled_anon, settled_file = anon_file()
stop.set()
left = subprocess.run([docker, "ps", "-aq"], env=env, capture_output=True, text=True).stdout.split()
after = afters[-1] * 1024
print(f"| call | clients | p50 ms | p99 ms | failed (all rounds) |")
print(f"|---|---:|---:|---:|---:|")
print(f"| GET /containers/json | {n_ps} | {pct(ps_lat, 50):.1f} | {pct(ps_lat, 99):.1f} | {ps_fail} |")
print(f"| docker run --rm busybox echo | {n_run} | {pct(run_lat, 50):.0f} | {pct(run_lat, 99):.0f} | {run_fail} |")
print()
print(f"RSS: idle {idle // 1024} MiB, peak {peak[0] // 1024} MiB, after (5 s later) {after // 1024} MiB; after each of {rounds} rounds: {afters} MiB; 30 s after the last round {settled // 1024} MiB; threads idle {idle_threads}, 5 s after {after_threads}, 30 s after {settled_threads}; containers left: {len(left)}")
print(f"RSS split (RssAnon + RssFile): idle {idle_anon // 1024} + {idle_file // 1024} MiB, 30 s after the last round {settled_anon // 1024} + {settled_file // 1024} MiB")
