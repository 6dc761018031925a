//! Issuance: root → intermediate → leaf, CSR handling, TTL and trust-domain rules.

use std::time::Duration;

use rcgen::KeyPair;
use time::OffsetDateTime;
use trustmesh_ca::{CaError, CertificateAuthority, InitOptions, IssueRequest, KeyType, TtlPolicy};
use trustmesh_identity::{SpiffeId, TrustDomain};
use trustmesh_testkit::pki::istio::plugin_ca;
use trustmesh_testkit::pki::{csr as csr_for, uri_sans, with_cert};
use trustmesh_testkit::tools::openssl;

fn td(s: &str) -> TrustDomain {
    TrustDomain::parse(s).unwrap()
}

#[test]
fn plugin_chain_has_istio_workload_profile() {
    let (root, ca) = plugin_ca("cluster.local");
    let id = SpiffeId::parse("spiffe://cluster.local/ns/default/sa/web").unwrap();
    let mut req = IssueRequest::new(id.clone());
    req.ttl = Duration::from_secs(3600);
    let before = OffsetDateTime::now_utc();
    let svid = ca.issue(&req).unwrap();

    // Chain: leaf, intermediate, root; root-cert.pem is the root.
    assert_eq!(svid.chain.len(), 3);
    assert_eq!(svid.chain[1], *ca.ca_cert());
    assert_eq!(svid.chain[2], root.roots()[0]);
    assert_eq!(svid.root_pem, root.roots_pem());
    assert!(svid
        .key_pem
        .as_deref()
        .unwrap()
        .starts_with("-----BEGIN PRIVATE KEY-----"));
    assert_eq!(svid.chain_pem.matches("BEGIN CERTIFICATE").count(), 3);

    with_cert(svid.leaf(), |c| {
        // Empty subject, SAN = exactly the SPIFFE ID, critical (RFC 5280 with empty subject).
        assert_eq!(c.subject().iter().count(), 0);
        let san = c.subject_alternative_name().unwrap().unwrap();
        assert!(san.critical);
        assert_eq!(san.value.general_names.len(), 1);
        assert_eq!(uri_sans(svid.leaf()), [id.as_str()]);
        let bc = c.basic_constraints().unwrap().unwrap();
        assert!(!bc.value.ca);
        let ku = c.key_usage().unwrap().unwrap().value;
        assert!(ku.digital_signature() && ku.key_encipherment());
        assert!(!ku.key_cert_sign());
        let eku = c.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);
        // Serial: positive, 16 bytes.
        let serial = c.raw_serial();
        assert_eq!(serial.len(), 16);
        assert!(serial[0] & 0x80 == 0 && serial[0] != 0);
        assert_eq!(c.raw_serial_as_string().replace(':', ""), svid.serial_hex);
        // Issuer is the intermediate.
        with_cert(ca.ca_cert(), |i| {
            assert_eq!(c.issuer().as_raw(), i.subject().as_raw())
        });
        assert!(c.verify_signature(None).is_err());
        with_cert(ca.ca_cert(), |i| {
            c.verify_signature(Some(i.public_key())).unwrap()
        });
        // Validity: 2 minutes of clock-skew grace, 1h lifetime.
        let nb = c.validity().not_before.timestamp();
        let na = c.validity().not_after.timestamp();
        let t0 = before.unix_timestamp();
        assert!(
            (t0 - 121..=t0 - 119).contains(&nb),
            "notBefore {nb} vs now {t0}"
        );
        assert!(
            (t0 + 3599..=t0 + 3601).contains(&na),
            "notAfter {na} vs now {t0}"
        );
    });
    // Two issuances never share a serial.
    let other = ca.issue(&req).unwrap();
    assert_ne!(other.serial_hex, svid.serial_hex);
}

