#!/usr/bin/env bash
# bench/connections.sh — what do bulk transfers and many idle mTLS connections cost a trustmesh
# sidecar pair, next to nginx doing the same, and how close do handshakes come to the crypto?
#
# Paths, all on loopback, to the same backends (nginx serving a sparse file for downloads; for
# uploads bench/conntool.py's sink, which answers only once it has read the whole body):
#
#   (d)  direct        curl ──▶ backend
#   (t4) trustmesh L4  curl ──▶ client proxy `outbound:` ══mTLS══▶ server proxy `inbound:`
#                      protocol: tcp ──▶ backend (a byte relay on both sides)
#   (t7) trustmesh L7  the same, the server's inbound ports protocol: http (HTTP parsed,
#                      authorized and forwarded per request; the client side still relays bytes)
#   (n7) nginx HTTP    bench/proxy.sh's nginx pair (upstream keepalive), with proxy_buffering
#                      and proxy_request_buffering off and 16k proxy buffers
#   (n4) nginx stream  the stream module: client `proxy_ssl on` ══mTLS══▶ server `listen ssl`,
#                      ssl_verify_client on — a TCP relay like (t4)
#
# One CA (`trustmesh ca`) for every certificate, ECDSA P-256, TLS 1.3. nginx is told not to
# resume sessions, so each of its new connections is a full mutual handshake; trustmesh resumes
# sessions between its sidecars (TLS 1.3 tickets, the peer's chain checked again as of now), so
# after the first connections most are resumed: the "resumed" column counts them (the server
# proxy's trustmesh_tls_resumed_total), and "×crypto" compares with full handshakes. trustmesh: PeerAuthentication STRICT, an ALLOW policy naming the client.
#
# 1. Bulk: download (GET) and upload (`curl -T`: PUT with Content-Length) of a sparse file
#    (`truncate -s`, default 1 GiB) through each path, in interleaved rounds; per path the
#    medians of MB/s and of each proxy's CPU seconds per GB (user + system from /proc/<pid>/stat
#    before and after, every thread; nginx: master and workers).
# 2. Idle: N connections (default 10,000) to a path's client side, each sending one HTTP/1.1
#    keep-alive request, reading the answer, then staying open 2 s (bench/conntool.py idle). In
#    (t4), (t7) and (n4) each holds an mTLS connection of its own; (n7) is left out, as its
#    client pools upstream connections. Reported: connections/s; CPU µs per connection of each
#    proxy and of the opener (ticks during the opening ÷ N), and "×crypto", the pair's ÷ twice
#    one side's crypto (3.); VmRSS before, with the N idle and after they closed, KiB each.
#    Checked, not assumed: "accepted" by the server proxy (trustmesh /metrics), "backend"
#    connections held meanwhile, "log ok" afterwards (server access-log lines naming the client;
#    nginx: sessions verified and not resumed), "still" open when we closed them, "errors": TLS
#    errors the trustmesh pair counted.
# 3. The ceiling: `openssl speed` ECDSA P-256 sign/verify and ECDH (X25519, which rustls and
#    OpenSSL agree on first; P-256 shown too). Per full TLS 1.3 mutual handshake each side signs
#    once (CertificateVerify) and verifies the peer's CertificateVerify plus one signature per
#    certificate from the peer's leaf up to the trust anchor (rustls/webpki and OpenSSL alike:
#    leaf + intermediate = 2; `trustmesh ca init` signs leaves with the root itself = 1), plus a
#    key generation and an ECDH (2 X25519 ops): the handshakes/s of one core, next to the pair's.
#
# Usage:  bench/connections.sh [-r ROUNDS] [-n CONNECTIONS] [-m MIB]
#         defaults: -r 3 -n 10000 -m 1024 (whole numbers; -r ≤ 99, -m ≤ 16384). Each transfer
#         is bounded by curl --max-time (60 s + 1 s per 10 MiB), opening N connections by
#         30 s + 1 s per 50.
# Env:    TRUSTMESH_BIN   trustmesh binary (default: target/release/trustmesh; this script never
#                         builds it). Without one, (t4) and (t7) are skipped.
#         BENCH_PORT_BASE first of 20 loopback ports (default 18200).
#         KEEP_WORKDIR=1  keep the temporary directory (configs, certificates, logs).
#
# Needs nginx (for (n4) its stream module: Debian's libnginx-mod-stream), openssl, curl,
# python3, pgrep, truncate; installs nothing. It raises its open-file limit to 2 × N + 200
# (where the hard limit is lower, N is lowered to fit, and the report says so), and
# trustmesh's maxConnections (default 16,384) to 4 × N + 4096: each proxy here has two
# listeners, and one may take the limit less the other's reserve of a quarter.
#
# Caveats: curl, python, the proxies and the backends share the cores: compare paths within a
# run. The opener is one python thread and may bound connections/s (its CPU is shown). CPU per
# connection covers accept, connect, one request and one access-log line, not only the
# handshake. nginx's RSS is summed over master and workers (shared pages counted twice); the
# proxies' RSS after closing shows what their allocators kept. trustmesh's access logs go to
# files in the work directory; their cost is in its CPU.
set -euo pipefail

