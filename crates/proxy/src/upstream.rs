//! Connecting to an upstream: a peer's sidecar over mTLS, which must present the identity we
//! meant to reach, or a server without a sidecar in plaintext. Explicit outbound listeners and
//! the transparent (captured) paths connect the same way, and a failure comes back typed, so
//! every caller can count it under the right metric and tell the app why in words.
//!
//! The reasons follow Envoy's vocabulary (`connection failure`, `TLS error`...), which operators
//! of Istio already read in `upstream connect error or disconnect/reset before headers. reset
//! reason: ...`; the sentence adds what Envoy leaves to its logs: the address and, for a wrong
//! identity, who answered and who was expected.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::{CertificateError, OtherError};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use trustmesh_identity::Usage;

use crate::tls::PeerMismatch;

/// Endpoints tried for one connection or request before giving up (Envoy retries a connect
/// failure on another host the same way, `retry_on: connect-failure`).
pub const MAX_ATTEMPTS: usize = 3;

/// Why a connection or request went nowhere when no endpoint was even tried.
pub const NO_ENDPOINT: &str = "no healthy upstream: the service has no endpoint on this port";

/// How to secure a connection to one upstream.
#[derive(Clone)]
pub enum Security {
    /// No TLS: a destination without a sidecar, or a DestinationRule `DISABLE`.
    Plaintext,
    /// mTLS with our SVID; `config`'s verifier pins the identity the server must present, and
    /// the snapshot's verified chains check a resumed session's server again
    /// (`tls::recheck_resumed`).
    Mtls(
        Arc<rustls::ClientConfig>,
        Arc<trustmesh_identity::ChainVerifier>,
    ),
    /// TLS the sidecar originates for the app (DestinationRule SIMPLE or MUTUAL), `sni` sent
    /// as the server name (the address when `None`).
    Tls {
        config: Arc<rustls::ClientConfig>,
        sni: Option<String>,
    },
}

/// Why an upstream could not be reached.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    #[error("connecting to {addr}: {why}")]
    Connect { addr: SocketAddr, why: String },
    #[error("connecting to {addr}: no answer within {after}")]
    ConnectTimeout { addr: SocketAddr, after: String },
    #[error("TLS to {addr}: {why}")]
    Tls { addr: SocketAddr, why: String },
    #[error("mTLS to {addr}: the server presented {got}, expected {expected}")]
    WrongIdentity {
        addr: SocketAddr,
        got: String,
        expected: String,
    },
    #[error("mTLS to {addr}: no handshake within {after}")]
    HandshakeTimeout { addr: SocketAddr, after: String },
}

impl UpstreamError {
    /// Envoy's name for the reset, as it appears after `reset reason:`.
    pub fn reset_reason(&self) -> &'static str {
        match self {
            UpstreamError::Connect { .. } => "connection failure",
            UpstreamError::ConnectTimeout { .. } => "connection timeout",
            UpstreamError::Tls { .. }
            | UpstreamError::WrongIdentity { .. }
            | UpstreamError::HandshakeTimeout { .. } => "TLS error",
        }
    }

    /// Whether it failed in the TLS handshake (counted apart from connect failures).
    pub fn is_tls(&self) -> bool {
        self.reset_reason() == "TLS error"
    }

    /// Envoy's words for a failed upstream, and ours after them (what the app reads in a 503).
    pub fn sentence(&self) -> String {
        reset_sentence(self.reset_reason(), self)
    }

    /// Counts it under its metric: TLS handshakes apart from connects.
    pub fn count(&self, metrics: &crate::metrics::Metrics) {
        let counter = if self.is_tls() {
            &metrics.outbound_tls_errors
        } else {
            &metrics.upstream_errors
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let UpstreamError::Tls { .. } | UpstreamError::WrongIdentity { .. } = self {
            tracing::warn!("outbound mTLS handshake failed: {self}");
        }
    }
}

/// What the app reads when a request could not be delivered: Envoy's sentence with its
/// `reset reason` (`connection failure`, `remote reset`, `TLS error`, `protocol error`...),
/// then ours.
pub fn reset_sentence(reset_reason: &str, why: impl std::fmt::Display) -> String {
    format!(
        "upstream connect error or disconnect/reset before headers. reset reason: \
         {reset_reason}, transport failure reason: {why}"
    )
}