#[test]
fn intermediate_is_constrained_ca_below_root() {
    let (root, ca) = plugin_ca("example.org");
    assert_eq!(ca.chain().len(), 2);
    assert_eq!(ca.chain()[1], root.roots()[0]);
    with_cert(ca.ca_cert(), |c| {
        let bc = c.basic_constraints().unwrap().unwrap().value;
        assert!(bc.ca);
        assert_eq!(bc.path_len_constraint, Some(0));
        let ku = c.key_usage().unwrap().unwrap().value;
        assert!(ku.key_cert_sign() && ku.crl_sign());
        with_cert(&root.roots()[0], |r| {
            assert_eq!(c.issuer().as_raw(), r.subject().as_raw());
            assert_ne!(c.subject().as_raw(), r.subject().as_raw());
            c.verify_signature(Some(r.public_key())).unwrap();
        });
    });
    with_cert(&root.roots()[0], |r| {
        assert_eq!(r.subject().to_string(), "O=example.org");
        let bc = r.basic_constraints().unwrap().unwrap().value;
        assert!(bc.ca && bc.path_len_constraint.is_none());
        r.verify_signature(None).unwrap();
        let na = r.validity().not_after.timestamp() - OffsetDateTime::now_utc().unix_timestamp();
        assert!((3650 * 86_400 - 5..=3650 * 86_400 + 5).contains(&na));
    });
    assert_eq!(uri_sans(&root.roots()[0]), ["spiffe://example.org"]);

    // pathlen:0 forbids another level.
    let err = CertificateAuthority::init_intermediate(
        &ca,
        &td("example.org"),
        &InitOptions::intermediate(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("pathLenConstraint 0"), "{err}");
    // A different trust domain under this root is refused.
    let err = CertificateAuthority::init_intermediate(
        &root,
        &td("other.org"),
        &InitOptions::intermediate(),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("parent CA serves trust domain example.org"),
        "{err}"
    );
    // ...unless asked for explicitly (trust domain migration under one root): the intermediate
    // then issues only for its own domain, and its leaves chain to the shared root.
    let opts = InitOptions {
        cross_trust_domain: true,
        ..InitOptions::intermediate()
    };
    let other = CertificateAuthority::init_intermediate(&root, &td("other.org"), &opts).unwrap();
    assert_eq!(other.trust_domain().as_str(), "other.org");
    let svid = other
        .issue(&IssueRequest::new(
            SpiffeId::parse("spiffe://other.org/ns/a/sa/b").unwrap(),
        ))
        .unwrap();
    assert_eq!(svid.chain.len(), 3);
    let err = other
        .issue(&IssueRequest::new(
            SpiffeId::parse("spiffe://example.org/ns/a/sa/b").unwrap(),
        ))
        .unwrap_err();
    assert!(
        err.to_string().contains("not in trust domain other.org"),
        "{err}"
    );
}

#[test]
fn chain_is_accepted_by_openssl_verify() {
    let (_root, ca) = plugin_ca("cluster.local");
    let svid = ca
        .issue(&IssueRequest::new(
            SpiffeId::parse("spiffe://cluster.local/ns/a/sa/b").unwrap(),
        ))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    svid.write_issued(dir.path()).unwrap();
    let pems: Vec<_> = svid
        .chain
        .iter()
        .map(|c| pem::Pem::new("CERTIFICATE", c.to_vec()))
        .collect();
    std::fs::write(dir.path().join("leaf.pem"), pem::encode(&pems[0])).unwrap();
    std::fs::write(dir.path().join("inter.pem"), pem::encode(&pems[1])).unwrap();
    let out = openssl(
        dir.path(),
        &[
            "verify",
            "-CAfile",
            "root-cert.pem",
            "-untrusted",
            "inter.pem",
            "-purpose",
            "sslclient",
            "leaf.pem",
        ],
    );
    assert!(out.contains("leaf.pem: OK"), "{out}");
    let text = openssl(dir.path(), &["x509", "-in", "leaf.pem", "-noout", "-text"]);
    assert!(
        text.contains("URI:spiffe://cluster.local/ns/a/sa/b"),
        "{text}"
    );
    assert!(
        text.contains("TLS Web Server Authentication, TLS Web Client Authentication"),
        "{text}"
    );
}

#[test]
fn csr_key_is_certified_and_san_checked() {
    let (_root, ca) = plugin_ca("cluster.local");
    let id = "spiffe://cluster.local/ns/default/sa/api";
    let key = KeyPair::generate().unwrap();

    for uris in [vec![id], vec![]] {
        let mut req = IssueRequest::new(SpiffeId::parse(id).unwrap());
        req.csr_pem = Some(csr_for(&key, &uris));
        let svid = ca.issue(&req).unwrap();
        assert!(svid.key_pem.is_none());
        assert_eq!(uri_sans(svid.leaf()), [id]);
        with_cert(svid.leaf(), |c| {
            assert_eq!(
                c.public_key().subject_public_key.data.as_ref(),
                key.public_key_raw()
            );
        });
    }

    let mut req = IssueRequest::new(SpiffeId::parse(id).unwrap());
    req.csr_pem = Some(csr_for(
        &key,
        &["spiffe://cluster.local/ns/default/sa/admin"],
    ));
    let err = ca.issue(&req).unwrap_err();
    assert_eq!(
        err.to_string(),
        "CSR asks for spiffe://cluster.local/ns/default/sa/admin, request is for spiffe://cluster.local/ns/default/sa/api"
    );
    // A second, different URI next to the right one is refused too.
    req.csr_pem = Some(csr_for(
        &key,
        &[id, "spiffe://cluster.local/ns/kube-system/sa/x"],
    ));
    assert!(matches!(
        ca.issue(&req),
        Err(CaError::CsrIdentityMismatch { .. })
    ));
}

#[test]
fn tampered_or_garbage_csr_is_refused() {
    let (_root, ca) = plugin_ca("cluster.local");
    let id = SpiffeId::parse("spiffe://cluster.local/ns/default/sa/api").unwrap();
    let key = KeyPair::generate().unwrap();
    let csr = csr_for(&key, &[id.as_str()]);
    let mut der = pem::parse(&csr).unwrap().into_contents();
    // Flip a bit inside the SAN value: the self-signature must no longer verify.
    let pos = der.windows(4).position(|w| w == b"sa/a").unwrap();
    der[pos + 3] ^= 0x01;
    let tampered = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der));
    let mut req = IssueRequest::new(id.clone());
    req.csr_pem = Some(tampered);
    let err = ca.issue(&req).unwrap_err();
    assert!(
        err.to_string().contains("signature does not verify"),
        "{err}"
    );

    req.csr_pem = Some("not a csr".into());
    let err = ca.issue(&req).unwrap_err();
    assert!(err.to_string().starts_with("invalid CSR:"), "{err}");
}

