#!/usr/bin/env python3
"""bench/conntool.py — the two parts of bench/connections.sh that a shell cannot do soundly.

  sink PORT
      An HTTP/1.1 server on 127.0.0.1:PORT that reads each request's whole body (Content-Length)
      and only then answers 200 with "received BYTES". It is the upload benchmark's backend:
      nginx answers a request whose body it does not want at once and discards the body, so a
      proxy in between could stop forwarding early and an upload would be measured as done
      before its bytes got anywhere. Runs until killed.

  idle PORT COUNT [--concurrency C] [--deadline S] [--hold-until FILE] [--max-hold S]
      Opens COUNT TCP connections to 127.0.0.1:PORT (at most C connecting at a time), sends one
      HTTP/1.1 keep-alive `GET /` on each and reads its 200 answer, then keeps them all open
      and silent. When the last one is open (or S seconds have passed) it prints one line,
          opened OK failed FAILED seconds SECONDS
      then waits until FILE exists (at most --max-hold seconds), prints
          still_open N
      (the connections no peer closed while they were idle), closes them all and exits.

Standard library only; every wait is bounded.
"""

import argparse
import asyncio
import collections
import os
import resource
import socket
import socketserver
import sys
import time


# --- sink ------------------------------------------------------------------------------------
class Sink(socketserver.BaseRequestHandler):
    def handle(self):
        s = self.request
        s.settimeout(300)
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        pending = b""
        while True:
            while b"\r\n\r\n" not in pending:
                chunk = s.recv(65536)
                if not chunk or len(pending) > 65536:
                    return
                pending += chunk
            head, _, pending = pending.partition(b"\r\n\r\n")
            length = None
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            if length is None:
                length = 0
            got = min(len(pending), length)
            pending = pending[got:]
            while got < length:
                n = s.recv_into(view, min(len(buf), length - got))
                if n == 0:
                    return
                got += n
            body = f"received {got}\n".encode()
            s.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: "
                      + str(len(body)).encode() + b"\r\n\r\n" + body)


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def sink(port):
    with Server(("127.0.0.1", port), Sink) as server:
        server.serve_forever()


# --- idle ------------------------------------------------------------------------------------
REQUEST = b"GET / HTTP/1.1\r\nHost: backend\r\nConnection: keep-alive\r\n\r\n"


async def talk(loop, s, port):
    """Connects, sends one request and reads its whole answer; raises unless it is a 200."""
    await loop.sock_connect(s, ("127.0.0.1", port))
    await loop.sock_sendall(s, REQUEST)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await loop.sock_recv(s, 4096)
        if not chunk:
            raise ConnectionError("closed before answering")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = head.split(b" ", 2)[1:2]
    if status != [b"200"]:
        raise ConnectionError(f"answered {status[0].decode() if status else '?'}, not 200")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = await loop.sock_recv(s, 4096)
        if not chunk:
            raise ConnectionError("closed in the middle of the answer")
        body += chunk


def words(e):
    if isinstance(e, asyncio.TimeoutError):
        return "no answer within 10 s"
    return str(e) or type(e).__name__


async def open_all(port, count, concurrency, deadline):
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(concurrency)
    errors = collections.Counter()

    async def one():
        async with gate:
            if time.monotonic() > deadline:
                errors["not started before the deadline"] += 1
                return None
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                await asyncio.wait_for(talk(loop, s, port), 10)
                return s
            except (OSError, asyncio.TimeoutError, ValueError, IndexError) as e:
                errors[words(e)] += 1
                s.close()
                return None

    results = await asyncio.gather(*(one() for _ in range(count)))
    return [s for s in results if s is not None], errors


def still_open(s):
    try:
        return s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def idle(a):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < a.count + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    started = time.monotonic()
    socks, errors = asyncio.run(open_all(a.port, a.count, a.concurrency, started + a.deadline))
    took = time.monotonic() - started
    for why, n in errors.most_common(3):
        print(f"[conntool] {n} connection(s) failed: {why}", file=sys.stderr)
    print(f"opened {len(socks)} failed {a.count - len(socks)} seconds {took:.3f}", flush=True)
    until = time.monotonic() + a.max_hold
    while a.hold_until and not os.path.exists(a.hold_until) and time.monotonic() < until:
        time.sleep(0.1)
    print(f"still_open {sum(still_open(s) for s in socks)}", flush=True)
    for s in socks:
        s.close()


def main():
    ap = argparse.ArgumentParser(description="bench/connections.sh's sink and idle opener")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("sink")
    p.add_argument("port", type=int)
    p = sub.add_parser("idle")
    p.add_argument("port", type=int)
    p.add_argument("count", type=int)
    p.add_argument("--concurrency", type=int, default=100)
    p.add_argument("--deadline", type=float, default=120)
    p.add_argument("--hold-until", default="")
    p.add_argument("--max-hold", type=float, default=300)
    a = ap.parse_args()
    if a.cmd == "sink":
        sink(a.port)
    else:
        idle(a)


if __name__ == "__main__":
    main()
