//! X.509-SVID verification against chains built with rcgen.

use std::time::{Duration, SystemTime};

use rcgen::{ExtendedKeyUsagePurpose, KeyUsagePurpose};
use rustls_pki_types::CertificateDer;
use trustmesh_identity::{
    verify_svid, verify_svid_for, SpiffeId, SvidError, TrustBundleSet, TrustConfig, TrustDomain,
    Usage,
};
use trustmesh_testkit::pki::spec::*;

fn td(s: &str) -> TrustDomain {
    TrustDomain::parse(s).unwrap()
}

/// Local domain `a` trusting only its own root.
fn config_for(local: &str, roots: &[(&str, &Ca)]) -> TrustConfig {
    let mut bundles = TrustBundleSet::new();
    for (d, ca) in roots {
        bundles.add_root(td(d), ca.cert.clone()).unwrap();
    }
    TrustConfig::new(td(local), bundles)
}

fn verify(chain: &[CertificateDer<'static>], cfg: &TrustConfig) -> Result<String, SvidError> {
    verify_svid(chain, cfg, now()).map(|v| v.id.to_string())
}

#[test]
fn root_to_leaf_chain_verifies() {
    let root_a = root("a.example");
    let mut spec = LeafSpec::new("spiffe://a.example/ns/default/sa/web");
    spec.serial = Some(0x1234_abcd);
    let leaf = spec.signed_by(&root_a);
    let cfg = config_for("a.example", &[("a.example", &root_a)]);
    let v = verify_svid(&[leaf], &cfg, now()).unwrap();
    assert_eq!(v.id.as_str(), "spiffe://a.example/ns/default/sa/web");
    assert_eq!(v.id.namespace(), Some("default"));
    assert_eq!(v.chain_len, 2);
    assert_eq!(v.serial_hex, "1234abcd");
    assert_eq!(
        v.not_after,
        SystemTime::UNIX_EPOCH + Duration::from_secs((NOW_SECS + DAY) as u64)
    );
    assert_eq!(
        v.not_before,
        SystemTime::UNIX_EPOCH + Duration::from_secs((NOW_SECS - HOUR) as u64)
    );
}

#[test]
fn root_intermediate_leaf_chain_verifies() {
    let root_a = root("a.example");
    let int_a = intermediate(&root_a, "a.example");
    let leaf = leaf(&int_a, "spiffe://a.example/ns/x/sa/y");
    let cfg = config_for("a.example", &[("a.example", &root_a)]);
    let v = verify_svid(&[leaf.clone(), int_a.cert.clone()], &cfg, now()).unwrap();
    assert_eq!(v.chain_len, 3);
    // Without the intermediate there is no path to the root.
    match verify(&[leaf], &cfg) {
        Err(SvidError::UnknownIssuer { td: d, .. }) => assert_eq!(d.as_str(), "a.example"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn two_level_intermediates_and_extra_root_in_chain_are_fine() {
    let root_a = root("a.example");
    let i1 = intermediate(&root_a, "a.example");
    let i2 = CaSpec::new("intermediate 2", "a.example").signed_by(&i1);
    let leaf = leaf(&i2, "spiffe://a.example/w");
    let cfg = config_for("a.example", &[("a.example", &root_a)]);
    let v = verify_svid(
        &[leaf, i2.cert.clone(), i1.cert.clone(), root_a.cert.clone()],
        &cfg,
        now(),
    )
    .unwrap();
    assert_eq!(v.chain_len, 4);
}

#[test]
fn expired_leaf_rejected() {
    let root_a = root("a.example");
    let mut spec = LeafSpec::new("spiffe://a.example/w");
    spec.not_before = NOW_SECS - 2 * DAY;
    spec.not_after = NOW_SECS - 1;
    let leaf = spec.signed_by(&root_a);
    let cfg = config_for("a.example", &[("a.example", &root_a)]);
    let err = verify(&[leaf], &cfg).unwrap_err();
    match &err {
        SvidError::Expired { cert, not_after } => {
            assert_eq!(cert, "leaf certificate");
            assert_eq!(
                *not_after,
                SystemTime::UNIX_EPOCH + Duration::from_secs((NOW_SECS - 1) as u64)
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "leaf certificate expired at 2027-01-15T07:59:59Z"
    );
}

#[test]
fn not_yet_valid_leaf_rejected() {
    let root_a = root("a.example");
    let mut spec = LeafSpec::new("spiffe://a.example/w");
    spec.not_before = NOW_SECS + HOUR;
    spec.not_after = NOW_SECS + DAY;
    let leaf = spec.signed_by(&root_a);
    let cfg = config_for("a.example", &[("a.example", &root_a)]);
    match verify(&[leaf], &cfg) {
        Err(SvidError::NotYetValid { cert, .. }) => assert_eq!(cert, "leaf certificate"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn expired_intermediate_rejected() {
    let root_a = root("a.example");
    let mut spec = CaSpec::new("old intermediate", "a.example");
    spec.not_before = NOW_SECS - 10 * DAY;
    spec.not_after = NOW_SECS - DAY;
    let int_a = spec.signed_by(&root_a);
    let leaf = leaf(&int_a, "spiffe://a.example/w");
    let cfg = config_for("a.example", &[("a.example", &root_a)]);
    match verify(&[leaf, int_a.cert.clone()], &cfg) {
        Err(SvidError::Expired { cert, .. }) => {
            assert!(
                cert.contains("intermediate") && cert.contains("old intermediate"),
                "{cert}"
            )
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn expired_and_future_roots_rejected() {
    let mut spec = CaSpec::new("old root", "a.example");
    spec.not_before = NOW_SECS - 10 * DAY;
    spec.not_after = NOW_SECS - DAY;
    let old_root = spec.self_signed();
    let leaf1 = leaf(&old_root, "spiffe://a.example/w");
    let cfg = config_for("a.example", &[("a.example", &old_root)]);
    let err = verify(&[leaf1], &cfg).unwrap_err();
    match &err {
        SvidError::Expired { cert, .. } => assert!(cert.contains("root"), "{cert}"),
        other => panic!("{other:?}"),
    }

    let mut spec = CaSpec::new("future root", "a.example");
    spec.not_before = NOW_SECS + DAY;
    let future_root = spec.self_signed();
    let leaf2 = leaf(&future_root, "spiffe://a.example/w");
    let cfg = config_for("a.example", &[("a.example", &future_root)]);
    assert!(matches!(
        verify(&[leaf2], &cfg),
        Err(SvidError::NotYetValid { .. })
    ));
}

#[test]
fn leaf_without_uri_san_rejected() {
    let root_a = root("a.example");
    let mut spec = LeafSpec::new("unused");
    spec.uris.clear();
    spec.dns = vec!["web.default.svc".into()];
    let leaf = spec.signed_by(&root_a);
    let cfg = config_for("a.example", &[("a.example", &root_a)]);
    assert_eq!(verify(&[leaf], &cfg), Err(SvidError::NoUriSan));
}

#[test]
fn leaf_with_two_uri_sans_rejected() {
    let root_a = root("a.example");
    let mut spec = LeafSpec::new("spiffe://a.example/one");
    spec.uris.push("spiffe://a.example/two".into());
    let leaf = spec.signed_by(&root_a);
    let cfg = config_for("a.example", &[("a.example", &root_a)]);
    let err = verify(&[leaf], &cfg).unwrap_err();
    assert_eq!(
        err,
        SvidError::MultipleUriSans {
            uris: vec![
                "spiffe://a.example/one".into(),
                "spiffe://a.example/two".into()
            ]
        }
    );
    assert!(err.to_string().contains("exactly one"));
}

#[test]
fn leaf_with_invalid_spiffe_id_rejected() {
    let root_a = root("a.example");
    let cfg = config_for("a.example", &[("a.example", &root_a)]);
    for uri in [
        "https://a.example/w",
        "spiffe://a.example/a%20b",
        "spiffe://A.example/w",
        "spiffe://a.example/w/",
    ] {
        let leaf = leaf(&root_a, uri);
        match verify(&[leaf], &cfg) {
            Err(SvidError::InvalidSpiffeId { uri: u, .. }) => assert_eq!(u, uri),
            other => panic!("{uri}: {other:?}"),
        }
    }
}

#[test]
fn leaf_with_trust_domain_id_rejected() {
    let root_a = root("a.example");
    let cfg = config_for("a.example", &[("a.example", &root_a)]);
    let leaf = leaf(&root_a, "spiffe://a.example");
    assert!(matches!(
        verify(&[leaf], &cfg),
        Err(SvidError::LeafIdHasNoPath { .. })
    ));
}

#[test]
fn leaf_that_is_a_ca_rejected() {
    let root_a = root("a.example");
    let mut spec = LeafSpec::new("spiffe://a.example/w");
    spec.is_ca = true;
    let leaf = spec.signed_by(&root_a);
    let cfg = config_for("a.example", &[("a.example", &root_a)]);
    assert_eq!(verify(&[leaf], &cfg), Err(SvidError::LeafIsCa));
}

#[test]
fn leaf_key_usage_rules() {
    let root_a = root("a.example");
    let cfg = config_for("a.example", &[("a.example", &root_a)]);
    for bad in [KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign] {
        let mut spec = LeafSpec::new("spiffe://a.example/w");
        spec.key_usages.push(bad);
        let err = verify(&[spec.signed_by(&root_a)], &cfg).unwrap_err();
        assert!(matches!(err, SvidError::BadKeyUsage(_)), "{err:?}");
        assert!(err.to_string().contains("keyCertSign"), "{err}");
    }
    let mut spec = LeafSpec::new("spiffe://a.example/w");
    spec.key_usages = vec![KeyUsagePurpose::KeyEncipherment];
    let err = verify(&[spec.signed_by(&root_a)], &cfg).unwrap_err();
    assert!(err.to_string().contains("digitalSignature"), "{err}");

    // No key usage extension at all is tolerated (only present-but-wrong is rejected).
    let mut spec = LeafSpec::new("spiffe://a.example/w");
    spec.key_usages.clear();
    assert!(verify(&[spec.signed_by(&root_a)], &cfg).is_ok());
}

#[test]
fn extended_key_usage_per_role() {
    let root_a = root("a.example");
    let cfg = config_for("a.example", &[("a.example", &root_a)]);
    let mut spec = LeafSpec::new("spiffe://a.example/server-only");
    spec.ekus = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_only = spec.signed_by(&root_a);
    let chain = [server_only];
    assert!(verify_svid_for(&chain, &cfg, now(), Usage::ServerAuth).is_ok());
    assert!(verify_svid_for(&chain, &cfg, now(), Usage::Any).is_ok());
    match verify_svid_for(&chain, &cfg, now(), Usage::ClientAuth) {
        Err(e @ SvidError::BadExtendedKeyUsage { .. }) => {
            assert!(e.to_string().contains("clientAuth"), "{e}")
        }
        other => panic!("{other:?}"),
    }

    let mut spec = LeafSpec::new("spiffe://a.example/code");
    spec.ekus = vec![ExtendedKeyUsagePurpose::CodeSigning];
    assert!(matches!(
        verify(&[spec.signed_by(&root_a)], &cfg),
        Err(SvidError::BadExtendedKeyUsage { .. })
    ));

    let mut spec = LeafSpec::new("spiffe://a.example/no-eku");
    spec.ekus.clear();
    let chain = [spec.signed_by(&root_a)];
    for usage in [Usage::ClientAuth, Usage::ServerAuth, Usage::Any] {
        assert!(verify_svid_for(&chain, &cfg, now(), usage).is_ok());
    }
}

#[test]
fn leaf_signed_by_another_domains_root_rejected() {
    let root_a = root("a.example");
    let root_b = root("b.example");
    // A leaf claiming domain a, but issued by b's CA; b is federated.
    let forged = leaf(&root_b, "spiffe://a.example/ns/default/sa/admin");
    let cfg = config_for(
        "a.example",
        &[("a.example", &root_a), ("b.example", &root_b)],
    );
    let err = verify(&[forged], &cfg).unwrap_err();
    assert!(matches!(err, SvidError::UnknownIssuer { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "certificate for spiffe://a.example/ns/default/sa/admin is not signed by a root of trust \
         domain a.example"
    );
}

#[test]
fn domain_b_cert_signed_by_a_root_rejected_unless_alias() {
    let root_a = root("a.example");
    let root_b = root("b.example");
    let cert_b = leaf(&root_a, "spiffe://b.example/ns/default/sa/web");

    // b not trusted at all.
    let cfg = config_for("a.example", &[("a.example", &root_a)]);
    match verify(std::slice::from_ref(&cert_b), &cfg) {
        Err(SvidError::UntrustedTrustDomain { td: d, .. }) => assert_eq!(d.as_str(), "b.example"),
        other => panic!("{other:?}"),
    }

    // b federated with its own root: a's root must not vouch for b identities.
    let cfg = config_for(
        "a.example",
        &[("a.example", &root_a), ("b.example", &root_b)],
    );
    match verify(std::slice::from_ref(&cert_b), &cfg) {
        Err(SvidError::UnknownIssuer { td: d, .. }) => assert_eq!(d.as_str(), "b.example"),
        other => panic!("{other:?}"),
    }

    // b is an alias of a (trust-domain migration): a's CA issues b identities.
    let cfg = config_for("a.example", &[("a.example", &root_a)]).with_aliases([td("b.example")]);
    assert_eq!(
        verify(std::slice::from_ref(&cert_b), &cfg).unwrap(),
        "spiffe://b.example/ns/default/sa/web"
    );

    // The alias relationship is one-way: a's local roots, not b's, anchor the alias.
    let cert_a_by_b = leaf(&root_b, "spiffe://a.example/w");
    let cfg = config_for(
        "a.example",
        &[("a.example", &root_a), ("b.example", &root_b)],
    )
    .with_aliases([td("b.example")]);
    assert!(matches!(
        verify(&[cert_a_by_b], &cfg),
        Err(SvidError::UnknownIssuer { .. })
    ));
}

#[test]
fn federated_domain_with_own_root_accepted() {
    let root_a = root("a.example");
    let root_b = root("b.example");
    let int_b = intermediate(&root_b, "b.example");
    let cert_b = leaf(&int_b, "spiffe://b.example/ns/payments/sa/api");
    let cert_a = leaf(&root_a, "spiffe://a.example/ns/default/sa/web");
    let cfg = config_for(
        "a.example",
        &[("a.example", &root_a), ("b.example", &root_b)],
    );
    let v = verify_svid(&[cert_b, int_b.cert.clone()], &cfg, now()).unwrap();
    assert_eq!(v.id.trust_domain().as_str(), "b.example");
    assert_eq!(v.chain_len, 3);
    assert!(verify(&[cert_a], &cfg).is_ok());
}

#[test]
fn untrusted_and_rootless_domains() {
    let root_a = root("a.example");
    let root_c = root("c.example");
    let cfg = config_for("a.example", &[("a.example", &root_a)]);
    let cert_c = leaf(&root_c, "spiffe://c.example/w");
    let err = verify(&[cert_c], &cfg).unwrap_err();
    assert_eq!(
        err,
        SvidError::UntrustedTrustDomain {
            id: SpiffeId::parse("spiffe://c.example/w").unwrap(),
            td: td("c.example")
        }
    );
    // The sentence names the peer and its domain.
    assert!(
        err.to_string()
            .starts_with("peer spiffe://c.example/w: trust domain c.example is not trusted"),
        "{err}"
    );

    // Local domain configured without any roots.
    let cfg = TrustConfig::new(td("a.example"), TrustBundleSet::new());
    let cert_a = leaf(&root_a, "spiffe://a.example/w");
    assert_eq!(
        verify(&[cert_a], &cfg),
        Err(SvidError::NoRootsFor {
            id: SpiffeId::parse("spiffe://a.example/w").unwrap(),
            td: td("a.example")
        })
    );
}

#[test]
fn impostor_ca_with_same_name_rejected() {
    let root_a = root("a.example");
    // Same subject DN as the real root, different key.
    let impostor = root("a.example");
    let forged = leaf(&impostor, "spiffe://a.example/w");
    let cfg = config_for("a.example", &[("a.example", &root_a)]);
    let err = verify(&[forged], &cfg).unwrap_err();
    assert!(matches!(err, SvidError::BadSignature(_)), "{err:?}");
    assert!(err.to_string().contains("does not verify"), "{err}");
}

#[test]
fn root_rotation_both_roots_verify() {
    let old = CaSpec::new("root old", "a.example").self_signed();
    let new = CaSpec::new("root new", "a.example").self_signed();
    let cfg = config_for("a.example", &[("a.example", &old), ("a.example", &new)]);
    assert!(verify(&[leaf(&old, "spiffe://a.example/w")], &cfg).is_ok());
    assert!(verify(&[leaf(&new, "spiffe://a.example/w")], &cfg).is_ok());
    // After the old root is dropped, its leaves stop verifying.
    let cfg = config_for("a.example", &[("a.example", &new)]);
    assert!(verify(&[leaf(&old, "spiffe://a.example/w")], &cfg).is_err());
}

#[test]
fn expired_root_next_to_valid_one_is_skipped() {
    // Same key material is not shared, so only the valid root can anchor its own leaves; the
    // expired root must not make verification of those fail.
    let mut spec = CaSpec::new("root expired", "a.example");
    spec.not_after = NOW_SECS - DAY;
    let expired = spec.self_signed();
    let valid = CaSpec::new("root valid", "a.example").self_signed();
    let cfg = config_for(
        "a.example",
        &[("a.example", &expired), ("a.example", &valid)],
    );
    assert!(verify(&[leaf(&valid, "spiffe://a.example/w")], &cfg).is_ok());
    assert!(matches!(
        verify(&[leaf(&expired, "spiffe://a.example/w")], &cfg),
        Err(SvidError::Expired { .. })
    ));
}

#[test]
fn intermediate_rules() {
    let root_a = root("a.example");
    let cfg = config_for("a.example", &[("a.example", &root_a)]);

    // Intermediate whose key usage lacks keyCertSign.
    let mut spec = CaSpec::new("int no certsign", "a.example");
    spec.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let int = spec.signed_by(&root_a);
    let err = verify(
        &[leaf(&int, "spiffe://a.example/w"), int.cert.clone()],
        &cfg,
    )
    .unwrap_err();
    assert!(matches!(err, SvidError::BadKeyUsage(_)), "{err:?}");
    assert!(err.to_string().contains("int no certsign"), "{err}");

    // "Intermediate" that is not a CA at all.
    let mut spec = CaSpec::new("int not ca", "a.example");
    spec.is_ca = false;
    let int = spec.signed_by(&root_a);
    let err = verify(
        &[leaf(&int, "spiffe://a.example/w"), int.cert.clone()],
        &cfg,
    )
    .unwrap_err();
    assert_eq!(err, SvidError::IntermediateNotCa);
}

#[test]
fn path_length_constraint_enforced() {
    let mut spec = CaSpec::new("root pathlen0", "a.example");
    spec.path_len = Some(0);
    let root_a = spec.self_signed();
    let int = intermediate(&root_a, "a.example");
    let cfg = config_for("a.example", &[("a.example", &root_a)]);
    // Directly issued leaves are fine, one intermediate below a pathLen 0 root is not.
    assert!(verify(&[leaf(&root_a, "spiffe://a.example/w")], &cfg).is_ok());
    let err = verify(
        &[leaf(&int, "spiffe://a.example/w"), int.cert.clone()],
        &cfg,
    )
    .unwrap_err();
    assert_eq!(err, SvidError::PathLenExceeded);

    // An intermediate's own pathLenConstraint is enforced too.
    let root_b = root("a.example");
    let mut spec = CaSpec::new("int pathlen0", "a.example");
    spec.path_len = Some(0);
    let i1 = spec.signed_by(&root_b);
    let i2 = CaSpec::new("int below", "a.example").signed_by(&i1);
    let cfg = config_for("a.example", &[("a.example", &root_b)]);
    assert!(verify(&[leaf(&i1, "spiffe://a.example/w"), i1.cert.clone()], &cfg).is_ok());
    let err = verify(
        &[
            leaf(&i2, "spiffe://a.example/w"),
            i2.cert.clone(),
            i1.cert.clone(),
        ],
        &cfg,
    )
    .unwrap_err();
    assert_eq!(err, SvidError::PathLenExceeded);
}

#[test]
fn empty_and_garbage_chains() {
    let root_a = root("a.example");
    let cfg = config_for("a.example", &[("a.example", &root_a)]);
    assert_eq!(verify(&[], &cfg), Err(SvidError::EmptyChain));
    let garbage = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x01]);
    assert!(matches!(
        verify(&[garbage], &cfg),
        Err(SvidError::Malformed(_))
    ));
    let good = leaf(&root_a, "spiffe://a.example/w");
    let mut truncated = good.as_ref().to_vec();
    truncated.truncate(truncated.len() - 10);
    assert!(matches!(
        verify(&[CertificateDer::from(truncated)], &cfg),
        Err(SvidError::Malformed(_))
    ));
}

#[test]
fn tampered_leaf_signature_rejected() {
    let root_a = root("a.example");
    let cfg = config_for("a.example", &[("a.example", &root_a)]);
    let good = leaf(&root_a, "spiffe://a.example/w");
    let mut bytes = good.as_ref().to_vec();
    // Flip a bit in the last byte of the signature value.
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    let err = verify(&[CertificateDer::from(bytes)], &cfg).unwrap_err();
    assert!(matches!(err, SvidError::BadSignature(_)), "{err:?}");
}
