#!/usr/bin/env bash
# bench/control.sh — what does the control plane cost per connected sidecar, and how long does a
# policy change take to reach every sidecar, with 1,000 and 10,000 of them?
#
# For each N given (default: 1000 10000) it starts a fresh `trustmesh control` on loopback and
# connects N simulated sidecars to it from one process (crates/control/examples/xds_load.rs):
# each has its own SVID (issued from this run's CA, spread over 100 namespaces × 10 service
# accounts, so there are 1,000 distinct views), its own TCP + mTLS connection and one incremental
# ADS stream subscribed to MeshConfig, TrustBundle and IstioResource, and ACKs every response.
# The config directory holds a realistic mesh: per namespace a PeerAuthentication, three
# AuthorizationPolicies (namespace-wide, and selecting sa-0 and sa-2), a ServiceEntry every
# namespace sees and one exported to its own namespace only; in the root namespace istio-system
# a mesh-wide PeerAuthentication and a DENY AuthorizationPolicy — 602 resources, 105 or 106 in
# each sidecar's view.
#
# Once all N have ACKed their first responses it makes two changes, each by renaming a new file
# into place (as config management does), timed by the generator from just before the rename:
#   ns    one namespace's AuthorizationPolicy changes: its N/100 sidecars must receive it, and
#         no other sidecar should receive anything;
#   root  the root namespace's AuthorizationPolicy changes: every sidecar must receive it.
# For each: the time from the rename until each affected sidecar received and ACKed a response
# carrying the change (p50/p99/max; it includes the control plane's 100 ms poll of the
# directory and its 100 ms debounce), the control plane's CPU for the push (utime + stime from
# /proc/<pid>/stat, from just before the rename until the last ACK plus 0.5 s), and the bytes it
# sent (its `pilot_xds_push_bytes` counter before and after).
#
# Also, per N: how long connecting took and the control plane's CPU for it (handshakes,
# admission and first pushes), its RSS idle (started, configuration loaded, nothing connected)
# and with N connected, RSS per connected sidecar ((RSS with N − RSS idle) / N), its CPU at
# rest with N connected (HTTP/2 keepalive PINGs every 30 s per connection), and the generator's
# own RSS and CPU.
#
# Goals (the issue): 10,000 sidecars; p99 ≤ 1 s from file change to ACK; ≤ 100 KB RSS per
# connected sidecar. istiod's published figure for reference: 1 vCPU and 1.5 GB for 2,000
# sidecars (which also computes Envoy's listeners, clusters and routes: not comparable work).
#
# Usage:  bench/control.sh [N...]          each N from 1 to 19000; default: 1000 10000
# Env:    NO_BUILD=1      do not build; use the binaries below as they are. Otherwise it runs
#                         `cargo build --release -p trustmesh --bin trustmesh` and
#                         `cargo build --release -p trustmesh-control --example xds_load`
#                         (honouring CARGO_TARGET_DIR).
#         TRUSTMESH_BIN   trustmesh binary (default: <target>/release/trustmesh)
#         XDS_LOAD_BIN    the generator (default: <target>/release/examples/xds_load)
#         BENCH_PORT_BASE first of the two loopback ports used (default 19000)
#         KEEP_WORKDIR=1  keep the temporary directory (CA, SVID-less config, logs)
#
# Bounds: the generator gives up connecting, and waiting for a change's ACKs, after 240 s and
# says how many it got; the script waits at most 300 s for any of its answers and kills what it
# started on every exit. It needs the open-file limit above N + 100 for each process (it raises
# the soft limit to the hard one).
#
# Caveats: the generator and the control plane share this machine's cores (2 on the development
# machine), so the generator's CPU — TLS handshakes, decoding every response — is taken from the
# control plane's; the times are an upper bound of what the control plane alone would need.
# Everything runs over loopback. The control plane logs at info (a line per stream admitted and
# closed) to a file, as in production.
set -euo pipefail

