//! Reading the networking kinds from real-looking files: what is kept, what is skipped
//! quietly, and problems that name the file, document and field path.

mod support;

use support::{clean, join, lines, load, DB, HTTPBIN, REVIEWS};
use trustmesh_registry::{EndpointAddress, MeshLocation, Protocol, Resolution, TlsSetting};

#[test]
fn bookinfo_reviews_and_external_httpbin_load() {
    let reg = clean(&join(&[REVIEWS, HTTPBIN, DB]));
    let hosts: Vec<&str> = reg.services().iter().map(|s| s.host.as_str()).collect();
    assert_eq!(
        hosts,
        [
            "reviews.bookinfo.svc.cluster.local",
            "httpbin.org",
            "orders-db.shop.svc.cluster.local"
        ]
    );
    let reviews = &reg.services()[0];
    assert_eq!(
        (
            reviews.namespace.as_str(),
            reviews.location,
            reviews.resolution
        ),
        ("bookinfo", MeshLocation::MeshInternal, Resolution::Static)
    );
    assert_eq!(reviews.ports[0].protocol, Protocol::Http);
    assert_eq!(reviews.ports[0].target_port, Some(9081));
    let httpbin = &reg.services()[1];
    assert_eq!(
        (httpbin.location, httpbin.resolution),
        (MeshLocation::MeshExternal, Resolution::Dns)
    );
    // The WorkloadEntries, httpbin's DNS host, then the database's inline endpoint.
    let addresses: Vec<String> = reg
        .workloads()
        .iter()
        .map(|w| w.address.to_string())
        .collect();
    assert_eq!(
        addresses,
        [
            "10.10.0.11",
            "10.10.0.12",
            "10.10.0.13",
            "httpbin.org",
            "10.20.0.5"
        ]
    );
    assert_eq!(
        reg.workloads()[3].address,
        EndpointAddress::Hostname("httpbin.org".into())
    );
}

#[test]
fn multi_document_files_and_lists_with_other_kinds_skipped_quietly() {
    let list = r#"
apiVersion: v1
kind: List
items:
- apiVersion: networking.istio.io/v1
  kind: ServiceEntry
  metadata: {name: a, namespace: x}
  spec:
    hosts: [a.example.com]
    resolution: DNS
    ports: [{number: 443, name: tls, protocol: TLS}]
- apiVersion: networking.istio.io/v1
  kind: VirtualService
  metadata: {name: vs, namespace: x}
  spec: {hosts: [a.example.com]}
- apiVersion: security.istio.io/v1
  kind: AuthorizationPolicy
  metadata: {name: deny, namespace: x}
  spec: {action: DENY}
- apiVersion: apps/v1
  kind: Deployment
  metadata: {name: web}
"#;
    let (reg, report) = load(&join(&[list, HTTPBIN]));
    assert!(report.problems.is_empty(), "{:?}", lines(&report));
    assert!(
        report.notices.is_empty(),
        "skipped kinds are quiet: {:?}",
        report.notices
    );
    assert_eq!(reg.services().len(), 2);
    assert_eq!(report.service_entries, 2);
    // The objects it read, for other readers of the same file: items[0] of document 1, doc 2.
    let handled: Vec<String> = report.handled.iter().map(|l| l.to_string()).collect();
    assert_eq!(handled, ["test.yaml:1:items[0]", "test.yaml:2"]);
}

#[test]
fn bad_fields_are_problems_with_file_document_and_field_path() {
    let bad = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: bad-port, namespace: x}
spec:
  hosts: [a.example.com]
  resolution: DNS
  ports:
  - {number: 443, name: tls, protocol: TLS}
  - {number: 443, name: TLS2, protocol: SOAP}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: typo, namespace: x}
spec:
  adress: 10.0.0.1
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: dr, namespace: x}
spec:
  host: a.example.com
  trafficPolicy:
    tls: {mode: MUTAL}
"#;
    let (reg, report) = load(bad);
    let l = lines(&report);
    let has = |prefix: &str| l.iter().any(|p| p.starts_with(prefix));
    assert!(
        has("test.yaml:1:spec.ports[1].name: port name \"TLS2\" is not a DNS label"),
        "{l:#?}"
    );
    assert!(
        has("test.yaml:1:spec.ports[1].number: port 443 is already defined"),
        "{l:#?}"
    );
    assert!(
        has("test.yaml:1:spec.ports[1].protocol: unsupported protocol \"SOAP\""),
        "{l:#?}"
    );
    assert!(
        has("test.yaml:2:spec.adress: unknown field `adress`"),
        "{l:#?}"
    );
    assert!(
        has("test.yaml:3:spec.trafficPolicy.tls.mode: unknown variant `MUTAL`"),
        "{l:#?}"
    );
    assert!(l.iter().all(|p| p.contains("(hint: ")), "{l:#?}");
    // Counted, though not used: no service, no workload; the rule stands in failing closed.
    let counts = (
        report.service_entries,
        report.workload_entries,
        report.destination_rules,
    );
    assert_eq!(counts, (1, 1, 1));
    assert!(reg.services().is_empty() && reg.workloads().is_empty());
    assert_eq!(reg.destination_rules().len(), 1);
    assert!(reg.destination_rules()[0].broken.is_some());
}

