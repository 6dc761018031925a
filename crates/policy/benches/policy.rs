//! One decision against 10, 100 and 1,000 AuthorizationPolicies selecting the same workload,
//! and loading 10,000 policies.
//!
//! Scenarios: `exact` — every policy names exact principals (the common case, served by the
//! rule index; one policy in ten is a DENY); `prefix` — principals are namespace prefixes
//! (indexed by prefix length); `linear` — rules with only negative source fields and methods, which
//! the index cannot key, so every rule is tried (the worst case, like Envoy's linear RBAC scan); `explain` — the
//! full `evaluate` that `trustmesh authz check` prints, which reports on every policy by design.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use trustmesh_policy::{MeshConfig, PolicySet, Request, Verdict};

#[derive(Clone, Copy)]
enum Kind {
    Exact,
    Prefix,
    Linear,
}

fn policies(n: usize, kind: Kind) -> String {
    let mut y = String::new();
    for i in 0..n {
        let (action, from) = match kind {
            Kind::Exact if i % 10 == 0 => (
                "DENY",
                format!("principals: [cluster.local/ns/evil/sa/x{i}]"),
            ),
            Kind::Exact => (
                "ALLOW",
                format!("principals: [cluster.local/ns/prod/sa/client-{i}]"),
            ),
            Kind::Prefix => (
                "ALLOW",
                format!("principals: ['cluster.local/ns/team-{i}/*']"),
            ),
            Kind::Linear => (
                "ALLOW",
                format!(
                    "notPrincipals: [cluster.local/ns/x/sa/y{i}], notIpBlocks: [10.{}.{}.0/24]",
                    i / 256,
                    (i + 1) % 256
                ),
            ),
        };
        // The linear case has no path: the index cannot key its rules at all.
        let to = match kind {
            Kind::Linear => "methods: [GET, POST]".to_string(),
            _ => format!("methods: [GET, POST], paths: ['/api/{i}/*']"),
        };
        y.push_str(&format!(
            "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: p{i}, namespace: prod}}\nspec:\n  selector: {{matchLabels: {{app: reviews}}}}\n  action: {action}\n  rules:\n  - from: [{{source: {{{from}}}}}]\n    to: [{{operation: {{{to}}}}}]\n    when: [{{key: 'request.headers[x-tenant]', values: [t{i}]}}]\n"
        ));
    }
    y
}

fn request(n: usize, kind: Kind) -> Request {
    let i = match kind {
        Kind::Exact => (n / 2) | 1,
        _ => n - 1,
    };
    let principal = match kind {
        Kind::Exact => format!("spiffe://cluster.local/ns/prod/sa/client-{i}"),
        _ => format!("spiffe://cluster.local/ns/team-{i}/sa/app"),
    };
    serde_json::from_value(serde_json::json!({
        "destination": {"namespace": "prod", "labels": {"app": "reviews", "version": "v1"}, "ip": "10.0.0.2", "port": 9080},
        "source": {"principal": principal, "ip": format!("10.{}.{}.9", i / 256, i % 256)},
        "http": {"method": "GET", "path": format!("/api/{i}/items?x=1"), "host": "reviews:9080", "headers": {"x-tenant": format!("t{i}")}}
    }))
    .unwrap()
}

fn decisions(c: &mut Criterion) {
    let mesh = MeshConfig::default();
    let mut g = c.benchmark_group("decision");
    for &n in &[10usize, 100, 1000] {
        for (label, kind) in [
            ("exact", Kind::Exact),
            ("prefix", Kind::Prefix),
            ("linear", Kind::Linear),
        ] {
            let (set, _) =
                PolicySet::from_yaml_str("bench.yaml", &policies(n, kind), &mesh).unwrap();
            let req = request(n, kind);
            assert_eq!(set.evaluate_authz_only(&req).decision, Verdict::Allow);
            assert_eq!(set.evaluate(&req).decision, Verdict::Allow);
            g.bench_with_input(
                BenchmarkId::new(format!("authz_only/{label}"), n),
                &req,
                |b, r| b.iter(|| black_box(set.evaluate_authz_only(black_box(r)))),
            );
            if let Kind::Exact = kind {
                g.bench_with_input(BenchmarkId::new("explain", n), &req, |b, r| {
                    b.iter(|| black_box(set.evaluate(black_box(r))))
                });
            }
        }
    }
    g.finish();
}

fn loading(c: &mut Criterion) {
    let mesh = MeshConfig::default();
    let text = policies(10_000, Kind::Exact);
    let mut g = c.benchmark_group("load");
    g.sample_size(10);
    g.bench_function("10000_policies", |b| {
        b.iter(|| {
            black_box(PolicySet::from_yaml_str("bench.yaml", black_box(&text), &mesh).unwrap())
        })
    });
    g.finish();
}

/// Path normalization runs on every HTTP request before policy: a clean path must cost next to
/// nothing (one scan, no allocation); a dirty one is rebuilt.
fn normalization(c: &mut Criterion) {
    use trustmesh_policy::normalize::{request, Normalization};
    let mut g = c.benchmark_group("normalize");
    for (name, path) in [
        ("clean", "/api/v1/reviews/12345?include=ratings&page=2"),
        (
            "dot-segments",
            "/api/v1/../v2/./reviews/%31%32?include=ratings",
        ),
        (
            "encoded-slash",
            "/repos/group%2Fproject/tree/main/src/lib.rs",
        ),
    ] {
        for mode in [Normalization::Base, Normalization::DecodeAndMergeSlashes] {
            g.bench_function(BenchmarkId::new(name, mode.as_str()), |b| {
                b.iter(|| request(black_box("GET"), black_box(path), mode).is_ok())
            });
        }
    }
    g.finish();
}

criterion_group!(benches, decisions, loading, normalization);
criterion_main!(benches);