rounds=3
conns=10000
mib=1024
while getopts "r:n:m:h" opt; do
    case "$opt" in
        r) rounds=$OPTARG ;;
        n) conns=$OPTARG ;;
        m) mib=$OPTARG ;;
        *) awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0"; exit 2 ;;
    esac
done
if [[ ! "$rounds" =~ ^[1-9][0-9]?$ || ! "$conns" =~ ^[1-9][0-9]{0,5}$ ||
    ! "$mib" =~ ^[1-9][0-9]{0,4}$ ]] || ((mib > 16384)); then
    echo "bench/connections.sh: -r takes a whole number from 1 to 99, -n from 1 to 999999," \
        "-m from 1 to 16384 (not -r '$rounds' -n '$conns' -m '$mib')" >&2
    exit 2
fi
read -r port_lo port_hi </proc/sys/net/ipv4/ip_local_port_range
if ((conns > port_hi - port_lo - 2000)); then
    echo "bench/connections.sh: -n $conns needs more local ports than $port_lo-$port_hi leaves" >&2
    exit 2
fi

repo=$(cd "$(dirname "$0")/.." && pwd)
# From bench/lib.sh: log, wait_ok, start_nginx, nginx_pids, nginx_main, nginx_preamble, ticks,
# median_cols, issue_nginx (it reads work, pids, nginx_bin, worker_connections, ca_cert, ca_key,
# root).
# shellcheck source=bench/lib.sh
source "$repo/bench/lib.sh"
bin=${TRUSTMESH_BIN:-$repo/target/release/trustmesh}
conntool=$repo/bench/conntool.py
base=${BENCH_PORT_BASE:-18200}
backend_port=$base
sink_port=$((base + 1))
bytes=$((mib * 1048576))
tmax=$((60 + mib / 10))

need_tools "apt-get install -y nginx-light libnginx-mod-stream openssl curl python3 procps" \
    nginx openssl curl python3 pgrep truncate
nginx_bin=$(command -v nginx)

# The client proxy holds two sockets per connection: raise the open-file limit (every process
# started here inherits it), or, where the hard limit is lower, open fewer connections.
capped=""
if (($(ulimit -n) < 2 * conns + 200)) && ! ulimit -n $((2 * conns + 200)) 2>/dev/null; then
    ulimit -n "$(ulimit -Hn)"
    capped=" (not $conns: the open-file hard limit, $(ulimit -Hn), holds no more)"
    conns=$((($(ulimit -Hn) - 200) / 2))
    ((conns > 0)) || { echo "bench/connections.sh: the open-file limit is too low" >&2; exit 1; }
    echo "bench/connections.sh: $conns idle connections per path$capped" >&2
fi
max_conns=$((4 * conns + 4096))
worker_connections=$((2 * conns + 1024 < $(ulimit -n) ? 2 * conns + 1024 : $(ulimit -n)))

