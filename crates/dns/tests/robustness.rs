//! What every process of the pod can throw at the proxy: malformed messages, random bytes,
//! floods of queries to forward, TCP connections that pile up or say nothing. The proxy
//! answers what it can, drops the rest, counts it, and keeps answering (tier 1).

mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, OpCode, ResponseCode};
use hickory_proto::rr::RecordType;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};
use trustmesh_dns::Limits;
use trustmesh_testkit::dns::{addresses, query, tcp_ask, tcp_ask_on, udp_ask, udp_raw, Behaviour};
use trustmesh_testkit::net::{closed_within, until};

/// The proxy still answers a mesh name.
async fn still_answers(server: SocketAddr) {
    let r = udp_ask(server, &query(999, &format!("{REVIEWS}."), RecordType::A))
        .await
        .expect("the proxy stopped answering");
    assert_eq!(addresses(&r), vec![REVIEWS_IP.parse::<IpAddr>().unwrap()]);
}

async fn raw(server: SocketAddr, bytes: &[u8]) -> Option<Message> {
    let answer = udp_raw(server, bytes, Duration::from_millis(300)).await?;
    Some(Message::from_vec(&answer).expect("the proxy's answer parses"))
}

#[tokio::test]
async fn malformed_messages_get_formerr_or_nothing() {
    let up = upstream(Behaviour::Answer).await;
    let (proxy, _drain) = proxy(&[&up], quick()).await;
    let good = query(0x0102, "example.org.", RecordType::A)
        .to_vec()
        .unwrap();

    // Too short for a header: nothing to answer with.
    assert!(raw(proxy.udp, &[0x01]).await.is_none());
    assert!(raw(proxy.udp, &[]).await.is_none());
    // A response is never answered (no loops between servers).
    let mut response = good.clone();
    response[2] |= 0x80;
    assert!(raw(proxy.udp, &response).await.is_none());
    // A question cut short: FORMERR with the client's ID.
    let r = raw(proxy.udp, &good[..good.len() - 3])
        .await
        .expect("FORMERR");
    assert_eq!((r.id(), r.response_code()), (0x0102, ResponseCode::FormErr));
    // Two questions: FORMERR.
    let mut two = query(0x0103, "a.example.", RecordType::A);
    two.add_query(query(0, "b.example.", RecordType::A).queries()[0].clone());
    let r = raw(proxy.udp, &two.to_vec().unwrap())
        .await
        .expect("FORMERR");
    assert_eq!(r.response_code(), ResponseCode::FormErr);
    // An UPDATE: NOTIMP.
    let mut update = query(0x0104, "example.org.", RecordType::SOA);
    update.set_op_code(OpCode::Update);
    let r = raw(proxy.udp, &update.to_vec().unwrap())
        .await
        .expect("NOTIMP");
    assert_eq!(r.response_code(), ResponseCode::NotImp);

    still_answers(proxy.udp).await;
    let c = proxy.counters.snapshot();
    assert_eq!((c.malformed, c.not_implemented), (5, 1));
    assert!(up.seen().is_empty(), "something malformed went upstream");
}

#[tokio::test]
async fn random_and_mangled_datagrams_do_not_stop_the_proxy() {
    let up = upstream(Behaviour::Answer).await;
    let (proxy, _drain) = proxy(&[&up], quick()).await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let good = query_bytes();
    for i in 0..3000 {
        let packet: Vec<u8> = if i % 2 == 0 {
            let len = rng.gen_range(0..600);
            (0..len).map(|_| rng.gen()).collect()
        } else {
            let mut p = good.clone();
            for _ in 0..rng.gen_range(1..6) {
                let at = rng.gen_range(0..p.len());
                p[at] = rng.gen();
            }
            p.truncate(rng.gen_range(1..=p.len()));
            p
        };
        socket.send_to(&packet, proxy.udp).await.unwrap();
        if i % 50 == 0 {
            // Let the proxy drain its socket buffer now and then.
            tokio::task::yield_now().await;
        }
    }
    still_answers(proxy.udp).await;
    let c = proxy.counters.snapshot();
    assert!(c.queries > 0);
    assert!(c.malformed > 500, "{c:?}");

    // Garbage over TCP closes that connection only.
    let mut s = TcpStream::connect(proxy.tcp).await.unwrap();
    s.write_all(&[0, 5, 1, 2, 3, 4, 5]).await.unwrap();
    assert!(closed_within(&mut s, Duration::from_secs(2)).await);
    let r = tcp_ask(proxy.tcp, &query(5, &format!("{REVIEWS}."), RecordType::A)).await;
    assert_eq!(r.expect("an answer over TCP").id(), 5);
}

