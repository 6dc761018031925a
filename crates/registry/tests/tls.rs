//! Auto mTLS and DestinationRule TLS: the table of endpoint sidecar labels × rules, which rule
//! applies (host matching, namespaces, selectors, port level), and rules that fail closed.

mod support;

use support::{join, load, load_with, mesh, options_198, HTTPBIN, REVIEWS};
use trustmesh_policy::{PolicySet, Workload as Client};
use trustmesh_registry::{DecidedBy, Registry, UpstreamMode, UpstreamTls};

/// Four workloads behind `table.prod.svc.cluster.local` (ports 80 HTTP and 5432 TCP): the
/// sidecar label `istio`, `disabled`, absent with a service account, absent without one.
const TABLE: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: table, namespace: prod}
spec:
  hosts: [table.prod.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  subjectAltNames: ["spiffe://cluster.local/ns/prod/sa/table-extra"]
  ports:
  - {number: 80, name: http, protocol: HTTP}
  - {number: 5432, name: tcp-db, protocol: TCP}
  endpoints:
  - address: 10.1.0.1
    labels: {security.istio.io/tlsMode: istio}
    serviceAccount: table
  - address: 10.1.0.2
    labels: {security.istio.io/tlsMode: disabled}
    serviceAccount: table
  - address: 10.1.0.3
    serviceAccount: table
  - address: 10.1.0.4
"#;

fn rule(name: &str, namespace: &str, body: &str) -> String {
    format!("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n{body}")
}

fn client() -> Client {
    Client::new("prod", &[("app", "frontend")])
}

/// The decision for each endpoint (in order) on `port`.
fn decisions(reg: &Registry, client: &Client, host: &str, port: u16) -> Vec<UpstreamTls> {
    let svc = reg.services().iter().find(|s| s.host == host).unwrap();
    let p = svc.port(port).unwrap();
    reg.endpoints(svc, p)
        .map(|e| reg.tls_for(client, svc, p, Some(e), None))
        .collect()
}

fn labels(d: &[UpstreamTls]) -> Vec<&'static str> {
    d.iter().map(|t| t.mode.label()).collect()
}

