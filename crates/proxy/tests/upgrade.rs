//! HTTP/1.1 upgrades (WebSocket-style) through an inbound HTTP listener: authorized like any
//! request, then tunnelled both ways; a denied upgrade never reaches the app.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use trustmesh_testkit::http::{backend, read_http_head};
use trustmesh_testkit::net::free_port;
use trustmesh_testkit::sidecar::write_proxy_config;

/// Answers an upgrade request with 101, then echoes bytes; counts how many requests it saw.
async fn upgrading_backend(seen: std::sync::Arc<std::sync::atomic::AtomicUsize>) -> u16 {
    backend(move |mut s| {
        let seen = seen.clone();
        async move {
            let Some(head) = read_head(&mut s).await else {
                return;
            };
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let lower = head.to_ascii_lowercase();
            if !(lower.contains("upgrade: websocket") && lower.contains("connection: upgrade")) {
                let _ = s
                    .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                    .await;
                return;
            }
            let _ = s
                .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
                .await;
            let (mut r, mut w) = s.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
        }
    })
    .await
}

/// Reads an HTTP head (up to the blank line), bounded in size and time.
async fn read_head(s: &mut TcpStream) -> Option<String> {
    tokio::time::timeout(Duration::from_secs(3), read_http_head(s))
        .await
        .ok()
        .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_is_authorized_then_tunnelled() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let app = upgrading_backend(seen.clone()).await;
    let inb = free_port();
    let cfg = write_proxy_config(dir, "db", &[(inb, app, "http")], "");
    std::fs::write(
        dir.join("policies/deny.yaml"),
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: { name: no-admin, namespace: foo }\nspec:\n  action: DENY\n  rules:\n  - to: [ { operation: { paths: [\"/admin/*\"] } } ]\n",
    )
    .unwrap();
    trustmesh_proxy::start(&cfg).await.expect("proxy starts");

    let upgrade_req = |path: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: app\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
    };

    // Allowed: 101, then bytes flow both ways through the tunnel.
    let mut s = TcpStream::connect(("127.0.0.1", inb)).await.unwrap();
    s.write_all(upgrade_req("/chat").as_bytes()).await.unwrap();
    let head = read_head(&mut s).await.expect("response head");
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: websocket"),
        "{head}"
    );
    for msg in [&b"hello"[..], b"second frame"] {
        s.write_all(msg).await.unwrap();
        let mut buf = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(3), s.read_exact(&mut buf))
            .await
            .expect("echo through the tunnel")
            .unwrap();
        assert_eq!(buf, msg);
    }
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 1);

    // Denied by policy: 403, and the app never sees the request.
    let mut s = TcpStream::connect(("127.0.0.1", inb)).await.unwrap();
    s.write_all(upgrade_req("/admin/ws").as_bytes())
        .await
        .unwrap();
    let head = read_head(&mut s).await.expect("response head");
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 1);
}
