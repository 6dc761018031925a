#!/usr/bin/env bash
# bench/instructions.sh — how many instructions a request costs the HBONE L7 sidecar pair
# (bench/proxy.sh's (d) with -H -n), next to ztunnel's L4 pair ((e)) and, when given, a second
# trustmesh binary (a build from before a change), counted by valgrind's callgrind.
#
# Why: CPU time on this shared machine moves by ±10 % from one run to the next, so a change
# that saves a few per cent of a request's work does not show in bench/proxy.sh. Instructions
# executed in user space are the same for the same binary and load whatever else the machine
# does. They leave out the kernel (system calls, the network stack), which bench/proxy.sh's
# utime/stime split reports.
#
# How: runs `bench/proxy.sh -H -n -d SECONDS -r 1 -s 0 -b 0` once per binary with each
# measured proxy under callgrind (bench/lib.sh's `callgrind_wrapper`: instrumentation from a
# second after the proxy listens until it exits, so start-up is left out and the first
# connections' handshakes are spread over the run's requests), then divides each proxy's
# instructions by the requests wrk completed on its path (its req/s × SECONDS). Under callgrind
# a proxy runs about fifty times slower, so the load is far lighter than in bench/proxy.sh:
# the figures compare binaries and proxies with each other, not with CPU time.
#
# Usage:  bench/instructions.sh [-d SECONDS]      (default 5; 1..600)
# Env:    TRUSTMESH_BIN   the binary measured (default: target/release/trustmesh; this script
#                         never builds)
#         BASELINE_BIN    optional: a second trustmesh binary, measured the same way, in its
#                         own column
#         ZTUNNEL_BIN     optional: a ztunnel binary built by whoever runs this (never built or
#                         fetched here); its pair is measured in a run of its own
# Needs root and what bench/proxy.sh's (d) and (e) need, and valgrind (callgrind,
# callgrind_control), ss and python3. Takes about two minutes per binary.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

secs=5
while getopts "d:h" opt; do
    case "$opt" in
        d) secs=$OPTARG ;;
        *) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 2 ;;
    esac
done
[[ "$secs" =~ ^[0-9]+$ ]] && ((secs >= 1 && secs <= 600)) ||
    { echo "bench/instructions.sh: -d takes 1..600 seconds" >&2; exit 2; }
need_tools "apt-get install -y valgrind iproute2 python3" valgrind callgrind_control ss python3

tm=$(realpath "${TRUSTMESH_BIN:-target/release/trustmesh}")
[[ -x "$tm" ]] || { echo "bench/instructions.sh: no binary at $tm" >&2; exit 2; }
base=${BASELINE_BIN:+$(realpath "$BASELINE_BIN")}
zt=${ZTUNNEL_BIN:+$(realpath "$ZTUNNEL_BIN")}
for b in "$base" "$zt"; do
    [[ -z "$b" || -x "$b" ]] || { echo "bench/instructions.sh: $b is not executable" >&2; exit 2; }
done

work=$(mktemp -d /tmp/trustmesh-instr.XXXXXX)
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"

# measure NAME PATH TRUSTMESH ZTUNNEL: one bench/proxy.sh run with the proxies of PATH ((d) or
# (e)) under callgrind; prints NAME, client, server and pair instructions per request, req/s.
measure() {
    local name=$1 path=$2 tm_bin=$3 zt_bin=$4 run=$work/$RANDOM line rps
    mkdir -p "$run/cg"
    chmod 777 "$run" "$run/cg"
    if [[ $path == d ]]; then
        callgrind_wrapper "$run/trustmesh" "$tm_bin" "$run/cg" proxy
        tm_bin=$run/trustmesh
    else
        callgrind_wrapper "$run/ztunnel" "$zt_bin" "$run/cg" proxy
        zt_bin=$run/ztunnel
    fi
    echo "[instructions] $name: bench/proxy.sh -H -n -d $secs -r 1 -s 0 -b 0 under callgrind" >&2
    TRUSTMESH_BIN="$tm_bin" ZTUNNEL_BIN="$zt_bin" wait_secs=90 \
        bench/proxy.sh -H -n -d "$secs" -r 1 -s 0 -b 0 >"$run/bench.log" 2>&1 ||
        { echo "bench/instructions.sh: bench/proxy.sh failed:" >&2; tail -20 "$run/bench.log" >&2; exit 1; }
    callgrind_wait "$run/cg"
    # The path's run, "[bench] round 1/1: (d) ...", is followed by its figures.
    line=$(grep -A1 "^\[bench\] round 1/1: ($path) " "$run/bench.log" | grep 'req/s p50 p99:' | head -1) ||
        { echo "bench/instructions.sh: no ($path) run in the bench's log:" >&2; tail -20 "$run/bench.log" >&2; exit 1; }
    rps=$(sed 's/.*req\/s p50 p99: \([0-9.]*\).*/\1/' <<<"$line")
    local client server
    client=$(callgrind_total "$(ls "$run"/cg/cg.client.* | head -1)")
    server=$(callgrind_total "$(ls "$run"/cg/cg.server.* | head -1)")
    python3 - "$name" "$client" "$server" "$rps" "$secs" <<'EOF'
import sys
name, client, server, rps, secs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
req = rps * secs
if req < 100:
    sys.exit(f"bench/instructions.sh: only {req:.0f} requests on {name}'s path")
print(f"{name}\t{client / req:.0f}\t{server / req:.0f}\t{(client + server) / req:.0f}\t{rps:.0f}")
EOF
}

rows=$work/rows
measure "(d) trustmesh HBONE, L7" d "$tm" "" >>"$rows"
if [[ -n "$base" ]]; then
    measure "(d) baseline HBONE, L7" d "$base" "" >>"$rows"
fi
if [[ -n "$zt" ]]; then
    measure "(e) ztunnel HBONE, L4" e "$tm" "$zt" >>"$rows"
fi

echo
echo "User-space instructions per request (callgrind; ÷ the requests wrk completed on the path)"
python3 - "$rows" <<'EOF'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
print(f"{'pair':<26}{'client':>10}{'server':>10}{'pair':>10}{'req/s under callgrind':>24}")
for name, c, s, p, rps in rows:
    print(f"{name:<26}{int(c):>10,}{int(s):>10,}{int(p):>10,}{int(rps):>24,}")
first = rows[0]
for other in rows[1:]:
    print(f"{first[0]} / {other[0]}: pair {100 * int(first[3]) / int(other[3]):.1f} %")
EOF
