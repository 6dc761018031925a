//! Human- and machine-readable facts about one certificate, for `trustmesh cert inspect` and for
//! debugging mTLS failures (which identity, which key, valid when, signed by whom).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rustls_pki_types::CertificateDer;
use serde::Serialize;
use thiserror::Error;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::X509Certificate;
use x509_parser::x509::AlgorithmIdentifier;

use crate::x509;
use crate::SpiffeId;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("cannot inspect certificate: {reason}")]
pub struct InspectError {
    pub reason: String,
}

/// Everything `cert inspect` shows. Field names are the JSON output's keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertInfo {
    pub subject: String,
    pub issuer: String,
    pub self_signed: bool,
    /// Lowercase hex, no sign byte.
    pub serial_hex: String,
    /// RFC 3339, UTC.
    pub not_before: String,
    pub not_after: String,
    pub not_before_unix: i64,
    pub not_after_unix: i64,
    /// Set when the certificate has exactly one URI SAN and it is a valid SPIFFE ID — i.e. what
    /// an SVID verifier would take as its identity.
    pub spiffe_id: Option<SpiffeId>,
    pub uri_sans: Vec<String>,
    pub dns_sans: Vec<String>,
    pub ip_sans: Vec<String>,
    pub is_ca: bool,
    pub path_len_constraint: Option<u32>,
    /// e.g. "ECDSA P-256", "RSA 2048", "Ed25519".
    pub key_type: String,
    pub signature_algorithm: String,
    pub key_usages: Vec<String>,
    pub ext_key_usages: Vec<String>,
    /// SHA-256 of the DER encoding, lowercase hex with colons (as `openssl x509 -fingerprint`).
    pub sha256_fingerprint: String,
}

impl CertInfo {
    pub fn from_der(der: &CertificateDer<'_>) -> Result<CertInfo, InspectError> {
        let err = |reason: String| InspectError { reason };
        let cert = x509::parse(der).map_err(err)?;
        let facts = x509::facts_of(&cert).map_err(err)?;
        let spiffe_id = match facts.uri_sans.as_slice() {
            [one] => SpiffeId::parse(one).ok(),
            _ => None,
        };
        let (mut dns_sans, mut ip_sans) = (Vec::new(), Vec::new());
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(d) => dns_sans.push(d.to_string()),
                    GeneralName::IPAddress(b) => ip_sans.push(ip_string(b)),
                    _ => {}
                }
            }
        }
        let path_len_constraint = cert
            .basic_constraints()
            .ok()
            .flatten()
            .and_then(|b| b.value.path_len_constraint);
        let key_usages = match cert.key_usage() {
            Ok(Some(ku)) => key_usage_names(ku.value.flags),
            _ => Vec::new(),
        };
        let ext_key_usages = facts.eku.map(|e| e.names).unwrap_or_default();
        let subject = facts.subject;
        let issuer = cert.issuer().to_string();
        Ok(CertInfo {
            self_signed: subject == issuer,
            subject,
            issuer,
            serial_hex: facts.serial_hex,
            not_before: x509::rfc3339(facts.not_before),
            not_after: x509::rfc3339(facts.not_after),
            not_before_unix: facts.not_before,
            not_after_unix: facts.not_after,
            spiffe_id,
            uri_sans: facts.uri_sans,
            dns_sans,
            ip_sans,
            is_ca: facts.is_ca,
            path_len_constraint,
            key_type: key_type(&cert),
            signature_algorithm: signature_algorithm(&cert.signature_algorithm),
            key_usages,
            ext_key_usages,
            sha256_fingerprint: fingerprint(der),
        })
    }
}

fn ip_string(b: &[u8]) -> String {
    match b.len() {
        4 => IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3])).to_string(),
        16 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(b);
            IpAddr::V6(Ipv6Addr::from(octets)).to_string()
        }
        _ => format!("invalid IP SAN ({} bytes)", b.len()),
    }
}