#[test]
fn webhook_parity_checks_for_service_entries() {
    let cases = [
        ("hosts: []\n  ports: [{number: 80, name: http}]", "spec.hosts: a ServiceEntry needs at least one host"),
        ("hosts: ['*']", "spec.hosts[0]: invalid host \"*\""),
        ("hosts: [a.com]\n  resolution: DNS\n  addresses: [10.0.0.0/24]", "spec.addresses[0]: CIDR addresses are allowed only for NONE or STATIC"),
        ("hosts: [a.com]\n  addresses: [10.0.0.300]", "spec.addresses[0]: \"10.0.0.300\" is not an IP address or CIDR"),
        ("hosts: [a.com]\n  resolution: STATIC\n  workloadSelector: {labels: {app: a}}\n  endpoints: [{address: 10.0.0.1}]", "spec.workloadSelector: only one of workloadSelector or endpoints"),
        ("hosts: [a.com]\n  endpoints: [{address: 10.0.0.1}]", "spec.endpoints: no endpoints should be given for resolution NONE"),
        ("hosts: ['*.a.com']\n  resolution: DNS\n  ports: [{number: 443, name: tls, protocol: TLS}]", "spec.hosts[0]: hosts must not be wildcards for DNS resolution"),
        ("hosts: [a.com, b.com]\n  resolution: DNS\n  ports: [{number: 5432, name: tcp, protocol: TCP}]", "spec.hosts: several hosts with port 5432 (TCP)"),
        ("hosts: [a.com]\n  resolution: STATIC\n  ports: [{number: 80, name: http}]\n  endpoints: [{address: a.internal}]", "spec.endpoints[0].address: \"a.internal\" is not an IP address, required for STATIC"),
        ("hosts: [a.com]\n  resolution: STATIC\n  ports: [{number: 80, name: http}]\n  endpoints: [{address: 10.0.0.1, ports: {web: 8080}}]", "spec.endpoints[0].ports.web: endpoint port \"web\" is not a port"),
        ("hosts: [a.com]\n  resolution: STATIC\n  ports: [{number: 80, name: http}]\n  endpoints: [{address: 10.0.0.1, ports: {http: 70000}}]", "spec.endpoints[0].ports.http: port 70000 is not between 1 and 65535"),
        ("hosts: [a.com]\n  resolution: STATIC\n  ports: [{number: 80, name: http}]\n  endpoints: [{address: 'unix://relative'}]", "spec.endpoints[0].address: \"unix://relative\" is not a Unix socket address"),
        ("hosts: [a.com]\n  resolution: DYNAMIC_DNS", "spec.resolution: DYNAMIC_DNS is not supported"),
        ("hosts: [a.com]\n  resolution: STATIC\n  ports: [{number: 80, name: http}]\n  endpoints: [{address: 10.0.0.1, serviceAccount: a/b}]", "spec.endpoints[0].serviceAccount: no SPIFFE identity can be made from it"),
    ];
    for (spec, expected) in cases {
        let yaml = format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: se, namespace: x}}\nspec:\n  {spec}\n"
        );
        let (reg, report) = load(&yaml);
        let l = lines(&report);
        assert!(
            l.iter()
                .any(|p| p.starts_with(&format!("test.yaml:1:{expected}"))),
            "{spec}\nexpected {expected}\ngot {l:#?}"
        );
        assert!(
            reg.services().is_empty(),
            "an invalid ServiceEntry is left out: {spec}"
        );
    }
}

