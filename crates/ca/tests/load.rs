//! Loading and writing Istio `cacerts` directories, including ones made by openssl, and
//! cert-manager's `kubernetes.io/tls` layout (`tls.crt`, `tls.key`, `ca.crt`) as istiod reads it.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use trustmesh_ca::{CaError, CertificateAuthority, InitOptions, IssueRequest, Layout};
use trustmesh_identity::{SpiffeId, TrustDomain};
use trustmesh_testkit::pki::openssl::{cert_manager_layout, gen_key, openssl_cacerts, OsslKey};
use trustmesh_testkit::pki::{uri_sans, with_cert};
use trustmesh_testkit::tools::openssl;

fn td(s: &str) -> TrustDomain {
    TrustDomain::parse(s).unwrap()
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Istio's plug-in cacerts made by openssl with PKCS#8 EC keys, in `dir`.
fn ec_cacerts(dir: &Path) {
    openssl_cacerts(dir, OsslKey::EcPkcs8, OsslKey::EcPkcs8, None);
}

/// Why loading the CA in `dir` fails.
fn load_error(dir: &Path) -> String {
    CertificateAuthority::load(dir).unwrap_err().to_string()
}

/// Copies `name` from the CA folder `from` into `to`.
fn take(from: &Path, to: &Path, name: &str) {
    fs::copy(from.join(name), to.join(name)).unwrap();
}

/// Issues from `ca` and checks with openssl that the chain verifies to `root-cert.pem`.
fn issue_and_openssl_verify(ca: &CertificateAuthority, id: &str) {
    let svid = ca
        .issue(&IssueRequest::new(SpiffeId::parse(id).unwrap()))
        .unwrap();
    let out = tempfile::tempdir().unwrap();
    svid.write_issued(out.path()).unwrap();
    let leaf = pem::encode(&pem::Pem::new("CERTIFICATE", svid.chain[0].to_vec()));
    fs::write(out.path().join("leaf.pem"), leaf).unwrap();
    fs::write(out.path().join("chain.pem"), &svid.chain_pem).unwrap();
    let res = openssl(
        out.path(),
        &[
            "verify",
            "-CAfile",
            "root-cert.pem",
            "-untrusted",
            "chain.pem",
            "leaf.pem",
        ],
    );
    assert!(res.contains("leaf.pem: OK"), "{res}");
    assert_eq!(uri_sans(&svid.chain[0]), [id]);
}

#[test]
fn loads_openssl_cacerts_with_every_key_encoding() {
    for (root_key, ca_key) in [
        (OsslKey::RsaPkcs1, OsslKey::RsaPkcs1),
        (OsslKey::RsaPkcs1, OsslKey::EcSec1),
        (OsslKey::EcPkcs8, OsslKey::EcPkcs8),
    ] {
        let dir = tempfile::tempdir().unwrap();
        openssl_cacerts(dir.path(), root_key, ca_key, None);
        let ca = CertificateAuthority::load(dir.path())
            .unwrap_or_else(|e| panic!("{root_key:?}/{ca_key:?}: {e}"));
        // No SPIFFE URI in Istio's tool-made certs: Istio's default trust domain applies.
        assert_eq!(ca.trust_domain().as_str(), "cluster.local");
        assert_eq!(ca.chain().len(), 2);
        let expected = match ca_key {
            OsslKey::RsaPkcs1 => "RSA",
            _ => "ECDSA P-256",
        };
        assert_eq!(ca.key_algorithm(), expected);
        issue_and_openssl_verify(&ca, "spiffe://cluster.local/ns/default/sa/sleep");
    }
}

#[test]
fn trust_domain_from_root_uri_or_explicit() {
    let dir = tempfile::tempdir().unwrap();
    openssl_cacerts(
        dir.path(),
        OsslKey::EcPkcs8,
        OsslKey::EcSec1,
        Some("spiffe://corp.example"),
    );
    let ca = CertificateAuthority::load(dir.path()).unwrap();
    assert_eq!(ca.trust_domain().as_str(), "corp.example");
    let same =
        CertificateAuthority::load_with_trust_domain(dir.path(), &td("corp.example")).unwrap();
    assert_eq!(same.trust_domain().as_str(), "corp.example");
    let err =
        CertificateAuthority::load_with_trust_domain(dir.path(), &td("other.example")).unwrap_err();
    assert!(
        err.to_string().contains("name spiffe://corp.example"),
        "{err}"
    );

    // Without URIs an explicit domain is taken as is.
    let plain = tempfile::tempdir().unwrap();
    ec_cacerts(plain.path());
    let ca =
        CertificateAuthority::load_with_trust_domain(plain.path(), &td("mesh.example")).unwrap();
    issue_and_openssl_verify(&ca, "spiffe://mesh.example/ns/x/sa/y");
}

/// A CA to serve from: an explicit trust domain wins over the one the certificates name (as
/// istiod takes meshConfig.trustDomain), the named one is used without it, and with neither
/// the CA refuses to guess and asks for --trust-domain.
#[test]
fn serving_takes_the_explicit_trust_domain_and_never_guesses() {
    let plain = tempfile::tempdir().unwrap();
    ec_cacerts(plain.path());
    let err = CertificateAuthority::load_to_serve(plain.path(), None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no certificate of the chain names a trust domain")
            && err.contains("pass --trust-domain"),
        "{err}"
    );
    let ca = CertificateAuthority::load_to_serve(plain.path(), Some(&td("mesh.example"))).unwrap();
    assert_eq!(ca.trust_domain().as_str(), "mesh.example");
    assert_eq!(ca.named_trust_domain(), None);
    issue_and_openssl_verify(&ca, "spiffe://mesh.example/ns/x/sa/y");
    let other = ca
        .issue(&IssueRequest::new(
            SpiffeId::parse("spiffe://cluster.local/ns/x/sa/y").unwrap(),
        ))
        .unwrap_err();
    assert!(matches!(other, CaError::WrongTrustDomain { .. }), "{other}");

    let named = tempfile::tempdir().unwrap();
    openssl_cacerts(
        named.path(),
        OsslKey::EcPkcs8,
        OsslKey::EcPkcs8,
        Some("spiffe://corp.example"),
    );
    let ca = CertificateAuthority::load_to_serve(named.path(), None).unwrap();
    assert_eq!(ca.trust_domain().as_str(), "corp.example");
    let ca = CertificateAuthority::load_to_serve(named.path(), Some(&td("new.example"))).unwrap();
    assert_eq!(ca.trust_domain().as_str(), "new.example");
    assert_eq!(ca.named_trust_domain().unwrap().as_str(), "corp.example");
    issue_and_openssl_verify(&ca, "spiffe://new.example/ns/x/sa/y");
}

/// cert-manager's secret: tls.crt with or without the root after the CA certificate, tls.key
/// in every encoding openssl writes, ca.crt the root; issued chains verify with openssl.
#[test]
fn loads_cert_manager_layout() {
    for (key, root_in_tls_crt) in [
        (OsslKey::EcPkcs8, false),
        (OsslKey::EcSec1, true),
        (OsslKey::RsaPkcs1, true),
    ] {
        let made = tempfile::tempdir().unwrap();
        openssl_cacerts(made.path(), OsslKey::EcPkcs8, key, None);
        let dir = tempfile::tempdir().unwrap();
        cert_manager_layout(made.path(), dir.path(), root_in_tls_crt);
        let ca = CertificateAuthority::load_to_serve(dir.path(), Some(&td("cm.example")))
            .unwrap_or_else(|e| panic!("{key:?}, root in tls.crt {root_in_tls_crt}: {e}"));
        assert_eq!(ca.layout(), (Layout::KubernetesTls, false));
        assert_eq!(ca.chain().len(), 2, "CA certificate, then the root once");
        assert_eq!(
            ca.roots_pem(),
            fs::read_to_string(dir.path().join("ca.crt")).unwrap()
        );
        issue_and_openssl_verify(&ca, "spiffe://cm.example/ns/default/sa/web");
    }
}

/// Both layouts in one directory: tls.crt wins, as in istiod, and the CA says the cacerts
/// files were ignored; the issued chain ends at ca.crt's root, not root-cert.pem's.
#[test]
fn tls_layout_wins_over_cacerts_like_istiod() {
    let (tls_ca, cacerts_ca) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    ec_cacerts(tls_ca.path());
    ec_cacerts(cacerts_ca.path());
    let dir = tempfile::tempdir().unwrap();
    for f in [
        "ca-cert.pem",
        "ca-key.pem",
        "cert-chain.pem",
        "root-cert.pem",
    ] {
        take(cacerts_ca.path(), dir.path(), f);
    }
    cert_manager_layout(tls_ca.path(), dir.path(), false);
    let ca = CertificateAuthority::load(dir.path()).unwrap();
    assert_eq!(ca.layout(), (Layout::KubernetesTls, true));
    let tls_root = fs::read_to_string(tls_ca.path().join("root-cert.pem")).unwrap();
    let cacerts_root = fs::read_to_string(cacerts_ca.path().join("root-cert.pem")).unwrap();
    assert_ne!(tls_root, cacerts_root);
    assert_eq!(ca.roots_pem(), tls_root);
    let svid = ca
        .issue(&IssueRequest::new(
            SpiffeId::parse("spiffe://cluster.local/ns/a/sa/b").unwrap(),
        ))
        .unwrap();
    assert_eq!(svid.chain.last().unwrap(), &ca.roots()[0]);
}

/// A half-present cert-manager layout names what is there and what is missing.
#[test]
fn half_present_cert_manager_layout_is_named() {
    let made = tempfile::tempdir().unwrap();
    ec_cacerts(made.path());
    let full = tempfile::tempdir().unwrap();
    cert_manager_layout(made.path(), full.path(), false);
    for (keep, missing) in [
        (&["tls.crt", "ca.crt"][..], "tls.key missing"),
        (&["tls.crt"][..], "tls.key, ca.crt missing"),
        (&["tls.crt", "tls.key"][..], "ca.crt missing"),
        (&["tls.key", "ca.crt"][..], "tls.crt missing"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        for f in keep {
            take(full.path(), dir.path(), f);
        }
        let err = load_error(dir.path());
        assert!(
            err.contains("incomplete cert-manager layout (kubernetes.io/tls secret)")
                && err.contains(&format!("{} present but {missing}", keep.join(", "))),
            "{keep:?}: {err}"
        );
    }
    // A key that is not the certificate's is named with the layout's file names.
    let other = tempfile::tempdir().unwrap();
    ec_cacerts(other.path());
    let dir = tempfile::tempdir().unwrap();
    cert_manager_layout(made.path(), dir.path(), false);
    fs::copy(other.path().join("ca-key.pem"), dir.path().join("tls.key")).unwrap();
    let err = load_error(dir.path());
    assert!(err.contains("tls.key does not match tls.crt"), "{err}");
}

#[test]
fn write_then_load_round_trips() {
    let root = CertificateAuthority::init_root(&td("rt.example"), &InitOptions::root()).unwrap();
    let ca = CertificateAuthority::init_intermediate(
        &root,
        &td("rt.example"),
        &InitOptions::intermediate(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cacerts");
    ca.write(&out).unwrap();
    assert_eq!(
        listing(&out),
        [
            "ca-cert.pem",
            "ca-key.pem",
            "cert-chain.pem",
            "root-cert.pem"
        ]
    );
    let mode = fs::metadata(out.join("ca-key.pem"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let key = fs::read_to_string(out.join("ca-key.pem")).unwrap();
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));

    let loaded = CertificateAuthority::load(&out).unwrap();
    assert_eq!(loaded.trust_domain().as_str(), "rt.example");
    assert_eq!(loaded.chain(), ca.chain());
    assert_eq!(loaded.roots(), root.roots());
    // openssl agrees the stored chain is sound.
    let res = openssl(&out, &["verify", "-CAfile", "root-cert.pem", "ca-cert.pem"]);
    assert!(res.contains("ca-cert.pem: OK"), "{res}");
    issue_and_openssl_verify(&loaded, "spiffe://rt.example/ns/a/sa/b");
}

#[test]
fn missing_files_are_named() {
    for name in [
        "ca-cert.pem",
        "ca-key.pem",
        "cert-chain.pem",
        "root-cert.pem",
    ] {
        let dir = tempfile::tempdir().unwrap();
        ec_cacerts(dir.path());
        fs::remove_file(dir.path().join(name)).unwrap();
        let err = CertificateAuthority::load(dir.path()).unwrap_err();
        assert!(matches!(err, CaError::Missing { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.ends_with(&format!("{name}: file not found")), "{msg}");
    }
}

#[test]
fn key_not_matching_cert_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    ec_cacerts(dir.path());
    gen_key(dir.path(), OsslKey::EcSec1, "ca-key.pem");
    let err = CertificateAuthority::load(dir.path()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("ca-key.pem does not match ca-cert.pem"),
        "{msg}"
    );
    assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
}

#[test]
fn garbage_key_and_cert_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    ec_cacerts(dir.path());
    fs::write(dir.path().join("ca-key.pem"), "hello").unwrap();
    let err = load_error(dir.path());
    assert!(
        err.contains("ca-key.pem: no PRIVATE KEY PEM block found"),
        "{err}"
    );

    ec_cacerts(dir.path());
    fs::write(dir.path().join("root-cert.pem"), "").unwrap();
    let err = load_error(dir.path());
    assert!(
        err.contains("root-cert.pem: no CERTIFICATE PEM block found"),
        "{err}"
    );
}

#[test]
fn non_ca_certificate_is_refused() {
    // A leaf placed where the CA belongs.
    let root = CertificateAuthority::init_root(&td("x.example"), &InitOptions::root()).unwrap();
    let svid = root
        .issue(&IssueRequest::new(
            SpiffeId::parse("spiffe://x.example/w").unwrap(),
        ))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("ca-cert.pem"),
        pem::encode(&pem::Pem::new("CERTIFICATE", svid.chain[0].to_vec())),
    )
    .unwrap();
    fs::write(dir.path().join("ca-key.pem"), svid.key_pem.unwrap()).unwrap();
    fs::write(dir.path().join("cert-chain.pem"), &svid.chain_pem).unwrap();
    fs::write(dir.path().join("root-cert.pem"), &svid.root_pem).unwrap();
    let err = load_error(dir.path());
    assert!(err.contains("ca-cert.pem is not a CA certificate"), "{err}");
}

#[test]
fn expired_ca_is_refused() {
    // Made with rcgen directly (openssl 3.0 cannot back-date), expired yesterday.
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "old.example");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap();
    params.not_before = now - time::Duration::days(30);
    params.not_after = now - time::Duration::days(1);
    let cert = params.self_signed(&key).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for name in ["ca-cert.pem", "cert-chain.pem", "root-cert.pem"] {
        fs::write(dir.path().join(name), cert.pem()).unwrap();
    }
    fs::write(dir.path().join("ca-key.pem"), key.serialize_pem()).unwrap();
    let err = load_error(dir.path());
    let when = trustmesh_ca::rfc3339(params.not_after);
    assert!(
        err.contains(&format!("CA certificate ca-cert.pem expired at {when}")),
        "{err}"
    );
}

#[test]
fn inconsistent_chains_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    ec_cacerts(dir.path());
    let other = tempfile::tempdir().unwrap();
    ec_cacerts(other.path());

    // root-cert.pem from another hierarchy.
    take(other.path(), dir.path(), "root-cert.pem");
    let err = load_error(dir.path());
    assert!(
        err.contains("does not end at (or directly below) a root in root-cert.pem"),
        "{err}"
    );

    // cert-chain.pem that starts elsewhere.
    ec_cacerts(dir.path());
    take(other.path(), dir.path(), "cert-chain.pem");
    let err = load_error(dir.path());
    assert!(
        err.contains("cert-chain.pem does not start with ca-cert.pem"),
        "{err}"
    );

    // Intermediate followed by a root with the same name but a different key: signature fails.
    ec_cacerts(dir.path());
    let chain = fs::read_to_string(dir.path().join("ca-cert.pem")).unwrap()
        + &fs::read_to_string(other.path().join("root-cert.pem")).unwrap();
    fs::write(dir.path().join("cert-chain.pem"), chain).unwrap();
    take(other.path(), dir.path(), "root-cert.pem");
    let err = load_error(dir.path());
    assert!(err.contains("certificate 1 (O=Istio, CN=Intermediate CA, L=cluster1) is not issued by certificate 2"), "{err}");

    // cert-chain.pem without the root is completed from root-cert.pem.
    ec_cacerts(dir.path());
    fs::copy(
        dir.path().join("ca-cert.pem"),
        dir.path().join("cert-chain.pem"),
    )
    .unwrap();
    let ca = CertificateAuthority::load(dir.path()).unwrap();
    assert_eq!(ca.chain().len(), 2);
    assert_eq!(ca.chain()[1], ca.roots()[0]);
}

#[test]
fn failed_write_leaves_no_partial_files() {
    let root = CertificateAuthority::init_root(&td("w.example"), &InitOptions::root()).unwrap();
    let svid = root
        .issue(&IssueRequest::new(
            SpiffeId::parse("spiffe://w.example/x").unwrap(),
        ))
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();

    // Output path under a regular file: nothing can be created.
    fs::write(tmp.path().join("file"), "x").unwrap();
    let err = svid
        .write_issued(tmp.path().join("file/out"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("file/out"), "{err}");
    assert_eq!(listing(tmp.path()), ["file"]);
    let err = root
        .write(tmp.path().join("file/ca"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("file/ca"), "{err}");

    // One target name blocked by a directory: the key must not be written alone.
    let out = tmp.path().join("out");
    fs::create_dir(&out).unwrap();
    fs::create_dir(out.join("root-cert.pem")).unwrap();
    let err = svid.write_issued(&out).unwrap_err().to_string();
    assert!(err.contains("root-cert.pem"), "{err}");
    assert_eq!(listing(&out), ["root-cert.pem"]);

    // A read-only directory, where permissions are enforced (not for root).
    let ro = tmp.path().join("ro");
    fs::create_dir(&ro).unwrap();
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o555)).unwrap();
    if fs::write(ro.join("probe"), "x").is_err() {
        let err = svid.write_issued(&ro).unwrap_err().to_string();
        assert!(err.contains("Permission denied"), "{err}");
        assert!(listing(&ro).is_empty());
    }
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn root_only_ca_round_trips_and_issues() {
    let root = CertificateAuthority::init_root(&td("solo.example"), &InitOptions::root()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    root.write(dir.path()).unwrap();
    // Self-signed CA: ca-cert.pem, cert-chain.pem and root-cert.pem hold the same certificate.
    let ca_cert = fs::read_to_string(dir.path().join("ca-cert.pem")).unwrap();
    assert_eq!(
        ca_cert,
        fs::read_to_string(dir.path().join("cert-chain.pem")).unwrap()
    );
    assert_eq!(
        ca_cert,
        fs::read_to_string(dir.path().join("root-cert.pem")).unwrap()
    );
    let loaded = CertificateAuthority::load(dir.path()).unwrap();
    assert_eq!(loaded.trust_domain().as_str(), "solo.example");
    assert_eq!(loaded.chain().len(), 1);
    issue_and_openssl_verify(&loaded, "spiffe://solo.example/ns/a/sa/b");
}

#[test]
fn two_level_intermediates_respect_path_length() {
    let d = td("deep.example");
    let root = CertificateAuthority::init_root(&d, &InitOptions::root()).unwrap();
    let mut opts = InitOptions::intermediate();
    opts.path_len = Some(1);
    let region = CertificateAuthority::init_intermediate(&root, &d, &opts).unwrap();
    // Asking for more than the parent allows is tightened to fit (1 - 1 = 0).
    opts.path_len = Some(5);
    let cluster = CertificateAuthority::init_intermediate(&region, &d, &opts).unwrap();
    with_cert(cluster.ca_cert(), |c| {
        let bc = c.basic_constraints().unwrap().unwrap().value;
        assert_eq!(bc.path_len_constraint, Some(0));
    });
    assert_eq!(cluster.chain().len(), 3);

    let dir = tempfile::tempdir().unwrap();
    cluster.write(dir.path()).unwrap();
    let loaded = CertificateAuthority::load(dir.path()).unwrap();
    assert_eq!(loaded.chain(), cluster.chain());
    issue_and_openssl_verify(&loaded, "spiffe://deep.example/ns/a/sa/b");
}

#[test]
fn path_length_violation_is_refused_at_load() {
    // Built with rcgen directly: a root with pathlen:0 that nevertheless signed an intermediate.
    let root_key = KeyPair::generate().unwrap();
    let mut root_params = CertificateParams::default();
    root_params.distinguished_name = rcgen::DistinguishedName::new();
    root_params
        .distinguished_name
        .push(DnType::OrganizationName, "strict.example");
    root_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let root_cert = root_params.self_signed(&root_key).unwrap();
    let root_issuer = rcgen::Issuer::new(root_params, &root_key);

    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = rcgen::DistinguishedName::new();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Intermediate");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let ca_cert = ca_params.signed_by(&ca_key, &root_issuer).unwrap();

    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("ca-cert.pem"), ca_cert.pem()).unwrap();
    fs::write(dir.path().join("ca-key.pem"), ca_key.serialize_pem()).unwrap();
    fs::write(
        dir.path().join("cert-chain.pem"),
        ca_cert.pem() + &root_cert.pem(),
    )
    .unwrap();
    fs::write(dir.path().join("root-cert.pem"), root_cert.pem()).unwrap();
    let err = load_error(dir.path());
    assert!(
        err.contains("certificate 2 (O=strict.example) has pathLenConstraint 0, too small for 1 CA certificate(s) below it"),
        "{err}"
    );
}
