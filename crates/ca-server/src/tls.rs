//! TLS for the CA's listeners: a rustls server config that asks for, but does not require, a
//! client certificate (callers with only a token must still get in), and an accept loop that
//! performs handshakes concurrently so one slow client cannot stall the others.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use trustmesh_lifecycle::drain::Watch;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The serving certificate, swapped in place when it is renewed: the CA endpoint runs for far
/// longer than the short-lived certificate it presents.
#[derive(Debug)]
pub struct RotatingCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl RotatingCert {
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: &PrivateKeyDer<'static>,
    ) -> Result<Self, String> {
        Ok(RotatingCert {
            current: RwLock::new(certified(chain, key)?),
        })
    }

    pub fn set(
        &self,
        chain: Vec<CertificateDer<'static>>,
        key: &PrivateKeyDer<'static>,
    ) -> Result<(), String> {
        *self.current.write().expect("cert lock") = certified(chain, key)?;
        Ok(())
    }
}

fn certified(
    chain: Vec<CertificateDer<'static>>,
    key: &PrivateKeyDer<'static>,
) -> Result<Arc<CertifiedKey>, String> {
    let signing = rustls::crypto::ring::sign::any_supported_type(key).map_err(|e| e.to_string())?;
    Ok(Arc::new(CertifiedKey::new(chain, signing)))
}

impl ResolvesServerCert for RotatingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().expect("cert lock").clone())
    }
}

/// The verifier of client certificates on the CA's port, whose roots can change (a plug-in CA's
/// root rotation) without restarting the listener.
#[derive(Debug)]
pub struct ClientRoots {
    current: RwLock<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
}

impl ClientRoots {
    pub fn new(roots: &[CertificateDer<'static>]) -> Result<ClientRoots, String> {
        Ok(ClientRoots {
            current: RwLock::new(verifier_for(roots)?),
        })
    }

    /// Verifies with `roots` from the next handshake on.
    pub fn set(&self, roots: &[CertificateDer<'static>]) -> Result<(), String> {
        *self.current.write().expect("client roots lock") = verifier_for(roots)?;
        Ok(())
    }

    fn get(&self) -> Arc<dyn rustls::server::danger::ClientCertVerifier> {
        self.current.read().expect("client roots lock").clone()
    }
}

fn verifier_for(
    roots: &[CertificateDer<'static>],
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, String> {
    let mut store = RootCertStore::empty();
    for r in roots {
        store
            .add(r.clone())
            .map_err(|e| format!("bad CA root: {e}"))?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| e.to_string())
}

impl rustls::server::danger::ClientCertVerifier for ClientRoots {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    /// No hints: they would have to outlive a roots change, and clients send their one
    /// certificate regardless.
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        self.get()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.get().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.get().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.get().supported_verify_schemes()
    }
}

/// Server config presenting `cert` and verifying client certificates with `client_roots`
/// (requested, not required; full SPIFFE checks happen per request).
pub fn server_config_verifying(
    cert: Arc<RotatingCert>,
    client_roots: Arc<ClientRoots>,
    alpn: &[&[u8]],
) -> Result<ServerConfig, String> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?;
    let mut config = builder
        .with_client_cert_verifier(client_roots)
        .with_cert_resolver(cert);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// Server config presenting `cert`, asking for no client certificate (the bundle endpoint).
pub fn server_config(cert: Arc<RotatingCert>, alpn: &[&[u8]]) -> Result<ServerConfig, String> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?;
    let mut config = builder.with_no_client_auth().with_cert_resolver(cert);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// Accepts TCP connections on `listener` and yields completed TLS streams. Failed handshakes
/// are logged and dropped. When `drain` starts, the listener is closed (new clients are refused
/// at once) and handshakes still in progress are abandoned: none of them has sent a request yet.
pub fn accept_tls(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    limits: Arc<crate::limits::Limits>,
    drain: Watch,
) -> mpsc::Receiver<Result<crate::limits::Guarded<TlsStream<TcpStream>>, std::io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                r = listener.accept() => r,
                _ = drain.draining() => break,
            };
            let (tcp, peer): (TcpStream, SocketAddr) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Over the cap: closed before any work is spent on it.
            let Some(slot) = limits.admit() else {
                drop(tcp);
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let conn_tx = tx.clone();
            let limits = limits.clone();
            let handshake_drain = drain.clone();
            tokio::spawn(async move {
                let handshake =
                    tokio::time::timeout(limits.handshake_timeout(), acceptor.accept(tcp));
                let done = tokio::select! {
                    done = handshake => done,
                    _ = handshake_drain.draining() => return,
                };
                drop(handshake_drain);
                match done {
                    Ok(Ok(tls)) => {
                        let _ = conn_tx.send(Ok(limits.guard(tls, slot))).await;
                    }
                    Ok(Err(e)) => limits.handshake_failed(peer, &e.to_string()),
                    Err(_) => limits.handshake_failed(peer, "timed out"),
                }
            });
            if tx.is_closed() {
                break;
            }
        }
    });
    rx
}