#[test]
fn auto_mtls_table_sidecar_label_by_destination_rule() {
    let host = "table.prod.svc.cluster.local";
    let cases: [(&str, &str, u16, [&str; 4]); 10] = [
        // No rule: Istio's auto mTLS follows the label; absent label + serviceAccount = istio.
        ("", "", 80, ["istio_mutual", "plaintext", "istio_mutual", "plaintext"]),
        ("", "", 5432, ["istio_mutual", "plaintext", "istio_mutual", "plaintext"]),
        // A rule overrides both ways.
        ("top DISABLE", "  host: table\n  trafficPolicy: {tls: {mode: DISABLE}}\n", 80, ["plaintext"; 4]),
        ("top ISTIO_MUTUAL", "  host: table\n  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}\n", 80, ["istio_mutual"; 4]),
        // Port level beats top level, on its port only.
        ("port DISABLE", "  host: table\n  trafficPolicy:\n    tls: {mode: ISTIO_MUTUAL}\n    portLevelSettings:\n    - port: {number: 5432}\n      tls: {mode: DISABLE}\n", 5432, ["plaintext"; 4]),
        ("port DISABLE, other port", "  host: table\n  trafficPolicy:\n    tls: {mode: ISTIO_MUTUAL}\n    portLevelSettings:\n    - port: {number: 5432}\n      tls: {mode: DISABLE}\n", 80, ["istio_mutual"; 4]),
        ("port ISTIO_MUTUAL", "  host: table\n  trafficPolicy:\n    portLevelSettings:\n    - port: {number: 80}\n      tls: {mode: ISTIO_MUTUAL}\n", 80, ["istio_mutual"; 4]),
        // A port-level entry without tls leaves TLS to auto mTLS.
        ("port LB only", "  host: table\n  trafficPolicy:\n    portLevelSettings:\n    - port: {number: 80}\n      loadBalancer: {simple: RANDOM}\n", 80, ["istio_mutual", "plaintext", "istio_mutual", "plaintext"]),
        // ... also under a rule's own tls: port-level settings replace the rule's wholesale
        // (Istio: "port level policies do not inherit"), so its DISABLE is not inherited.
        ("port LB only under DISABLE", "  host: table\n  trafficPolicy:\n    tls: {mode: DISABLE}\n    portLevelSettings:\n    - port: {number: 80}\n      loadBalancer: {simple: RANDOM}\n", 80, ["istio_mutual", "plaintext", "istio_mutual", "plaintext"]),
        ("port LB only under DISABLE, other port", "  host: table\n  trafficPolicy:\n    tls: {mode: DISABLE}\n    portLevelSettings:\n    - port: {number: 80}\n      loadBalancer: {simple: RANDOM}\n", 5432, ["plaintext"; 4]),
    ];
    for (what, body, port, expected) in cases {
        let yaml = if body.is_empty() {
            TABLE.to_string()
        } else {
            join(&[TABLE, &rule("dr", "prod", body)])
        };
        let (reg, report) = load(&yaml);
        assert!(report.problems.is_empty(), "{what}: {:?}", report.problems);
        let d = decisions(&reg, &client(), host, port);
        assert_eq!(labels(&d), expected, "{what} port {port}");
        let by_rule = d
            .iter()
            .all(|t| matches!(t.decided_by, DecidedBy::DestinationRule { .. }));
        let port_level = d.iter().any(|t| {
            matches!(
                t.decided_by,
                DecidedBy::DestinationRule {
                    port_level: true,
                    ..
                }
            )
        });
        match what {
            "" | "port LB only" | "port LB only under DISABLE" => assert!(
                d.iter()
                    .all(|t| matches!(t.decided_by, DecidedBy::AutoMtls(_))),
                "{what}"
            ),
            "port DISABLE" | "port ISTIO_MUTUAL" => assert!(port_level, "{what}"),
            _ => assert!(by_rule && !port_level, "{what}"),
        }
    }
}

#[test]
fn istio_mutual_expects_the_endpoints_identity_and_the_entrys_subject_alt_names() {
    let (reg, _) = load(TABLE);
    let d = decisions(&reg, &client(), "table.prod.svc.cluster.local", 80);
    assert_eq!(
        d[0].mode,
        UpstreamMode::IstioMutual {
            sni: "outbound_.80_._.table.prod.svc.cluster.local".into(),
            peer_identities: vec![
                "spiffe://cluster.local/ns/prod/sa/table".into(),
                "spiffe://cluster.local/ns/prod/sa/table-extra".into()
            ],
        }
    );
    // The rule's own SNI and SANs replace the automatic ones; the trust domain is the mesh's.
    let (reg, _) = load_with(
        &join(&[TABLE, &rule("dr", "prod", "  host: table.prod.svc.cluster.local\n  trafficPolicy: {tls: {mode: ISTIO_MUTUAL, sni: table.mesh, subjectAltNames: [spiffe://corp.example/ns/prod/sa/db]}}\n")]),
        &mesh("trustDomain: corp.example"),
        &options_198(),
    );
    let d = decisions(&reg, &client(), "table.prod.svc.cluster.local", 80);
    assert_eq!(
        d[3].mode,
        UpstreamMode::IstioMutual {
            sni: "table.mesh".into(),
            peer_identities: vec!["spiffe://corp.example/ns/prod/sa/db".into()],
        }
    );
    let (reg, _) = load_with(TABLE, &mesh("trustDomain: corp.example"), &options_198());
    let d = decisions(&reg, &client(), "table.prod.svc.cluster.local", 80);
    let UpstreamMode::IstioMutual {
        peer_identities, ..
    } = &d[2].mode
    else {
        panic!()
    };
    assert_eq!(peer_identities[0], "spiffe://corp.example/ns/prod/sa/table");
}

