//! Names outside the mesh go to the upstream resolvers: the answer relayed with the client's
//! ID, truncated answers asked again over TCP, the next upstream after a timeout, SERVFAIL when
//! none answers, and forged answers ignored (tier 1: the proxy in-process, test upstreams on
//! loopback).

mod support;

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use support::*;
use trustmesh_dns::Limits;
use trustmesh_testkit::dns::{addresses, query, query_edns, tcp_ask, udp_ask, Behaviour, SPOOFED};

fn outside() -> Vec<IpAddr> {
    vec![IpAddr::V4(OUTSIDE_IP)]
}

#[tokio::test]
async fn the_upstream_answer_is_relayed_with_the_client_id() {
    let up = upstream(Behaviour::Answer).await;
    let (proxy, _drain) = proxy(&[&up], quick()).await;

    for id in [0, 1, 0x7777, u16::MAX] {
        let r = udp_ask(proxy.udp, &query(id, "Example.ORG.", RecordType::A))
            .await
            .expect("an answer");
        assert_eq!(r.id(), id);
        assert_eq!(addresses(&r), outside());
        assert_eq!(r.answers()[0].ttl(), 60, "the upstream's TTL, not ours");
        assert_eq!(r.queries()[0].name().to_ascii(), "Example.ORG.");
    }
    let r = udp_ask(proxy.udp, &query(9, "nowhere.example.", RecordType::A))
        .await
        .expect("an answer");
    assert_eq!(r.response_code(), ResponseCode::NXDomain, "relayed as is");

    let seen = up.seen();
    assert_eq!(seen.len(), 5);
    assert!(seen
        .iter()
        .all(|s| s.transport == "udp" && (s.name == OUTSIDE || s.name == "nowhere.example")));
    assert_eq!(proxy.counters.snapshot().forwarded, 5);
}

#[tokio::test]
async fn forwarded_queries_get_random_ids_and_source_ports() {
    let up = upstream(Behaviour::Answer).await;
    let (proxy, _drain) = proxy(&[&up], quick()).await;

    for _ in 0..20 {
        let r = udp_ask(proxy.udp, &query(7, "example.org.", RecordType::A)).await;
        assert_eq!(r.expect("an answer").id(), 7);
    }
    let seen = up.seen();
    assert_eq!(seen.len(), 20);
    let ids: HashSet<u16> = seen.iter().map(|s| s.id).collect();
    let ports: HashSet<u16> = seen.iter().map(|s| s.from.port()).collect();
    assert!(ids.len() >= 18, "upstream IDs repeat: {ids:?}");
    assert!(
        seen.iter().filter(|s| s.id == 7).count() <= 2,
        "the client's ID went upstream"
    );
    assert!(ports.len() >= 18, "source ports repeat: {ports:?}");
    assert!(
        !ports.contains(&proxy.udp.port()),
        "sent from the listening port"
    );
}

#[tokio::test]
async fn a_truncated_udp_answer_is_asked_again_over_tcp() {
    let up = upstream(Behaviour::Truncate).await;
    let (proxy, _drain) = proxy(&[&up], quick()).await;

    // A client that takes 4 KiB gets all 100 records over UDP, though the upstream truncated.
    let r = udp_ask(
        proxy.udp,
        &query_edns(21, &format!("{BIG}."), RecordType::A, 4096),
    )
    .await
    .expect("an answer");
    assert_eq!(r.id(), 21);
    assert!(!r.truncated());
    assert_eq!(r.answers().len(), 100);
    let transports: Vec<_> = up.seen().iter().map(|s| s.transport).collect();
    assert_eq!(transports, ["udp", "tcp"]);
    assert_eq!(up.seen()[1].edns, Some(4096), "the query went out verbatim");
    assert_eq!(proxy.counters.snapshot().truncated_retries, 1);
}

