#!/usr/bin/env python3
"""A third-party ext_authz peer for trustmesh's interop tests, written with grpcio.

It compiles trustmesh's own .proto files (crates/proxy/proto) with grpc_tools.protoc into a
temporary directory at start-up, so the test exercises the real wire format with an
independent implementation of the Envoy `envoy.service.auth.v3.Authorization` service.

Decision per request, driven by request headers the test sets:
  x-ext-authz: allow        -> OK, adds `x-ext-authz-check-result: allowed` upstream,
                               removes `x-remove-me`, and echoes what it received:
                               `x-ext-authz-seen-principal`, `x-ext-authz-seen-path`;
                               adds `x-ext-authz-said: yes` to the response to the client
  x-ext-authz: deny (other) -> PERMISSION_DENIED with a denied_response: HTTP status from
                               `x-ext-authz-deny-status` (default 403), body
                               `denied by ext_authz: <path>`, header
                               `x-ext-authz-check-result: denied`
  x-ext-authz-sleep-ms: N   -> sleeps N ms first (to force client timeouts)
A check without an HTTP request (Envoy's network filter, for a TCP connection) is OK when the
source principal is one of --allow-principal, and PERMISSION_DENIED otherwise.

Every CheckRequest is also appended as one JSON line to --log, so a test can assert what the
server saw. The server binds --bind (127.0.0.1 unless told) on --port (0 = any free port),
prints `PORT <n>` on stdout once serving, and exits by itself after --max-seconds.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from concurrent import futures

import grpc
from grpc_tools import protoc

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_ROOT = os.path.join(HERE, "..", "..", "crates", "proxy", "proto")
PROTO_FILES = [
    "envoy/service/auth/v3/external_auth.proto",
    "envoy/service/auth/v3/attribute_context.proto",
    "envoy/config/core/v3/base.proto",
    "envoy/config/core/v3/address.proto",
    "envoy/type/v3/http_status.proto",
    "google/rpc/status.proto",
]


def compile_stubs():
    """Generates Python modules for our protos and puts them on sys.path; returns their folder."""
    out = tempfile.mkdtemp(prefix="trustmesh-extauthz-py-")
    well_known = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    args = ["protoc", f"-I{PROTO_ROOT}", f"-I{well_known}",
            f"--python_out={out}", f"--grpc_python_out={out}"] + PROTO_FILES
    if protoc.main(args) != 0:
        raise SystemExit("grpc_tools.protoc failed on " + PROTO_ROOT)
    sys.path.insert(0, out)
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--log", required=True)
    parser.add_argument("--max-seconds", type=float, default=120.0)
    parser.add_argument("--allow-principal", action="append", default=[])
    opts = parser.parse_args()

    stubs = compile_stubs()
    from envoy.config.core.v3 import base_pb2
    from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
    from envoy.type.v3 import http_status_pb2
    from google.rpc import status_pb2
    # Imported (with everything they import) and no longer needed on disk: removed now, as the
    # test that started this server ends it with a signal no cleanup would survive.
    shutil.rmtree(stubs, ignore_errors=True)

    log_lock = threading.Lock()

    def header(key, value, append=None):
        option = base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=key, value=value))
        if append is not None:
            option.append.value = append
        return option

    class Authorizer(external_auth_pb2_grpc.AuthorizationServicer):
        def Check(self, request, context):
            attrs = request.attributes
            http = attrs.request.http
            headers = dict(http.headers)
            seen = {
                "source_principal": attrs.source.principal,
                "source_address": attrs.source.address.socket_address.address,
                "source_port": attrs.source.address.socket_address.port_value,
                "destination_principal": attrs.destination.principal,
                "method": http.method,
                "path": http.path,
                "host": http.host,
                "scheme": http.scheme,
                "protocol": http.protocol,
                "headers": headers,
                "has_time": attrs.request.HasField("time"),
                "has_request": attrs.HasField("request"),
                "has_http": attrs.request.HasField("http"),
                "body": http.body,
                "raw_body_hex": http.raw_body.hex(),
            }
            with log_lock, open(opts.log, "a") as log:
                log.write(json.dumps(seen) + "\n")

            sleep_ms = int(headers.get("x-ext-authz-sleep-ms", "0") or 0)
            if sleep_ms > 0:
                time.sleep(min(sleep_ms, 10_000) / 1000.0)

            if not attrs.HasField("request"):
                code = 0 if attrs.source.principal in opts.allow_principal else 7
                return external_auth_pb2.CheckResponse(status=status_pb2.Status(code=code))

            if headers.get("x-ext-authz") == "allow":
                ok = external_auth_pb2.OkHttpResponse(
                    headers=[
                        header("x-ext-authz-check-result", "allowed"),
                        header("x-ext-authz-seen-principal", attrs.source.principal),
                        header("x-ext-authz-seen-path", http.path),
                        header("x-ext-authz-appended", "second", append=True),
                    ],
                    headers_to_remove=["x-remove-me"],
                    response_headers_to_add=[header("x-ext-authz-said", "yes")],
                )
                return external_auth_pb2.CheckResponse(
                    status=status_pb2.Status(code=0), ok_response=ok)

            deny_status = int(headers.get("x-ext-authz-deny-status", "403"))
            denied = external_auth_pb2.DeniedHttpResponse(
                status=http_status_pb2.HttpStatus(code=deny_status),
                headers=[header("x-ext-authz-check-result", "denied")],
                body="denied by ext_authz: " + http.path,
            )
            return external_auth_pb2.CheckResponse(
                status=status_pb2.Status(code=7, message="denied"), denied_response=denied)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(Authorizer(), server)
    port = server.add_insecure_port(f"{opts.bind}:{opts.port}")
    if port == 0:
        raise SystemExit(f"could not bind {opts.bind}:{opts.port}")
    server.start()
    print(f"PORT {port}", flush=True)
    server.wait_for_termination(timeout=opts.max_seconds)
    server.stop(grace=0)


if __name__ == "__main__":
    main()
