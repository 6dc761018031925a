//! Istio's HTTP metadata exchange on an inbound listener (tier 1): a client sidecar's
//! `x-envoy-peer-metadata` names the source workload in Istio's metrics, is removed before the
//! app sees it, and is answered with ours; a client that sends none learns nothing about the
//! workload.

use std::collections::BTreeMap;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use trustmesh_proxy::telemetry::{exchange, Workload};
use trustmesh_testkit::http::headers_backend;
use trustmesh_testkit::net::free_port;
use trustmesh_testkit::sidecar::write_proxy_config;

/// One HTTP/1.1 request with `extra` header lines; the whole answer.
async fn request(port: u16, extra: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let req = format!("GET /hello HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n{extra}\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("answer within 5 s")
        .unwrap();
    String::from_utf8_lossy(&out).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_metadata_labels_the_source_and_never_reaches_the_app() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let app = headers_backend().await;
    let inb = free_port();
    let cfg = write_proxy_config(dir, "cart", &[(inb, app, "http")], "");
    let (shared, _) = trustmesh_proxy::start(&cfg).await.expect("proxy starts");

    let caller = Workload::from_labels(
        Some("frontend-v2"),
        "web",
        "frontend",
        &BTreeMap::from([
            ("app".to_string(), "frontend".to_string()),
            ("version".to_string(), "v2".to_string()),
        ]),
    );
    let (value, id) = exchange::encode(&caller);
    let extra = format!(
        "x-envoy-peer-metadata: {}\r\nx-envoy-peer-metadata-id: {}\r\nx-test-keep: 1\r\n",
        value.to_str().unwrap(),
        id.to_str().unwrap()
    );
    let answer = request(inb, &extra).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(
        !body.contains("x-envoy-peer-metadata"),
        "the app saw it: {body}"
    );
    assert!(body.contains("x-test-keep: 1"), "{body}");
    // Answered with ours: workload `cart` (its `app` label) in namespace foo.
    let raw = head
        .lines()
        .find_map(|l| l.strip_prefix("x-envoy-peer-metadata: "))
        .expect("our metadata in the answer");
    let server = exchange::decode(raw.trim().as_bytes()).expect("decodes");
    assert_eq!((&*server.name, &*server.namespace), ("cart", "foo"));

    // Without metadata: nothing about the workload in the answer.
    let plain = request(inb, "").await;
    assert!(!plain.contains("x-envoy-peer-metadata"), "{plain}");

    // Recorded when each request's line is written, just after its answer.
    let mut metrics = String::new();
    for _ in 0..50 {
        metrics = shared.metrics.render(0);
        if metrics.contains("source_workload=\"unknown\"") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let named = metrics
        .lines()
        .find(|l| {
            l.starts_with("istio_requests_total{") && l.contains("source_workload=\"frontend-v2\"")
        })
        .unwrap_or_else(|| panic!("no series for the caller in:\n{metrics}"));
    for want in [
        "source_workload_namespace=\"web\"",
        "source_app=\"frontend\"",
        "source_version=\"v2\"",
        // Plaintext: no principal, whatever the metadata says.
        "source_principal=\"unknown\"",
        "connection_security_policy=\"none\"",
        "destination_workload=\"cart\"",
        "destination_service=\"shop\"",
    ] {
        assert!(named.contains(want), "{want} in {named}");
    }
    assert!(named.ends_with(" 1"), "{named}");
    let anonymous = metrics
        .lines()
        .find(|l| {
            l.starts_with("istio_requests_total{") && l.contains("source_workload=\"unknown\"")
        })
        .expect("the plain request's series");
    assert!(anonymous.ends_with(" 1"), "{anonymous}");
}