#[tokio::test]
async fn an_answer_too_large_for_the_client_is_cut_and_complete_over_tcp() {
    let up = upstream(Behaviour::Answer).await;
    let (proxy, _drain) = proxy(&[&up], quick()).await;

    // No EDNS: 512 bytes. The upstream truncates, the proxy gets it all over TCP, and the
    // client gets what fits with TC set...
    let r = udp_ask(proxy.udp, &query(22, &format!("{BIG}."), RecordType::A))
        .await
        .expect("an answer");
    assert_eq!(r.id(), 22);
    assert!(r.truncated());
    assert!(r.to_vec().unwrap().len() <= 512);
    assert!(!r.answers().is_empty() && r.answers().len() < 100);
    // ...and asks again over TCP, as resolvers do.
    let r = tcp_ask(proxy.tcp, &query(23, &format!("{BIG}."), RecordType::A))
        .await
        .expect("an answer");
    assert_eq!((r.id(), r.truncated(), r.answers().len()), (23, false, 100));
}

#[tokio::test]
async fn a_silent_upstream_is_skipped_for_the_next() {
    let silent = upstream(Behaviour::Silent).await;
    let up = upstream(Behaviour::Answer).await;
    let (proxy, _drain) = proxy(&[&silent, &up], quick()).await;

    let started = Instant::now();
    let r = udp_ask(proxy.udp, &query(31, "example.org.", RecordType::A))
        .await
        .expect("an answer");
    assert_eq!(addresses(&r), outside());
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "the first upstream got its 300 ms"
    );
    assert_eq!(silent.seen().len(), 1);
    assert_eq!(up.seen().len(), 1);
    assert_eq!(proxy.counters.snapshot().upstream_failures, 1);
}

#[tokio::test]
async fn servfail_when_every_upstream_fails() {
    let a = upstream(Behaviour::Silent).await;
    let b = upstream(Behaviour::Silent).await;
    let (proxy, _drain) = proxy(&[&a, &b], quick()).await;

    let r = udp_ask(proxy.udp, &query(41, "example.org.", RecordType::A))
        .await
        .expect("an answer");
    assert_eq!((r.id(), r.response_code()), (41, ResponseCode::ServFail));
    assert!(r.answers().is_empty());
    assert_eq!((a.seen().len(), b.seen().len()), (1, 1));
    let c = proxy.counters.snapshot();
    assert_eq!((c.servfail, c.upstream_failures), (1, 2));

    // The same over TCP, which goes upstream over TCP.
    let r = tcp_ask(proxy.tcp, &query(42, "example.org.", RecordType::A))
        .await
        .expect("an answer");
    assert_eq!((r.id(), r.response_code()), (42, ResponseCode::ServFail));
    assert_eq!(a.seen().last().unwrap().transport, "tcp");
}

#[tokio::test]
async fn the_query_timeout_bounds_the_whole_walk() {
    let ups = [
        upstream(Behaviour::Silent).await,
        upstream(Behaviour::Silent).await,
        upstream(Behaviour::Silent).await,
    ];
    let limits = Limits {
        upstream_timeout: Duration::from_millis(600),
        query_timeout: Duration::from_millis(900),
        ..Limits::default()
    };
    let (proxy, _drain) = proxy(&[&ups[0], &ups[1], &ups[2]], limits).await;

    let started = Instant::now();
    let r = udp_ask(proxy.udp, &query(51, "example.org.", RecordType::A))
        .await
        .expect("an answer");
    let took = started.elapsed();
    assert_eq!(r.response_code(), ResponseCode::ServFail);
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(1700),
        "{took:?}"
    );
    assert_eq!(
        ups[2].seen().len(),
        0,
        "the third upstream was tried past the deadline"
    );
}

#[tokio::test]
async fn forged_answers_are_ignored() {
    let up = upstream(Behaviour::Spoof).await;
    let (proxy, _drain) = proxy(&[&up], quick()).await;

    for id in 60..65 {
        let r = udp_ask(proxy.udp, &query(id, "example.org.", RecordType::A))
            .await
            .expect("an answer");
        assert_eq!(r.id(), id);
        assert_eq!(
            addresses(&r),
            outside(),
            "a forged answer ({SPOOFED}) was taken"
        );
    }
    // The one with the wrong ID from the right port is seen and counted; the one from another
    // port never reaches the connected socket.
    assert!(proxy.counters.snapshot().mismatched >= 5);
}