sizes=("$@")
((${#sizes[@]})) || sizes=(1000 10000)
for n in "${sizes[@]}"; do
    if [[ ! "$n" =~ ^[1-9][0-9]{0,4}$ ]] || ((n > 19000)); then
        echo "bench/control.sh: N must be a whole number from 1 to 19000, not '$n'" >&2
        exit 2
    fi
done

repo=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$repo/target}
bin=${TRUSTMESH_BIN:-$target/release/trustmesh}
gen=${XDS_LOAD_BIN:-$target/release/examples/xds_load}
base=${BENCH_PORT_BASE:-19000}
grpc_port=$base
mon_port=$((base + 1))

for tool in curl awk timeout; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "bench/control.sh: missing $tool" >&2
        exit 1
    }
done
if [[ "${NO_BUILD:-}" != 1 ]]; then
    echo "[bench] building (release)..." >&2
    (cd "$repo" && cargo build -q --release -p trustmesh --bin trustmesh &&
        cargo build -q --release -p trustmesh-control --example xds_load)
fi
for f in "$bin" "$gen"; do
    [[ -x "$f" ]] || { echo "bench/control.sh: no executable at $f" >&2; exit 1; }
done

max_n=0
for n in "${sizes[@]}"; do ((n > max_n)) && max_n=$n; done
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if (($(ulimit -n) < max_n + 100)); then
    echo "bench/control.sh: the open-file limit $(ulimit -n) is too low for N=$max_n" >&2
    exit 1
fi

work=$(mktemp -d /tmp/trustmesh-control-bench.XXXXXX)
control_pid=""
cleanup() {
    if [[ -n "${GEN_PID:-}" ]]; then kill "$GEN_PID" 2>/dev/null || true; fi
    if [[ -n "$control_pid" ]]; then
        kill "$control_pid" 2>/dev/null || true
        wait "$control_pid" 2>/dev/null || true
    fi
    if [[ "${KEEP_WORKDIR:-}" == 1 ]]; then
        echo "work directory kept: $work" >&2
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log() { echo "[bench] $*" >&2; }
hz=$(getconf CLK_TCK)

# ticks PID: user + system CPU of the process (every thread) in clock ticks (fields 14 and 15
# of /proc/<pid>/stat, counted after the command name's closing parenthesis).
ticks() {
    awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"
}
# rss_kb PID: resident set size in KiB.
rss_kb() {
    awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"
}
# metric NAME: a counter or gauge of the control plane's /metrics.
metric() {
    curl -s --max-time 20 "http://127.0.0.1:$mon_port/metrics" |
        awk -v n="$1" '$1 == n { print $2 }'
}
# field KEY LINE: the value of KEY=value in one of the generator's lines.
field() {
    tr ' ' '\n' <<<"$2" | awk -F= -v k="$1" '$1 == k { print $2 }'
}

"$bin" ca init --trust-domain cluster.local --out "$work/ca" >/dev/null

# ns_file NS MARKER: one namespace's policies and services (MARKER, when given, is added as a
# principal to its namespace-wide policy: the `ns` change).
ns_file() {
    local ns=$1 marker=${2:-} i=$((10#${1#bench-})) extra=""
    [[ -n "$marker" ]] && extra=", \"cluster.local/ns/$ns/sa/$marker\""
    cat <<EOF
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: { name: default, namespace: $ns }
spec: { mtls: { mode: STRICT } }
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: allow-same-namespace, namespace: $ns }
spec:
  action: ALLOW
  rules:
  - from:
    - source: { namespaces: [ "$ns" ] }
    - source: { principals: [ "cluster.local/ns/istio-system/sa/ingress"$extra ] }
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: frontend, namespace: $ns }
spec:
  selector: { matchLabels: { app: sa-0 } }
  action: ALLOW
  rules:
  - from: [ { source: { principals: [ "cluster.local/ns/bench-$(printf %03d $(((i + 1) % 100)))/sa/sa-1" ] } } ]
    to: [ { operation: { methods: [ GET, POST ], paths: [ "/api/*" ], ports: [ "8080" ] } } ]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: no-admin, namespace: $ns }
spec:
  selector: { matchLabels: { app: sa-2 } }
  action: DENY
  rules:
  - to: [ { operation: { paths: [ "/admin", "/admin/*" ] } } ]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: api, namespace: $ns }
spec:
  hosts: [ api.$ns.svc.cluster.local ]
  addresses: [ 10.$((100 + i / 100)).$((i % 100)).10 ]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [ { number: 8080, name: http, protocol: HTTP } ]
  endpoints: [ { address: 10.200.$((i % 100)).1 }, { address: 10.200.$((i % 100)).2 } ]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: internal, namespace: $ns }
