#!/usr/bin/env bash
# bench/proxy.sh — what does a trustmesh sidecar pair cost, next to no proxy, next to nginx and
# next to Istio's ztunnel, in explicit mode and in transparent mode: throughput, latency, CPU
# per request, memory, and what a new connection costs?
#
# In one run, on this machine, it measures requests/s, p50/p99 latency (wrk), CPU per request
# and resident memory (from /proc) for five paths to the same backend (nginx serving a 13-byte
# static body):
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
#                  ══mTLS, HTTP/1.1 (-u: HTTP/2)══▶ 198.18.42.2:8080 ─iptables─▶ server sidecar
#                  ──HTTP──▶ backend
#                  (-H: ══HBONE══▶ 198.18.42.2:15008, each request inside a CONNECT stream)
#                  (transparent mode: two network namespaces of this run joined by a veth pair,
#                   `trustmesh capture install --proxy-uid 0` in each, sidecars with a
#                   `capture:` section routing by the registry — WorkloadEntry per side and a
#                   ServiceEntry with the explicit VIP 198.19.0.10, called by address, no DNS —
#                   auto mTLS; the same certificates, PeerAuthentication and AuthorizationPolicy
#                   as (b); a second nginx backend, same config, inside the server namespace)
#   (e) ztunnel    wrk (uid 65534) ──HTTP──▶ 198.19.1.10:8080 ─iptables─▶ client ztunnel :15001
#                  ══HBONE (HTTP/2 CONNECT in mTLS)══▶ 198.18.43.2:15008 server ztunnel ──▶ backend
#                  (Istio's ztunnel, given by ZTUNNEL_BIN, in dedicated mode — PROXY_MODE=
#                   dedicated, one per workload, as a sidecar — in two more namespaces joined by a
#                   veth pair, 198.18.43.1 and .2; the in-pod redirection it expects made by
#                   `trustmesh capture install`: the client's outbound to 15001, the server's
#                   inbound port 8080 to 15006 (plaintext, refused under STRICT), 15008 left to
#                   ztunnel. `trustmesh control` in the client namespace, on the same CA, is
#                   ztunnel's CA and xDS server (XDS_ADDRESS, CA_ADDRESS, a service-account
#                   token per side signed by a key of this run, as tests/ztunnel_interop.rs
#                   does) and serves it the same registry and AuthorizationPolicy — not the
#                   PeerAuthentication: trustmesh sends ztunnel no PeerAuthentication-derived
#                   policy, so plaintext is refused by the ALLOW policy, which needs a
#                   principal; ztunnel's DNS proxy off (ISTIO_META_DNS_CAPTURE=false), as (d)'s
#                   is; the same backend config in the server namespace.) It is L4: ztunnel
#                   does not parse HTTP; the policy is by principal only.
#
# It prints: req/s and latency, with the latency each proxy hop adds over (a) (a pair is two
# hops, so "added per hop" is (pair − direct) / 2); CPU per request in µs of each path's
# client-side proxy, server-side proxy, the pair, and the backend: user + system time from
# /proc/<pid>/stat (every thread; for nginx the master and its workers) read just before and
# after each wrk run, divided by the requests wrk completed in that run, and the same split
# into user space and kernel (utime, stime: what a proxy's own code costs, and what its system
# calls and the network stack under them cost; each comparison line also gives the first
# pair's kernel part alone as a share of the second pair's whole, and, over several rounds,
# the median of the pair CPU ratio taken round by round, which a machine faster in one round
# than in the next does not move); memory of each proxy
# (VmRSS from /proc/<pid>/status — for nginx its master and workers summed): idle after
# start-up, near the end of the steady phase and of each wrk run, and the peak (VmHWM), beside
# the goals of the issue (idle ≤ 12 MB, at 1,000 req/s over 100 connections ≤ 20 MB); and the
# TLS handshakes each pair really made between its two proxies per second.
#
# Steady phase (before the rounds, so its memory is not what a full-speed run left behind):
# per proxied path, wrk -c 100 for -s seconds with each connection paced to one request per
# 100 ms by wrk's Lua delay() (about 1,000 req/s), always with keep-alive; reports req/s,
# latency, CPU as % of one core, and memory.
#
# New-connection mode (-k): wrk sends `Connection: close`, so every request is a new
# connection from the app. Through (b) that is a new mTLS handshake per request (the explicit
# outbound relays each app connection on its own connection; trustmesh resumes sessions
# between sidecars, so after the first most are resumed: no signatures, one ECDH a side);
# (c) keeps TLS connections to its server side (keepalive), (d) sends each request over the
# client sidecar's pooled mTLS connections (HTTP/1.1, or HTTP/2 with -u) and (e) opens an
# HBONE stream per connection over ztunnel's pooled connections, so those three do not
# handshake per request. Handshakes are
# counted on the server side of each pair, not assumed: (b) and (d) the server sidecar's
# trustmesh_tls_handshakes_total and trustmesh_tls_resumed_total (/metrics on its admin port,
# 127.0.0.1:15000 inside the server namespace for (d)); (c) the nginx server's stub_status
# "accepts" (connections; nginx's client may resume, proxy_ssl_session_reuse is on); (e) an
# iptables counting rule for TCP SYNs coming into the server namespace over its veth
# (connections; ztunnel's client turns resumption off, so each is a full handshake). With -k
# it also prints the crypto ceiling of this machine (`openssl speed -seconds 1 ecdsap256
# ecdhp256 ecdhx25519`, one core), what a full and a resumed mTLS handshake cost in it, and
# how much of (b)'s CPU per request that is.
#
# Bulk (-b MIB, default 1024; 0 skips it): after the wrk rounds, one download of a MIB-MiB file
# (sparse, made with `truncate -s`, served by each path's nginx backend) through every path with
# curl, in interleaved rounds as many as -r; per path the transfer rate in MB/s (10^6 bytes) and
# the CPU seconds each proxy spent per GB (10^9 bytes) moved, from /proc as above. Every relayed
# byte is TLS on one side of each proxy, so none of them can splice it from socket to socket;
# what differs is how each moves and frames the bytes: (b)'s client side relays the
# connection's bytes and its server side parses HTTP/1, (d) parses HTTP on both sides and
# carries the body as HTTP/1.1 (with -u as HTTP/2 DATA frames), (e) carries the connection's
# bytes as DATA frames of its HBONE stream, (c) proxies HTTP/1 through nginx's buffers. Each
# curl is bounded by --max-time 300.
#
# Rounds: on a small shared machine one 10 s run of the same path varies by ±10 % from the next
# (scheduler placement of six busy processes on two cores), more than the difference being
# measured. So the paths are measured in interleaved rounds (a b c d e, a b c d e, ...) and the
# tables show, per path, the median over the rounds of each column on its own (req/s, p50, p99,
# each CPU figure, handshakes), with the lowest and highest req/s beside them, and the highest
# memory; every round's figures are printed as they come, and the raw wrk output is in wrk.log
# (KEEP_WORKDIR=1 keeps the work directory, with every proxy's access log and stderr).
#
# Usage:  bench/proxy.sh [-d SECONDS] [-t THREADS] [-c CONNECTIONS] [-r ROUNDS] [-s SECONDS] [-k]
#                       [-b MIB] [-u] [-n] [-H] [-4]
#         defaults: -d 10 -t 2 -c 32 -r 3 -s 10 -b 1024 (wrk --latency; -d -t -c -r 1..9999,
#         -s 0..9999, 0 skips the steady phase; -b 0..65536, 0 skips the bulk transfers); -k:
#         new-connection mode (above); -u: (d)'s sidecars get meshConfig `h2UpgradePolicy:
#         UPGRADE`, so requests go between them as HTTP/2 (without it HTTP/1.1, Istio's default
#         for an HTTP port, as wrk speaks it); -n: (d)'s sidecars get meshConfig
#         `accessLogFile: ""`, Istio's default, so they write no access log (without it they
#         log every request, as trustmesh does by default); -H: (d)'s WorkloadEntries carry
#         `networking.istio.io/tunnel: http`, as (e)'s do, so the client sidecar sends each
#         request (still HTTP/1.1, or HTTP/2 with -u) inside an HBONE CONNECT stream to the
#         server sidecar's port 15008, as Istio's sidecars reach ambient workloads: every
#         request shares one mTLS connection, whatever its HTTP version. -4: (d)'s service
#         port is declared TCP, so its sidecars relay connections without parsing HTTP (L4,
#         access log and metrics per connection), the work (e) does; with -H, the same
#         transport as (e) too. Every wrk run is bounded by its duration (and killed 30 s
#         after it), so a whole run takes about 5 × ROUNDS × SECONDS + 4 × STEADY SECONDS, plus
#         the bulk transfers (a few seconds each per GiB on this machine).
# Env:    TRUSTMESH_BIN   trustmesh binary (default: target/release/trustmesh; build it with
#                         `cargo build --release -p trustmesh`; this script never builds).
#                         When it is missing, (b), (d) and (e) are skipped and the tables say so.
#         ZTUNNEL_BIN     a ztunnel binary built from istio/ztunnel by whoever runs this (this
#                         script never builds or fetches it). Unset: (e) is skipped.
#         BENCH_PORT_BASE first of the loopback ports used by (a)-(c) (default 18000; uses
#                         base..base+6).
#         KEEP_WORKDIR=1  keep the temporary directory (configs, certificates, logs).
#
# (d) and (e) run only as root with ip, iptables (ip6tables when the kernel has IPv6) and
# setpriv, (e) also with basenc (coreutils) for its tokens; otherwise the tables say why they
# were skipped. They use addresses from the benchmarking range 198.18.0.0/15 only (198.18.42.0/24
# and VIP 198.19.0.10 for (d), 198.18.43.0/24 and VIP 198.19.1.10 for (e)), namespaces named
# tmbench-<pid>-client/-server and tmbench-<pid>-zclient/-zserver, and touch nothing in the
# host's namespace: the capture and counting rules live inside the namespaces, and the
# namespaces (with their veth ends and rules) are deleted on every exit, also on Ctrl-C or an
# error, after the processes in them are stopped.
#
# Needs wrk, nginx (with its stub_status module), openssl, curl, timeout and pgrep on PATH; it
# installs nothing. On Debian/Ubuntu:
#   apt-get install -y wrk nginx-light openssl curl procps      (or the `nginx` package)
#
# Caveats: wrk, the proxies and the backends share this machine's cores, so the numbers are
# for comparing the paths with each other in the same run, not absolute capacity. (a)-(c) run
# over loopback, (d) and (e) between two namespaces over a veth pair (the same kernel, one more
# device hop each way) plus the NAT of the capture on each new connection. trustmesh writes its
# JSON access log to stdout and ztunnel its log lines (info: one per connection) to stdout, as
# in production; the script sends them to files in the work directory, so that cost is
# included — the explicit outbound listener of (b) writes one line per connection, the capture's
# outbound port of (d) one per request, each trustmesh server side one per request, each
# ztunnel one per connection. CPU from /proc is what the scheduler charged to the process:
# network processing done in softirq context may land on whichever process was running. RSS
# counts a process's resident pages, shared ones included (summed over nginx's processes they
# are counted once per process). The control plane of (e) is not counted in any figure.
set -euo pipefail

