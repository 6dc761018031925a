//! Trust bundles, TrustConfig anchors, and loading bundles from PEM files and directories.

use std::fs;

use rcgen::KeyUsagePurpose;
use rustls_pki_types::CertificateDer;
use trustmesh_identity::load::{self, LoadError};
use trustmesh_identity::pem::{cert_to_pem, certs_to_pem};
use trustmesh_identity::{verify_svid, BundleError, TrustBundleSet, TrustConfig, TrustDomain};
use trustmesh_testkit::pki::spec::*;

fn td(s: &str) -> TrustDomain {
    TrustDomain::parse(s).unwrap()
}

#[test]
fn add_root_validates_and_dedups() {
    let mut set = TrustBundleSet::new();
    let r = root("a.example");
    assert!(set.add_root(td("a.example"), r.cert.clone()).unwrap());
    let a = td("a.example");
    assert!(!set.add_root(&a, r.cert.clone()).unwrap());
    assert_eq!(set.roots(&a).len(), 1);
    assert_eq!(set.len(), 1);

    let leaf = leaf(&r, "spiffe://a.example/w");
    match set.add_root(td("a.example"), leaf) {
        Err(e @ BundleError::NotCa { .. }) => assert!(e.to_string().contains("not a CA"), "{e}"),
        other => panic!("{other:?}"),
    }

    let mut spec = CaSpec::new("ca without certsign", "a.example");
    spec.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    match set.add_root(td("a.example"), spec.self_signed().cert) {
        Err(e @ BundleError::NoKeyCertSign { .. }) => {
            assert!(e.to_string().contains("ca without certsign"), "{e}")
        }
        other => panic!("{other:?}"),
    }

    let garbage = CertificateDer::from(b"not a certificate".to_vec());
    assert!(matches!(
        set.add_root(td("a.example"), garbage),
        Err(BundleError::Malformed { .. })
    ));
    // Failed adds leave the set untouched.
    assert_eq!(set.len(), 1);
    assert_eq!(set.trust_domains().collect::<Vec<_>>(), [&td("a.example")]);
}

#[test]
fn several_roots_per_domain_and_merge() {
    let mut set = TrustBundleSet::new();
    let r1 = CaSpec::new("r1", "a.example").self_signed();
    let r2 = CaSpec::new("r2", "a.example").self_signed();
    let rb = root("b.example");
    set.add_root(td("a.example"), r1.cert.clone()).unwrap();
    set.add_root(td("a.example"), r2.cert.clone()).unwrap();
    let mut other = TrustBundleSet::new();
    other.add_root(td("b.example"), rb.cert.clone()).unwrap();
    other.add_root(td("a.example"), r1.cert.clone()).unwrap();
    set.merge(other);
    assert_eq!(
        set.roots(&td("a.example")),
        &[r1.cert.clone(), r2.cert.clone()]
    );
    assert_eq!(set.roots(&td("b.example")), std::slice::from_ref(&rb.cert));
    assert!(set.roots(&td("c.example")).is_empty());
    assert_eq!(set.len(), 3);
    assert!(set.remove_domain(&td("b.example")));
    assert!(!set.contains(&td("b.example")));
}

#[test]
fn trust_config_anchors() {
    let ra = root("a.example");
    let rb = root("b.example");
    let rold = root("old.example");
    let mut bundles = TrustBundleSet::new();
    bundles.add_root(td("a.example"), ra.cert.clone()).unwrap();
    bundles.add_root(td("b.example"), rb.cert.clone()).unwrap();
    bundles
        .add_root(td("old.example"), rold.cert.clone())
        .unwrap();
    let cfg = TrustConfig::new(td("a.example"), bundles)
        .with_aliases([td("old.example"), td("alias.example")]);

    assert!(cfg.is_local_or_alias(&td("a.example")));
    assert!(cfg.is_local_or_alias(&td("alias.example")));
    assert!(!cfg.is_local_or_alias(&td("b.example")));
    for d in ["a.example", "alias.example", "old.example", "b.example"] {
        assert!(cfg.accepts(&td(d)), "{d}");
    }
    assert!(!cfg.accepts(&td("c.example")));

    assert_eq!(cfg.anchors_for(&td("a.example")), [&ra.cert]);
    assert_eq!(cfg.anchors_for(&td("alias.example")), [&ra.cert]);
    assert_eq!(cfg.anchors_for(&td("old.example")), [&rold.cert, &ra.cert]);
    assert_eq!(cfg.anchors_for(&td("b.example")), [&rb.cert]);
    assert!(cfg.anchors_for(&td("c.example")).is_empty());
}

