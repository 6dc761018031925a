//! The SPIFFE bundle format (SPIFFE Trust Domain and Bundle spec, section 4): a JWK Set whose
//! X.509 authorities are keys with `"use": "x509-svid"` and the root certificate in `x5c`.
//!
//! This is the format federation peers exchange over a bundle endpoint, so it lives next to the
//! server that publishes it; the agent uses [`parse`] to consume a peer's bundle. Encoding is
//! pure: the endpoint decides the sequence number and refresh hint.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use rustls_pki_types::CertificateDer;
use serde_json::{json, Map, Value};
use thiserror::Error;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::public_key::PublicKey;

/// `use` value marking an X.509 authority in a SPIFFE bundle.
pub const USE_X509_SVID: &str = "x509-svid";
/// `use` value marking a JWT authority in a SPIFFE bundle.
pub const USE_JWT_SVID: &str = "jwt-svid";

const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";

#[derive(Debug, Error)]
pub enum BundleError {
    #[error("bundle is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("bundle is not a JWK Set: {0}")]
    Shape(String),
    #[error("key {index}: {reason}")]
    Key { index: usize, reason: String },
    #[error("root certificate cannot be encoded as a JWK: {0}")]
    Encode(String),
}

/// A parsed SPIFFE bundle: the X.509 roots plus the publisher's hints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpiffeBundle {
    pub x509_authorities: Vec<CertificateDer<'static>>,
    /// JWT authorities kept verbatim (JWK objects), so they can be re-served unchanged.
    pub jwt_authorities: Vec<Value>,
    pub sequence: Option<u64>,
    /// Seconds after which the consumer should poll the endpoint again.
    pub refresh_hint: Option<u64>,
}

/// Encodes `roots` (and JWT authorities, JWKs with `use: jwt-svid`) as a SPIFFE bundle
/// document. Each root becomes one JWK whose public key parameters are derived from the
/// certificate, as the spec requires (`kty` plus `crv`/`x`/`y` or `n`/`e`, and exactly one
/// certificate in `x5c`).
pub fn encode(
    roots: &[CertificateDer<'_>],
    jwt_authorities: &[Value],
    sequence: u64,
    refresh_hint_secs: u64,
) -> Result<String, BundleError> {
    let mut keys = Vec::with_capacity(roots.len());
    for root in roots {
        keys.push(root_jwk(root)?);
    }
    keys.extend(jwt_authorities.iter().cloned());
    let doc = json!({
        "keys": keys,
        "spiffe_sequence": sequence,
        "spiffe_refresh_hint": refresh_hint_secs,
    });
    Ok(serde_json::to_string_pretty(&doc)?)
}

fn root_jwk(root: &CertificateDer<'_>) -> Result<Value, BundleError> {
    let (_, cert) =
        X509Certificate::from_der(root).map_err(|e| BundleError::Encode(e.to_string()))?;
    let spki = cert.public_key();
    let mut jwk = Map::new();
    match spki.parsed() {
        Ok(PublicKey::EC(point)) => {
            let curve_oid = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string())
                .unwrap_or_default();
            let (crv, len) = match curve_oid.as_str() {
                OID_P256 => ("P-256", 32),
                OID_P384 => ("P-384", 48),
                other => return Err(BundleError::Encode(format!("unsupported EC curve {other}"))),
            };
            let data = point.data();
            if data.len() != 1 + 2 * len || data[0] != 0x04 {
                return Err(BundleError::Encode(
                    "EC key is not an uncompressed point".into(),
                ));
            }
            jwk.insert("kty".into(), "EC".into());
            jwk.insert("crv".into(), crv.into());
            jwk.insert("x".into(), URL_SAFE_NO_PAD.encode(&data[1..1 + len]).into());
            jwk.insert("y".into(), URL_SAFE_NO_PAD.encode(&data[1 + len..]).into());
        }
        Ok(PublicKey::RSA(rsa)) => {
            jwk.insert("kty".into(), "RSA".into());
            jwk.insert(
                "n".into(),
                URL_SAFE_NO_PAD.encode(strip_zeros(rsa.modulus)).into(),
            );
            jwk.insert(
                "e".into(),
                URL_SAFE_NO_PAD.encode(strip_zeros(rsa.exponent)).into(),
            );
        }
        Ok(_) => return Err(BundleError::Encode("unsupported public key type".into())),
        Err(e) => return Err(BundleError::Encode(e.to_string())),
    }
    jwk.insert("use".into(), USE_X509_SVID.into());
    jwk.insert("x5c".into(), json!([STANDARD.encode(root.as_ref())]));
    Ok(Value::Object(jwk))
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let first = b
        .iter()
        .position(|&x| x != 0)
        .unwrap_or(b.len().saturating_sub(1));
    &b[first..]
}

