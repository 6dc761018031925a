//! Issuance throughput of a plug-in (intermediate) CA with ECDSA P-256 keys: with a key
//! generated per certificate, and from a pre-made CSR (what a CA server does for agents).
//! Issuances/s = 1 / reported time per iteration.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rcgen::KeyPair;
use trustmesh_ca::IssueRequest;
use trustmesh_identity::SpiffeId;
use trustmesh_testkit::pki::csr;
use trustmesh_testkit::pki::istio::plugin_ca;

fn bench_issue(c: &mut Criterion) {
    let (_root, ca) = plugin_ca("cluster.local");
    let id = SpiffeId::parse("spiffe://cluster.local/ns/default/sa/bench").unwrap();

    let mut group = c.benchmark_group("issue_ecdsa_p256");
    group.throughput(Throughput::Elements(1));

    let generated = IssueRequest::new(id.clone());
    group.bench_function("generated_key", |b| {
        b.iter(|| ca.issue(&generated).unwrap());
    });

    let key = KeyPair::generate().unwrap();
    let csr = csr(&key, &[id.as_str()]);
    let mut from_csr = IssueRequest::new(id);
    from_csr.csr_pem = Some(csr);
    group.bench_function("from_csr", |b| {
        b.iter(|| ca.issue(&from_csr).unwrap());
    });
    group.finish();
}

criterion_group!(benches, bench_issue);
criterion_main!(benches);
