#!/usr/bin/env python3
"""Load figures for bench/load.sh (issue #19), for one or more daemons side by side: N
concurrent GET /containers/json?all=1 on the daemon's unix socket (threads, one connection
each, released at once by a barrier, at the API version the daemon reports, as the docker
CLI sends it after negotiating), then M concurrent `docker run --rm IMAGE echo run-I` through
the docker CLI; each daemon's RSS (VmRSS, /proc/PID/status) sampled every 20 ms.

    load.py IMAGE PS_CLIENTS RUNS ROUNDS NAME=SOCKET,PID[,HELPER_PID...] ...

HELPER_PIDs are daemons the engine needs beside its own (dockerd's containerd); their RSS is
reported on its own and added to the daemon's (the per-container shims of either engine are
not counted). The rounds alternate between the daemons (the first of each round rotates);
the latency table is the first round's, failures count all rounds; RSS: idle after a
warm-up, peak over the whole run, 5 s after each of the daemon's rounds (growth from round to
round would be a leak, a constant offset is the allocator keeping pages) and 30 s after the
last round (tokio's blocking threads have exited by then). With two daemons the ratios
first / second are printed.
"""
import os
import socket
import subprocess
import sys
import threading
import time

image = sys.argv[1]
n_ps, n_run, rounds = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
docker = os.environ.get("DOCKER", "docker")


def status_field(pid, name):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(name + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def request(sock, path):
    """One HTTP/1.1 GET on a fresh connection; returns the raw response."""
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n".encode())
    out = b""
    while True:
        c = s.recv(65536)
        if not c:
            break
        out += c
    s.close()
    return out


class Target:
    def __init__(self, spec):
        name, rest = spec.split("=", 1)
        parts = rest.split(",")
        self.name, self.sock = name, parts[0]
        self.pid, self.helpers = int(parts[1]), [int(p) for p in parts[2:]]
        self.env = dict(os.environ, DOCKER_HOST="unix://" + self.sock)
        self.api = self.docker("version", "--format", "{{.Server.APIVersion}}").stdout.strip()
        self.ps_path = f"/v{self.api}/containers/json?all=1"
        self.peak = self.peak_all = 0
        self.afters = []
        self.ps_fail = self.run_fail = 0
        self.ps_lat = self.run_lat = None

    def rss(self):
        return status_field(self.pid, "VmRSS")

    def rss_helpers(self):
        return sum(status_field(p, "VmRSS") for p in self.helpers)

    def sample(self):
        own, helpers = self.rss(), self.rss_helpers()
        self.peak = max(self.peak, own)
        self.peak_all = max(self.peak_all, own + helpers)

    def ps_call(self):
        return request(self.sock, self.ps_path).startswith(b"HTTP/1.1 200")

    def docker(self, *args):
        return subprocess.run([docker, *args], env=self.env, capture_output=True, text=True)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p / 100))] if xs else float("nan")


def run_ps(t, n):
    lat, fails = [], [0]
    lock = threading.Lock()
    go = threading.Barrier(n)

    def one():
        go.wait()
        t0 = time.monotonic()
        ok = False
        try:
            ok = t.ps_call()
        except OSError:
            pass
        d = (time.monotonic() - t0) * 1000
        with lock:
            lat.append(d)
            if not ok:
                fails[0] += 1

    threading.stack_size(256 * 1024)
    ts = [threading.Thread(target=one) for _ in range(n)]
    for th in ts:
        th.start()
    for th in ts:
        th.join()
    return lat, fails[0]


def run_runs(t, n):
    lat, fails = [], 0
    procs = []
    for i in range(n):
        procs.append((time.monotonic(), subprocess.Popen(
            [docker, "run", "--rm", image, "echo", f"run-{i}"], env=t.env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)))
    errors = []
    for t0, p in procs:
        out, err = p.communicate()
        lat.append((time.monotonic() - t0) * 1000)
        if p.returncode != 0 or not out.strip().startswith(b"run-"):
            fails += 1
            errors.append(err.decode(errors="replace").strip())
    for e in sorted(set(errors))[:5]:
        print(f"  {t.name}: docker run failed: {e}", file=sys.stderr)
    return lat, fails


targets = [Target(s) for s in sys.argv[5:]]
for t in targets:
    for _ in range(20):
        t.ps_call()
    t.docker("run", "--rm", image, "true").check_returncode()
time.sleep(1)
for t in targets:
    t.idle, t.idle_helpers, t.idle_threads = t.rss(), t.rss_helpers(), status_field(t.pid, "Threads")
stop = threading.Event()


def sampler():
    while not stop.is_set():
        for t in targets:
            t.sample()
        time.sleep(0.02)


