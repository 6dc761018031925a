//! The HBONE listener: Istio ambient's transport between proxies, terminated here so that a
//! ztunnel (or another sidecar, see [`crate::tunnel`]) can reach this workload the way ambient
//! workloads reach each other. One mTLS connection (ALPN `h2`) carries many HTTP/2 CONNECT
//! streams; each stream is one inner connection to `ip:port`, the CONNECT's authority.
//!
//! An inner connection is treated exactly as a direct mTLS connection to that port would be:
//! the peer's SPIFFE ID comes from the outer handshake, L4 policy is decided before the CONNECT
//! is answered (as ztunnel does, so a refused stream never gets a 200), and an HTTP port's
//! bytes go through the same L7 path ([`crate::http`]) as on the inbound listeners. HBONE is
//! always mTLS, so STRICT and PERMISSIVE are met as they are; a port in DISABLE mode stays
//! reachable through the tunnel (ambient's ztunnel always takes HBONE too): DISABLE says
//! plaintext is allowed, not that mTLS is refused.
//!
//! The answers follow ztunnel's: `400` for a method other than CONNECT, an authority that is
//! not `ip:port` or a target that is not this workload's; `401` when policy denies the
//! connection; `503` when the app cannot be reached. Each refusal is counted
//! (`reason="hbone_refused"`, or the policy and upstream counters) and access-logged.
//!
//! Bounds: the handshake timeout covers the TLS handshake, the HTTP/2 stream cap (`hboneMax
//! Streams` / `hbone.maxConcurrentStreams`) bounds one peer connection, `timeouts.httpIdle`
//! closes a connection without streams, and the drain sends GOAWAY at once while the streams
//! in flight keep going until the drain turns immediate.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::server::SendResponse;
use h2::RecvStream;
use http::{Method, Request, Response, StatusCode};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use trustmesh_lifecycle::drain::Watch;
use trustmesh_registry::Protocol as Declared;

use crate::config::{AppProtocol, HboneListener, Protocol};
use crate::conn::ConnCtx;
use crate::h2io::H2Io;
use crate::inbound::Refusal;
use crate::metrics::RejectReason;
use crate::state::Shared;
use crate::tcp::NotAdmitted;

/// How long an inner stream to a port whose protocol nobody declared waits for its first
/// bytes to tell HTTP from other TCP (as the capture's inbound port sniffs).
const SNIFF: Duration = Duration::from_millis(100);

/// Serves the HBONE listener until the drain starts.
pub async fn serve(shared: Arc<Shared>, slot: usize, listener: TcpListener, drain: Watch) {
    crate::state::accept_loop(
        shared,
        listener,
        slot,
        "hbone",
        drain,
        move |shared, stream, source, drain| async move {
            handle(&shared, slot, stream, source, drain).await
        },
    )
    .await
}

/// One peer connection: mTLS, then HTTP/2 with a CONNECT per inner connection.
async fn handle(
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
    let source = canonical(source);
    let local = stream.local_addr().map_or(source, canonical);
    let snap = shared.current();
    let Some(hbone) = snap.config.hbone_listener() else {
        return;
    };
    let deadline = tokio::time::Instant::now() + snap.config.timeouts.handshake();
    let server = snap.server_tls_hbone.clone();
    let timeouts = snap.config.timeouts.clone();
    drop(snap);
    let mut ctx = ConnCtx {
        listener: slot,
        listener_port: local.port(),
        source,
        local,
        target: local,
        app_source: None,
        peer: None,
        tls: true,
        sni: None,
        app_protocol: AppProtocol::Http1,
        started: Instant::now(),
    };
    let tls = match crate::inbound::terminate(shared, server, stream, deadline).await {
        Ok((tls, peer)) => {
            ctx.sni = tls.get_ref().1.server_name().map(str::to_string);
            ctx.peer = Some(peer);
            tls
        }
        Err(r) => return crate::inbound::refuse(shared, &mut ctx, r),
    };
    let mut builder = h2::server::Builder::new();
    crate::h2settings::hbone_server(&mut builder)
        .max_concurrent_streams(hbone.max_concurrent_streams)
        .max_header_list_size(timeouts.max_header_bytes as u32);
    let handshake = builder.handshake::<_, Bytes>(tls);
    let conn = match tokio::time::timeout(timeouts.handshake(), handshake).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => return ended(shared, &e),
        Err(_) => return, // no HTTP/2 preface: nothing was asked
    };
    let activity = Arc::new(crate::http::Activity::default());
    let ctx = Arc::new(ctx);
    let goaway = Arc::new(Notify::new());
    let serving = streams(conn, goaway.clone(), |req, respond| {
        let busy = activity.begin();
        let (shared, ctx, drain) = (shared.clone(), ctx.clone(), drain.clone());
        tokio::spawn(async move {
            connect(&shared, &ctx, hbone, req, respond, drain).await;
            drop(busy);
        });
    });
    tokio::pin!(serving);
    // GOAWAY at the drain or when idle: no new stream, the ones in flight go on until they end
    // or the drain turns immediate.
    let idle = timeouts.http_idle();
    let result = crate::http::until_done(
        serving.as_mut(),
        |_| goaway.notify_one(),
        &drain,
        &activity,
        idle,
    )
    .await
    .unwrap_or(Ok(()));
    if let Err(e) = result {
        ended(shared, &e);
    }
}