duration=10
threads=2
connections=32
rounds=3
steady=10
close_mode=0
bulk_mib=1024
h2_upgrade=DO_NOT_UPGRADE
access_log_file=/dev/stdout
cap_labels=""
cap_protocol=HTTP
while getopts "d:t:c:r:s:b:kunH4h" opt; do
    case "$opt" in
        d) duration=$OPTARG ;;
        t) threads=$OPTARG ;;
        c) connections=$OPTARG ;;
        r) rounds=$OPTARG ;;
        s) steady=$OPTARG ;;
        k) close_mode=1 ;;
        b) bulk_mib=$OPTARG ;;
        u) h2_upgrade=UPGRADE ;;
        n) access_log_file= ;;
        H) cap_labels=", networking.istio.io/tunnel: http" ;;
        4) cap_protocol=TCP ;;
        *) awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0"; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
if (($#)); then
    echo "bench/proxy.sh: unexpected argument '$1' (see bench/proxy.sh -h)" >&2
    exit 2
fi
for n in "$duration" "$threads" "$connections" "$rounds"; do
    if [[ ! "$n" =~ ^[1-9][0-9]{0,3}$ ]]; then
        echo "bench/proxy.sh: -d, -t, -c and -r take a whole number from 1 to 9999, not '$n'" >&2
        exit 2
    fi
done
if [[ ! "$steady" =~ ^(0|[1-9][0-9]{0,3})$ ]]; then
    echo "bench/proxy.sh: -s takes a whole number from 0 to 9999, not '$steady'" >&2
    exit 2
fi
if [[ ! "$bulk_mib" =~ ^(0|[1-9][0-9]{0,4})$ ]] || ((bulk_mib > 65536)); then
    echo "bench/proxy.sh: -b takes a whole number of MiB from 0 to 65536, not '$bulk_mib'" >&2
    exit 2
fi

repo=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$repo/bench/lib.sh"
bin=${TRUSTMESH_BIN:-$repo/target/release/trustmesh}
zt_bin=${ZTUNNEL_BIN:-}
base=${BENCH_PORT_BASE:-18000}
backend_port=$base
tm_server_port=$((base + 1))
tm_client_port=$((base + 2))
ngx_server_port=$((base + 3))
ngx_client_port=$((base + 4))
admin_port=$((base + 5))
ngx_status_port=$((base + 6))

need_tools "apt-get install -y wrk nginx-light openssl curl procps" \
    wrk nginx openssl curl timeout pgrep
nginx_bin=$(command -v nginx)
hot_list_coverage "$bin" "$repo/trustmesh/hot-functions.txt"

# Keys and tokens are private; only the wrk script is for everyone (wrk runs as uid 65534 in
# the namespaces), in a directory of its own.
umask 077
work=$(mktemp -d /tmp/trustmesh-bench.XXXXXX)
chmod 711 "$work"
pids=()
namespaces=()
sampler=""
cleanup() {
    if [[ -n "$sampler" ]]; then # a memory sample waiting for the end of a wrk run: its sleep too
        pkill -P "$sampler" 2>/dev/null || true
        kill "$sampler" 2>/dev/null || true
    fi
    stop_started
    # After their processes: deleting a namespace deletes its veth end and its iptables rules.
    for ns in "${namespaces[@]}"; do
        ip netns del "$ns" 2>/dev/null || echo "[bench] could not delete network namespace $ns" >&2
    done
    drop_work
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
hz=$(getconf CLK_TCK)

# --- backend -------------------------------------------------------------------------------
mkdir -p "$work/www"
printf 'hello, mesh\n\n' >"$work/www/index.html"
# The bulk file: sparse, so it costs no disk and nginx reads it from the page cache.
((bulk_mib == 0)) || truncate -s $((bulk_mib * 1048576)) "$work/www/big.bin"
static_conf backend "127.0.0.1:$backend_port"
start_nginx "$work/backend.conf"
backend_master=${pids[-1]}
wait_ok "http://127.0.0.1:$backend_port/"

# --- certificates ----------------------------------------------------------------------------
# One CA for everything. trustmesh issues the SVIDs for its pair when the binary is present;
# the nginx pair gets certificates from the same CA made with openssl, with the same key type
# and a DNS name added, because nginx verifies the upstream's name and SVIDs carry only a URI.
# ztunnel gets its certificates from the same CA through `trustmesh control`.
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
issue_nginx server "$server_id" server.bench.local
issue_nginx client "$client_id"

# --- (b) trustmesh pair ----------------------------------------------------------------------
if ((have_trustmesh)); then
    bench_policies "$work/policies"
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
# The server side's stub_status, on a port of its own, counts the connections it accepts.
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
    server {
        listen 127.0.0.1:$ngx_status_port;
        location / { stub_status; }
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

# --- namespaces for (d) and (e) --------------------------------------------------------------
ns_why=""
if ((EUID != 0)); then
    ns_why="needs root (network namespaces, iptables)"
else
    export PATH=$PATH:/usr/sbin:/sbin
    for tool in ip iptables setpriv; do
        if ! command -v "$tool" >/dev/null 2>&1; then
            ns_why="$tool is not installed"
            break
        fi
    done
    # `capture install` writes IPv6 rules too when the kernel has IPv6.
    if [[ -z "$ns_why" && -e /proc/net/if_inet6 ]] && ! command -v ip6tables >/dev/null 2>&1; then
        ns_why="ip6tables is not installed"
    fi
fi
as_app=(setpriv --reuid 65534 --regid 65534 --clear-groups)

# capture_in NS [FLAG...]: `trustmesh capture install --proxy-uid 0 FLAG...` in namespace NS
# (the sidecars run as root, whose traffic it leaves alone); stops the run when it fails.
capture_in() {
    local ns=$1
    shift
    if ! ip netns exec "$ns" "$bin" capture install --proxy-uid 0 "$@" \
        >"$work/$ns.capture" 2>&1; then
        echo "bench/proxy.sh: trustmesh capture install failed in $ns:" >&2
        cat "$work/$ns.capture" >&2
        exit 1
    fi
}

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
else
    cap_why=$ns_why
fi
have_capture=0
if [[ -n "$cap_why" ]]; then
    log "skipping (d): $cap_why"
else
    have_capture=1
    ns_client=tmbench-$$-client
    ns_server=tmbench-$$-server
    pair_namespaces "" 198.18.42
    # The VIP is on no link; a route lets the app's connect reach the capture.
    ip -n "$ns_client" route add 198.19.0.0/24 dev "$client_veth"
    in_client=(ip netns exec "$ns_client")
    in_server=(ip netns exec "$ns_server")

    static_conf capture-backend "$cap_port"
    start_nginx "$work/capture-backend.conf" "${in_server[@]}"
    cap_backend_master=${pids[-1]}

    mkdir -p "$work/policies-capture"
    cp "$work/policies/bench.yaml" "$work/policies-capture/"
    bench_registry "$work/policies-capture/registry.yaml" "$cap_server_ip" "$cap_client_ip" \
        "$cap_vip" "$cap_port" "$cap_labels" "$cap_protocol"
    for side in server client; do
        cat >"$work/capture-$side.yaml" <<EOF
workload: { namespace: bench, serviceAccount: $side, labels: { app: $side } }
certs: { key: $work/$side/key.pem, certChain: $work/$side/cert-chain.pem }
trustBundles: [ "$td=$root" ]
mesh: { trustDomain: $td, h2UpgradePolicy: $h2_upgrade, accessLogFile: "$access_log_file" }
policyDir: $work/policies-capture
capture: { dns: false, vipRange: 198.19.0.0/24 }
admin: { address: "127.0.0.1:15000" }
EOF
    done
    # The capture first, as an init container runs it; then the sidecar (as root, which the
    # capture leaves alone).
    for side in server client; do
        ns=tmbench-$$-$side
        capture_in "$ns"
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

# --- (e) ztunnel pair ------------------------------------------------------------------------
# Two more namespaces, 198.18.43.1 (client: `trustmesh control`, client ztunnel, wrk as uid
# 65534) and 198.18.43.2 (server: server ztunnel, backend nginx on :8080). The control plane
# listens on every address of the client namespace: the client ztunnel calls it on 127.0.0.1
# (its own address over loopback would be sent to its inbound port by the capture, as for any
# proxy-owned connection to the workload's own address), the server ztunnel on 198.18.43.1.
zt_client_ip=198.18.43.1
zt_server_ip=198.18.43.2
zt_vip=198.19.1.10
zt_port=8080
if [[ -z "$zt_bin" ]]; then
    zt_why="set ZTUNNEL_BIN"
elif [[ ! -f "$zt_bin" || ! -x "$zt_bin" ]]; then
    zt_why="ZTUNNEL_BIN=$zt_bin is not an executable file"
elif ((!have_trustmesh)); then
    zt_why="no trustmesh binary at $bin (its control plane serves ztunnel)"
elif [[ -n "$ns_why" ]]; then
    zt_why=$ns_why
elif ! command -v basenc >/dev/null 2>&1; then
    zt_why="basenc (coreutils) is not installed"
else
    zt_why=""
fi
have_ztunnel=0
if [[ -n "$zt_why" ]]; then
    log "skipping (e): $zt_why"
else
    have_ztunnel=1
    ns_zc=tmbench-$$-zclient
    ns_zs=tmbench-$$-zserver
    pair_namespaces z 198.18.43
    ip -n "$ns_zc" route add 198.19.1.0/24 dev "$client_veth"
    in_zc=(ip netns exec "$ns_zc")
    in_zs=(ip netns exec "$ns_zs")

    static_conf ztunnel-backend "$zt_port"
    start_nginx "$work/ztunnel-backend.conf" "${in_zs[@]}"
    zt_backend_master=${pids[-1]}

    # What the control plane serves: (b)'s policies, and a registry like (d)'s with each
    # workload marked as speaking HBONE.
    mkdir -p "$work/zt/config"
    cp "$work/policies/bench.yaml" "$work/zt/config/"
    bench_registry "$work/zt/config/registry.yaml" "$zt_server_ip" "$zt_client_ip" "$zt_vip" \
        "$zt_port" ", networking.istio.io/tunnel: http"
    issuer=https://kubernetes.default.svc.cluster.local
    token_issuer "$work/zt"
    for side in client server; do
        token "$work/zt" "$issuer" bench "$side" >"$work/zt/token-$side"
    done
    "${in_zc[@]}" "$bin" control --ca "$work/ca" --listen 0.0.0.0:15012 \
        --monitoring-listen 127.0.0.1:15014 --config-dir "$work/zt/config" \
        --jwt-issuer "$issuer" --jwks "$work/zt/jwks.json" \
        --ambient-identity "$client_id" --ambient-identity "$server_id" \
        --vip-range 198.19.1.0/24 >"$work/zt-control.log" 2>&1 &
    pids+=($!)
    if ! wait_ok "http://127.0.0.1:15014/ready" "${in_zc[@]}"; then
        cat "$work/zt-control.log" >&2
        exit 1
    fi

    # The redirection ztunnel expects in a pod: the client's outbound to 15001 (nothing
    # inbound); the server's inbound port 8080 to 15006 and 15008 left to ztunnel, and its own
    # connections to the app on 8080 left alone.
    capture_in "$ns_zc" --istio-inbound-ports ""
    capture_in "$ns_zs" --istio-inbound-ports "$zt_port" --istio-local-outbound-ports-exclude "$zt_port"
    for side in client server; do
        if [[ $side == client ]]; then
            ns=$ns_zc ip=$zt_client_ip control=127.0.0.1:15012
        else
            ns=$ns_zs ip=$zt_server_ip control=$zt_client_ip:15012
        fi
        ip netns exec "$ns" env PROXY_MODE=dedicated PROXY_WORKLOAD_INFO="bench/$side/$side" \
            XDS_ADDRESS="https://$control" CA_ADDRESS="https://$control" \
            XDS_ROOT_CA="$root" CA_ROOT_CA="$root" \
            ALT_XDS_HOSTNAME=istiod.istio-system.svc ALT_CA_HOSTNAME=istiod.istio-system.svc \
            AUTH_TOKEN="$work/zt/token-$side" ENABLE_ORIG_SRC=false ISTIO_META_DNS_CAPTURE=false \
            POD_NAMESPACE=bench POD_NAME="$side" INSTANCE_IP="$ip" \
            "$zt_bin" proxy >"$work/ztunnel-$side.log" 2>&1 &
        pids+=($!)
        printf -v "zt_${side}_pid" %s $!
    done
    for ns in "$ns_zc" "$ns_zs"; do
        if ! wait_secs=60 wait_ok "http://127.0.0.1:15021/healthz/ready" ip netns exec "$ns"; then
            log "ztunnel in $ns not ready; its log and the control plane's:"
            tail -n 30 "$work/ztunnel-client.log" "$work/ztunnel-server.log" "$work/zt-control.log" >&2
            exit 1
        fi
    done
    if ! wait_secs=30 wait_ok "http://$zt_vip:$zt_port/" "${in_zc[@]}" "${as_app[@]}"; then
        log "ztunnel pair not passing requests; the logs:"
        tail -n 30 "$work/ztunnel-client.log" "$work/ztunnel-server.log" "$work/zt-control.log" >&2
        exit 1
    fi
    # Sanity: root's plaintext to the server's port reaches ztunnel's inbound plaintext port,
    # where the ALLOW policy (a principal is needed) must refuse it. trustmesh control does not
    # send ztunnel PeerAuthentication-derived policies, so STRICT is not what refuses it here.
    code=$("${in_zc[@]}" curl -s -o /dev/null -w '%{http_code}' --max-time 2 \
        "http://$zt_server_ip:$zt_port/" || true)
    if [[ "$code" == 200 ]]; then
        echo "bench/proxy.sh: the ztunnel server namespace served plaintext to a caller without" \
            "an identity" >&2
        exit 1
    fi
fi

# --- measure ----------------------------------------------------------------------------------
# Which processes each path's CPU and memory are counted for: its client-side proxy, its
# server-side proxy and its backend (nginx: the master and its workers).
declare -A client_pids server_pids backend_pids runs cpu cpu_split rss_load handshakes rss_idle rss_split steady_split
declare -A steady_of hwm_end
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
if ((have_ztunnel)); then
    client_pids[e]=$zt_client_pid
    server_pids[e]=$zt_server_pid
    backend_pids[e]=$(nginx_pids "$zt_backend_master")
fi
keys=(a)
((have_trustmesh)) && keys+=(b)
keys+=(c)
((have_capture)) && keys+=(d)
((have_ztunnel)) && keys+=(e)
declare -A name=([a]="(a) direct" [b]="(b) trustmesh mTLS pair" [c]="(c) nginx mTLS pair"
    [d]="(d) trustmesh capture" [e]="(e) ztunnel HBONE, L4")
declare -A url=([a]="http://127.0.0.1:$backend_port/" [b]="http://127.0.0.1:$tm_client_port/"
    [c]="http://127.0.0.1:$ngx_client_port/" [d]="http://$cap_vip:$cap_port/"
    [e]="http://$zt_vip:$zt_port/")
[[ -n "$cap_labels" ]] && name[d]="(d) trustmesh HBONE, L7"
if [[ $cap_protocol == TCP ]]; then
    name[d]="(d) trustmesh capture, L4"
    [[ -n "$cap_labels" ]] && name[d]="(d) trustmesh HBONE, L4"
fi
# how KEY: the prefix wrk runs under for KEY (a namespace and the app's uid), one word a line.
how() {
    case $1 in
        d) printf '%s\n' "${in_client[@]}" "${as_app[@]}" ;;
        e) printf '%s\n' "${in_zc[@]}" "${as_app[@]}" ;;
    esac
}
# handshakes_in KEY: "all resumed", the TLS handshakes the server-side proxy of KEY has made
# with its client side so far, and how many of them resumed a session (see the header for
# where each is read); "-" for a figure that cannot be read.
handshakes_in() {
    case $1 in
        b) tm_handshakes "http://127.0.0.1:$admin_port/metrics" ;;
        d) tm_handshakes "http://127.0.0.1:15000/metrics" "${in_server[@]}" ;;
        c) echo "$(stub_accepts "http://127.0.0.1:$ngx_status_port/") -" ;;
        e) echo "$(syn_count "$ns_zs") -" ;;
        *) echo "- -" ;;
    esac
}
# cpu_sample KEY: the CPU so far of KEY's client-side and server-side proxies, in clock ticks,
# as "client_user client_system server_user server_system" (no proxy: zeros).
cpu_sample() {
    local c s
    c=$(ticks_split ${client_pids[$1]:-}) || return 1
    s=$(ticks_split ${server_pids[$1]:-}) || return 1
    echo "$c $s"
}
# rss_late KEY SECONDS: after SECONDS − 0.5 (the end of a wrk run, its connections still
# open), VmRSS in kB of KEY's client-side and server-side proxies, then their RssAnon and
# RssFile (client anon, client file, server anon, server file).
rss_late() {
    local field
    sleep "$(awk -v s="$2" 'BEGIN { print (s > 1 ? s - 0.5 : s / 2) }')"
    # The pid lists are split into words on purpose (SC2086).
    printf '%s %s' "$(mem_kb VmRSS ${client_pids[$1]:-})" "$(mem_kb VmRSS ${server_pids[$1]:-})"
    for field in RssAnon RssFile; do
        printf ' %s' "$(mem_kb $field ${client_pids[$1]:-})"
    done
    for field in RssAnon RssFile; do
        printf ' %s' "$(mem_kb $field ${server_pids[$1]:-})"
    done
    echo
}

