//! The trust domain's JWT authority: the key that signs JWT-SVIDs (SPIFFE JWT-SVID spec) and
//! its public half, published in the JWT bundle.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::{KeyPair, PublicKeyData, PKCS_ECDSA_P256_SHA256};
use serde_json::{json, Value};
use trustmesh_identity::SpiffeId;

use crate::bundle::USE_JWT_SVID;

pub struct JwtAuthority {
    key: EncodingKey,
    kid: String,
    jwk: Value,
}

impl JwtAuthority {
    /// Loads the ECDSA P-256 key at `path` (PKCS#8 PEM), creating it (mode 0600) on first use:
    /// the key must survive restarts, or every JWT-SVID in flight would stop validating.
    pub fn load_or_create(path: &Path) -> Result<JwtAuthority, String> {
        let key = match std::fs::read_to_string(path) {
            Ok(pem) => KeyPair::from_pem(&pem).map_err(|e| format!("{}: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key =
                    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
                write_private(path, key.serialize_pem().as_bytes())
                    .map_err(|e| format!("creating {}: {e}", path.display()))?;
                key
            }
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        JwtAuthority::from_key(&key).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn from_key(key: &KeyPair) -> Result<JwtAuthority, String> {
        if key.algorithm() != &PKCS_ECDSA_P256_SHA256 {
            return Err("the JWT authority key must be ECDSA P-256".into());
        }
        let raw = key.public_key_raw();
        // The key ID is derived from the public key, so it is stable across restarts and
        // distinct across keys without any bookkeeping.
        let digest = ring::digest::digest(&ring::digest::SHA256, &key.subject_public_key_info());
        let kid = URL_SAFE_NO_PAD.encode(&digest.as_ref()[..16]);
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "use": USE_JWT_SVID, "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(&raw[1..33]), "y": URL_SAFE_NO_PAD.encode(&raw[33..]),
        });
        Ok(JwtAuthority {
            key: EncodingKey::from_ec_der(&key.serialize_der()),
            kid,
            jwk,
        })
    }

    /// The public key as a JWK with `use: jwt-svid`, for bundles.
    pub fn jwk(&self) -> &Value {
        &self.jwk
    }

    /// The JWT bundle: a JWK Set holding this authority.
    pub fn jwks_json(&self) -> Vec<u8> {
        serde_json::to_vec(&json!({ "keys": [self.jwk] })).expect("JSON value serializes")
    }

    /// Signs a JWT-SVID for `id`: `sub` is the SPIFFE ID, `aud` the audiences, `exp` now + ttl.
    pub fn mint(
        &self,
        id: &SpiffeId,
        audiences: &[String],
        ttl: Duration,
    ) -> Result<(String, u64), String> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|e| e.to_string())?
            .as_secs();
        let exp = now + ttl.as_secs();
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        header.typ = Some("JWT".into());
        let claims = json!({ "sub": id.as_str(), "aud": audiences, "exp": exp, "iat": now });
        let token = jsonwebtoken::encode(&header, &claims, &self.key).map_err(|e| e.to_string())?;
        Ok((token, exp))
    }
}

fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)?;
    f.sync_all()
}
