//! TLS session resumption between sidecars over real loopback TCP: a second connection with the
//! same client config resumes (no signatures, no chain validation), and a resumed session whose
//! peer certificate has expired since the first handshake is refused, on the client side
//! (`upstream::connect`) and by the server's check (`tls::recheck_resumed`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::HandshakeKind;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use trustmesh_identity::{
    ChainVerifier, SpiffeId, TrustBundleSet, TrustConfig, TrustDomain, Usage,
};
use trustmesh_proxy::tls::{client_config, recheck_resumed, server_config, ExpectedPeer, OwnCert};
use trustmesh_proxy::upstream::{connect, Security, UpstreamError};
use trustmesh_testkit::pki::{live_root, unix_now, Ca, LeafSpec};

const SERVER: &str = "spiffe://cluster.local/ns/foo/sa/httpbin";
const CLIENT: &str = "spiffe://cluster.local/ns/foo/sa/sleep";

/// An SVID valid from an hour ago until `not_after`.
fn svid(ca: &Ca, id: &str, not_after: i64) -> OwnCert {
    let mut spec = LeafSpec::around(id, unix_now());
    spec.not_after = not_after;
    let (cert, key) = spec.signed_with_key(ca);
    OwnCert {
        chain: vec![cert],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    }
}

fn chains(ca: &Ca) -> Arc<ChainVerifier> {
    let td = TrustDomain::parse("cluster.local").unwrap();
    let mut b = TrustBundleSet::new();
    b.add_root(td.clone(), ca.cert.clone()).unwrap();
    Arc::new(ChainVerifier::new(Arc::new(TrustConfig::new(td, b))))
}

/// A TLS server on loopback: for each connection, how its handshake went and what the
/// server's own check of a resumed client made of it; echoes one byte.
async fn server(
    config: Arc<rustls::ServerConfig>,
    chains: Arc<ChainVerifier>,
) -> (
    SocketAddr,
    mpsc::UnboundedReceiver<(HandshakeKind, Result<(), String>)>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        // Bounded: the tests make at most a handful of connections.
        for _ in 0..16 {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(config.clone());
            let chains = chains.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let Ok(mut s) = acceptor.accept(tcp).await else {
                    return;
                };
                let conn = s.get_ref().1;
                let kind = conn.handshake_kind().expect("handshake done");
                let checked = recheck_resumed(conn, &chains, Usage::ClientAuth);
                let _ = tx.send((kind, checked));
                let mut b = [0u8; 1];
                if s.read_exact(&mut b).await.is_ok() {
                    let _ = s.write_all(&b).await;
                    let _ = s.flush().await;
                }
            });
        }
    });
    (addr, rx)
}

async fn exchange(addr: SocketAddr, security: &Security) -> Result<(), UpstreamError> {
    let t = Duration::from_secs(5);
    let mut s = connect(addr, security, t, t).await?;
    s.write_all(b"x").await.unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await.unwrap();
    assert_eq!(&b, b"x");
    Ok(())
}

#[tokio::test]
async fn a_second_connection_resumes_and_a_new_config_does_not() {
    let ca = live_root("cluster.local");
    let chains = chains(&ca);
    let day = unix_now() + 86_400;
    let s = server_config(&chains, &svid(&ca, SERVER, day), false).unwrap();
    let (addr, mut seen) = server(s, chains.clone()).await;
    let expected = ExpectedPeer::Exact(SpiffeId::parse(SERVER).unwrap());
    let client = svid(&ca, CLIENT, day);
    let c = client_config(&chains, &client, expected.clone()).unwrap();
    let security = Security::Mtls(c, chains.clone());

    exchange(addr, &security).await.unwrap();
    assert_eq!(seen.recv().await.unwrap(), (HandshakeKind::Full, Ok(())));
    exchange(addr, &security).await.unwrap();
    assert_eq!(seen.recv().await.unwrap(), (HandshakeKind::Resumed, Ok(())));

    // A client config of another snapshot (or expecting another peer) has its own tickets.
    let other = client_config(&chains, &client, expected).unwrap();
    exchange(addr, &Security::Mtls(other, chains.clone()))
        .await
        .unwrap();
    assert_eq!(seen.recv().await.unwrap().0, HandshakeKind::Full);
}

#[tokio::test]
async fn a_resumed_session_with_an_expired_certificate_is_refused_on_both_sides() {
    let ca = live_root("cluster.local");
    // Both leaves expire two seconds from now: whole seconds, as X.509 times are.
    let soon = unix_now() + 2;
    let server_chains = chains(&ca);
    let client_chains = chains(&ca);
    let s = server_config(&server_chains, &svid(&ca, SERVER, soon), false).unwrap();
    let (addr, mut seen) = server(s, server_chains.clone()).await;
    let expected = ExpectedPeer::Exact(SpiffeId::parse(SERVER).unwrap());
    let c = client_config(&client_chains, &svid(&ca, CLIENT, soon), expected).unwrap();
    let security = Security::Mtls(c, client_chains.clone());
    exchange(addr, &security).await.unwrap();
    assert_eq!(seen.recv().await.unwrap(), (HandshakeKind::Full, Ok(())));

    // Past both notAfters. The ticket is still good for rustls, so the session resumes — and
    // then our check refuses it: the client names the server's expired certificate...
    tokio::time::sleep(Duration::from_millis(3_200)).await;
    let err = exchange(addr, &security).await.unwrap_err();
    let said = err.to_string();
    assert!(
        said.contains("resumed session") && said.contains("expired"),
        "{said}"
    );
    // ...and the server's check refuses the client's.
    let (kind, checked) = seen.recv().await.unwrap();
    assert_eq!(kind, HandshakeKind::Resumed);
    let why = checked.unwrap_err();
    assert!(why.contains("expired"), "{why}");
}
