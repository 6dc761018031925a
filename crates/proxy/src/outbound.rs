//! Outbound listeners: the local app connects in plaintext, the proxy originates mTLS to the
//! peer's proxy with our SVID and refuses any server that is not the expected identity.
//!
//! The bytes are relayed as-is. For `protocol: http` that is still correct: the peer's inbound
//! HTTP listener detects HTTP/1.1 vs HTTP/2 from the bytes themselves, so no ALPN is offered.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use rustls_pki_types::ServerName;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use trustmesh_lifecycle::drain::Watch;

use crate::accesslog::AccessLog;
use crate::clock::now_rfc3339;
use crate::outcome::{Failure, Outcome};
use crate::state::Shared;

pub async fn serve(shared: Arc<Shared>, index: usize, listener: TcpListener, drain: Watch) {
    // Outbound listeners' slots follow the inbound ones'.
    let slot = shared.startup_config.inbound.len() + index;
    crate::state::accept_loop(
        shared,
        listener,
        slot,
        "outbound",
        drain,
        move |shared, stream, source, drain| async move {
            handle(&shared, index, stream, source, drain).await
        },
    )
    .await
}

/// One connection from the local app, relayed to its peer; like every TCP relay it keeps going
/// through a graceful drain and is closed when the drain turns immediate (the deadline).
async fn handle(
    shared: &Arc<Shared>,
    index: usize,
    mut app: TcpStream,
    source: SocketAddr,
    drain: Watch,
) {
    shared
        .metrics
        .outbound_connections
        .fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    let snap = shared.current();
    let Some(l) = snap.config.outbound.get(index) else {
        return;
    };
    let client = snap.client_tls.get(index).cloned().flatten();
    let timeouts = snap.config.timeouts.clone();
    let mut outcome = Outcome::new(
        &shared.metrics,
        AccessLog {
            time: now_rfc3339(),
            direction: "outbound",
            protocol: match l.protocol {
                crate::config::Protocol::Http => "http",
                crate::config::Protocol::Tcp => "tcp",
            },
            listener_port: l.port,
            source_address: source.to_string(),
            destination_address: l.peer.to_string(),
            tls: l.tls,
            // Outbound traffic is the app's own; no policy decides it, so no decision metric.
            decision: "allow".into(),
            ..Default::default()
        },
        started,
    )
    .without_decision_metric();
    let peer_addr = l.peer;
    drop(snap);
    let _ = app.set_nodelay(true);

    let tcp = match dial(shared, peer_addr, &timeouts).await {
        Ok(tcp) => tcp,
        Err(f) => return outcome.fail(f),
    };
    let Some(client) = client else {
        let mut tcp = tcp;
        let relayed =
            crate::relay::relay(&mut app, &mut tcp, timeouts.tcp_idle(), drain.immediate()).await;
        relayed_into(&mut outcome, relayed);
        return outcome.finish();
    };
    let mut tls = match originate_mtls(shared, client, tcp, peer_addr, &timeouts).await {
        Ok(tls) => tls,
        Err(f) => return outcome.fail(f),
    };
    outcome.log().destination_principal = tls.get_ref().1.peer_certificates().and_then(|chain| {
        let snap = shared.current();
        trustmesh_identity::verify_svid(chain, &snap.trust, rustls_pki_types::UnixTime::now())
            .ok()
            .map(|s| s.id.to_string())
    });
    let relayed =
        crate::relay::relay(&mut app, &mut tls, timeouts.tcp_idle(), drain.immediate()).await;
    relayed_into(&mut outcome, relayed);
    outcome.finish();
}

/// Connects to the peer within the connect timeout; a failure is counted as an upstream error.
async fn dial(
    shared: &Shared,
    peer: SocketAddr,
    timeouts: &crate::config::Timeouts,
) -> Result<TcpStream, Failure> {
    let why = match tokio::time::timeout(timeouts.connect(), TcpStream::connect(peer)).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            return Ok(s);
        }
        Ok(Err(e)) => e.to_string(),
        Err(_) => "timed out".into(),
    };
    shared
        .metrics
        .upstream_errors
        .fetch_add(1, Ordering::Relaxed);
    Err(Failure::Upstream {
        why: format!("connecting to peer {peer}: {why}"),
    })
}

/// The mTLS handshake with the peer within the handshake timeout; the client config's verifier
/// checks the peer's identity. A failure is counted as an outbound TLS error.
async fn originate_mtls(
    shared: &Shared,
    client: Arc<rustls::ClientConfig>,
    tcp: TcpStream,
    peer: SocketAddr,
    timeouts: &crate::config::Timeouts,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, Failure> {
    let name = ServerName::IpAddress(peer.ip().into());
    let handshake = TlsConnector::from(client).connect(name, tcp);
    let why = match tokio::time::timeout(timeouts.handshake(), handshake).await {
        Ok(Ok(s)) => return Ok(s),
        Ok(Err(e)) => {
            tracing::warn!(peer = %peer, error = %e, "outbound mTLS handshake failed");
            e.to_string()
        }
        Err(_) => "handshake timed out".into(),
    };
    shared
        .metrics
        .outbound_tls_errors
        .fetch_add(1, Ordering::Relaxed);
    Err(Failure::Upstream {
        why: format!("mTLS to {peer}: {why}"),
    })
}

/// The relay's byte counts (app → peer is sent) or, when the drain closed it, why.
fn relayed_into(outcome: &mut Outcome<'_>, relayed: std::io::Result<(u64, u64)>) {
    match relayed {
        Ok((tx, rx)) => {
            outcome.log().bytes_sent = Some(tx);
            outcome.log().bytes_received = Some(rx);
        }
        Err(e) if crate::relay::stopped(&e) => {
            outcome.log().reason = Some(crate::relay::STOPPED.into());
        }
        Err(_) => {}
    }
}