/// CSR from an openssl-generated key: `genpkey` arguments per algorithm.
fn openssl_csr(dir: &std::path::Path, genpkey: &[&str]) -> String {
    openssl(dir, &[&["genpkey"], genpkey, &["-out", "k.pem"]].concat());
    let id = "spiffe://cluster.local/ns/a/sa/b";
    trustmesh_testkit::pki::openssl::csr(dir, "k.pem", "/CN=x", id, "r.csr")
}

#[test]
fn csr_key_algorithms() {
    let (_root, ca) = plugin_ca("cluster.local");
    let dir = tempfile::tempdir().unwrap();
    let mut req = IssueRequest::new(SpiffeId::parse("spiffe://cluster.local/ns/a/sa/b").unwrap());

    for (args, key_type) in [
        (
            &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"][..],
            "RSA",
        ),
        (
            &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"][..],
            "EC",
        ),
    ] {
        req.csr_pem = Some(openssl_csr(dir.path(), args));
        let svid = ca.issue(&req).unwrap_or_else(|e| panic!("{key_type}: {e}"));
        std::fs::write(
            dir.path().join("leaf.pem"),
            trustmesh_identity::pem::cert_to_pem(svid.leaf()),
        )
        .unwrap();
        assert_eq!(
            openssl(
                dir.path(),
                &["x509", "-in", "leaf.pem", "-noout", "-pubkey"]
            ),
            openssl(dir.path(), &["pkey", "-in", "k.pem", "-pubout"]),
            "{key_type}"
        );
    }

    for (args, want) in [
        (
            &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"][..],
            "RSA key of 1024 bits is too weak (minimum 2048)",
        ),
        (
            &["-algorithm", "ED25519"][..],
            "unsupported public key algorithm",
        ),
    ] {
        req.csr_pem = Some(openssl_csr(dir.path(), args));
        let err = ca.issue(&req).unwrap_err();
        assert!(err.to_string().contains(want), "{err}");
    }
}