spec:
  hosts: [ internal.$ns.svc.cluster.local ]
  exportTo: [ "." ]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [ { number: 9090, name: grpc, protocol: GRPC } ]
  endpoints: [ { address: 10.201.$((i % 100)).1 } ]
EOF
}
# root_file MARKER: the root namespace's policies (MARKER: the `root` change).
root_file() {
    local extra=""
    [[ -n "${1:-}" ]] && extra=", \"cluster.local/ns/blocked/sa/$1\""
    cat <<EOF
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: { name: default, namespace: istio-system }
spec: { mtls: { mode: STRICT } }
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: deny-blocked, namespace: istio-system }
spec:
  action: DENY
  rules:
  - from: [ { source: { principals: [ "cluster.local/ns/blocked/sa/default"$extra ] } } ]
EOF
}

# run_size N: one fresh control plane and N sidecars; appends a row to each table.
conn_rows=()
push_rows=()
run_size() {
    local n=$1 cfg=$work/config-$n out=$work/control-$n.out line i
    rm -rf "$cfg"
    mkdir -p "$cfg"
    for i in $(seq 0 99); do
        ns_file "bench-$(printf %03d "$i")" >"$cfg/bench-$(printf %03d "$i").yaml"
    done
    root_file >"$cfg/istio-system.yaml"

    "$bin" control --ca "$work/ca" --listen "127.0.0.1:$grpc_port" \
        --monitoring-listen "127.0.0.1:$mon_port" --config-dir "$cfg" \
        --max-connections $((n + 1000)) --idle-timeout 600s --name "bench-$n" \
        >"$out" 2>"$work/control-$n.err" &
    control_pid=$!
    for i in $(seq 1 300); do
        grep -q '^listening monitoring=' "$out" 2>/dev/null && break
        kill -0 "$control_pid" 2>/dev/null || {
            cat "$work/control-$n.err" >&2
            return 1
        }
        sleep 0.1
    done
    grep -q '^listening monitoring=' "$out" || { log "control plane did not start"; return 1; }
    sleep 2
    local rss_idle t_idle
    rss_idle=$(rss_kb "$control_pid")
    t_idle=$(ticks "$control_pid")

    log "N=$n: connecting $n sidecars"
    coproc GEN { exec "$gen" --control "127.0.0.1:$grpc_port" --ca "$work/ca" --n "$n" \
        --timeout 240 2>"$work/gen-$n.err"; }
    local ready
    read -r -t 300 ready <&"${GEN[0]}" || { log "generator: no answer"; return 1; }
    log "N=$n: $ready"
    local t_ready synced connect_ms
    t_ready=$(ticks "$control_pid")
    synced=$(field synced "$ready")
    connect_ms=$(field connect_ms "$ready")
    sleep 3
    local rss_conn gen_rss t0 t1 g0 g1 connected
    connected=$(metric pilot_xds)
    t0=$(ticks "$control_pid")
    g0=$(ticks "$GEN_PID")
    sleep 5
    t1=$(ticks "$control_pid")
    g1=$(ticks "$GEN_PID")
    rss_conn=$(rss_kb "$control_pid")
    gen_rss=$(rss_kb "$GEN_PID")
    conn_rows+=("$(awk -v n="$n" -v s="$synced" -v c="$connected" -v ms="$connect_ms" \
        -v cc=$((t_ready - t_idle)) -v ri="$rss_idle" -v rc="$rss_conn" -v rest=$((t1 - t0)) \
        -v grest=$((g1 - g0)) -v gr="$gen_rss" -v hz="$hz" 'BEGIN {
            printf "%-6s %6s/%-6s %9.1f %10.2f %9.1f %9.1f %11.1f %10.1f %10.0f %10.1f\n",
                n, s, c, ms / 1000, cc / hz, ri / 1024, rc / 1024, (rc - ri) * 1.024 / n,
                rest / hz / 5 * 100, gr / 1024, grest / hz / 5 * 100 }')")

    # The two changes: a new file written beside the old one, renamed into place by the
    # generator at the instant it starts timing.
    local round ns token tmp dst b0 b1 p0 p1 res c0 c1
    for round in ns root; do
        token="marker-n$n-$round"
        if [[ $round == ns ]]; then
            ns=bench-007
            dst=$cfg/bench-007.yaml
            tmp=$cfg/.bench-007.yaml.tmp
            ns_file bench-007 "$token" >"$tmp"
        else
            ns='*'
            dst=$cfg/istio-system.yaml
            tmp=$cfg/.istio-system.yaml.tmp
            root_file "$token" >"$tmp"
        fi
        b0=$(metric pilot_xds_push_bytes)
        p0=$(metric pilot_xds_pushes)
        c0=$(ticks "$control_pid")
        g0=$(ticks "$GEN_PID")
        echo "change $tmp $dst $token $ns" >&"${GEN[1]}"
        read -r -t 300 res <&"${GEN[0]}" || { log "generator: no answer"; return 1; }
        c1=$(ticks "$control_pid")
        g1=$(ticks "$GEN_PID")
        b1=$(metric pilot_xds_push_bytes)
        p1=$(metric pilot_xds_pushes)
        log "N=$n $round: $res"
        push_rows+=("$(awk -v n="$n" -v r="$round" -v a="$(field affected "$res")" \
            -v k="$(field acked "$res")" -v p50="$(field ack_p50_ms "$res")" \
            -v p99="$(field ack_p99_ms "$res")" -v mx="$(field ack_max_ms "$res")" \
            -v first="$(field first_ack_ms "$res")" -v o="$(field other_responses "$res")" \
            -v cpu=$((c1 - c0)) -v gcpu=$((g1 - g0)) -v b=$((b1 - b0)) -v p=$((p1 - p0)) \
            -v hz="$hz" 'BEGIN {
                printf "%-6s %-5s %6s/%-6s %8.0f %8.0f %8.0f %8.0f %9.0f %9.0f %7d %10d %8.0f %6s\n",
                    n, r, k, a, first, p50, p99, mx, cpu * 1000 / hz, gcpu * 1000 / hz, p, b,
                    (k > 0 ? b / k : 0), o }')")
    done
    echo quit >&"${GEN[1]}"
    wait "$GEN_PID" 2>/dev/null || true
    kill "$control_pid"
    wait "$control_pid" 2>/dev/null || true
    control_pid=""
}

