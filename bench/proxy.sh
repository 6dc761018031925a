#!/usr/bin/env bash
# bench/proxy.sh — what does a trustmesh sidecar pair cost, next to no proxy and next to nginx,
# in explicit mode and in transparent mode?
#
# In one run, on this machine, it measures requests/s, p50/p99 latency (wrk) and CPU per
# request (from /proc) for four paths to the same backend (nginx serving a 13-byte static body):
#
#   (a) direct     wrk ──HTTP──▶ backend
#   (b) trustmesh  wrk ──HTTP──▶ client proxy ══mTLS══▶ server proxy ──HTTP──▶ backend
#                  (explicit listeners on loopback: `outbound:` and `inbound:`; SPIFFE
#                   identities from `trustmesh ca init/issue`, PeerAuthentication STRICT, an
#                   ALLOW AuthorizationPolicy naming the client's principal)
#   (c) nginx      wrk ──HTTP──▶ nginx client ══mTLS══▶ nginx server ──HTTP──▶ backend
#                  (server: ssl_verify_client on + ssl_client_certificate; client:
#                   proxy_ssl_certificate/_key, proxy_ssl_trusted_certificate, proxy_ssl_verify
#                   on, keepalive to the upstream) — certificates from the same CA and the same
#                   key type (ECDSA P-256), so both pairs do the same cryptography.
#   (d) capture    wrk (uid 65534) ──HTTP──▶ 198.19.0.10:8080 ─iptables─▶ client sidecar
#                  ══mTLS, HTTP/2══▶ 198.18.42.2:8080 ─iptables─▶ server sidecar ──HTTP──▶ backend
#                  (transparent mode: two network namespaces of this run joined by a veth pair,
#                   `trustmesh capture install --proxy-uid 0` in each, sidecars with a
#                   `capture:` section routing by the registry — WorkloadEntry per side and a
#                   ServiceEntry with the explicit VIP 198.19.0.10, called by address, no DNS —
#                   auto mTLS; the same certificates, PeerAuthentication and AuthorizationPolicy
#                   as (b); a second nginx backend, same config, inside the server namespace)
#
# It prints two tables side by side: req/s and latency, with the latency each proxy hop adds
# over (a) (a pair is two hops, so "added per hop" is (pair − direct) / 2); and CPU per request
# in µs of each path's client-side proxy, server-side proxy, the pair, and the backend: user +
# system time from /proc/<pid>/stat (every thread; for nginx the master and its workers) read
# just before and after each wrk run, divided by the requests wrk completed in that run.
#
# Rounds: on a small shared machine one 10 s run of the same path varies by ±10 % from the next
# (scheduler placement of six busy processes on two cores), more than the difference being
# measured. So the paths are measured in interleaved rounds (a b c d, a b c d, ...) and the
# tables show, per path, the median over the rounds of each column on its own (req/s, p50, p99,
# each CPU figure), with the lowest and highest req/s beside them; every round's figures are
# printed as they come, and the raw wrk output is in wrk.log (KEEP_WORKDIR=1 keeps the work
# directory, with every proxy's access log and stderr).
#
# Usage:  bench/proxy.sh [-d SECONDS] [-t THREADS] [-c CONNECTIONS] [-r ROUNDS]
#         defaults: -d 10 -t 2 -c 32 -r 3 (wrk --latency; each number 1..9999); every wrk run
#         is bounded by -d (and killed 30 s after it), so a whole run takes about
#         4 × ROUNDS × SECONDS.
# Env:    TRUSTMESH_BIN   trustmesh binary (default: target/release/trustmesh; build it with
#                         `cargo build --release -p trustmesh`; this script never builds).
#                         When it is missing, (b) and (d) are skipped and the tables say so.
#         BENCH_PORT_BASE first of the loopback ports used by (a)-(c) (default 18000; uses
#                         base..base+5).
#         KEEP_WORKDIR=1  keep the temporary directory (configs, certificates, logs).
#
# (d) runs only as root with ip, iptables (ip6tables when the kernel has IPv6) and setpriv;
# otherwise the tables say why it was skipped. It uses addresses from the benchmarking range
# 198.18.0.0/15 only, namespaces named tmbench-<pid>-client/-server, and touches nothing in the
# host's namespace: the capture rules live inside the namespaces, and the namespaces (with their
# veth ends and rules) are deleted on every exit, also on Ctrl-C or an error.
#
# Needs wrk, nginx, openssl, curl, timeout and pgrep on PATH; it installs nothing.
# On Debian/Ubuntu:
#   apt-get install -y wrk nginx-light openssl curl procps      (or the `nginx` package)
#
# Caveats: wrk, the proxies and the backends share this machine's cores, so the numbers are
# for comparing the paths with each other in the same run, not absolute capacity. (a)-(c) run
# over loopback, (d) between two namespaces over a veth pair (the same kernel, one more device
# hop each way) plus the NAT of the capture on each new connection. trustmesh writes its JSON
# access log to stdout (as in production); the script sends it to a file in the work directory,
# so that cost is included — the explicit outbound listener of (b) writes one line per
# connection, the capture's outbound port of (d) one per request, and each server side one per
# request. CPU from /proc is what the scheduler charged to the process: network processing done
# in softirq context may land on whichever process was running.
set -euo pipefail