/// Names in RFC 5280 bit order.
fn key_usage_names(flags: u16) -> Vec<String> {
    const NAMES: [&str; 9] = [
        "digitalSignature",
        "nonRepudiation",
        "keyEncipherment",
        "dataEncipherment",
        "keyAgreement",
        "keyCertSign",
        "cRLSign",
        "encipherOnly",
        "decipherOnly",
    ];
    NAMES
        .iter()
        .enumerate()
        .filter(|(bit, _)| flags & (1 << bit) != 0)
        .map(|(_, n)| n.to_string())
        .collect()
}

fn key_type(cert: &X509Certificate<'_>) -> String {
    let spki = cert.public_key();
    match spki.algorithm.algorithm.to_id_string().as_str() {
        "1.2.840.10045.2.1" => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string());
            match curve.as_deref() {
                Some("1.2.840.10045.3.1.7") => "ECDSA P-256".into(),
                Some("1.3.132.0.34") => "ECDSA P-384".into(),
                Some("1.3.132.0.35") => "ECDSA P-521".into(),
                Some(other) => format!("ECDSA (curve {other})"),
                None => "ECDSA (unknown curve)".into(),
            }
        }
        "1.2.840.113549.1.1.1" => match spki.parsed() {
            Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => {
                format!("RSA {}", bit_len(rsa.modulus))
            }
            _ => "RSA (unparsable key)".into(),
        },
        "1.2.840.113549.1.1.10" => "RSA-PSS".into(),
        "1.3.101.112" => "Ed25519".into(),
        "1.3.101.113" => "Ed448".into(),
        other => format!("unknown ({other})"),
    }
}

/// Bit length of a big-endian unsigned integer (x509-parser's own `key_size` miscounts moduli
/// without a leading zero byte).
fn bit_len(n: &[u8]) -> usize {
    let start = n.iter().position(|&b| b != 0).unwrap_or(n.len());
    match n.get(start) {
        Some(&first) => (n.len() - start) * 8 - first.leading_zeros() as usize,
        None => 0,
    }
}

fn signature_algorithm(alg: &AlgorithmIdentifier<'_>) -> String {
    let oid = alg.algorithm.to_id_string();
    let name = match oid.as_str() {
        "1.2.840.10045.4.3.2" => "ecdsa-with-SHA256",
        "1.2.840.10045.4.3.3" => "ecdsa-with-SHA384",
        "1.2.840.10045.4.3.4" => "ecdsa-with-SHA512",
        "1.2.840.113549.1.1.11" => "sha256WithRSAEncryption",
        "1.2.840.113549.1.1.12" => "sha384WithRSAEncryption",
        "1.2.840.113549.1.1.13" => "sha512WithRSAEncryption",
        "1.2.840.113549.1.1.10" => "RSASSA-PSS",
        "1.2.840.113549.1.1.5" => "sha1WithRSAEncryption",
        "1.3.101.112" => "Ed25519",
        _ => return oid,
    };
    name.to_string()
}

fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_len_counts_significant_bits() {
        assert_eq!(bit_len(&[0x00, 0x80, 0x00]), 16);
        assert_eq!(bit_len(&[0x7f, 0xff]), 15);
        assert_eq!(bit_len(&[0x01]), 1);
        assert_eq!(bit_len(&[0x00, 0x00]), 0);
        let mut modulus = vec![0x00, 0xc1];
        modulus.extend([0u8; 255]);
        assert_eq!(bit_len(&modulus), 2048);
    }

    #[test]
    fn key_usage_bits_in_rfc_order() {
        assert_eq!(key_usage_names(0b1), ["digitalSignature"]);
        assert_eq!(key_usage_names(0b110_0000), ["keyCertSign", "cRLSign"]);
        assert!(key_usage_names(0).is_empty());
    }

    #[test]
    fn ip_san_rendering() {
        assert_eq!(ip_string(&[127, 0, 0, 1]), "127.0.0.1");
        let mut v6 = [0u8; 16];
        v6[15] = 1;
        assert_eq!(ip_string(&v6), "::1");
        assert_eq!(ip_string(&[1, 2, 3]), "invalid IP SAN (3 bytes)");
    }
}
