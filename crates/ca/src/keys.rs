//! Private keys: generation, loading from any PEM encoding openssl produces, PKCS#8 output.
//!
//! Everything is normalised to a ring-backed [`rcgen::KeyPair`] (PKCS#8 inside) so the rest of
//! the crate never cares how a key was stored on disk.

use std::fmt;
use std::str::FromStr;

use rcgen::{KeyPair, SignatureAlgorithm};
use rustls_pki_types::PrivatePkcs8KeyDer;

use crate::der;
use crate::error::CaError;

/// Key algorithm for keys this crate generates. ECDSA P-256 is the default, as for Istio
/// workload certificates (`ECC_SIGNATURE_ALGORITHM`-style deployments) and because it is far
/// cheaper to generate and sign with than RSA; RSA 2048 is there for peers that need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyType {
    #[default]
    EcdsaP256,
    Rsa2048,
}

impl KeyType {
    /// The CLI spelling (`ecdsa-p256`, `rsa2048`).
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::EcdsaP256 => "ecdsa-p256",
            KeyType::Rsa2048 => "rsa2048",
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "ecdsa-p256" | "ec-p256" | "p256" => Ok(KeyType::EcdsaP256),
            "rsa2048" | "rsa-2048" | "rsa" => Ok(KeyType::Rsa2048),
            _ => Err(format!(
                "unknown key type {s:?}: expected ecdsa-p256 or rsa2048"
            )),
        }
    }
}

/// Generates a fresh key pair. RSA goes through the `rsa` crate because ring cannot generate
/// RSA keys; the result is handed to ring for all signing.
pub fn generate(key_type: KeyType) -> Result<KeyPair, CaError> {
    match key_type {
        KeyType::EcdsaP256 => Ok(KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?),
        KeyType::Rsa2048 => {
            use rsa::pkcs8::EncodePrivateKey;
            let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048)
                .map_err(|e| CaError::Crypto(format!("RSA key generation: {e}")))?;
            let der = key
                .to_pkcs8_der()
                .map_err(|e| CaError::Crypto(format!("RSA key encoding: {e}")))?;
            Ok(KeyPair::from_pkcs8_der_and_sign_algo(
                &PrivatePkcs8KeyDer::from(der.as_bytes()),
                &rcgen::PKCS_RSA_SHA256,
            )?)
        }
    }
}

/// The [`KeyType`] a key is, when it is one this crate generates (RSA of any size counts as
/// RSA: a key is judged by its algorithm, the CA checks the size of the keys it certifies).
pub fn key_type_of(key: &KeyPair) -> Option<KeyType> {
    match describe(key.algorithm()) {
        "ECDSA P-256" => Some(KeyType::EcdsaP256),
        "RSA" => Some(KeyType::Rsa2048),
        _ => None,
    }
}

/// PKCS#8 PEM of a key (the encoding Istio's own CA writes with `pkcs8=true`, and what every
/// TLS stack reads).
pub fn to_pkcs8_pem(key: &KeyPair) -> String {
    key.serialize_pem()
}

/// Human name of a key's algorithm, e.g. `ECDSA P-256`, `RSA`.
pub fn describe(alg: &SignatureAlgorithm) -> &'static str {
    if alg == &rcgen::PKCS_ECDSA_P256_SHA256 {
        "ECDSA P-256"
    } else if alg == &rcgen::PKCS_ECDSA_P384_SHA384 {
        "ECDSA P-384"
    } else if alg == &rcgen::PKCS_ED25519 {
        "Ed25519"
    } else {
        "RSA"
    }
}

// Object identifiers, DER-encoded (tag + length + value).
const OID_EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
const OID_RSA_ENCRYPTION: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
];

/// Parses a private key from PEM text: PKCS#8 (`PRIVATE KEY`), PKCS#1 (`RSA PRIVATE KEY`) or
/// SEC1 (`EC PRIVATE KEY`). Other PEM blocks before the key (openssl's `EC PARAMETERS`) are
/// skipped. The error is a reason without a file name; callers add the path.
pub fn from_pem(text: &str) -> Result<KeyPair, String> {
    let blocks = pem::parse_many(text).map_err(|e| format!("not valid PEM: {e}"))?;
    let block = blocks
        .iter()
        .find(|b| b.tag().ends_with("PRIVATE KEY"))
        .ok_or_else(|| "no PRIVATE KEY PEM block found".to_string())?;
    let pkcs8 = match block.tag() {
        "PRIVATE KEY" => block.contents().to_vec(),
        "RSA PRIVATE KEY" => pkcs1_to_pkcs8(block.contents()),
        "EC PRIVATE KEY" => sec1_to_pkcs8(block.contents())?,
        "ENCRYPTED PRIVATE KEY" => {
            return Err("key is encrypted; decrypt it first (openssl pkey -in KEY -out KEY)".into())
        }
        other => return Err(format!("unsupported key PEM block {other:?}")),
    };
    KeyPair::try_from(&PrivatePkcs8KeyDer::from(pkcs8.as_slice())).map_err(|_| {
        "unsupported or corrupt private key (expected ECDSA P-256/P-384 or RSA)".to_string()
    })
}

