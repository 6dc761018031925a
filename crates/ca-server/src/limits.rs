//! Bounds on what one client can hold of the CA: connections per listener, and how long a
//! connection may sit without sending anything.
//!
//! Why: without them a few hundred connections that never finish TLS, never send the HTTP/2
//! preface, or never finish a request head exhausted the process's file descriptors, and
//! issuance timed out for every legitimate agent. Each listener has its own cap, so a flood of
//! the bundle endpoint cannot take the certificate service's connections, and a silent
//! connection is closed after the idle timeout so the cap frees itself.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// Connections one listener holds at once, by default. Each costs a file descriptor and a few
/// KiB; the process raises its descriptor limit at start to have room for this on both
/// listeners.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// How long a connection may stay silent (nothing read from the client) before it is closed.
/// Agents call the CA a few times per certificate lifetime and reconnect cheaply.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a TLS handshake may take (or the idle timeout, if shorter).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// One listener's limits and what they refused.
#[derive(Debug)]
pub struct Limits {
    name: &'static str,
    slots: Arc<Semaphore>,
    pub idle_timeout: Duration,
    refused: AtomicU64,
    idle_closed: Arc<AtomicU64>,
    handshake_failures: AtomicU64,
}

impl Limits {
    pub fn new(name: &'static str, max_connections: usize, idle_timeout: Duration) -> Limits {
        Limits {
            name,
            slots: Arc::new(Semaphore::new(max_connections.max(1))),
            idle_timeout,
            refused: AtomicU64::new(0),
            idle_closed: Arc::default(),
            handshake_failures: AtomicU64::new(0),
        }
    }

    pub fn handshake_timeout(&self) -> Duration {
        HANDSHAKE_TIMEOUT.min(self.idle_timeout)
    }

    /// A slot for a new connection, or `None` (the connection is to be closed at once).
    pub fn admit(&self) -> Option<OwnedSemaphorePermit> {
        match self.slots.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                let n = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
                // Log the first refusal and then every 1000th, not one line per flooded socket.
                if n == 1 || n % 1000 == 0 {
                    tracing::warn!(
                        listener = self.name,
                        refused = n,
                        "connection limit reached; new connections are closed at once"
                    );
                }
                None
            }
        }
    }

    /// Counts and logs a TLS handshake that failed or timed out (a scanner, a client that does
    /// not trust us, or a flood), with the running total.
    pub fn handshake_failed(&self, peer: std::net::SocketAddr, why: &str) {
        let n = self.handshake_failures.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::info!(listener = self.name, %peer, total = n, "TLS handshake failed: {why}");
    }

    pub fn handshake_failures(&self) -> u64 {
        self.handshake_failures.load(Ordering::Relaxed)
    }

    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    pub fn idle_closed(&self) -> u64 {
        self.idle_closed.load(Ordering::Relaxed)
    }

    pub fn available(&self) -> usize {
        self.slots.available_permits()
    }

    /// Wraps an admitted connection: it keeps its slot until dropped, and reads fail with
    /// `TimedOut` once the client has sent nothing for the idle timeout.
    pub fn guard<S>(&self, inner: S, permit: OwnedSemaphorePermit) -> Guarded<S> {
        Guarded {
            inner,
            _permit: permit,
            idle: self.idle_timeout,
            deadline: Box::pin(tokio::time::sleep(self.idle_timeout)),
            idle_closed: self.idle_closed.clone(),
        }
    }
}

/// A connection holding a listener slot, closed when its client stays silent.
pub struct Guarded<S> {
    inner: S,
    _permit: OwnedSemaphorePermit,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
    idle_closed: Arc<AtomicU64>,
}

impl<S> Guarded<S> {
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected for Guarded<S> {
    type ConnectInfo = S::ConnectInfo;
    /// The inner stream's (for TLS: the peer's certificates, which authenticate renewals).
    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    let next = Instant::now() + self.idle;
                    self.deadline.as_mut().reset(next);
                }
                Poll::Ready(r)
            }
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    self.idle_closed.fetch_add(1, Ordering::Relaxed);
                    Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "client idle for too long",
                    )))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn slots_are_capped_and_returned_on_drop() {
        let l = Limits::new("test", 2, Duration::from_secs(60));
        let a = l.admit().unwrap();
        let _b = l.admit().unwrap();
        assert!(l.admit().is_none());
        assert_eq!(l.refused(), 1);
        drop(a);
        assert!(l.admit().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_closed_and_an_active_one_is_not() {
        let l = Limits::new("test", 4, Duration::from_secs(10));
        let (client, server) = tokio::io::duplex(64);
        let mut guarded = l.guard(server, l.admit().unwrap());
        let mut client = client;
        // Active: a byte every 6 s keeps it open past 10 s.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(6)).await;
            client.write_all(b"x").await.unwrap();
            let mut b = [0u8; 1];
            guarded.read_exact(&mut b).await.unwrap();
        }
        // Silent: the read fails once 10 s pass without a byte, and the slot is freed on drop.
        let mut b = [0u8; 1];
        let started = Instant::now();
        let e = guarded.read(&mut b).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_secs(10));
        assert_eq!(l.idle_closed(), 1);
        assert_eq!(l.available(), 3);
        drop(guarded);
        assert_eq!(l.available(), 4);
    }
}
