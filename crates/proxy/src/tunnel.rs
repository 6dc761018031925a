//! The HBONE client: reaching a workload that terminates HBONE (Istio's
//! `networking.istio.io/tunnel: http`) through an HTTP/2 CONNECT over mTLS to its port 15008,
//! as ambient's ztunnel does, instead of connecting to the port itself.
//!
//! One mTLS connection (ALPN `h2`, the server's identity pinned by the client config exactly as
//! auto mTLS pins it) carries many CONNECT streams, so connections are pooled per destination
//! address and expected identities, per worker thread like the other upstream pools (the
//! connection's task runs on the thread that made it). A pooled connection found closed is
//! replaced, and a CONNECT refused on a stale one is tried once more on a new one.
//!
//! The request is what ztunnel sends: CONNECT with the target `ip:port` as authority, a
//! `forwarded: for="<client>"` naming the app's address, and a W3C `traceparent`; a `200`
//! opens the tunnel, anything else is a refusal in the peer's words (ztunnel answers `401`
//! for policy, `400` for a target that is not its, `503` when the app cannot be reached).

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};

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
    static POOL: RefCell<HashMap<Key, Pooled>> = RefCell::new(HashMap::new());
}

/// Opens a tunnel to `dial.target` through the peer's HBONE port, on a pooled connection when
/// one is open; returns it with the SPIFFE ID the peer proved (checked again under `chains`).
pub async fn open(
    dial: &Dial<'_>,
    chains: &Arc<trustmesh_identity::ChainVerifier>,
) -> Result<(Tunnel, Option<String>), TunnelError> {
    let key: Key = (dial.peer, dial.epoch, dial.identities.to_vec());
    let pooled = POOL.with(|p| {
        let mut p = p.borrow_mut();
        match p.get(&key) {
            Some(c) if !c.closed.load(Ordering::Relaxed) => Some(c.clone()),
            Some(_) => {
                p.remove(&key);
                None
            }
            None => None,
        }
    });
    if let Some(c) = pooled {
        match request(&c.send, dial).await {
            Ok(t) => return Ok((t, c.peer_id)),
            // A refusal is the peer's answer; anything else may be a connection that went
            // stale between the check and the request: one more try on a new one.
            Err(e @ TunnelError::Refused { .. }) => return Err(e),
            Err(_) => {
                POOL.with(|p| p.borrow_mut().remove(&key));
            }
        }
    }
    let fresh = handshake(dial, chains).await?;
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        // The same peer's connections of older views close once their streams are done.
        p.retain(|(addr, epoch, _), _| *addr != dial.peer || *epoch >= dial.epoch);
        p.insert(key, fresh.clone());
    });
    let tunnel = request(&fresh.send, dial).await?;
    Ok((tunnel, fresh.peer_id))
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
