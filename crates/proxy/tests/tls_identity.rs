//! The SPIFFE-aware rustls configs: real TLS handshakes over in-memory pipes between the proxy's
//! server and client configs, with certificates minted by rcgen.

use std::sync::Arc;

use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use trustmesh_identity::{ChainVerifier, SpiffeId, TrustBundleSet, TrustConfig, TrustDomain};
use trustmesh_proxy::tls::{client_config, server_config, ExpectedPeer, OwnCert};
use trustmesh_testkit::pki::{live_root as ca, live_svid, Ca};

/// A workload SVID for `id` from `ca`, as the proxy holds its own certificate.
fn svid(ca: &Ca, id: &str) -> OwnCert {
    let (cert, key) = live_svid(ca, id);
    OwnCert {
        chain: vec![cert],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    }
}

fn trust(local: &str, aliases: &[&str], roots: &[(&str, &Ca)]) -> Arc<ChainVerifier> {
    let mut b = TrustBundleSet::new();
    for (td, ca) in roots {
        b.add_root(TrustDomain::parse(td).unwrap(), ca.cert.clone())
            .unwrap();
    }
    Arc::new(ChainVerifier::new(Arc::new(
        TrustConfig::new(TrustDomain::parse(local).unwrap(), b)
            .with_aliases(aliases.iter().map(|a| TrustDomain::parse(a).unwrap())),
    )))
}

/// Runs one handshake + one byte each way; Err carries the client- or server-side error.
async fn handshake(
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
) -> Result<(), String> {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let srv = tokio::spawn(async move {
        let mut s = tokio_rustls::TlsAcceptor::from(server)
            .accept(a)
            .await
            .map_err(|e| format!("server: {e}"))?;
        let mut buf = [0u8; 1];
        s.read_exact(&mut buf)
            .await
            .map_err(|e| format!("server read: {e}"))?;
        s.write_all(&buf)
            .await
            .map_err(|e| format!("server write: {e}"))?;
        s.flush().await.map_err(|e| format!("server flush: {e}"))?;
        Ok::<_, String>(())
    });
    let name = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    let cli = async {
        let mut c = tokio_rustls::TlsConnector::from(client)
            .connect(name, b)
            .await
            .map_err(|e| format!("client: {e}"))?;
        c.write_all(b"x")
            .await
            .map_err(|e| format!("client write: {e}"))?;
        let mut buf = [0u8; 1];
        c.read_exact(&mut buf)
            .await
            .map_err(|e| format!("client read: {e}"))?;
        Ok::<_, String>(())
    };
    let timeout = std::time::Duration::from_secs(5);
    let c = tokio::time::timeout(timeout, cli)
        .await
        .map_err(|_| "timeout")?;
    let s = tokio::time::timeout(timeout, srv)
        .await
        .map_err(|_| "timeout")?
        .map_err(|e| e.to_string())?;
    c.and(s)
}

fn exact(id: &str) -> ExpectedPeer {
    ExpectedPeer::Exact(SpiffeId::parse(id).unwrap())
}

#[tokio::test]
async fn mutual_tls_with_expected_identity() {
    let mesh = ca("cluster.local");
    let t = trust("cluster.local", &[], &[("cluster.local", &mesh)]);
    let server = svid(&mesh, "spiffe://cluster.local/ns/foo/sa/httpbin");
    let client = svid(&mesh, "spiffe://cluster.local/ns/foo/sa/sleep");
    let s = server_config(&t, &server, true).unwrap();
    let c = client_config(
        &t,
        &client,
        exact("spiffe://cluster.local/ns/foo/sa/httpbin"),
    )
    .unwrap();
    handshake(s.clone(), c).await.unwrap();

    // Trust-domain expectation.
    let td = ExpectedPeer::TrustDomain(TrustDomain::parse("cluster.local").unwrap());
    let c = client_config(&t, &client, td).unwrap();
    handshake(s.clone(), c).await.unwrap();

    // Wrong expected identity: the client refuses the server.
    let c = client_config(&t, &client, exact("spiffe://cluster.local/ns/foo/sa/other")).unwrap();
    let err = handshake(s.clone(), c).await.unwrap_err();
    assert!(err.contains("client"), "{err}");
}

#[tokio::test]
async fn server_refuses_client_from_untrusted_ca_or_domain() {
    let mesh = ca("cluster.local");
    let rogue = ca("cluster.local");
    let other = ca("other.example");
    let t = trust("cluster.local", &[], &[("cluster.local", &mesh)]);
    let server = svid(&mesh, "spiffe://cluster.local/ns/foo/sa/httpbin");
    let s = server_config(&t, &server, false).unwrap();
    let expect = exact("spiffe://cluster.local/ns/foo/sa/httpbin");

    // Same trust domain name, different (unknown) CA.
    let bad = svid(&rogue, "spiffe://cluster.local/ns/foo/sa/sleep");
    let ct = trust("cluster.local", &[], &[("cluster.local", &mesh)]);
    let c = client_config(&ct, &bad, expect.clone()).unwrap();
    assert!(handshake(s.clone(), c).await.is_err());

    // A domain the server neither aliases nor federates with.
    let foreign = svid(&other, "spiffe://other.example/ns/foo/sa/sleep");
    let c = client_config(&ct, &foreign, expect.clone()).unwrap();
    assert!(handshake(s.clone(), c).await.is_err());

    // Federating with other.example (its own bundle) makes it acceptable.
    let t2 = trust(
        "cluster.local",
        &[],
        &[("cluster.local", &mesh), ("other.example", &other)],
    );
    let s2 = server_config(&t2, &server, false).unwrap();
    let c = client_config(&ct, &foreign, expect).unwrap();
    handshake(s2, c).await.unwrap();
}

#[tokio::test]
async fn server_refused_when_its_domain_is_not_the_expected_one() {
    let a = ca("team-a.example");
    let b = ca("team-b.example");
    // The client trusts both domains, but expects team-a; team-b's server must be refused.
    let t = trust(
        "team-a.example",
        &[],
        &[("team-a.example", &a), ("team-b.example", &b)],
    );
    let server = svid(&b, "spiffe://team-b.example/ns/foo/sa/httpbin");
    let client = svid(&a, "spiffe://team-a.example/ns/foo/sa/sleep");
    let s = server_config(&t, &server, false).unwrap();
    let td = ExpectedPeer::TrustDomain(TrustDomain::parse("team-a.example").unwrap());
    let c = client_config(&t, &client, td).unwrap();
    let err = handshake(s, c).await.unwrap_err();
    assert!(err.contains("client"), "{err}");
}