/// Serves the connection's streams, each handed to `each` as it opens, until the connection
/// ends, the peer stops answering PINGs, or `goaway` is told (then GOAWAY, and the streams in
/// flight are served until they end).
async fn streams(
    mut conn: h2::server::Connection<tokio_rustls::server::TlsStream<TcpStream>, Bytes>,
    goaway: Arc<Notify>,
    mut each: impl FnMut(Request<RecvStream>, SendResponse<Bytes>),
) -> Result<(), h2::Error> {
    let keep_alive = crate::h2io::keep_alive(conn.ping_pong());
    tokio::pin!(keep_alive);
    let mut told = false;
    loop {
        tokio::select! {
            next = conn.accept() => match next {
                Some(Ok((req, respond))) => each(req, respond),
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            },
            () = goaway.notified(), if !told => {
                told = true;
                conn.graceful_shutdown();
            }
            () = &mut keep_alive => {
                tracing::debug!("HBONE connection closed: no answer to a PING");
                return Ok(());
            }
        }
    }
}

/// How a connection ended with an error: a peer that broke HTTP/2 is counted, one that went
/// away or reset is not.
fn ended(shared: &Shared, e: &h2::Error) {
    let benign = e.is_io()
        || e.is_remote()
        || matches!(e.reason(), Some(h2::Reason::NO_ERROR | h2::Reason::CANCEL));
    if !benign {
        shared.metrics.reject(RejectReason::HttpProtocol);
    }
    tracing::debug!(error = %e, "HBONE connection ended with an error");
}

/// What a CONNECT asks for once checked: the inner connection's facts and its protocol
/// (`None`: undeclared, sniffed from the first bytes).
struct Inner {
    ctx: ConnCtx,
    protocol: Option<Protocol>,
}

/// One CONNECT stream: checked, decided, answered, then served as an inner connection, on the
/// stream's own task, which holds `drain` (and the connection's activity) until it ends.
async fn connect(
    shared: &Arc<Shared>,
    conn: &ConnCtx,
    hbone: HboneListener,
    req: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    drain: Watch,
) {
    let inner = match target_of(shared, conn, hbone, &req) {
        Ok(inner) => inner,
        Err(why) => {
            let mut ctx = conn.clone();
            ctx.started = Instant::now();
            crate::inbound::refuse(
                shared,
                &mut ctx,
                Refusal::new(RejectReason::HboneRefused, true, why.clone()),
            );
            return refuse(respond, StatusCode::BAD_REQUEST, &why);
        }
    };
    let Inner { ctx, protocol } = inner;
    // L4: decided (and the app reached) before the answer, as ztunnel does.
    let admitted = match protocol {
        Some(Protocol::Tcp) => match crate::tcp::admit(shared, &ctx).await {
            Ok(a) => Some(a),
            Err(NotAdmitted::Denied) => {
                return refuse(
                    respond,
                    StatusCode::UNAUTHORIZED,
                    "denied by authorization policy",
                )
            }
            Err(NotAdmitted::AppUnreachable) => {
                return refuse(
                    respond,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the app cannot be reached",
                )
            }
        },
        _ => None,
    };
    let Ok(send) = respond.send_response(Response::new(()), false) else {
        return; // the peer reset the stream meanwhile
    };
    let mut tunnel = H2Io::new(send, req.into_body());
    if let Some(admitted) = admitted {
        let stop = drain.immediate();
        return admitted
            .relay(async |app, idle| {
                let relayed = crate::relay::relay_h2(app, &mut tunnel, idle, stop).await;
                relayed.map(|(to_peer, from_peer)| (from_peer, to_peer))
            })
            .await;
    }
    if protocol == Some(Protocol::Http) {
        return crate::http::serve(shared.clone(), ctx, tunnel, drain).await;
    }
    let mut head = [0u8; 8];
    let n = match tokio::time::timeout(SNIFF, tunnel.read(&mut head)).await {
        Ok(Ok(n)) => n,
        Ok(Err(_)) => return,
        Err(_) => 0,
    };
    let tunnel = crate::relay::Prefixed::new(head[..n].to_vec(), tunnel);
    if crate::captured::looks_like_http(&head[..n]) {
        crate::http::serve(shared.clone(), ctx, tunnel, drain).await;
    } else {
        crate::tcp::serve(shared, ctx, tunnel, drain).await;
    }
}

