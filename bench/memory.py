#!/usr/bin/env python3
"""bench/memory.py — how much memory does a trustmesh sidecar hold under hostile load?

On loopback only, it starts one `trustmesh proxy` (release build) with a PERMISSIVE HTTP
listener in front of a small backend and reads the proxy's resident memory (VmRSS, and VmHWM,
the peak, from /proc/<pid>/status) in four states:

  baseline       after start-up and a few requests
  idle           N TCP connections open that never send a byte (default 10,000)
  slowloris      M connections that send a request head one header line at a time, slower
                 than it may take (default 1,000)
  rapid reset    HTTP/2 (h2c) clients opening streams and resetting each at once
                 (CVE-2023-44487; default 10 connections x 10,000 streams)

and prints them side by side with the connection counts the proxy reported. Every loop is
bounded in count and time; everything it starts is stopped at the end.

Usage:  bench/memory.py [--bin target/release/trustmesh] [--idle 10000] [--slowloris 1000]
                        [--reset-conns 10] [--reset-streams 10000]
Needs python3 and the trustmesh binary (`cargo build --release -p trustmesh`); raise the open
file limit (`ulimit -n 65536`) for 10,000 connections.
"""

import argparse
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import http.server
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0])
    return out


def metric(admin, name):
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5).read().decode()
    except OSError:
        return None
    total = 0
    for line in text.splitlines():
        if line.startswith(name):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


class Backend(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *a):
        pass


