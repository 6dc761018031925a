//! Forwarding: asking the pod's resolvers what the mesh does not answer.
//!
//! As Istio's agent does (`queryUpstream` in `pkg/dns/client/dns.go`), the client's query goes
//! out as it came, to each upstream in resolv.conf order until one answers; a failure or a
//! timeout moves to the next, and when none answers the client gets SERVFAIL. An upstream that
//! answers with an error code (NXDOMAIN, SERVFAIL, REFUSED) has answered: that is relayed. A
//! UDP client's query goes out over UDP and a TCP client's over TCP, as in Istio; unlike Istio
//! (which hands a truncated UDP answer back and lets the client retry), a truncated UDP answer
//! is asked again over TCP from the same upstream at once, and if that fails the truncated
//! answer is relayed so the client can still retry itself.
//!
//! Against spoofed answers (RFC 5452): every forwarded query gets a fresh random ID from a
//! CSPRNG and a fresh UDP socket, whose ephemeral source port the kernel picks at random (Linux
//! randomizes UDP ephemeral ports); the socket is connected to the upstream, so the kernel
//! delivers only that address's datagrams, and a datagram is taken as the answer only with the
//! ID and the question we sent. Anything else is counted and ignored while waiting goes on.
//!
//! Time: each upstream gets [`Limits::upstream_timeout`], the TCP retry after a truncated
//! answer gets its own, and all of it stays within [`Limits::query_timeout`].

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, Query};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::{timeout_at, Instant};

use crate::counters::{bump, Counters};
use crate::framing::{read_frame, write_frame};
use crate::limits::Limits;
use crate::wire;

/// How a client's query reached us, and so how it goes upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    Udp,
    Tcp,
}

/// An upstream's answer: its bytes as received (with the ID we chose) and their parse.
pub(crate) struct Relayed {
    pub bytes: Vec<u8>,
    pub msg: Message,
}

/// The upstream resolvers and how long each gets.
pub(crate) struct Forwarder {
    servers: Vec<SocketAddr>,
    attempt: Duration,
    total: Duration,
    counters: Arc<Counters>,
}

/// Why one upstream exchange gave no answer (logged at debug level, counted).
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("no answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("its TCP answer did not match the question asked")]
    Mismatch,
}

impl Forwarder {
    pub(crate) fn new(servers: Vec<SocketAddr>, limits: &Limits, counters: Arc<Counters>) -> Self {
        Forwarder {
            servers,
            attempt: limits.upstream_timeout,
            total: limits.query_timeout,
            counters,
        }
    }

    /// Sends `bytes` (the client's query as it came, parsed as `query`) to each upstream in
    /// turn; the first answer, or `None` when every upstream failed or time ran out.
    pub(crate) async fn forward(
        &self,
        bytes: &[u8],
        query: &Message,
        transport: Transport,
    ) -> Option<Relayed> {
        let asked = query.query()?;
        // As large as the answer the client said it takes (the upstream honours the same EDNS
        // size, since the query goes out unchanged), and never under 4 KiB.
        let size = wire::udp_limit(query).max(4096);
        let deadline = Instant::now() + self.total;
        for &server in &self.servers {
            if Instant::now() >= deadline {
                break;
            }
            let result = match transport {
                Transport::Udp => self.over_udp(server, bytes, asked, size, deadline).await,
                Transport::Tcp => self.over_tcp(server, bytes, asked, deadline).await,
            };
            match result {
                Ok(answer) => return Some(answer),
                Err(e) => {
                    bump(&self.counters.upstream_failures);
                    tracing::debug!(upstream = %server, error = %e, "upstream resolver failed");
                }
            }
        }
        None
    }

    /// The end of one attempt started now: its own timeout, within the query's deadline.
    fn attempt_ends(&self, deadline: Instant) -> Instant {
        (Instant::now() + self.attempt).min(deadline)
    }

    async fn over_udp(
        &self,
        server: SocketAddr,
        bytes: &[u8],
        asked: &Query,
        size: usize,
        deadline: Instant,
    ) -> Result<Relayed, Failure> {
        let ends = self.attempt_ends(deadline);
        let answer = timeout_at(ends, self.udp_exchange(server, bytes, asked, size))
            .await
            .map_err(|_| Failure::Timeout(self.attempt))??;
        if !answer.msg.truncated() {
            return Ok(answer);
        }
        bump(&self.counters.truncated_retries);
        match self.over_tcp(server, bytes, asked, deadline).await {
            Ok(full) => Ok(full),
            Err(e) => {
                tracing::debug!(upstream = %server, error = %e, "TCP retry after a truncated answer failed; relaying the truncated one");
                Ok(answer)
            }
        }
    }

    async fn udp_exchange(
        &self,
        server: SocketAddr,
        bytes: &[u8],
        asked: &Query,
        size: usize,
    ) -> Result<Relayed, Failure> {
        let id: u16 = rand::random();
        let local: SocketAddr = match server {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = UdpSocket::bind(local).await?;
        socket.connect(server).await?;
        socket.send(&wire::with_id(bytes, id)).await?;
        let mut buf = vec![0u8; size];
        loop {
            let n = socket.recv(&mut buf).await?;
            match Message::from_vec(&buf[..n]) {
                Ok(msg) if wire::answers(&msg, id, asked) => {
                    return Ok(Relayed {
                        bytes: buf[..n].to_vec(),
                        msg,
                    })
                }
                _ => bump(&self.counters.mismatched),
            }
        }
    }

    async fn over_tcp(
        &self,
        server: SocketAddr,
        bytes: &[u8],
        asked: &Query,
        deadline: Instant,
    ) -> Result<Relayed, Failure> {
        let ends = self.attempt_ends(deadline);
        timeout_at(ends, self.tcp_exchange(server, bytes, asked))
            .await
            .map_err(|_| Failure::Timeout(self.attempt))?
    }

    async fn tcp_exchange(
        &self,
        server: SocketAddr,
        bytes: &[u8],
        asked: &Query,
    ) -> Result<Relayed, Failure> {
        let id: u16 = rand::random();
        let mut stream = TcpStream::connect(server).await?;
        write_frame(&mut stream, &wire::with_id(bytes, id)).await?;
        let closed = || {
            std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the connection closed before an answer",
            )
        };
        let answer = read_frame(&mut stream).await?.ok_or_else(closed)?;
        match Message::from_vec(&answer) {
            Ok(msg) if wire::answers(&msg, id, asked) => Ok(Relayed { bytes: answer, msg }),
            _ => {
                bump(&self.counters.mismatched);
                Err(Failure::Mismatch)
            }
        }
    }
}
