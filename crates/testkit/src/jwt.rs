//! Tokens and the key sets that verify them, two ways. [`Signer`] is ours (rcgen's P-256 key,
//! the `jsonwebtoken` crate): fast, for tests where the token is only the caller's credential
//! (the CA server's service-account tokens, a sidecar's RequestAuthentication). [`Key`] and
//! [`pyjwt`] are someone else's: keys from `openssl genpkey`, JWKs and tokens from PyJWT
//! (`tests/python/jwt_tool.py`), for tests where interoperability is the point.

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256};
use serde_json::{json, Value};

use crate::pki::unix_now;
use crate::tools::{python_dir, run_ok};

/// The issuer of Kubernetes service-account tokens, as istiod is configured to trust it.
pub const K8S_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// The audience istio-agent asks its token for.
pub const ISTIO_CA_AUDIENCE: &str = "istio-ca";

/// An ES256 signing key with a key id.
pub struct Signer {
    key: KeyPair,
    pub kid: String,
}

impl Signer {
    pub fn new(kid: &str) -> Signer {
        Signer {
            key: KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap(),
            kid: kid.to_string(),
        }
    }

    /// The JWKS publishing the public half.
    pub fn jwks(&self) -> Value {
        let raw = self.key.public_key_raw(); // 0x04 || X || Y
        assert_eq!(raw.len(), 65);
        json!({"keys": [{
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": self.kid,
            "x": URL_SAFE_NO_PAD.encode(&raw[1..33]), "y": URL_SAFE_NO_PAD.encode(&raw[33..]),
        }]})
    }

    /// Writes [`Signer::jwks`] to `path`.
    pub fn write_jwks(&self, path: &Path) {
        std::fs::write(path, serde_json::to_vec(&self.jwks()).unwrap()).unwrap();
    }

    /// A token with these claims, signed, with our `kid` in its header.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        let key = jsonwebtoken::EncodingKey::from_ec_der(&self.key.serialize_der());
        jsonwebtoken::encode(&header, claims, &key).unwrap()
    }

    /// A projected service-account token for `ns/sa`, like the kubelet mounts for istio-agent,
    /// expiring `exp_in` seconds from now (negative: already expired).
    pub fn service_account_token(
        &self,
        iss: &str,
        aud: &str,
        ns: &str,
        sa: &str,
        exp_in: i64,
    ) -> String {
        let now = unix_now();
        self.sign(&json!({
            "iss": iss, "aud": [aud], "sub": format!("system:serviceaccount:{ns}:{sa}"),
            "iat": now, "nbf": now - 5, "exp": now + exp_in,
            "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": sa, "uid": "0"}},
        }))
    }
}

/// A token issuer as a CA server is configured to trust one: an ES256 key whose JWKS is written
/// to a file, minting Kubernetes service-account tokens.
pub struct TokenIssuer {
    signer: Signer,
    pub kid: String,
}

impl TokenIssuer {
    pub fn new(jwks_path: &Path, kid: &str) -> TokenIssuer {
        let signer = Signer::new(kid);
        signer.write_jwks(jwks_path);
        TokenIssuer {
            signer,
            kid: kid.to_string(),
        }
    }

    /// A token for `ns/sa` from [`K8S_ISSUER`] for [`ISTIO_CA_AUDIENCE`], valid for 10 minutes.
    pub fn token(&self, ns: &str, sa: &str) -> String {
        self.token_with(K8S_ISSUER, ISTIO_CA_AUDIENCE, ns, sa, 600)
    }

    pub fn token_with(&self, iss: &str, aud: &str, ns: &str, sa: &str, exp_in: i64) -> String {
        self.signer.service_account_token(iss, aud, ns, sa, exp_in)
    }
}

/// Request headers carrying `token` as `Authorization: Bearer <token>`.
pub fn bearer(token: &str) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    let value = http::HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
    h.insert(http::header::AUTHORIZATION, value);
    h
}

// ---------------------------------------------------------------------------------------------
// Third-party material: openssl keys, PyJWT tokens
// ---------------------------------------------------------------------------------------------

/// A private key made by `openssl genpkey`, and the key id tokens signed with it carry.
#[derive(Clone)]
pub struct Key {
    pub pem: PathBuf,
    pub kid: String,
}

impl Key {
    /// `<dir>/<kid>.pem` of `kind`: `rsa` (2048 bits), `p256`, `p384` or `ed25519`.
    pub fn generate(dir: &Path, kind: &str, kid: &str) -> Key {
        let pem = dir.join(format!("{kid}.pem"));
        let mut cmd = Command::new("openssl");
        cmd.arg("genpkey");
        match kind {
            "rsa" => cmd.args(["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]),
            "p256" => cmd.args(["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]),
            "p384" => cmd.args(["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"]),
            "ed25519" => cmd.args(["-algorithm", "ed25519"]),
            other => panic!("unknown key kind {other}"),
        };
        run_ok(cmd.arg("-out").arg(&pem));
        Key {
            pem,
            kid: kid.to_string(),
        }
    }

    /// The same key material published under another key id (a forger's token).
    pub fn with_kid(&self, kid: &str) -> Key {
        Key {
            pem: self.pem.clone(),
            kid: kid.to_string(),
        }
    }
}

/// Runs `tests/python/jwt_tool.py` with `args`; its output.
pub fn jwt_tool(args: &[&str]) -> String {
    run_ok(
        Command::new("python3")
            .arg(python_dir().join("jwt_tool.py"))
            .args(args),
    )
}

/// The JWK of `key`, as PyJWT writes it.
pub fn jwk(key: &Key) -> Value {
    let pem = key.pem.to_str().unwrap();
    serde_json::from_str(&jwt_tool(&["jwk", "--key", pem, "--kid", &key.kid])).unwrap()
}

/// A JWKS document with the keys' JWKs, in order.
pub fn jwks(keys: &[&Key]) -> String {
    json!({ "keys": keys.iter().map(|k| jwk(k)).collect::<Vec<_>>() }).to_string()
}

/// A token minted by PyJWT. `exp`/`nbf`/`iat` may be given as "now", "now+N" or "now-N".
pub fn pyjwt(key: &Key, alg: &str, claims: Value) -> String {
    jwt_tool(&[
        "sign",
        "--key",
        key.pem.to_str().unwrap(),
        "--alg",
        alg,
        "--kid",
        &key.kid,
        "--claims",
        &claims.to_string(),
    ])
}
