//! Inbound listeners: accept, decide plaintext vs mTLS by the port's PeerAuthentication mode,
//! terminate TLS, then hand the stream to the TCP or HTTP path.
//!
//! PERMISSIVE needs both protocols on one port, so the first byte is *peeked* (not read): a TLS
//! ClientHello always starts with record type 0x16 (handshake), which no plaintext HTTP method or
//! typical TCP protocol starts with. Peeking leaves the byte in the socket for whichever side
//! consumes it. Every step before traffic flows is under the handshake timeout, so a client that
//! connects and sends nothing (or half a handshake) is dropped instead of pinning a task.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use trustmesh_identity::Usage;
use trustmesh_lifecycle::drain::Watch;
use trustmesh_policy::MtlsMode;

use crate::accesslog::AccessLog;
use crate::config::{AppProtocol, Protocol};
use crate::conn::{ConnCtx, Peer};
use crate::metrics::RejectReason;
use crate::state::Shared;
use trustmesh_registry::Protocol as Protocol2;

const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Serves an inbound listener until the drain starts (see [`crate::state::accept_loop`]).
pub async fn serve(shared: Arc<Shared>, index: usize, listener: TcpListener, drain: Watch) {
    crate::state::accept_loop(
        shared,
        listener,
        index,
        "inbound",
        drain,
        move |shared, stream, source, drain| async move {
            handle(&shared, index, stream, source, drain).await
        },
    )
    .await
}

fn log_reject(ctx: &ConnCtx, reason: &str) {
    AccessLog {
        decision: "rejected",
        reason: Some(reason.into()),
        duration_ms: ctx.started.elapsed().as_millis() as u64,
        ..AccessLog::inbound_tcp(ctx)
    }
    .emit();
}

/// Why a connection was refused before its protocol began: the metric it counts under and the
/// sentence in its access-log line.
pub(crate) struct Refusal {
    reason: RejectReason,
    /// Whether the client had started TLS (the log line says so).
    tls: bool,
    why: Cow<'static, str>,
}

impl Refusal {
    pub(crate) fn new(
        reason: RejectReason,
        tls: bool,
        why: impl Into<Cow<'static, str>>,
    ) -> Refusal {
        Refusal {
            reason,
            tls,
            why: why.into(),
        }
    }
}

/// One accepted connection; it holds `drain` until it ends (a handshake in progress is bounded
/// by its own timeout).
async fn handle(
    shared: &Arc<Shared>,
    index: usize,
    stream: TcpStream,
    source: SocketAddr,
    drain: Watch,
) {
    shared
        .metrics
        .inbound_connections
        .fetch_add(1, Ordering::Relaxed);
    let _ = stream.set_nodelay(true);
    let snap = shared.current();
    let Some(l) = snap.config.inbound.get(index) else {
        return;
    };
    let local = stream
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::new(l.address, l.port));
    let ctx = ConnCtx {
        listener: index,
        listener_port: l.port,
        source,
        local,
        target: SocketAddr::new(l.target_address, l.target_port),
        app_source: None,
        peer: None,
        tls: false,
        sni: None,
        app_protocol: l.app_protocol,
        started: Instant::now(),
    };
    let protocol = l.protocol;
    let mode = snap.policies.mtls_mode(l.target_port);
    // One deadline for first byte and handshake together, so a slow client cannot stretch it.
    let deadline = tokio::time::Instant::now() + snap.config.timeouts.handshake();
    let server = match protocol {
        Protocol::Http => snap.server_tls_http.clone(),
        Protocol::Tcp => snap.server_tls_tcp.clone(),
    };
    drop(snap);

    settle(
        shared,
        ctx,
        Speaks::Fixed(protocol),
        (server, mode, deadline),
        stream,
        drain,
    )
    .await;
}

/// How a listener learns its connections' protocol.
#[derive(Clone, Copy)]
enum Speaks {
    /// From its config (an explicit inbound listener).
    Fixed(Protocol),
    /// Per connection (the capture's inbound port): the client's ALPN after TLS, else what
    /// the registry declares for the port (`declared_http`), else a sniff of plaintext.
    Detect { declared_http: Option<bool> },
}

