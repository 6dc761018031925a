//! Certificate reading for the CA: PEM bundles in, the handful of facts the CA checks out.
//!
//! The facts are copied out of x509-parser's borrowed view into an owned struct so the CA can
//! keep them next to the DER without self-referential lifetimes.

use std::path::Path;

use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;

use crate::error::CaError;

/// What the CA needs to know about one certificate.
#[derive(Debug, Clone)]
pub(crate) struct CertFacts {
    pub subject_raw: Vec<u8>,
    pub issuer_raw: Vec<u8>,
    pub subject: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// `basicConstraints CA:TRUE`.
    pub is_ca: bool,
    pub path_len: Option<u32>,
    /// `None` when the keyUsage extension is absent (then any usage is allowed).
    pub key_cert_sign: Option<bool>,
    /// The subjectPublicKey BIT STRING contents (raw EC point or RSAPublicKey DER).
    pub public_key: Vec<u8>,
    pub uri_sans: Vec<String>,
}

impl CertFacts {
    pub fn self_issued(&self) -> bool {
        self.subject_raw == self.issuer_raw
    }
}

/// Parses DER into facts; the error is a reason without the file name.
pub(crate) fn facts(der: &[u8]) -> Result<CertFacts, String> {
    let (rest, cert) =
        X509Certificate::from_der(der).map_err(|e| format!("bad certificate: {e}"))?;
    if !rest.is_empty() {
        return Err("trailing bytes after certificate".into());
    }
    let bc = cert
        .basic_constraints()
        .map_err(|e| format!("bad basicConstraints: {e}"))?;
    let ku = cert.key_usage().map_err(|e| format!("bad keyUsage: {e}"))?;
    let uri_sans = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::URI(u) => Some(u.to_string()),
                _ => None,
            })
            .collect(),
        Ok(None) => Vec::new(),
        Err(e) => return Err(format!("bad subjectAltName: {e}")),
    };
    let time = |t: &x509_parser::time::ASN1Time| {
        OffsetDateTime::from_unix_timestamp(t.timestamp()).map_err(|e| e.to_string())
    };
    Ok(CertFacts {
        subject_raw: cert.subject().as_raw().to_vec(),
        issuer_raw: cert.issuer().as_raw().to_vec(),
        subject: cert.subject().to_string(),
        not_before: time(&cert.validity().not_before)?,
        not_after: time(&cert.validity().not_after)?,
        is_ca: bc.as_ref().is_some_and(|b| b.value.ca),
        path_len: bc.and_then(|b| b.value.path_len_constraint),
        key_cert_sign: ku.map(|k| k.value.key_cert_sign()),
        public_key: cert.public_key().subject_public_key.data.to_vec(),
        uri_sans,
    })
}

/// True when `child`'s signature verifies under `issuer`'s public key.
pub(crate) fn signed_by(child: &[u8], issuer: &[u8]) -> bool {
    let (Ok((_, c)), Ok((_, i))) = (
        X509Certificate::from_der(child),
        X509Certificate::from_der(issuer),
    ) else {
        return false;
    };
    c.verify_signature(Some(i.public_key())).is_ok()
}

/// All certificates of a PEM file, in order (identity's parser: strict about each certificate,
/// and it reports a truncated block instead of silently skipping it).
pub(crate) fn read_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, CaError> {
    let bytes = std::fs::read(path).map_err(|e| CaError::io(path, e))?;
    trustmesh_identity::pem::certs_from_pem(&bytes)
        .map_err(|e| CaError::malformed(path, e.to_string()))
}

/// PEM text for certificates in the given order, blocks back to back with LF line endings,
/// as openssl and Istio write chains.
pub(crate) fn to_pem(certs: &[CertificateDer<'_>]) -> String {
    trustmesh_identity::pem::certs_to_pem(certs)
}

/// Bits of an RSA modulus / EC field from a SubjectPublicKeyInfo, for minimum-strength checks.
pub(crate) fn key_bits(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> Option<usize> {
    match spki.parsed().ok()? {
        PublicKey::RSA(rsa) => {
            let m = rsa.modulus;
            let first = m.iter().position(|b| *b != 0)?;
            Some((m.len() - first) * 8 - m[first].leading_zeros() as usize)
        }
        other => Some(other.key_size()),
    }
}

/// RFC 3339 in UTC, the format used in every message and JSON field of this crate.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}