#[test]
fn ttl_rules_follow_istio() {
    let (_root, mut ca) = plugin_ca("cluster.local");
    let id = SpiffeId::parse("spiffe://cluster.local/ns/default/sa/web").unwrap();

    // Zero TTL → default 24h.
    let now = OffsetDateTime::now_utc();
    let svid = ca.issue_at(&IssueRequest::new(id.clone()), now).unwrap();
    assert_eq!(
        (svid.not_after - now).whole_seconds(),
        24 * 3600 - (now.nanosecond() > 0) as i64
    );

    // Exactly the max (90 days) is fine; a second more is refused with Istio's wording.
    let mut req = IssueRequest::new(id.clone());
    req.ttl = Duration::from_secs(90 * 86_400);
    ca.issue(&req).unwrap();
    req.ttl = Duration::from_secs(91 * 86_400);
    let err = ca.issue(&req).unwrap_err();
    assert_eq!(
        err.to_string(),
        "requested TTL 2184h0m0s is greater than the max allowed TTL 2160h0m0s"
    );

    // A custom policy is honoured and validated.
    ca.set_ttl_policy(TtlPolicy {
        default_ttl: Duration::from_secs(600),
        max_ttl: Duration::from_secs(3600),
    })
    .unwrap();
    req.ttl = Duration::from_secs(7200);
    assert!(matches!(ca.issue(&req), Err(CaError::TtlTooLong { .. })));
    let err = ca
        .set_ttl_policy(TtlPolicy {
            default_ttl: Duration::from_secs(7200),
            max_ttl: Duration::from_secs(3600),
        })
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("default TTL 2h0m0s is greater than the max TTL 1h0m0s"),
        "{err}"
    );
}

#[test]
fn leaf_is_clamped_to_ca_expiry() {
    let (_root, ca) = plugin_ca("cluster.local");
    let ca_expiry = ca.not_after();
    let id = SpiffeId::parse("spiffe://cluster.local/ns/default/sa/web").unwrap();
    let mut req = IssueRequest::new(id);
    req.ttl = Duration::from_secs(24 * 3600);
    // One hour before the CA expires, a 24h request ends with the CA.
    let late = ca_expiry - time::Duration::hours(1);
    let svid = ca.issue_at(&req, late).unwrap();
    assert_eq!(svid.not_after, ca_expiry);
    with_cert(svid.leaf(), |c| {
        assert_eq!(
            c.validity().not_after.timestamp(),
            ca_expiry.unix_timestamp()
        )
    });
    // After the CA expired, issuance is refused.
    let err = ca
        .issue_at(&req, ca_expiry + time::Duration::seconds(1))
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("signing certificate has expired at"),
        "{err}"
    );
}

#[test]
fn wrong_trust_domain_is_refused() {
    let (_root, ca) = plugin_ca("cluster.local");
    let req =
        IssueRequest::new(SpiffeId::parse("spiffe://evil.example/ns/default/sa/web").unwrap());
    let err = ca.issue(&req).unwrap_err();
    assert_eq!(
        err.to_string(),
        "spiffe://evil.example/ns/default/sa/web is not in trust domain cluster.local served by this CA"
    );
}

#[test]
fn rsa_root_and_rsa_leaf() {
    let opts = InitOptions {
        key_type: KeyType::Rsa2048,
        ..InitOptions::root()
    };
    let root = CertificateAuthority::init_root(&td("rsa.example"), &opts).unwrap();
    assert_eq!(root.key_algorithm(), "RSA");
    let mut req = IssueRequest::new(SpiffeId::parse("spiffe://rsa.example/ns/a/sa/b").unwrap());
    req.key_type = KeyType::Rsa2048;
    let svid = root.issue(&req).unwrap();
    assert_eq!(svid.chain.len(), 2);
    assert!(svid
        .key_pem
        .as_deref()
        .unwrap()
        .contains("BEGIN PRIVATE KEY"));
    with_cert(svid.leaf(), |c| {
        with_cert(&root.roots()[0], |r| {
            c.verify_signature(Some(r.public_key())).unwrap()
        });
        assert!(matches!(
            c.public_key().parsed().unwrap(),
            x509_parser::public_key::PublicKey::RSA(_)
        ));
    });
}

