//! The sidecar's per-connection question: what is this original destination, under both
//! outbound traffic policies.

mod support;

use std::net::SocketAddr;

use support::{join, load_with, mesh, options_198, DB, HTTPBIN, REVIEWS};
use trustmesh_registry::{Destination, Registry, Via};

const ALLOW_ANY: &str = "";
const REGISTRY_ONLY: &str = "outboundTrafficPolicy: {mode: REGISTRY_ONLY}";

const CIDR: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: partner-net, namespace: egress}
spec:
  hosts: [partner.internal]
  addresses: [203.0.113.0/24]
  resolution: NONE
  ports: [{number: 443, name: tls, protocol: TLS}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: partner-api, namespace: egress}
spec:
  hosts: [api.partner.internal]
  addresses: [203.0.113.128/25]
  resolution: NONE
  ports: [{number: 443, name: tls, protocol: TLS}]
"#;

fn registry(mode: &str) -> Registry {
    let (reg, report) = load_with(
        &join(&[REVIEWS, HTTPBIN, DB, CIDR]),
        &mesh(mode),
        &options_198(),
    );
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    reg
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn a_vip_and_port_is_the_service_with_its_endpoints() {
    for mode in [ALLOW_ANY, REGISTRY_ONLY] {
        let reg = registry(mode);
        let (_, vips) = reg.lookup_host("reviews.bookinfo", "x").unwrap();
        let Destination::Service(hit) = reg.classify(SocketAddr::new(vips[0], 9080)) else {
            panic!("reviews VIP")
        };
        assert_eq!(
            (hit.service.host.as_str(), hit.port.number, hit.via),
            ("reviews.bookinfo.svc.cluster.local", 9080, Via::Vip)
        );
        assert!(hit.others.is_empty());
        let eps: Vec<(String, u16, bool)> = reg
            .endpoints(hit.service, hit.port)
            .map(|e| (e.address().to_string(), e.port, e.has_sidecar()))
            .collect();
        // targetPort 9081, except where the entry maps the port name itself (legacy: 8080).
        assert_eq!(
            eps,
            [
                ("10.10.0.11".to_string(), 9081, true),
                ("10.10.0.12".to_string(), 9081, true),
                ("10.10.0.13".to_string(), 8080, false)
            ]
        );
        let d = reg.classify(addr("10.96.0.50:5432"));
        assert_eq!(d.label(), "service");
        let Destination::Service(hit) = d else {
            panic!()
        };
        let ep = reg.endpoints(hit.service, hit.port).next().unwrap();
        assert_eq!(
            (ep.address().to_string(), ep.port),
            ("10.20.0.5".to_string(), 5432)
        );
    }
}

#[test]
fn a_workload_address_is_that_workload_on_any_port() {
    for mode in [ALLOW_ANY, REGISTRY_ONLY] {
        let reg = registry(mode);
        let Destination::Workload(hit) = reg.classify(addr("10.10.0.12:9081")) else {
            panic!("pod to pod")
        };
        assert_eq!(hit.workload.entry_name(), Some("reviews-v2"));
        assert_eq!(hit.serves.len(), 1, "it serves reviews on 9081");
        assert_eq!(hit.serves[0].0.host, "reviews.bookinfo.svc.cluster.local");
        let Destination::Workload(hit) = reg.classify(addr("10.10.0.12:22")) else {
            panic!()
        };
        assert!(hit.serves.is_empty());
        assert_eq!(
            reg.classify(addr("10.20.0.5:5432")).label(),
            "workload",
            "inline endpoints too"
        );
    }
}

#[test]
fn unknown_destinations_pass_under_allow_any_and_are_refused_under_registry_only() {
    let allow = registry(ALLOW_ANY);
    let only = registry(REGISTRY_ONLY);
    for dst in ["192.0.2.77:5432", "[2001:db8::1]:443", "10.96.0.50:5433"] {
        assert_eq!(allow.classify(addr(dst)).label(), "passthrough", "{dst}");
        let Destination::Refused(why) = only.classify(addr(dst)) else {
            panic!("{dst} refused")
        };
        assert_eq!(why.addr, addr(dst));
    }
    let Destination::Refused(why) = only.classify(addr("192.0.2.77:5432")) else {
        panic!()
    };
    assert_eq!(
        why.to_string(),
        "no service or workload in the registry has address 192.0.2.77:5432"
    );
    let Destination::Refused(why) = only.classify(addr("10.96.0.50:5433")) else {
        panic!()
    };
    assert_eq!(
        why.to_string(),
        "10.96.0.50 is an address of service orders-db.shop.svc.cluster.local (shop/orders-db), which has no port 5433"
    );
}

#[test]
fn cidrs_match_by_longest_prefix_and_http_ports_on_any_address() {
    let reg = registry(REGISTRY_ONLY);
    let Destination::Service(hit) = reg.classify(addr("203.0.113.200:443")) else {
        panic!()
    };
    assert_eq!(hit.service.host, "api.partner.internal");
    assert_eq!(hit.via, Via::Cidr("203.0.113.128/25".parse().unwrap()));
    let Destination::Service(hit) = reg.classify(addr("203.0.113.5:443")) else {
        panic!()
    };
    assert_eq!(hit.service.host, "partner.internal");
    assert_eq!(
        reg.classify(addr("203.0.113.5:80")).label(),
        "service",
        "port 80 is HTTP for httpbin.org"
    );
    assert_eq!(reg.classify(addr("203.0.113.5:22")).label(), "refused");
    // Istio listens on 0.0.0.0:<port> for HTTP ports and routes by host: any address, with
    // every HTTP service on the port as a candidate.
    let Destination::Service(hit) = reg.classify(addr("198.51.100.1:80")) else {
        panic!()
    };
    assert_eq!(
        (hit.service.host.as_str(), hit.via),
        ("httpbin.org", Via::AnyAddress)
    );
    // A TLS port of a DNS service is not claimed on every address.
    assert_eq!(reg.classify(addr("198.51.100.1:443")).label(), "refused");
}

#[test]
fn a_none_service_without_addresses_claims_its_port_everywhere() {
    let yaml = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: any-mongo, namespace: egress}
spec:
  hosts: [mongo.example.net]
  resolution: NONE
  ports: [{number: 27017, name: mongo, protocol: MONGO, targetPort: 27018}]
"#;
    let (reg, _) = load_with(yaml, &mesh(REGISTRY_ONLY), &options_198());
    let Destination::Service(hit) = reg.classify(addr("192.0.2.9:27017")) else {
        panic!()
    };
    assert_eq!(hit.via, Via::AnyAddress);
    assert_eq!(hit.original_dst_port(27017), 27018);
    assert_eq!(reg.classify(addr("192.0.2.9:27018")).label(), "refused");

    // Without auto-allocation a DNS service has no address either: its TLS port is claimed
    // everywhere (Istio tells the hosts apart by SNI there).
    let off = trustmesh_registry::Options {
        auto_allocate: None,
        ..options_198()
    };
    let (reg, _) = load_with(HTTPBIN, &mesh(REGISTRY_ONLY), &off);
    let Destination::Service(hit) = reg.classify(addr("192.0.2.9:443")) else {
        panic!()
    };
    assert_eq!(
        (hit.service.host.as_str(), hit.via),
        ("httpbin.org", Via::AnyAddress)
    );
}