work=$(mktemp -d /tmp/trustmesh-connbench.XXXXXX)
pids=()
cleanup() {
    stop_started
    drop_work
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

hz=$(getconf CLK_TCK) # ticks per second, for ticks' figures

# rss_kib PID...: the sum of their VmRSS, in KiB.
rss_kib() {
    local pid
    for pid in "$@"; do cat "/proc/$pid/status"; done | awk '/^VmRSS:/ { t += $2 } END { print t + 0 }'
}

# --- backends ------------------------------------------------------------------------------
mkdir -p "$work/www"
printf 'hello, mesh\n\n' >"$work/www/index.html"
truncate -s "$bytes" "$work/www/big.bin"
cat "$work/www/big.bin" >/dev/null # into the page cache before the first round
{
    nginx_preamble backend
    cat <<EOF
    sendfile on;
    keepalive_timeout 600s;
    server {
        listen 127.0.0.1:$backend_port backlog=4096;
        location / { root $work/www; }
        location = /status { stub_status; }
    }
}
EOF
} >"$work/backend.conf"
start_nginx "$work/backend.conf"
python3 "$conntool" sink "$sink_port" 2>"$work/sink.err" &
pids+=($!)
wait_ok "http://127.0.0.1:$backend_port/"
wait_ok "http://127.0.0.1:$sink_port/"
# backend_conns: the backend's open client connections, less the one asking.
backend_conns() {
    curl -s --max-time 5 "http://127.0.0.1:$backend_port/status" |
        awk '/^Active connections:/ { print $3 - 1 }'
}

# --- certificates ----------------------------------------------------------------------------
td=cluster.local
server_id=spiffe://$td/ns/bench/sa/server
client_id=spiffe://$td/ns/bench/sa/client
have_trustmesh=0
mkdir -p "$work/ca"
if [[ -x "$bin" ]]; then
    have_trustmesh=1
    "$bin" ca init --trust-domain "$td" --out "$work/ca" >/dev/null
    "$bin" ca issue --ca "$work/ca" --spiffe-id "$server_id" --out "$work/server" >/dev/null
    "$bin" ca issue --ca "$work/ca" --spiffe-id "$client_id" --out "$work/client" >/dev/null
    root=$work/ca/root-cert.pem
else
    log "no trustmesh binary at $bin: skipping (t4), (t7); build: cargo build --release -p trustmesh"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
        -subj "/O=bench/CN=bench-root" -keyout "$work/ca/ca-key.pem" \
        -out "$work/ca/ca-cert.pem" 2>/dev/null
    root=$work/ca/ca-cert.pem
fi
ca_cert=$work/ca/ca-cert.pem
ca_key=$work/ca/ca-key.pem

issue_nginx server "$server_id" server.bench.local
issue_nginx client "$client_id"

# --- trustmesh pairs -------------------------------------------------------------------------
declare -A client_pids server_pids client_master server_master down_port up_port up_path
declare -A admin_client admin_server
# tm_pair KEY PROTOCOL FIRST_PORT: a pair whose server's inbound ports speak PROTOCOL. Ports:
# FIRST server→backend, +1 server→sink, +2 client→FIRST, +3 client→+1, +4 and +5 admin.
tm_pair() {
    local key=$1 proto=$2 p=$3 side
    for side in server client; do
        cat >"$work/$key-$side.yaml" <<EOF
workload: { namespace: bench, serviceAccount: $side, labels: { app: $side } }
certs: { key: $work/$side/key.pem, certChain: $work/$side/cert-chain.pem }
trustBundles: [ "$td=$root" ]
mesh: { trustDomain: $td }
maxConnections: $max_conns
EOF
    done
    cat >>"$work/$key-server.yaml" <<EOF
policyDir: $work/policies
inbound:
- { port: $p, targetPort: $backend_port, protocol: $proto }
- { port: $((p + 1)), targetPort: $sink_port, protocol: $proto }
admin: { address: "127.0.0.1:$((p + 4))" }
EOF
    cat >>"$work/$key-client.yaml" <<EOF
outbound:
- { port: $((p + 2)), peer: "127.0.0.1:$p", peerIdentity: "$server_id", protocol: $proto }
- { port: $((p + 3)), peer: "127.0.0.1:$((p + 1))", peerIdentity: "$server_id", protocol: $proto }
admin: { address: "127.0.0.1:$((p + 5))" }
EOF
    for side in server client; do
        RUST_LOG=warn "$bin" proxy --config "$work/$key-$side.yaml" \
            >"$work/$key-$side.access.log" 2>"$work/$key-$side.err" &
        pids+=($!)
    done
    server_pids[$key]=${pids[-2]}
    client_pids[$key]=${pids[-1]}
    down_port[$key]=$((p + 2))
    up_port[$key]=$((p + 3))
    admin_server[$key]=$((p + 4))
    admin_client[$key]=$((p + 5))
    if ! wait_ok "http://127.0.0.1:$((p + 2))/" || ! wait_ok "http://127.0.0.1:$((p + 3))/"; then
        log "trustmesh pair $key not ready; its stderr:"
        cat "$work/$key-server.err" "$work/$key-client.err" >&2
        exit 1
    fi
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$p/" || true)
    if [[ "$code" == 200 ]]; then
        echo "bench/connections.sh: trustmesh server proxy served plaintext under STRICT mTLS" >&2
        exit 1
    fi
}
# metric ADMIN NAME: the sum of NAME's series on a trustmesh admin port's /metrics.
metric() {
    curl -s --max-time 5 "http://127.0.0.1:$1/metrics" |
        awk -v n="$2" '$1 == n || index($1, n "{") == 1 { t += $NF } END { print t + 0 }'
}