duration=10
threads=2
connections=32
rounds=3
while getopts "d:t:c:r:h" opt; do
    case "$opt" in
        d) duration=$OPTARG ;;
        t) threads=$OPTARG ;;
        c) connections=$OPTARG ;;
        r) rounds=$OPTARG ;;
        *) awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0"; exit 2 ;;
    esac
done
for n in "$duration" "$threads" "$connections" "$rounds"; do
    if [[ ! "$n" =~ ^[1-9][0-9]{0,3}$ ]]; then
        echo "bench/proxy.sh: -d, -t, -c and -r take a whole number from 1 to 9999, not '$n'" >&2
        exit 2
    fi
done

repo=$(cd "$(dirname "$0")/.." && pwd)
bin=${TRUSTMESH_BIN:-$repo/target/release/trustmesh}
base=${BENCH_PORT_BASE:-18000}
backend_port=$base
tm_server_port=$((base + 1))
tm_client_port=$((base + 2))
ngx_server_port=$((base + 3))
ngx_client_port=$((base + 4))
admin_port=$((base + 5))

missing=()
for tool in wrk nginx openssl curl timeout pgrep; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
    echo "bench/proxy.sh: missing ${missing[*]}." >&2
    echo "  install with: apt-get install -y wrk nginx-light openssl curl procps" >&2
    exit 1
fi
nginx_bin=$(command -v nginx)

work=$(mktemp -d /tmp/trustmesh-bench.XXXXXX)
pids=()
namespaces=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    # After their processes: deleting a namespace deletes its veth end and its iptables rules.
    for ns in "${namespaces[@]}"; do
        ip netns del "$ns" 2>/dev/null || echo "[bench] could not delete network namespace $ns" >&2
    done
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

