#!/usr/bin/env python3
"""PyJWT-based token and JWKS tool for trustmesh's JWT interop tests.

Tokens minted here come from an implementation independent of ours (PyJWT + cryptography), so
the Rust tests check that trustmesh accepts what a real issuer produces, and rejects it when it
should.

  jwt_tool.py jwk  --key PRIVATE.pem [--kid KID] [--alg ALG]
      prints the public JWK (JSON object) of a PEM private key (RSA, EC P-256/P-384, Ed25519)
  jwt_tool.py sign --key PRIVATE.pem --alg ALG [--kid KID] --claims JSON
      prints a compact JWS over the given claims; in the claims, the string values
      "now+N" / "now-N" for exp, nbf and iat are replaced by the current time +/- N seconds
"""

import argparse
import json
import sys
import time

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa


def load_key(path):
    with open(path, "rb") as f:
        return serialization.load_pem_private_key(f.read(), password=None)


def public_jwk(private_key):
    public = private_key.public_key()
    if isinstance(private_key, rsa.RSAPrivateKey):
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(private_key, ec.EllipticCurvePrivateKey):
        jwk = jwt.algorithms.ECAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(private_key, ed25519.Ed25519PrivateKey):
        jwk = jwt.algorithms.OKPAlgorithm.to_jwk(public, as_dict=True)
    else:
        raise SystemExit(f"unsupported key type {type(private_key).__name__}")
    return dict(jwk)


def resolve_times(claims):
    now = int(time.time())
    for name in ("exp", "nbf", "iat"):
        value = claims.get(name)
        if isinstance(value, str) and value.startswith("now"):
            claims[name] = now + int(value[3:] or 0)
    return claims


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["jwk", "sign"])
    parser.add_argument("--key", required=True)
    parser.add_argument("--kid")
    parser.add_argument("--alg")
    parser.add_argument("--claims", default="{}")
    opts = parser.parse_args()

    key = load_key(opts.key)
    if opts.command == "jwk":
        jwk = public_jwk(key)
        jwk["use"] = "sig"
        if opts.kid:
            jwk["kid"] = opts.kid
        if opts.alg:
            jwk["alg"] = opts.alg
        json.dump(jwk, sys.stdout)
    else:
        headers = {"kid": opts.kid} if opts.kid else None
        claims = resolve_times(json.loads(opts.claims))
        sys.stdout.write(jwt.encode(claims, key, algorithm=opts.alg, headers=headers))


if __name__ == "__main__":
    main()