def start_proxy(binary, work, inb, backend, admin):
    subprocess.run([binary, "ca", "init", "--trust-domain", "cluster.local", "--out", f"{work}/ca"],
                   check=True, capture_output=True)
    subprocess.run([binary, "ca", "issue", "--ca", f"{work}/ca", "--spiffe-id",
                    "spiffe://cluster.local/ns/bench/sa/app", "--out", f"{work}/certs"],
                   check=True, capture_output=True)
    os.makedirs(f"{work}/policies", exist_ok=True)
    with open(f"{work}/proxy.yaml", "w") as f:
        f.write(f"""workload: {{ namespace: bench, serviceAccount: app }}
certs: {{ key: certs/key.pem, certChain: certs/cert-chain.pem }}
trustBundles: [ "cluster.local=certs/root-cert.pem" ]
mesh: {{ trustDomain: cluster.local }}
policyDir: policies
inbound: [ {{ port: {inb}, targetPort: {backend}, protocol: http }} ]
admin: {{ address: "127.0.0.1:{admin}" }}
maxConnections: 65536
timeouts: {{ handshake: 2m, requestHeaders: 2m }}
""")
    log = open(f"{work}/proxy.log", "w")
    p = subprocess.Popen([binary, "proxy", "--config", f"{work}/proxy.yaml"],
                         stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.time() + 15
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{admin}/healthz/ready", timeout=1).status == 200:
                return p
        except OSError:
            time.sleep(0.1)
    p.kill()
    sys.exit("proxy did not become ready; see " + f"{work}/proxy.log")


def open_idle(port, n, deadline):
    conns = []
    for _ in range(n):
        if time.time() > deadline:
            break
        try:
            conns.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        except OSError as e:
            print(f"[memory] stopped opening connections at {len(conns)}: {e}", file=sys.stderr)
            break
    return conns


def slowloris(port, n, rounds, pause, deadline):
    conns = open_idle(port, n, deadline)
    for c in conns:
        try:
            c.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n")
        except OSError:
            pass
    for i in range(rounds):
        if time.time() > deadline:
            break
        time.sleep(pause)
        for c in conns:
            try:
                c.sendall(f"x-slow-{i}: {'y' * 20}\r\n".encode())
            except OSError:
                pass
    return conns


def h2_frame(kind, flags, stream, payload=b""):
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def rapid_reset(port, conns, streams, deadline):
    """Opens `streams` streams per connection, each reset right after its HEADERS."""
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + h2_frame(0x4, 0, 0)
    # HPACK: :method GET (2), :scheme http (6), :path / (4), :authority "a" (literal, index 1).
    block = bytes([0x82, 0x86, 0x84, 0x41, 0x01]) + b"a"
    sent = 0
    socks = []
    for _ in range(conns):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
        except OSError:
            break
        s.sendall(preface)
        socks.append(s)
    for s in socks:
        batch = bytearray()
        for i in range(streams):
            if time.time() > deadline:
                break
            sid = 1 + 2 * i
            batch += h2_frame(0x1, 0x4 | 0x1, sid, block)  # HEADERS, END_HEADERS|END_STREAM
            batch += h2_frame(0x3, 0, sid, (8).to_bytes(4, "big"))  # RST_STREAM CANCEL
            sent += 1
            if len(batch) > 64 * 1024:
                try:
                    s.sendall(batch)
                except OSError:
                    break
                batch.clear()
        try:
            s.sendall(batch)
        except OSError:
            pass
    return socks, sent


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/trustmesh")
    ap.add_argument("--idle", type=int, default=10_000)
    ap.add_argument("--slowloris", type=int, default=1_000)
    ap.add_argument("--reset-conns", type=int, default=10)
    ap.add_argument("--reset-streams", type=int, default=10_000)
    a = ap.parse_args()
    if not os.path.exists(a.bin):
        sys.exit(f"{a.bin} not found: cargo build --release -p trustmesh")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    backend = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Backend)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    rows = []

    def scenario(label, run):
        """A fresh proxy per scenario, so no figure carries another's allocations."""
        work = tempfile.mkdtemp(prefix="tm-memory-")
        inb, admin = free_port(), free_port()
        proxy = start_proxy(a.bin, work, inb, backend.server_address[1], admin)
        try:
            for _ in range(20):
                urllib.request.urlopen(f"http://127.0.0.1:{inb}/", timeout=5).read()
            time.sleep(0.5)
            base = rss_kib(proxy.pid)["VmRSS"]
            held, note = run(inb)
            time.sleep(1.0)
            m = rss_kib(proxy.pid)
            active = metric(admin, "trustmesh_active_connections")
            for c in held:
                c.close()
            time.sleep(1.0)
            after = rss_kib(proxy.pid)["VmRSS"]
            ok = urllib.request.urlopen(f"http://127.0.0.1:{inb}/", timeout=5).status
            rows.append((f"{label} {note}", base, m["VmRSS"], m["VmHWM"], after, active, ok))
            print(f"[memory] {label} {note}: baseline {base / 1024:.1f} MiB, under load "
                  f"{m['VmRSS'] / 1024:.1f} MiB (peak {m['VmHWM'] / 1024:.1f}), after "
                  f"{after / 1024:.1f} MiB, active {active}, then HTTP {ok}", file=sys.stderr)
        finally:
            proxy.terminate()
            try:
                proxy.wait(10)
            except subprocess.TimeoutExpired:
                proxy.kill()
            if not os.environ.get("KEEP_WORKDIR"):
                shutil.rmtree(work, ignore_errors=True)

    def idle(port):
        conns = open_idle(port, a.idle, time.time() + 60)
        return conns, f"({len(conns)} idle connections)"

    def loris(port):
        conns = slowloris(port, a.slowloris, rounds=5, pause=1.0, deadline=time.time() + 60)
        return conns, f"({len(conns)} slowloris clients)"

    def reset(port):
        socks, sent = rapid_reset(port, a.reset_conns, a.reset_streams, time.time() + 60)
        return socks, f"({sent} streams reset on {len(socks)} h2c connections)"

    try:
        scenario("idle", idle)
        scenario("slowloris", loris)
        scenario("rapid reset", reset)
    finally:
        backend.shutdown()
    print(f"\n{'scenario':58} {'base':>6} {'load':>6} {'peak':>6} {'after':>6} {'active':>6}  (MiB)")
    for label, base, rss, hwm, after, active, ok in rows:
        print(f"{label:58} {base / 1024:6.1f} {rss / 1024:6.1f} {hwm / 1024:6.1f} "
              f"{after / 1024:6.1f} {str(active):>6}  then HTTP {ok}")


if __name__ == "__main__":
    main()