paths=(d)
down_port[d]=$backend_port
up_port[d]=$sink_port
if ((have_trustmesh)); then
    bench_policies "$work/policies"
    tm_pair t4 tcp $((base + 2))
    tm_pair t7 http $((base + 8))
    paths+=(t4 t7)
fi

# --- nginx pairs -----------------------------------------------------------------------------
# The server's certificate and client verification, the client's certificate and server
# verification (http and stream alike).
tls_server="ssl_certificate $work/nginx-server/cert.pem;
        ssl_certificate_key $work/nginx-server/key.pem; ssl_protocols TLSv1.3;
        ssl_verify_client on; ssl_client_certificate $root; ssl_verify_depth 3;
        ssl_session_cache off; ssl_session_tickets off;"
tls_client="proxy_ssl_certificate $work/nginx-client/cert.pem;
        proxy_ssl_certificate_key $work/nginx-client/key.pem; proxy_ssl_protocols TLSv1.3;
        proxy_ssl_trusted_certificate $root; proxy_ssl_verify on; proxy_ssl_verify_depth 3;
        proxy_ssl_name server.bench.local; proxy_ssl_server_name on;"
bulk_http='client_max_body_size 0; proxy_http_version 1.1; proxy_set_header Connection "";
        proxy_buffering off; proxy_request_buffering off; proxy_buffer_size 16k; proxy_buffers 4 16k;'