#[test]
fn external_and_passthrough_services_get_no_automatic_mtls() {
    // MESH_EXTERNAL: plaintext even to an endpoint labelled istio.
    let external = TABLE.replace("location: MESH_INTERNAL", "location: MESH_EXTERNAL");
    let (reg, _) = load(&external);
    let d = decisions(&reg, &client(), "table.prod.svc.cluster.local", 80);
    assert_eq!(labels(&d), ["plaintext"; 4]);
    assert_eq!(
        d[0].decided_by,
        DecidedBy::AutoMtls("MESH_EXTERNAL service: no automatic mTLS")
    );
    // A PASSTHROUGH load balancer with an endpoint without sidecar: plaintext for all.
    let (reg, _) = load(&join(&[
        TABLE,
        &rule(
            "dr",
            "prod",
            "  host: table\n  trafficPolicy: {loadBalancer: {simple: PASSTHROUGH}}\n",
        ),
    ]));
    assert_eq!(
        labels(&decisions(
            &reg,
            &client(),
            "table.prod.svc.cluster.local",
            80
        )),
        ["plaintext"; 4]
    );
    // All endpoints with sidecars: mTLS again.
    let sidecars_only = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: table, namespace: prod}
spec:
  hosts: [table.prod.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 10.1.0.1, serviceAccount: table}]
"#;
    let (reg, _) = load(&join(&[
        sidecars_only,
        &rule(
            "dr",
            "prod",
            "  host: table\n  trafficPolicy: {loadBalancer: {simple: PASSTHROUGH}}\n",
        ),
    ]));
    assert_eq!(
        labels(&decisions(
            &reg,
            &client(),
            "table.prod.svc.cluster.local",
            80
        )),
        ["istio_mutual"]
    );
}

#[test]
fn peer_authentication_disable_in_the_services_namespace_turns_auto_mtls_off() {
    let (reg, _) = load(TABLE);
    let pa = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: prod}\nspec: {mtls: {mode: DISABLE}}\n";
    let (set, _) = PolicySet::from_yaml_str("pa.yaml", pa, &Default::default()).unwrap();
    let svc = &reg.services()[0];
    let port = svc.port(80).unwrap();
    let ep = reg.endpoints(svc, port).next().unwrap();
    assert_eq!(
        reg.tls_for(&client(), svc, port, Some(ep), None)
            .mode
            .label(),
        "istio_mutual"
    );
    let t = reg.tls_for(&client(), svc, port, Some(ep), Some(&set));
    assert_eq!(t.mode, UpstreamMode::Plaintext);
    assert_eq!(
        t.decided_by,
        DecidedBy::AutoMtls("PeerAuthentication DISABLE for the service's namespace")
    );
}

