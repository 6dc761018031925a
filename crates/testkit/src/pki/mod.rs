//! A test PKI, made three ways. [`spec`] (rcgen, field by field) is for what a verifier must
//! accept or refuse and for the files a sidecar loads ([`write_pki`]); [`istio`] goes through
//! `trustmesh_ca`, the code that issues in production, and writes Istio's `cacerts` layout;
//! [`openssl`] makes certificates with a tool we did not write, so a test can tell "we agree
//! with ourselves" from "we interoperate".

pub mod istio;
pub mod openssl;
pub mod spec;

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use rcgen::{CertificateParams, KeyPair, SanType, PKCS_ECDSA_P256_SHA256};
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

pub use spec::{at, intermediate, leaf, now, root, Ca, CaSpec, LeafSpec, DAY, HOUR, NOW_SECS};

/// Seconds since the epoch by the wall clock.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A root CA for `td` valid around the wall clock (a month back, a year ahead).
pub fn live_root(td: &str) -> Ca {
    CaSpec::around(&format!("root {td}"), td, unix_now()).self_signed()
}

/// A workload SVID for `id` under `ca`, valid from an hour ago for a day: (certificate, key).
pub fn live_svid(ca: &Ca, id: &str) -> (CertificateDer<'static>, KeyPair) {
    LeafSpec::around(id, unix_now()).signed_with_key(ca)
}

/// Writes `root-cert.pem` (a root CA for cluster.local), and `cert-chain.pem` + `key.pem` (a
/// workload SVID for `id` signed by it) into `dir`, as an agent leaves them for a sidecar.
/// Configs name the bundle `cluster.local=root-cert.pem`.
pub fn write_pki(dir: &Path, id: &str) {
    write_pki_valid(dir, id, None);
}

/// [`write_pki`] with the leaf valid over `(not_before, not_after)` when given.
pub fn write_pki_valid(dir: &Path, id: &str, validity: Option<(OffsetDateTime, OffsetDateTime)>) {
    let root = live_root("cluster.local");
    let mut spec = LeafSpec::around(id, unix_now());
    if let Some((from, until)) = validity {
        spec.not_before = from.unix_timestamp();
        spec.not_after = until.unix_timestamp();
    }
    let (leaf, key) = spec.signed_with_key(&root);
    std::fs::write(dir.join("root-cert.pem"), root.pem()).unwrap();
    let chain = trustmesh_identity::pem::cert_to_pem(&leaf);
    std::fs::write(dir.join("cert-chain.pem"), chain).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
}

/// A PKCS#10 request signed by `key`, asking for these URI SANs (and nothing else).
pub fn csr(key: &KeyPair, uris: &[&str]) -> String {
    let mut params = CertificateParams::default();
    params.subject_alt_names = uris
        .iter()
        .map(|u| SanType::URI((*u).try_into().unwrap()))
        .collect();
    params.serialize_request(key).unwrap().pem().unwrap()
}

/// A fresh P-256 key and a CSR for `uri` made with it, as an agent sends its CA.
pub fn csr_for(uri: &str) -> (KeyPair, String) {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let csr = csr(&key, &[uri]);
    (key, csr)
}

/// Parses the first certificate of a DER buffer and hands it to `f`.
pub fn with_cert<R>(der: &[u8], f: impl FnOnce(&X509Certificate<'_>) -> R) -> R {
    let (_, cert) = X509Certificate::from_der(der).expect("valid certificate");
    f(&cert)
}

/// URI SANs of a certificate.
pub fn uri_sans(der: &[u8]) -> Vec<String> {
    let der = CertificateDer::from(der.to_vec());
    trustmesh_identity::inspect::CertInfo::from_der(&der)
        .expect("valid certificate")
        .uri_sans
}

/// Verifies `chain` (leaf first, without the root) as an X.509-SVID now, against the roots in
/// `roots_pem`, all taken as roots of trust domain `td`; panics when it does not verify.
pub fn verify_now(
    chain: &[CertificateDer<'static>],
    roots_pem: &[u8],
    td: &str,
) -> trustmesh_identity::VerifiedSvid {
    use trustmesh_identity::{pem::certs_from_pem, TrustBundleSet, TrustConfig, TrustDomain};
    let td = TrustDomain::parse(td).unwrap();
    let mut set = TrustBundleSet::new();
    for root in certs_from_pem(roots_pem).unwrap() {
        set.add_root(td.clone(), root).unwrap();
    }
    let now = rustls_pki_types::UnixTime::now();
    trustmesh_identity::verify_svid(chain, &TrustConfig::new(td, set), now)
        .expect("the chain verifies against the roots")
}