#[test]
fn unknown_networking_kind_wrong_api_version_missing_name_and_duplicates() {
    let yaml = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntri
metadata: {name: typo}
---
apiVersion: networking.istio.io/v2
kind: WorkloadEntry
metadata: {name: we}
spec: {address: 10.0.0.1}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
spec: {address: 10.0.0.2}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: twice}
spec: {address: 10.0.0.3}
---
apiVersion: networking.istio.io/v1alpha3
kind: WorkloadEntry
metadata: {name: twice, namespace: default}
spec: {address: 10.0.0.4}
"#;
    let (reg, report) = load(yaml);
    let l = lines(&report);
    let has = |prefix: &str| l.iter().any(|p| p.starts_with(prefix));
    assert!(
        has("test.yaml:1:kind: unknown networking.istio.io kind \"ServiceEntri\""),
        "{l:#?}"
    );
    assert!(
        has("test.yaml:2:apiVersion: unsupported apiVersion \"networking.istio.io/v2\""),
        "{l:#?}"
    );
    assert!(
        has("test.yaml:3:metadata.name: metadata.name is required"),
        "{l:#?}"
    );
    assert!(
        has("test.yaml:5:metadata.name: duplicate WorkloadEntry default/twice"),
        "{l:#?}"
    );
    assert_eq!(l.len(), 4, "{l:#?}");
    // The first of the duplicates counts.
    let twice = reg.workload_entry("default", "twice").unwrap();
    assert_eq!(twice.address.to_string(), "10.0.0.3");
}

#[test]
fn destination_rules_credential_name_and_ignored_fields() {
    let yaml = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: originate, namespace: egress}
spec:
  host: httpbin.org
  exportTo: ["."]
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 100, connectTimeout: 30ms}
      http: {http2MaxRequests: 1000, maxRequestsPerConnection: 10}
    outlierDetection: {consecutive5xxErrors: 7, interval: 5m, baseEjectionTime: 15m}
    loadBalancer:
      simple: LEAST_CONN
      localityLbSetting: {enabled: true}
    tls:
      mode: SIMPLE
      credentialName: httpbin-client-credential
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: mutual-without-files, namespace: egress}
spec:
  host: api.example.com
  trafficPolicy:
    tls: {mode: MUTUAL, caCertificates: /etc/certs/ca.pem}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: istio-with-files, namespace: egress}
spec:
  host: b.example.com
  trafficPolicy:
    portLevelSettings:
    - port: {number: 0}
      tls: {mode: DISABLE}
    - port: {number: 443}
      tls: {mode: ISTIO_MUTUAL, clientCertificate: /c.pem}
"#;
    let (reg, report) = load(yaml);
    let l = lines(&report);
    let has = |prefix: &str| l.iter().any(|p| p.starts_with(prefix));
    assert!(
        has("test.yaml:1:spec.trafficPolicy.tls.credentialName: credentialName is not supported"),
        "{l:#?}"
    );
    assert!(has("test.yaml:2:spec.trafficPolicy.tls.clientCertificate: clientCertificate is required for MUTUAL"), "{l:#?}");
    assert!(
        has("test.yaml:2:spec.trafficPolicy.tls.privateKey: privateKey is required for MUTUAL"),
        "{l:#?}"
    );
    assert!(has("test.yaml:3:spec.trafficPolicy.portLevelSettings[0].port.number: port 0 is not between"), "{l:#?}");
    assert!(has("test.yaml:3:spec.trafficPolicy.portLevelSettings[1].tls.clientCertificate: clientCertificate cannot be given with ISTIO_MUTUAL"), "{l:#?}");
    let notices: Vec<String> = report.notices.iter().map(|n| n.to_string()).collect();
    assert!(
        notices
            .iter()
            .any(|n| n.starts_with("test.yaml:1: accepted and ignored")
                && n.contains("spec.trafficPolicy.connectionPool")
                && n.contains("spec.trafficPolicy.outlierDetection")
                && n.contains("spec.trafficPolicy.loadBalancer.localityLbSetting")
                && n.contains("spec.subsets[0].trafficPolicy")),
        "{notices:#?}"
    );
    assert!(
        notices
            .iter()
            .any(|n| n.starts_with("test.yaml:1:spec.exportTo: exportTo is read but not enforced")),
        "{notices:#?}"
    );
    // All three are kept as stand-ins that fail closed; the LEAST_CONN spelling was read.
    let rules = reg.destination_rules();
    assert_eq!(rules.len(), 3);
    assert!(rules.iter().all(|r| r.broken.is_some()));
    assert_eq!(
        rules[0].load_balancer,
        Some(trustmesh_registry::SimpleLb::LeastRequest)
    );
    assert_eq!(rules[0].tls.as_ref().unwrap().mode, TlsSetting::Simple);
}

#[test]
fn yaml_that_is_not_yaml_is_unreadable() {
    let (_, report) = load(&format!("{REVIEWS}\n---\nspec: [unclosed\n"));
    let l = lines(&report);
    assert!(report.problems.iter().any(|p| p.unreadable), "{l:#?}");
    assert!(
        l.iter()
            .any(|p| p.starts_with("test.yaml:5: not valid YAML")),
        "{l:#?}"
    );
}
