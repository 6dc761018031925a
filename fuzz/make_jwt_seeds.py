#!/usr/bin/env python3
"""Writes the keys and seed inputs of the `jwt` and `grpc_requests` fuzz targets.

Run from fuzz/ (needs PyJWT and cryptography). Every run makes new keys and writes only their
public halves (keys/*.json) beside the seeds signed with them:
- the "known" key set signs the valid seeds, which reach the code that runs after a signature
  verified;
- the "forgery" key set signs nothing: a token that verifies against it was forged, which the
  targets assert never happens.
"""
import base64
import hashlib
import hmac
import json
import os

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

KEYS = "keys"
FAR = 4102444800  # 2100-01-01: the seeds stay valid for the life of the project
ISSUER_KNOWN = "https://known.test"
ISSUER_FORGED = "https://forgery.test"


def b64(n: int) -> str:
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def jwk(public, kid):
    nums = public.public_numbers()
    if isinstance(public, rsa.RSAPublicKey):
        return {"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig", "n": b64(nums.n), "e": b64(nums.e)}
    size = 32
    pad = lambda v: base64.urlsafe_b64encode(v.to_bytes(size, "big")).rstrip(b"=").decode()
    return {"kty": "EC", "kid": kid, "crv": "P-256", "alg": "ES256", "use": "sig", "x": pad(nums.x), "y": pad(nums.y)}


os.makedirs(KEYS, exist_ok=True)
k_ec = ec.generate_private_key(ec.SECP256R1())
k_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
known = {"keys": [jwk(k_ec.public_key(), "k-ec"), jwk(k_rsa.public_key(), "k-rsa")]}
open(f"{KEYS}/known-jwks.json", "w").write(json.dumps(known, indent=1) + "\n")

f_ec = ec.generate_private_key(ec.SECP256R1()).public_key()
f_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
forgery = {"keys": [jwk(f_ec, "f-ec"), jwk(f_rsa, "f-rsa")]}
forgery_text = json.dumps(forgery, indent=1) + "\n"
open(f"{KEYS}/forgery-jwks.json", "w").write(forgery_text)


# One set of claims every verifier accepts when signed by a known key: the proxy's
# RequestAuthentication rule (iss, aud "fuzz"), the agent's JWT-SVID check (sub is a SPIFFE ID
# of known.test) and the CA's bearer-token check (aud "istio-ca", kubernetes.io claims).
claims = {
    "iss": ISSUER_KNOWN,
    "sub": "spiffe://known.test/ns/default/sa/fuzz",
    "aud": ["fuzz", "istio-ca"],
    "exp": FAR,
    "iat": 1700000000,
    "azp": "presenter",
    "scope": "read write",
    "nested": {"a": {"b": "c"}, "list": [1, "two", None, True]},
    "kubernetes.io": {"namespace": "default", "serviceaccount": {"name": "fuzz"}},
}


def sign(c, key, alg, kid, **hdr):
    return jwt.encode(c, key, algorithm=alg, headers={"kid": kid, **hdr} if kid else hdr or None)


def unsigned(header, payload):
    enc = lambda o: base64.urlsafe_b64encode(json.dumps(o).encode()).rstrip(b"=").decode()
    return f"{enc(header)}.{enc(payload)}."


def hmac_signed(header, payload, secret):
    head = unsigned(header, payload)[:-1]
    mac = hmac.new(secret, head.encode(), hashlib.sha256).digest()
    return head + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


