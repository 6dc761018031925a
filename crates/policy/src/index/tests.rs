//! Targeted cases of the candidate filter: how many rules reach `check` (the filter must
//! actually narrow), the TCP and absent-attribute rules, and memory at 1,000 policies.

use super::*;
use crate::mesh::MeshConfig;
use crate::request::Request;
use crate::PolicySet;

fn policies(rules: impl Fn(usize) -> String, n: usize, action: &str) -> Vec<CompiledPolicy> {
    let yaml: String = (0..n)
        .map(|i| {
            format!(
                "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: p{i:04}, namespace: prod}}\nspec: {{action: {action}, rules: [{}]}}\n",
                rules(i)
            )
        })
        .collect();
    let (set, _) = PolicySet::from_yaml_str("t.yaml", &yaml, &MeshConfig::default()).unwrap();
    assert!(set.invalid_resources().is_empty(), "{yaml}");
    set.authz
}

fn bucket(ps: &[CompiledPolicy]) -> Bucket {
    let mut b = Bucket::default();
    (0..ps.len() as u32).for_each(|pi| b.add(pi, &ps[pi as usize]));
    b.build(ps);
    b
}

fn req(v: serde_json::Value) -> Request {
    let mut base = serde_json::json!({
        "destination": {"namespace": "prod", "port": 9080},
        "source": {"principal": "spiffe://cluster.local/ns/team-7/sa/app", "ip": "10.0.7.9"},
        "http": {"method": "GET", "path": "/api/7/items?x=1", "host": "Svc-7.example.com:9080",
                 "headers": {"x-tenant": "t7"}}
    });
    if let (Some(b), Some(p)) = (base.as_object_mut(), v.as_object()) {
        for (k, v) in p {
            b.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(base).unwrap()
}

/// The first match and how many rules `check` was asked about.
fn run(b: &Bucket, ps: &[CompiledPolicy], r: &Request) -> (Option<RuleRef>, usize) {
    let a = Attrs::new(r, false);
    let f = b.filter.as_ref().unwrap();
    let (mut found, mut checked) = (None, 0);
    f.candidates(&a, |rn| {
        checked += 1;
        found = b.check(ps, &a, rn);
        found.is_some()
    });
    assert_eq!(found, b.first_match(ps, &a));
    (found, checked)
}

#[test]
fn narrows_every_shape_to_a_few_rules() {
    type Shape = (&'static str, fn(usize) -> String);
    let shapes: [Shape; 6] = [
        ("when", |i| {
            format!("{{when: [{{key: 'request.headers[x-tenant]', values: [t{i}]}}]}}")
        }),
        ("hosts", |i| {
            format!("{{to: [{{operation: {{hosts: [svc-{i}.example.com, 'svc-{i}.example.com:*'], methods: [GET]}}}}]}}")
        }),
        ("multi", |i| {
            format!("{{from: [{{source: {{principals: [cluster.local/ns/a-{i}/sa/x]}}}}, {{source: {{namespaces: [team-{i}]}}}}], to: [{{operation: {{paths: ['/api/{i}/*']}}}}, {{operation: {{methods: [DELETE]}}}}]}}")
        }),
        ("negative", |i| {
            let ex = if i == 7 {
                "cluster.local/ns/none/*"
            } else {
                "cluster.local/ns/team-7/*"
            };
            format!("{{from: [{{source: {{notPrincipals: ['{ex}'], notIpBlocks: [172.16.0.{}/32]}}}}]}}", i % 256)
        }),
        ("ip", |i| {
            format!(
                "{{from: [{{source: {{ipBlocks: [10.{}.{}.0/24]}}}}]}}",
                i / 256,
                i % 256
            )
        }),
        ("claims", |i| {
            format!("{{when: [{{key: 'request.auth.claims[groups]', values: [g{i}]}}]}}")
        }),
    ];
    let r =
        req(serde_json::json!({"auth": {"principal": "i/s", "claims": {"groups": ["x", "g7"]}}}));
    for (name, shape) in shapes {
        let ps = policies(shape, 300, "ALLOW");
        let b = bucket(&ps);
        let (found, checked) = run(&b, &ps, &r);
        assert_eq!(found, Some((7, 0)), "{name}");
        assert_eq!(checked, 1, "{name}: only the matching rule is checked");
    }
}

#[test]
fn tcp_ignores_http_fields_of_deny_rules_only() {
    let rule = |i: usize| {
        format!("{{from: [{{source: {{namespaces: [team-{i}]}}}}], to: [{{operation: {{paths: [/nope]}}}}]}}")
    };
    let tcp = req(serde_json::json!({"http": null}));
    let deny = policies(rule, 20, "DENY");
    assert_eq!(run(&bucket(&deny), &deny, &tcp).0, Some((7, 0)));
    let allow = policies(rule, 20, "ALLOW");
    assert_eq!(run(&bucket(&allow), &allow, &tcp), (None, 0));
    // An ALLOW rule with only a negative HTTP field cannot match TCP either.
    let neg = policies(
        |_| "{to: [{operation: {notPaths: [/x]}}]}".into(),
        5,
        "ALLOW",
    );
    assert_eq!(run(&bucket(&neg), &neg, &tcp), (None, 0));
}

#[test]
fn absent_attributes_satisfy_negative_fields_only() {
    let plaintext = req(serde_json::json!({"source": {"ip": "10.0.7.9"}}));
    let ps = policies(
        |i| match i {
            0 => "{from: [{source: {principals: ['*']}}]}".into(),
            1 => "{from: [{source: {namespaces: ['*']}}]}".into(),
            _ => "{from: [{source: {notPrincipals: ['*']}}]}".into(),
        },
        3,
        "ALLOW",
    );
    assert_eq!(run(&bucket(&ps), &ps, &plaintext).0, Some((2, 0)));
}

#[test]
fn wide_rules_are_split_up_to_the_cap() {
    // 5 × 5 entries is past the cap: the rule keeps its `from` entries as clauses.
    let rule = |i: usize| {
        let from: Vec<String> = (0..5)
            .map(|k| {
                format!(
                    "{{source: {{principals: [cluster.local/ns/team-{}/sa/app]}}}}",
                    i * 5 + k
                )
            })
            .collect();
        let to: Vec<String> = (0..5)
            .map(|k| format!("{{operation: {{paths: ['/api/{k}/*']}}}}"))
            .collect();
        format!("{{from: [{}], to: [{}]}}", from.join(", "), to.join(", "))
    };
    let ps = policies(rule, 10, "ALLOW");
    let b = bucket(&ps);
    // team-7 is the third `from` entry of policy 1, and /api/7 is none of its paths.
    assert_eq!(run(&b, &ps, &req(serde_json::json!({}))), (None, 1));
    let r = req(serde_json::json!({"http": {"method": "GET", "path": "/api/3/x", "host": "h"}}));
    assert_eq!(run(&b, &ps, &r), (Some((1, 0)), 1));
}

#[test]
fn memory_at_a_thousand_policies() {
    let ps = policies(
        |i| {
            format!("{{from: [{{source: {{principals: [cluster.local/ns/a-{i}/sa/x], notIpBlocks: [10.{}.{}.0/24]}}}}], to: [{{operation: {{methods: [GET, POST], paths: ['/api/{i}/*']}}}}], when: [{{key: 'request.headers[x-tenant]', values: [t{i}]}}]}}", i / 256, i % 256)
        },
        1000,
        "ALLOW",
    );
    let bytes = bucket(&ps).heap_bytes();
    eprintln!("filter of 1,000 rules: {bytes} bytes");
    // Five attributes keyed per rule: a few hundred bytes per rule, not kilobytes.
    assert!(bytes < 400 * 1000, "{bytes} bytes");
}
