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

/// A keep-alive HTTP/1.1 app that answers every request `200 ok`.
pub async fn ok_backend() -> u16 {
    use tokio::io::AsyncWriteExt;
    let ln = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = ln.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = ln.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                while read_http_head(&mut s).await.is_some() {
                    let r = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                    if s.write_all(r).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// One GET on a fresh connection; the status code (0 when no answer came within 5 s).
pub async fn get_status(port: u16, path: &str) -> u16 {
    use tokio::io::AsyncWriteExt;
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: httpbin\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let head = read_http_head(&mut s).await?;
        head.split_whitespace().nth(1)?.parse().ok()
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), fut)
        .await
        .ok()
        .flatten()
        .unwrap_or(0)
}

/// Writes a test PKI for `foo/<sa>`, an empty `policies` folder and `proxy.yaml` with the given
/// inbound listeners (`port`, `targetPort`, `protocol`) and `extra` top-level lines; returns the
/// config's path.
pub fn write_proxy_config(
    dir: &Path,
    sa: &str,
    inbound: &[(u16, u16, &str)],
    extra: &str,
) -> std::path::PathBuf {
    if !dir.join("cert-chain.pem").exists() {
        write_pki(dir, &format!("spiffe://cluster.local/ns/foo/sa/{sa}"));
    }
    std::fs::create_dir_all(dir.join("policies")).unwrap();
    let listeners: String = inbound
        .iter()
        .map(|(port, target, proto)| {
            format!("- {{ port: {port}, targetPort: {target}, protocol: {proto} }}\n")
        })
        .collect();
    let cfg = dir.join("proxy.yaml");
    std::fs::write(
        &cfg,
        format!(
            "workload: {{ namespace: foo, serviceAccount: {sa} }}\n\
             certs: {{ key: key.pem, certChain: cert-chain.pem }}\n\
             trustBundles: [ \"cluster.local=root-cert.pem\" ]\n\
             mesh: {{ trustDomain: cluster.local }}\npolicyDir: policies\n\
             inbound:\n{listeners}{extra}"
        ),
    )
    .unwrap();
    cfg
}
