//! The handful of certificate facts the rest of the crate needs, extracted once with
//! x509-parser so every module interprets extensions the same way.

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Key usage bits we reason about (RFC 5280 4.2.1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeyUsageBits {
    pub digital_signature: bool,
    pub key_cert_sign: bool,
    pub crl_sign: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct CertFacts {
    pub subject: String,
    pub not_before: i64,
    pub not_after: i64,
    pub is_ca: bool,
    /// basicConstraints pathLenConstraint (CA certificates only).
    pub path_len: Option<u32>,
    /// `None` when the certificate has no key usage extension.
    pub key_usage: Option<KeyUsageBits>,
    pub uri_sans: Vec<String>,
    pub serial_hex: String,
    /// `None` without an EKU extension; otherwise (serverAuth, clientAuth, anyExtendedKeyUsage,
    /// dotted OIDs of everything present).
    pub eku: Option<EkuFacts>,
}

#[derive(Debug, Clone)]
pub(crate) struct EkuFacts {
    pub server_auth: bool,
    pub client_auth: bool,
    pub any: bool,
    pub names: Vec<String>,
}

/// Parses a DER certificate; the error is a human-readable reason.
pub(crate) fn parse(der: &[u8]) -> Result<X509Certificate<'_>, String> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok((rest, _)) => Err(format!(
            "{} trailing bytes after the certificate",
            rest.len()
        )),
        Err(e) => Err(format!("not a valid X.509 certificate: {e}")),
    }
}

pub(crate) fn facts(der: &[u8]) -> Result<CertFacts, String> {
    let cert = parse(der)?;
    facts_of(&cert)
}

pub(crate) fn facts_of(cert: &X509Certificate<'_>) -> Result<CertFacts, String> {
    let bc = cert
        .basic_constraints()
        .map_err(|e| format!("bad basicConstraints extension: {e}"))?;
    let ku = cert
        .key_usage()
        .map_err(|e| format!("bad keyUsage extension: {e}"))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| format!("bad subjectAltName extension: {e}"))?;
    let eku = cert
        .extended_key_usage()
        .map_err(|e| format!("bad extendedKeyUsage extension: {e}"))?;
    let uri_sans = san
        .map(|s| {
            s.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(u) => Some(u.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(CertFacts {
        subject: cert.subject().to_string(),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        is_ca: bc.as_ref().is_some_and(|b| b.value.ca),
        path_len: bc.and_then(|b| b.value.path_len_constraint),
        key_usage: ku.map(|k| KeyUsageBits {
            digital_signature: k.value.digital_signature(),
            key_cert_sign: k.value.key_cert_sign(),
            crl_sign: k.value.crl_sign(),
        }),
        uri_sans,
        serial_hex: serial_hex(cert.raw_serial()),
        eku: eku.map(|e| {
            let e = e.value;
            EkuFacts {
                server_auth: e.server_auth,
                client_auth: e.client_auth,
                any: e.any,
                names: eku_names(e),
            }
        }),
    })
}

/// Lowercase hex without the DER sign byte, so it matches `openssl x509 -serial` (modulo case).
pub(crate) fn serial_hex(raw: &[u8]) -> String {
    let start = raw
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(raw.len().saturating_sub(1));
    raw[start..].iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn eku_names(e: &x509_parser::extensions::ExtendedKeyUsage<'_>) -> Vec<String> {
    let mut v = Vec::new();
    for (set, name) in [
        (e.any, "anyExtendedKeyUsage"),
        (e.server_auth, "serverAuth"),
        (e.client_auth, "clientAuth"),
        (e.code_signing, "codeSigning"),
        (e.email_protection, "emailProtection"),
        (e.time_stamping, "timeStamping"),
        (e.ocsp_signing, "OCSPSigning"),
    ] {
        if set {
            v.push(name.to_string());
        }
    }
    v.extend(e.other.iter().map(|o| o.to_id_string()));
    v
}

/// RFC 3339 rendering of a unix timestamp for messages; falls back to the raw number for values
/// outside the representable range rather than failing an error message.
pub(crate) fn rfc3339(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("unix time {secs}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_hex_strips_sign_byte_only() {
        assert_eq!(serial_hex(&[0x00, 0x8f, 0x01]), "8f01");
        assert_eq!(serial_hex(&[0x01, 0x00]), "0100");
        assert_eq!(serial_hex(&[0x00]), "00");
        assert_eq!(serial_hex(&[]), "");
    }

    #[test]
    fn rfc3339_formats_and_degrades() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_800_000_000), "2027-01-15T08:00:00Z");
        assert_eq!(rfc3339(i64::MAX), format!("unix time {}", i64::MAX));
    }
}