fn query_bytes() -> Vec<u8> {
    let mut q = query(0x4242, "www.example.org.", RecordType::A);
    let mut edns = hickory_proto::op::Edns::new();
    edns.set_max_payload(1232);
    q.set_edns(edns);
    q.to_vec().unwrap()
}

#[tokio::test]
async fn a_flood_of_forwarded_queries_is_bounded() {
    let silent = upstream(Behaviour::Silent).await;
    let limits = Limits {
        max_in_flight: 4,
        upstream_timeout: Duration::from_secs(2),
        query_timeout: Duration::from_secs(2),
        ..Limits::default()
    };
    let (proxy, _drain) = proxy(&[&silent], limits).await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for id in 0..40u16 {
        let q = query(id, &format!("n{id}.example.org."), RecordType::A);
        socket
            .send_to(&q.to_vec().unwrap(), proxy.udp)
            .await
            .unwrap();
    }
    // 36 are refused at once with SERVFAIL; 4 wait on the silent upstream.
    let mut buf = vec![0u8; 512];
    let mut refused = Vec::new();
    for _ in 0..36 {
        let n = tokio::time::timeout(Duration::from_secs(1), socket.recv(&mut buf))
            .await
            .expect("36 immediate answers")
            .unwrap();
        let r = Message::from_vec(&buf[..n]).unwrap();
        assert_eq!(r.response_code(), ResponseCode::ServFail);
        refused.push(r.id());
    }
    let c = proxy.counters.snapshot();
    assert_eq!((c.refused_in_flight, c.in_flight), (36, 4));
    until(
        "the 4 queries to reach the upstream",
        Duration::from_secs(2),
        || silent.seen().len() == 4,
    )
    .await;
    // Mesh names are still answered while the slots are full.
    still_answers(proxy.udp).await;
    // The 4 end with SERVFAIL at their timeout and free their slots.
    until(
        "the in-flight gauge to drop to 0",
        Duration::from_secs(4),
        || proxy.counters.snapshot().in_flight == 0,
    )
    .await;
    assert_eq!(silent.seen().len(), 4, "a refused query went upstream");
    assert_eq!(proxy.counters.snapshot().servfail, 4);
}

#[tokio::test]
async fn tcp_connections_are_capped() {
    let up = upstream(Behaviour::Answer).await;
    let limits = Limits {
        max_tcp_connections: 2,
        ..quick()
    };
    let (proxy, _drain) = proxy(&[&up], limits).await;
    let ask = query(1, &format!("{REVIEWS}."), RecordType::A);
    let mut first = TcpStream::connect(proxy.tcp).await.unwrap();
    let mut second = TcpStream::connect(proxy.tcp).await.unwrap();
    assert!(tcp_ask_on(&mut first, &ask).await.is_some());
    assert!(tcp_ask_on(&mut second, &ask).await.is_some());

    let mut third = TcpStream::connect(proxy.tcp).await.unwrap();
    assert!(
        closed_within(&mut third, Duration::from_secs(2)).await,
        "a third connection was kept"
    );
    assert_eq!(proxy.counters.snapshot().refused_connections, 1);
    assert!(
        tcp_ask_on(&mut first, &ask).await.is_some(),
        "the first stopped answering"
    );

    drop(first);
    let mut again = None;
    for _ in 0..50 {
        let mut s = TcpStream::connect(proxy.tcp).await.unwrap();
        if tcp_ask_on(&mut s, &ask).await.is_some() {
            again = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        again.is_some(),
        "the closed connection's slot was not given back"
    );
}

#[tokio::test]
async fn idle_and_trickling_tcp_clients_are_closed() {
    let up = upstream(Behaviour::Answer).await;
    let limits = Limits {
        tcp_idle: Duration::from_millis(300),
        ..quick()
    };
    let (proxy, _drain) = proxy(&[&up], limits).await;

    let mut idle = TcpStream::connect(proxy.tcp).await.unwrap();
    assert!(closed_within(&mut idle, Duration::from_secs(2)).await);

    // Half a frame, then nothing.
    let mut trickle = TcpStream::connect(proxy.tcp).await.unwrap();
    trickle.write_all(&[0, 40, 1, 2]).await.unwrap();
    assert!(closed_within(&mut trickle, Duration::from_secs(2)).await);

    // A connection in use is kept across several queries.
    let mut busy = TcpStream::connect(proxy.tcp).await.unwrap();
    for id in 0..3 {
        let r = tcp_ask_on(&mut busy, &query(id, &format!("{REVIEWS}."), RecordType::A)).await;
        assert_eq!(r.expect("an answer").id(), id);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}
