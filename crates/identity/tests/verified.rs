//! The memory of verified chains answers exactly what a fresh verification answers: inside the
//! path's validity window only, per usage, per trust configuration, and never for a failure.

use std::sync::Arc;

use rustls_pki_types::UnixTime;
use trustmesh_identity::verified::ChainVerifier;
use trustmesh_identity::{SvidError, TrustBundleSet, TrustConfig, TrustDomain, Usage};
use trustmesh_testkit::pki::spec::*;

const DAY: i64 = 86_400;

fn trust(root: &Ca) -> Arc<TrustConfig> {
    let td = TrustDomain::parse("a.example").unwrap();
    let mut bundles = TrustBundleSet::new();
    bundles.add_root(td.clone(), root.cert.clone()).unwrap();
    Arc::new(TrustConfig::new(td, bundles))
}

fn secs(t: i64) -> UnixTime {
    UnixTime::since_unix_epoch(std::time::Duration::from_secs(t as u64))
}

#[test]
fn a_verdict_is_reused_only_inside_the_whole_paths_window() {
    let now = now().as_secs() as i64;
    let root = root("a.example");
    // The intermediate expires before the leaf: the path's window ends with the intermediate.
    let mut int_spec = CaSpec::around("int", "a.example", now);
    int_spec.not_after = now + DAY;
    let int = int_spec.signed_by(&root);
    let mut leaf_spec = LeafSpec::around("spiffe://a.example/ns/x/sa/y", now);
    leaf_spec.not_after = now + 2 * DAY;
    let leaf = leaf_spec.signed_by(&int);
    let chain = vec![leaf, int.cert.clone()];
    let v = ChainVerifier::new(trust(&root));

    let first = v.verify(&chain, secs(now), Usage::ClientAuth).unwrap();
    assert_eq!(first.id.as_str(), "spiffe://a.example/ns/x/sa/y");
    assert!(
        first.path_not_after < first.not_after,
        "the intermediate ends the window first"
    );
    assert_eq!(v.remembered(), 1);
    // Same chain, same usage, inside the window: answered from memory, same verdict.
    let again = v.verify(&chain, secs(now + 60), Usage::ClientAuth).unwrap();
    assert_eq!(again.id, first.id);
    assert_eq!(v.remembered(), 1);
    // Past the intermediate's notAfter the remembered success must not be used: the fresh
    // verification names the expired intermediate.
    match v.verify(&chain, secs(now + DAY + 60), Usage::ClientAuth) {
        Err(SvidError::Expired { cert, .. }) => assert!(!cert.contains("leaf"), "{cert}"),
        other => panic!("expected the intermediate to have expired, got {other:?}"),
    }
}

#[test]
fn usage_and_trust_are_part_of_the_verdict() {
    let root_a = root("a.example");
    let mut spec = LeafSpec::new("spiffe://a.example/ns/x/sa/y");
    spec.ekus = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let client_only = vec![spec.signed_by(&root_a)];
    let v = ChainVerifier::new(trust(&root_a));
    v.verify(&client_only, now(), Usage::ClientAuth).unwrap();
    // Accepted as a client certificate; as a server certificate it must still be refused.
    assert!(matches!(
        v.verify(&client_only, now(), Usage::ServerAuth),
        Err(SvidError::BadExtendedKeyUsage { .. })
    ));
    // Failures are not remembered.
    assert_eq!(v.remembered(), 1);

    // Another trust configuration (a rotated root) has its own, empty memory and refuses.
    let other = ChainVerifier::new(trust(&root("a.example")));
    assert!(other
        .verify(&client_only, now(), Usage::ClientAuth)
        .is_err());
    assert_eq!(other.remembered(), 0);
}

#[test]
fn the_table_is_bounded() {
    let root_a = root("a.example");
    let v = ChainVerifier::bounded(trust(&root_a), 8);
    let leaves: Vec<_> = (0..20)
        .map(|i| vec![leaf(&root_a, &format!("spiffe://a.example/ns/x/sa/s{i}"))])
        .collect();
    for (i, chain) in leaves.iter().enumerate() {
        let got = v.verify(chain, now(), Usage::Any).unwrap();
        assert_eq!(got.id.as_str(), format!("spiffe://a.example/ns/x/sa/s{i}"));
        assert!(v.remembered() <= 8, "{} verdicts kept", v.remembered());
    }
    // Starting over keeps answering correctly.
    assert_eq!(
        v.verify(&leaves[0], now(), Usage::Any).unwrap().id.as_str(),
        "spiffe://a.example/ns/x/sa/s0"
    );
}
