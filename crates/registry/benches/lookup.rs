//! Finding a peer's workload by its SPIFFE ID in a registry of 100, 1,000 and 10,000
//! WorkloadEntries (one service account each): the index (`Registry::workloads_with`) next to
//! the scan over every workload it replaced. A sidecar asks this on every outbound request, to
//! name the server in Istio's metrics; the peer asked for is the last one read, so the scan
//! walks the whole registry.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use trustmesh_identity::SpiffeId;
use trustmesh_policy::MeshConfig;
use trustmesh_registry::{Options, Registry};

fn registry(n: usize) -> Registry {
    let mut yaml = String::new();
    for i in 0..n {
        // Addresses from the benchmarking range 198.18.0.0/15.
        yaml.push_str(&format!(
            "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: w{i}, \
             namespace: bench}}\nspec: {{address: 198.18.{}.{}, serviceAccount: sa{i}}}\n---\n",
            i / 250,
            i % 250 + 1
        ));
    }
    let (reg, report) = Registry::from_yaml_str(
        "bench.yaml",
        &yaml,
        &MeshConfig::default(),
        &Options::default(),
    );
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(reg.workloads().len(), n);
    reg
}

fn lookup(c: &mut Criterion) {
    let mut g = c.benchmark_group("workload_by_identity");
    for n in [100, 1_000, 10_000] {
        let reg = registry(n);
        let id =
            SpiffeId::parse(&format!("spiffe://cluster.local/ns/bench/sa/sa{}", n - 1)).unwrap();
        assert_eq!(reg.workloads_with(&id).count(), 1);
        g.bench_with_input(BenchmarkId::new("index", n), &id, |b, id| {
            b.iter(|| black_box(reg.workloads_with(black_box(id)).next()))
        });
        g.bench_with_input(BenchmarkId::new("scan", n), &id, |b, id| {
            b.iter(|| {
                black_box(
                    reg.workloads()
                        .iter()
                        .find(|w| w.identity.as_ref() == Some(black_box(id))),
                )
            })
        });
    }
    g.finish();
}

criterion_group!(benches, lookup);
criterion_main!(benches);