n7=$((base + 14))
{
    nginx_preamble n7-server
    cat <<EOF
    upstream backend { server 127.0.0.1:$backend_port; keepalive 64; }
    upstream sink { server 127.0.0.1:$sink_port; keepalive 64; }
    server {
        listen 127.0.0.1:$n7 ssl;
        $tls_server
        $bulk_http
        location / { proxy_pass http://backend; }
        location = /upload { proxy_pass http://sink; }
    }
}
EOF
} >"$work/n7-server.conf"
{
    nginx_preamble n7-client
    cat <<EOF
    upstream mtls_server { server 127.0.0.1:$n7; keepalive 64; }
    server {
        listen 127.0.0.1:$((n7 + 1));
        $bulk_http
        proxy_ssl_session_reuse on;
        $tls_client
        location / { proxy_pass https://mtls_server; }
    }
}
EOF
} >"$work/n7-client.conf"
start_nginx "$work/n7-server.conf"
server_master[n7]=${pids[-1]}
start_nginx "$work/n7-client.conf"
client_master[n7]=${pids[-1]}
down_port[n7]=$((n7 + 1))
up_port[n7]=$((n7 + 1))
up_path[n7]=/upload
wait_ok "http://127.0.0.1:$((n7 + 1))/"
paths+=(n7)
code=$(curl -sk -o /dev/null -w '%{http_code}' --max-time 2 "https://127.0.0.1:$n7/" || true)
if [[ "$code" != 400 ]]; then
    echo "bench/connections.sh: nginx server answered $code without a client certificate (want 400)" >&2
    exit 1
fi

# The stream module: built in, or a dynamic module to load, or none.
stream=$("$nginx_bin" -V 2>&1 | sed -n 's/.*--modules-path=\([^ ]*\).*/\1\/ngx_stream_module.so/p')
[[ -f "$stream" ]] && stream="load_module $stream;" || stream=none
"$nginx_bin" -V 2>&1 | grep -q -- '--with-stream\( \|$\)' && stream=""
n4=$((base + 16))
if [[ "$stream" != none ]]; then
    {
        echo "$stream"
        nginx_main n4-server
        cat <<EOF
stream {
    log_format tls "\$ssl_client_verify \$ssl_session_reused";
    access_log $work/n4-server.access.log tls;
    server {
        listen 127.0.0.1:$n4 ssl backlog=4096;
        proxy_pass 127.0.0.1:$backend_port;
        $tls_server
    }
    server {
        listen 127.0.0.1:$((n4 + 1)) ssl;
        proxy_pass 127.0.0.1:$sink_port;
        $tls_server
    }
}
EOF
    } >"$work/n4-server.conf"
    {
        echo "$stream"
        nginx_main n4-client
        cat <<EOF
stream {
    proxy_ssl on;
    proxy_ssl_session_reuse off;
        $tls_client
    server { listen 127.0.0.1:$((n4 + 2)) backlog=4096; proxy_pass 127.0.0.1:$n4; }
    server { listen 127.0.0.1:$((n4 + 3)); proxy_pass 127.0.0.1:$((n4 + 1)); }
}
EOF
    } >"$work/n4-client.conf"
    start_nginx "$work/n4-server.conf"
    server_master[n4]=${pids[-1]}
    start_nginx "$work/n4-client.conf"
    client_master[n4]=${pids[-1]}
    down_port[n4]=$((n4 + 2))
    up_port[n4]=$((n4 + 3))
    wait_ok "http://127.0.0.1:$((n4 + 2))/"
    paths+=(n4)
else
    log "skipping (n4): this nginx has no stream module (Debian: apt-get install libnginx-mod-stream)"
fi
for key in n7 n4; do
    [[ -n "${server_master[$key]:-}" ]] || continue
    server_pids[$key]=$(nginx_pids "${server_master[$key]}")
    client_pids[$key]=$(nginx_pids "${client_master[$key]}")
done
declare -A name=([d]="(d) direct" [t4]="(t4) trustmesh L4" [t7]="(t7) trustmesh L7"
    [n7]="(n7) nginx HTTP" [n4]="(n4) nginx stream")

# --- 1. bulk ---------------------------------------------------------------------------------
# bulk KEY DIRECTION: one transfer of the big file (down: GET it; up: PUT it to the sink); adds
# "MB/s client server pair" (CPU seconds per GB of each proxy) to bulk_runs[KEY-DIRECTION].
declare -A bulk_runs
bulk() {
    local key=$1 dir=$2 c0 s0 c1 s1 out code size speed got="" r
    c0=$(ticks ${client_pids[$key]:-})
    s0=$(ticks ${server_pids[$key]:-})
    if [[ "$dir" == down ]]; then
        out=$(curl -sS -o /dev/null --max-time "$tmax" \
            -w '%{http_code} %{size_download} %{speed_download}' \
            "http://127.0.0.1:${down_port[$key]}/big.bin" 2>>"$work/curl.err" || true)
    else
        rm -f "$work/upload.out"
        out=$(curl -sS -o "$work/upload.out" -T "$work/www/big.bin" -H 'Expect:' --max-time "$tmax" \
            -w '%{http_code} %{size_upload} %{speed_upload}' \
            "http://127.0.0.1:${up_port[$key]}${up_path[$key]:-/upload}" 2>>"$work/curl.err" || true)
        got=$(cat "$work/upload.out" 2>/dev/null || true)
    fi
    c1=$(ticks ${client_pids[$key]:-})
    s1=$(ticks ${server_pids[$key]:-})
    read -r code size speed <<<"$out"
    if [[ "$code" != 200 || "$size" != "$bytes" ]] ||
        [[ "$dir" == up && "$got" != "received $bytes" ]]; then
        echo "bench/connections.sh: ${name[$key]} $dir: HTTP ${code:-none}, ${size:-0} of" \
            "$bytes bytes" \
            "${got:+(the sink $got)} within $tmax s; curl said: $(tail -1 "$work/curl.err")" >&2
        exit 1
    fi
    r=$(awk -v b="$bytes" -v v="$speed" -v hz="$hz" -v c=$((c1 - c0)) -v s=$((s1 - s0)) \
        'BEGIN { g = b * hz / 1e9
            printf "%.1f %.3f %.3f %.3f", v / 1e6, c / g, s / g, (c + s) / g }')
    bulk_runs[$key-$dir]+="$r"$'\n'
    log "  ${name[$key]} $dir: MB/s, CPU s/GB client server pair: $r"
}
log "bulk: $mib MiB down and up through ${paths[*]}, $rounds interleaved rounds"
for round in $(seq 1 "$rounds"); do
    log "round $round/$rounds"
    for key in "${paths[@]}"; do
        bulk "$key" down
        bulk "$key" up
    done
done

# --- 2. idle mTLS connections ----------------------------------------------------------------
# idle KEY: N connections through KEY's client side, one request each, then idle. Sets
# idle_res[KEY]: opened, seconds, CPU µs per connection of client, server and opener, RSS KiB
# of client and of server (before, idle, after), server-accepted, backend-held, logged as
# verified, still open at the end, TLS errors.
declare -A idle_res
idle() {
    local key=$1 hold=$work/idle-$key.hold status=$work/idle-$key.out opener i log re
    local cr0 sr0 c0 s0 c1 s1 o1 cr1 sr1 cr2 sr2 in0=0 in1=- err0=0 err1=0 seen0 seen1 held idle0
    local opened failed secs still deadline=$((30 + conns / 50)) res0=0 res1=-
    log=$work/n4-server.access.log re='^SUCCESS \.$'
    [[ "$key" == t* ]] && log=$work/$key-server.access.log re='ns/bench/sa/client'
    tm_errors() {
        echo $(($(metric "${admin_server[$key]}" trustmesh_tls_handshake_errors_total) +
            $(metric "${admin_client[$key]}" trustmesh_outbound_tls_errors_total)))
    }
    idle0=$(backend_conns)
    cr0=$(rss_kib ${client_pids[$key]})
    sr0=$(rss_kib ${server_pids[$key]})
    seen0=$(grep -c "$re" "$log" || true)
    if [[ "$key" == t* ]]; then
        in0=$(metric "${admin_server[$key]}" trustmesh_inbound_connections_total)
        res0=$(metric "${admin_server[$key]}" trustmesh_tls_resumed_total)
        err0=$(tm_errors)
    fi
    c0=$(ticks ${client_pids[$key]})
    s0=$(ticks ${server_pids[$key]})
    : >"$status"
    rm -f "$hold"
    python3 "$conntool" idle "${down_port[$key]}" "$conns" --deadline "$deadline" \
        --hold-until "$hold" --max-hold 300 >"$status" 2>"$work/idle-$key.err" &
    opener=$!
    pids+=($opener)
    for i in $(seq 1 $(((deadline + 30) * 20))); do
        grep -q '^opened' "$status" && break
        kill -0 "$opener" 2>/dev/null || break
        sleep 0.05
    done
    c1=$(ticks ${client_pids[$key]})
    s1=$(ticks ${server_pids[$key]})
    o1=$(ticks "$opener" 2>/dev/null || echo 0)
    if ! read -r _ opened _ failed _ secs < <(grep '^opened' "$status"); then
        echo "bench/connections.sh: the opener did not finish within $((deadline + 30)) s:" >&2
        cat "$work/idle-$key.err" >&2
        exit 1
    fi
    sed 's/^/  /' "$work/idle-$key.err" >&2
    sleep 2 # idle
    cr1=$(rss_kib ${client_pids[$key]})
    sr1=$(rss_kib ${server_pids[$key]})
    held=$(($(backend_conns) - idle0))
    if [[ "$key" == t* ]]; then
        in1=$(($(metric "${admin_server[$key]}" trustmesh_inbound_connections_total) - in0))
        res1=$(($(metric "${admin_server[$key]}" trustmesh_tls_resumed_total) - res0))
        err1=$(($(tm_errors) - err0))
    fi
    touch "$hold"
    wait "$opener" || true
    still=$(awk '/^still_open/ { print $2 }' "$status")
    # Closed everywhere: the backend back where it was, and trustmesh with none active (≤ 30 s).
    for i in $(seq 1 300); do
        if (($(backend_conns) <= idle0)) && { [[ "$key" != t* ]] ||
            (($(metric "${admin_server[$key]}" trustmesh_active_connections) +
                $(metric "${admin_client[$key]}" trustmesh_active_connections) == 0)); }; then
            break
        fi
        sleep 0.1
    done
    sleep 1
    cr2=$(rss_kib ${client_pids[$key]})
    sr2=$(rss_kib ${server_pids[$key]})
    seen1=$(($(grep -c "$re" "$log" || true) - seen0))
    idle_res[$key]="$opened $secs $(awk -v n="$opened" -v hz="$hz" -v c=$((c1 - c0)) \
        -v s=$((s1 - s0)) -v o="$o1" 'BEGIN { f = 1e6 / hz / (n > 0 ? n : 1)
        printf "%.0f %.0f %.0f", c * f, s * f, o * f }') $cr0 $cr1 $cr2 $sr0 $sr1 $sr2 $in1 $held"
    idle_res[$key]+=" $seen1 ${still:-0} $err1 $res1"
    log "  ${name[$key]}: $opened opened ($failed failed) in $secs s; server accepted $in1," \
        "backend held $held, ${still:-?} still open at the end, server log: $seen1 verified;" \
        "RSS KiB before/idle/after: client $cr0/$cr1/$cr2, server $sr0/$sr1/$sr2"
}
idle_paths=()
for key in t4 t7 n4; do
    [[ -n "${client_pids[$key]:-}" ]] && idle_paths+=("$key")
