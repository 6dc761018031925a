//! Inspecting a workload's CSR before anything is signed.
//!
//! The CA, not the CSR, decides the identity; but Istio's API contract requires the server to
//! check that the caller is entitled to every SAN the CSR asks for. Refusing a CSR that asks for
//! more than the caller's identity (instead of silently dropping the extra SANs) tells a
//! misconfigured workload why its certificate would not match what it expects.

use thiserror::Error;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

/// What a CSR asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsrRequest {
    pub uri_sans: Vec<String>,
    /// Every non-URI SAN, rendered for error messages (`DNS:foo`, `IP:...`).
    pub other_sans: Vec<String>,
}

#[derive(Debug, Error)]
pub enum CsrError {
    #[error("CSR is not PEM: {0}")]
    NotPem(String),
    #[error("CSR PEM block is {0:?}, expected \"CERTIFICATE REQUEST\"")]
    WrongPemType(String),
    #[error("CSR is not a valid PKCS#10 request: {0}")]
    Der(String),
}

/// Parses a PEM CSR and lists its SANs. The self-signature (proof of possession of the key) is
/// verified once, by `trustmesh_ca` when it signs: ECDSA verification is the most expensive
/// step of a request, and doing it twice would cost a third of the CA's throughput.
pub fn inspect(csr_pem: &str) -> Result<CsrRequest, CsrError> {
    let block = pem::parse(csr_pem.trim()).map_err(|e| CsrError::NotPem(e.to_string()))?;
    if block.tag() != "CERTIFICATE REQUEST" && block.tag() != "NEW CERTIFICATE REQUEST" {
        return Err(CsrError::WrongPemType(block.tag().to_string()));
    }
    let (rest, csr) = X509CertificationRequest::from_der(block.contents())
        .map_err(|e| CsrError::Der(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CsrError::Der("trailing bytes after the request".into()));
    }
    let mut out = CsrRequest {
        uri_sans: Vec::new(),
        other_sans: Vec::new(),
    };
    if let Some(exts) = csr.requested_extensions() {
        for ext in exts {
            if let ParsedExtension::SubjectAlternativeName(san) = ext {
                for name in &san.general_names {
                    match name {
                        GeneralName::URI(u) => out.uri_sans.push(u.to_string()),
                        GeneralName::DNSName(d) => out.other_sans.push(format!("DNS:{d}")),
                        GeneralName::IPAddress(ip) => out.other_sans.push(format!("IP:{ip:02x?}")),
                        GeneralName::RFC822Name(m) => out.other_sans.push(format!("email:{m}")),
                        other => out.other_sans.push(format!("{other:?}")),
                    }
                }
            }
        }
    }
    Ok(out)
}
