//! Clients that ask over TCP: mesh names answered, other names forwarded over TCP, several
//! queries on one connection (also sent back to back) answered in order (tier 1).

mod support;

use std::net::IpAddr;

use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use trustmesh_testkit::dns::{addresses, query, read_framed, tcp_ask, tcp_ask_on, Behaviour};

#[tokio::test]
async fn mesh_names_over_tcp() {
    let up = upstream(Behaviour::Answer).await;
    let (proxy, _drain) = proxy(&[&up], quick()).await;
    assert_eq!(proxy.udp.port(), proxy.tcp.port(), "one port for both");

    let r = tcp_ask(proxy.tcp, &query(1, &format!("{DUAL}."), RecordType::AAAA))
        .await
        .expect("an answer");
    assert_eq!(addresses(&r), vec![DUAL_V6.parse::<IpAddr>().unwrap()]);
    assert!(up.seen().is_empty());
}

#[tokio::test]
async fn other_names_are_forwarded_over_tcp() {
    let up = upstream(Behaviour::Answer).await;
    let (proxy, _drain) = proxy(&[&up], quick()).await;

    let r = tcp_ask(proxy.tcp, &query(0xabcd, "example.org.", RecordType::A))
        .await
        .expect("an answer");
    assert_eq!(r.id(), 0xabcd);
    assert_eq!(addresses(&r), vec![IpAddr::V4(OUTSIDE_IP)]);
    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].transport, "tcp");
    assert_ne!(seen[0].id, 0xabcd);
}

#[tokio::test]
async fn queries_on_one_connection_are_answered_in_order() {
    let up = upstream(Behaviour::Answer).await;
    let (proxy, _drain) = proxy(&[&up], quick()).await;
    let mut s = TcpStream::connect(proxy.tcp).await.unwrap();

    let r = tcp_ask_on(&mut s, &query(1, "example.org.", RecordType::A)).await;
    assert_eq!(r.expect("an answer").id(), 1);

    // Three frames in one write: a forwarded name between two mesh names.
    let mut frames = Vec::new();
    for (id, name) in [(2, REVIEWS), (3, OUTSIDE), (4, DUAL)] {
        let bytes = query(id, &format!("{name}."), RecordType::A)
            .to_vec()
            .unwrap();
        frames.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        frames.extend_from_slice(&bytes);
    }
    s.write_all(&frames).await.unwrap();
    for id in [2, 3, 4] {
        let bytes = read_framed(&mut s).await.expect("an answer");
        assert_eq!(Message::from_vec(&bytes).unwrap().id(), id);
    }
}
