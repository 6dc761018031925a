//! Issue #11: a few hundred connections that never finish TLS, never send the HTTP/2 preface or
//! never finish a request once took every file descriptor and issuance timed out. Now each
//! listener has its own cap and silent connections are closed, so a flood of one listener leaves
//! issuance working, and a flood of the certificate service clears itself.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use trustmesh_ca_server::client::create_certificate;
use trustmesh_testkit::ca_server::{csr, start_ca, TestCa};
use trustmesh_testkit::net::closed_within;

const CAP: usize = 40;

async fn issue(ca: &TestCa) -> Result<Vec<String>, tonic::Status> {
    create_certificate(
        &ca.ep,
        &ca.creds,
        csr("spiffe://example.org/ns/ns1/sa/sa1"),
        Duration::ZERO,
    )
    .await
}

/// Waits (bounded) until `f` holds.
async fn until(what: &str, f: impl Fn() -> bool) {
    trustmesh_testkit::net::until(what, Duration::from_secs(10), f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooded_listener_does_not_stop_issuance() {
    let ca = start_ca(|o| {
        o.max_connections = CAP;
        o.idle_timeout = Duration::from_secs(1);
        o.bundle_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let bundle = ca.running.bundle_addr.unwrap();
    let bundle_limits = ca.running.bundle_limits.clone().unwrap();

    // 1. The bundle endpoint is full of connections that never start TLS.
    let mut flood = Vec::new();
    for _ in 0..CAP {
        flood.push(TcpStream::connect(bundle).await.unwrap());
    }
    until("the bundle endpoint to be full", || {
        bundle_limits.available() == 0
    })
    .await;
    let mut extra = TcpStream::connect(bundle).await.unwrap();
    assert!(
        closed_within(&mut extra, Duration::from_millis(500)).await,
        "over the cap: closed at once"
    );
    assert!(bundle_limits.refused() >= 1);
    // ...and issuance, on its own listener, is unaffected.
    assert_eq!(issue(&ca).await.expect("issuance works").len(), 2);
    // The silent connections are dropped at the handshake deadline, freeing the slots.
    for s in &mut flood {
        assert!(closed_within(s, Duration::from_secs(5)).await);
    }
    until("the slots to be free", || bundle_limits.available() == CAP).await;
    assert!(bundle_limits.handshake_failures() >= CAP as u64);
    drop(flood);

    // 2. The certificate service itself is flooded: it refuses newcomers while full, and the
    //    flood clears itself within the handshake timeout, after which issuance works again.
    let limits = ca.running.limits.clone();
    let mut flood = Vec::new();
    for _ in 0..CAP {
        flood.push(TcpStream::connect(ca.running.addr).await.unwrap());
    }
    until("the certificate service to be full", || {
        limits.available() == 0
    })
    .await;
    assert!(issue(&ca).await.is_err(), "full: a newcomer is refused");
    for s in &mut flood {
        assert!(closed_within(s, Duration::from_secs(5)).await);
    }
    until("the slots to be free", || limits.available() == CAP).await;
    assert_eq!(issue(&ca).await.expect("issuance works again").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_connection_that_never_speaks_http2_is_closed() {
    let ca = start_ca(|o| o.idle_timeout = Duration::from_secs(1)).await;
    let mut roots = rustls::RootCertStore::empty();
    for c in trustmesh_identity::pem::certs_from_pem(&ca.ep.root_pem).unwrap() {
        roots.add(c).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = TcpStream::connect(ca.running.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.expect("TLS completes");
    // No preface, no frames: closed after the 1 s idle timeout (bounded here at 5 s).
    let started = Instant::now();
    assert!(closed_within(&mut tls, Duration::from_secs(5)).await);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    until("the idle close to be counted", || {
        ca.running.limits.idle_closed() >= 1
    })
    .await;
    // An active client is not affected by the idle timeout.
    for _ in 0..3 {
        assert_eq!(issue(&ca).await.unwrap().len(), 2);
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
}