/// The steps every inbound connection takes once its listener has built `ctx`: plaintext or
/// TLS by the port's mode (`tls`: the server config, the mode, the handshake deadline), the
/// handshake and the peer's identity, the protocol, then the TCP or HTTP path; a refusal on
/// the way is counted and logged once.
async fn settle(
    shared: &Arc<Shared>,
    mut ctx: ConnCtx,
    speaks: Speaks,
    tls: (Arc<rustls::ServerConfig>, MtlsMode, tokio::time::Instant),
    stream: TcpStream,
    drain: Watch,
) {
    let (server, mode, deadline) = tls;
    let use_tls = match wants_tls(&stream, mode, deadline).await {
        Ok(Some(tls)) => tls,
        Ok(None) => return, // closed before sending anything
        Err(r) => return refuse(shared, &mut ctx, r),
    };
    if !use_tls {
        let protocol = match speaks {
            Speaks::Fixed(p) => p,
            Speaks::Detect { declared_http } => http_or_tcp(match declared_http {
                Some(h) => h,
                None => sniffs_http(&stream).await,
            }),
        };
        match protocol {
            Protocol::Tcp => crate::tcp::serve_plain(shared, ctx, stream, drain).await,
            Protocol::Http => dispatch(shared, ctx, protocol, stream, drain).await,
        }
        return;
    }
    ctx.tls = true;
    match terminate(shared, server, stream, deadline).await {
        Ok((tls, peer)) => {
            ctx.sni = tls.get_ref().1.server_name().map(str::to_string);
            ctx.peer = Some(peer);
            let protocol = match speaks {
                Speaks::Fixed(p) => p,
                // A mesh client says what it carries in ALPN; otherwise the registry decides.
                Speaks::Detect { declared_http } => {
                    let by_alpn = tls
                        .get_ref()
                        .1
                        .alpn_protocol()
                        .and_then(crate::tls::alpn_http);
                    http_or_tcp(by_alpn.is_some() || declared_http == Some(true))
                }
            };
            dispatch(shared, ctx, protocol, tls, drain).await;
        }
        Err(r) => refuse(shared, &mut ctx, r),
    }
}

fn http_or_tcp(http: bool) -> Protocol {
    if http {
        Protocol::Http
    } else {
        Protocol::Tcp
    }
}

/// Plaintext or TLS, by the port's mode and the first byte: `None` when the client closed
/// before sending anything.
async fn wants_tls(
    stream: &TcpStream,
    mode: MtlsMode,
    deadline: tokio::time::Instant,
) -> Result<Option<bool>, Refusal> {
    if mode == MtlsMode::Disable {
        // No sniffing: server-first protocols (the app speaks before the client does) must
        // work on a plaintext port, and a peek would wait for a client byte that never comes.
        return Ok(Some(false));
    }
    let mut first = [0u8; 1];
    let is_tls = match tokio::time::timeout_at(deadline, stream.peek(&mut first)).await {
        Ok(Ok(0)) | Ok(Err(_)) => return Ok(None),
        Ok(Ok(_)) => first[0] == TLS_HANDSHAKE_RECORD,
        Err(_) => {
            return Err(Refusal::new(
                RejectReason::HandshakeTimeout,
                false,
                "no data before handshake timeout",
            ))
        }
    };
    if mode == MtlsMode::Strict && !is_tls {
        return Err(Refusal::new(
            RejectReason::ModeMismatch,
            false,
            "plaintext on a STRICT mTLS port",
        ));
    }
    Ok(Some(is_tls))
}

/// The TLS handshake, under the same deadline, and the peer's verified identity (also the
/// HBONE listener's handshake, [`crate::hbone`]).
pub(crate) async fn terminate(
    shared: &Shared,
    server: Arc<rustls::ServerConfig>,
    stream: TcpStream,
    deadline: tokio::time::Instant,
) -> Result<(TlsStream<TcpStream>, Peer), Refusal> {
    let tls = match tokio::time::timeout_at(deadline, TlsAcceptor::from(server).accept(stream))
        .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            // Debug, not info: a scan or flood must not flood stderr; the access log and
            // metrics record every failure.
            tracing::debug!(error = %crate::tls::handshake_sentence(&e), "inbound TLS handshake failed");
            return Err(Refusal::new(
                RejectReason::TlsHandshake,
                true,
                format!(
                    "TLS handshake failed: {}",
                    crate::tls::handshake_sentence(&e)
                ),
            ));
        }
        Err(_) => {
            return Err(Refusal::new(
                RejectReason::HandshakeTimeout,
                true,
                "TLS handshake timed out",
            ))
        }
    };
    shared
        .metrics
        .tls_handshakes
        .fetch_add(1, Ordering::Relaxed);
    if tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
        shared.metrics.tls_resumed.fetch_add(1, Ordering::Relaxed);
    }
    // The verifier accepted the chain, so no peer only happens if trust changed between the
    // handshake and now; refuse rather than run with an unknown identity.
    match peer_of(shared, tls.get_ref().1) {
        Some(peer) => Ok((tls, peer)),
        None => Err(Refusal::new(
            RejectReason::TlsHandshake,
            true,
            "peer certificate no longer verifies",
        )),
    }
}

/// Counts and logs a refusal, once.
pub(crate) fn refuse(shared: &Shared, ctx: &mut ConnCtx, r: Refusal) {
    shared.metrics.reject(r.reason);
    ctx.tls = r.tls;
    log_reject(ctx, &r.why);
}

