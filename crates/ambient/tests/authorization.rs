//! AuthorizationPolicy → ztunnel Authorization, table by table, against what istiod's
//! `convertAuthorizationPolicy` produces. Policies are real Istio YAML read by the policy
//! crate's parser, as everywhere else in trustmesh.

use trustmesh_ambient::istio::security::{
    string_match::MatchType, Action, Address, Authorization, Group, Match, Rules, Scope,
    ServiceAccountMatch, StringMatch,
};
use trustmesh_ambient::{
    authorization, convert_authorization, workload_policies, AuthzOptions, Converted,
};
use trustmesh_policy::document::{parse_text, Parsed, Resource};

const ROOT: &str = "istio-system";

fn resources(yaml: &str) -> Vec<Resource> {
    let mut parsed = Parsed::default();
    parse_text("policy.yaml", yaml, &mut parsed);
    assert!(parsed.broken.is_empty(), "{:?}", parsed.problems);
    parsed.resources
}

fn one(yaml: &str) -> Resource {
    let mut all = resources(yaml);
    assert_eq!(all.len(), 1);
    all.remove(0)
}

fn convert(yaml: &str) -> Converted {
    convert_authorization(&one(yaml), ROOT, AuthzOptions::default())
}

fn policy(namespace: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: p, namespace: {namespace}}}\nspec:\n{spec}"
    )
}

fn exact(s: &str) -> StringMatch {
    StringMatch {
        match_type: Some(MatchType::Exact(s.into())),
    }
}
fn prefix(s: &str) -> StringMatch {
    StringMatch {
        match_type: Some(MatchType::Prefix(s.into())),
    }
}
fn suffix(s: &str) -> StringMatch {
    StringMatch {
        match_type: Some(MatchType::Suffix(s.into())),
    }
}
fn presence() -> StringMatch {
    StringMatch {
        match_type: Some(MatchType::Presence(())),
    }
}
fn addr(bytes: &[u8], length: u32) -> Address {
    Address {
        address: bytes.to_vec(),
        length,
    }
}
fn rules(matches: Vec<Match>) -> Rules {
    Rules { matches }
}

#[test]
fn scope_follows_selector_and_root_namespace() {
    let table = [
        (policy("prod", "  action: ALLOW\n"), Scope::Namespace),
        (policy(ROOT, "  action: ALLOW\n"), Scope::Global),
        (
            policy(ROOT, "  selector: {matchLabels: {app: a}}\n"),
            Scope::WorkloadSelector,
        ),
        (
            policy("prod", "  selector: {matchLabels: {app: a}}\n"),
            Scope::WorkloadSelector,
        ),
    ];
    for (yaml, scope) in table {
        let a = authorization(&one(&yaml), ROOT).expect(&yaml);
        assert_eq!(a.scope(), scope, "{yaml}");
        assert_eq!(a.action(), Action::Allow);
        assert_eq!(a.name, "p");
        assert!(a.groups.is_empty(), "no rules, no groups: {yaml}");
    }
}

#[test]
fn target_refs_audit_and_custom_are_not_sent() {
    let table = [
        (
            policy(
                "prod",
                "  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: gw}]\n",
            ),
            None,
        ),
        (
            policy(
                "prod",
                "  targetRef: {kind: Service, group: \"\", name: svc}\n",
            ),
            None,
        ),
        (
            policy("prod", "  action: AUDIT\n  rules: [{}]\n"),
            Some("ztunnel cannot enforce action AUDIT"),
        ),
        (
            policy(
                "prod",
                "  action: CUSTOM\n  provider: {name: opa}\n  rules: [{to: [{operation: {paths: [/x]}}]}]\n",
            ),
            Some("ztunnel cannot enforce action CUSTOM"),
        ),
    ];
    for (yaml, status) in table {
        let c = convert(&yaml);
        assert_eq!(c.authorization, None, "{yaml}");
        assert_eq!(c.status.map(|s| s.to_string()).as_deref(), status, "{yaml}");
    }
}

