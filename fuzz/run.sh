#!/usr/bin/env bash
# fuzz/run.sh — runs the fuzz targets with AFL++ (cargo-afl), each for SECONDS, from the committed
# corpus, and fails if any found a crash or a hang. Prints each target's executions, coverage
# and speed from AFL's own statistics, then one summary line.
#
# Usage:  fuzz/run.sh [SECONDS] [TARGET...]      (default: 600 seconds, every target)
# Needs:  cargo-afl (`cargo install cargo-afl`; it builds AFL++ on first use).
# Env:    FUZZ_OUT  where AFL writes its queue, crashes and stats (default: a temporary folder,
#                   removed at the end unless KEEP_FUZZ_OUT=1).
#
# A crash or hang is kept in $FUZZ_OUT/<target>/default/{crashes,hangs}: reproduce it with
# `target/release/<target> < FILE` (built by `cargo afl build --release` in fuzz/), then add it
# to the regression inputs in corpus/<target>/ once fixed.
set -euo pipefail
cd "$(dirname "$0")"

seconds="${1:-600}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(normalize spiffe_id policy csr_and_svid jwt grpc_requests h1 h1_hyper h1_hyper_response)

out="${FUZZ_OUT:-$(mktemp -d -t trustmesh-fuzz.XXXXXX)}"
mkdir -p "$out"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/../target/fuzz}"
cleanup() { [ -n "${KEEP_FUZZ_OUT:-}" ] || [ -n "${FUZZ_OUT:-}" ] || rm -rf "$out"; }
trap cleanup EXIT
# What the targets write for themselves (the jwt target's key-set files, one folder per fuzzing
# process) goes under $out, so it goes with it instead of piling up in /tmp.
export TMPDIR="$out/tmp"
mkdir -p "$TMPDIR"

# AFL's environment checks are for dedicated fuzzing hosts; this runs beside other work, on a
# kernel whose core pattern we do not own.
export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1 AFL_NO_AFFINITY=1

cargo afl build --release --quiet
# The seeds are what their names say (valid tokens verify, forged ones do not, ...), else the
# targets would not start where they claim to.
cargo afl test --release --quiet --lib

passed=0
failed=0
for t in "${targets[@]}"; do
    timeout $((seconds + 120)) cargo afl fuzz -V "$seconds" -i "corpus/$t" -o "$out/$t" \
        "$CARGO_TARGET_DIR/release/$t" > "$out/$t.log" 2>&1 || true
    stats="$out/$t/default/fuzzer_stats"
    if [ ! -f "$stats" ]; then
        echo "fuzz $t: AFL did not start; its log:"
        tail -20 "$out/$t.log"
        failed=$((failed + 1))
        continue
    fi
    get() { sed -n "s/^$1 *: *//p" "$stats"; }
    crashes=$(find "$out/$t/default/crashes" -name 'id:*' | wc -l)
    hangs=$(find "$out/$t/default/hangs" -name 'id:*' | wc -l)
    echo "fuzz $t: $(get execs_done) execs in $(get run_time)s ($(get execs_per_sec)/s)," \
        "coverage $(get bitmap_cvg), corpus $(get corpus_count), crashes $crashes, hangs $hangs"
    if [ "$crashes" -gt 0 ] || [ "$hangs" -gt 0 ]; then
        KEEP_FUZZ_OUT=1
        echo "fuzz $t: FAILED; inputs kept in $out/$t/default/{crashes,hangs}"
        failed=$((failed + 1))
    else
        passed=$((passed + 1))
    fi
done
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
