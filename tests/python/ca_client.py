"""Interop peer for trustmesh's CA server: a grpcio (gRPC C-core) client calling
/istio.v1.auth.IstioCertificateService/CreateCertificate over TLS with a bearer token, the way
istio-agent calls istiod.

The request is encoded by hand from the field numbers of Istio's ca.proto (csr = 1,
validity_duration = 3) and the response decoded the same way (cert_chain = 1), so this checks
wire compatibility without any code generated from our own .proto.

  python3 ca_client.py ADDR ROOT_PEM SERVER_NAME TOKEN_FILE CSR_FILE TTL_SECONDS

Prints one JSON object: {"code": ..., "details": ..., "cert_chain": [...]}.
"""

import json
import sys

import grpc

METHOD = "/istio.v1.auth.IstioCertificateService/CreateCertificate"


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def encode_request(csr, ttl):
    data = csr.encode()
    return b"\x0a" + varint(len(data)) + data + b"\x18" + varint(ttl)


def read_varint(buf, i):
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i


def decode_response(buf):
    chain, i = [], 0
    while i < len(buf):
        key, i = read_varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire != 2:
            raise ValueError("unexpected wire type %d" % wire)
        n, i = read_varint(buf, i)
        if field == 1:
            chain.append(buf[i:i + n].decode())
        i += n
    return chain


def main():
    addr, root, name, token_file, csr_file, ttl = sys.argv[1:7]
    creds = grpc.ssl_channel_credentials(root_certificates=open(root, "rb").read())
    options = [("grpc.ssl_target_name_override", name), ("grpc.default_authority", name)]
    with grpc.secure_channel(addr, creds, options=options) as channel:
        call = channel.unary_unary(METHOD, request_serializer=None, response_deserializer=None)
        token = open(token_file).read().strip()
        try:
            raw = call(encode_request(open(csr_file).read(), int(ttl)),
                       metadata=[("authorization", "Bearer " + token)], timeout=10)
            out = {"code": "OK", "details": "", "cert_chain": decode_response(raw)}
        except grpc.RpcError as e:
            out = {"code": e.code().name, "details": e.details(), "cert_chain": []}
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    main()