#[test]
fn plugin_chain_verifies_with_identity_verify_svid() {
    use trustmesh_identity::{verify_svid, TrustBundleSet, TrustConfig, UnixTime};
    let (root, ca) = plugin_ca("cluster.local");
    let id = SpiffeId::parse("spiffe://cluster.local/ns/default/sa/web").unwrap();
    let svid = ca.issue(&IssueRequest::new(id.clone())).unwrap();

    let mut bundles = TrustBundleSet::new();
    bundles
        .add_root(td("cluster.local"), root.roots()[0].clone())
        .unwrap();
    let trust = TrustConfig::new(td("cluster.local"), bundles);
    let verified = verify_svid(&svid.chain, &trust, UnixTime::now()).unwrap();
    assert_eq!(verified.id, id);
    assert_eq!(verified.serial_hex, svid.serial_hex);
    // Leaf + intermediate only (what a peer sends without the root) verifies too.
    verify_svid(&svid.chain[..2], &trust, UnixTime::now()).unwrap();

    // Another CA's root for the same domain must not verify it.
    let (other_root, _) = plugin_ca("cluster.local");
    let mut other = TrustBundleSet::new();
    other
        .add_root(td("cluster.local"), other_root.roots()[0].clone())
        .unwrap();
    let trust = TrustConfig::new(td("cluster.local"), other);
    assert!(verify_svid(&svid.chain, &trust, UnixTime::now()).is_err());

    // Past the leaf's notAfter it is rejected.
    let later = UnixTime::since_unix_epoch(Duration::from_secs(
        svid.not_after.unix_timestamp() as u64 + 10,
    ));
    let mut bundles = TrustBundleSet::new();
    bundles
        .add_root(td("cluster.local"), root.roots()[0].clone())
        .unwrap();
    let trust = TrustConfig::new(td("cluster.local"), bundles);
    assert!(verify_svid(&svid.chain, &trust, later).is_err());
}

#[test]
fn the_ca_serving_certificate_is_the_workload_profile_plus_host_names() {
    let (root, ca) = plugin_ca("cluster.local");
    let id = SpiffeId::parse("spiffe://cluster.local/ns/istio-system/sa/istiod").unwrap();
    let names = ["localhost".to_string(), "127.0.0.1".to_string()];
    // Longer than the workload maximum (the CA's own certificate is not bound by it).
    let long = ca.ttl_policy().max_ttl + Duration::from_secs(3600);
    let svid = ca.issue_server(&id, &names, long).unwrap();
    assert_eq!(svid.chain.len(), 3);
    assert!(svid.key_pem.is_some(), "the key is generated with it");
    assert_eq!(uri_sans(svid.leaf()), vec![id.to_string()]);
    with_cert(svid.leaf(), |c| {
        let san = c.subject_alternative_name().unwrap().unwrap();
        let rendered: Vec<String> = san
            .value
            .general_names
            .iter()
            .map(|n| format!("{n}"))
            .collect();
        assert!(
            rendered.iter().any(|n| n.contains("localhost")),
            "{rendered:?}"
        );
        assert!(
            rendered.iter().any(|n| n.contains("7f:00:00:01")),
            "{rendered:?}"
        );
        assert!(!c.is_ca());
    });
    // Verifies as the CA's identity against the root, like any SVID.
    let mut bundles = trustmesh_identity::TrustBundleSet::new();
    bundles
        .add_root(td("cluster.local"), root.roots()[0].clone())
        .unwrap();
    let trust = trustmesh_identity::TrustConfig::new(td("cluster.local"), bundles);
    let v = trustmesh_identity::verify_svid(&svid.chain, &trust, rustls_pki_types::UnixTime::now())
        .unwrap();
    assert_eq!(v.id, id);
    // A name that is neither a DNS name nor an IP is refused with the name in the error.
    let e = ca
        .issue_server(&id, &["bad name!".into()], Duration::from_secs(60))
        .unwrap_err();
    assert!(e.to_string().contains("bad name!"), "{e}");
}
