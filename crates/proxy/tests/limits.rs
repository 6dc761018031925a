//! Resource limits: `maxConnections` and the TCP idle timeout, on an in-process proxy.

mod common;

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn echo_backend() -> u16 {
    let ln = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = ln.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = ln.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    port
}

/// Echo round trip; false if the proxy closed the connection or nothing came back in time.
async fn echoes(s: &mut TcpStream) -> bool {
    let fut = async {
        s.write_all(b"ping").await.ok()?;
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.ok()?;
        Some(&buf == b"ping")
    };
    tokio::time::timeout(Duration::from_secs(3), fut)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_and_idle_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    common::write_pki(dir, "spiffe://cluster.local/ns/foo/sa/db");
    std::fs::create_dir(dir.join("policies")).unwrap();
    let echo = echo_backend().await;
    let inb = common::free_port();
    let cfg = dir.join("proxy.yaml");
    std::fs::write(
        &cfg,
        format!(
            r#"workload: {{ namespace: foo, serviceAccount: db }}
certs: {{ key: key.pem, certChain: cert-chain.pem }}
trustBundles: [ "cluster.local=root-cert.pem" ]
mesh: {{ trustDomain: cluster.local }}
policyDir: policies
inbound:
- {{ port: {inb}, targetPort: {echo} }}
maxConnections: 2
timeouts: {{ tcpIdleMs: 400 }}
"#
        ),
    )
    .unwrap();
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
