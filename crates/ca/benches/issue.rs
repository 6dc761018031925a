//! Issuance throughput of a plug-in (intermediate) CA with ECDSA P-256 keys: with a key
//! generated per certificate, and from a pre-made CSR (what a CA server does for agents).
//! Issuances/s = 1 / reported time per iteration.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rcgen::{CertificateParams, KeyPair, SanType};
use trustmesh_ca::{CertificateAuthority, InitOptions, IssueRequest};
use trustmesh_identity::{SpiffeId, TrustDomain};

fn bench_issue(c: &mut Criterion) {
    let td = TrustDomain::parse("cluster.local").unwrap();
    let root = CertificateAuthority::init_root(&td, &InitOptions::root()).unwrap();
    let ca =
        CertificateAuthority::init_intermediate(&root, &td, &InitOptions::intermediate()).unwrap();
    let id = SpiffeId::parse("spiffe://cluster.local/ns/default/sa/bench").unwrap();

    let mut group = c.benchmark_group("issue_ecdsa_p256");
    group.throughput(Throughput::Elements(1));

    let generated = IssueRequest::new(id.clone());
    group.bench_function("generated_key", |b| {
        b.iter(|| ca.issue(&generated).unwrap());
    });

    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![SanType::URI(id.as_str().try_into().unwrap())];
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    let mut from_csr = IssueRequest::new(id);
    from_csr.csr_pem = Some(csr);
    group.bench_function("from_csr", |b| {
        b.iter(|| ca.issue(&from_csr).unwrap());
    });
    group.finish();
}

criterion_group!(benches, bench_issue);
criterion_main!(benches);