done
log "idle: $conns connections through each of ${idle_paths[*]}"
for key in "${idle_paths[@]}"; do
    idle "$key"
done

# --- 3. crypto ceiling -----------------------------------------------------------------------
speed=$(openssl speed -seconds 1 ecdsap256 ecdhp256 ecdhx25519 2>/dev/null)
read -r sign verify < <(awk '/ecdsa \(nistp256\)/ { print $(NF - 1), $NF }' <<<"$speed")
ecdh_p256=$(awk '/ecdh \(nistp256\)/ { print $NF }' <<<"$speed")
x25519=$(awk '/ecdh \(X25519\)/ { print $NF }' <<<"$speed")
# Signatures checked on the peer's path: each certificate it sends that is not a trust anchor.
links=$(awk 'FNR == 1 { f++ } /BEGIN CERT/ { c = "" } { c = c $0 }
    /END CERT/ { if (f == 1) r[c] = 1; else if (!(c in r)) n++ } END { print n + 0 }' \
    "$root" "$work/nginx-server/cert.pem")
# The crypto of one side of a full mutual handshake, in µs.
crypto=$(awk -v s="$sign" -v v="$verify" -v x="$x25519" -v l="$links" \
    'BEGIN { printf "%.0f", 1e6 / s + (1 + l) * 1e6 / v + 2e6 / x }')

# --- report ----------------------------------------------------------------------------------
echo
echo "loopback, $(nproc) cores shared by every process; MB = 10^6 bytes, GB = 10^9 bytes"
echo
echo "1. bulk: $mib MiB per transfer, medians of $rounds interleaved rounds;" \
    "CPU: seconds per GB of each proxy"
printf "%-20s %9s %7s %7s %7s   %9s %7s %7s %7s\n" "" "down MB/s" client server pair \
    "up MB/s" client server pair
for key in "${paths[@]}"; do
    read -r dv dc ds dp <<<"$(printf '%s' "${bulk_runs[$key-down]}" | median_cols)"
    read -r uv uc us up <<<"$(printf '%s' "${bulk_runs[$key-up]}" | median_cols)"
    [[ "$key" == d ]] && dc=- ds=- dp=- uc=- us=- up=-
    printf "%-20s %9.0f %7s %7s %7s   %9.0f %7s %7s %7s\n" "${name[$key]}" \
        "$dv" "$dc" "$ds" "$dp" "$uv" "$uc" "$us" "$up"
done
((have_trustmesh)) || printf "%-20s %s\n" "(t4), (t7)" "skipped: no trustmesh binary at $bin"
[[ "$stream" != none ]] || printf "%-20s %s\n" "(n4) nginx stream" "skipped: no stream module"

echo
echo "2. idle: $conns connections per path$capped, one HTTP/1.1 request each, then idle 2 s" \
    "(trustmesh maxConnections $max_conns)"
printf "%-20s %6s %6s %6s %6s %6s %7s %6s %8s %7s %7s %6s %6s %7s\n" "" opened "conn/s" "µs:cl" \
    sv pair ×crypto opener accepted backend "log ok" still errors resumed
for key in "${idle_paths[@]}"; do
    read -r n secs cu su ou _ _ _ _ _ _ acc held seen still err resumed <<<"${idle_res[$key]}"
    awk -v k="${name[$key]}" -v n="$n" -v s="$secs" -v c="$cu" -v v="$su" -v o="$ou" \
        -v x="$crypto" 'BEGIN { printf "%-20s %6d %6.0f %6d %6d %6d %7.1f %6d", k, n, n / s, c, v,
            c + v, (c + v) / x / 2, o }'
    printf " %8s %7d %7d %6d %6s %7s\n" "$acc" "$held" "$seen" "$still" "$err" "$resumed"
