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

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use trustmesh_lifecycle::drain::Watch;
use trustmesh_registry::Protocol as Declared;

use crate::config::{AppProtocol, HboneListener, Protocol};
use crate::conn::ConnCtx;
use crate::inbound::Refusal;
use crate::metrics::RejectReason;
use crate::response::Body;
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
    let activity = Arc::new(crate::http::Activity::default());
    let conn = Arc::new(ctx);
    let svc_shared = shared.clone();
    let svc_drain = drain.clone();
    let svc_activity = activity.clone();
    let svc = service_fn(move |req| {
        let shared = svc_shared.clone();
        let conn = conn.clone();
        let drain = svc_drain.clone();
        let busy = svc_activity.begin();
        async move {
            let resp = connect(&shared, &conn, hbone, req, drain, busy).await;
            Ok::<_, Infallible>(resp)
        }
    });
    let mut builder = http2::Builder::new(TokioExecutor::new());
    crate::h2settings::server(&mut builder)
        .timer(TokioTimer::new())
        .max_concurrent_streams(hbone.max_concurrent_streams)
        .max_header_list_size(timeouts.max_header_bytes as u32)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let conn = builder.serve_connection(TokioIo::new(tls), svc);
    tokio::pin!(conn);
    // GOAWAY at the drain or when idle: no new stream, the ones in flight go on until they end
    // or the drain turns immediate.
    let idle = timeouts.http_idle();
    let result = crate::http::until_done(
        conn.as_mut(),
        |c| c.graceful_shutdown(),
        &drain,
        &activity,
        idle,
    )
    .await
    .unwrap_or(Ok(()));
    if let Err(e) = result {
        if !(e.is_incomplete_message() || e.is_canceled() || e.is_closed()) {
            shared.metrics.reject(RejectReason::HttpProtocol);
        }
        tracing::debug!(error = %e, "HBONE connection ended with an error");
    }
}

/// What a CONNECT asks for once checked: the inner connection's facts and its protocol
/// (`None`: undeclared, sniffed from the first bytes).
struct Inner {
    ctx: ConnCtx,
    protocol: Option<Protocol>,
}

/// One CONNECT stream: checked, decided, answered, then served as an inner connection on a
/// task of its own that holds `drain` (and the connection's activity) until it ends.
async fn connect(
    shared: &Arc<Shared>,
    conn: &ConnCtx,
    hbone: HboneListener,
    mut req: Request<Incoming>,
    drain: Watch,
    busy: crate::http::Busy,
) -> Response<Body> {
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
            return answer(StatusCode::BAD_REQUEST, &why);
        }
    };
    let upgrade = hyper::upgrade::on(&mut req);
    let Inner { ctx, protocol } = inner;
    match protocol {
        // L4: decided (and the app reached) before the answer, as ztunnel does.
        Some(Protocol::Tcp) => {
            // The task decides and holds the app connection; the answer waits for its verdict.
            let (verdict, decided) = tokio::sync::oneshot::channel();
            let shared = shared.clone();
            tokio::spawn(async move {
                let _busy = busy;
                let admitted = match crate::tcp::admit(&shared, &ctx).await {
                    Ok(a) => a,
                    Err(refused) => {
                        let _ = verdict.send(Some(refused));
                        return;
                    }
                };
                let _ = verdict.send(None);
                if let Ok(stream) = upgrade.await {
                    admitted.relay(TokioIo::new(stream), drain).await;
                }
            });
            match decided.await {
                Ok(None) => {}
                Ok(Some(NotAdmitted::Denied)) => {
                    return answer(StatusCode::UNAUTHORIZED, "denied by authorization policy")
                }
                Ok(Some(NotAdmitted::AppUnreachable)) | Err(_) => {
                    return answer(StatusCode::SERVICE_UNAVAILABLE, "the app cannot be reached")
                }
            }
        }
        Some(Protocol::Http) => {
            let shared = shared.clone();
            tokio::spawn(async move {
                let _busy = busy;
                if let Ok(stream) = upgrade.await {
                    crate::http::serve(shared, ctx, TokioIo::new(stream), drain).await;
                }
            });
        }
        None => {
            let shared = shared.clone();
            tokio::spawn(async move {
                let _busy = busy;
                let Ok(stream) = upgrade.await else { return };
                let mut stream = TokioIo::new(stream);
                let mut head = [0u8; 8];
                let n = match tokio::time::timeout(SNIFF, stream.read(&mut head)).await {
                    Ok(Ok(n)) => n,
                    Ok(Err(_)) => return,
                    Err(_) => 0,
                };
                let stream = crate::relay::Prefixed::new(head[..n].to_vec(), stream);
                if crate::captured::looks_like_http(&head[..n]) {
                    crate::http::serve(shared, ctx, stream, drain).await;
                } else {
                    crate::tcp::serve(&shared, ctx, stream, drain).await;
                }
            });
        }
    }
    answer(StatusCode::OK, "")
}

/// The inner connection a CONNECT asks for, or why it is refused (a 400).
fn target_of(
    shared: &Shared,
    conn: &ConnCtx,
    hbone: HboneListener,
    req: &Request<Incoming>,
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

/// A CONNECT's answer; a refusal says why in its body, as the sidecar's other answers do (a
/// 200 has none: the stream is the tunnel from then on).
fn answer(status: StatusCode, why: &str) -> Response<Body> {
    if why.is_empty() {
        return crate::response::bytes_response(status, bytes::Bytes::new());
    }
    let mut resp = crate::response::bytes_response(status, bytes::Bytes::from(format!("{why}\n")));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    resp
}

/// An IPv4 client of a `[::]` listener arrives as `::ffff:a.b.c.d`; policy sees IPv4.
fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}
