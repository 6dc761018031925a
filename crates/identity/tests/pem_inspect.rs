//! PEM helpers and certificate inspection.

use std::process::Command;

use rcgen::{ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose};
use trustmesh_identity::inspect::CertInfo;
use trustmesh_identity::pem::{cert_to_pem, certs_from_pem, certs_to_pem, PemError};
use trustmesh_testkit::pki::spec::*;

#[test]
fn pem_round_trip_with_noise_and_other_blocks() {
    let r = root("a.example");
    let l = leaf(&r, "spiffe://a.example/w");
    let key = KeyPair::generate().unwrap().serialize_pem();
    let text = format!(
        "Bag Attributes: whatever\n{}\n{key}\nsome trailing comment\n{}",
        cert_to_pem(&l),
        cert_to_pem(&r.cert)
    );
    let certs = certs_from_pem(text.as_bytes()).unwrap();
    assert_eq!(certs, vec![l.clone(), r.cert.clone()]);

    let pem = certs_to_pem([&l, &r.cert]);
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
    assert!(!pem.contains('\r'));
    assert_eq!(certs_from_pem(pem.as_bytes()).unwrap(), vec![l, r.cert]);
}

#[test]
fn pem_errors() {
    match certs_from_pem(b"") {
        Err(e @ PemError::NoCertificates { .. }) => {
            assert!(e.to_string().contains("no PEM blocks"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    let key = KeyPair::generate().unwrap().serialize_pem();
    match certs_from_pem(key.as_bytes()) {
        Err(e @ PemError::NoCertificates { .. }) => {
            assert!(e.to_string().contains("PRIVATE KEY"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    // A CERTIFICATE block whose contents are not a certificate.
    let fake = "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n";
    assert!(matches!(
        certs_from_pem(fake.as_bytes()),
        Err(PemError::BadCertificate { index: 1, .. })
    ));
    // A good block followed by a truncated one: the truncated one is reported, not dropped.
    let r = root("a.example");
    let good = cert_to_pem(&r.cert);
    let truncated: String = good.lines().take(4).map(|l| format!("{l}\n")).collect();
    let text = format!("{good}{truncated}");
    match certs_from_pem(text.as_bytes()) {
        Err(PemError::BrokenBlock { line }) => assert_eq!(line, good.lines().count() + 1),
        other => panic!("{other:?}"),
    }
}

#[test]
fn inspect_ecdsa_leaf() {
    let r = root("a.example");
    let mut spec = LeafSpec::new("spiffe://a.example/ns/default/sa/web");
    spec.dns = vec!["web.default.svc".into()];
    spec.serial = Some(0xbeef);
    let l = spec.signed_by(&r);
    let info = CertInfo::from_der(&l).unwrap();
    assert_eq!(
        info.spiffe_id.as_ref().map(|i| i.as_str()),
        Some("spiffe://a.example/ns/default/sa/web")
    );
    assert_eq!(info.uri_sans, ["spiffe://a.example/ns/default/sa/web"]);
    assert_eq!(info.dns_sans, ["web.default.svc"]);
    assert_eq!(info.serial_hex, "beef");
    assert_eq!(info.key_type, "ECDSA P-256");
    assert_eq!(info.signature_algorithm, "ecdsa-with-SHA256");
    assert!(!info.is_ca);
    assert!(!info.self_signed);
    assert_eq!(info.key_usages, ["digitalSignature", "keyEncipherment"]);
    assert_eq!(info.ext_key_usages, ["serverAuth", "clientAuth"]);
    assert_eq!(info.not_before_unix, NOW_SECS - HOUR);
    assert_eq!(info.not_after_unix, NOW_SECS + DAY);
    assert_eq!(info.not_before, "2027-01-15T07:00:00Z");
    assert_eq!(info.issuer, "CN=root a.example, O=trustmesh tests");
    assert_eq!(info.sha256_fingerprint.len(), 32 * 3 - 1);

    let json = serde_json::to_value(&info).unwrap();
    assert_eq!(json["spiffe_id"], "spiffe://a.example/ns/default/sa/web");
    assert_eq!(json["key_type"], "ECDSA P-256");
}

#[test]
fn inspect_root_and_ed25519() {
    let mut spec = CaSpec::new("root x", "x.example");
    spec.path_len = Some(1);
    let r = spec.self_signed();
    let info = CertInfo::from_der(&r.cert).unwrap();
    assert!(info.is_ca && info.self_signed);
    assert_eq!(info.path_len_constraint, Some(1));
    assert_eq!(
        info.key_usages,
        ["digitalSignature", "keyCertSign", "cRLSign"]
    );
    assert!(info.ext_key_usages.is_empty());

    let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let mut p = rcgen::CertificateParams::new(vec!["ed.example".to_string()]).unwrap();
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::Other(vec![1, 2, 3, 4])];
    let cert = p.self_signed(&key).unwrap();
    let info = CertInfo::from_der(cert.der()).unwrap();
    assert_eq!(info.key_type, "Ed25519");
    assert_eq!(info.signature_algorithm, "Ed25519");
    assert_eq!(info.spiffe_id, None);
    assert_eq!(info.ext_key_usages, ["1.2.3.4"]);
}

#[test]
fn inspect_rsa_from_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let cert_path = dir.path().join("rsa.pem");
    let status = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=rsa test",
            "-addext",
            "subjectAltName=URI:spiffe://r.example/w,IP:10.0.0.1",
        ])
        .arg("-keyout")
        .arg(dir.path().join("key.pem"))
        .arg("-out")
        .arg(&cert_path)
        .output();
    let out = match status {
        Ok(o) => o,
        Err(e) => panic!("openssl is required for this interop test: {e}"),
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let certs = certs_from_pem(&std::fs::read(&cert_path).unwrap()).unwrap();
    let info = CertInfo::from_der(&certs[0]).unwrap();
    assert_eq!(info.key_type, "RSA 2048");
    assert_eq!(info.signature_algorithm, "sha256WithRSAEncryption");
    assert_eq!(info.ip_sans, ["10.0.0.1"]);
    assert_eq!(info.spiffe_id.unwrap().as_str(), "spiffe://r.example/w");

    // Our serial and fingerprint agree with openssl's.
    let out = Command::new("openssl")
        .args([
            "x509",
            "-noout",
            "-serial",
            "-fingerprint",
            "-sha256",
            "-in",
        ])
        .arg(&cert_path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(
        text.contains(&format!("serial={}", info.serial_hex)),
        "{text} vs {}",
        info.serial_hex
    );
    assert!(
        text.contains(&info.sha256_fingerprint),
        "{text} vs {}",
        info.sha256_fingerprint
    );
}

#[test]
fn inspect_rejects_garbage() {
    let err = CertInfo::from_der(&b"\x30\x00".to_vec().into()).unwrap_err();
    assert!(
        err.to_string().contains("cannot inspect certificate"),
        "{err}"
    );
}
