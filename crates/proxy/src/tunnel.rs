//! The HBONE client: reaching a workload that terminates HBONE (Istio's
//! `networking.istio.io/tunnel: http`) through an HTTP/2 CONNECT over mTLS to its port 15008,
//! as ambient's ztunnel does, instead of connecting to the port itself.
//!
//! One mTLS connection (ALPN `h2`, the server's identity pinned by the client config exactly as
//! auto mTLS pins it) carries many CONNECT streams, so connections are pooled per destination
//! address and expected identities, per worker thread like the other upstream pools (the
//! connection's task runs on the thread that made it). A pooled connection found closed is
//! replaced, and a CONNECT refused on a stale one is tried once more on a new one; requests
//! that find no connection wait for the one being made (one handshake per peer, however many
//! app connections start at once).
//!
//! The request is what ztunnel sends: CONNECT with the target `ip:port` as authority, a
//! `forwarded: for="<client>"` naming the app's address, and a W3C `traceparent`; a `200`
//! opens the tunnel, anything else is a refusal in the peer's words (ztunnel answers `401`
//! for policy, `400` for a target that is not its, `503` when the app cannot be reached).

use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};

use crate::dialslot::DialSlot;
use crate::fastmap::{self, FastMap};
use crate::upstream::{reset_sentence, Security, UpstreamError};

/// The open tunnel: bytes written go to the target, as on a direct connection.
pub type Tunnel = crate::h2io::H2Io;

/// Why a tunnel could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TunnelError {
    /// The mTLS connection to the peer's HBONE port failed.
    #[error("{0}")]
    Upstream(UpstreamError),
    /// The peer did not agree to HTTP/2, or the HTTP/2 connection failed.
    #[error("HBONE to {addr}: {why}")]
    Protocol { addr: SocketAddr, why: String },
    /// The peer answered the CONNECT with something other than 200.
    #[error("HBONE to {addr}: CONNECT {target} answered {status}{}", body_suffix(.body))]
    Refused {
        addr: SocketAddr,
        target: SocketAddr,
        status: u16,
        body: String,
    },
}

fn body_suffix(body: &str) -> String {
    if body.is_empty() {
        String::new()
    } else {
        format!(": {body}")
    }
}

impl TunnelError {
    /// Envoy's words for a failed upstream, and ours after them.
    pub fn sentence(&self) -> String {
        match self {
            TunnelError::Upstream(e) => e.sentence(),
            TunnelError::Protocol { .. } => reset_sentence("protocol error", self),
            TunnelError::Refused { .. } => reset_sentence("remote refused stream reset", self),
        }
    }