/// An upstream failure and its causes on one line (`client error (Connect): tcp connect
/// error: Connection refused`): hyper's own Display stops at the outermost error.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The SPIFFE ID the upstream proved (for the log), checked again under `chains`' trust (from
/// its memory of verified chains: the handshake's verifier has just accepted this chain).
pub fn verified_peer(chains: &trustmesh_identity::ChainVerifier, peer: &Stream) -> Option<String> {
    let chain = peer.peer_certificates()?;
    chains
        .verify(chain, rustls_pki_types::UnixTime::now(), Usage::ServerAuth)
        .ok()
        .map(|s| s.id.to_string())
}

/// A connected upstream, plaintext or TLS, readable and writable as one type.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    /// The certificate chain the server presented (TLS only).
    pub fn peer_certificates(&self) -> Option<&[rustls_pki_types::CertificateDer<'static>]> {
        match self {
            Stream::Plain(_) => None,
            Stream::Tls(t) => t.get_ref().1.peer_certificates(),
        }
    }

    /// The protocol agreed by ALPN (TLS only).
    pub fn alpn(&self) -> Option<&[u8]> {
        match self {
            Stream::Plain(_) => None,
            Stream::Tls(t) => t.get_ref().1.alpn_protocol(),
        }
    }
}

/// Istio's source address for connections from the sidecar to its own workload's address
/// (`InboundPassthroughBindIpv4`): the capture returns them untouched (`-o lo -s 127.0.0.6`).
pub const INBOUND_PASSTHROUGH_SOURCE: std::net::Ipv4Addr = std::net::Ipv4Addr::new(127, 0, 0, 6);

/// A TCP connection to `target`, from `source` when given.
pub async fn tcp_connect(
    target: SocketAddr,
    source: Option<std::net::IpAddr>,
) -> io::Result<TcpStream> {
    let Some(source) = source else {
        return TcpStream::connect(target).await;
    };
    let socket = match target {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(target).await
}

/// Connects to `addr` within `connect`, then (for mTLS) handshakes within `handshake`.
pub async fn connect(
    addr: SocketAddr,
    security: &Security,
    connect: Duration,
    handshake: Duration,
) -> Result<Stream, UpstreamError> {
    let tcp = match tokio::time::timeout(connect, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return Err(UpstreamError::Connect {
                addr,
                why: e.to_string(),
            })
        }
        Err(_) => {
            return Err(UpstreamError::ConnectTimeout {
                addr,
                after: trustmesh_config::format_go(connect),
            })
        }
    };
    let _ = tcp.set_nodelay(true);
    let (config, name, chains) = match security {
        Security::Plaintext => return Ok(Stream::Plain(tcp)),
        // Peers are addressed by IP and identified by SPIFFE ID; the verifier ignores the name.
        Security::Mtls(config, chains) => (
            config.clone(),
            ServerName::IpAddress(addr.ip().into()),
            Some(chains),
        ),
        Security::Tls { config, sni } => {
            let name = sni
                .as_deref()
                .and_then(|s| ServerName::try_from(s.to_string()).ok())
                .unwrap_or(ServerName::IpAddress(addr.ip().into()));
            (config.clone(), name, None)
        }
    };
    match tokio::time::timeout(handshake, TlsConnector::from(config).connect(name, tcp)).await {
        Ok(Ok(s)) => {
            if let Some(chains) = chains {
                crate::tls::recheck_resumed(s.get_ref().1, chains, Usage::ServerAuth)
                    .map_err(|why| UpstreamError::Tls { addr, why })?;
            }
            Ok(Stream::Tls(Box::new(s)))
        }
        Ok(Err(e)) => Err(tls_failure(addr, e)),
        Err(_) => Err(UpstreamError::HandshakeTimeout {
            addr,
            after: trustmesh_config::format_go(handshake),
        }),
    }
}

/// A handshake error; a server with the wrong identity is told apart, since it is the one
/// failure an operator must read as "someone else answered".
fn tls_failure(addr: SocketAddr, e: io::Error) -> UpstreamError {
    let mismatch = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .and_then(|r| match r {
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(o))) => {
                o.downcast_ref::<PeerMismatch>()
            }
            _ => None,
        });
    match mismatch {
        Some(m) => UpstreamError::WrongIdentity {
            addr,
            got: m.got.to_string(),
            expected: m.expected.clone(),
        },
        None => UpstreamError::Tls {
            addr,
            why: crate::tls::handshake_sentence(&e),
        },
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
}