# wait_ok URL [PREFIX...]: waits (at most 10 s) until URL answers 200 to curl (run by PREFIX,
# if any: a namespace, a uid).
wait_ok() {
    local url=$1 i
    shift
    for i in $(seq 1 100); do
        if [[ $("$@" curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url" || true) == 200 ]]; then
            return 0
        fi
        sleep 0.1
    done
    echo "bench/proxy.sh: $url did not answer 200 within 10 s" >&2
    return 1
}

# start_nginx CONF [PREFIX...]: starts nginx in the foreground (tracked for cleanup) with
# config file CONF (run by PREFIX, if any: a namespace).
start_nginx() {
    local conf=$1 name
    shift
    name=$(basename "$conf" .conf)
    mkdir -p "$work/$name"
    "$@" "$nginx_bin" -p "$work/$name" -c "$conf" -g 'daemon off;' \
        >"$work/$name.out" 2>&1 &
    pids+=($!)
}

# nginx_pids MASTER: the master and its workers (the workers do the work; call it once the
# server answers, so they exist).
nginx_pids() {
    echo "$1" $(pgrep -P "$1")
}

# ticks PID...: user + system CPU of those processes (every thread), in clock ticks, from
# /proc/<pid>/stat (fields 14 and 15; the command name in field 2 may hold spaces, so the
# fields are counted after its closing parenthesis). No PID: 0.
ticks() {
    local pid files=()
    for pid in "$@"; do
        if [[ ! -r /proc/$pid/stat ]]; then
            echo "bench/proxy.sh: process $pid is gone (see the logs in $work)" >&2
            return 1
        fi
        files+=("/proc/$pid/stat")
    done
    ((${#files[@]})) || { echo 0; return; }
    awk '{ sub(/^.*\) /, ""); t += $12 + $13 } END { print t }' "${files[@]}"
}
hz=$(getconf CLK_TCK)

# Common nginx settings: run from the work directory, no access log, temp files local.
nginx_preamble() {
    local name=$1
    # Workers run as the invoking user so they can read the private work directory.
    [[ $EUID -eq 0 ]] && echo "user root;"
    cat <<EOF
worker_processes auto;
pid $work/$name.pid;
error_log $work/$name.error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $work/$name/body;
    proxy_temp_path $work/$name/proxy;
    fastcgi_temp_path $work/$name/fastcgi;
    uwsgi_temp_path $work/$name/uwsgi;
    scgi_temp_path $work/$name/scgi;
    keepalive_requests 1000000;
EOF
}

# measure URL [PREFIX...]: runs wrk against URL (PREFIX, if any, runs it: a namespace, a
# uid); prints "rps p50_ms p99_ms requests". wrk stops itself after -d; `timeout` is there in
# case it does not.
measure() {
    local url=$1 out
    shift
    out=$("$@" timeout $((duration + 30)) wrk -t "$threads" -c "$connections" -d "${duration}s" \
        --timeout 5s --latency "$url")
    echo "$out" >>"$work/wrk.log"
    if grep -q "Non-2xx" <<<"$out"; then
        echo "bench/proxy.sh: non-2xx answers from $url:" >&2
        echo "$out" >&2
        return 1
    fi
    awk '
        function ms(v) {
            if (v ~ /us$/) return substr(v, 1, length(v) - 2) / 1000
            if (v ~ /ms$/) return substr(v, 1, length(v) - 2) + 0
            if (v ~ /s$/)  return substr(v, 1, length(v) - 1) * 1000
            return v + 0
        }
        /^ +50%/ { p50 = ms($2) }
        /^ +99%/ { p99 = ms($2) }
        /^Requests\/sec:/ { rps = $2 }
        / requests in / { n = $1 }
        END { printf "%s %.3f %.3f %s\n", rps, p50, p99, n }
    ' <<<"$out"
}

# --- backend -------------------------------------------------------------------------------
mkdir -p "$work/www"
printf 'hello, mesh\n\n' >"$work/www/index.html"
{
    nginx_preamble backend
    cat <<EOF
    server {
        listen 127.0.0.1:$backend_port;
        location / { root $work/www; }
    }
}
EOF
} >"$work/backend.conf"
start_nginx "$work/backend.conf"
backend_master=${pids[-1]}
wait_ok "http://127.0.0.1:$backend_port/"

# --- certificates ----------------------------------------------------------------------------
# One CA for everything. trustmesh issues the SVIDs for its pair when the binary is present;
# the nginx pair gets certificates from the same CA made with openssl, with the same key type
# and a DNS name added, because nginx verifies the upstream's name and SVIDs carry only a URI.
td=cluster.local
server_id=spiffe://$td/ns/bench/sa/server
client_id=spiffe://$td/ns/bench/sa/client
have_trustmesh=0
if [[ -x "$bin" ]]; then
    have_trustmesh=1
    "$bin" ca init --trust-domain "$td" --out "$work/ca" >/dev/null
    "$bin" ca issue --ca "$work/ca" --spiffe-id "$server_id" --out "$work/server" >/dev/null
    "$bin" ca issue --ca "$work/ca" --spiffe-id "$client_id" --out "$work/client" >/dev/null
    ca_cert=$work/ca/ca-cert.pem
    ca_key=$work/ca/ca-key.pem
    root=$work/ca/root-cert.pem
else
    log "no trustmesh binary at $bin: skipping (b); build it with: cargo build --release -p trustmesh"
    mkdir -p "$work/ca"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
        -subj "/O=bench/CN=bench-root" -keyout "$work/ca/ca-key.pem" \
        -out "$work/ca/ca-cert.pem" 2>/dev/null
    ca_cert=$work/ca/ca-cert.pem
    ca_key=$work/ca/ca-key.pem
    root=$ca_cert
fi

# issue_nginx NAME SPIFFE_ID [DNS]: ECDSA P-256 leaf from the same CA, for the nginx pair.
issue_nginx() {
    local name=$1 id=$2 dns=${3:-} dir=$work/nginx-$1
    mkdir -p "$dir"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$name" \
        -keyout "$dir/key.pem" -out "$dir/req.csr" 2>/dev/null
    {
        echo "basicConstraints=CA:FALSE"
        echo "keyUsage=critical,digitalSignature,keyEncipherment"
        echo "extendedKeyUsage=serverAuth,clientAuth"
        if [[ -n "$dns" ]]; then
            echo "subjectAltName=URI:$id,DNS:$dns"
        else
            echo "subjectAltName=URI:$id"
        fi
    } >"$dir/ext.cnf"
    openssl x509 -req -in "$dir/req.csr" -CA "$ca_cert" -CAkey "$ca_key" -CAcreateserial \
        -days 1 -extfile "$dir/ext.cnf" -out "$dir/cert.pem" 2>/dev/null
}
issue_nginx server "$server_id" server.bench.local
issue_nginx client "$client_id"

# --- (b) trustmesh pair ----------------------------------------------------------------------
if ((have_trustmesh)); then
    mkdir -p "$work/policies"
    cat >"$work/policies/bench.yaml" <<EOF
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: { name: default, namespace: bench }
spec:
  mtls: { mode: STRICT }
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: allow-client, namespace: bench }
spec:
  selector: { matchLabels: { app: server } }
  action: ALLOW
  rules:
  - from:
    - source: { principals: ["$td/ns/bench/sa/client"] }
EOF
    cat >"$work/server-proxy.yaml" <<EOF
workload: { namespace: bench, serviceAccount: server, labels: { app: server } }
certs: { key: $work/server/key.pem, certChain: $work/server/cert-chain.pem }
trustBundles: [ "$td=$root" ]
mesh: { trustDomain: $td }
policyDir: $work/policies
inbound: [ { port: $tm_server_port, targetPort: $backend_port, protocol: http } ]
admin: { address: "127.0.0.1:$admin_port" }
EOF
    cat >"$work/client-proxy.yaml" <<EOF
workload: { namespace: bench, serviceAccount: client, labels: { app: client } }
certs: { key: $work/client/key.pem, certChain: $work/client/cert-chain.pem }
trustBundles: [ "$td=$root" ]
mesh: { trustDomain: $td }
outbound:
- { port: $tm_client_port, peer: "127.0.0.1:$tm_server_port", peerIdentity: "$server_id", protocol: http }
EOF
    RUST_LOG=warn "$bin" proxy --config "$work/server-proxy.yaml" \
        >"$work/server-proxy.access.log" 2>"$work/server-proxy.err" &
    pids+=($!)
    tm_server_pid=$!
    RUST_LOG=warn "$bin" proxy --config "$work/client-proxy.yaml" \
        >"$work/client-proxy.access.log" 2>"$work/client-proxy.err" &
    pids+=($!)
    tm_client_pid=$!
    if ! wait_ok "http://127.0.0.1:$tm_client_port/"; then
        log "trustmesh pair not ready; its stderr:"
        cat "$work/server-proxy.err" "$work/client-proxy.err" >&2
        exit 1
    fi
fi

# --- (c) nginx pair --------------------------------------------------------------------------
{
    nginx_preamble nginx-server
    cat <<EOF
    upstream backend { server 127.0.0.1:$backend_port; keepalive 64; }
    server {
        listen 127.0.0.1:$ngx_server_port ssl;
        ssl_certificate $work/nginx-server/cert.pem;
        ssl_certificate_key $work/nginx-server/key.pem;
        ssl_protocols TLSv1.3;
        ssl_verify_client on;
        ssl_client_certificate $root;
        ssl_verify_depth 3;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
} >"$work/nginx-server.conf"
{
    nginx_preamble nginx-client
    cat <<EOF
    upstream mtls_server { server 127.0.0.1:$ngx_server_port; keepalive 64; }
    server {
        listen 127.0.0.1:$ngx_client_port;
        location / {
            proxy_pass https://mtls_server;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_ssl_certificate $work/nginx-client/cert.pem;
            proxy_ssl_certificate_key $work/nginx-client/key.pem;
            proxy_ssl_trusted_certificate $root;
            proxy_ssl_verify on;
            proxy_ssl_verify_depth 3;
            proxy_ssl_name server.bench.local;
            proxy_ssl_server_name on;
            proxy_ssl_protocols TLSv1.3;
            proxy_ssl_session_reuse on;
        }
    }
}
EOF
} >"$work/nginx-client.conf"
start_nginx "$work/nginx-server.conf"
ngx_server_master=${pids[-1]}
start_nginx "$work/nginx-client.conf"
ngx_client_master=${pids[-1]}
wait_ok "http://127.0.0.1:$ngx_client_port/"

# --- sanity: both server sides really demand a client certificate ---------------------------
code=$(curl -sk -o /dev/null -w '%{http_code}' --max-time 2 "https://127.0.0.1:$ngx_server_port/" || true)
if [[ "$code" != 400 ]]; then
    echo "bench/proxy.sh: nginx server answered $code without a client certificate (want 400)" >&2
    exit 1
fi
if ((have_trustmesh)); then
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$tm_server_port/" || true)
    if [[ "$code" == 200 ]]; then
        echo "bench/proxy.sh: trustmesh server proxy served plaintext under STRICT mTLS" >&2
        exit 1
    fi
fi

# --- (d) trustmesh transparent mode ---------------------------------------------------------
# Two network namespaces of this run joined by a veth pair, addresses from the benchmarking
# range 198.18.0.0/15 only, nothing in the host's namespace:
#
#   client 198.18.42.1: capture installed, client sidecar (capture: section), wrk as uid 65534
#   server 198.18.42.2: capture installed, server sidecar, backend nginx on :8080
#
# The registry (policyDir, beside a copy of (b)'s policies) has a WorkloadEntry per side and a
# ServiceEntry `backend.bench.svc.cluster.local` with the explicit VIP 198.19.0.10 and port
# 8080 selecting the server: wrk calls http://198.19.0.10:8080/ directly, so no DNS is involved
# (no --redirect-dns, no /etc/netns/<name>/resolv.conf). Sidecars run as root and the capture
# leaves uid 0 alone (--proxy-uid 0), as the end-to-end test does.
cap_client_ip=198.18.42.1
cap_server_ip=198.18.42.2
cap_vip=198.19.0.10
cap_port=8080
cap_why=""
if ((!have_trustmesh)); then
    cap_why="no binary at $bin"
elif ((EUID != 0)); then
    cap_why="needs root (network namespaces, iptables)"
else
    export PATH=$PATH:/usr/sbin:/sbin
    for tool in ip iptables setpriv; do
        if ! command -v "$tool" >/dev/null 2>&1; then
            cap_why="$tool is not installed"
            break
        fi
    done
    # `capture install` writes IPv6 rules too when the kernel has IPv6.
    if [[ -z "$cap_why" && -e /proc/net/if_inet6 ]] && ! command -v ip6tables >/dev/null 2>&1; then
        cap_why="ip6tables is not installed"
    fi
fi
have_capture=0
if [[ -n "$cap_why" ]]; then
    log "skipping (d): $cap_why"
else
    have_capture=1
    ns_client=tmbench-$$-client
    ns_server=tmbench-$$-server
    for ns in "$ns_client" "$ns_server"; do
        namespaces+=("$ns")
        ip netns add "$ns"
        ip -n "$ns" link set lo up
    done
    veth_client=tmb$$c
    veth_server=tmb$$s
    ip link add "$veth_client" netns "$ns_client" \
        type veth peer name "$veth_server" netns "$ns_server"
    ip -n "$ns_client" addr add "$cap_client_ip/24" dev "$veth_client"
    ip -n "$ns_server" addr add "$cap_server_ip/24" dev "$veth_server"
    ip -n "$ns_client" link set "$veth_client" up
    ip -n "$ns_server" link set "$veth_server" up
    # The VIP is on no link; a route lets the app's connect reach the capture.
    ip -n "$ns_client" route add 198.19.0.0/24 dev "$veth_client"
    in_client=(ip netns exec "$ns_client")
    in_server=(ip netns exec "$ns_server")
    as_app=(setpriv --reuid 65534 --regid 65534 --clear-groups)

    {
        nginx_preamble capture-backend
        cat <<EOF
    server {
        listen $cap_port;
        location / { root $work/www; }
    }
}
EOF
    } >"$work/capture-backend.conf"
    start_nginx "$work/capture-backend.conf" "${in_server[@]}"
    cap_backend_master=${pids[-1]}

    mkdir -p "$work/policies-capture"
    cp "$work/policies/bench.yaml" "$work/policies-capture/"
    cat >"$work/policies-capture/registry.yaml" <<EOF
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: { name: server, namespace: bench }
spec: { address: $cap_server_ip, labels: { app: server }, serviceAccount: server }
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: { name: client, namespace: bench }
spec: { address: $cap_client_ip, labels: { app: client }, serviceAccount: client }
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: backend, namespace: bench }
spec:
  hosts: [ backend.bench.svc.cluster.local ]
  addresses: [ $cap_vip ]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [ { number: $cap_port, name: http, protocol: HTTP } ]
  workloadSelector: { labels: { app: server } }
EOF
    for side in server client; do
        cat >"$work/capture-$side.yaml" <<EOF
workload: { namespace: bench, serviceAccount: $side, labels: { app: $side } }
certs: { key: $work/$side/key.pem, certChain: $work/$side/cert-chain.pem }
trustBundles: [ "$td=$root" ]
mesh: { trustDomain: $td }
policyDir: $work/policies-capture
capture: { dns: false, vipRange: 198.19.0.0/24 }
EOF
    done
    # The capture first, as an init container runs it; then the sidecar (as root, which the
    # capture leaves alone).
    for side in server client; do
        ns=tmbench-$$-$side
        if ! ip netns exec "$ns" "$bin" capture install --proxy-uid 0 \
            >"$work/capture-$side.install" 2>&1; then
            echo "bench/proxy.sh: trustmesh capture install failed in $ns:" >&2
            cat "$work/capture-$side.install" >&2
            exit 1
        fi
        RUST_LOG=warn ip netns exec "$ns" "$bin" proxy --config "$work/capture-$side.yaml" \
            >"$work/capture-$side.access.log" 2>"$work/capture-$side.err" &
        pids+=($!)
        printf -v "cap_${side}_pid" %s $!
    done
    if ! wait_ok "http://$cap_vip:$cap_port/" "${in_client[@]}" "${as_app[@]}"; then
        log "transparent-mode pair not ready; its stderr:"
        cat "$work/capture-server.err" "$work/capture-client.err" >&2
        exit 1
    fi
    # Sanity: root's traffic is not captured, so this curl reaches the server's inbound capture
    # in plaintext, which STRICT must refuse.
    code=$("${in_client[@]}" curl -s -o /dev/null -w '%{http_code}' --max-time 2 \
        "http://$cap_server_ip:$cap_port/" || true)
    if [[ "$code" == 200 ]]; then
        echo "bench/proxy.sh: the server namespace served plaintext under STRICT mTLS" >&2
        exit 1
    fi
fi

# --- measure ----------------------------------------------------------------------------------
# Which processes each path's CPU is counted for: its client-side proxy, its server-side proxy
# and its backend (nginx: the master and its workers).
declare -A client_pids server_pids backend_pids runs cpu
backend_pids[a]=$(nginx_pids "$backend_master")
if ((have_trustmesh)); then
    client_pids[b]=$tm_client_pid
    server_pids[b]=$tm_server_pid
    backend_pids[b]=${backend_pids[a]}
fi
client_pids[c]=$(nginx_pids "$ngx_client_master")
server_pids[c]=$(nginx_pids "$ngx_server_master")
backend_pids[c]=${backend_pids[a]}
if ((have_capture)); then
    client_pids[d]=$cap_client_pid
    server_pids[d]=$cap_server_pid
    backend_pids[d]=$(nginx_pids "$cap_backend_master")
fi

# run_path KEY URL [PREFIX...]: one wrk run of path KEY; appends "rps p50 p99" to runs[KEY]
# and the CPU per request in µs of its "client server pair backend" to cpu[KEY], each the
# difference of /proc's utime + stime over the run divided by the requests wrk completed.
run_path() {
    local key=$1 url=$2 r c0 s0 k0 c1 s1 k1 rps p50 p99 n
    shift 2
    # The pid lists are split into words on purpose (SC2086).
    c0=$(ticks ${client_pids[$key]:-})
    s0=$(ticks ${server_pids[$key]:-})
    k0=$(ticks ${backend_pids[$key]})
    r=$(measure "$url" "$@")
    c1=$(ticks ${client_pids[$key]:-})
    s1=$(ticks ${server_pids[$key]:-})
    k1=$(ticks ${backend_pids[$key]})
    read -r rps p50 p99 n <<<"$r"
    if [[ ! "$n" =~ ^[1-9][0-9]*$ ]]; then
        echo "bench/proxy.sh: wrk completed no request on $url (see $work/wrk.log)" >&2
        return 1
    fi
    runs[$key]+="$rps $p50 $p99"$'\n'
    r=$(awk -v n="$n" -v hz="$hz" -v c=$((c1 - c0)) -v s=$((s1 - s0)) -v k=$((k1 - k0)) '
        BEGIN { f = 1e6 / hz / n; printf "%.2f %.2f %.2f %.2f", c * f, s * f, (c + s) * f, k * f }')
    cpu[$key]+="$r"$'\n'
    log "  req/s p50 p99: $rps $p50 $p99; CPU µs/req client server pair backend: $r"
}

# median_of "rps p50 p99" lines: the median of each column on its own (a round with a slow
# scheduling hiccup skews its p99 without moving the others), then the lowest and highest req/s.
median_of() {
    awk '{ r[NR] = $1; a[NR] = $2; b[NR] = $3 }
        function med(x, n,   i, j, t) {
            for (i = 2; i <= n; i++) for (j = i; j > 1 && x[j - 1] > x[j]; j--) {
                t = x[j]; x[j] = x[j - 1]; x[j - 1] = t }
            return (n % 2) ? x[(n + 1) / 2] : (x[n / 2] + x[n / 2 + 1]) / 2
        }
        END {
            m = med(r, NR); lo = r[1]; hi = r[NR]
            printf "%s %s %s %s %s\n", m, med(a, NR), med(b, NR), lo, hi
        }'
}
# median_cols: the median of each column on its own, over the lines read.
median_cols() {
    awk '{ for (i = 1; i <= NF; i++) v[i, NR] = $i; nf = NF }
        END {
            for (i = 1; i <= nf; i++) {
                for (j = 1; j <= NR; j++) x[j] = v[i, j]
                for (j = 2; j <= NR; j++) for (k = j; k > 1 && x[k - 1] > x[k]; k--) {
                    t = x[k]; x[k] = x[k - 1]; x[k - 1] = t }
                m = (NR % 2) ? x[(NR + 1) / 2] : (x[NR / 2] + x[NR / 2 + 1]) / 2
                printf "%s%s", (i > 1 ? " " : ""), m
            }
            printf "\n"
        }'
}

log "wrk -t$threads -c$connections -d${duration}s --latency, $rounds interleaved rounds"
for round in $(seq 1 "$rounds"); do
    log "round $round/$rounds: (a) direct"
    run_path a "http://127.0.0.1:$backend_port/"
    if ((have_trustmesh)); then
        log "round $round/$rounds: (b) trustmesh mTLS pair"
        run_path b "http://127.0.0.1:$tm_client_port/"
    fi
    log "round $round/$rounds: (c) nginx mTLS pair"
    run_path c "http://127.0.0.1:$ngx_client_port/"
    if ((have_capture)); then
        log "round $round/$rounds: (d) trustmesh transparent mode"
        run_path d "http://$cap_vip:$cap_port/" "${in_client[@]}" "${as_app[@]}"
    fi
done
read -r a_rps a_p50 a_p99 a_min a_max <<<"$(printf '%s' "${runs[a]}" | median_of)"
if ((have_trustmesh)); then
    read -r b_rps b_p50 b_p99 b_min b_max <<<"$(printf '%s' "${runs[b]}" | median_of)"
    # The pair really enforced mTLS + policy: the server proxy logged the client's identity.
    if ! grep -q "ns/bench/sa/client" "$work/server-proxy.access.log"; then
        log "warning: the server proxy's access log does not name the client identity"
    fi
fi
read -r c_rps c_p50 c_p99 c_min c_max <<<"$(printf '%s' "${runs[c]}" | median_of)"
if ((have_capture)); then
    read -r d_rps d_p50 d_p99 d_min d_max <<<"$(printf '%s' "${runs[d]}" | median_of)"
    # Both sidecars saw the requests, and the server's saw the client's identity.
    if [[ ! -s "$work/capture-client.access.log" ]]; then
        log "warning: the client sidecar (d) logged no request"
    fi
    if ! grep -q "ns/bench/sa/client" "$work/capture-server.access.log"; then
        log "warning: the server sidecar (d) access log does not name the client identity"
    fi
fi

row() { # name rps p50 p99 direct min max
    awk -v n="$1" -v r="$2" -v p50="$3" -v p99="$4" -v a50="$a_p50" -v a99="$a_p99" -v direct="$5" \
        -v lo="$6" -v hi="$7" '
        BEGIN {
            range = sprintf("%.0f-%.0f", lo, hi)
            if (direct) printf "%-24s %10.0f %13s %9.3f %9.3f %12s %12s\n", n, r, range, p50, p99, "-", "-"
            else printf "%-24s %10.0f %13s %9.3f %9.3f %12.3f %12.3f\n", n, r, range, p50, p99,
                (p50 - a50) / 2, (p99 - a99) / 2
        }'
}
cpu_row() { # name key: medians of the CPU columns; a path without proxies shows "-" for them
    local client server pair backend
    read -r client server pair backend <<<"$(printf '%s' "${cpu[$2]}" | median_cols)"
    if [[ -z "${client_pids[$2]:-}" ]]; then
        printf "%-24s %12s %12s %12s %12.1f\n" "$1" - - - "$backend"
    else
        printf "%-24s %12.1f %12.1f %12.1f %12.1f\n" "$1" "$client" "$server" "$pair" "$backend"
    fi
}
echo
where="loopback"
((have_capture)) && where="(a)-(c) loopback, (d) veth between two namespaces"
echo "$where; wrk -t$threads -c$connections -d${duration}s, medians of $rounds interleaved rounds," \
    "$(nproc) cores shared by all processes"
printf "%-24s %10s %13s %9s %9s %12s %12s\n" scenario "req/s" "req/s range" "p50 ms" "p99 ms" \
    "+p50 ms/hop" "+p99 ms/hop"
row "(a) direct" "$a_rps" "$a_p50" "$a_p99" 1 "$a_min" "$a_max"
if ((have_trustmesh)); then
    row "(b) trustmesh mTLS pair" "$b_rps" "$b_p50" "$b_p99" 0 "$b_min" "$b_max"
else
    printf "%-24s %s\n" "(b) trustmesh mTLS pair" "skipped: no binary at $bin"
fi
row "(c) nginx mTLS pair" "$c_rps" "$c_p50" "$c_p99" 0 "$c_min" "$c_max"
if ((have_capture)); then
    row "(d) trustmesh capture" "$d_rps" "$d_p50" "$d_p99" 0 "$d_min" "$d_max"
else
    printf "%-24s %s\n" "(d) trustmesh capture" "skipped: $cap_why"
fi

echo
echo "CPU per request, µs (utime + stime from /proc/<pid>/stat over each run ÷ requests;" \
    "medians of $rounds rounds)"
printf "%-24s %12s %12s %12s %12s\n" scenario "client proxy" "server proxy" "pair" "backend"
cpu_row "(a) direct" a
if ((have_trustmesh)); then
    cpu_row "(b) trustmesh mTLS pair" b
else
    printf "%-24s %s\n" "(b) trustmesh mTLS pair" "skipped: no binary at $bin"
fi
cpu_row "(c) nginx mTLS pair" c
if ((have_capture)); then
    cpu_row "(d) trustmesh capture" d
else
    printf "%-24s %s\n" "(d) trustmesh capture" "skipped: $cap_why"
fi

if ((have_trustmesh)); then
    read -r _ _ b_cpu _ <<<"$(printf '%s' "${cpu[b]}" | median_cols)"
    read -r _ _ c_cpu _ <<<"$(printf '%s' "${cpu[c]}" | median_cols)"
    awk -v b="$b_rps" -v c="$c_rps" -v b99="$b_p99" -v c99="$c_p99" \
        -v bc="$b_cpu" -v cc="$c_cpu" 'BEGIN {
        printf "\ntrustmesh/nginx: req/s %.0f %%, p99 %.0f %%, pair CPU per request %.0f %%\n",
            100 * b / c, 100 * b99 / c99, 100 * bc / cc }'
fi
if ((have_capture)); then
    read -r _ _ d_cpu _ <<<"$(printf '%s' "${cpu[d]}" | median_cols)"
    awk -v b="$b_rps" -v d="$d_rps" -v b99="$b_p99" -v d99="$d_p99" \
        -v bc="$b_cpu" -v dc="$d_cpu" 'BEGIN {
        printf "capture/explicit (d/b): req/s %.0f %%, p99 %.0f %%, pair CPU per request %.0f %%\n",
            100 * d / b, 100 * d99 / b99, 100 * dc / bc }'
fi