#[test]
fn rules_are_found_like_istio_finds_them() {
    let svc_host = "table.prod.svc.cluster.local";
    let dr = |name: &str, ns: &str, host: &str, mode: &str| {
        rule(
            name,
            ns,
            &format!("  host: \"{host}\"\n  trafficPolicy: {{tls: {{mode: {mode}}}}}\n"),
        )
    };
    let decided = |yaml: &str, client: &Client| -> (String, &'static str) {
        let (reg, report) = load(&join(&[TABLE, yaml]));
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        let d = &decisions(&reg, client, svc_host, 80)[1];
        let by = match &d.decided_by {
            DecidedBy::DestinationRule {
                namespace, name, ..
            } => format!("{namespace}/{name}"),
            DecidedBy::AutoMtls(_) => "auto".into(),
        };
        (by, d.mode.label())
    };
    let prod = client();
    // Exact beats wildcard, the more specific wildcard beats the wider one.
    let rules = join(&[
        &dr("wide", "prod", "*.svc.cluster.local", "DISABLE"),
        &dr("narrow", "prod", "*.prod.svc.cluster.local", "ISTIO_MUTUAL"),
    ]);
    assert_eq!(
        decided(&rules, &prod),
        ("prod/narrow".into(), "istio_mutual")
    );
    let rules = join(&[&rules, &dr("exact", "prod", svc_host, "SIMPLE")]);
    assert_eq!(decided(&rules, &prod), ("prod/exact".into(), "simple"));
    // A short host is relative to the rule's namespace: `table` in `other` is another host.
    assert_eq!(
        decided(&dr("short", "other", "table", "DISABLE"), &prod),
        ("auto".into(), "plaintext")
    );
    assert_eq!(
        decided(&dr("short", "prod", "table", "ISTIO_MUTUAL"), &prod),
        ("prod/short".into(), "istio_mutual")
    );
    // The client's namespace first, then the service's, then the root namespace.
    let three = join(&[
        &dr("root", "istio-system", "*.cluster.local", "DISABLE"),
        &dr("svc", "prod", svc_host, "ISTIO_MUTUAL"),
        &dr("mine", "web", svc_host, "SIMPLE"),
    ]);
    let web = Client::new("web", &[("app", "ui")]);
    let ops = Client::new("ops", &[]);
    assert_eq!(decided(&three, &web), ("web/mine".into(), "simple"));
    assert_eq!(decided(&three, &ops), ("prod/svc".into(), "istio_mutual"));
    assert_eq!(
        decided(
            &dr("root", "istio-system", "*.cluster.local", "DISABLE"),
            &ops
        ),
        ("istio-system/root".into(), "plaintext")
    );
    // A workloadSelector rule applies to matching clients of its own namespace only, and wins
    // over the rule without one.
    let selected = join(&[
        &dr("all", "web", svc_host, "ISTIO_MUTUAL"),
        &rule("legacy-ui", "web", &format!("  host: {svc_host}\n  workloadSelector: {{matchLabels: {{app: ui}}}}\n  trafficPolicy: {{tls: {{mode: DISABLE}}}}\n")),
    ]);
    assert_eq!(
        decided(&selected, &web),
        ("web/legacy-ui".into(), "plaintext")
    );
    let other_web = Client::new("web", &[("app", "api")]);
    assert_eq!(
        decided(&selected, &other_web),
        ("web/all".into(), "istio_mutual")
    );
}

#[test]
fn simple_and_mutual_carry_the_files_for_the_proxy() {
    let yaml = join(&[
        HTTPBIN,
        &rule("originate", "egress", "  host: httpbin.org\n  trafficPolicy:\n    portLevelSettings:\n    - port: {number: 443}\n      tls:\n        mode: MUTUAL\n        clientCertificate: /etc/certs/client.pem\n        privateKey: /etc/certs/key.pem\n        caCertificates: /etc/certs/ca.pem\n        subjectAltNames: [httpbin.org]\n    - port: {number: 80}\n      tls: {mode: SIMPLE, insecureSkipVerify: true}\n"),
    ]);
    let (reg, report) = load(&yaml);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let d443 = decisions(&reg, &client(), "httpbin.org", 443);
    let UpstreamMode::Mutual(o) = &d443[0].mode else {
        panic!("{:?}", d443[0])
    };
    assert_eq!(
        o.client_certificate.as_deref(),
        Some("/etc/certs/client.pem")
    );
    assert_eq!(o.private_key.as_deref(), Some("/etc/certs/key.pem"));
    assert_eq!(o.ca_certificates.as_deref(), Some("/etc/certs/ca.pem"));
    assert_eq!(o.subject_alt_names, ["httpbin.org"]);
    assert_eq!(o.sni.as_deref(), Some("httpbin.org"));
    assert!(!o.insecure_skip_verify);
    let d80 = decisions(&reg, &client(), "httpbin.org", 80);
    let UpstreamMode::Simple(o) = &d80[0].mode else {
        panic!()
    };
    assert!(o.insecure_skip_verify && o.ca_certificates.is_none());
}

