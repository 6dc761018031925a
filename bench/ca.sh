#!/usr/bin/env bash
# bench/ca.sh — how many certificates per second does the CA server issue, next to the raw
# ECDSA P-256 signing rate of this machine?
#
# In one run it measures:
#   (a) trustmesh: certificates issued through the real gRPC API (TLS over loopback, bearer JWT
#       authentication, CSR checks, signing) by N concurrent clients, each on its own HTTP/2
#       connection — crates/ca-server/benches/issue_rate.rs, bounded by -s seconds.
#   (b) openssl speed -seconds 3 ecdsap256: raw sign/s and verify/s on one core.
# and prints them side by side with (a) as a percentage of (b)'s sign rate.
#
# Why (a) cannot approach (b): every issuance verifies the CSR's ECDSA signature (proof of
# possession) and makes one, and a P-256 verification costs about three signatures. Each client
# reuses one bearer token, as istio-agent does, so its signature is checked once and then answered
# from the CA's token cache (`ca serve --token-cache-max-age`, default 5m); with the cache off
# (0) every issuance verifies the token too: 2 verifications + 1 signature. The script prints the
# crypto-only ceiling of the cached case (1 verify + 1 sign); TLS handshakes happen once per
# connection and are left out of it.
#
# Usage: bench/ca.sh [-c CLIENTS] [-s SECONDS]     (defaults: -c 8 -s 5)
set -euo pipefail
cd "$(dirname "$0")/.."

clients=8
seconds=5
while getopts "c:s:" opt; do
    case "$opt" in
        c) clients="$OPTARG" ;;
        s) seconds="$OPTARG" ;;
        *) echo "usage: $0 [-c CLIENTS] [-s SECONDS]" >&2; exit 2 ;;
    esac
done

command -v openssl >/dev/null || { echo "error: openssl not found" >&2; exit 1; }

echo "building and running the issue-rate bench (release)..." >&2
line=$(cargo bench -q -p trustmesh-ca-server --bench issue_rate -- \
    --clients "$clients" --seconds "$seconds" 2>/dev/null | grep 'ca-server issue rate')
rate=$(sed -E 's/.*= ([0-9]+) certs\/s.*/\1/' <<<"$line")

echo "running openssl speed -seconds 3 ecdsap256..." >&2
read -r sign verify < <(openssl speed -seconds 3 ecdsap256 2>/dev/null \
    | awk '/ecdsa \(nistp256\)/ {print $(NF-1), $NF}')

awk -v r="$rate" -v s="$sign" -v v="$verify" -v c="$clients" -v n="$(nproc)" 'BEGIN {
    ceiling = 1 / (1 / v + 1 / s)
    printf "\n%-52s %12s\n", "measurement", "per second"
    printf "%-52s %12.0f\n", "trustmesh CA: certificates issued (" c " clients, gRPC+TLS)", r
    printf "%-52s %12.0f\n", "openssl ecdsap256 sign (1 core)", s
    printf "%-52s %12.0f\n", "openssl ecdsap256 verify (1 core)", v
    printf "%-52s %12.0f\n", "crypto-only ceiling per core (1 verify + 1 sign)", ceiling
    printf "\nissued/raw sign rate: %.1f%%   issued/crypto ceiling x %d cores: %.1f%%\n", 100 * r / s, n, 100 * r / (ceiling * n)
}'