    /// Counts it: connection and TLS failures as on direct connections, refusals as upstream
    /// errors.
    pub fn count(&self, metrics: &crate::metrics::Metrics) {
        match self {
            TunnelError::Upstream(e) => e.count(metrics),
            _ => {
                metrics
                    .upstream_errors
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
}

/// What one CONNECT needs: where the peer's HBONE port is, who it must be, and the target.
pub struct Dial<'a> {
    /// The peer's `ip:15008`.
    pub peer: SocketAddr,
    /// The identities the peer may present (the pool's key beside the address).
    pub identities: &'a [String],
    /// The mesh view the tunnel is asked for ([`crate::mesh::Mesh::epoch`]): connections
    /// pooled under an older one are not used, as in `meshconn`.
    pub epoch: u64,
    /// A client config offering `h2` and pinning `identities`.
    pub config: Arc<rustls::ClientConfig>,
    /// The inner connection's destination, the CONNECT's authority.
    pub target: SocketAddr,
    /// The app's address, sent in `forwarded`.
    pub client: SocketAddr,
    pub connect_timeout: Duration,
    pub handshake_timeout: Duration,
}

/// A pooled HTTP/2 connection and the identity its peer proved.
#[derive(Clone)]
struct Pooled {
    send: h2::client::SendRequest<Bytes>,
    peer_id: Option<String>,
    /// Set by the connection's task when the connection ends.
    closed: Arc<AtomicBool>,
}

/// The peer's address, the mesh view's epoch and the identities.
type Key = (SocketAddr, u64, Vec<String>);

thread_local! {
    static POOL: RefCell<FastMap<Key, Arc<Slot>>> = RefCell::new(fastmap::new());
}

/// The pooled connection of one key, made by one request at a time, which the others wait
/// for ([`DialSlot`]: the benchmark's 100 new app connections made 25 TLS handshakes to the
/// same peer without it, where one per worker thread is enough).
type Slot = DialSlot<Pooled, TunnelError>;

/// Opens a tunnel to `dial.target` through the peer's HBONE port, on a pooled connection when
/// one is open; returns it with the SPIFFE ID the peer proved (checked again under `chains`).
pub async fn open(
    dial: &Dial<'_>,
    chains: &Arc<trustmesh_identity::ChainVerifier>,
) -> Result<(Tunnel, Option<String>), TunnelError> {
    let key: Key = (dial.peer, dial.epoch, dial.identities.to_vec());
    let slot = POOL.with(|p| {
        let mut p = p.borrow_mut();
        if !p.contains_key(&key) {
            // The same peer's connections of older views close once their streams are done.
            p.retain(|(addr, epoch, _), _| *addr != dial.peer || *epoch >= dial.epoch);
        }
        p.entry(key).or_default().clone()
    });
    let failures = slot.failures();
    let open = |c: &Pooled| !c.closed.load(Ordering::Relaxed);
    let mut stale = None;
    if let Some(c) = slot.pooled(open).await {
        match request(&c.send, dial).await {
            Ok(t) => return Ok((t, c.peer_id)),
            // A refusal is the peer's answer; anything else may be a connection that went
            // stale between the check and the request: one more try on a new one.
            Err(e @ TunnelError::Refused { .. }) => return Err(e),
            Err(_) => stale = Some(c.closed),
        }
    }
    let fresh = |c: &Pooled| open(c) && !stale.as_ref().is_some_and(|s| Arc::ptr_eq(s, &c.closed));
    let c = slot
        .get_or_dial(failures, fresh, || handshake(dial, chains))
        .await?;
    let tunnel = request(&c.send, dial).await?;
    Ok((tunnel, c.peer_id))
}

/// A new mTLS + HTTP/2 connection to the peer's HBONE port; its task runs on this thread.
async fn handshake(
    dial: &Dial<'_>,
    chains: &Arc<trustmesh_identity::ChainVerifier>,
) -> Result<Pooled, TunnelError> {
    let security = Security::Mtls(dial.config.clone(), chains.clone());
    let stream = crate::upstream::connect(
        dial.peer,
        &security,
        dial.connect_timeout,
        dial.handshake_timeout,
    )
    .await
    .map_err(TunnelError::Upstream)?;
    if stream.alpn() != Some(b"h2") {
        return Err(TunnelError::Protocol {
            addr: dial.peer,
            why: "the peer did not agree to HTTP/2 (ALPN h2); it does not speak HBONE".into(),
        });
    }
    let peer_id = crate::upstream::verified_peer(chains, &stream);
    let mut builder = h2::client::Builder::new();
    let handshake = crate::h2settings::hbone_client(&mut builder).handshake::<_, Bytes>(stream);
    let (send, mut conn) = tokio::time::timeout(dial.handshake_timeout, handshake)
        .await
        .map_err(|_| TunnelError::Protocol {
            addr: dial.peer,
            why: "no HTTP/2 settings within the handshake timeout".into(),
        })?
        .map_err(|e| TunnelError::Protocol {
            addr: dial.peer,
            why: format!("HTTP/2 handshake: {e}"),
        })?;
    let addr = dial.peer;
    let closed = Arc::new(AtomicBool::new(false));
    let ended = closed.clone();
    let ping = conn.ping_pong();
    tokio::spawn(async move {
        tokio::select! {
            r = &mut conn => if let Err(e) = r {
                tracing::debug!(%addr, error = %e, "HBONE connection ended with an error");
            },
            () = crate::h2io::keep_alive(ping) => {
                tracing::debug!(%addr, "HBONE connection closed: no answer to a PING");
            }
        }
        ended.store(true, Ordering::Relaxed);
    });
    Ok(Pooled {
        send,
        peer_id,
        closed,
    })
}

/// One CONNECT on `send`.
async fn request(
    send: &h2::client::SendRequest<Bytes>,
    dial: &Dial<'_>,
) -> Result<Tunnel, TunnelError> {
    let protocol = |why: String| TunnelError::Protocol {
        addr: dial.peer,
        why,
    };
    let mut ready = send
        .clone()
        .ready()
        .await
        .map_err(|e| protocol(format!("connection not usable: {e}")))?;
    let req = Request::builder()
        .method(Method::CONNECT)
        .uri(dial.target.to_string())
        .header(http::header::FORWARDED, format!("for=\"{}\"", dial.client))
        .header("traceparent", traceparent())
        .body(())
        .map_err(|e| protocol(format!("building the CONNECT: {e}")))?;
    let (resp, stream) = ready
        .send_request(req, false)
        .map_err(|e| protocol(format!("CONNECT {}: {e}", dial.target)))?;
    let resp = resp
        .await
        .map_err(|e| protocol(format!("CONNECT {}: {e}", dial.target)))?;
    let (head, mut body) = resp.into_parts();
    if head.status != StatusCode::OK {
        let mut text = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while let Some(Ok(chunk)) = body.data().await {
                let _ = body.flow_control().release_capacity(chunk.len());
                text.extend_from_slice(&chunk);
                if text.len() > 4096 {
                    break;
                }
            }
        })
        .await;
        return Err(TunnelError::Refused {
            addr: dial.peer,
            target: dial.target,
            status: head.status.as_u16(),
            body: String::from_utf8_lossy(&text).trim().to_string(),
        });
    }
    Ok(crate::h2io::H2Io::new(stream, body))
}