#[test]
fn a_rule_that_cannot_be_read_refuses_the_connections_it_governs() {
    let bad = rule(
        "typo",
        "prod",
        "  host: table\n  trafficPolicy:\n    tls: {mode: ISTIO_MUTUAL, sniff: x}\n",
    );
    let (reg, report) = load(&join(&[TABLE, &bad]));
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    for d in decisions(&reg, &client(), "table.prod.svc.cluster.local", 80) {
        let UpstreamMode::Refuse { reason } = &d.mode else {
            panic!("{d:?}")
        };
        assert!(
            reason.starts_with("DestinationRule prod/typo could not be read"),
            "{reason}"
        );
        assert!(
            reason.contains("test.yaml:2:spec.trafficPolicy.tls.sniff: unknown field"),
            "{reason}"
        );
    }
    // A credentialName it cannot honour: refused as well, never plaintext.
    let cred = rule(
        "cred",
        "prod",
        "  host: table\n  trafficPolicy: {tls: {mode: SIMPLE, credentialName: table-ca}}\n",
    );
    let (reg, _) = load(&join(&[TABLE, &cred]));
    let d = decisions(&reg, &client(), "table.prod.svc.cluster.local", 80);
    assert!(d.iter().all(|t| t.mode.label() == "refuse"));
    // Other services are untouched.
    let (reg, _) = load(&join(&[TABLE, REVIEWS, &bad]));
    let d = decisions(&reg, &client(), "reviews.bookinfo.svc.cluster.local", 9080);
    assert_eq!(labels(&d), ["istio_mutual", "istio_mutual", "plaintext"]);
}

#[test]
fn rules_for_one_host_in_one_namespace_merge_oldest_first() {
    let older = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: b-older, namespace: prod, creationTimestamp: \"2021-01-01T00:00:00Z\"}\nspec:\n  host: table\n  trafficPolicy: {tls: {mode: DISABLE}}\n  subsets: [{name: v1, labels: {version: v1}}]\n";
    let newer = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: a-newer, namespace: prod, creationTimestamp: \"2022-01-01T00:00:00Z\"}\nspec:\n  host: table\n  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}\n  subsets: [{name: v1, labels: {version: x}}, {name: v2, labels: {version: v2}}]\n";
    let (reg, report) = load(&join(&[TABLE, newer, older]));
    let rules = reg.destination_rules();
    assert_eq!(rules.len(), 1);
    assert_eq!(
        (rules[0].name.as_str(), rules[0].merged.as_slice()),
        ("b-older", &["a-newer".to_string()][..])
    );
    let subsets: Vec<(&str, &str)> = rules[0]
        .subsets
        .iter()
        .map(|s| (s.name.as_str(), s.labels["version"].as_str()))
        .collect();
    assert_eq!(subsets, [("v1", "v1"), ("v2", "v2")]);
    let l: Vec<String> = report.problems.iter().map(|p| p.to_string()).collect();
    assert!(l.iter().any(|p| p.starts_with("test.yaml:2:spec.subsets: warning: subset \"v1\" is also defined by DestinationRule prod/b-older")), "{l:#?}");
    assert_eq!(
        labels(&decisions(
            &reg,
            &client(),
            "table.prod.svc.cluster.local",
            80
        )),
        ["plaintext"; 4]
    );
    let svc = &reg.services()[0];
    assert_eq!(
        reg.load_balancer(&client(), svc, svc.port(80).unwrap()),
        None
    );
}

/// A port-level entry replaces the rule's settings wholesale, the load balancer too: the
/// port it names gets the default (none set), the other ports the rule's own.
#[test]
fn port_level_entries_do_not_inherit_the_rules_load_balancer() {
    let body = "  host: table\n  trafficPolicy:\n    loadBalancer: {simple: RANDOM}\n    portLevelSettings:\n    - port: {number: 80}\n      tls: {mode: ISTIO_MUTUAL}\n";
    let (reg, report) = load(&join(&[TABLE, &rule("dr", "prod", body)]));
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let svc = reg
        .services()
        .iter()
        .find(|s| s.host == "table.prod.svc.cluster.local")
        .unwrap();
    let lb = |port| reg.load_balancer(&client(), svc, svc.port(port).unwrap());
    assert_eq!(lb(80), None);
    assert_eq!(lb(5432), Some(trustmesh_registry::SimpleLb::Random));
}
