# bench/lib.sh — the functions bench/proxy.sh and bench/connections.sh are built from, kept
# apart so that each script reads as what it measures: waiting for a server, starting nginx,
# reading CPU and memory of a process from /proc, running wrk and reading its figures, medians,
# counting the connections between two proxies, minting the service-account tokens ztunnel
# presents, the crypto ceiling from `openssl speed`, a pair of network namespaces, the policies
# every trustmesh pair runs under (`bench_policies`), checking for tools (`need_tools`), stopping
# what a run started and removing its work directory (`stop_started`, `drop_work`), the tables
# of bench/proxy.sh's report (its bulk table from the caller's `bulk_of`), and a proxy binary
# run under callgrind for bench/hot-functions.sh and bench/instructions.sh (`callgrind_wrapper`,
# `callgrind_wait`, `callgrind_total`), and whether the binary still has the functions its
# layout list names (`hot_list_coverage`).
#
# Sourced, not run. It uses the caller's globals: `work` (the run's work directory), `pids`
# (processes to stop on exit), `nginx_bin`, for `issue_nginx` `ca_cert`, `ca_key` and `root`,
# for `nginx_main` `worker_connections` if set, and for `measure` the array `wrk_opts` (wrk's
# options before the URL) and `wrk_secs` (how long the run lasts). Its messages name the script
# that sourced it (bench/<name of $0>).

log() { echo "[bench] $*" >&2; }