/// Parses a SPIFFE bundle document. Keys with an unknown `use` are skipped, as the spec asks of
/// consumers; a malformed `x509-svid` key is an error rather than silently dropped, because a
/// missing root would later surface as a confusing handshake failure.
pub fn parse(doc: &[u8]) -> Result<SpiffeBundle, BundleError> {
    let v: Value = serde_json::from_slice(doc)?;
    let obj = v
        .as_object()
        .ok_or_else(|| BundleError::Shape("top level is not an object".into()))?;
    let keys = match obj.get("keys") {
        Some(Value::Array(k)) => k.as_slice(),
        Some(_) => return Err(BundleError::Shape("\"keys\" is not an array".into())),
        None => &[],
    };
    let mut bundle = SpiffeBundle {
        x509_authorities: Vec::new(),
        jwt_authorities: Vec::new(),
        sequence: obj.get("spiffe_sequence").and_then(Value::as_u64),
        refresh_hint: obj.get("spiffe_refresh_hint").and_then(Value::as_u64),
    };
    for (index, key) in keys.iter().enumerate() {
        let err = |reason: &str| BundleError::Key {
            index,
            reason: reason.to_string(),
        };
        let key_obj = key.as_object().ok_or_else(|| err("not a JSON object"))?;
        match key_obj.get("use").and_then(Value::as_str) {
            Some(USE_X509_SVID) => {
                if key_obj.get("kty").and_then(Value::as_str).is_none() {
                    return Err(err("missing \"kty\""));
                }
                let x5c = match key_obj.get("x5c") {
                    Some(Value::Array(a)) => a,
                    _ => return Err(err("x509-svid key has no \"x5c\" array")),
                };
                if x5c.len() != 1 {
                    return Err(err("\"x5c\" must hold exactly one certificate"));
                }
                let b64 = x5c[0]
                    .as_str()
                    .ok_or_else(|| err("\"x5c\" entry is not a string"))?;
                let der = STANDARD
                    .decode(b64)
                    .map_err(|e| err(&format!("\"x5c\" entry is not base64: {e}")))?;
                X509Certificate::from_der(&der)
                    .map_err(|e| err(&format!("\"x5c\" entry is not a certificate: {e}")))?;
                bundle.x509_authorities.push(CertificateDer::from(der));
            }
            Some(USE_JWT_SVID) => bundle.jwt_authorities.push(key.clone()),
            _ => {}
        }
    }
    Ok(bundle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair};
    use trustmesh_ca::keys::{generate, KeyType};

    fn self_signed(key: &KeyPair) -> CertificateDer<'static> {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.self_signed(key).unwrap().der().clone()
    }

    #[test]
    fn ec_and_rsa_roots_round_trip_with_key_parameters() {
        let ec_key = generate(KeyType::EcdsaP256).unwrap();
        let rsa_key = generate(KeyType::Rsa2048).unwrap();
        let roots = vec![self_signed(&ec_key), self_signed(&rsa_key)];
        let jwt = json!({"kty": "EC", "use": "jwt-svid", "kid": "k1"});
        let doc = encode(&roots, std::slice::from_ref(&jwt), 42, 300).unwrap();
        let v: Value = serde_json::from_str(&doc).unwrap();
        assert_eq!(v["spiffe_sequence"], 42);
        assert_eq!(v["spiffe_refresh_hint"], 300);
        let ec = &v["keys"][0];
        assert_eq!(
            (ec["kty"].as_str(), ec["crv"].as_str(), ec["use"].as_str()),
            (Some("EC"), Some("P-256"), Some("x509-svid"))
        );
        let raw = ec_key.public_key_raw();
        assert_eq!(ec["x"], URL_SAFE_NO_PAD.encode(&raw[1..33]));
        assert_eq!(ec["y"], URL_SAFE_NO_PAD.encode(&raw[33..]));
        let rsa = &v["keys"][1];
        assert_eq!(rsa["kty"], "RSA");
        assert_eq!(rsa["e"], "AQAB");
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(rsa["n"].as_str().unwrap())
                .unwrap()
                .len(),
            256
        );

        let parsed = parse(doc.as_bytes()).unwrap();
        assert_eq!(parsed.x509_authorities, roots);
        assert_eq!(parsed.jwt_authorities, vec![jwt]);
        assert_eq!(
            (parsed.sequence, parsed.refresh_hint),
            (Some(42), Some(300))
        );
    }

    #[test]
    fn parse_skips_unknown_uses_and_keeps_jwt_authorities() {
        let doc = br#"{"keys": [{"kty": "EC", "use": "enc"}, {"kty": "EC", "use": "jwt-svid", "kid": "k"}]}"#;
        let b = parse(doc).unwrap();
        assert!(b.x509_authorities.is_empty());
        assert_eq!(b.jwt_authorities.len(), 1);
        assert_eq!(b.sequence, None);
    }

    #[test]
    fn parse_rejects_malformed_x509_authorities() {
        for (doc, why) in [
            (r#"{"keys": [{"kty": "EC", "use": "x509-svid"}]}"#, "x5c"),
            (
                r#"{"keys": [{"kty": "EC", "use": "x509-svid", "x5c": ["AA==", "AA=="]}]}"#,
                "exactly one",
            ),
            (
                r#"{"keys": [{"kty": "EC", "use": "x509-svid", "x5c": ["%%%"]}]}"#,
                "base64",
            ),
            (
                r#"{"keys": [{"kty": "EC", "use": "x509-svid", "x5c": ["AAAA"]}]}"#,
                "not a certificate",
            ),
            (
                r#"{"keys": [{"use": "x509-svid", "x5c": ["AAAA"]}]}"#,
                "kty",
            ),
            (r#"{"keys": {}}"#, "not an array"),
            (r#"[]"#, "not an object"),
        ] {
            let e = parse(doc.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(why), "{doc}: {e}");
        }
    }
}
