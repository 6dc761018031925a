//! Stopping with the lifecycle drain: the listeners close, a forwarded query already accepted
//! is still answered, open TCP connections close, and the drain completes (tier 1).

mod support;

use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use support::*;
use tokio::net::TcpStream;
use trustmesh_dns::Limits;
use trustmesh_lifecycle::drain::Mode;
use trustmesh_testkit::dns::{query, udp_ask, udp_raw, Behaviour};
use trustmesh_testkit::net::closed_within;

#[tokio::test]
async fn a_drain_answers_what_was_accepted_and_stops() {
    let silent = upstream(Behaviour::Silent).await;
    let limits = Limits {
        upstream_timeout: Duration::from_millis(500),
        ..quick()
    };
    let (proxy, trigger) = proxy(&[&silent], limits).await;
    let mut idle = TcpStream::connect(proxy.tcp).await.unwrap();
    // Let the listener accept it before the drain.
    tokio::time::sleep(Duration::from_millis(50)).await;

    let udp = proxy.udp;
    let in_flight =
        tokio::spawn(async move { udp_ask(udp, &query(7, "example.org.", RecordType::A)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let drained = trigger.drain(Mode::Graceful, Duration::from_secs(3)).await;
    assert!(
        drained.complete(),
        "{} holders still open",
        drained.still_open
    );

    let r = in_flight
        .await
        .unwrap()
        .expect("the accepted query was answered");
    assert_eq!((r.id(), r.response_code()), (7, ResponseCode::ServFail));
    assert!(closed_within(&mut idle, Duration::from_secs(1)).await);

    let q = query(8, &format!("{REVIEWS}."), RecordType::A)
        .to_vec()
        .unwrap();
    assert!(udp_raw(proxy.udp, &q, Duration::from_millis(300))
        .await
        .is_none());
    assert!(
        TcpStream::connect(proxy.tcp).await.is_err(),
        "TCP still accepts"
    );
}