/// A W3C trace context for the CONNECT (version 00, random trace and span, sampled), as
/// ztunnel starts one per outbound connection.
fn traceparent() -> String {
    let trace: u128 = rand::random::<u128>().max(1);
    let span: u64 = rand::random::<u64>().max(1);
    format!("00-{trace:032x}-{span:016x}-01")
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    use trustmesh_identity::{ChainVerifier, SpiffeId, TrustBundleSet, TrustConfig, TrustDomain};
    use trustmesh_testkit::pki::{live_root, live_svid, Ca};

    use super::*;
    use crate::tls::{ExpectedPeer, OwnCert};

    const SERVER: &str = "spiffe://cluster.local/ns/shop/sa/cart";
    const CLIENT: &str = "spiffe://cluster.local/ns/shop/sa/frontend";

    fn own(ca: &Ca, id: &str) -> OwnCert {
        let (cert, key) = live_svid(ca, id);
        OwnCert {
            chain: vec![cert],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        }
    }

    /// An HBONE port on loopback that answers every CONNECT 200 and keeps its streams open;
    /// counts the TLS handshakes it completed.
    async fn hbone_port(
        config: Arc<rustls::ServerConfig>,
    ) -> (SocketAddr, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handshakes = Arc::new(AtomicUsize::new(0));
        let counted = handshakes.clone();
        let server = tokio::spawn(async move {
            // Bounded: with the bug, one connection per request (the test makes 24).
            for _ in 0..64 {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = tokio_rustls::TlsAcceptor::from(config.clone());
                let counted = counted.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    counted.fetch_add(1, Ordering::SeqCst);
                    let Ok(mut conn) = h2::server::handshake(tls).await else {
                        return;
                    };
                    let mut open = Vec::new();
                    while let Some(Ok((_req, mut respond))) = conn.accept().await {
                        let ok = http::Response::builder().status(200).body(()).unwrap();
                        if let Ok(stream) = respond.send_response(ok, false) {
                            open.push(stream);
                        }
                    }
                });
            }
        });
        (addr, handshakes, server)
    }

    /// The mesh's trust, and a client config offering `h2` that pins [`SERVER`].
    struct Pki {
        ca: Ca,
        chains: Arc<ChainVerifier>,
        client: Arc<rustls::ClientConfig>,
    }

    fn pki() -> Pki {
        let ca = live_root("cluster.local");
        let td = TrustDomain::parse("cluster.local").unwrap();
        let mut bundles = TrustBundleSet::new();
        bundles.add_root(td.clone(), ca.cert.clone()).unwrap();
        let chains = Arc::new(ChainVerifier::new(Arc::new(TrustConfig::new(td, bundles))));
        let expected = ExpectedPeer::Exact(SpiffeId::parse(SERVER).unwrap());
        let client =
            crate::tls::client_config_offering(&chains, &own(&ca, CLIENT), expected, &[b"h2"])
                .unwrap();
        Pki { ca, chains, client }
    }

    type Opened = Result<(Tunnel, Option<String>), TunnelError>;

    /// `n` tunnels to `peer` opened at once, each by a task of its own. The test runtime has
    /// one thread, as a worker does: the tasks share its pool.
    fn open_at_once(
        n: u16,
        peer: SocketAddr,
        pki: &Pki,
        handshake_timeout: Duration,
    ) -> Vec<tokio::task::JoinHandle<Opened>> {
        (0..n)
            .map(|i| {
                let (config, chains) = (pki.client.clone(), pki.chains.clone());
                tokio::spawn(async move {
                    let ids = vec![SERVER.to_string()];
                    let dial = Dial {
                        peer,
                        identities: &ids,
                        epoch: 1,
                        config,
                        target: SocketAddr::from(([198, 18, 9, 2], 9080)),
                        client: SocketAddr::from(([198, 18, 9, 1], 40000 + i)),
                        connect_timeout: Duration::from_secs(5),
                        handshake_timeout,
                    };
                    open(&dial, &chains).await
                })
            })
            .collect()
    }

    #[tokio::test]
    async fn requests_that_start_together_on_a_cold_pool_share_one_handshake() {
        let pki = pki();
        let server_tls =
            crate::tls::server_config_offering(&pki.chains, &own(&pki.ca, SERVER), &[b"h2"])
                .unwrap();
        let (peer, handshakes, server) = hbone_port(server_tls).await;
        let mut tunnels = Vec::new();
        for t in open_at_once(24, peer, &pki, Duration::from_secs(5)) {
            let (tunnel, id) = t.await.unwrap().expect("a tunnel");
            assert_eq!(id.as_deref(), Some(SERVER));
            tunnels.push(tunnel);
        }
        assert_eq!(tunnels.len(), 24);
        assert_eq!(
            handshakes.load(Ordering::SeqCst),
            1,
            "one connection for all"
        );
        server.abort();
    }

    #[tokio::test]
    async fn requests_waiting_on_a_handshake_that_fails_share_its_failure() {
        // A peer that takes the connection and never answers the TLS handshake.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counted = accepted.clone();
        let server = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((tcp, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                held.push(tcp);
            }
        });
        let pki = pki();
        let started = std::time::Instant::now();
        for t in open_at_once(8, peer, &pki, Duration::from_millis(300)) {
            let failed = t.await.unwrap().map(|_| ()).expect_err("no handshake");
            assert!(failed.sentence().contains("handshake"), "{failed:?}");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "one attempt for all");
        // One handshake timeout, not eight in a row.
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        server.abort();
    }
}