threading.Thread(target=sampler, daemon=True).start()
for r in range(rounds):
    order = targets[r % len(targets):] + targets[:r % len(targets)]
    for t in order:
        print(f"round {r + 1}: {t.name} ...", file=sys.stderr, flush=True)
        ps_lat, ps_fail = run_ps(t, n_ps)
        run_lat, run_fail = run_runs(t, n_run)
        if r == 0:
            t.ps_lat, t.run_lat = ps_lat, run_lat
        t.ps_fail += ps_fail
        t.run_fail += run_fail
        time.sleep(5)
        t.afters.append((t.rss(), t.rss_helpers()))
# tokio's blocking-pool threads exit 10 s after their last job: measure again once they have.
time.sleep(25)
for t in targets:
    t.settled, t.settled_helpers = t.rss(), t.rss_helpers()
    t.settled_threads = status_field(t.pid, "Threads")
stop.set()
for t in targets:
    t.left = len(t.docker("ps", "-aq").stdout.split())


def mib(k):
    return k / 1024


def ratio(a, b):
    return f"{a / b:.2f}x" if b else "-"


names = " | ".join(t.name for t in targets)
print(f"API versions: {', '.join(f'{t.name} {t.api}' for t in targets)}; {rounds} rounds, the daemons taking turns")
print()
hdr = "| call | clients |" + "".join(f" {t.name} p50 ms | {t.name} p99 ms |" for t in targets)
sep = "|---|---:|" + "---:|---:|" * len(targets)
if len(targets) == 2:
    a, b = targets
    hdr += f" p50 {a.name} / {b.name} | p99 {a.name} / {b.name} |"
    sep += "---:|---:|"
hdr += " failed (all rounds) |"
sep += "---|"
print(hdr)
print(sep)
for label, n, attr, fail, fmt in [
    ("GET /containers/json", n_ps, "ps_lat", "ps_fail", "{:.1f}"),
    ("docker run --rm busybox echo", n_run, "run_lat", "run_fail", "{:.0f}"),
]:
    row = f"| {label} | {n:,} |"
    for t in targets:
        xs = getattr(t, attr)
        row += f" {fmt.format(pct(xs, 50))} | {fmt.format(pct(xs, 99))} |"
    if len(targets) == 2:
        a, b = (getattr(t, attr) for t in targets)
        row += f" {ratio(pct(a, 50), pct(b, 50))} | {ratio(pct(a, 99), pct(b, 99))} |"
    row += " " + ", ".join(f"{t.name} {getattr(t, fail)}" for t in targets) + " |"
    print(row)
print()
print("RSS, MiB (the daemon; with its helper daemons where it has any):")
print()
hdr = "| when |"
sep = "|---|"
for t in targets:
    hdr += f" {t.name} |"
    sep += "---:|"
    if t.helpers:
        hdr += f" {t.name} + helpers |"
        sep += "---:|"
if len(targets) == 2:
    a, b = targets
    hdr += f" {a.name} / {b.name} |"
    sep += "---:|"
    if b.helpers and not a.helpers:
        hdr += f" {a.name} / ({b.name} + helpers) |"
        sep += "---:|"
print(hdr)
print(sep)
rows = [
    ("idle", lambda t: (t.idle, t.idle + t.idle_helpers)),
    ("peak", lambda t: (t.peak, t.peak_all)),
    ("5 s after the first round", lambda t: (t.afters[0][0], sum(t.afters[0]))),
    (f"5 s after round {rounds}", lambda t: (t.afters[-1][0], sum(t.afters[-1]))),
    (f"30 s after round {rounds}", lambda t: (t.settled, t.settled + t.settled_helpers)),
]
for label, f in rows:
    row = f"| {label} |"
    vals = []
    for t in targets:
        own, all_ = f(t)
        vals.append((own, all_))
        row += f" {mib(own):.0f} |"
        if t.helpers:
            row += f" {mib(all_):.0f} |"
    if len(targets) == 2:
        (ao, aa), (bo, ba) = vals
        row += f" {ratio(ao, bo)} |"
        if targets[1].helpers and not targets[0].helpers:
            row += f" {ratio(ao, ba)} |"
    print(row)
print()
for t in targets:
    helpers = f"; helpers (PIDs {t.helpers}) idle {mib(t.idle_helpers):.0f} MiB" if t.helpers else ""
    print(f"{t.name}: RSS 5 s after each round {[round(mib(a)) for a, _ in t.afters]} MiB; threads idle "
          f"{t.idle_threads}, 30 s after {t.settled_threads}; containers left: {t.left}{helpers}")