for n in "${sizes[@]}"; do
    run_size "$n"
done

echo
echo "trustmesh control, loopback, $(nproc) cores shared by the control plane and the generator" \
    "(load average $(cut -d' ' -f1-3 /proc/loadavg))"
echo
echo "Connected sidecars (RSS per sidecar = (RSS with N − RSS idle) / N; CPU at rest over 5 s)"
printf "%-6s %13s %9s %10s %9s %9s %11s %10s %10s %10s\n" N synced/conn "connect s" \
    "conn CPU s" "RSS0 MiB" "RSS MiB" "KB/sidecar" "rest CPU%" "gen MiB" "gen rest%"
printf '%s\n' "${conn_rows[@]}"
echo
echo "Policy change: rename into place → each affected sidecar ACKed a response carrying it (ms);" \
    "control-plane CPU for the push, generator CPU, responses and bytes sent"
printf "%-6s %-5s %13s %8s %8s %8s %8s %9s %9s %7s %10s %8s %6s\n" N change acked/aff \
    "first" "p50" "p99" "max" "CP CPU ms" "gen CPU" "resp" "bytes" "B/sidecar" "others"
printf '%s\n' "${push_rows[@]}"
echo
echo "Goals: p99 ≤ 1000 ms from file change to ACK; ≤ 100 KB RSS per connected sidecar;" \
    "10,000 sidecars. istiod: 1 vCPU and 1.5 GB for 2,000 sidecars."
