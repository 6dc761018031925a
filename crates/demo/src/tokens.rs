//! The demo's JWTs: service-account tokens the agents present to their CA (the Kubernetes API
//! server's role in Istio) and end-user tokens that RequestAuthentication checks, each signed
//! with an ES256 key made for this run.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::bail;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};

/// Issuer of the service-account tokens the agents present to their CA.
pub const SA_ISSUER: &str = "https://kubernetes.demo.local";
/// Issuer of end-user tokens checked by RequestAuthentication.
pub const USER_ISSUER: &str = "https://auth.demo.local";

/// An ES256 signing key with its public JWK.
pub struct SigningKey {
    pub encoding: EncodingKey,
    pub jwk: serde_json::Value,
}

pub fn signing_key(kid: &str) -> anyhow::Result<SigningKey> {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let raw = kp.public_key_raw();
    // Uncompressed SEC1 point: 0x04 || X (32 bytes) || Y (32 bytes).
    if raw.len() != 65 || raw[0] != 4 {
        bail!("unexpected P-256 public key encoding");
    }
    let jwk = serde_json::json!({
        "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
        "x": URL_SAFE_NO_PAD.encode(&raw[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&raw[33..65]),
    });
    let encoding = EncodingKey::from_ec_der(&kp.serialize_der());
    Ok(SigningKey { encoding, jwk })
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn sign(key: &EncodingKey, kid: &str, claims: &serde_json::Value) -> anyhow::Result<String> {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.to_string());
    Ok(jsonwebtoken::encode(&header, claims, key)?)
}

/// End-user tokens: from the issuer reviews trusts, or forged (same issuer and kid, a key
/// nobody trusts).
pub struct UserTokens {
    user: SigningKey,
    rogue: EncodingKey,
}

impl UserTokens {
    pub fn new() -> anyhow::Result<UserTokens> {
        Ok(UserTokens {
            user: signing_key("demo-user")?,
            rogue: signing_key("demo-user")?.encoding,
        })
    }

    /// The public key RequestAuthentication is given.
    pub fn jwk(&self) -> &serde_json::Value {
        &self.user.jwk
    }

    /// A token for `sub`, signed by the trusted key or, if `forged`, by the rogue one.
    pub fn token(&self, sub: &str, forged: bool) -> anyhow::Result<String> {
        let key = if forged {
            &self.rogue
        } else {
            &self.user.encoding
        };
        sign(
            key,
            "demo-user",
            &serde_json::json!({
                "iss": USER_ISSUER, "sub": sub, "aud": ["bookinfo"],
                "iat": now_secs(), "exp": now_secs() + 3600, "groups": ["readers"],
            }),
        )
    }
}
