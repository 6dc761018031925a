//! Resource limits: `maxConnections` and the TCP idle timeout, on an in-process proxy.

use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use trustmesh_testkit::http::echo_backend;
use trustmesh_testkit::net::{self, free_port};
use trustmesh_testkit::sidecar::write_proxy_config;

/// Echo round trip; false if the proxy closed the connection or nothing came back in time.
async fn echoes(s: &mut TcpStream) -> bool {
    net::echoes(s, b"ping").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_and_idle_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let echo = echo_backend().await;
    let inb = free_port();
    let cfg = write_proxy_config(
        tmp.path(),
        "db",
        &[(inb, echo, "tcp")],
        "maxConnections: 2
timeouts: { tcpIdle: 400ms }
",
    );
    let (shared, _) = trustmesh_proxy::start(&cfg).await.expect("proxy starts");

    let mut a = TcpStream::connect(("127.0.0.1", inb)).await.unwrap();
    let mut b = TcpStream::connect(("127.0.0.1", inb)).await.unwrap();
    assert!(echoes(&mut a).await && echoes(&mut b).await);
    // A third connection is closed at once.
    let mut c = TcpStream::connect(("127.0.0.1", inb)).await.unwrap();
    assert!(!echoes(&mut c).await);
    let m = shared.metrics.render(0);
    assert!(m.contains("reason=\"connection_limit\"} 1"), "{m}");

    // Traffic keeps a connection past the idle limit; silence ends it, which frees a slot.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(echoes(&mut a).await, "active connection must stay open");
    }
    // `b` has been silent for > 800 ms: closed by the proxy.
    let mut buf = [0u8; 1];
    let r = tokio::time::timeout(Duration::from_secs(2), b.read(&mut buf)).await;
    assert!(
        matches!(r, Ok(Ok(0)) | Ok(Err(_))),
        "idle connection not closed: {r:?}"
    );
    let mut d = TcpStream::connect(("127.0.0.1", inb)).await.unwrap();
    assert!(echoes(&mut d).await, "slot freed by the idle close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooded_listener_leaves_the_others_their_reserve() {
    let tmp = tempfile::tempdir().unwrap();
    let echo = echo_backend().await;
    let (a, b) = (free_port(), free_port());
    // 8 slots, two listeners: 2 held for each.
    let cfg = write_proxy_config(
        tmp.path(),
        "db",
        &[(a, echo, "tcp"), (b, echo, "tcp")],
        "maxConnections: 8\n",
    );
    let (shared, _) = trustmesh_proxy::start(&cfg).await.expect("proxy starts");
    // Slow clients on `a` that never send a byte (held until the handshake timeout).
    let mut flood = Vec::new();
    for _ in 0..10 {
        flood.push(TcpStream::connect(("127.0.0.1", a)).await.unwrap());
    }
    net::until("4 refusals on `a`", Duration::from_secs(5), || {
        shared.metrics.render(0).contains("connection_limit\"} 4")
    })
    .await;
    // `a` got 6 of the 8; `b` still has its 2.
    let mut b1 = TcpStream::connect(("127.0.0.1", b)).await.unwrap();
    let mut b2 = TcpStream::connect(("127.0.0.1", b)).await.unwrap();
    assert!(echoes(&mut b1).await && echoes(&mut b2).await);
    let mut b3 = TcpStream::connect(("127.0.0.1", b)).await.unwrap();
    assert!(!echoes(&mut b3).await, "the pool is full");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_without_requests_is_closed_when_idle() {
    use http_body_util::{BodyExt, Empty};
    let tmp = tempfile::tempdir().unwrap();
    let echo = echo_backend().await;
    let inb = free_port();
    // The app is never reached: a DENY on every path answers from the proxy itself.
    std::fs::create_dir_all(tmp.path().join("policies")).unwrap();
    std::fs::write(
        tmp.path().join("policies/deny.yaml"),
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
         metadata: { name: deny, namespace: foo }\n\
         spec: { action: DENY, rules: [ { to: [ { operation: { paths: [\"/*\"] } } ] } ] }\n",
    )
    .unwrap();
    let cfg = write_proxy_config(
        tmp.path(),
        "db",
        &[(inb, echo, "http")],
        "timeouts: { httpIdle: 600ms }\n",
    );
    trustmesh_proxy::start(&cfg).await.expect("proxy starts");

    let h2 = |stream: TcpStream| async move {
        hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .unwrap()
    };
    let get = |send: &mut hyper::client::conn::http2::SendRequest<Empty<bytes::Bytes>>| {
        let req = hyper::Request::get(format!("http://127.0.0.1:{inb}/x"))
            .body(Empty::new())
            .unwrap();
        send.send_request(req)
    };

    // Active: a request every 300 ms keeps it open well past 600 ms.
    let (mut send, conn) = h2(TcpStream::connect(("127.0.0.1", inb)).await.unwrap()).await;
    let conn = tokio::spawn(conn);
    let mut last_answer = std::time::Instant::now();
    for _ in 0..5 {
        let resp = get(&mut send).await.expect("the connection is still open");
        assert_eq!(resp.status(), 403);
        let _ = resp.into_body().collect().await;
        last_answer = std::time::Instant::now();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Then silence (HTTP/2 PINGs would still be answered by the client): closed about 600 ms
    // after the last answer (the proxy counts whole milliseconds).
    tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect("the proxy closed the idle connection")
        .unwrap()
        .ok();
    assert!(
        last_answer.elapsed() >= Duration::from_millis(590),
        "{:?}",
        last_answer.elapsed()
    );
}
