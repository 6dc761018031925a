use std::net::IpAddr;

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};

use super::*;
use crate::names::StaticNames;

fn table() -> StaticNames {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    StaticNames::new()
        .with("reviews.bookinfo.svc.cluster.local", [ip("10.96.1.1")])
        .with(
            "ratings.bookinfo.svc.cluster.local",
            [ip("10.96.2.1"), ip("fd00::2")],
        )
        .with("v6only.bookinfo.svc.cluster.local", [ip("fd00::3")])
        .with(
            "www.example.com",
            [ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.3")],
        )
}

const SEARCH: [&str; 3] = [
    "bookinfo.svc.cluster.local",
    "svc.cluster.local",
    "cluster.local",
];

fn ask(name: &str, rtype: RecordType) -> Decision {
    ask_in(name, rtype, DNSClass::IN)
}

fn ask_in(name: &str, rtype: RecordType, class: DNSClass) -> Decision {
    let mut q = Query::query(Name::from_ascii(name).unwrap(), rtype);
    q.set_query_class(class);
    let mut m = Message::new();
    m.set_id(42).set_recursion_desired(true);
    m.add_query(q);
    let search: Vec<String> = SEARCH.iter().map(|s| s.to_string()).collect();
    decide(&m, &table(), &search)
}

fn mesh(d: Decision) -> (Message, MeshAnswer) {
    match d {
        Decision::Mesh(m, kind) => (m, kind),
        Decision::Forward => panic!("forwarded"),
    }
}

#[test]
fn a_mesh_name_is_answered_authoritatively_with_ttl_30() {
    let (m, kind) = mesh(ask("Reviews.Bookinfo.svc.cluster.local.", RecordType::A));
    assert_eq!(kind, MeshAnswer::Addresses);
    assert_eq!(m.id(), 42);
    assert!(m.authoritative() && m.recursion_desired());
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert_eq!(m.answers().len(), 1);
    let r = &m.answers()[0];
    assert_eq!(r.ttl(), 30);
    // The owner keeps the case the client asked with (DNS 0x20 clients check it).
    assert_eq!(r.name().to_ascii(), "Reviews.Bookinfo.svc.cluster.local.");
    assert_eq!(r.data(), &RData::A(A::new(10, 96, 1, 1)));
}

#[test]
fn aaaa_answers_the_v6_addresses_only() {
    let (m, kind) = mesh(ask("ratings.bookinfo.svc.cluster.local.", RecordType::AAAA));
    assert_eq!(kind, MeshAnswer::Addresses);
    assert_eq!(m.answers().len(), 1);
    assert_eq!(m.answers()[0].record_type(), RecordType::AAAA);
}

#[test]
fn a_mesh_name_without_the_family_is_nodata_not_forwarded() {
    for (name, rtype) in [
        ("reviews.bookinfo.svc.cluster.local.", RecordType::AAAA),
        ("v6only.bookinfo.svc.cluster.local.", RecordType::A),
    ] {
        let (m, kind) = mesh(ask(name, rtype));
        assert_eq!(kind, MeshAnswer::NoData, "{name} {rtype}");
        assert_eq!(m.response_code(), ResponseCode::NoError);
        assert!(m.answers().is_empty() && m.authoritative());
    }
}

#[test]
fn other_types_other_classes_and_other_names_are_forwarded() {
    for rtype in [
        RecordType::MX,
        RecordType::TXT,
        RecordType::SRV,
        RecordType::PTR,
    ] {
        assert!(matches!(
            ask("reviews.bookinfo.svc.cluster.local.", rtype),
            Decision::Forward
        ));
    }
    assert!(matches!(
        ask_in(
            "reviews.bookinfo.svc.cluster.local.",
            RecordType::A,
            DNSClass::CH
        ),
        Decision::Forward
    ));
    assert!(matches!(
        ask("example.org.", RecordType::A),
        Decision::Forward
    ));
    assert!(matches!(ask(".", RecordType::A), Decision::Forward));
}

#[test]
fn a_mesh_name_behind_a_search_domain_is_a_cname_and_its_addresses() {
    let asked = "reviews.bookinfo.svc.cluster.local.bookinfo.svc.cluster.local.";
    let (m, kind) = mesh(ask(asked, RecordType::A));
    assert_eq!(kind, MeshAnswer::Addresses);
    let [cname, a] = m.answers() else {
        panic!("two records expected: {:?}", m.answers());
    };
    assert_eq!(cname.name().to_ascii(), asked);
    let target = Name::from_ascii("reviews.bookinfo.svc.cluster.local.").unwrap();
    assert_eq!(cname.data(), &RData::CNAME(CNAME(target.clone())));
    assert_eq!(a.name(), &target);
    assert_eq!(a.ttl(), TTL_SECONDS);

    // ServiceEntry hosts too: Istio's example is www.google.com.<ns>.svc.cluster.local.
    let (m, _) = mesh(ask("www.example.com.svc.cluster.local.", RecordType::A));
    assert_eq!(m.answers().len(), 4);

    // Without an address of the family: NODATA, no CNAME (as Istio and ztunnel).
    let (m, kind) = mesh(ask(asked, RecordType::AAAA));
    assert_eq!(kind, MeshAnswer::NoData);
    assert!(m.answers().is_empty());
}

#[test]
fn search_domains_alone_or_with_unknown_names_are_forwarded() {
    assert!(matches!(
        ask("svc.cluster.local.", RecordType::A),
        Decision::Forward
    ));
    assert!(matches!(
        ask("www.example.org.bookinfo.svc.cluster.local.", RecordType::A),
        Decision::Forward
    ));
}

#[test]
fn addresses_come_in_a_random_order() {
    let firsts: std::collections::HashSet<_> = (0..60)
        .map(|_| {
            mesh(ask("www.example.com.", RecordType::A)).0.answers()[0]
                .data()
                .to_string()
        })
        .collect();
    assert!(firsts.len() > 1, "always the same first address");
}