done
printf "%-20s %26s %8s   %26s %8s\n" "RSS MiB" "client before/idle/after" "KiB/conn" \
    "server before/idle/after" "KiB/conn"
for key in "${idle_paths[@]}"; do
    read -r n _ _ _ _ c0 c1 c2 s0 s1 s2 _ <<<"${idle_res[$key]}"
    awk -v k="${name[$key]}" -v n="$n" -v c0="$c0" -v c1="$c1" -v c2="$c2" -v s0="$s0" \
        -v s1="$s1" -v s2="$s2" 'BEGIN { n = n > 0 ? n : 1; m = 1024
        printf "%-20s %8.1f /%7.1f /%7.1f %8.1f   %8.1f /%7.1f /%7.1f %8.1f\n", k, c0 / m, c1 / m,
            c2 / m, (c1 - c0) / n, s0 / m, s1 / m, s2 / m, (s1 - s0) / n }'
done

echo
echo "3. crypto (openssl speed, one core): ECDSA P-256 sign $sign/s, verify $verify/s; ECDH" \
    "X25519 $x25519/s, P-256 $ecdh_p256/s"
awk -v c="$crypto" -v v="$verify" -v l="$links" -v cores="$(nproc)" 'BEGIN {
    printf "   one side of a full mutual handshake: 1 sign + %d verifies (CertificateVerify", 1 + l
    printf " + %d certificate(s) up to the anchor) + 2 X25519 = %.0f µs:\n", l, c
    printf "   %.0f handshakes/s per core for one side; a pair doing both sides: %.0f/s per core,",
        1e6 / c, 5e5 / c
    printf " %.0f/s on %d cores (with an intermediate CA: %.0f µs per side)\n", 5e5 / c * cores,
        cores, c + 1e6 / v
}'
for key in "${idle_paths[@]}"; do
    read -r n secs _ <<<"${idle_res[$key]}"
    awk -v k="${name[$key]}" -v r="$(awk -v n="$n" -v s="$secs" 'BEGIN { print n / s }')" \
        -v c="$crypto" -v cores="$(nproc)" 'BEGIN {
        printf "   %-18s %6.0f handshakes/s: %.0f %% of that ceiling on %d cores\n", k, r,
            100 * r / (5e5 / c * cores), cores }'
done