/// Serves the capture's inbound port until the drain starts: every port of the workload
/// arrives here, its original destination says which.
pub async fn serve_captured(shared: Arc<Shared>, slot: usize, listener: TcpListener, drain: Watch) {
    crate::state::accept_loop(
        shared,
        listener,
        slot,
        "captured inbound",
        drain,
        move |shared, stream, source, drain| async move {
            handle_captured(&shared, slot, stream, source, drain).await
        },
    )
    .await
}

/// How long an undeclared plaintext port waits for the client's first bytes to tell HTTP
/// from other TCP (Istio's protocol sniffing); a server-first protocol then relays as TCP.
const SNIFF: std::time::Duration = std::time::Duration::from_millis(100);

/// A captured inbound connection: as [`handle`], with the port, the policy port and the
/// protocol taken from the connection instead of a listener's config.
async fn handle_captured(
    shared: &Arc<Shared>,
    slot: usize,
    stream: TcpStream,
    source: SocketAddr,
    drain: Watch,
) {
    shared
        .metrics
        .inbound_connections
        .fetch_add(1, Ordering::Relaxed);
    let _ = stream.set_nodelay(true);
    // The port listens on `[::]`, so an IPv4 client arrives as `::ffff:a.b.c.d`; policy
    // (`ipBlocks`, `remoteIpBlocks`) and the log must see the IPv4 address it is.
    let source = SocketAddr::new(source.ip().to_canonical(), source.port());
    let listener_port = stream.local_addr().map_or(0, |a| a.port());
    let orig = crate::captured::redirected_destination(&stream);
    let port = orig.map_or(0, |o| o.port());
    // The app is reached at the address the client asked for, from 127.0.0.6, as Istio's
    // sidecar does since 1.10: a service the app binds to loopback only is not exposed to the
    // network by the sidecar, and nothing the app keeps on loopback (the sidecar's own admin
    // port among them) becomes reachable through the capture. IPv6 has no such source on
    // `lo`, so an IPv6 connection goes to ::1.
    let (target, app_source) = match orig {
        Some(SocketAddr::V4(o)) => (
            SocketAddr::V4(o),
            Some(crate::upstream::INBOUND_PASSTHROUGH_SOURCE.into()),
        ),
        Some(SocketAddr::V6(o)) => (
            SocketAddr::new(std::net::Ipv6Addr::LOCALHOST.into(), o.port()),
            None,
        ),
        None => (source, None),
    };
    let snap = shared.current();
    let declared = snap.mesh_view.own_port_protocol(port);
    let mut ctx = ConnCtx {
        listener: slot,
        listener_port,
        source,
        local: orig.unwrap_or(source),
        target,
        app_source,
        peer: None,
        tls: false,
        sni: None,
        app_protocol: match declared {
            Some(Protocol2::Http2 | Protocol2::Grpc) => AppProtocol::Http2,
            _ => AppProtocol::Http1,
        },
        started: Instant::now(),
    };
    if orig.is_none() {
        drop(snap);
        return refuse(
            shared,
            &mut ctx,
            Refusal::new(
                RejectReason::ModeMismatch,
                false,
                "a connection made to the capture port itself, not redirected to it",
            ),
        );
    }
    let mode = snap.policies.mtls_mode(port);
    let deadline = tokio::time::Instant::now() + snap.config.timeouts.handshake();
    let server = snap.server_tls_captured.clone();
    drop(snap);
    let speaks = Speaks::Detect {
        declared_http: declared.map(|p| p.is_http()),
    };
    settle(shared, ctx, speaks, (server, mode, deadline), stream, drain).await;
}

/// Whether the client's first bytes, within [`SNIFF`], are an HTTP request.
async fn sniffs_http(stream: &TcpStream) -> bool {
    let mut head = [0u8; 8];
    match tokio::time::timeout(SNIFF, stream.peek(&mut head)).await {
        Ok(Ok(n)) => crate::captured::looks_like_http(&head[..n]),
        _ => false,
    }
}

/// Re-derives the verified SPIFFE ID from the certificates rustls accepted.
fn peer_of(shared: &Shared, conn: &rustls::ServerConnection) -> Option<Peer> {
    let certs = conn.peer_certificates()?;
    let snap = shared.current();
    // The current snapshot's trust, as of now: for a full handshake answered from the memory
    // of chains its verifier just accepted (unless a reload came in between); for a resumed
    // session, the check that its chain is still valid (`tls::recheck_resumed`'s counterpart).
    let svid = snap
        .chains
        .verify(certs, rustls_pki_types::UnixTime::now(), Usage::ClientAuth)
        .ok()?;
    Some(Peer {
        id: svid.id,
        leaf_sha256: crate::hex::sha256_hex(certs.first()?.as_ref()),
    })
}

async fn dispatch<S>(
    shared: &Arc<Shared>,
    ctx: ConnCtx,
    protocol: Protocol,
    stream: S,
    drain: Watch,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match protocol {
        Protocol::Tcp => crate::tcp::serve(shared, ctx, stream, drain).await,
        Protocol::Http => crate::http::serve(shared.clone(), ctx, stream, drain).await,
    }
}
