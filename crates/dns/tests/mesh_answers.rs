//! Mesh names answered by the proxy itself over UDP, never forwarded; other types and names
//! forwarded to the upstream (tier 1: the proxy in-process, a test upstream on loopback).

mod support;

use std::net::IpAddr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};
use support::*;
use trustmesh_testkit::dns::{addresses, query, udp_ask, Behaviour};

#[tokio::test]
async fn a_and_aaaa_for_mesh_names_come_from_the_table() {
    let up = upstream(Behaviour::Answer).await;
    let (proxy, _drain) = proxy(&[&up], quick()).await;

    let a = udp_ask(proxy.udp, &query(1, &format!("{REVIEWS}."), RecordType::A))
        .await
        .expect("an answer");
    assert_eq!(a.id(), 1);
    assert_eq!(a.response_code(), ResponseCode::NoError);
    assert!(a.authoritative());
    assert_eq!(addresses(&a), vec![REVIEWS_IP.parse::<IpAddr>().unwrap()]);
    assert_eq!(a.answers()[0].ttl(), 30);

    let aaaa = udp_ask(proxy.udp, &query(2, &format!("{DUAL}."), RecordType::AAAA))
        .await
        .expect("an answer");
    assert_eq!(addresses(&aaaa), vec![DUAL_V6.parse::<IpAddr>().unwrap()]);

    assert!(
        up.seen().is_empty(),
        "a mesh name went upstream: {:?}",
        up.seen()
    );
    let c = proxy.counters.snapshot();
    assert_eq!((c.queries, c.mesh_answers, c.forwarded), (2, 2, 0));
}

#[tokio::test]
async fn a_mesh_name_without_the_family_is_nodata_and_stays_here() {
    let up = upstream(Behaviour::Answer).await;
    let (proxy, _drain) = proxy(&[&up], quick()).await;

    let r = udp_ask(
        proxy.udp,
        &query(3, &format!("{REVIEWS}."), RecordType::AAAA),
    )
    .await
    .expect("an answer");
    assert_eq!(r.response_code(), ResponseCode::NoError);
    assert!(r.answers().is_empty());
    assert!(r.authoritative());
    assert!(up.seen().is_empty(), "the AAAA query leaked upstream");
    assert_eq!(proxy.counters.snapshot().mesh_nodata, 1);
}

#[tokio::test]
async fn other_types_for_mesh_names_are_forwarded() {
    let up = upstream(Behaviour::Answer).await;
    let (proxy, _drain) = proxy(&[&up], quick()).await;

    let r = udp_ask(
        proxy.udp,
        &query(4, &format!("{REVIEWS}."), RecordType::SRV),
    )
    .await
    .expect("an answer");
    // The test upstream does not know the name: its NXDOMAIN is relayed.
    assert_eq!(r.response_code(), ResponseCode::NXDomain);
    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (seen[0].name.as_str(), seen[0].rtype),
        (REVIEWS, RecordType::SRV)
    );
}

#[tokio::test]
async fn a_search_list_expansion_of_a_mesh_name_gets_a_cname() {
    let up = upstream(Behaviour::Answer).await;
    let (proxy, _drain) = proxy(&[&up], quick()).await;

    // What glibc asks first for `reviews.bookinfo.svc.cluster.local` with ndots:5.
    let asked = format!("{REVIEWS}.bookinfo.svc.cluster.local.");
    let r = udp_ask(proxy.udp, &query(5, &asked, RecordType::A))
        .await
        .expect("an answer");
    assert_eq!(r.answers().len(), 2, "{:?}", r.answers());
    match r.answers()[0].data() {
        RData::CNAME(target) => assert_eq!(target.0.to_ascii(), format!("{REVIEWS}.")),
        other => panic!("a CNAME first, got {other}"),
    }
    assert_eq!(addresses(&r), vec![REVIEWS_IP.parse::<IpAddr>().unwrap()]);
    assert!(up.seen().is_empty());
}