# run_path PHASE KEY: one wrk run of path KEY. PHASE "load": wrk -t -c -d as given, its
# "rps p50 p99" appended to runs[KEY], the CPU per request in µs of its "client server pair
# backend" to cpu[KEY] (each the difference of /proc's utime + stime over the run divided by
# the requests wrk completed), the proxies' VmRSS at the end to rss_load[KEY], and
# "handshakes/s per-request handshakes resumed" to handshakes[KEY]. PHASE "steady": -c 100 paced to
# ~1,000 req/s for -s seconds, with keep-alive; steady_of[KEY] = "rps p50 p99 client% server%
# rss_c rss_s hwm_c hwm_s" (CPU as % of one core).
run_path() {
    local phase=$1 key=$2 r c0 s0 k0 h0 c1 s1 k1 h1 q0 q1 rps p50 p99 n rc rs split prefix=()
    local t cu0 cs0 su0 ss0 cu1 cs1 su1 ss1
    mapfile -t prefix < <(how "$key")
    if [[ $phase == load ]]; then
        wrk_secs=$duration
        wrk_opts=(-t "$threads" -c "$connections")
        ((close_mode)) && wrk_opts+=(-H "Connection: close")
    else
        wrk_secs=$steady
        wrk_opts=(-t "$threads" -c 100 -s "$work/lua/pace.lua")
    fi
    t=$(cpu_sample "$key")
    read -r cu0 cs0 su0 ss0 <<<"$t"
    c0=$((cu0 + cs0)) s0=$((su0 + ss0))
    k0=$(ticks ${backend_pids[$key]})
    read -r h0 q0 <<<"$(handshakes_in "$key")"
    rss_late "$key" "$wrk_secs" >"$work/rss.sample" &
    sampler=$!
    r=$(measure "${url[$key]}" "${prefix[@]}")
    wait "$sampler"
    sampler=""
    t=$(cpu_sample "$key")
    read -r cu1 cs1 su1 ss1 <<<"$t"
    c1=$((cu1 + cs1)) s1=$((su1 + ss1))
    k1=$(ticks ${backend_pids[$key]})
    read -r h1 q1 <<<"$(handshakes_in "$key")"
    read -r rc rs split <"$work/rss.sample"
    read -r rps p50 p99 n <<<"$r"
    if [[ ! "$n" =~ ^[1-9][0-9]*$ ]]; then
        echo "bench/proxy.sh: wrk completed no request on ${url[$key]} (see $work/wrk.log)" >&2
        return 1
    fi
    if [[ $phase == steady ]]; then
        steady_of[$key]=$(awk -v hz="$hz" -v t="$wrk_secs" -v c=$((c1 - c0)) -v s=$((s1 - s0)) '
            BEGIN { printf "%.1f %.1f", 100 * c / hz / t, 100 * s / hz / t }')
        steady_of[$key]="$rps $p50 $p99 ${steady_of[$key]} $rc $rs"
        steady_of[$key]+=" $(mem_kb VmHWM ${client_pids[$key]:-}) $(mem_kb VmHWM ${server_pids[$key]:-})"
        steady_split[$key]=$split
        log "  req/s p50 p99, CPU % of a core client server, VmRSS kB client server: ${steady_of[$key]}"
        return
    fi
    runs[$key]+="$rps $p50 $p99"$'\n'
    r=$(awk -v n="$n" -v hz="$hz" -v c=$((c1 - c0)) -v s=$((s1 - s0)) -v k=$((k1 - k0)) '
        BEGIN { f = 1e6 / hz / n; printf "%.2f %.2f %.2f %.2f", c * f, s * f, (c + s) * f, k * f }')
    cpu[$key]+="$r"$'\n'
    cpu_split[$key]+=$(awk -v n="$n" -v hz="$hz" -v cu=$((cu1 - cu0)) -v cs=$((cs1 - cs0)) \
        -v su=$((su1 - su0)) -v ss=$((ss1 - ss0)) '
        BEGIN { f = 1e6 / hz / n; printf "%.2f %.2f %.2f %.2f %.2f %.2f", cu * f, cs * f,
            su * f, ss * f, (cu + su) * f, (cs + ss) * f }')$'\n'
    rss_load[$key]+="$rc $rs"$'\n'
    if [[ "$h0" != - && "$h1" != - ]]; then
        handshakes[$key]+=$(awk -v h=$((h1 - h0)) -v t="$wrk_secs" -v n="$n" -v q0="$q0" -v q1="$q1" '
            BEGIN { printf "%.1f %.4f %d %s", h / t, h / n, h, (q0 == "-" || q1 == "-") ? "-" : q1 - q0 }')$'\n'
    fi
    log "  req/s p50 p99: $rps $p50 $p99; CPU µs/req client server pair backend: $r;" \
        "VmRSS kB client server: $rc $rs; handshakes (resumed): $h0 ($q0) → $h1 ($q1)"
}

# Memory before any load (the set-up's few requests aside).
for key in "${keys[@]}"; do
    rss_idle[$key]="$(mem_kb VmRSS ${client_pids[$key]:-}) $(mem_kb VmRSS ${server_pids[$key]:-})"
    for field in RssAnon RssFile; do
        rss_split[$key]+="$(mem_kb $field ${client_pids[$key]:-}) "
    done
    for field in RssAnon RssFile; do
        rss_split[$key]+="$(mem_kb $field ${server_pids[$key]:-}) "
    done
done

if ((steady > 0)); then
    # Each connection sends its next request 100 ms after the last answer: 100 connections make
    # a little under 1,000 req/s.
    mkdir -m 755 "$work/lua"
    printf 'function delay()\n    return 100\nend\n' >"$work/lua/pace.lua"
    chmod 644 "$work/lua/pace.lua"
    log "steady phase: wrk -t$threads -c100 -d${steady}s, each connection paced to 10 req/s"
    for key in "${keys[@]:1}"; do
        log "steady: ${name[$key]}"
        run_path steady "$key"
    done
fi

mode="keep-alive"
((close_mode)) && mode="Connection: close (a new connection per request)"
log "wrk -t$threads -c$connections -d${duration}s --latency, $mode, $rounds interleaved rounds"
for round in $(seq 1 "$rounds"); do
    for key in "${keys[@]}"; do
        log "round $round/$rounds: ${name[$key]}"
        run_path load "$key"
    done
done

# bulk_path KEY: one download of big.bin through path KEY; appends "MB/s client server pair"
# (CPU seconds per GB of its client-side proxy, its server-side proxy and both) to bulk_of[KEY].
declare -A bulk_of
bulk_path() {
    local key=$1 c0 s0 c1 s1 out code size secs r prefix=()
    mapfile -t prefix < <(how "$key")
    c0=$(ticks ${client_pids[$key]:-})
    s0=$(ticks ${server_pids[$key]:-})
    out=$("${prefix[@]}" curl -s -o /dev/null --max-time 300 \
        -w '%{http_code} %{size_download} %{time_total}' "${url[$key]}big.bin" || true)
    c1=$(ticks ${client_pids[$key]:-})
    s1=$(ticks ${server_pids[$key]:-})
    read -r code size secs <<<"$out"
    if [[ "$code" != 200 || "$size" != $((bulk_mib * 1048576)) ]]; then
        echo "bench/proxy.sh: the bulk download through ${name[$key]} ended with" \
            "'${out:-nothing}' (want 200 and $((bulk_mib * 1048576)) bytes)" >&2
        return 1
    fi
    r=$(awk -v b="$size" -v t="$secs" -v hz="$hz" -v c=$((c1 - c0)) -v s=$((s1 - s0)) '
        BEGIN { g = b / 1e9; printf "%.0f %.2f %.2f %.2f", b / 1e6 / t, c / hz / g, s / hz / g, (c + s) / hz / g }')
    bulk_of[$key]+="$r"$'\n'
    log "  MB/s, CPU s/GB client server pair: $r"
}
if ((bulk_mib > 0)); then
    log "bulk: $bulk_mib MiB down through every path, $rounds interleaved rounds"
    for round in $(seq 1 "$rounds"); do
        for key in "${keys[@]}"; do
            log "bulk round $round/$rounds: ${name[$key]}"
            bulk_path "$key"
        done
    done
fi
for key in "${keys[@]}"; do
    hwm_end[$key]="$(mem_kb VmHWM ${client_pids[$key]:-}) $(mem_kb VmHWM ${server_pids[$key]:-})"
done

# The pairs really enforced mTLS + policy: each server side logged the client's identity.
check_identity() { # LOG WHAT
    grep -q "ns/bench/sa/client" "$1" || log "warning: $2 does not name the client identity"
}
((have_trustmesh)) && check_identity "$work/server-proxy.access.log" "the server proxy's access log (b)"
if ((have_capture)); then
    [[ -s "$work/capture-client.access.log" ]] || log "warning: the client sidecar (d) logged no request"
    check_identity "$work/capture-server.access.log" "the server sidecar's access log (d)"
fi
((have_ztunnel)) && check_identity "$work/ztunnel-server.log" "the server ztunnel's log (e)"

declare -A why=([b]="no binary at $bin" [d]="$cap_why" [e]="$zt_why")
where="loopback"
((have_capture)) && where="(a)-(c) loopback, (d) and (e) veth between two namespaces"
echo
echo "$where; wrk -t$threads -c$connections -d${duration}s, $mode, medians of $rounds" \
    "interleaved rounds, $(nproc) cores shared by all processes"
report_throughput
between=HTTP/1.1
[[ $h2_upgrade == UPGRADE ]] && between="HTTP/2, -u"
[[ -z $access_log_file ]] && between="$between, no access log: -n"
if [[ $cap_protocol == TCP ]]; then
    echo "(b) relays each connection to the server proxy, which parses HTTP; (d) relays each"
    echo "connection on both sides (-4: the port is TCP, policy by identity and port); (e) is L4: ztunnel tunnels each"
else
    echo "(b) relays each connection to the server proxy, which parses HTTP; (d) parses and routes"
    echo "each request on both sides ($between between them); (e) is L4: ztunnel tunnels each"
fi
echo "connection (HBONE) and enforces policy by identity and port, without parsing HTTP."
echo
echo "CPU per request, µs (utime + stime from /proc/<pid>/stat over each run ÷ requests;" \
    "medians of $rounds rounds)"
report_cpu
echo
echo "The same, user space and kernel apart (utime | stime), µs per request, medians of $rounds rounds"
report_cpu_split
if ((steady > 0)); then
    echo
    echo "Steady phase: wrk -t$threads -c100 -d${steady}s, each connection one request per 100 ms" \
        "(keep-alive), before the rounds; CPU as % of one core"
    report_steady
fi
echo
echo "Memory per proxy, MB (kB / 1024 from /proc/<pid>/status; nginx: master + workers summed):"
echo "  idle after start-up; 1k/s VmRSS near the end of the steady phase, pk1k VmHWM after it;"
echo "  load the highest VmRSS near the end of a wrk run; peak VmHWM at the end."
echo "  Goals of the issue, per proxy: idle ≤ 12 MB; at 1,000 req/s over 100 connections ≤ 20 MB."
report_memory
echo "VmRSS of each proxy, MB, idle and near the end of the steady phase (1k/s): anonymous"
echo "(RssAnon: heap, stacks) + file-backed (RssFile: the pages of the binary and libraries mapped in)"
report_idle_split
if ((bulk_mib > 0)); then
    echo
    echo "Bulk: one $bulk_mib MiB download per path and round with curl, medians of $rounds" \
        "interleaved rounds; MB/s in 10^6 bytes, CPU seconds per GB (10^9 bytes) moved"
    report_bulk
fi
echo
echo "TLS handshakes between the two proxies of each pair, counted on the server side, medians of"
echo "$rounds rounds (for nginx and ztunnel the connections; ztunnel never resumes, nginx may):"
report_handshakes
if ((close_mode)); then
    echo
    cat <<EOF
With -k every request is a new connection from wrk: (a) a new TCP connection to the backend;
(b) a new mTLS connection from the client proxy to the server proxy, so one handshake per
request (resumed when the client proxy holds a ticket from the server proxy); (c) nginx keeps
TLS connections to its server side (keepalive 64), (d) sends each request over the client
sidecar's pooled mTLS connections and (e) opens an HBONE stream (HTTP/2 CONNECT) per
connection over ztunnel's pooled mTLS connections: none of those three handshakes per request.
(b)'s handshakes per request are a little over 1: the connections wrk has open when a run
stops count too.
EOF
    echo
    b_hs="" b_res="" b_pair=""
    if [[ -n "${handshakes[b]:-}" ]]; then
        read -r b_hs _ <<<"$(printf '%s' "${handshakes[b]}" | median_cols)"
        b_res=$(printf '%s' "${handshakes[b]}" | resumed_share)
        read -r _ _ b_pair _ <<<"$(printf '%s' "${cpu[b]}" | median_cols)"
    fi
    crypto_ceiling "$b_hs" "$b_res" "$b_pair"
fi
echo
ratio "trustmesh/nginx (b/c)" b c
ratio "capture/explicit (d/b)" d b
ratio "trustmesh capture/ztunnel (d/e)" d e
if ((bulk_mib > 0)); then
    bulk_ratio "bulk, trustmesh capture/ztunnel (d/e)" d e
    bulk_ratio "bulk, trustmesh explicit/ztunnel (b/e)" b e
fi
