//! Shared by the proxy crate's integration tests: a throwaway PKI on disk and free ports.

#![allow(dead_code)]

use std::net::TcpListener as StdListener;
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Writes `root-cert.pem` (a root CA for cluster.local), and `cert-chain.pem` + `key.pem` (a
/// workload SVID for `id` signed by it) into `dir`. Configs name the bundle
/// `cluster.local=root-cert.pem`.
pub fn write_pki(dir: &Path, id: &str) {
    write_pki_valid(dir, id, None);
}

/// [`write_pki`] with the leaf valid over `(not_before, not_after)` when given.
pub fn write_pki_valid(
    dir: &Path,
    id: &str,
    validity: Option<(time::OffsetDateTime, time::OffsetDateTime)>,
) {
    let root_key = KeyPair::generate().unwrap();
    let mut root = CertificateParams::new(Vec::<String>::new()).unwrap();
    root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    root.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    root.subject_alt_names = vec![SanType::URI("spiffe://cluster.local".try_into().unwrap())];
    let root_cert = root.self_signed(&root_key).unwrap();
    let issuer = Issuer::new(root, root_key);
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    leaf.subject_alt_names = vec![SanType::URI(id.try_into().unwrap())];
    if let Some((from, until)) = validity {
        leaf.not_before = from;
        leaf.not_after = until;
    }
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
    std::fs::write(dir.join("root-cert.pem"), root_cert.pem()).unwrap();
    std::fs::write(dir.join("cert-chain.pem"), leaf_cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), leaf_key.serialize_pem()).unwrap();
}

/// Reads one HTTP head up to and including the blank line, a byte at a time so nothing after it
/// is consumed; `None` if the peer closes first or the head grows past 16 KiB. Not bounded in
/// time: callers that need a deadline wrap it in a timeout.
pub async fn read_http_head(s: &mut tokio::net::TcpStream) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= 16_384 || s.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    Some(String::from_utf8_lossy(&head).to_string())
}
