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

/// Server config presenting `cert`. With `client_roots`, a client certificate is requested
/// and, if sent, must chain to one of them (full SPIFFE checks happen per request); clients
/// without one are still admitted.
pub fn server_config(
    cert: Arc<RotatingCert>,
    client_roots: Option<&[CertificateDer<'static>]>,
    alpn: &[&[u8]],
) -> Result<ServerConfig, String> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?;
    let builder = match client_roots {
        Some(roots) => {
            let mut store = RootCertStore::empty();
            for r in roots {
                store
                    .add(r.clone())
                    .map_err(|e| format!("bad CA root: {e}"))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider())
                .allow_unauthenticated()
                .build()
                .map_err(|e| e.to_string())?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(cert);
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
