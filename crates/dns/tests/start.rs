//! What `start` refuses, in words an operator reads: no upstream, an upstream that is the
//! proxy itself, an address already taken (tier 1).

use std::net::SocketAddr;
use std::sync::Arc;

use trustmesh_dns::{start, StaticNames, Upstreams};
use trustmesh_lifecycle::drain;
use trustmesh_testkit::net::free_port;

async fn start_on(bind: SocketAddr, upstreams: Vec<SocketAddr>) -> String {
    let (_trigger, watch) = drain::channel();
    let names = Arc::new(StaticNames::new());
    match start(bind, names, Upstreams::new(upstreams), watch).await {
        Ok(bound) => panic!("started on {}", bound.udp),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn start_refuses_what_cannot_work() {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    assert_eq!(
        start_on(any, vec![]).await,
        "the DNS proxy has no upstream resolver to forward names outside the mesh to"
    );

    let port = free_port();
    let own: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert_eq!(
        start_on(own, vec![own]).await,
        format!(
            "upstream resolver {own} is the DNS proxy's own address: forwarded queries would \
             come back to it"
        )
    );
    let wildcard: SocketAddr = format!("0.0.0.0:{port}").parse().unwrap();
    assert!(start_on(wildcard, vec![own]).await.contains("own address"));

    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let upstream: SocketAddr = "127.0.0.1:53".parse().unwrap();
    let err = start_on(addr, vec![upstream]).await;
    assert!(
        err.starts_with(&format!("cannot listen for DNS on UDP {addr}: ")),
        "{err}"
    );
}

#[tokio::test]
async fn limits_past_what_a_semaphore_holds_mean_no_limit() {
    let (_trigger, watch) = drain::channel();
    let limits = trustmesh_dns::Limits {
        max_in_flight: usize::MAX,
        max_tcp_connections: usize::MAX,
        ..Default::default()
    };
    let upstream: SocketAddr = "127.0.0.1:53".parse().unwrap();
    let bound = trustmesh_dns::start_with(
        "127.0.0.1:0".parse().unwrap(),
        Arc::new(StaticNames::new()),
        Upstreams::new(vec![upstream]),
        limits,
        watch,
    )
    .await
    .expect("starts");
    assert_ne!(bound.udp.port(), 0);
}
