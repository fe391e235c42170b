#!/usr/bin/env bash
# Installs every test dependency (Debian packages only) and runs the whole test suite,
# lints included. Run as root on Debian 12 from anywhere in the repository.
#
#   1. apt: the packages in tests/apt-packages.txt (docker.io among them: dockerd 20.10 is
#      the reference tests/differential.rs compares berthd with, and its CLI the fallback)
#   2. cargo fmt --check, cargo clippy -D warnings
#   3. cargo-fuzz (pinned, from crates.io) and every fuzz target for FUZZ_SECONDS (default
#      10) each on the stable toolchain (fuzz/run.sh); a crash fails the run
#   4. berth-fixture starts a real registry (docker-registry) on a free loopback port,
#      pushes the test images, runs the test runner, and stops the registry afterwards
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."
. deploy/lib.sh

if [ "$(id -u)" -ne 0 ]; then
    echo "tests/run.sh: run as root (the tests create containers, cgroups and namespaces)" >&2
    exit 1
fi
# docker.io's and containerd's maintainer scripts would start a host dockerd/containerd
# (with dockerd's iptables rules, and a /run/containerd/containerd.sock that makes every
# later dockerd share that containerd); the tests start private ones, so service starts
# are refused (policy-rc.d, exit 101) while installing.
if [ ! -e /usr/sbin/policy-rc.d ]; then
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
fi
apt_install_missing tests/apt-packages.txt
if [ "$(trap -p EXIT)" != "" ]; then
    rm -f /usr/sbin/policy-rc.d
    trap - EXIT
fi

# docker-py for the tests that drive berthd with the Docker SDK (the python3 on PATH runs them)
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -r tests/python-requirements.txt

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --locked --workspace --all-targets -- -D warnings

echo "==> build"
cargo build --locked --workspace --bins
# The fuzz targets (fuzz/, outside the workspace) for a short fixed budget each. cargo-fuzz
# is pinned; it drives the stable toolchain (RUSTC_BOOTSTRAP=1 in fuzz/run.sh).
cargo_fuzz_version=0.13.2
if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $cargo_fuzz_version" ]; then
    cargo install --locked cargo-fuzz --version "$cargo_fuzz_version"
fi
echo "==> fuzz (${FUZZ_SECONDS:-10}s per target)"
bash fuzz/run.sh "${FUZZ_SECONDS:-10}"

if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --locked --workspace --no-run
    runner=(cargo nextest run --locked --workspace --no-fail-fast)
else
    cargo test --locked --workspace --no-run
    runner=(cargo test --locked --workspace --no-fail-fast)
fi
echo "==> tests: ${runner[*]}"
exec ./target/debug/berth-fixture run -- "${runner[@]}" "$@"