# wait_ok URL [PREFIX...]: waits (at most `wait_secs`, default 10 s) until URL answers 200 to
# curl (run by PREFIX, if any: a namespace, a uid).
wait_ok() {
    local url=$1 i secs=${wait_secs:-10}
    shift
    for i in $(seq 1 $((secs * 10))); do
        if [[ $("$@" curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url" || true) == 200 ]]; then
            return 0
        fi
        sleep 0.1
    done
    echo "bench/${0##*/}: $url did not answer 200 within $secs s" >&2
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

# static_conf NAME LISTEN: an nginx config NAME serving the 13-byte page on LISTEN (an
# address:port or a port), the backend of every path.
static_conf() {
    {
        nginx_preamble "$1"
        cat <<EOF
    server {
        listen $2;
        location / { root $work/www; }
    }
}
EOF
    } >"$work/$1.conf"
}

# nginx_main NAME: nginx's main context for config NAME, run from the work directory, also for
# stream-only configs (worker_connections from the variable of that name, default 4096).
nginx_main() {
    local name=$1
    # Workers run as the invoking user so they can read the private work directory.
    [[ $EUID -eq 0 ]] && echo "user root;"
    cat <<EOF
worker_processes auto;
pid $work/$name.pid;
error_log $work/$name.error.log warn;
events { worker_connections ${worker_connections:-4096}; }
EOF
}

# nginx_preamble NAME: nginx_main, then the opening of an http block: no access log, temp files
# local.
nginx_preamble() {
    local name=$1
    nginx_main "$name"
    cat <<EOF
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

# ticks_split PID...: user and system CPU of those processes (every thread), in clock ticks,
# as "user system", from /proc/<pid>/stat (fields 14 and 15; the command name in field 2 may
# hold spaces, so the fields are counted after its closing parenthesis). No PID: "0 0". Apart
# because the kernel's share is what a proxy's system calls and the network stack under them
# cost, which it changes only by making fewer calls.
ticks_split() {
    local pid files=()
    for pid in "$@"; do
        if [[ ! -r /proc/$pid/stat ]]; then
            echo "bench/${0##*/}: process $pid is gone (see the logs in $work)" >&2
            return 1
        fi
        files+=("/proc/$pid/stat")
    done
    ((${#files[@]})) || { echo 0 0; return; }
    awk '{ sub(/^.*\) /, ""); u += $12; s += $13 } END { print u, s }' "${files[@]}"
}

# ticks PID...: user + system, as ticks_split counts them.
ticks() {
    local t u s
    t=$(ticks_split "$@") || return 1
    read -r u s <<<"$t"
    echo $((u + s))
}

# mem_kb FIELD PID...: the sum of FIELD (VmRSS: resident now; VmHWM: the highest it has been)
# over those processes, in kB, from /proc/<pid>/status. Summing nginx's master and workers
# counts the pages they share (the binary, the configuration) once per process. No PID or a
# process gone: "-".
mem_kb() {
    local field=$1 pid files=()
    shift
    for pid in "$@"; do
        [[ -r /proc/$pid/status ]] || { echo -; return; }
        files+=("/proc/$pid/status")
    done
    ((${#files[@]})) || { echo -; return; }
    awk -v f="$field:" '$1 == f { t += $2 } END { print t + 0 }' "${files[@]}"
}

# measure URL [PREFIX...]: runs wrk with `wrk_opts` for `wrk_secs` seconds against URL
# (PREFIX, if any, runs it: a namespace, a uid); prints "rps p50_ms p99_ms requests". wrk
# stops itself after its duration; `timeout` is there in case it does not.
measure() {
    local url=$1 out
    shift
    out=$("$@" timeout $((wrk_secs + 30)) wrk "${wrk_opts[@]}" -d "${wrk_secs}s" \
        --timeout 5s --latency "$url")
    echo "$out" >>"$work/wrk.log"
    if grep -q "Non-2xx" <<<"$out"; then
        echo "bench/${0##*/}: non-2xx answers from $url:" >&2
        echo "$out" >&2
        return 1
    fi
    if grep -q "Socket errors" <<<"$out"; then
        log "  wrk: $(grep "Socket errors" <<<"$out" | sed 's/^ *//')"
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

# max_cols: the highest of each column on its own, over the lines read ("-" stays "-").
max_cols() {
    awk '{ for (i = 1; i <= NF; i++) if ($i != "-" && (!((i) in m) || $i + 0 > m[i])) m[i] = $i + 0
           nf = NF }
        END { for (i = 1; i <= nf; i++) printf "%s%s", (i > 1 ? " " : ""), ((i in m) ? m[i] : "-")
              printf "\n" }'
}

# --- connections between two proxies ---------------------------------------------------------

# tm_handshakes URL [PREFIX...]: "all resumed" from a trustmesh sidecar's /metrics at URL
# (PREFIX, if any, runs curl: a namespace): the inbound TLS handshakes that succeeded and those
# that resumed a session; "-" for a figure it does not serve.
tm_handshakes() {
    local url=$1 out
    shift
    out=$("$@" curl -s --max-time 2 "$url" || true)
    awk '$1 == "trustmesh_tls_handshakes_total" { a = $2 }
         $1 == "trustmesh_tls_resumed_total" { r = $2 }
         END { print (a == "" ? "-" : a), (r == "" ? "-" : r) }' <<<"$out"
}

# stub_accepts URL: connections nginx has accepted (its stub_status "accepts"), less the one
# that reads it; "-" when it cannot be read.
stub_accepts() {
    local out
    out=$(curl -s --max-time 2 "$1" || true)
    awk 'prev ~ /accepts/ { v = $1 - 1 } { prev = $0 } END { print (v == "" ? "-" : v) }' <<<"$out"
}

# syn_count NS: TCP connection attempts (SYNs) that came into namespace NS over its veth end,
# from the counting rule `iptables -A INPUT -i <veth> -p tcp --syn` (no target) installed
# there; "-" when it cannot be read.
syn_count() {
    ip netns exec "$1" iptables -w -S INPUT -v 2>/dev/null |
        awk '/^-A INPUT .*--tcp-flags/ { for (i = 1; i < NF; i++) if ($i == "-c") v = $(i + 1) }
             END { print (v == "" ? "-" : v) }'
}

# --- tokens for ztunnel -------------------------------------------------------------------------

b64url() { basenc --base64url -w0 | tr -d '='; }

# token_issuer DIR: an RS256 key in DIR/issuer-key.pem and the JWKS that verifies it in
# DIR/jwks.json (kid "bench"), as a cluster's service-account issuer publishes it.
token_issuer() {
    local dir=$1 n
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$dir/issuer-key.pem" \
        2>/dev/null
    n=$(openssl rsa -in "$dir/issuer-key.pem" -noout -modulus | cut -d= -f2 |
        basenc --base16 -d | b64url)
    printf '{"keys":[{"kty":"RSA","alg":"RS256","use":"sig","kid":"bench","n":"%s","e":"AQAB"}]}\n' \
        "$n" >"$dir/jwks.json"
}

# token DIR ISSUER NS SA: a projected service-account token for NS/SA, as the kubelet mounts
# one for istio-agent or ztunnel (audience istio-ca), valid for a day, signed with DIR's key.
token() {
    local dir=$1 iss=$2 ns=$3 sa=$4 now head body sig
    now=$(date +%s)
    head=$(printf '{"alg":"RS256","typ":"JWT","kid":"bench"}' | b64url)
    body=$({
        printf '{"iss":"%s","aud":["istio-ca"],"sub":"system:serviceaccount:%s:%s",' "$iss" "$ns" "$sa"
        printf '"iat":%d,"nbf":%d,"exp":%d,' "$now" $((now - 5)) $((now + 86400))
        printf '"kubernetes.io":{"namespace":"%s","serviceaccount":{"name":"%s","uid":"0"}}}' "$ns" "$sa"
    } | b64url)
    sig=$(printf '%s.%s' "$head" "$body" |
        openssl dgst -sha256 -sign "$dir/issuer-key.pem" -binary | b64url)
    printf '%s.%s.%s' "$head" "$body" "$sig"
}

# --- the crypto ceiling of a handshake --------------------------------------------------------

# crypto_ceiling [HANDSHAKES_PER_S RESUMED_PCT PAIR_US]: `openssl speed -seconds 1 ecdsap256
# ecdhp256 ecdhx25519` on one core, and what one mutual-TLS handshake with this run's
# certificates costs in it. A full one, each side: it signs its CertificateVerify (1 sign),
# verifies the peer's CertificateVerify and the peer's leaf, which the root signed directly (2
# verifies; a chain through an intermediate adds one), and derives the shared secret (1 ECDH;
# rustls with ring, ztunnel and OpenSSL all offer X25519 first). A resumed one (TLS 1.3 PSK
# with a fresh ECDHE) keeps only the ECDH. The ephemeral key generation on each side, hashing
# and symmetric crypto are left out, and ring's code is not OpenSSL's, so these are estimates,
# a little low. Given (b)'s handshakes per second, the share resumed and its pair's CPU per
# request, it says how much of that CPU the handshakes' crypto is.
crypto_ceiling() {
    local out
    out=$(timeout 60 openssl speed -seconds 1 ecdsap256 ecdhp256 ecdhx25519 2>/dev/null || true)
    awk -v n="$(nproc)" -v b="${1:-}" -v res="${2:-}" -v pair="${3:-}" '
        /ecdsa \(nistp256\)/ { sign = $(NF - 1); verify = $NF }
        /ecdh \(nistp256\)/ { p256 = $NF }
        /ecdh \(X25519\)/ { x25519 = $NF }
        END {
            if (!sign || !verify || !x25519) { print "openssl speed gave no figures"; exit }
            print "Crypto ceiling (openssl speed -seconds 1 ecdsap256 ecdhp256 ecdhx25519, one core):"
            printf "  ECDSA P-256 %.0f signs/s, %.0f verifies/s; ECDH P-256 %.0f ops/s, X25519 %.0f ops/s\n",
                sign, verify, p256, x25519
            full = 2 * (1e6 / sign + 2e6 / verify + 1e6 / x25519)
            resumed = 2 * 1e6 / x25519
            print "  a full mTLS handshake, each side: 1 sign (its CertificateVerify) + 2 verifies (the"
            print "  peer\047s CertificateVerify, and its leaf, signed by the root; +1 per intermediate)"
            printf "  + 1 X25519: %.0f µs of one core for both sides, at most %.0f/s per core, %.0f on %d cores;\n",
                full, 1e6 / full, n * 1e6 / full, n
            printf "  a resumed one (PSK + fresh X25519): %.0f µs, at most %.0f/s per core\n",
                resumed, 1e6 / resumed
            print "  (key generation, hashing, AES and I/O not counted)"
            if (b == "" || res == "" || res == "-") exit
            per = (1 - res / 100) * full + res / 100 * resumed
            printf "  (b) made %.0f handshakes/s, %.0f %% resumed: about %.0f µs of crypto each, %.0f %% of the\n",
                b, res, per, 100 * b * per / 1e6 / n
            printf "  %d cores", n
            if (pair != "" && pair > 0)
                printf "; its pair CPU per request is %.0f µs, %.0f %% of it that crypto", pair, 100 * per / pair
            printf "\n"
        }' <<<"$out"
}

# issue_nginx NAME SPIFFE_ID [DNS]: an ECDSA P-256 leaf from the run's CA (`ca_cert`,
# `ca_key`) for the nginx pair, in $work/nginx-NAME/; cert.pem is the leaf, then the CA's
# certificate unless that is the trust anchor (`root`, if set).
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
    if [[ -n "${root:-}" ]] && ! cmp -s "$ca_cert" "$root"; then
        cat "$ca_cert" >>"$dir/cert.pem"
    fi
}

# pair_namespaces TAG SUBNET: two namespaces tmbench-<pid>-TAGclient/-TAGserver joined by a
# veth pair, SUBNET.1 and SUBNET.2 (/24), lo up in each, recorded in `namespaces` for the
# cleanup; the client end's name in `client_veth`. A counting rule (no target) in the server
# namespace counts the TCP SYNs that come in over the veth: the connections from the client
# side's proxy, for `syn_count`.
pair_namespaces() {
    local tag=$1 subnet=$2 ns pre=tmbench-$$-$1 veth=tmb$$$1
    for ns in "${pre}client" "${pre}server"; do
        namespaces+=("$ns")
        ip netns add "$ns"
        ip -n "$ns" link set lo up
    done
    ip link add "${veth}c" netns "${pre}client" type veth peer name "${veth}s" netns "${pre}server"
    ip -n "${pre}client" addr add "$subnet.1/24" dev "${veth}c"
    ip -n "${pre}server" addr add "$subnet.2/24" dev "${veth}s"
    ip -n "${pre}client" link set "${veth}c" up
    ip -n "${pre}server" link set "${veth}s" up
    ip netns exec "${pre}server" iptables -w -A INPUT -i "${veth}s" -p tcp --syn
    client_veth=${veth}c
}

# --- the report ---------------------------------------------------------------------------------
# These read the run's results: `keys` (the paths measured), `name`, `why` (why a path was
# skipped), and per path `runs`, `cpu`, `rss_idle`, `steady_of`, `rss_load`, `hwm_end`,
# `handshakes`, `rss_split`, `client_pids` (see run_path in bench/proxy.sh).

all_keys=(a b c d e)
measured() { [[ -n "${runs[$1]:-}" ]]; }
skipped() { printf "%-24s skipped: %s\n" "${name[$1]}" "${why[$1]:-not measured}"; }

report_throughput() {
    local key rps p50 p99 lo hi a_p50 a_p99
    read -r _ a_p50 a_p99 _ _ <<<"$(printf '%s' "${runs[a]}" | median_of)"
    printf "%-24s %10s %13s %9s %9s %12s %12s\n" scenario "req/s" "req/s range" "p50 ms" \
        "p99 ms" "+p50 ms/hop" "+p99 ms/hop"
    for key in "${all_keys[@]}"; do
        measured "$key" || { skipped "$key"; continue; }
        read -r rps p50 p99 lo hi <<<"$(printf '%s' "${runs[$key]}" | median_of)"
        awk -v n="${name[$key]}" -v r="$rps" -v p50="$p50" -v p99="$p99" -v a50="$a_p50" \
            -v a99="$a_p99" -v direct="$([[ $key == a ]] && echo 1 || echo 0)" -v lo="$lo" -v hi="$hi" '
            BEGIN {
                range = sprintf("%.0f-%.0f", lo, hi)
                if (direct) printf "%-24s %10.0f %13s %9.3f %9.3f %12s %12s\n", n, r, range, p50, p99, "-", "-"
                else printf "%-24s %10.0f %13s %9.3f %9.3f %12.3f %12.3f\n", n, r, range, p50, p99,
                    (p50 - a50) / 2, (p99 - a99) / 2
            }'
    done
}

report_cpu() {
    local key client server pair backend
    printf "%-24s %12s %12s %12s %12s\n" scenario "client proxy" "server proxy" "pair" "backend"
    for key in "${all_keys[@]}"; do
        measured "$key" || { skipped "$key"; continue; }
        read -r client server pair backend <<<"$(printf '%s' "${cpu[$key]}" | median_cols)"
        if [[ -z "${client_pids[$key]:-}" ]]; then
            printf "%-24s %12s %12s %12s %12.1f\n" "${name[$key]}" - - - "$backend"
        else
            printf "%-24s %12.1f %12.1f %12.1f %12.1f\n" "${name[$key]}" "$client" "$server" \
                "$pair" "$backend"
        fi
    done
}

# report_cpu_split: the same CPU per request, each proxy's split into user space and kernel
# (utime and stime), and the pair's two parts; medians of the rounds, each column apart.
report_cpu_split() {
    local key
    printf "%-24s %12s %12s %12s %12s %12s %12s\n" scenario "client user" "client sys" \
        "server user" "server sys" "pair user" "pair sys"
    for key in "${all_keys[@]:1}"; do
        measured "$key" || { skipped "$key"; continue; }
        printf '%s' "${cpu_split[$key]}" | median_cols |
            awk -v n="${name[$key]}" '{ printf "%-24s", n; for (i = 1; i <= 6; i++) printf " %12.1f", $i; printf "\n" }'
    done
}

# report_memory: per proxy, in MB (kB / 1024): idle, near the end of the steady phase, VmHWM
# after it, the highest near the end of a wrk run, VmHWM at the end; and whether the pair met
# the issue's goals (both proxies idle ≤ 12 MB, at ~1,000 req/s ≤ 20 MB).
report_memory() {
    local key load st
    printf "%-24s %-34s %-34s %s\n" "" "client proxy" "server proxy" "goals met"
    printf "%-24s %6s %6s %6s %6s %6s  %6s %6s %6s %6s %6s  %5s %5s\n" scenario \
        idle 1k/s pk1k load peak idle 1k/s pk1k load peak idle 1k/s
    for key in "${all_keys[@]:1}"; do
        measured "$key" || { skipped "$key"; continue; }
        load=$(printf '%s' "${rss_load[$key]}" | max_cols)
        st=${steady_of[$key]:-"- - - - - - - - -"}
        awk -v n="${name[$key]}" -v idle="${rss_idle[$key]}" -v st="$st" -v load="$load" \
            -v end="${hwm_end[$key]}" '
            function mb(k) { return k == "-" ? "-" : sprintf("%.1f", k / 1024) }
            function ok(a, b, lim) { return (a == "-" || b == "-") ? "-" : (a <= lim * 1024 && b <= lim * 1024) ? "yes" : "no" }
            BEGIN {
                split(idle, i); split(st, s); split(load, l); split(end, e)
                printf "%-24s %6s %6s %6s %6s %6s  %6s %6s %6s %6s %6s  %5s %5s\n", n,
                    mb(i[1]), mb(s[6]), mb(s[8]), mb(l[1]), mb(e[1]),
                    mb(i[2]), mb(s[7]), mb(s[9]), mb(l[2]), mb(e[2]),
                    ok(i[1], i[2], 12), ok(s[6], s[7], 20)
            }'
    done
}

# report_idle_split: per proxy, RssAnon and RssFile in MB, idle (rss_split) and near the end of
# the steady phase (steady_split; "-" when it did not run).
report_idle_split() {
    local key
    printf "%-24s %13s %13s %13s %13s\n" "scenario (anon + file)" "idle client" "idle server" \
        "1k/s client" "1k/s server"
    for key in "${all_keys[@]:1}"; do
        measured "$key" || { skipped "$key"; continue; }
        awk -v n="${name[$key]}" -v v="${rss_split[$key]}" -v w="${steady_split[$key]:-- - - -}" '
            function mb(k) { return k == "-" ? "-" : sprintf("%.1f", k / 1024) }
            function pair(a, f) { return mb(a) " + " mb(f) }
            BEGIN {
                split(v, x); split(w, y)
                printf "%-24s %13s %13s %13s %13s\n", n, pair(x[1], x[2]), pair(x[3], x[4]),
                    pair(y[1], y[2]), pair(y[3], y[4])
            }'
    done
}

report_steady() {
    local key rps p50 p99 c s
    printf "%-24s %10s %9s %9s %14s %14s\n" scenario "req/s" "p50 ms" "p99 ms" "client CPU %" \
        "server CPU %"
    for key in "${all_keys[@]:1}"; do
        measured "$key" || { skipped "$key"; continue; }
        read -r rps p50 p99 c s _ <<<"${steady_of[$key]}"
        printf "%-24s %10.0f %9.3f %9.3f %14.1f %14.1f\n" "${name[$key]}" "$rps" "$p50" "$p99" "$c" "$s"
    done
}

# report_bulk: per path, the medians of bulk_of's columns (MB/s; CPU s/GB client, server, pair).
report_bulk() {
    local key mbs client server pair
    printf "%-24s %8s %12s %12s %12s\n" scenario "MB/s" "client s/GB" "server s/GB" "pair s/GB"
    for key in "${all_keys[@]}"; do
        [[ -n "${bulk_of[$key]:-}" ]] || { skipped "$key"; continue; }
        read -r mbs client server pair <<<"$(printf '%s' "${bulk_of[$key]}" | median_cols)"
        if [[ -z "${client_pids[$key]:-}" ]]; then
            printf "%-24s %8.0f %12s %12s %12s\n" "${name[$key]}" "$mbs" - - -
        else
            printf "%-24s %8.0f %12.2f %12.2f %12.2f\n" "${name[$key]}" "$mbs" "$client" \
                "$server" "$pair"
        fi
    done
}

# bulk_ratio LABEL X Y: "LABEL: MB/s and pair CPU per GB of X as % of Y's", when both ran.
bulk_ratio() {
    local xm xp ym yp
    [[ -n "${bulk_of[$2]:-}" && -n "${bulk_of[$3]:-}" ]] || return 0
    read -r xm _ _ xp <<<"$(printf '%s' "${bulk_of[$2]}" | median_cols)"
    read -r ym _ _ yp <<<"$(printf '%s' "${bulk_of[$3]}" | median_cols)"
    awk -v l="$1" -v xm="$xm" -v xp="$xp" -v ym="$ym" -v yp="$yp" '
        BEGIN { printf "%s: MB/s %.0f %%, pair CPU per GB %.0f %%\n", l, 100 * xm / ym, 100 * xp / yp }'
}

# resumed_share: over "per_s per_req handshakes resumed" lines, the % of all the handshakes
# that resumed a session; "-" when that is not counted or there were none.
resumed_share() {
    awk '$4 == "-" { none = 1 } { h += $3; r += $4 }
         END { if (none || !h) print "-"; else printf "%.1f\n", 100 * r / h }'
}

report_handshakes() {
    local key per_s per_req resumed
    declare -A from=([b]="server proxy's trustmesh_tls_handshakes_total, _resumed_total"
        [c]="nginx server's stub_status accepts (connections)"
        [d]="server sidecar's trustmesh_tls_handshakes_total, _resumed_total"
        [e]="SYNs into the server namespace (connections)")
    printf "%-24s %13s %12s %9s  %s\n" scenario "handshakes/s" "per request" "resumed" \
        "counted from"
    for key in "${all_keys[@]:1}"; do
        measured "$key" || { skipped "$key"; continue; }
        if [[ -z "${handshakes[$key]:-}" ]]; then
            printf "%-24s %13s %12s %9s  %s\n" "${name[$key]}" - - - "could not be read: ${from[$key]}"
            continue
        fi
        read -r per_s per_req _ <<<"$(printf '%s' "${handshakes[$key]}" | median_cols)"
        resumed=$(printf '%s' "${handshakes[$key]}" | resumed_share)
        [[ $resumed == - ]] || resumed="$resumed %"
        printf "%-24s %13.1f %12.4f %9s  %s\n" "${name[$key]}" "$per_s" "$per_req" "$resumed" \
            "${from[$key]}"
    done
}

# ratio LABEL X Y: "LABEL: req/s, p99 and pair CPU per request of X as % of Y's", when both
# were measured; then, over several rounds, the pair CPU ratio of each round apart (X's run
# against Y's of the same round, moments apart), whose median does not move with a machine
# that is faster in one round than in the next, as the medians of each path alone do.
ratio() {
    local x y xr xp yr yp xc yc
    measured "$2" && measured "$3" || return 0
    read -r xr _ xp _ _ <<<"$(printf '%s' "${runs[$2]}" | median_of)"
    read -r yr _ yp _ _ <<<"$(printf '%s' "${runs[$3]}" | median_of)"
    read -r _ _ xc _ <<<"$(printf '%s' "${cpu[$2]}" | median_cols)"
    read -r _ _ yc _ <<<"$(printf '%s' "${cpu[$3]}" | median_cols)"
    # The kernel part of the first pair's CPU beside the second's whole: what is left for user
    # space if the first is to cost no more.
    local xs=-
    [[ -n "${cpu_split[$2]:-}" ]] && read -r _ _ _ _ _ xs <<<"$(printf '%s' "${cpu_split[$2]}" | median_cols)"
    awk -v l="$1" -v xr="$xr" -v yr="$yr" -v xp="$xp" -v yp="$yp" -v xc="$xc" -v yc="$yc" \
        -v xs="$xs" 'BEGIN {
        printf "%s: req/s %.0f %%, p99 %.0f %%, pair CPU per request %.0f %%", l, 100 * xr / yr,
            100 * xp / yp, 100 * xc / yc
        if (xs != "-") printf " (its kernel part alone %.0f %%)", 100 * xs / yc
        printf "\n" }'
    ((rounds > 1)) || return 0
    local m lo hi
    # median_of's first column and its lowest and highest; its two latency columns are unused.
    read -r m _ _ lo hi <<<"$(paste -d ' ' <(printf '%s' "${cpu[$2]}") <(printf '%s' "${cpu[$3]}") |
        awk '{ print 100 * $3 / $7, "-", "-" }' | median_of)"
    awk -v l="$1" -v m="$m" -v lo="$lo" -v hi="$hi" 'BEGIN {
        printf "%s, pair CPU per request round by round: median %.0f %%, %.0f-%.0f %%\n", l, m, lo, hi }'
}

# bench_policies DIR: the policies every trustmesh pair of the benches runs under, written to
# DIR/bench.yaml: PeerAuthentication STRICT for namespace bench, and an ALLOW policy for the
# server workload naming the client's principal (trust domain `td`).
bench_policies() {
    mkdir -p "$1"
    cat >"$1/bench.yaml" <<EOF
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
}

# bench_registry FILE SERVER_IP CLIENT_IP VIP PORT [LABELS [PROTOCOL]]: the registry of a
# transparent pair, written to FILE: a WorkloadEntry per side (labels `app: <side>` plus LABELS,
# e.g. `, networking.istio.io/tunnel: http` for workloads that speak HBONE), and the backend
# ServiceEntry at VIP:PORT (PROTOCOL, default HTTP) selecting the server.
bench_registry() {
    local file=$1 server_ip=$2 client_ip=$3 vip=$4 port=$5 labels=${6:-} protocol=${7:-HTTP}
    cat >"$file" <<EOF
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: { name: server, namespace: bench }
spec: { address: $server_ip, serviceAccount: server, labels: { app: server$labels } }
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: { name: client, namespace: bench }
spec: { address: $client_ip, serviceAccount: client, labels: { app: client$labels } }
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: backend, namespace: bench }
spec:
  hosts: [ backend.bench.svc.cluster.local ]
  addresses: [ $vip ]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [ { number: $port, name: ${protocol,,}, protocol: $protocol } ]
  workloadSelector: { labels: { app: server } }
EOF
}

# need_tools HINT TOOL...: exits 1 naming the TOOLs missing from PATH, with HINT (how to
# install them), when any is.
need_tools() {
    local hint=$1 tool missing=()
    shift
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
    done
    if ((${#missing[@]})); then
        echo "bench/${0##*/}: missing ${missing[*]}; install with:" >&2
        echo "  $hint" >&2
        exit 1
    fi
}

# stop_started: stops every process in `pids` and waits for each.
stop_started() {
    local pid
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}

# drop_work: removes the work directory, unless KEEP_WORKDIR=1 asks to keep it (then says where).
drop_work() {
    if [[ "${KEEP_WORKDIR:-}" == 1 ]]; then
        echo "work directory kept: $work" >&2
    else
        rm -rf "$work"
    fi
}

# callgrind_wrapper WRAPPER BIN CG_DIR [SUBCOMMAND]: writes an executable WRAPPER that runs BIN
# under valgrind's callgrind (exec: the caller's pid is the profiled process), for
# TRUSTMESH_BIN or ZTUNNEL_BIN of bench/proxy.sh. With SUBCOMMAND, only `BIN SUBCOMMAND ...`
# is profiled and every other command runs as it is. Instrumentation is switched on a second
# after the process listens, so start-up is left out. Each profile is written at exit to
# CG_DIR/cg.<side>.<pid>, <side> being `client` or `server` for bench/proxy.sh's (d) sidecars
# (by their config file) and (e) ztunnels (by PROXY_WORKLOAD_INFO), `other` for the rest.
callgrind_wrapper() {
    local wrapper=$1 bin=$2 cg=$3 only=${4:-}
    cat >"$wrapper" <<EOW
#!/usr/bin/env bash
if [[ -n "$only" && "\${1:-}" != "$only" ]]; then
    exec "$bin" "\$@"
fi
side=other
case "\$* \${PROXY_WORKLOAD_INFO:-}" in
    *capture-client.yaml*|*bench/client/*) side=client ;;
    *capture-server.yaml*|*bench/server/*) side=server ;;
esac
(
    for _ in \$(seq 1 900); do
        ss -ltnpH 2>/dev/null | grep -q "pid=\$\$," && break
        sleep 0.1
    done
    sleep 1
    callgrind_control -i on \$\$ >/dev/null 2>&1
) &
exec valgrind --tool=callgrind --instr-atstart=no --dump-instr=no --compress-strings=no \\
    --demangle=no --callgrind-out-file="$cg/cg.\$side.%p" "$bin" "\$@"
EOW
    chmod 755 "$wrapper"
}

# callgrind_wait CG_DIR: waits (at most a minute) until no process made by `callgrind_wrapper`
# for CG_DIR is left: callgrind writes a profile as its process exits, after bench/proxy.sh
# has stopped it.
callgrind_wait() {
    for _ in $(seq 1 600); do
        pgrep -f "callgrind-out-file=$1/" >/dev/null || return 0
        sleep 0.1
    done
}

# callgrind_total FILE: the instructions a callgrind profile counted (its `summary:` line).
callgrind_total() {
    awk '/^(summary|totals):/ { print $2; exit }' "$1"
}

# hot_list_coverage BIN LIST: logs how many of the functions LIST names (trustmesh/hot-functions.txt,
# the order release builds lay serving code out in) BIN has. Symbol names carry a hash of their
# crate's build settings, so a list written for another build (a dependency's features
# changed, functions renamed) places less of the code, and a sidecar keeps more of the binary
# resident: below nine in ten, the memory figures are not the layout's.
hot_list_coverage() {
    local bin=$1 list=$2 have total
    [[ -f "$list" ]] && command -v nm >/dev/null && nm --defined-only "$bin" >/dev/null 2>&1 ||
        return 0
    total=$(grep -vc '^#' "$list" || true)
    have=$(LC_ALL=C comm -12 <(grep -v '^#' "$list" | LC_ALL=C sort -u) \
        <(nm --defined-only "$bin" | awk '{ print $3 }' | LC_ALL=C sort -u) | wc -l)
    log "release layout: $have of the $total functions in ${list#"$repo"/} are in the binary"
    if ((have * 10 < total * 9)); then
        log "  fewer than 90 %: the list was written for another build; rerun bench/hot-functions.sh and rebuild"
    fi
}
