//! The TCP listener: clients come here for answers too large for UDP (after a truncated one)
//! and some resolvers use it always.
//!
//! A connection carries any number of queries, answered in order (RFC 7766 §6.2.1 allows
//! this). Connections are capped ([`Limits::max_tcp_connections`]; past the cap a new one is
//! closed at once and counted) and closed after [`Limits::tcp_idle`] without a whole query, so
//! a client that opens connections and sends nothing, or sends a byte at a time, holds nothing
//! for long. A message that cannot be answered at all (a response, a short header) closes the
//! connection. On a drain the listener closes; each connection finishes the query in hand and
//! closes, or stops at once when the drain turns immediate.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use trustmesh_lifecycle::drain::Watch;

use crate::counters::bump;
use crate::framing::{read_frame, write_frame};
use crate::query::{permits, Shared, Step};
use crate::upstream::Transport;

/// How long to wait after a failed accept (descriptors exhausted, say) before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>, watch: Watch) {
    let slots = Arc::new(Semaphore::new(permits(shared.limits.max_tcp_connections)));
    loop {
        let (stream, _) = tokio::select! {
            _ = watch.draining() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::debug!(error = %e, "DNS TCP accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            bump(&shared.counters.refused_connections);
            continue;
        };
        tokio::spawn(connection(stream, shared.clone(), watch.clone(), slot));
    }
    tracing::debug!("DNS TCP listener stopped");
}

async fn connection(
    mut stream: TcpStream,
    shared: Arc<Shared>,
    watch: Watch,
    _slot: OwnedSemaphorePermit,
) {
    let idle = shared.limits.tcp_idle;
    loop {
        let frame = tokio::select! {
            _ = watch.draining() => return,
            read = tokio::time::timeout(idle, read_frame(&mut stream)) => match read {
                Ok(Ok(Some(frame))) => frame,
                // Idle too long, closed by the client, or not DNS framing.
                _ => return,
            },
        };
        let answer = match shared.handle(&frame, Transport::Tcp) {
            Step::Reply(bytes) => bytes,
            Step::Forward(pending) => tokio::select! {
                bytes = shared.forward(pending, Transport::Tcp) => bytes,
                _ = watch.immediate() => return,
            },
            Step::Nothing => return,
        };
        if answer.is_empty() || write_frame(&mut stream, &answer).await.is_err() {
            return;
        }
    }
}
