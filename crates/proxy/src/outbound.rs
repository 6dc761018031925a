//! Outbound listeners: the local app connects in plaintext, the proxy originates mTLS to the
//! peer's proxy with our SVID and refuses any server that is not the expected identity.
//!
//! The bytes are relayed as-is. For `protocol: http` that is still correct: the peer's inbound
//! HTTP listener detects HTTP/1.1 vs HTTP/2 from the bytes themselves, so no ALPN is offered.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::{TcpListener, TcpStream};
use trustmesh_lifecycle::drain::Watch;

use crate::accesslog::AccessLog;
use crate::clock::Stamp;
use crate::outcome::{Failure, Outcome};
use crate::state::Shared;
use crate::upstream::{self, Security};

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
    let snap_chains = snap.chains.clone();
    let timeouts = snap.config.timeouts.clone();
    let mut outcome = Outcome::new(
        &shared.metrics,
        AccessLog {
            time: Stamp::now(),
            direction: "outbound",
            protocol: match l.protocol {
                crate::config::Protocol::Http => "http",
                crate::config::Protocol::Tcp => "tcp",
            },
            listener_port: l.port,
            source_address: source.to_string().into(),
            destination_address: l.peer.to_string().into(),
            tls: l.tls,
            // Outbound traffic is the app's own; no policy decides it, so no decision metric.
            decision: "allow",
            ..Default::default()
        },
        started,
    )
    .without_decision_metric()
    // The bytes are relayed as they are, so Istio's metrics count a TCP connection here,
    // whatever the listener's protocol; the peer's principal is filled in once it proved one.
    .with_telemetry(tcp_facts(shared, &snap, None));
    let peer_addr = l.peer;
    drop(snap);
    let _ = app.set_nodelay(true);

    let security = match client {
        Some(config) => Security::Mtls(config, snap_chains),
        None => Security::Plaintext,
    };
    let connected = upstream::connect(
        peer_addr,
        &security,
        timeouts.connect(),
        timeouts.handshake(),
    )
    .await;
    let mut peer = match connected {
        Ok(peer) => peer,
        Err(e) => {
            e.count(&shared.metrics);
            return outcome.fail(Failure::Upstream { why: e.to_string() });
        }
    };
    let snap = shared.current();
    let principal = upstream::verified_peer(&snap.chains, &peer);
    if let Some(f) = outcome.telemetry() {
        *f = tcp_facts(shared, &snap, principal.as_deref());
    }
    drop(snap);
    outcome.tcp_opened();
    outcome.log().destination_principal = principal.map(Into::into);
    let relayed =
        crate::relay::relay(&mut app, &mut peer, timeouts.tcp_idle(), drain.immediate()).await;
    outcome.relayed(relayed);
    outcome.finish();
}

/// The labels of an outbound TCP connection (reporter `source`) to a peer that proved
/// `principal`, or none yet.
pub fn tcp_facts(
    shared: &Shared,
    snap: &crate::snapshot::Snapshot,
    principal: Option<&str>,
) -> crate::telemetry::Facts {
    let istio = &shared.metrics.istio;
    shared.outbound_side(snap, principal).facts(
        istio,
        crate::telemetry::Protocol::Tcp,
        istio.unknown_service(),
        None,
    )
}