/// PKCS#8 `PrivateKeyInfo` around an RSA PKCS#1 key: the algorithm is fixed.
fn pkcs1_to_pkcs8(pkcs1: &[u8]) -> Vec<u8> {
    let alg = der::sequence(&[OID_RSA_ENCRYPTION, &[der::NULL, 0x00]]);
    der::sequence(&[
        &der::tlv(der::INTEGER, &[0]),
        &alg,
        &der::tlv(der::OCTET_STRING, pkcs1),
    ])
}

/// PKCS#8 around a SEC1 `ECPrivateKey`. The curve comes from the key's own `parameters`
/// field, or from the private scalar's length when openssl omitted them.
fn sec1_to_pkcs8(sec1: &[u8]) -> Result<Vec<u8>, String> {
    let bad = || "corrupt EC PRIVATE KEY".to_string();
    let (tag, body, _) = der::read_tlv(sec1).ok_or_else(bad)?;
    if tag != der::SEQUENCE {
        return Err(bad());
    }
    let (_, _version, rest) = der::read_tlv(body).ok_or_else(bad)?;
    let (tag, scalar, mut rest) = der::read_tlv(rest).ok_or_else(bad)?;
    if tag != der::OCTET_STRING {
        return Err(bad());
    }
    let mut curve: Option<&[u8]> = None;
    while let Some((tag, content, next)) = der::read_tlv(rest) {
        if tag == der::CONTEXT_0 {
            let (oid_tag, _, _) = der::read_tlv(content).ok_or_else(bad)?;
            if oid_tag != der::OID {
                return Err(bad());
            }
            curve = Some(content);
        }
        rest = next;
    }
    let curve = match curve {
        Some(oid) if oid == OID_P256 || oid == OID_P384 => oid,
        Some(_) => return Err("unsupported EC curve (expected P-256 or P-384)".into()),
        None if scalar.len() == 32 => OID_P256,
        None if scalar.len() == 48 => OID_P384,
        None => return Err("EC key without curve parameters".into()),
    };
    let alg = der::sequence(&[OID_EC_PUBLIC_KEY, curve]);
    Ok(der::sequence(&[
        &der::tlv(der::INTEGER, &[0]),
        &alg,
        &der::tlv(der::OCTET_STRING, sec1),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_type_parses_cli_spellings() {
        assert_eq!("ecdsa-p256".parse::<KeyType>().unwrap(), KeyType::EcdsaP256);
        assert_eq!("RSA2048".parse::<KeyType>().unwrap(), KeyType::Rsa2048);
        let err = "dsa".parse::<KeyType>().unwrap_err();
        assert!(err.contains("ecdsa-p256 or rsa2048"), "{err}");
    }

    #[test]
    fn generated_p256_round_trips_through_pem() {
        let key = generate(KeyType::EcdsaP256).unwrap();
        let pem = to_pkcs8_pem(&key);
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let back = from_pem(&pem).unwrap();
        assert_eq!(back.public_key_raw(), key.public_key_raw());
        assert_eq!(describe(back.algorithm()), "ECDSA P-256");
    }

    #[test]
    fn rejects_non_key_pem_and_garbage() {
        let err =
            from_pem("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").unwrap_err();
        assert!(err.contains("no PRIVATE KEY"), "{err}");
        let err = from_pem("-----BEGIN PRIVATE KEY-----\nAAAAAAAA\n-----END PRIVATE KEY-----\n")
            .unwrap_err();
        assert!(err.contains("unsupported or corrupt"), "{err}");
        let err = from_pem("-----BEGIN EC PRIVATE KEY-----\nMAA=\n-----END EC PRIVATE KEY-----\n")
            .unwrap_err();
        assert!(err.contains("EC PRIVATE KEY"), "{err}");
    }
}
