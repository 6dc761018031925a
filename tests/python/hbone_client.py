"""An HBONE client we did not write the HTTP/2 of: hyper-h2 over Python's ssl module.

Opens one mTLS connection (ALPN h2) and sends every stream of the spec on it at once; each
stream's request is sent, then (on a 200) its payload, and the answer is read until the stream
ends, is reset, or the deadline passes. Prints one JSON object:
{"streams": [{"status", "data", "reset", "ended"}], "error": null or the TLS/connection error}.

Spec (argv[1], JSON): port, ca, optional cert/key, deadline (seconds), streams: a list of
{method, authority, payload, expect (bytes of answer after which the stream is done, optional),
end (send END_STREAM after the payload, default false)}.
"""

import json
import socket
import ssl
import sys
import time

import h2.config
import h2.connection
import h2.events


def main():
    spec = json.loads(sys.argv[1])
    ctx = ssl.create_default_context(cafile=spec["ca"])
    # Mesh peers are named by SPIFFE ID, not DNS: the chain is verified, the name is not.
    ctx.check_hostname = False
    if spec.get("cert"):
        ctx.load_cert_chain(spec["cert"], spec["key"])
    ctx.set_alpn_protocols(["h2"])
    deadline = time.monotonic() + spec.get("deadline", 5)
    out = {"streams": [], "error": None}
    try:
        sock = socket.create_connection(("127.0.0.1", spec["port"]), timeout=5)
        tls = ctx.wrap_socket(sock)
        conn = h2.connection.H2Connection(
            config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        conn.initiate_connection()
        tls.sendall(conn.data_to_send())
        streams = {}
        for s in spec["streams"]:
            sid = conn.get_next_available_stream_id()
            headers = [(":method", s["method"]), (":authority", s["authority"])]
            if s["method"] != "CONNECT":
                headers += [(":scheme", "https"), (":path", "/")]
            conn.send_headers(sid, headers, end_stream=s["method"] != "CONNECT")
            streams[sid] = {"spec": s, "status": None, "data": b"", "reset": False, "ended": False}
        tls.sendall(conn.data_to_send())
        order = list(streams)

        def done(st):
            if st["reset"] or st["ended"]:
                return True
            expect = st["spec"].get("expect")
            return st["status"] == 200 and expect is not None and len(st["data"]) >= expect

        while not all(done(st) for st in streams.values()) and time.monotonic() < deadline:
            tls.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                chunk = tls.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                out["error"] = "connection closed by the server"
                break
            for ev in conn.receive_data(chunk):
                st = streams.get(getattr(ev, "stream_id", None))
                if isinstance(ev, h2.events.ResponseReceived) and st:
                    st["status"] = int(dict(ev.headers)[":status"])
                    if st["status"] == 200 and st["spec"].get("payload"):
                        conn.send_data(
                            ev.stream_id,
                            st["spec"]["payload"].encode(),
                            end_stream=st["spec"].get("end", False),
                        )
                elif isinstance(ev, h2.events.DataReceived) and st:
                    st["data"] += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamEnded) and st:
                    st["ended"] = True
                elif isinstance(ev, h2.events.StreamReset) and st:
                    st["reset"] = True
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    out["error"] = "GOAWAY %s" % ev.error_code
            tls.sendall(conn.data_to_send())
        out["streams"] = [
            {
                "status": streams[sid]["status"],
                "data": streams[sid]["data"].decode("utf-8", "replace"),
                "reset": streams[sid]["reset"],
                "ended": streams[sid]["ended"],
            }
            for sid in order
        ]
    except (ssl.SSLError, OSError) as e:
        # TLS 1.3 reports a refused client certificate at the first read, not in the handshake.
        out["error"] = "%s: %s" % (type(e).__name__, e)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
