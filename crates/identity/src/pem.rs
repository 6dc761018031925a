//! PEM <-> DER for certificates.
//!
//! Certificate files in a mesh come from many tools (Istio's `cacerts` secret, cert-manager,
//! openssl), so parsing is lenient about surrounding text and non-certificate blocks but strict
//! about the certificates themselves: a block that claims to be a certificate and is not one is an
//! error rather than something to skip, because silently dropping a root is a trust outage.

use rustls_pki_types::CertificateDer;
use thiserror::Error;

const CERT_TAG: &str = "CERTIFICATE";

/// Why PEM input did not yield certificates.
#[derive(Debug, Error)]
pub enum PemError {
    #[error("malformed PEM: {0}")]
    Malformed(#[from] pem::PemError),
    #[error("malformed PEM: block starting at line {line} has no matching END line or bad base64")]
    BrokenBlock { line: usize },
    #[error("no CERTIFICATE PEM block found{}", found_hint(.found))]
    NoCertificates { found: Vec<String> },
    #[error("CERTIFICATE block #{index} (1-based) is not a valid X.509 certificate: {reason}")]
    BadCertificate { index: usize, reason: String },
}

fn found_hint(found: &[String]) -> String {
    if found.is_empty() {
        " (the input contains no PEM blocks at all)".to_string()
    } else {
        format!(" (found only: {})", found.join(", "))
    }
}

/// Every CERTIFICATE block in `input`, in order. Other block types (keys, parameters) are skipped;
/// it is an error if there are no certificates or if any certificate is not valid DER X.509.
pub fn certs_from_pem(input: &[u8]) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let blocks = pem::parse_many(input)?;
    // The PEM parser skips over text it cannot frame, which would make a truncated block vanish
    // without a trace; count BEGIN lines so that case is reported.
    let begins: Vec<usize> = input
        .split(|&b| b == b'\n')
        .enumerate()
        .filter(|(_, l)| l.trim_ascii_start().starts_with(b"-----BEGIN "))
        .map(|(i, _)| i + 1)
        .collect();
    if begins.len() > blocks.len() {
        let line = first_broken_block(input, &begins).unwrap_or(begins[blocks.len()]);
        return Err(PemError::BrokenBlock { line });
    }
    let mut certs = Vec::new();
    let mut others = Vec::new();
    for block in blocks {
        if block.tag() == CERT_TAG {
            let der = block.into_contents();
            crate::x509::parse(&der).map_err(|reason| PemError::BadCertificate {
                index: certs.len() + 1,
                reason,
            })?;
            certs.push(CertificateDer::from(der));
        } else {
            others.push(block.tag().to_string());
        }
    }
    if certs.is_empty() {
        return Err(PemError::NoCertificates { found: others });
    }
    Ok(certs)
}

fn first_broken_block(input: &[u8], begins: &[usize]) -> Option<usize> {
    let lines: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
    begins.iter().enumerate().find_map(|(i, &line)| {
        // The block's text runs from its BEGIN line up to the next BEGIN line.
        let end = begins.get(i + 1).map_or(lines.len(), |&next| next - 1);
        let segment = lines[line - 1..end].join(&b'\n');
        pem::parse(&segment).is_err().then_some(line)
    })
}

/// One certificate as a PEM block with LF line endings (what Istio and openssl write).
pub fn cert_to_pem(cert: &CertificateDer<'_>) -> String {
    let block = pem::Pem::new(CERT_TAG, cert.as_ref().to_vec());
    pem::encode_config(
        &block,
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// Several certificates concatenated, e.g. a `cert-chain.pem` (leaf first).
pub fn certs_to_pem<'a>(certs: impl IntoIterator<Item = &'a CertificateDer<'a>>) -> String {
    certs.into_iter().map(cert_to_pem).collect()
}