/// The inner connection a CONNECT asks for, or why it is refused (a 400).
fn target_of(
    shared: &Shared,
    conn: &ConnCtx,
    hbone: HboneListener,
    req: &Request<RecvStream>,
) -> Result<Inner, String> {
    if req.method() != Method::CONNECT {
        return Err(format!(
            "HBONE carries CONNECT requests only, not {}",
            req.method()
        ));
    }
    let authority = req.uri().authority().map(|a| a.as_str()).unwrap_or("");
    let addr: SocketAddr = authority.parse().map_err(|_| {
        format!("the CONNECT authority must be the target's ip:port, not {authority:?}")
    })?;
    let addr = canonical(addr);
    let snap = shared.current();
    let mut ctx = conn.clone();
    ctx.started = Instant::now();
    if hbone.captured {
        let own =
            addr.ip() == conn.local.ip() || snap.mesh_view.own_addresses().contains(&addr.ip());
        if !own {
            return Err(format!("{addr} is not this workload's address"));
        }
        if addr.port() == conn.local.port() || addr.port() == 0 {
            return Err(format!("{addr} is the HBONE port itself"));
        }
        // As the capture's inbound port: the app at the address asked for, from Istio's
        // inbound passthrough source (IPv6: loopback), so nothing kept on loopback is exposed.
        let (target, app_source) = match addr.ip() {
            IpAddr::V4(_) => (
                addr,
                Some(crate::upstream::INBOUND_PASSTHROUGH_SOURCE.into()),
            ),
            IpAddr::V6(_) => (
                SocketAddr::new(std::net::Ipv6Addr::LOCALHOST.into(), addr.port()),
                None,
            ),
        };
        let declared = snap.mesh_view.own_port_protocol(addr.port());
        ctx.target = target;
        ctx.app_source = app_source;
        ctx.app_protocol = match declared {
            Some(Declared::Http2 | Declared::Grpc) => AppProtocol::Http2,
            _ => AppProtocol::Http1,
        };
        let protocol = declared.map(|p| {
            if p.is_http() {
                Protocol::Http
            } else {
                Protocol::Tcp
            }
        });
        return Ok(Inner { ctx, protocol });
    }
    // Explicit mode: the port of an inbound listener's target, at its address or the one the
    // peer dialed.
    let found = snap.config.inbound.iter().enumerate().find(|(_, l)| {
        l.target_port == addr.port()
            && (addr.ip() == l.target_address || addr.ip() == conn.local.ip())
    });
    let Some((index, l)) = found else {
        return Err(format!(
            "no inbound listener of this sidecar targets {addr}"
        ));
    };
    ctx.listener = index;
    ctx.target = SocketAddr::new(l.target_address, l.target_port);
    ctx.app_protocol = l.app_protocol;
    Ok(Inner {
        protocol: Some(l.protocol),
        ctx,
    })
}

/// A refused CONNECT: the status, and why in the body, as the sidecar's other answers say it
/// (a 200 has no body: the stream is the tunnel from then on).
fn refuse(mut respond: SendResponse<Bytes>, status: StatusCode, why: &str) {
    let mut head = Response::new(());
    *head.status_mut() = status;
    head.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    if let Ok(mut body) = respond.send_response(head, false) {
        let _ = body.send_data(Bytes::from(format!("{why}\n")), true);
    }
}

/// An IPv4 client of a `[::]` listener arrives as `::ffff:a.b.c.d`; policy sees IPv4.
fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}
