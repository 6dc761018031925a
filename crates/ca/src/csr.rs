//! PKCS#10 CSRs: signature check, requested URI SANs, and the public key to certify.
//!
//! Only the key and the URI SANs matter. Everything else a CSR may request (subject, key usage,
//! extra SANs, CA:TRUE) is ignored, because the CA decides the certificate's content from the
//! authenticated request, as Istio's CA does; the URI SANs are checked only so a mismatched
//! CSR is refused loudly instead of silently producing a certificate for another identity.

use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

use crate::certs;
use crate::error::CaError;

/// Smallest RSA modulus accepted, per current NIST guidance (and what Istio generates).
pub const MIN_RSA_BITS: usize = 2048;

pub(crate) struct ParsedCsr {
    pub public_key: rcgen::SubjectPublicKeyInfo,
    pub uri_sans: Vec<String>,
}

pub(crate) fn parse(pem_text: &str) -> Result<ParsedCsr, CaError> {
    let bad = |why: String| CaError::InvalidCsr(why);
    let blocks = pem::parse_many(pem_text).map_err(|e| bad(format!("not valid PEM: {e}")))?;
    let block = blocks
        .iter()
        .find(|b| b.tag() == "CERTIFICATE REQUEST" || b.tag() == "NEW CERTIFICATE REQUEST")
        .ok_or_else(|| bad("no CERTIFICATE REQUEST PEM block found".into()))?;
    let (_, csr) = X509CertificationRequest::from_der(block.contents())
        .map_err(|e| bad(format!("cannot parse: {e}")))?;

    let mut uri_sans = Vec::new();
    for ext in csr.requested_extensions().into_iter().flatten() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext {
            uri_sans.extend(san.general_names.iter().filter_map(|n| match n {
                GeneralName::URI(u) => Some(u.to_string()),
                _ => None,
            }));
        }
    }

    let spki = &csr.certification_request_info.subject_pki;
    let public_key = rcgen::SubjectPublicKeyInfo::from_der(spki.raw).map_err(|_| {
        bad("unsupported public key algorithm (expected ECDSA P-256/P-384 or RSA)".into())
    })?;
    let alg = rcgen::PublicKeyData::algorithm(&public_key);
    let ok_alg = alg == &rcgen::PKCS_ECDSA_P256_SHA256
        || alg == &rcgen::PKCS_ECDSA_P384_SHA384
        || alg == &rcgen::PKCS_RSA_SHA256
        || alg == &rcgen::PKCS_RSA_SHA384
        || alg == &rcgen::PKCS_RSA_SHA512;
    if !ok_alg {
        return Err(bad(
            "unsupported public key algorithm (expected ECDSA P-256/P-384 or RSA)".into(),
        ));
    }
    if crate::keys::describe(alg) == "RSA" {
        let bits = certs::key_bits(spki).unwrap_or(0);
        if bits < MIN_RSA_BITS {
            return Err(bad(format!(
                "RSA key of {bits} bits is too weak (minimum {MIN_RSA_BITS})"
            )));
        }
    }
    // Checked after the key: ring refuses to verify with keys it deems too weak, and "too
    // weak" is the message the requester needs, not "bad signature".
    csr.verify_signature()
        .map_err(|_| bad("signature does not verify with the CSR's own public key".into()))?;
    Ok(ParsedCsr {
        public_key,
        uri_sans,
    })
}
