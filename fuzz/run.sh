#!/usr/bin/env bash
# Builds berth's cargo-fuzz targets with the STABLE toolchain and runs each one for a fixed
# budget; exits non-zero on the first crash, leak, timeout or out-of-memory (libFuzzer's
# exit status), leaving the input in fuzz/artifacts/<target>/.
#
#   bash fuzz/run.sh              # every target, FUZZ_SECONDS (default 20) each: CI
#   bash fuzz/run.sh 600 dns_packet  # one target, 10 minutes: bench/README's long run
#
# Stable, not nightly: cargo-fuzz passes nightly-only rustc flags (-Zsanitizer=address,
# sanitizer-coverage passes); RUSTC_BOOTSTRAP=1 lets stable rustc take them, for this build
# only (its own target dir, fuzz/target). The stable toolchain ships the ASan runtime
# (librustc-stable_rt.asan.a), so the default AddressSanitizer build works. FUZZ_SANITIZER
# overrides it (none, to fuzz faster).
#
# FUZZ_PROFILE: `dev` (the default: unoptimised, about half the build time, what CI uses for
# its short budget) or `release` (cargo-fuzz's optimised build, for long runs).
#
# New inputs go to fuzz/target/corpus/<target> (first corpus dir, libFuzzer writes there);
# the committed seeds in fuzz/corpus/<target> are only read, so the repository's corpus stays
# small. Compiles go through the shared build lock when BERTH_CARGO_LOCK names one.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-${FUZZ_SECONDS:-20}}
shift || true
sanitizer=${FUZZ_SANITIZER:-address}
case "${FUZZ_PROFILE:-dev}" in
    dev) profile=(--dev) ;;
    release) profile=() ;;
    *) echo "fuzz/run.sh: FUZZ_PROFILE must be dev or release" >&2; exit 2 ;;
esac
export RUSTC_BOOTSTRAP=1
locked() {
    if [ -n "${BERTH_CARGO_LOCK:-}" ]; then flock "$BERTH_CARGO_LOCK" "$@"; else "$@"; fi
}
if [ "$#" -gt 0 ]; then targets=("$@"); else mapfile -t targets < <(cargo fuzz list); fi
if [ "${#targets[@]}" -eq 1 ]; then
    locked cargo fuzz build "${profile[@]}" --sanitizer "$sanitizer" "${targets[0]}"
else
    locked cargo fuzz build "${profile[@]}" --sanitizer "$sanitizer"
fi
for t in "${targets[@]}"; do
    mkdir -p "target/corpus/$t"
    echo "==> fuzz $t (${secs}s)"
    # -timeout: one input taking over 10 s is a failure too (a hang on untrusted input).
    log="target/fuzz-$t.log"
    status=0
    cargo fuzz run "${profile[@]}" --sanitizer "$sanitizer" "$t" "target/corpus/$t" "corpus/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$log" 2>&1 || status=$?
    if [ "$status" -ne 0 ]; then
        tail -n 60 "$log" >&2
        echo "fuzz/run.sh: $t failed (exit $status); input in fuzz/artifacts/$t/" >&2
        exit "$status"
    fi
    grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss_mb)' "$log" | sed 's/^/    /'
    echo "    corpus: $(find "target/corpus/$t" "corpus/$t" -type f | wc -l) inputs"
done
