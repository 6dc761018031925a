//! The per-workload rule index (used by the proxy's hot path) must give exactly the decision a
//! full scan of every applicable policy gives (`evaluate`, which explains each policy).

mod common;

use common::*;
use serde_json::json;
use trustmesh_policy::{Action, MeshConfig, Verdict};

fn policy(i: usize) -> String {
    let action = ["ALLOW", "DENY", "ALLOW", "AUDIT", "ALLOW"][i % 5];
    let from = match i % 7 {
        0 => format!("principals: [cluster.local/ns/ns{}/sa/sa{}]", i % 4, i % 3),
        1 => format!("principals: ['cluster.local/ns/ns{}/*']", i % 4),
        2 => format!("principals: ['*/sa/sa{}']", i % 3),
        3 => format!(
            "principals: [cluster.local/ns/ns{}/sa/sa0, 'cluster.local/ns/ns{}/*']",
            i % 4,
            (i + 1) % 4
        ),
        4 => "principals: ['*']".to_string(),
        5 => format!("namespaces: [ns{}]", i % 4),
        _ => format!("notPrincipals: [cluster.local/ns/ns{}/sa/sa1]", i % 4),
    };
    let to = match i % 6 {
        0 => format!("paths: [/p{}]", i % 5),
        1 => format!("paths: ['/p{}*']", i % 5),
        2 => format!("paths: ['*/x{}']", i % 3),
        3 => format!("methods: [GET], paths: ['/p{}/{{*}}']", i % 5),
        4 => format!("ports: ['{}']", 9000 + i % 3),
        _ => "methods: [POST]".to_string(),
    };
    let rule = match i % 5 {
        0 => format!("{{from: [{{source: {{{from}}}}}], to: [{{operation: {{{to}}}}}]}}"),
        1 => format!("{{from: [{{source: {{{from}}}}}]}}"),
        2 => format!("{{to: [{{operation: {{{to}}}}}]}}"),
        3 => format!(
            "{{from: [{{source: {{{from}}}}}, {{source: {{ipBlocks: [10.{}.0.0/16]}}}}]}}",
            i % 3
        ),
        _ => format!(
            "{{from: [{{source: {{ipBlocks: [10.{}.0.0/16, 10.{}.1.1, '10.{}.1.0/24']}}}}], to: [{{operation: {{{to}}}}}]}}",
            i % 3,
            (i + 1) % 4,
            (i + 2) % 4
        ),
    };
    format!("---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: p{i:03}, namespace: prod}}\nspec: {{selector: {{matchLabels: {{app: reviews}}}}, action: {action}, rules: [{rule}]}}\n")
}

#[test]
fn index_matches_full_scan() {
    let mut seen = [0usize; 2];
    for n in [5usize, 40, 120] {
        let yaml: String = (0..n).map(policy).collect();
        let s = set(&yaml, &MeshConfig::default());
        for r in 0..300usize {
            let principal = match r % 5 {
                0 => serde_json::Value::Null,
                k => json!(format!(
                    "spiffe://cluster.local/ns/ns{}/sa/sa{}",
                    k % 4,
                    r % 3
                )),
            };
            let http = if r % 6 == 5 {
                serde_json::Value::Null
            } else {
                let path = match r % 4 {
                    0 => format!("/p{}", r % 5),
                    1 => format!("/p{}/q?z", r % 5),
                    2 => format!("/a/x{}", r % 3),
                    _ => "/other".to_string(),
                };
                json!({"method": if r % 2 == 0 { "GET" } else { "POST" }, "path": path, "host": "h"})
            };
            let req = request(patch(
                base(),
                &json!({"source": {"principal": principal, "ip": format!("10.{}.1.1", r % 4)},
                        "destination": {"port": 9000 + r % 3}, "http": http}),
            ));
            let full = s.evaluate(&req);
            let fast = s.evaluate_authz_only(&req);
            assert_eq!(
                full.decision, fast.decision,
                "n={n} request {r}: {}",
                full.reason
            );
            seen[usize::from(full.decision == Verdict::Allow)] += 1;
            for p in fast.policies.iter().filter(|p| p.action != Action::Audit) {
                let f = full.policies.iter().find(|x| x.name == p.name).unwrap();
                assert!(
                    f.matched,
                    "fast path named {} but full scan says it did not match",
                    p.name
                );
            }
            let audit_full = full
                .policies
                .iter()
                .any(|p| p.action == Action::Audit && p.matched);
            let audit_fast = fast.policies.iter().any(|p| p.action == Action::Audit);
            assert_eq!(
                audit_full, audit_fast,
                "n={n} request {r}: AUDIT match differs"
            );
        }
    }
    assert!(
        seen[0] > 50 && seen[1] > 50,
        "the sample must exercise both outcomes: {seen:?}"
    );
}

/// The proxy shares one `PolicySet` across connection tasks.
#[test]
fn policy_set_is_shareable() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<trustmesh_policy::PolicySet>();
    shareable::<trustmesh_policy::Decision>();
}
