#!/usr/bin/env bash
# bench/hot-functions.sh — which functions of the trustmesh binary a serving sidecar runs, so
# that the linker lays them out side by side (trustmesh/hot-functions.txt, read by
# trustmesh/build.rs for release builds).
#
# Why: the kernel maps a program's code in the page-cache folios it read it into, and on this
# machine's kernel those are up to 2 MiB each, mapped whole on a page fault. The ~1,800
# functions a sidecar runs while serving (about 2.2 MB of code) were spread over all eleven
# 2 MiB stretches of the 21 MB of code, so a serving sidecar kept 10 MB of the binary
# resident, whatever it actually ran. Put together, they fill two.
#
# How: runs bench/proxy.sh briefly (-d 2 -r 1 -s 3 -b 1; once with HTTP/1.1 between the
# sidecars, once with HTTP/2, -u, once with a new connection per request, -k, and once with
# the captured requests inside HBONE CONNECT streams, -H, the pair the issue's L7 goal
# measures) with every
# `trustmesh proxy` it starts under valgrind's callgrind. Instrumentation is switched on once
# the proxy listens, so start-up's functions are left out (they run once, and their pages are
# handed back when the proxy serves: trustmesh/src/cmd/pages.rs). Then it writes the functions
# of the trustmesh binary that ran, by instructions executed, most first, one symbol per line.
# Symbols of functions that are later renamed or removed are skipped by the linker, and new
# ones land among the rest of the code: rerun this after large changes to the request paths.
#
# Usage:  bench/hot-functions.sh [OUT]      (default: trustmesh/hot-functions.txt)
# Env:    TRUSTMESH_BIN   the binary to profile (default: target/release/trustmesh; build it
#                         with `cargo build --release -p trustmesh`; this script never builds)
# Needs valgrind (callgrind, callgrind_control), python3, ss, and what bench/proxy.sh needs
# (its (d) path needs root). Takes about five minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

out=${1:-trustmesh/hot-functions.txt}
bin=$(realpath "${TRUSTMESH_BIN:-target/release/trustmesh}")
for tool in valgrind callgrind_control python3 ss; do
    command -v "$tool" >/dev/null || { echo "bench/hot-functions.sh: needs $tool" >&2; exit 2; }
done
[[ -x "$bin" ]] || { echo "bench/hot-functions.sh: no binary at $bin" >&2; exit 2; }

work=$(mktemp -d /tmp/trustmesh-hot.XXXXXX)
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"
mkdir -m 777 "$work/cg"

# Every `trustmesh proxy` runs under callgrind (exec: the bench's pid is the proxy's); every
# other subcommand runs as it is.
callgrind_wrapper "$work/trustmesh" "$bin" "$work/cg" proxy

for mode in "" -u -k -H; do
    echo "[hot] bench/proxy.sh -d 2 -r 1 -s 3 -b 1 $mode under callgrind" >&2
    # The paths under valgrind are slow to start: give them a minute.
    TRUSTMESH_BIN="$work/trustmesh" wait_secs=60 ZTUNNEL_BIN="" \
        bench/proxy.sh -d 2 -r 1 -s 3 -b 1 $mode >"$work/bench$mode.log" 2>&1 ||
        { echo "bench/hot-functions.sh: bench/proxy.sh $mode failed:" >&2; tail -20 "$work/bench$mode.log" >&2; exit 1; }
    callgrind_wait "$work/cg"
done

python3 - "$bin" "$out" "$work"/cg/cg.* <<'EOF'
import sys
binary, out, files = sys.argv[1], sys.argv[2], sys.argv[3:]
cost = {}
for path in files:
    ob = fn = None
    skip_next = False
    for line in open(path, errors="replace"):
        if skip_next:  # the inclusive cost of a call, not the function's own
            skip_next = False
            continue
        if line.startswith("ob="):
            ob = line[3:].strip()
        elif line.startswith("fn="):
            fn = line[3:].strip() if ob == binary else None
            if fn:
                cost.setdefault(fn, 0)
        elif line.startswith("calls="):
            skip_next = True
        elif fn and line[:1].isdigit():
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                cost[fn] += int(parts[1])
names = sorted(cost, key=lambda n: (-cost[n], n))
if len(names) < 100:
    sys.exit(f"bench/hot-functions.sh: only {len(names)} functions recorded; see the logs")
with open(out, "w") as f:
    f.write("# Functions of the trustmesh binary a serving sidecar runs, most instructions first.\n")
    f.write("# Written by bench/hot-functions.sh; read by trustmesh/build.rs (lld --symbol-ordering-file).\n")
    f.write("".join(n + "\n" for n in names))
print(f"{len(names)} functions from {len(files)} profiles -> {out}", file=sys.stderr)
EOF
