"""Interop peer for trustmesh's SPIFFE Workload API: the py-spiffe library (a client we did not
write) fetches an X.509-SVID and bundles from the agent's socket.

Reads SPIFFE_ENDPOINT_SOCKET (unix:///path). Prints one JSON object on stdout describing what
the library saw, so the Rust test makes the assertions. Every wait is bounded.

  python3 workload_api_client.py [--watch-seconds N]
"""

import argparse
import base64
import json
import os
import sys
import threading
import time

import grpc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from spiffe import JwtSvid, TrustDomain, WorkloadApiClient
from spiffe._proto import workload_pb2, workload_pb2_grpc


def b64(cert):
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


HEADER = [("workload.spiffe.io", "true")]


def raw_code(socket, metadata, call, **kw):
    """Calls the API with a plain grpcio stub, to see status codes the library hides."""
    with grpc.insecure_channel(socket) as channel:
        stub = workload_pb2_grpc.SpiffeWorkloadAPIStub(channel)
        try:
            if call == "x509":
                next(iter(stub.FetchX509SVID(workload_pb2.X509SVIDRequest(), metadata=metadata, timeout=5)))
            elif call == "jwt":
                stub.FetchJWTSVID(workload_pb2.JWTSVIDRequest(**kw), metadata=metadata, timeout=5)
            elif call == "validate":
                stub.ValidateJWTSVID(workload_pb2.ValidateJWTSVIDRequest(**kw), metadata=metadata, timeout=5)
            return {"code": "OK", "details": ""}
        except grpc.RpcError as e:
            return {"code": e.code().name, "details": e.details()}


def key_algorithm(key):
    """ "RSA 2048", "EC secp256r1", ... for the X.509-SVID's private key."""
    if isinstance(key, rsa.RSAPrivateKey):
        return f"RSA {key.key_size}"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return f"EC {key.curve.name}"
    return type(key).__name__


def raw_jwt_bundle_keys(socket):
    """Trust domains in the first FetchJWTBundles message, as sent on the wire."""
    with grpc.insecure_channel(socket) as channel:
        stub = workload_pb2_grpc.SpiffeWorkloadAPIStub(channel)
        first = next(iter(stub.FetchJWTBundles(workload_pb2.JWTBundlesRequest(), metadata=HEADER, timeout=5)))
        return sorted(first.bundles.keys())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--watch-seconds", type=float, default=0)
    ap.add_argument("--probe", action="store_true",
                    help="one FetchX509SVID with the security header; print its status code")
    args = ap.parse_args()
    socket = os.environ["SPIFFE_ENDPOINT_SOCKET"]
    if args.probe:
        print(json.dumps(raw_code(socket, HEADER, "x509")))
        return

    client = WorkloadApiClient(default_timeout=10)
    ctx = client.fetch_x509_context()
    svid = ctx.default_svid
    pub_of_key = svid.private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    pub_of_leaf = svid.leaf.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    bundles = {
        str(b.trust_domain): sorted(b64(c) for c in b.x509_authorities)
        for b in ctx.x509_bundle_set.bundles
    }
    only_bundles = client.fetch_x509_bundles()
    out = {
        "spiffe_id": str(svid.spiffe_id),
        "leaf": b64(svid.leaf),
        "chain_len": len(svid.cert_chain),
        "key_matches_leaf": pub_of_key == pub_of_leaf,
        # py-spiffe parsed the key from the PKCS#8 DER the Workload API sent (as the spec says).
        "key_algorithm": key_algorithm(svid.private_key),
        "bundles": bundles,
        "fetch_x509_bundles": sorted(str(b.trust_domain) for b in only_bundles.bundles),
        "no_header": raw_code(socket, None, "x509"),
    }

    # JWT-SVIDs: fetched through the library, validated by the agent and, independently, by
    # the library against the JWT bundle it fetched.
    audience = "spiffe://cluster.local/ns/default/sa/backend"
    jwt_svid = client.fetch_jwt_svid(audience={audience})
    token = jwt_svid.token
    validated = client.validate_jwt_svid(token, audience)
    jwt_bundles = client.fetch_jwt_bundles()
    local = jwt_bundles.get_bundle_for_trust_domain(TrustDomain(str(svid.spiffe_id.trust_domain)))
    offline = JwtSvid.parse_and_validate(token, local, {audience})
    out["jwt"] = {
        "spiffe_id": str(jwt_svid.spiffe_id),
        "validated_by_agent": str(validated.spiffe_id),
        "validated_by_library": str(offline.spiffe_id),
        "audience": sorted(offline.audience),
        "bundle_domains": sorted(str(b.trust_domain) for b in jwt_bundles.bundles),
        "raw_bundle_keys": raw_jwt_bundle_keys(socket),
        "wrong_audience": raw_code(socket, HEADER, "validate", audience="someone-else", svid=token),
        "no_audience": raw_code(socket, HEADER, "jwt", audience=[]),
        "other_identity": raw_code(socket, HEADER, "jwt", audience=["x"], spiffe_id="spiffe://cluster.local/ns/prod/sa/db"),
    }

    if args.watch_seconds > 0:
        # Stream updates and record each distinct leaf until two are seen (a rotation) or time
        # runs out.
        seen = []
        done = threading.Event()

        def on_success(c):
            leaf = b64(c.default_svid.leaf)
            if leaf not in seen:
                seen.append(leaf)
            if len(seen) >= 2:
                done.set()

        def on_error(e):
            out.setdefault("stream_errors", []).append(str(e))

        handle = client.stream_x509_contexts(on_success, on_error, retry_connect=False)
        done.wait(args.watch_seconds)
        handle.cancel()
        out["streamed_leaves"] = seen

    client.close()
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    main()