#[test]
fn load_file_with_explicit_trust_domain() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = CaSpec::new("istio root", "unused");
    spec.uri = None; // Istio's self-signed root has no URI SAN.
    let r = spec.self_signed();
    let path = dir.path().join("root-cert.pem");
    fs::write(&path, cert_to_pem(&r.cert)).unwrap();

    let set = load::bundle_from_pem_file(&path, Some(td("cluster.local"))).unwrap();
    assert_eq!(
        set.roots(&td("cluster.local")),
        std::slice::from_ref(&r.cert)
    );

    // Without an explicit domain the error names the file and what to do.
    let err = load::bundle_from_pem_file(&path, None).unwrap_err();
    assert!(
        matches!(err, LoadError::NoTrustDomain { index: 1, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("root-cert.pem"), "{msg}");
    assert!(msg.contains("istio root"), "{msg}");
    assert!(msg.contains("explicitly"), "{msg}");
}

#[test]
fn load_file_takes_trust_domain_from_uri_san() {
    let dir = tempfile::tempdir().unwrap();
    let ra = root("a.example");
    let ra2 = CaSpec::new("a second root", "a.example").self_signed();
    let path = dir.path().join("a.pem");
    fs::write(&path, certs_to_pem([&ra.cert, &ra2.cert])).unwrap();
    let set = load::bundle_from_pem_file(&path, None).unwrap();
    assert_eq!(
        set.roots(&td("a.example")),
        &[ra.cert.clone(), ra2.cert.clone()]
    );
    assert_eq!(set.trust_domains().count(), 1);

    // End to end: a leaf issued by the loaded root verifies.
    let cfg = TrustConfig::new(td("a.example"), set);
    let leaf = leaf(&ra2, "spiffe://a.example/ns/default/sa/web");
    assert!(verify_svid(&[leaf], &cfg, now()).is_ok());
}

#[test]
fn load_file_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let err = load::bundle_from_pem_file(&missing, None).unwrap_err();
    assert!(matches!(err, LoadError::Io { .. }));
    assert!(err.to_string().contains("missing.pem"));

    let empty = dir.path().join("empty.pem");
    fs::write(&empty, "no pem here\n").unwrap();
    let err = load::bundle_from_pem_file(&empty, None).unwrap_err();
    assert!(matches!(err, LoadError::Pem { .. }), "{err:?}");
    assert!(err.to_string().contains("empty.pem"), "{err}");

    let r = root("a.example");
    let leaf_file = dir.path().join("leaf.pem");
    fs::write(&leaf_file, cert_to_pem(&leaf(&r, "spiffe://a.example/w"))).unwrap();
    let err = load::bundle_from_pem_file(&leaf_file, None).unwrap_err();
    assert!(
        matches!(
            err,
            LoadError::Bundle {
                source: BundleError::NotCa { .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("leaf.pem"), "{err}");

    let mut spec = CaSpec::new("two domains", "a.example");
    spec.extra_uris = vec![
        "spiffe://b.example".into(),
        "https://not-spiffe.example".into(),
    ];
    let ambiguous = dir.path().join("ambiguous.pem");
    fs::write(&ambiguous, cert_to_pem(&spec.self_signed().cert)).unwrap();
    let err = load::bundle_from_pem_file(&ambiguous, None).unwrap_err();
    match &err {
        LoadError::AmbiguousTrustDomain { found, .. } => {
            assert_eq!(found, &["a.example".to_string(), "b.example".to_string()])
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("ambiguous.pem"), "{err}");
    // An explicit trust domain resolves the ambiguity.
    assert!(load::bundle_from_pem_file(&ambiguous, Some(td("a.example"))).is_ok());
}

#[test]
fn load_dir_reads_pem_and_crt_files() {
    let dir = tempfile::tempdir().unwrap();
    let ra = root("a.example");
    let rb1 = CaSpec::new("b root 1", "b.example").self_signed();
    let rb2 = CaSpec::new("b root 2", "b.example").self_signed();
    fs::write(dir.path().join("a.pem"), cert_to_pem(&ra.cert)).unwrap();
    fs::write(
        dir.path().join("b-bundle.crt"),
        format!(
            "# federated bundle for b\n{}",
            certs_to_pem([&rb1.cert, &rb2.cert])
        ),
    )
    .unwrap();
    fs::write(dir.path().join("README.txt"), "not a cert").unwrap();
    fs::create_dir(dir.path().join("sub.pem")).unwrap();
    let set = load::bundle_from_dir(dir.path()).unwrap();
    assert_eq!(set.roots(&td("a.example")), std::slice::from_ref(&ra.cert));
    assert_eq!(
        set.roots(&td("b.example")),
        &[rb1.cert.clone(), rb2.cert.clone()]
    );
    assert_eq!(set.len(), 3);

    // Explicit domain overrides URI SANs for every file.
    let set = load::bundle_from_dir_with(dir.path(), Some(&td("x.example"))).unwrap();
    assert_eq!(set.roots(&td("x.example")).len(), 3);
    assert_eq!(set.trust_domains().count(), 1);
}

#[test]
fn load_dir_errors() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("notes.txt"), "x").unwrap();
    let err = load::bundle_from_dir(dir.path()).unwrap_err();
    assert!(matches!(err, LoadError::NoCertFiles { .. }), "{err:?}");

    let mut spec = CaSpec::new("anonymous root", "unused");
    spec.uri = None;
    fs::write(
        dir.path().join("z-anon.pem"),
        cert_to_pem(&spec.self_signed().cert),
    )
    .unwrap();
    fs::write(
        dir.path().join("a.pem"),
        cert_to_pem(&root("a.example").cert),
    )
    .unwrap();
    let err = load::bundle_from_dir(dir.path()).unwrap_err();
    assert!(err.to_string().contains("z-anon.pem"), "{err}");

    let err = load::bundle_from_dir(dir.path().join("nope")).unwrap_err();
    assert!(matches!(err, LoadError::Io { .. }));
}
