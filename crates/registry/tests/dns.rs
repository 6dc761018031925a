//! What the DNS proxy gets: short names like a Kubernetes client's search path, wildcards,
//! headless NONE services, and nothing for names the registry cannot answer.

mod support;

use std::net::IpAddr;

use support::{clean, join, load_with, mesh, options_198, DB, HTTPBIN, REVIEWS};

fn ips(v: &[&str]) -> Vec<IpAddr> {
    v.iter().map(|s| s.parse().unwrap()).collect()
}

#[test]
fn short_names_resolve_for_clients_of_the_namespace_like_istios_dns_proxy() {
    let reg = clean(&join(&[REVIEWS, DB]));
    let (svc, vips) = reg
        .lookup_host("reviews.bookinfo.svc.cluster.local", "other")
        .unwrap();
    assert_eq!(svc.host, "reviews.bookinfo.svc.cluster.local");
    assert_eq!(vips.len(), 1);
    for name in [
        "reviews",
        "reviews.bookinfo",
        "reviews.bookinfo.svc",
        "REVIEWS.Bookinfo.",
        "reviews.bookinfo.svc.cluster.local.",
    ] {
        let (s, a) = reg
            .lookup_host(name, "bookinfo")
            .unwrap_or_else(|| panic!("{name} from bookinfo"));
        assert_eq!(
            (s.host.as_str(), &a),
            ("reviews.bookinfo.svc.cluster.local", &vips),
            "{name}"
        );
    }
    // `reviews` alone only means the service to clients of its namespace.
    assert!(reg.lookup_host("reviews", "default").is_none());
    assert!(reg.lookup_host("reviews.bookinfo", "default").is_some());
    assert!(reg
        .lookup_host("reviews.bookinfo.svc.cluster", "bookinfo")
        .is_none());
    // An explicit address is the answer as written.
    let (_, a) = reg.lookup_host("orders-db.shop", "x").unwrap();
    assert_eq!(a, ips(&["10.96.0.50"]));
}

#[test]
fn the_domain_suffix_is_configurable() {
    let yaml = REVIEWS.replace("svc.cluster.local", "svc.corp.internal");
    let mut o = options_198();
    o.domain_suffix = "corp.internal".into();
    let (reg, report) = load_with(&yaml, &mesh(""), &o);
    assert!(report.problems.is_empty());
    assert!(reg.lookup_host("reviews", "bookinfo").is_some());
    let (reg, _) = load_with(&yaml, &mesh(""), &options_198());
    assert!(
        reg.lookup_host("reviews", "bookinfo").is_none(),
        "not a Kubernetes name under cluster.local"
    );
}

#[test]
fn external_hosts_answer_by_full_name_and_wildcards_by_the_most_specific() {
    let wild = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: wild, namespace: egress}
spec:
  hosts: ["*.example.com"]
  addresses: [192.0.2.10]
  resolution: NONE
  ports: [{number: 443, name: tls, protocol: TLS}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: wild-api, namespace: egress}
spec:
  hosts: ["*.api.example.com"]
  addresses: [192.0.2.20]
  resolution: NONE
  ports: [{number: 443, name: tls, protocol: TLS}]
"#;
    let reg = clean(&join(&[HTTPBIN, wild]));
    let (s, a) = reg.lookup_host("httpbin.org", "anywhere").unwrap();
    assert_eq!(s.host, "httpbin.org");
    assert_eq!(a.len(), 1, "an auto-allocated VIP");
    assert!(
        reg.lookup_host("httpbin", "egress").is_none(),
        "no short names for external hosts"
    );
    assert_eq!(
        reg.lookup_host("www.example.com", "x").unwrap().1,
        ips(&["192.0.2.10"])
    );
    assert_eq!(
        reg.lookup_host("v1.api.example.com", "x").unwrap().1,
        ips(&["192.0.2.20"])
    );
    assert!(reg.lookup_host("example.com", "x").is_none());
    assert!(reg.lookup_host("example.org", "x").is_none());
}

#[test]
fn headless_none_services_answer_with_endpoint_addresses_and_addressless_ones_not_at_all() {
    let yaml = r#"
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: db-0, namespace: data}
spec: {address: 10.30.0.1, labels: {app: db}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: db-1, namespace: data}
spec: {address: 10.30.0.2, labels: {app: db}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: data}
spec:
  hosts: [db.data.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: NONE
  ports: [{number: 3306, name: tcp-mysql, protocol: MYSQL}]
  workloadSelector: {labels: {app: db}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: passthrough, namespace: egress}
spec:
  hosts: [legacy.example.net]
  resolution: NONE
  ports: [{number: 8443, name: tls, protocol: TLS}]
"#;
    let reg = clean(yaml);
    let (_, a) = reg.lookup_host("db", "data").unwrap();
    assert_eq!(a, ips(&["10.30.0.1", "10.30.0.2"]));
    assert!(
        reg.lookup_host("legacy.example.net", "x").is_none(),
        "forwarded upstream"
    );
}

#[test]
fn the_clients_namespace_wins_when_several_declare_a_host() {
    let yaml = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: team-a}
spec:
  hosts: [api.partner.com]
  addresses: [192.0.2.1]
  resolution: STATIC
  endpoints: [{address: 203.0.113.1}]
  ports: [{number: 443, name: tls, protocol: TLS}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: team-b}
spec:
  hosts: [api.partner.com]
  addresses: [192.0.2.2]
  resolution: STATIC
  endpoints: [{address: 203.0.113.2}]
  ports: [{number: 443, name: tls, protocol: TLS}]
"#;
    let reg = clean(yaml);
    assert_eq!(
        reg.lookup_host("api.partner.com", "team-b").unwrap().1,
        ips(&["192.0.2.2"])
    );
    assert_eq!(
        reg.lookup_host("api.partner.com", "team-a").unwrap().1,
        ips(&["192.0.2.1"])
    );
    assert_eq!(
        reg.lookup_host("api.partner.com", "other").unwrap().1,
        ips(&["192.0.2.1"])
    );
}
