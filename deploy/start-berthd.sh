#!/usr/bin/env bash
# Builds berth (release) and runs berthd in the foreground with its defaults
# (data root /var/lib/berth, socket /run/berth/berth.sock). Extra arguments go to berthd.
# Run as root on Debian 12: installs the build dependencies it lacks through apt.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."
. deploy/lib.sh
apt_install_missing deploy/build-packages.txt
cargo build --release --locked --bins
exec ./target/release/berthd "$@"
