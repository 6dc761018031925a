//! One decision against 10, 100 and 1,000 AuthorizationPolicies selecting the same workload,
//! and loading 10,000 policies.
//!
//! Scenarios (the request matches the last policy unless said otherwise, so a plain scan
//! would try every rule): `exact` — every policy names exact principals (the common case; one
//! policy in ten is a DENY, and the request matches one in the middle); `prefix` — principals
//! are namespace prefixes; `linear` — negative source fields, methods and a `when` header
//! condition; `negative` — only `not*` fields (each earlier policy excludes the request through
//! a different one of notPrincipals, notNamespaces, notIpBlocks, notPaths); `when` — only a
//! `when` header condition, a different value per policy; `methods-hosts` — operation fields
//! without paths (hosts, methods, ports); `multi` — two `from` and two `to` entries per rule;
//! `explain` — the full `evaluate` that `trustmesh authz check` prints, which reports on every
//! policy by design. `load` reads 10,000 policies, and then also answers one request (which
//! builds the workload's rule index).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use trustmesh_policy::{MeshConfig, PolicySet, Request, Verdict};

#[derive(Clone, Copy)]
enum Kind {
    Exact,
    Prefix,
    Linear,
    Negative,
    When,
    MethodsHosts,
    Multi,
}

const KINDS: [(&str, Kind); 7] = [
    ("exact", Kind::Exact),
    ("prefix", Kind::Prefix),
    ("linear", Kind::Linear),
    ("negative", Kind::Negative),
    ("when", Kind::When),
    ("methods-hosts", Kind::MethodsHosts),
    ("multi", Kind::Multi),
];

fn policies(n: usize, kind: Kind) -> String {
    let mut y = String::new();
    for i in 0..n {
        if let Some(rule) = other_rule(n, i, kind) {
            y.push_str(&format!(
                "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: p{i}, namespace: prod}}\nspec:\n  selector: {{matchLabels: {{app: reviews}}}}\n  action: ALLOW\n  rules:\n  - {rule}\n"
            ));
            continue;
        }
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
            _ => unreachable!("written by other_rule"),
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

/// The rule of policy `i` of `n` for the newer scenarios (all ALLOW).
fn other_rule(n: usize, i: usize, kind: Kind) -> Option<String> {
    let last = n - 1;
    let rule = match kind {
        Kind::Exact | Kind::Prefix | Kind::Linear => return None,
        Kind::Negative => {
            // Decoys every policy has, then one value excluding the request (not the last).
            let mut from = format!(
                "notPrincipals: [cluster.local/ns/x/sa/y{i}], notIpBlocks: [172.16.{}.{}/32]",
                i / 256,
                i % 256
            );
            let mut to = format!("notPaths: ['/admin/{i}/*']");
            if i != last {
                match i % 4 {
                    0 => from.push_str(&format!(
                        ", notNamespaces: [team-{last}]"
                    )),
                    1 => from = format!(
                        "notPrincipals: [cluster.local/ns/x/sa/y{i}, 'cluster.local/ns/team-{last}/*'], notIpBlocks: [172.16.{}.{}/32]",
                        i / 256,
                        i % 256
                    ),
                    2 => from = format!(
                        "notPrincipals: [cluster.local/ns/x/sa/y{i}], notIpBlocks: [172.16.{}.{}/32, 10.{}.0.0/16]",
                        i / 256,
                        i % 256,
                        last / 256
                    ),
                    _ => to = format!("notPaths: ['/admin/{i}/*', '/api/{last}/*']"),
                }
            }
            format!("{{from: [{{source: {{{from}}}}}], to: [{{operation: {{{to}}}}}]}}")
        }
        Kind::When => format!(
            "{{when: [{{key: 'request.headers[x-tenant]', values: [t{i}]}}]}}"
        ),
        Kind::MethodsHosts => format!(
            "{{to: [{{operation: {{hosts: [svc-{i}.example.com, 'svc-{i}.example.com:*'], methods: [GET, HEAD], ports: ['{}']}}}}]}}",
            9000 + i % 100
        ),
        Kind::Multi => format!(
            "{{from: [{{source: {{principals: [cluster.local/ns/a-{i}/sa/x]}}}}, {{source: {{namespaces: [team-{i}]}}}}], to: [{{operation: {{paths: ['/api/{i}/*']}}}}, {{operation: {{methods: [DELETE], ports: ['{}']}}}}]}}",
            7000 + i
        ),
    };
    Some(rule)
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
    let (host, port) = match kind {
        Kind::MethodsHosts => (format!("SVC-{i}.example.com:9080"), 9000 + i % 100),
        _ => ("reviews:9080".to_string(), 9080),
    };
    serde_json::from_value(serde_json::json!({
        "destination": {"namespace": "prod", "labels": {"app": "reviews", "version": "v1"}, "ip": "10.0.0.2", "port": port},
        "source": {"principal": principal, "ip": format!("10.{}.{}.9", i / 256, i % 256)},
        "http": {"method": "GET", "path": format!("/api/{i}/items?x=1"), "host": host, "headers": {"x-tenant": format!("t{i}")}}
    }))
    .unwrap()
}

fn decisions(c: &mut Criterion) {
    let mesh = MeshConfig::default();
    let mut g = c.benchmark_group("decision");
    for &n in &[10usize, 100, 1000] {
        for (label, kind) in KINDS {
            let (set, _) =
                PolicySet::from_yaml_str("bench.yaml", &policies(n, kind), &mesh).unwrap();
            let req = request(n, kind);
            let fast = set.evaluate_authz_only(&req);
            assert_eq!(
                fast.decision,
                Verdict::Allow,
                "{label}/{n}: {}",
                fast.reason
            );
            let full = set.evaluate(&req);
            assert_eq!(
                full.decision,
                Verdict::Allow,
                "{label}/{n}: {}",
                full.reason
            );
            // The request matches the last policy (in the middle for `exact`): a plain scan
            // tries every rule before it.
            if !matches!(kind, Kind::Exact) {
                let want = format!("prod/p{}", n - 1);
                assert_eq!(fast.policies[0].name, want, "{label}/{n}");
            }
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
    let req = request(10_000, Kind::Exact);
    g.bench_function("10000_policies_and_first_decision", |b| {
        b.iter(|| {
            let (set, _) = PolicySet::from_yaml_str("bench.yaml", black_box(&text), &mesh).unwrap();
            black_box(set.evaluate_authz_only(black_box(&req)))
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
