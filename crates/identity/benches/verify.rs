//! SVID verifications per second for a root -> intermediate -> leaf ECDSA P-256 chain: the
//! per-connection cost the proxy pays when authenticating a peer.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use trustmesh_identity::{verify_svid, TrustBundleSet, TrustConfig, TrustDomain};
use trustmesh_testkit::pki;

fn bench_verify(c: &mut Criterion) {
    let td = TrustDomain::parse("cluster.local").unwrap();
    let root = pki::root("cluster.local");
    let int = pki::intermediate(&root, "cluster.local");
    let leaf = pki::leaf(&int, "spiffe://cluster.local/ns/default/sa/productpage");
    let chain = vec![leaf, int.cert.clone()];

    let mut bundles = TrustBundleSet::new();
    bundles.add_root(&td, root.cert.clone()).unwrap();
    // A federated domain too, so root selection by trust domain is part of the measurement.
    bundles
        .add_root(
            TrustDomain::parse("other.example").unwrap(),
            pki::root("other.example").cert,
        )
        .unwrap();
    let trust = TrustConfig::new(td, bundles);
    let now = pki::now();
    assert!(verify_svid(&chain, &trust, now).is_ok());

    let mut group = c.benchmark_group("verify_svid");
    group.throughput(Throughput::Elements(1));
    group.bench_function("root_intermediate_leaf_p256", |b| {
        b.iter(|| verify_svid(black_box(&chain), black_box(&trust), now).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench_verify);
criterion_main!(benches);