#[test]
fn dry_run_is_dropped_unless_enabled() {
    let yaml = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: d\n  namespace: prod\n  annotations: {istio.io/dry-run: \"true\"}\nspec:\n  action: DENY\n  rules: [{}]\n";
    let c = convert(yaml);
    assert_eq!(c.authorization, None);
    assert!(c.status.is_some());
    let a = convert_authorization(&one(yaml), ROOT, AuthzOptions { dry_run: true })
        .authorization
        .unwrap();
    assert!(a.dry_run);
    assert_eq!(a.action(), Action::Deny);
    assert_eq!(a.groups, vec![Group { rules: vec![] }]);
    // "false" is not dry-run.
    let off = yaml.replace("\"true\"", "\"false\"");
    let a = authorization(&one(&off), ROOT).unwrap();
    assert!(!a.dry_run);
}

#[test]
fn l4_fields_translate_field_by_field() {
    let yaml = policy(
        "prod",
        r#"  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/a/sa/b", "*"]
        notPrincipals: ["*/sa/evil", "cluster.local/ns/x/*"]
        namespaces: ["team-*", "*-prod"]
        notNamespaces: ["kube-system"]
        ipBlocks: ["10.0.0.5/24", "192.168.1.1"]
        notIpBlocks: ["2001:db8::/32", "not-an-ip", "10.0.0.1/33"]
        serviceAccounts: ["front", "other/back"]
        notServiceAccounts: ["evil"]
    - source: {principals: [p2]}
    to:
    - operation:
        ports: ["80", "+81", "65536", "http", "0"]
        notPorts: ["9090"]
    when:
    - key: destination.ip
      values: ["10.1.0.0/16"]
      notValues: ["::1"]
    - key: source.principal
      notValues: ["x"]
    - key: destination.port
      values: ["8080"]
    - key: source.namespace
      values: ["ns1"]
    - key: source.ip
      notValues: ["1.2.3.4"]
"#,
    );
    let got = authorization(&one(&yaml), ROOT).unwrap();
    let want = Authorization {
        name: "p".into(),
        namespace: "prod".into(),
        scope: Scope::Namespace as i32,
        action: Action::Allow as i32,
        dry_run: false,
        extensions: vec![],
        groups: vec![Group {
            rules: vec![
                rules(vec![Match {
                    destination_ports: vec![80, 0],
                    not_destination_ports: vec![9090],
                    ..Match::default()
                }]),
                rules(vec![
                    Match {
                        principals: vec![exact("cluster.local/ns/a/sa/b"), presence()],
                        not_principals: vec![suffix("/sa/evil"), prefix("cluster.local/ns/x/")],
                        namespaces: vec![prefix("team-"), suffix("-prod")],
                        not_namespaces: vec![exact("kube-system")],
                        source_ips: vec![addr(&[10, 0, 0, 5], 24), addr(&[192, 168, 1, 1], 32)],
                        not_source_ips: vec![addr(
                            &[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                            32,
                        )],
                        service_accounts: vec![
                            ServiceAccountMatch {
                                namespace: "prod".into(),
                                service_account: "front".into(),
                            },
                            ServiceAccountMatch {
                                namespace: "other".into(),
                                service_account: "back".into(),
                            },
                        ],
                        not_service_accounts: vec![ServiceAccountMatch {
                            namespace: "prod".into(),
                            service_account: "evil".into(),
                        }],
                        ..Match::default()
                    },
                    Match {
                        principals: vec![exact("p2")],
                        ..Match::default()
                    },
                ]),
                rules(vec![Match {
                    destination_ips: vec![addr(&[10, 1, 0, 0], 16)],
                    not_destination_ips: vec![addr(
                        &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                        128,
                    )],
                    ..Match::default()
                }]),
                rules(vec![Match {
                    not_principals: vec![exact("x")],
                    ..Match::default()
                }]),
                rules(vec![Match {
                    destination_ports: vec![8080],
                    ..Match::default()
                }]),
                rules(vec![Match {
                    namespaces: vec![exact("ns1")],
                    ..Match::default()
                }]),
                rules(vec![Match {
                    not_source_ips: vec![addr(&[1, 2, 3, 4], 32)],
                    ..Match::default()
                }]),
            ],
        }],
    };
    assert_eq!(got, want);
    assert_eq!(convert(&yaml).status, None, "all L4: no status");
}

#[test]
fn allow_rules_with_http_attributes_never_match() {
    // Each row: one rule with an HTTP-only attribute, then an L4 rule that must survive alone.
    let l7 = [
        ("to: [{operation: {paths: [/admin]}}]", "paths"),
        ("to: [{operation: {ports: [\"80\"], methods: [GET]}}]", "methods"),
        ("to: [{operation: {notHosts: [a.com]}}]", "notHosts"),
        ("from: [{source: {requestPrincipals: [\"*\"]}}]", "requestPrincipals"),
        ("from: [{source: {principals: [a], remoteIpBlocks: [1.2.3.4]}}]", "remoteIpBlocks"),
        ("when: [{key: 'request.headers[x-user]', values: [a]}]", "request.headers[x-user]"),
        ("when: [{key: source.principal, values: [a]}, {key: 'request.auth.claims[iss]', values: [b]}]", "request.auth.claims[iss]"),
    ];
    for (rule, found) in l7 {
        let yaml = policy(
            "prod",
            &format!("  rules:\n  - {rule}\n  - from: [{{source: {{principals: [ok]}}}}]\n"),
        );
        let c = convert(&yaml);
        let a = c.authorization.expect(&yaml);
        assert_eq!(
            a.groups,
            vec![Group {
                rules: vec![rules(vec![Match {
                    principals: vec![exact("ok")],
                    ..Match::default()
                }])]
            }],
            "{yaml}"
        );
        let status = c.status.expect("HTTP attributes are reported").to_string();
        assert!(status.contains(found), "{status}");
        assert!(
            status.contains("ALLOW rules using them never match"),
            "{status}"
        );
    }
}

#[test]
fn deny_rules_with_http_attributes_are_enforced_without_them() {
    let yaml = policy(
        "prod",
        r#"  action: DENY
  rules:
  - to: [{operation: {methods: [POST], ports: ["8080"]}}]
    from: [{source: {requestPrincipals: ["*"], namespaces: [dev]}}]
"#,
    );
    let c = convert(&yaml);
    assert_eq!(
        c.authorization.unwrap().groups,
        vec![Group {
            rules: vec![
                rules(vec![Match {
                    destination_ports: vec![8080],
                    ..Match::default()
                }]),
                rules(vec![Match {
                    namespaces: vec![exact("dev")],
                    ..Match::default()
                }]),
            ]
        }]
    );
    let status = c.status.unwrap().to_string();
    assert!(status.contains("methods, requestPrincipals"), "{status}");
    assert!(status.contains("enforced without them"), "{status}");
}

#[test]
fn deny_with_only_http_attributes_keeps_empty_matches_and_has_no_effect() {
    let table = [
        "to: [{operation: {paths: [/admin]}}]",
        "when: [{key: 'request.auth.claims[group]', values: [admin]}]",
    ];
    for rule in table {
        let yaml = policy("prod", &format!("  action: DENY\n  rules:\n  - {rule}\n"));
        let c = convert(&yaml);
        // istiod keeps the rule with an empty match; ztunnel never matches an empty match.
        assert_eq!(
            c.authorization.unwrap().groups,
            vec![Group {
                rules: vec![rules(vec![Match::default()])]
            }],
            "{yaml}"
        );
        assert!(
            c.status
                .unwrap()
                .to_string()
                .contains("nothing of this DENY"),
            "{yaml}"
        );
    }
}

#[test]
fn empty_rule_matches_everything_and_trust_domains_are_ignored() {
    let yaml = policy(
        "prod",
        "  rules:\n  - {}\n  - from: [{source: {trustDomains: [other.td]}}]\n",
    );
    let c = convert(&yaml);
    assert_eq!(
        c.authorization.unwrap().groups,
        vec![
            Group { rules: vec![] },
            // istiod neither translates nor reports trustDomains: an empty source match.
            Group {
                rules: vec![rules(vec![Match::default()])]
            },
        ]
    );
    assert_eq!(c.status, None);
}

#[test]
fn workload_policy_names_follow_selectors() {
    let yaml = [
        policy("prod", "  selector: {matchLabels: {app: a}}\n"),
        policy(ROOT, "  selector: {matchLabels: {app: a}}\n").replace("name: p", "name: mesh"),
        policy("prod", "  selector: {matchLabels: {app: b}}\n").replace("name: p", "name: other"),
        policy("dev", "  selector: {matchLabels: {app: a}}\n")
            .replace("name: p", "name: elsewhere"),
        policy("prod", "  action: ALLOW\n").replace("name: p", "name: ns-wide"),
        policy(
            "prod",
            "  action: AUDIT\n  selector: {matchLabels: {app: a}}\n",
        )
        .replace("name: p", "name: audit"),
    ]
    .join("---\n");
    let all = resources(&yaml);
    let labels = [("app".to_string(), "a".to_string())].into_iter().collect();
    assert_eq!(
        workload_policies("prod", &labels, &all, ROOT, AuthzOptions::default()),
        vec!["istio-system/mesh".to_string(), "prod/p".to_string()]
    );
}