seeds = {
    "valid-es256": sign(claims, k_ec, "ES256", "k-ec"),
    "valid-rs256": sign(claims, k_rsa, "RS256", "k-rsa"),
    # The key states RS256: a PS256 signature by it is refused (RFC 7517 4.4).
    "ps256-on-rs256-key": sign(claims, k_rsa, "PS256", "k-rsa"),
    "valid-no-kid": sign(claims, k_ec, "ES256", None),
    "forged-iss": sign({**claims, "iss": ISSUER_FORGED, "sub": "spiffe://forgery.test/ns/x/sa/y"}, k_ec, "ES256", "f-ec"),
    "forged-kid": sign({**claims, "iss": ISSUER_FORGED}, k_rsa, "RS256", "f-rsa"),
    "alg-none": unsigned({"alg": "none", "kid": "f-ec"}, {**claims, "iss": ISSUER_FORGED}),
    # The classic confusion: HMAC keyed with the public key set's text.
    "hs256-jwks-secret": hmac_signed({"alg": "HS256", "kid": "f-rsa"}, {**claims, "iss": ISSUER_FORGED},
                                     forgery_text.encode()),
    "expired": sign({**claims, "exp": 1000000000}, k_ec, "ES256", "k-ec"),
    "not-yet": sign({**claims, "nbf": FAR - 10}, k_ec, "ES256", "k-ec"),
    "exp-string": sign({**claims, "exp": str(FAR)}, k_ec, "ES256", "k-ec"),
    "exp-float": sign({**claims, "exp": 4.1e9}, k_ec, "ES256", "k-ec"),
    "aud-string": sign({**claims, "aud": "fuzz"}, k_ec, "ES256", "k-ec"),
    "no-sub": sign({k: v for k, v in claims.items() if k != "sub"}, k_ec, "ES256", "k-ec"),
    "wrong-alg-family": sign(claims, k_ec, "ES256", "k-rsa"),
}
seeds["five-segments"] = seeds["valid-es256"] + ".a.b"
seeds["jwks-mode-known"] = open(f"{KEYS}/known-jwks.json").read() + "\0" + seeds["valid-rs256"]
odd_jwks = {"keys": [
    {"kty": "oct", "k": "c2VjcmV0", "kid": "k-ec"},
    {"kty": "RSA", "kid": "k-rsa", "n": "AQAB", "e": "AQ"},
    {"kty": "EC", "kid": "k-ec", "crv": "P-521", "x": "AA", "y": "AA"},
    {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
]}
seeds["jwks-mode-odd"] = json.dumps(odd_jwks) + "\0" + seeds["valid-es256"]
os.makedirs("corpus/jwt", exist_ok=True)
for name, text in seeds.items():
    open(f"corpus/jwt/{name}", "w").write(text)

# grpc_requests: one selector byte, then the protobuf message (see src/lib.rs).
def field(num, wire, payload):
    key = bytes([num << 3 | wire])
    if wire == 2:
        return key + varint(len(payload)) + payload
    return key + payload


def varint(n):
    out = b""
    n &= (1 << 64) - 1
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def csr_pem(*sans):
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    req = builder.sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
    return req.public_bytes(serialization.Encoding.PEM)


csr = csr_pem(x509.UniformResourceIdentifier("spiffe://known.test/ns/default/sa/fuzz"))
metadata = field(1, 2, field(1, 2, b"CLUSTER_ID") + field(2, 2, field(3, 2, b"Kubernetes")))
grpc = {
    "ca-create": b"\0" + field(1, 2, csr) + field(3, 0, varint(3600)) + field(4, 2, metadata),
    "ca-negative-ttl": b"\0" + field(1, 2, csr_pem()) + field(3, 0, varint(-5)),
    "ca-other-id": b"\0" + field(1, 2, csr_pem(
        x509.UniformResourceIdentifier("spiffe://known.test/ns/kube-system/sa/admin"),
        x509.DNSName("admin.example"))),
    "ca-reserved-field": b"\0" + field(2, 2, b"spiffe://known.test/ns/a/sa/b") + field(1, 2, csr),
    "jwt-mint": b"\1" + field(1, 2, b"fuzz") + field(2, 0, varint(300)),
    "wl-jwtsvid": b"\2" + field(1, 2, b"fuzz") + field(2, 2, b"spiffe://known.test/ns/default/sa/fuzz"),
    "wl-validate": b"\3" + field(1, 2, b"fuzz") + field(2, 2, seeds["valid-es256"].encode()),
    "wl-validate-forged": b"\3" + field(1, 2, b"fuzz") + field(2, 2, seeds["forged-iss"].encode()),
}
os.makedirs("corpus/grpc_requests", exist_ok=True)
for name, data in grpc.items():
    open(f"corpus/grpc_requests/{name}", "wb").write(data)
print(f"{len(seeds)} jwt seeds, {len(grpc)} grpc_requests seeds")
