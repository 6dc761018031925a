//! The UDP listener: most queries arrive here, one datagram each.
//!
//! Mesh answers and refusals are sent from the receive loop itself (they need no waiting, so a
//! flood of them costs no memory); a query to forward gets a task of its own, bounded by the
//! in-flight permits [`Shared::handle`] hands out. On a drain the loop stops reading at once;
//! forwarded queries already accepted still get their answer (each task holds a drain watch)
//! unless the drain turns immediate.

use std::sync::Arc;

use tokio::net::UdpSocket;
use trustmesh_lifecycle::drain::Watch;

use crate::query::{Shared, Step};
use crate::upstream::Transport;

/// The largest datagram: a bigger one cannot exist, so nothing is ever cut short on receipt.
const MAX_DATAGRAM: usize = 65535;

pub(crate) async fn serve(socket: UdpSocket, shared: Arc<Shared>, watch: Watch) {
    let socket = Arc::new(socket);
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, client) = tokio::select! {
            _ = watch.draining() => break,
            received = socket.recv_from(&mut buf) => match received {
                Ok(received) => received,
                Err(e) => {
                    tracing::debug!(error = %e, "DNS UDP receive failed");
                    continue;
                }
            },
        };
        match shared.handle(&buf[..n], Transport::Udp) {
            Step::Reply(bytes) => send(&socket, &bytes, client).await,
            Step::Forward(pending) => {
                let (socket, shared, watch) = (socket.clone(), shared.clone(), watch.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        bytes = shared.forward(pending, Transport::Udp) => {
                            send(&socket, &bytes, client).await;
                        }
                        _ = watch.immediate() => {}
                    }
                    drop(watch);
                });
            }
            Step::Nothing => {}
        }
    }
    tracing::debug!("DNS UDP listener stopped");
}

async fn send(socket: &UdpSocket, bytes: &[u8], client: std::net::SocketAddr) {
    if bytes.is_empty() {
        return;
    }
    if let Err(e) = socket.send_to(bytes, client).await {
        tracing::debug!(%client, error = %e, "DNS UDP answer not sent");
    }
}
